"""twin_node + policy_node, each in its own process: the policy drives the simulated arm to the goal."""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

import onnx_models as om
from conftest import params_file
from ros_helpers import last_diag, steps
from vla_rl_ros.spec import Spec

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
SPEC = Spec()
E2G = SPEC.obs_slice("ee_to_goal")


def test_policy_reaches_the_goal_in_the_twin_and_again_after_reset(launch, probe, tmp_path):
    model = om.write(tmp_path / "reach.onnx", SPEC, "reach", version="reach-p")
    params = params_file(tmp_path / "sim.yaml", twin_node={"seed": 3}, policy_node={"model_path": model})
    probe.collect("/rl/step", Float64MultiArray, RELIABLE)
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    twin = launch("twin_node", params)
    policy = launch("policy_node", params)

    def dist(s):
        return float(np.linalg.norm(s.obs[E2G]))

    cli = probe.node.create_client(Trigger, "/twin/reset")
    probe.wait_for(lambda: next((s for _, s in steps(probe) if not s.hold), None), 60, "an acting step")
    # The probe may discover policy_node after the arm already reached the first goal: start a fresh
    # episode now that everything is connected, and follow it from its first step.
    assert cli.wait_for_service(timeout_sec=20)
    n0 = len(steps(probe))
    fut = cli.call_async(Trigger.Request())
    probe.wait_for(fut.done, 20, "reset")
    first = probe.wait_for(lambda: next((s for _, s in steps(probe)[n0:] if not s.hold and dist(s) > 0.1), None),
                           20, "an acting step toward the new goal")
    assert first.model_version == "reach-p" and first.control_rate_hz == 20.0
    probe.wait_for(lambda: any(dist(s) < 0.02 for _, s in steps(probe)[n0:] if s.tick > first.tick), 30,
                   "the hand within 2 cm of the goal")
    seq = [s for _, s in steps(probe)[n0:]]
    assert seq[-1].obs[:7].tolist() != first.obs[:7].tolist()  # the arm moved
    acted = [not s.hold for s in seq if s.tick > first.tick]
    assert sum(acted) >= 0.5 * len(acted), "the policy mostly held while reaching"  # (stale-joint-state holds
    # can happen on a loaded machine: joint_state_timeout_s is 0.1 s)

    fut = cli.call_async(Trigger.Request())
    probe.wait_for(fut.done, 20, "reset")
    n = len(steps(probe))
    probe.wait_for(lambda: any(dist(s) > 0.1 for _, s in steps(probe)[n:]), 20, "a new goal after reset")
    m = len(steps(probe))
    probe.wait_for(lambda: any(dist(s) < 0.02 for _, s in steps(probe)[m:]), 30, "the new goal reached")
    d = probe.wait_for(lambda: last_diag(probe), 10, "diagnostics")
    assert d["model_version"] == "reach-p" and int(d["rejected_inputs"]) == 0
    assert twin.alive and policy.alive
