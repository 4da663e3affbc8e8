"""Fuzzing the nodes over DDS: malformed messages (test/fuzz_messages.py) on every topic and service each node
subscribes to or serves. Outcome: no crash, no unexpected exception (callback_errors stays 0), a hold where
the arm is affected and never a wild command, a counter for every rejection, no invalid row stored.

A few dozen messages per topic and case here; ``bench/bench_fuzz.py`` sends 10,000 per topic with the same
generators and checks."""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, MultiArrayDimension, String
from std_srvs.srv import Trigger

import fuzz_messages as fz
import onnx_models as om
from conftest import load_config, params_file
from ros_helpers import FakeArm, arm_commands, diag
from vla_rl_ros.spec import PANDA_ARM_JOINTS, PANDA_GRIPPER_JOINTS, Spec
from vla_rl_ros.stepmsg import encode_layout

N = int(os.environ.get("VLA_RL_ROS_FUZZ_N", "44"))  # messages per topic (a multiple of every generator's cases)
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
RESULTS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
SPEC = Spec(task="reach")


def diag_of(probe, name: str, pred=lambda d: True) -> dict | None:
    """The newest /diagnostics status of ``name`` (a prefix) that satisfies ``pred``."""
    for _, m in reversed(probe.get("/diagnostics")):
        if m.status and m.status[0].name.startswith(name):
            d = diag(m)
            return d if pred(d) else None
    return None


def send(probe, pub, gen) -> tuple[int, int]:
    """Publish every message of ``gen`` once the node has subscribed; (objects sent, raw buffers sent)."""
    probe.wait_for(lambda: pub.get_subscription_count() > 0, 60, f"a subscriber on {pub.topic_name}")
    n_obj = n_raw = 0
    for _, msg in gen:
        pub.publish(msg)
        if isinstance(msg, bytes):
            n_raw += 1
        else:
            n_obj += 1
    return n_obj, n_raw


def call_burst(probe, cli, n: int, what: str, batch: int = 5) -> list:
    """``n`` Trigger calls in bursts of ``batch`` (a service keeps the last 10 requests: a larger burst is
    partly dropped by DDS, not by the node); every one must be answered."""
    assert cli.wait_for_service(timeout_sec=30)
    out = []
    for k in range(0, n, batch):
        futs = [cli.call_async(Trigger.Request()) for _ in range(min(batch, n - k))]
        probe.wait_for(lambda: all(f.done() for f in futs), 60, f"every {what} answered")
        out += [f.result() for f in futs]
    return out


def steps_after(probe, t0: float) -> list:
    """The /rl/step records received after ``t0`` (decoding only those: a long fuzz run collects many)."""
    from vla_rl_ros.stepmsg import decode

    return [decode([d.label for d in m.layout.dim], [d.size for d in m.layout.dim], m.data, SPEC.obs_dim,
                   SPEC.action_dim) for t, m in probe.get("/rl/step") if t > t0]


def hold_after(probe, t0: float) -> bool:
    return any(s.hold for s in steps_after(probe, t0))


def acting_after(probe, t0: float, version: str) -> bool:
    return any(not s.hold and s.model_version == version for s in steps_after(probe, t0))


