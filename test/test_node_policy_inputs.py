"""policy_node on inputs as a real cell publishes them (issue 9, item 2), fed from the test process.

* Split joint states: the arm's seven joints on ``/joint_states`` at 100 Hz and the gripper's one finger joint
  (the other a ``<mimic>``) on ``/franka_gripper/joint_states`` at 30 Hz, as franka_ros2 publishes them: the
  arm acts on the merged state, and holds when the gripper's topic goes quiet.
* Task poses in another frame: published in ``world``, used through the params file's static transform; in a
  frame nothing connects, refused, and the arm holds.
* teacher_node, which builds the same observation, on both.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

import onnx_models as om
from conftest import params_file
from ros_helpers import FakeArm, last_diag, steps, wait_diag, wait_step
from vla_rl_ros.runtime.control import PANDA_HOME
from vla_rl_ros.spec import PANDA_ARM_JOINTS, Spec

SPEC = Spec()
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
GRIPPER_TOPIC = "/franka_gripper/joint_states"
# the world frame: 0.1 m behind the base, turned 90 degrees about z (the world's x is the base's y)
S = math.sqrt(0.5)
WORLD = f"world -0.1 0.0 0.0 0.0 0.0 {S!r} {S!r}"


def start(launch, probe, tmp_path, **params):
    model = om.write(tmp_path / "reach.onnx", SPEC, "reach", version="r1")
    pf = params_file(tmp_path / "p.yaml", policy_node={
        "model_path": model, "control_rate_hz": 50.0, "joint_state_timeout_s": 0.3, **params})
    probe.collect("/rl/step", Float64MultiArray, RELIABLE)
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    proc = launch("policy_node", pf)
    probe.wait_for(lambda: last_diag(probe) is not None, 60, "policy_node diagnostics")
    return proc


class FingerPublisher:
    """The gripper's own driver: one finger joint (``panda_finger_joint1``; joint 2 <mimic>s it) at 30 Hz."""

    def __init__(self, probe, finger: float):
        self.node = probe.node
        self.finger = finger
        self.pause = False
        self.pub = probe.node.create_publisher(JointState, GRIPPER_TOPIC, qos_profile_sensor_data)
        self._t = probe.node.create_timer(1.0 / 30.0, self._tick)

    def _tick(self):
        if self.pause:
            return
        m = JointState()
        m.header.stamp = self.node.get_clock().now().to_msg()
        m.name = ["panda_finger_joint1"]
        m.position = [float(self.finger)]
        self.pub.publish(m)


@pytest.mark.parametrize("tick_mode", ["timer", "event"])
def test_split_joint_states_arm_and_one_finger_on_two_topics_drive_the_arm(launch, probe, tmp_path, tick_mode):
    """In event mode only the arm's states drive ticks: every acting tick is on a state of its own."""
    probe.collect("/joint_states", JointState, RELIABLE)  # the arm's states, to tell what each tick was on
    proc = start(launch, probe, tmp_path, gripper_state_timeout_s=0.3, tick_mode=tick_mode,
                 **({"control_rate_hz": 100.0, "joint_state_timeout_s": 0.5} if tick_mode == "event" else {}),
                 topics={"extra_joint_states": [GRIPPER_TOPIC]})
    arm = FakeArm(probe, rate_hz=100.0)
    arm.set(positions=list(PANDA_HOME), names=list(PANDA_ARM_JOINTS))  # the arm's joints only
    d = wait_diag(probe, lambda d: d["watchdog"] == "waiting for gripper_states", "waiting for the gripper")
    assert d["rejected_joint_states"] == "0"  # an arm-only state is not an error: the gripper is simply not in yet
    fingers = FingerPublisher(probe, 0.03)
    g = SPEC.obs_slice("gripper_width")
    s = wait_step(probe, lambda s: not s.hold, "an acting tick on the merged state")
    assert s.model_version == "r1"
    assert s.obs[g][0] == pytest.approx(0.06, abs=1e-6)  # one finger at 3 cm: the mimic's too, 6 cm wide
    np.testing.assert_allclose(s.obs[:7], PANDA_HOME, atol=1e-6)

    fingers.finger = 0.01  # the gripper moves: its width follows, the arm keeps acting
    wait_step(probe, lambda s: not s.hold and abs(s.obs[g][0] - 0.02) < 1e-6, "the new width, acting")
    if tick_mode == "event":  # each acting tick is on an arm state of its own, never on a gripper state
        probe.wait_for(lambda: sum(not s.hold for _, s in steps(probe)) >= 100, 30, "100 acting ticks")
        acted = [s.obs_stamp for _, s in steps(probe) if not s.hold]
        arm_stamps = {(m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec) * 1e-9
                      for _, m in probe.get("/joint_states")}
        assert len(acted) == len(set(acted)) and set(acted) <= arm_stamps

    fingers.pause = True  # the gripper's driver goes quiet: its group is stale, the arm holds
    wait_step(probe, lambda s: s.hold, "a hold once the gripper's state is stale")
    d = wait_diag(probe, lambda d: "gripper_states stale" in d["watchdog"], "gripper stale in diagnostics")
    assert d["rejected_joint_states"] == "0" and d["rejected_gripper_states"] == "0"
    fingers.pause = False
    wait_step(probe, lambda s: not s.hold, "acting again once the gripper publishes")
    assert proc.alive


