"""Signed promotions at the node: a policy_node with trusted_keys and allowed_models_dir refuses unsigned, wrongly
signed, replayed and out-of-directory announcements, each with its reason and counter, while the incumbent keeps
acting; a good signed one takes over. Real rclpy, real ONNX, real Ed25519 keys."""
from __future__ import annotations

import json

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, String

import onnx_models as om
from conftest import params_file
from ros_helpers import FakeArm, announce, arm_commands, last_diag, results, start_policy_node, steps
from vla_rl_ros.runtime.onnx_policy import sha256_file
from vla_rl_ros.signing import REJECTION_KINDS, Signer, generate_keypair, public_key_path
from vla_rl_ros.spec import Spec

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
RESULTS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
SPEC = Spec()


def test_policy_node_runs_only_signed_newer_models_from_its_models_dir(launch, probe, tmp_path):
    trusted_key = str(tmp_path / "keys" / "learner.key")
    generate_keypair(trusted_key)
    other_key = str(tmp_path / "keys" / "intruder.key")
    generate_keypair(other_key)
    learner, intruder = Signer(trusted_key), Signer(other_key)
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)

    v1 = om.write(tmp_path / "v1.onnx", SPEC, "reach", version="v1")  # start-up model: trusted by configuration
    proc, arm = start_policy_node(launch, probe, tmp_path, v1, trusted_keys=[public_key_path(trusted_key)],
                                  allowed_models_dir=str(models))
    probe.wait_for(lambda: any(not s.hold and s.model_version == "v1" for _, s in steps(probe)), 60, "acting with v1")
    pub = probe.publisher("/rl/policy_update", String)

    def model(name):  # a good model inside the allowed directory
        p = om.write(models / f"{name}.onnx", SPEC, "mlp", version=name)
        return p, sha256_file(p)

    p_a, sha_a = model("unsigned")
    p_b, sha_b = model("intruder")
    p_c, sha_c = model("tampered")
    p_out = om.write(tmp_path / "outside.onnx", SPEC, "mlp", version="outside")
    p_good, sha_good = model("good")
    p_old, sha_old = model("old")
    tampered = learner.announcement(p_c, sha_c, "tampered", SPEC, seq=50)
    tampered["sha256"] = sha_a  # a signature lifted onto another model
    cases = [
        ({"path": p_a, "sha256": sha_a, "version": "unsigned"}, "unsigned", "unsigned announcement"),
        (intruder.announcement(p_b, sha_b, "intruder", SPEC, seq=60), "untrusted_key", "not among the 1 trusted"),
        (tampered, "bad_signature", "does not verify"),
        (learner.announcement(p_out, sha256_file(p_out), "outside", SPEC, seq=70), "outside_dir",
         "outside the allowed models directory"),
        (learner.announcement(p_a, sha_a, "unsigned", SPEC.replace(max_ee_step=0.03), seq=80), "wrong_spec",
         "configured with spec"),
    ]
    for req, kind, reason in cases:
        n_cmd = len(arm_commands(probe))
        r = announce(probe, pub, req)
        assert r["accepted"] is False and r["event"] == "rejected" and r["kind"] == kind and reason in r["reason"], r
        assert r["running"] == "v1"
        probe.wait_for(lambda: len(arm_commands(probe)) > n_cmd + 5, 10, "commands after a rejection")

    # a good signed model takes over
    r = announce(probe, pub, learner.announcement(p_good, sha_good, "good", SPEC, seq=100))
    assert r["accepted"] is True and r["event"] == "swapped" and r["previous"] == "v1", r
    probe.wait_for(lambda: any(not s.hold and s.model_version == "good" for _, s in steps(probe)), 20,
                   "acting with the signed model")

    # a validly signed but older announcement (a replay) is refused; the signed model keeps acting
    n_steps = len(steps(probe))
    r = announce(probe, pub, learner.announcement(p_old, sha_old, "old", SPEC, seq=99))
    assert r["accepted"] is False and r["kind"] == "replayed" and "not newer" in r["reason"] and r["running"] == "good"
    probe.wait_for(lambda: len(steps(probe)) > n_steps + 5, 10, "steps after the replay")
    assert all(s.model_version == "good" and not s.hold for _, s in steps(probe)[n_steps:])

    want = {"unsigned": 1, "untrusted_key": 1, "bad_signature": 1, "outside_dir": 1, "wrong_spec": 1, "replayed": 1}
    d = probe.wait_for(lambda: (lambda d: d if d and d["rejected_updates"] == "6" else None)(last_diag(probe)), 10,
                       "the rejection counters in diagnostics")
    assert d["signatures_required"] == "true" and d["model_version"] == "good"
    assert {k: int(d[f"rejected_updates_{k}"]) for k in REJECTION_KINDS} == {k: want.get(k, 0) for k in REJECTION_KINDS}
    assert proc.alive and arm.n_sent > 0


def test_sim_wiring_learner_signs_and_policy_node_takes_its_incumbent(launch, probe, tmp_path):
    """The sim graph's signing parameters (graph.node_parameters; the run's key pair as `vla-rl-ros sim` makes
    it): the learner's signed announcement of its incumbent, from <run>/models, is what policy_node runs."""
    from vla_rl_ros.buffer import create_run
    from vla_rl_ros.commands.sim import _ensure_sim_keys
    from vla_rl_ros.graph import node_parameters, sim_keys

    run = create_run(tmp_path, "run", SPEC, robot_id="test")
    _ensure_sim_keys(str(run.path))
    start = om.write(tmp_path / "start.onnx", SPEC, "reach", version="start")
    initial = om.write(tmp_path / "initial.onnx", SPEC, "mlp", version="initial")
    nodes = node_parameters("sim", task="reach", run_dir=str(run.path), model=start)
    assert nodes["policy_node"]["trusted_keys"] == [sim_keys(str(run.path))[1]]
    params = params_file(
        tmp_path / "p.yaml",
        policy_node={**nodes["policy_node"], "control_rate_hz": 50.0, "joint_state_timeout_s": 0.5},
        learner_node={**nodes["learner_node"], "initial_model": initial, "monitor_episodes": 0})
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.collect("/rl/policy_update", String, latched)
    probe.collect("/rl/step", Float64MultiArray, RELIABLE)
    probe.collect("/rl/policy_update_result", String, RESULTS)
    policy = launch("policy_node", params)
    FakeArm(probe)
    probe.wait_for(lambda: any(not s.hold and s.model_version == "start" for _, s in steps(probe)), 60,
                   "acting with the start-up model")
    learner = launch("learner_node", params)
    ann = json.loads(probe.wait_for(lambda: probe.get("/rl/policy_update"), 120, "the incumbent announced")[0][1].data)
    assert ann["version"] == "initial" and ann["signature"]["key_id"] == Signer(sim_keys(str(run.path))[0]).key_id
    assert ann["path"].startswith(str(run.path / "models"))
    r = probe.wait_for(lambda: next((x for x in results(probe) if x.get("version") == "initial"), None), 60,
                       "policy_node's reply to the learner")
    assert r["accepted"] is True and r["event"] == "swapped" and r["previous"] == "start", r
    probe.wait_for(lambda: any(not s.hold and s.model_version == "initial" for _, s in steps(probe)), 20,
                   "acting with the learner's signed incumbent")
    with open(nodes["policy_node"]["replay_state_file"]) as f:  # the replay bound, kept for a restart
        assert json.load(f) == {"seq": ann["signature"]["seq"], "sha256": ann["sha256"]}
    assert policy.alive and learner.alive
