"""policy_node in its own process, fed by a fake arm in the test process: watchdog holds and bad input.

Hold = the last *measured* positions as targets; before the first valid joint
state nothing is published. Every bad input is counted in /diagnostics and
the node keeps running.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float64MultiArray

import onnx_models as om
from conftest import params_file
from ros_helpers import NAMES, FakeArm, arm_commands, last_diag, steps, wait_diag, wait_step
from vla_rl_ros.spec import Spec

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture
def policy(launch, probe, tmp_path, request):
    model = om.write(tmp_path / "reach.onnx", Spec(), "reach", version="r1")
    params = params_file(tmp_path / "p.yaml", policy_node={
        "model_path": model, "control_rate_hz": 50.0, "joint_state_timeout_s": 0.3, "intervention_timeout_s": 0.3,
        **getattr(request, "param", {})})
    probe.collect("/arm_controller/commands", Float64MultiArray)
    probe.collect("/gripper_controller/commands", Float64MultiArray)
    probe.collect("/rl/step", Float64MultiArray, RELIABLE)
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    proc = launch("policy_node", params)
    probe.wait_for(lambda: last_diag(probe) is not None, 60, "policy_node diagnostics")
    return proc


def publish_for(pub, data, seconds: float, period: float = 0.05) -> None:
    """A human at the teleop: publish the same action every ``period`` for ``seconds``."""
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        pub.publish(Float64MultiArray(data=data))
        time.sleep(period)


def assert_holds_at(probe, positions):
    """The commands of hold ticks are exactly the given measured positions (never zeros, never an action)."""
    probe.clear("/arm_controller/commands")
    probe.clear("/gripper_controller/commands")
    probe.wait_for(lambda: len(arm_commands(probe)) >= 3, 10, "hold commands")
    for c in arm_commands(probe)[-3:]:
        np.testing.assert_array_equal(c, positions[:7])
    g = [m.data[0] for _, m in probe.get("/gripper_controller/commands")]
    assert g[-1] == pytest.approx(positions[7] + positions[8])


def test_no_joint_states_no_commands_then_act_then_hold_on_stale_and_estop(policy, probe):
    arm = FakeArm(probe, reliable=True)
    arm.pause = True
    d = wait_diag(probe, lambda d: True, "diagnostics")
    time.sleep(0.5)
    assert arm_commands(probe) == [], "published commands before any joint state"
    assert d["watchdog"] == "waiting for joint_states" and d["model_version"] == "r1"

    arm.pause = False
    s = wait_step(probe, lambda s: not s.hold, "an acting tick")
    assert s.model_version == "r1" and not s.intervention and s.control_rate_hz == 50.0
    assert np.all(np.abs(s.action) <= 1.0) and s.cmd_stamp >= s.obs_stamp
    np.testing.assert_allclose(s.obs[:7], arm.positions[:7], atol=1e-6)

    # stale joint states -> hold at the last measured positions
    arm.pause = True
    time.sleep(0.05)
    last = list(arm.last_sent)
    wait_step(probe, lambda s: s.hold, "a hold tick after joint states stopped")
    assert_holds_at(probe, last)
    assert "joint_states stale" in wait_diag(probe, lambda d: "stale" in d["watchdog"], "stale in diagnostics")["watchdog"]
    assert policy.alive

    arm.pause = False
    wait_step(probe, lambda s: not s.hold, "acting again after joint states resumed")

    # estop (reliable, transient-local) -> hold; release -> act
    pub = probe.publisher("/rl/estop", Bool, LATCHED)
    arm.set(positions=[0.1, -0.7, 0.05, -2.3, 0.02, 1.6, 0.8, 0.03, 0.03])
    time.sleep(0.2)
    pub.publish(Bool(data=True))
    wait_step(probe, lambda s: s.hold, "a hold tick after estop")
    assert_holds_at(probe, arm.positions)
    d = wait_diag(probe, lambda d: d["estop"] == "true", "estop in diagnostics")
    assert d["_message"] == "hold: estop engaged"
    pub.publish(Bool(data=False))
    wait_step(probe, lambda s: not s.hold, "acting after estop release")
    assert policy.alive


def test_bad_inputs_hold_are_counted_and_the_node_recovers(policy, probe):
    arm = FakeArm(probe, reliable=False)  # best-effort publisher this time
    wait_step(probe, lambda s: not s.hold, "an acting tick")
    good = list(arm.positions)

    def bad_then_recover(what, counter, expect_error, apply, undo):
        before = int(last_diag(probe)[counter])
        apply()
        wait_step(probe, lambda s: s.hold, f"a hold tick on {what}")
        d = wait_diag(probe, lambda d: int(d[counter]) > before, f"{counter} to count {what}")
        assert expect_error in d["last_error"], d["last_error"]
        assert d["_level"] == 2 and d["_message"].startswith("hold:")
        assert_holds_at(probe, good)
        undo()
        wait_step(probe, lambda s: not s.hold, f"acting after {what} was fixed")
        assert policy.alive

    nan = list(good)
    nan[3] = math.nan
    bad_then_recover("NaN joint position", "rejected_joint_states", "non-finite position for ['panda_joint4']",
                     lambda: arm.set(positions=nan), lambda: arm.set(positions=good))
    bad_then_recover("a missing joint", "rejected_joint_states", "missing joints ['panda_joint2']",
                     lambda: arm.set(positions=good[:1] + good[2:], names=NAMES[:1] + NAMES[2:]),
                     lambda: arm.set(positions=good, names=NAMES))
    bad_then_recover("a wrong-length position array", "rejected_joint_states", "position has 7 values for 9 names",
                     lambda: arm.set(positions=good[:7]), lambda: arm.set(positions=good))
    # unknown extra joints are ignored (no hold)
    arm.set(positions=good + [1.0], names=NAMES + ["some_other_joint"])
    time.sleep(0.3)
    wait_step(probe, lambda s: not s.hold, "acting with an extra joint")
    arm.set(positions=good, names=NAMES)

    img_pub = probe.publisher("/camera/image_raw", Image)
    # one image is published per case: wait until policy_node's subscription has matched (on a loaded machine
    # discovery can take longer than the first publish, and that image would be lost)
    probe.wait_for(lambda: img_pub.get_subscription_count() > 0, 30, "policy_node subscribed to the camera")

    def image(encoding):
        def send():  # a few copies: the camera's QoS is best-effort, and one message may be dropped under load
            for _ in range(3):
                img_pub.publish(Image(height=2, width=2, encoding=encoding, step=6, data=bytes(12)))
                time.sleep(0.05)
        return send

    bad_then_recover("an unsupported image encoding", "rejected_image", "unsupported image encoding 'mono16'",
                     image("mono16"), image("rgb8"))
    bad_then_recover("a pose in another frame", "rejected_goal_pose", "is not the base frame",
                     lambda: setattr(arm, "frame", "world"), lambda: setattr(arm, "frame", "panda_link0"))
    d = last_diag(probe)
    assert int(d["rejected_inputs"]) >= 5
    log = policy.log()
    assert "rejected joint_states: non-finite position for ['panda_joint4']" in log
    assert "rejected image: unsupported image encoding 'mono16'" in log


@pytest.mark.parametrize("policy", [{"executor": "single_threaded"}], indirect=True)  # the other executor
def test_intervention_replaces_the_policy_action_while_fresh(policy, probe):
    FakeArm(probe)
    wait_step(probe, lambda s: not s.hold and not s.intervention, "a policy tick")
    pub = probe.publisher("/rl/intervention", Float64MultiArray)
    human = [0.5, -0.25, 0.0, -1.0]
    publish_for(pub, human, 1.0)
    rec = [s for _, s in steps(probe) if s.intervention]
    assert rec, "no step flagged as intervention"
    for s in rec:
        assert not s.hold
        np.testing.assert_allclose(s.action, human, atol=1e-6)
    wait_step(probe, lambda s: not s.intervention and not s.hold, "back to the policy after the human stops")
    # a malformed human action is rejected and counted (and holds while it would be fresh)
    pub.publish(Float64MultiArray(data=[0.1, 0.2]))
    d = wait_diag(probe, lambda d: int(d["rejected_intervention"]) >= 1, "rejected intervention counted")
    assert "action has 2 values, expected 4" in d["last_error"]
    wait_step(probe, lambda s: not s.hold and not s.intervention, "acting after the bad human action expired")
    assert "(single_threaded executor)" in policy.log()
    d = last_diag(probe)
    assert float(d["tick_lateness_max_ms"]) >= 0.0  # the timer's schedule reached the tick (TimerInfo)


@pytest.mark.parametrize("policy", [{"exploration_std": 0.2}], indirect=True)
def test_exploration_noise_on_the_models_action_not_on_the_humans(policy, probe):
    FakeArm(probe)  # a still arm: the model sees the same observation every tick
    wait_step(probe, lambda s: not s.hold and not s.intervention, "a policy tick")
    probe.wait_for(lambda: sum(not s.hold for _, s in steps(probe)) >= 40, 20, "40 policy ticks")
    auto = [s for _, s in steps(probe) if not s.hold and not s.intervention]
    obs = np.array([s.obs for s in auto])
    act = np.array([s.action for s in auto])
    np.testing.assert_allclose(obs, obs[:1].repeat(len(obs), 0), atol=1e-6)  # same state every tick ...
    assert act.std(0).max() > 0.05  # ... different recorded (executed) actions: the noise is in the data
    assert np.abs(act).max() <= 1.0
    pub = probe.publisher("/rl/intervention", Float64MultiArray)
    human = [0.5, -0.25, 0.0, -1.0]
    publish_for(pub, human, 0.6)
    rec = [s for _, s in steps(probe) if s.intervention]
    assert rec
    for s in rec:
        np.testing.assert_allclose(s.action, human, atol=1e-6)  # a human's action is never perturbed


@pytest.mark.parametrize("algo", ["ppo", "cql", "iql", "sac"])
def test_each_learners_exported_model_drives_the_arm_through_policy_node(launch, probe, tmp_path, algo):
    """A model exported by each learner (its own export path and lineage) is taken by policy_node, which acts with
    it on the arm: the commands follow the model's action for the observation the node built."""
    from vla_rl_ros.algos.export import export_onnx
    from vla_rl_ros.algos.learners import make_learner
    from vla_rl_ros.algos.ppo import PPO, PPOConfig
    from vla_rl_ros.runtime.onnx_policy import load_validated

    spec = Spec()
    if algo == "ppo":
        module = PPO(spec.obs_dim, spec.action_dim, PPOConfig(seed=1)).policy_module()
    else:
        module = make_learner(algo, spec.obs_dim, spec.action_dim, hidden=(32, 32), seed=1).policy_module()
    version = export_onnx(module, spec, tmp_path / f"{algo}.onnx", {"algorithm": algo}).version
    assert version.startswith(algo)
    params = params_file(tmp_path / "p.yaml", policy_node={"model_path": str(tmp_path / f"{algo}.onnx"),
                                                           "control_rate_hz": 50.0, "exploration_std": 0.0})
    probe.collect("/rl/step", Float64MultiArray, RELIABLE)
    probe.collect("/arm_controller/commands", Float64MultiArray)
    proc = launch("policy_node", params)
    FakeArm(probe, reliable=True)
    s = wait_step(probe, lambda s: not s.hold, f"an acting tick of the {algo} model", timeout=60)
    assert s.model_version == version and not s.intervention
    want = load_validated(str(tmp_path / f"{algo}.onnx"), None, spec).act(np.asarray(s.obs, np.float32))
    np.testing.assert_allclose(s.action, want, atol=1e-5)
    assert arm_commands(probe) and proc.alive
