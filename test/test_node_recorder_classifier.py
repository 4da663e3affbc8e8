"""recorder_node with a learned success detector: ``reward: classifier`` ends episodes on the camera's word, and
``save_frames`` keeps each episode's frames with its outcome as the suggested label."""
from __future__ import annotations

import hashlib
import json
import time

import cv2
import numpy as np
import torch
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import String

from conftest import params_file
from test_node_recorder import StepSource, _recorder_diag
from vla_rl_ros.perception.frames import FrameStore
from vla_rl_ros.perception.success_train import ClassifierConfig, train_classifier, version_into_run
from vla_rl_ros.spec import Spec

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def _frame(bright: bool, rng) -> np.ndarray:
    base = 200 if bright else 40
    return np.clip(base + rng.integers(-20, 21, (64, 64, 3)), 0, 255).astype(np.uint8)


def _bright_is_success(run_dir) -> dict:
    """A real classifier (torch training, ONNX export) that learned 'bright frame = success'."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = np.stack([_frame(i % 2 == 0, rng) for i in range(40)])
    cfg = ClassifierConfig(epochs=4, holdout=0.0, roi=(0.0, 0.0, 1.0, 1.0), input_size=(32, 32))
    from vla_rl_ros.perception.success_train import prepare_frames

    tc = train_classifier(prepare_frames(list(x), cfg), [i % 2 == 0 for i in range(40)], cfg)
    return version_into_run(tc, run_dir)


def test_classifier_reward_ends_episode_and_frames_are_saved(launch, probe, tmp_path):
    run_dir = tmp_path / "run"
    meta = _bright_is_success(run_dir)  # the newest classifier in the run: found with classifier_model ''
    params = params_file(tmp_path / "sim.yaml", recorder_node={
        "run_dir": str(run_dir), "task": "pick_place", "twin_reset": False, "max_episode_s": 100.0,
        "reward": "classifier", "classifier_consecutive": 2, "save_frames": True})
    probe.collect("/rl/episode", String, RELIABLE)
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    rec = launch("recorder_node", params)
    img_pub = probe.publisher("/camera/image_raw", Image, qos_profile_sensor_data)
    rng = np.random.default_rng(1)
    state = {"bright": False, "sent": 0}

    def send():
        f = _frame(state["bright"], rng)
        m = Image(height=64, width=64, encoding="rgb8", is_bigendian=0, step=3 * 64)
        m.data = f.tobytes()
        img_pub.publish(m)
        state["sent"] += 1

    probe.node.create_timer(0.05, send)
    StepSource(probe, rate_hz=50.0, spec=Spec(task="pick_place"))  # the state never says success
    d = probe.wait_for(lambda: (lambda x: x if x and int(x["camera_frames"]) >= 20 and int(x["transitions"]) >= 20
                                else None)(_recorder_diag(probe)), 60, "the recorder judging dark frames mid-episode")
    assert 0.0 <= float(d["classifier_p"]) < 0.5 and int(d["classifier_streak"]) == 0
    assert probe.get("/rl/episode") == []  # dark frames: no success, and the state never says success
    state["bright"] = True
    probe.wait_for(lambda: probe.get("/rl/episode"), 30, "an episode ended by the classifier")
    s = json.loads(probe.get("/rl/episode")[0][1].data)
    assert s["success"] and s["end_reason"] == "success"
    rc = s["reward_config"]
    assert rc["name"] == "classifier"
    assert rc["params"]["model_sha256"] == hashlib.sha256(open(meta["path"], "rb").read()).hexdigest()
    assert rc["params"]["model_version"] == meta["version"] and rc["params"]["n_consecutive"] == 2
    probe.wait_for(lambda: FrameStore(run_dir).index(), 10, "the episode's frames on disk")
    store = FrameStore(run_dir)
    rows = {r["tag"]: r for r in store.index() if r["episode"] == s["idx"]}
    assert set(rows) == {"middle", "last"} and rows["last"]["suggested"] is True
    assert rows["last"]["end_reason"] == "success" and rows["middle"]["t"] < rows["last"]["t"]
    last = cv2.imread(str(store.dir / rows["last"]["file"]))
    middle = cv2.imread(str(store.dir / rows["middle"]["file"]))
    assert last.shape == (64, 64, 3) and last.mean() > 150 and middle.mean() < 80  # bright at the end, dark before
    assert rec.alive


def test_twin_camera_frames_are_saved_per_episode(launch, probe, tmp_path):
    """The sim graph with the twin's camera on: the recorder keeps each episode's middle and last rendered frame,
    suggested label = the episode's recorded outcome. (Episodes that end before the camera's renderer process
    has its first frame, seconds on a loaded machine, have none.)"""
    from conftest import REPO
    import os

    run_dir = tmp_path / "run"
    params = params_file(tmp_path / "sim.yaml",
                         twin_node={"seed": 7, "task": "pick_place", "camera_enabled": True, "camera_width": 160,
                                    "camera_height": 160, "camera_rate_hz": 10.0},
                         policy_node={"model_path": os.path.join(REPO, "models", "pick_place_bc.onnx"),
                                      "task": "pick_place", "exploration_std": 0.0},
                         recorder_node={"run_dir": str(run_dir), "task": "pick_place", "twin_reset": True,
                                        "save_frames": True, "max_episode_s": 3.0})
    probe.collect("/rl/episode", String, RELIABLE)
    launch("twin_node", params)
    launch("policy_node", params)
    launch("recorder_node", params)
    store = FrameStore(run_dir)

    def summaries() -> dict:  # the frames are written just before the summary is published
        return {s["idx"]: s for s in (json.loads(m.data) for _, m in probe.get("/rl/episode"))}

    # two episodes with a middle frame (an episode that ends as the camera's first frames arrive has only a
    # last) whose summaries the probe heard: one that ended before the probe's subscription was matched
    # (DDS discovery) is not judged, the summary being volatile
    probe.wait_for(lambda: len({r["episode"] for r in store.index() if r["tag"] == "middle"} & set(summaries())) >= 2,
                   180, "two episodes' frames and summaries")
    got = summaries()
    episodes = sorted({r["episode"] for r in store.index()} & set(got))
    for e in episodes:
        s = got[e]
        rows = {r["tag"]: r for r in store.index() if r["episode"] == e}
        assert "last" in rows and set(rows) <= {"middle", "last"}, rows
        assert rows["last"]["suggested"] is bool(s["success"]) and rows["last"]["end_reason"] == s["end_reason"]
        if "middle" not in rows:
            continue
        assert 0.0 <= rows["middle"]["t"] < rows["last"]["t"] <= 3.5  # t from the episode's first frame
        last = store.load(store.dir / rows["last"]["file"])
        middle = store.load(store.dir / rows["middle"]["file"])
        assert last.shape == (160, 160, 3) and last.std() > 20  # a rendered scene, not a blank frame
        assert np.abs(last.astype(int) - middle).mean() > 0.1  # the arm moved between them
