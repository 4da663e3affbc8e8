"""twin_node under a reality gap, in its own process: noisy published poses and joints, commands applied late;
gap_scale 0 is the exact twin. One twin after the other in the same test, same seed, same commands."""
from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from conftest import params_file
from vla_rl_ros.runtime.control import PANDA_HOME
from vla_rl_ros.spec import Spec
from vla_rl_ros.twin.core import TwinCore

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
DELAY_S = 1.0
POSE_STD = 0.005
JOINT_STD = 1e-3
GAP = {"gap_object_friction_scale": 0.5, "gap_object_size_scale": 0.9, "gap_actuation_delay_s": DELAY_S,
       "gap_pose_noise_std": POSE_STD, "gap_joint_noise_std": JOINT_STD}
TOPICS = ("/joint_states", "/task/object_pose", "/task/goal_pose")


def _stamp(msg) -> float:
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


def _positions(probe, key) -> np.ndarray:
    return np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for _, m in probe.get(key)])


def _run_twin(launch, probe, tmp_path, name: str, twin_params: dict):
    """Start a twin (simulated-time stamps), record it at rest, then send one arm command: returns (object
    positions, goal positions, joint positions at rest, simulated seconds from the command to the arm moving)."""
    for k in TOPICS:
        probe.clear(k)
    proc = launch("twin_node", params_file(tmp_path / f"{name}.yaml", twin_node={
        "seed": 7, "publish_clock": True, "pose_rate_hz": 100.0, "joint_state_rate_hz": 100.0, **twin_params}))
    probe.wait_for(lambda: len(probe.get("/task/object_pose")) >= 20 and len(probe.get("/joint_states")) >= 20, 60,
                   f"{name}: twin topics")
    time.sleep(0.5)  # the cube settles (it is dropped onto the table at its half height)
    for k in TOPICS:
        probe.clear(k)
    probe.wait_for(lambda: len(probe.get("/task/object_pose")) >= 150 and len(probe.get("/joint_states")) >= 150,
                   60, f"{name}: poses and joints at rest")
    obj, goal = _positions(probe, "/task/object_pose"), _positions(probe, "/task/goal_pose")
    rest = np.array([m.position for _, m in probe.get("/joint_states")])

    arm = probe.publisher("/arm_controller/commands", Float64MultiArray)
    probe.wait_for(lambda: arm.get_subscription_count() > 0, 30, f"{name}: the twin subscribed to commands")
    target = PANDA_HOME.copy()
    target[0] = 0.3
    t_cmd = _stamp(probe.get("/joint_states")[-1][1])  # simulated time just before the command
    for _ in range(3):
        arm.publish(Float64MultiArray(data=target.tolist()))
        time.sleep(0.05)

    def moved():
        return next((_stamp(m) for _, m in probe.get("/joint_states")
                     if _stamp(m) > t_cmd and abs(m.position[0] - PANDA_HOME[0]) > 0.02), None)

    t_move = probe.wait_for(moved, 60, f"{name}: joint 1 moving")
    assert proc.alive
    log = proc.log()
    proc.stop()
    return obj, goal, rest, t_move - t_cmd, log


def test_gap_twin_publishes_noisy_poses_and_applies_commands_late(launch, probe, tmp_path):
    for k in TOPICS:
        probe.collect(k, JointState if k == "/joint_states" else PoseStamped,
                      None if k == "/joint_states" else RELIABLE)

    obj, goal, rest, lag, log = _run_twin(launch, probe, tmp_path, "gap", {**GAP, "gap_scale": 1.0})
    assert "reality gap: friction x0.5, " in log and "size x0.9, delay 1000 ms" in log
    # noise on what is published: the spread is the std (generously), around the true pose
    for p in (obj, goal):
        assert len(p) >= 100
        std = p.std(axis=0)
        assert ((0.5 * POSE_STD < std) & (std < 2 * POSE_STD)).all(), std
    twin = TwinCore(Spec(), object_scale=0.9)  # the same seed's episode, exact
    try:
        true_obj, true_goal = twin.sample_task(np.random.default_rng(7), "reach")
    finally:
        twin.close()
    np.testing.assert_allclose(goal.mean(axis=0), true_goal, atol=3 * POSE_STD / np.sqrt(len(goal)) + 1e-4)
    np.testing.assert_allclose(obj.mean(axis=0)[:2], true_obj[:2], atol=3 * POSE_STD / np.sqrt(len(obj)) + 1e-3)
    assert ((0.5 * JOINT_STD < rest.std(axis=0)) & (rest.std(axis=0) < 2 * JOINT_STD)).all(), rest.std(axis=0)
    # the command reached the arm no earlier than the delay after it was sent (simulated time)
    assert lag >= DELAY_S, lag

    # gap_scale 0: the same gap parameters, no gap at all: exact poses, the command at once
    obj0, goal0, rest0, lag0, log0 = _run_twin(launch, probe, tmp_path, "exact", {**GAP, "gap_scale": 0.0})
    assert "reality gap: none" in log0
    np.testing.assert_allclose(goal0, np.tile(true_goal, (len(goal0), 1)), atol=1e-12)
    assert obj0.std(axis=0).max() < 1e-5 and rest0.std(axis=0).max() < 1e-4
    assert lag0 < DELAY_S < lag, (lag0, lag)

