"""twin_node in its own process: the robot interface as a ros2_control arm would speak it."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from conftest import params_file
from ros_helpers import NAMES
from vla_rl_ros.runtime.control import PANDA_HOME
from vla_rl_ros.spec import Spec
from vla_rl_ros.twin.core import TwinCore

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def expected_goal(seed: int) -> np.ndarray:
    twin = TwinCore(Spec())
    try:
        return twin.sample_task(np.random.default_rng(seed), "reach")[1]
    finally:
        twin.close()


def latest(probe, key):
    msgs = probe.get(key)
    return msgs[-1][1] if msgs else None


def reset(probe) -> str:
    cli = probe.node.create_client(Trigger, "/twin/reset")
    assert cli.wait_for_service(timeout_sec=30.0)
    fut = cli.call_async(Trigger.Request())
    probe.wait_for(fut.done, 30, "/twin/reset response")
    res = fut.result()
    assert res.success
    return res.message


def test_twin_publishes_follows_commands_rejects_bad_ones_and_resets(launch, probe, tmp_path):
    probe.collect("/joint_states", JointState)
    probe.collect("/task/goal_pose", PoseStamped, RELIABLE)
    probe.collect("/task/object_pose", PoseStamped, RELIABLE)
    proc = launch("twin_node", params_file(tmp_path / "p.yaml", twin_node={"seed": 7}))
    probe.wait_for(lambda: latest(probe, "/joint_states") and latest(probe, "/task/goal_pose"), 60, "twin topics")
    js = latest(probe, "/joint_states")
    assert list(js.name) == NAMES and len(js.position) == len(js.velocity) == len(js.effort) == 9
    assert all(math.isfinite(v) for v in (*js.position, *js.velocity, *js.effort))
    np.testing.assert_allclose(js.position[:7], PANDA_HOME, atol=0.05)
    goal = latest(probe, "/task/goal_pose")
    assert goal.header.frame_id == "panda_link0" and latest(probe, "/task/object_pose").header.frame_id == "panda_link0"
    p = goal.pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], expected_goal(7), atol=1e-9)  # episode 0 uses the base seed

    arm = probe.publisher("/arm_controller/commands", Float64MultiArray)
    grip = probe.publisher("/gripper_controller/commands", Float64MultiArray)
    target = PANDA_HOME.copy()
    target[0] = 0.3
    for _ in range(3):
        arm.publish(Float64MultiArray(data=target.tolist()))
        grip.publish(Float64MultiArray(data=[0.02]))
        time.sleep(0.05)
    probe.wait_for(lambda: abs(latest(probe, "/joint_states").position[0] - 0.3) < 0.02, 20, "joint 1 at 0.3 rad")
    probe.wait_for(lambda: abs(sum(latest(probe, "/joint_states").position[7:]) - 0.02) < 0.004, 20, "gripper at 2 cm")

    # wrong length and NaN: rejected, logged, previous target kept
    arm.publish(Float64MultiArray(data=[0.0, 0.0, 0.0]))
    bad = target.copy()
    bad[0] = math.nan
    arm.publish(Float64MultiArray(data=bad.tolist()))
    grip.publish(Float64MultiArray(data=[0.01, 0.02]))
    probe.wait_for(lambda: "arm command has 3 values, expected 7" in proc.log()
                   and "arm command contains NaN/Inf" in proc.log()
                   and "gripper command has 2 values, expected 1" in proc.log(), 10, "rejections in the log")
    time.sleep(0.5)
    js = latest(probe, "/joint_states")
    assert abs(js.position[0] - 0.3) < 0.02 and all(math.isfinite(v) for v in js.position)
    assert proc.alive

    # reset: episode 1 -> seed 8, arm home
    msg = reset(probe)
    assert msg.startswith("seed=8 episode=1"), msg
    probe.wait_for(lambda: abs(latest(probe, "/joint_states").position[0]) < 0.02, 10, "arm home after reset")
    probe.clear("/task/goal_pose")
    probe.wait_for(lambda: latest(probe, "/task/goal_pose"), 10, "goal after reset")
    p = latest(probe, "/task/goal_pose").pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], expected_goal(8), atol=1e-9)
    assert reset(probe).startswith("seed=9 episode=2")


def test_camera_and_sim_clock_when_asked(launch, probe, tmp_path):
    probe.collect("/camera/image_raw", Image)
    probe.collect("/camera/camera_info", CameraInfo)
    probe.collect("/clock", Clock, RELIABLE)
    probe.collect("/joint_states", JointState)
    launch("twin_node", params_file(tmp_path / "p.yaml", twin_node={
        "camera_enabled": True, "camera_rate_hz": 5.0, "camera_width": 32, "camera_height": 24, "publish_clock": True}))
    probe.wait_for(lambda: len(probe.get("/camera/image_raw")) >= 2, 60, "camera frames")
    img = latest(probe, "/camera/image_raw")
    assert (img.encoding, img.width, img.height, img.step, len(img.data)) == ("rgb8", 32, 24, 96, 32 * 24 * 3)
    assert len(set(bytes(img.data))) > 1  # a rendered scene, not a blank buffer
    info = latest(probe, "/camera/camera_info")
    # the principal point as TinyRenderer draws (vla_rl_ros/nodes/_camera.py intrinsics: measured, y one pixel up)
    assert (info.width, info.height) == (32, 24) and info.k[2] == pytest.approx(16.0) and info.k[5] == pytest.approx(11.0)
    clocks = [c.clock.sec + c.clock.nanosec * 1e-9 for _, c in probe.get("/clock")]
    assert len(clocks) > 10 and all(b >= a for a, b in zip(clocks, clocks[1:]))
    st = latest(probe, "/joint_states").header.stamp
    assert st.sec < 1000  # simulated time since start, not the wall clock