def test_pose_in_another_frame_is_used_through_the_configured_transform(launch, probe, tmp_path):
    proc = start(launch, probe, tmp_path, static_transforms=[WORLD])
    # the task poses of the plain test arm (object (0.5, 0, 0.025), goal (0.5, 0.15, 0.3) in the base frame),
    # as perception in the world frame publishes them: base = R_z(90) world + (-0.1, 0, 0)
    arm = FakeArm(probe, obj=(0.0, -0.6, 0.025), goal=(0.15, -0.6, 0.3))
    arm.frame = "world"
    s = wait_step(probe, lambda s: not s.hold, "an acting tick on world-frame poses")
    np.testing.assert_allclose(s.obs[SPEC.obs_slice("object_pos")], (0.5, 0.0, 0.025), atol=1e-6)
    np.testing.assert_allclose(s.obs[SPEC.obs_slice("goal_pos")], (0.5, 0.15, 0.3), atol=1e-6)

    arm.frame = "camera"  # a frame nothing connects to the base: refused, the arm holds
    wait_step(probe, lambda s: s.hold, "a hold on poses in an unknown frame")
    d = wait_diag(probe, lambda d: "camera" in d["watchdog"], "the refusal in diagnostics")
    assert "is not the base frame 'panda_link0'" in d["watchdog"] and "'world'" in d["watchdog"], d["watchdog"]
    assert int(d["rejected_object_pose"]) > 0

    arm.frame = "panda_link0"  # the base frame itself still works, untransformed
    arm.obj, arm.goal = [0.45, 0.05, 0.025], [0.5, 0.15, 0.3]
    s = wait_step(probe, lambda s: not s.hold, "acting again on base-frame poses")
    np.testing.assert_allclose(s.obs[SPEC.obs_slice("object_pos")], (0.45, 0.05, 0.025), atol=1e-6)
    assert proc.alive


def test_a_malformed_static_transform_stops_the_node_with_the_reason(launch, probe, tmp_path):
    model = om.write(tmp_path / "reach.onnx", SPEC, "reach", version="r1")
    pf = params_file(tmp_path / "p.yaml", policy_node={"model_path": model, "static_transforms": ["world 1 2 3"]})
    proc = launch("policy_node", pf)
    probe.wait_for(lambda: not proc.alive, 60, "policy_node to exit")
    assert "expected 'FRAME [PARENT] x y z qx qy qz qw'" in proc.log()


def test_teacher_reads_split_joint_states_and_world_frame_poses(launch, probe, tmp_path):
    """teacher_node builds the policy's observation from the same inputs: with the gripper's one finger on its
    own topic and the cube in the world frame, it takes over a stalled episode and heads for the cube (+x in
    the base frame; the untransformed world coordinates would send it to -x, -y)."""
    spec = Spec(task="pick_place")
    pf = params_file(tmp_path / "p.yaml", common={"task": "pick_place"}, teacher_node={
        "watch_fraction": 1.0, "stall_s": 0.2, "takeover_s": 30.0, "quiet_after_episode_s": 0.0,
        "static_transforms": [WORLD], "topics": {"extra_joint_states": [GRIPPER_TOPIC]}})
    probe.collect("/rl/intervention", Float64MultiArray, qos_profile_sensor_data)
    proc = launch("teacher_node", pf)
    arm = FakeArm(probe, obj=(0.0, -0.6, 0.025), goal=(0.15, -0.6, 0.3))  # base (0.5, 0, 0.025), (0.5, 0.15, 0.3)
    arm.frame = "world"
    arm.set(positions=list(PANDA_HOME), names=list(PANDA_ARM_JOINTS))
    FingerPublisher(probe, 0.04)
    first = probe.wait_for(lambda: next((m for _, m in probe.get("/rl/intervention")), None), 60,
                           "the teacher taking over")
    a = np.array(first.data)
    assert a.shape == (spec.action_dim,) and np.isfinite(a).all()
    assert a[0] > 0.5 and abs(a[1]) < 0.2, a  # the hand (x ~0.31 m) heads for the cube at x 0.5, y 0
    assert proc.alive
