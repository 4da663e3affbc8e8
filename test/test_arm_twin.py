"""The gate and the monitor evaluate in the arm's twin (the run's spec, the arm's URDF), not the Panda's."""
from __future__ import annotations

import json

import pytest

from arms import XARM6_URDF, xarm6_params, xarm6_spec
from onnx_models import write
from vla_rl_ros.learner.evaluate import TwinConfig, evaluate_onnx, evaluate_onnx_in_subprocess, evaluate_policy, onnx_actor
from vla_rl_ros.learner.monitor import PromotionMonitor, read_monitor
from vla_rl_ros.runtime.onnx_policy import ModelRejected
from vla_rl_ros.spec import Spec
from vla_rl_ros.twin.env import TwinEnv

SPEC = xarm6_spec("reach")
TWIN = TwinConfig(spec=SPEC, urdf_path=XARM6_URDF)


@pytest.fixture(scope="module")
def xarm_model(tmp_path_factory):
    return write(tmp_path_factory.mktemp("m") / "xarm_reach.onnx", SPEC, "reach", version="xarm-v1")


def _reference(model, episodes, seed):
    env = TwinEnv(spec=SPEC, urdf_path=XARM6_URDF)
    try:
        assert env.twin.arm_idx and len(env.twin.arm_idx) == 6
        return evaluate_policy(onnx_actor(model, SPEC), "reach", episodes, seed, env=env)
    finally:
        env.close()


def test_the_gates_evaluation_runs_in_the_arms_twin(xarm_model):
    ref = _reference(xarm_model, 2, 1_000_000)
    got = evaluate_onnx_in_subprocess(xarm_model, "reach", 2, 1_000_000, twin=TWIN)  # the learner's gate
    assert (got.successes, got.returns, got.lengths) == (ref.successes, ref.returns, ref.lengths)
    # the model's own spec when the caller names none: the same episodes (the URDF still has to be given)
    own = evaluate_onnx(xarm_model, "reach", 2, 1_000_000, twin=TwinConfig(urdf_path=XARM6_URDF))
    assert own.returns == ref.returns


def test_no_quiet_panda_a_wrong_twin_is_an_error(xarm_model):
    with pytest.raises(ValueError, match="joint1"):  # the xArm's joints are not in the Panda's URDF
        evaluate_onnx(xarm_model, "reach", 1, 0)
    with pytest.raises(ModelRejected, match="arm_joints"):  # the run's spec is the Panda's: the model differs
        evaluate_onnx(xarm_model, "reach", 1, 0, twin=TwinConfig(spec=Spec(task="reach")))


def test_monitor_measures_in_the_arms_twin(tmp_path, xarm_model):
    m = PromotionMonitor(tmp_path / "models", "reach", episodes=2, seed=20_000, log=lambda s: None, twin=TWIN)
    m.submit("xarm-v1", xarm_model)
    [rec] = m.run_pending()
    assert rec["error"] is None
    ref = _reference(xarm_model, 2, 20_000)
    assert rec["success_rate"] == ref.success_rate and rec["mean_return"] == pytest.approx(ref.mean_return)


def test_learner_node_monitors_in_the_arms_twin(launch, probe, tmp_path, xarm_model):
    """learner_node builds its gate's and monitor's twin from the run's spec and the params file's URDF."""
    from conftest import params_file
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from vla_rl_ros.buffer import create_run

    r = create_run(tmp_path, "run", SPEC, robot_id="xarm")
    params = params_file(tmp_path / "arm.yaml", common=xarm6_params("reach"), learner_node={
        "run_dir": str(r.path), "initial_model": xarm_model, "algo": "recap", "monitor_episodes": 2,
        "monitor_seed": 20_000})
    probe.collect("/rl/learner/events", String, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    node = launch("learner_node", params)

    def monitor_events():
        return [e for e in (json.loads(m.data) for _, m in probe.get("/rl/learner/events"))
                if e.get("kind") == "monitor"]

    [ev] = probe.wait_for(monitor_events, 120, "the incumbent's monitor result")
    rec = ev["data"]
    assert rec["error"] is None, rec["error"]
    ref = _reference(xarm_model, 2, 20_000)
    assert rec["success_rate"] == ref.success_rate and rec["mean_return"] == pytest.approx(ref.mean_return)
    assert read_monitor(r.models_dir)[0]["version"] == "xarm-v1"
    assert node.alive and "differ from the run's" not in node.log()
