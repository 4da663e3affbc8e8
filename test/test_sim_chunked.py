"""`vla-rl-ros sim` with a VLA-shaped model: the twin's camera in, action chunks out, through the whole graph.

The arm's params file declares a camera input and chunks of 8; the model (test/onnx_models.build_chunk: a reach
controller per chunk step) runs in policy_node's inference thread on the twin camera's frames. The recorder
stores each transition with its chunk step and the frame its chunk saw; the learner says plainly that it does
not train such models yet and makes no candidate.
"""
from __future__ import annotations

import subprocess
import sys
import time

import yaml

import onnx_models as om
from ros_helpers import stop_sim
from vla_rl_ros.arm import read_arm
from vla_rl_ros.buffer import connect
from vla_rl_ros.graph import config_path


def test_sim_runs_a_chunked_camera_model_and_records_its_chunk_steps_and_frames(ros_env, tmp_path):
    arm_file = tmp_path / "vla_arm.yaml"
    arm_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "images": ["front"], "image": {"front": {"topic": "/camera/image_raw", "height": 84, "width": 84}},
        "chunk_len": 8}}}))
    spec = read_arm([config_path("sim.yaml"), str(arm_file)], "reach").spec
    assert spec.vla_shaped and spec.images[0].name == "front"
    model = om.write_chunk(tmp_path / "chunk.onnx", spec, version="chunk-cam")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vla_rl_ros.cli", "sim", "--task", "reach", "--run", str(run), "--arm", str(arm_file),
           "--model", model, "--domain-id", str(ros_env.domain_id), "--duration", "60",
           "--set", "twin_node.camera_enabled:=true", "--set", "learner_node.monitor_episodes:=0",
           "--set", "policy_node.exploration_std:=0.0"]
    with open(tmp_path / "sim.log", "w") as log:
        proc = subprocess.Popen(cmd, env=ros_env.env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    store = run / "buffer.sqlite"

    def rows():
        if not store.is_file():
            return []
        con = connect(store, readonly=True)
        try:
            return con.execute("SELECT chunk_seq, chunk_step, frame_stamp, cmd_stamp FROM steps").fetchall()
        finally:
            con.close()

    try:
        learner_log = run / "logs" / "learner_node.log"

        def learner_said() -> bool:
            return learner_log.is_file() and "VLA-shaped" in learner_log.read_text()

        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and (len(rows()) < 60 or not learner_said()) and proc.poll() is None:
            time.sleep(1.0)
        got = rows()
    finally:
        stop_sim(proc, (tmp_path / "sim.log").read_text())
    text = (tmp_path / "sim.log").read_text()
    assert len(got) >= 60, f"only {len(got)} transitions recorded\n{text[-3000:]}"
    chunked = [r for r in got if r[0] is not None]
    assert len(chunked) >= 0.9 * len(got), "transitions without their chunk step"
    assert len({r[0] for r in chunked}) >= 3, "the inference thread made new chunks as the arm moved"
    assert all(0.0 <= r[1] < 8 for r in chunked)
    # every chunk came from a real camera frame, older than the command it produced, by under a second
    lat = [r[3] - r[2] for r in chunked]
    assert all(r[2] is not None for r in chunked) and all(0.0 < x < 1.0 for x in lat), lat[:10]
    assert learner_said(), learner_log.read_text()[-2000:]
    assert not list((run / "models").glob("recap-*.onnx")), "the learner must not make candidates it cannot train"