def test_policy_node_survives_malformed_input_on_every_topic_holds_and_counts(launch, probe, tmp_path):
    from vla_rl_ros.runtime.control import PANDA_HOME
    from vla_rl_ros.signing import generate_keypair, public_key_path

    key = str(tmp_path / "learner.key")
    generate_keypair(key)
    models = tmp_path / "models"
    models.mkdir()
    v1 = om.write(tmp_path / "v1.onnx", SPEC, "reach", version="v1")
    max_err = load_config("sim.yaml")["policy_node"]["ros__parameters"]["safety"]["max_tracking_error"]
    params = params_file(tmp_path / "p.yaml", policy_node={
        "model_path": v1, "control_rate_hz": 50.0, "joint_state_timeout_s": 0.5, "pose_timeout_s": 0.0,
        "trusted_keys": [public_key_path(key)], "allowed_models_dir": str(models)})
    probe.collect("/arm_controller/commands", Float64MultiArray, keep=10**6)
    probe.collect("/rl/step", Float64MultiArray, RELIABLE, keep=10**6)
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    probe.collect("/rl/policy_update_result", String, RESULTS)
    proc = launch("policy_node", params)
    arm = FakeArm(probe)
    probe.wait_for(lambda: acting_after(probe, 0.0, "v1"), 60, "acting with v1")
    pub = lambda topic, typ, qos=None: probe.publisher(topic, typ, qos or RELIABLE)  # noqa: E731

    # joint states: with the arm's own stream paused, only malformed ones arrive -> hold
    arm.pause = True
    t0 = time.monotonic()
    send(probe, pub("/joint_states", JointState), fz.joint_states(N, PANDA_ARM_JOINTS, PANDA_GRIPPER_JOINTS,
                                                                  list(PANDA_HOME), seed=1))
    probe.wait_for(lambda: hold_after(probe, t0), 60, "a hold after malformed joint states")
    arm.pause = False
    t1 = time.monotonic()
    probe.wait_for(lambda: acting_after(probe, t1, "v1"), 60, "acting again on valid joint states")

    # task poses (the arm's poses paused): each topic's malformed poses -> hold; valid ones -> acting again
    for topic in ("/task/object_pose", "/task/goal_pose"):
        arm.pause_poses = True
        t0 = time.monotonic()
        send(probe, pub(topic, PoseStamped), fz.poses(N, SPEC.base_link, seed=2))
        probe.wait_for(lambda: hold_after(probe, t0), 60, f"a hold after malformed {topic}")
        arm.pause_poses = False
        t1 = time.monotonic()
        probe.wait_for(lambda: acting_after(probe, t1, "v1"), 60, f"acting again on valid {topic}")

    # camera frames: an invalid frame holds until a valid one arrives
    t0 = time.monotonic()
    img_pub = pub("/camera/image_raw", Image)
    send(probe, img_pub, fz.images(N, seed=3))
    probe.wait_for(lambda: hold_after(probe, t0), 60, "a hold after malformed images")
    good = Image(height=8, width=8, encoding="rgb8", step=24, data=bytes(8 * 24))
    t1 = time.monotonic()
    img_pub.publish(good)
    probe.wait_for(lambda: acting_after(probe, t1, "v1"), 60, "acting again after a valid image")

    # interventions: a malformed one holds (for intervention_timeout_s), never acts
    t0 = time.monotonic()
    send(probe, pub("/rl/intervention", Float64MultiArray), fz.float_arrays(N, SPEC.action_dim, seed=4))
    probe.wait_for(lambda: hold_after(probe, t0), 60, "a hold after malformed interventions")
    assert not any(s.intervention for s in steps_after(probe, t0))
    t1 = time.monotonic()
    probe.wait_for(lambda: acting_after(probe, t1, "v1"), 60, "acting again once the error expired")

    # estop: a burst of toggles and corrupt buffers, ending released
    estop = pub("/rl/estop", Bool, LATCHED)
    rng = np.random.default_rng(5)
    for i in range(N):
        estop.publish(fz.corrupt(Bool(data=True), rng) if i % 4 == 3 else Bool(data=bool(i % 2)))
    estop.publish(Bool(data=False))

    # model announcements: every one refused with a reason, the incumbent keeps running
    upd = pub("/rl/policy_update", String)
    probe.wait_for(lambda: upd.get_subscription_count() > 0, 60, "policy_node on /rl/policy_update")
    n_replied = 0
    for case, msg in fz.json_strings(N, seed=6, valid_path=str(models / "missing.onnx")):
        n = len(probe.get("/rl/policy_update_result"))
        upd.publish(msg)
        if case == "corrupt":  # may not survive deserialization: nothing to wait for
            continue
        r = json.loads(probe.wait_for(lambda: probe.get("/rl/policy_update_result")[n:], 60,
                                      f"a reply to a {case} announcement")[0][1].data)  # parse only the new one
        assert r["accepted"] is False and r["event"] == "rejected" and r["reason"], (case, r)
        n_replied += 1

    # 10x the arm's joint-state rate: valid, handled, still acting
    burst = pub("/joint_states", JointState)
    m = JointState(name=list(PANDA_ARM_JOINTS) + list(PANDA_GRIPPER_JOINTS), position=list(PANDA_HOME) + [0.04, 0.04])
    for _ in range(10 * N):
        burst.publish(m)

    t_end = time.monotonic()
    probe.wait_for(lambda: acting_after(probe, t_end, "v1"), 60, "acting with v1 after all the fuzzing")
    d = probe.wait_for(lambda: diag_of(probe, "policy_node", lambda d: d["watchdog"] == "ok" and
                                       int(d["rejected_updates"]) >= n_replied), 60, "diagnostics after fuzzing")
    assert proc.alive
    assert d["callback_errors"] == "0" and d["inference_errors"] == "0", d["last_error"]
    for ch in ("joint_states", "object_pose", "goal_pose", "image", "intervention"):
        assert int(d[f"rejected_{ch}"]) > 0, ch
    assert d["model_version"] == "v1"
    # never a wild command: every command has 7 finite targets within the tracking bound of the measured arm
    cmds = np.array(arm_commands(probe))
    assert cmds.shape[1] == 7 and np.all(np.isfinite(cmds))
    assert np.max(np.abs(cmds - np.asarray(PANDA_HOME))) <= max_err + 1e-9
    assert "Traceback" not in proc.log()


def test_recorder_node_refuses_malformed_steps_and_stores_only_valid_rows(launch, probe, tmp_path):
    from vla_rl_ros.buffer import connect, create_run

    run = create_run(tmp_path, "run", SPEC, robot_id="fuzz")
    params = params_file(tmp_path / "p.yaml", recorder_node={
        "run_dir": str(run.path), "twin_reset": False, "auto_next_episode": True, "settle_s": 0.0,
        "task": "reach", "max_episode_s": 1.0})
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    proc = launch("recorder_node", params)
    deep = QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE)
    step_pub = probe.publisher("/rl/step", Float64MultiArray, deep)
    probe.wait_for(lambda: step_pub.get_subscription_count() > 0, 60, "the recorder on /rl/step")

    labels, sizes = encode_layout(SPEC.obs_dim, SPEC.action_dim, "good")
    valid = Float64MultiArray()
    valid.layout.dim = [MultiArrayDimension(label=lb, size=sz, stride=sz) for lb, sz in zip(labels, sizes)]
    rng = np.random.default_rng(7)
    tick, n_valid, n_bad, n_raw = 0, 0, 0, 0
    for case, bad in fz.steps(N * 2, SPEC.obs_dim, SPEC.action_dim, seed=8):
        for _ in range(2):  # two valid steps (one transition) between malformed ones
            tick += 1
            now = time.time()
            obs = rng.uniform(-0.5, 0.5, SPEC.obs_dim)
            act = rng.uniform(-1, 1, SPEC.action_dim)
            valid.data = [float(x) for x in (*obs, *act, tick, now, now, 0.0, 0.0, 20.0, -1.0, -1.0, 0.0)]
            step_pub.publish(valid)
            n_valid += 1
        step_pub.publish(bad)
        n_raw += isinstance(bad, bytes)
        n_bad += not isinstance(bad, bytes)
        if n_bad % 100 == 0 and not isinstance(bad, bytes):  # keep within the recorder's queue (2000 steps)
            probe.wait_for(lambda: diag_of(probe, "vla_rl_ros: recorder", lambda d: int(d["rejected_steps"]) >= n_bad),
                           60, "the recorder keeping up")
    d = probe.wait_for(lambda: diag_of(probe, "vla_rl_ros: recorder", lambda d: int(d["rejected_steps"]) >= n_bad
                                       and int(d["pending"]) == 0), 60, "the recorder's rejections counted")
    assert n_bad <= int(d["rejected_steps"]) <= n_bad + n_raw  # a corrupt buffer is dropped or refused
    assert int(d["transitions"]) > 0, d

    # then estop toggles and episode resets in bursts (after the steps: topics are not ordered among themselves)
    estop = probe.publisher("/rl/estop", Bool, LATCHED)
    for i in range(N):
        estop.publish(Bool(data=bool(i % 2)))
    estop.publish(Bool(data=False))
    replies = call_burst(probe, probe.node.create_client(Trigger, "/rl/episode/reset"), N, "/rl/episode/reset")
    assert all(r.success for r in replies)
    t0 = time.monotonic()
    probe.wait_for(lambda: any(t > t0 and m.status[0].name.startswith("vla_rl_ros: recorder")
                               for t, m in probe.get("/diagnostics")), 60, "recorder diagnostics after the bursts")
    assert proc.alive
    con = connect(run.buffer_path, readonly=True)
    try:
        rows = con.execute("SELECT obs, action, reward, next_obs, obs_stamp, cmd_stamp, model_version FROM steps")
        rows = rows.fetchall()
    finally:
        con.close()
    assert rows
    for obs, act, reward, nxt, s1, s2, version in rows:
        o, a, n = (np.frombuffer(b, np.float32) for b in (obs, act, nxt))
        assert o.shape == n.shape == (SPEC.obs_dim,) and a.shape == (SPEC.action_dim,)
        assert np.all(np.isfinite(o)) and np.all(np.isfinite(n)) and np.all(np.abs(a) <= 1.0)
        assert math.isfinite(reward) and math.isfinite(s1) and math.isfinite(s2) and version == "good"
    assert "Traceback" not in proc.log()


def test_twin_node_refuses_malformed_commands_and_answers_every_reset(launch, probe, tmp_path):
    params = params_file(tmp_path / "p.yaml", twin_node={"seed": 3, "task": "reach"})
    probe.collect("/joint_states", JointState, qos_profile_sensor_data)
    proc = launch("twin_node", params)
    probe.wait_for(lambda: probe.get("/joint_states"), 60, "joint states from the twin")
    for topic, size in (("/arm_controller/commands", 7), ("/gripper_controller/commands", 1)):
        send(probe, probe.publisher(topic, Float64MultiArray, RELIABLE), fz.float_arrays(N, size, seed=9))
    huge = Float64MultiArray(data=[1e300] * 7)  # finite but far outside the joint limits: clipped, never NaN
    probe.publisher("/arm_controller/commands", Float64MultiArray, RELIABLE).publish(huge)
    replies = call_burst(probe, probe.node.create_client(Trigger, "/twin/reset"), N, "/twin/reset")
    assert all(r.success and r.message.startswith("seed=") for r in replies)
    t0 = time.monotonic()
    probe.wait_for(lambda: [m for t, m in probe.get("/joint_states") if t > t0], 60, "joint states after fuzzing")
    for _, m in probe.get("/joint_states"):
        assert all(math.isfinite(v) for v in m.position)
    assert proc.alive and "Traceback" not in proc.log()


def test_learner_and_teacher_nodes_ignore_malformed_messages(launch, probe, tmp_path):
    from vla_rl_ros.buffer import create_run

    run = create_run(tmp_path, "run", SPEC, robot_id="fuzz")
    initial = om.write(tmp_path / "initial.onnx", SPEC, "reach", version="initial")
    params = params_file(tmp_path / "p.yaml",
                         learner_node={"run_dir": str(run.path), "initial_model": initial, "monitor_episodes": 0,
                                       "task": "reach"},
                         teacher_node={"task": "reach", "watch_fraction": 1.0})
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    learner = launch("learner_node", params)
    teacher = launch("teacher_node", params)
    results_pub = probe.publisher("/rl/policy_update_result", String, RELIABLE)
    episode_pub = probe.publisher("/rl/episode", String, RELIABLE)
    send(probe, results_pub, fz.json_strings(N, seed=10))
    send(probe, results_pub, (("json_field_types", String(data=json.dumps({"version": v, "accepted": v})))
                              for v in ([1], {"a": 1}, None, 3.5)))
    send(probe, episode_pub, fz.json_strings(N, seed=11))
    send(probe, probe.publisher("/joint_states", JointState, RELIABLE),
         fz.joint_states(N, PANDA_ARM_JOINTS, PANDA_GRIPPER_JOINTS, [0.0] * 7, seed=12))
    for topic in ("/task/object_pose", "/task/goal_pose"):
        send(probe, probe.publisher(topic, PoseStamped, RELIABLE), fz.poses(N, SPEC.base_link, seed=13))
    # the learner's diagnostics after the fuzzing: it kept spinning
    t0 = time.monotonic()
    probe.wait_for(lambda: any(t > t0 + 2.5 and m.status and m.status[0].name.startswith("vla_rl_ros: learner")
                               for t, m in probe.get("/diagnostics")), 60, "learner diagnostics after fuzzing")
    assert learner.alive and teacher.alive
    assert "Traceback" not in learner.log() and "Traceback" not in teacher.log()
