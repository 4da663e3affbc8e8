"""The continual learner on a learned reward: ``reward_source: learned`` batches carry the reward model's reward
(newest or pinned, waiting until one exists), and ``algo: rlhf`` trains, exports and is gated on the twin's true
success (here a stand-in evaluator whose verdicts the test chooses), never on the learned reward."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from prefs_fixtures import SPEC, make_reach_run

from vla_rl_ros.algos.export import export_onnx, read_model_metadata
from vla_rl_ros.learner.continual import ContinualLearner, LearnerConfig
from vla_rl_ros.learner.evaluate import EvalResult
from vla_rl_ros.preferences.onnx_reward import OnnxRewardModel
from vla_rl_ros.preferences.reward_model import RewardEnsemble, save_reward_model
from vla_rl_ros.preferences.rlhf import RLHFSAC

from test_learner import Still  # the never-moving incumbent


def _save_model(run, seed):
    torch.manual_seed(seed)
    return save_reward_model(RewardEnsemble(SPEC.obs_dim, SPEC.action_dim, hidden=(16,)), run.models_dir, SPEC,
                             {"training_steps": 0})


def _learner(run, evaluate=None, initial=None, **cfg):
    base = dict(gate_episodes=10, gate_block=10, checkpoint_every_s=1e9, min_transitions=100, batch_size=32,
                bc_init_steps=0, hindsight_k=0, candidate_every_updates=10**9, gate_vs_live_every_s=0,
                sac_overrides={"hidden": (32, 32)})
    base.update(cfg)
    return ContinualLearner(str(run.path), LearnerConfig(**base), initial_model=initial, log=lambda m: None,
                            tb=False, evaluate=evaluate or (lambda *a: pytest.fail("no gate expected")))


def _capture_batches(L):
    """Record every batch the learner's algorithm draws."""
    got = []
    train_step = L.algo.train_step

    def spy(sample_fn):
        def sample():
            b = sample_fn()
            got.append(b)
            return b
        return train_step(sample)

    L.algo.train_step = spy
    return got


def test_learned_reward_in_the_batches_newest_or_pinned(tmp_path):
    run = make_reach_run(tmp_path, n_episodes=8, ep_len=20, seed=0)
    L = _learner(run, algo="sac", reward_source="learned", refresh_every_s=0.0)  # look for a newer model every step
    try:
        L.replay.refresh()
        assert L._transition_step() == [] and L.updates == 0  # no reward model yet: it waits
        first = _save_model(run, 0)
        L._build_algo()
        got = _capture_batches(L)
        L._transition_step()
        assert L.updates == 10 and got
        model = OnnxRewardModel(first.path)
        for b in got:
            want = model(np.asarray(b["obs"]), np.asarray(b["action"])) - 1.0  # reward: learned is a cost (offset 1)
            np.testing.assert_allclose(np.asarray(b["reward"]), want, atol=1e-5)
            assert not np.allclose(np.asarray(b["recorded_reward"]), want)  # not the recorded reach_cost
        # a newer model is followed...
        second = _save_model(run, 1)
        got.clear()
        L._transition_step()
        assert L.learned_reward.version == second.version
        np.testing.assert_allclose(np.asarray(got[0]["reward"]),
                                   OnnxRewardModel(second.path)(np.asarray(got[0]["obs"]),
                                                                np.asarray(got[0]["action"])) - 1.0, atol=1e-5)
    finally:
        L.close()
    # ... unless one is pinned
    P = _learner(run, algo="sac", reward_source="learned", reward_model_version=first.version)
    try:
        P.replay.refresh()
        P._build_algo()
        got = _capture_batches(P)
        P._transition_step()
        assert P.learned_reward.version == first.version
        np.testing.assert_allclose(np.asarray(got[0]["reward"]),
                                   model(np.asarray(got[0]["obs"]), np.asarray(got[0]["action"])) - 1.0, atol=1e-5)
    finally:
        P.close()
    with pytest.raises(ValueError, match="reward_source"):
        _learner(run, algo="sac", reward_source="prefs")
    with pytest.raises(ValueError, match="transition learner"):
        _learner(run, algo="recap", reward_source="learned")


@pytest.mark.parametrize("candidate_succeeds", [True, False])
def test_rlhf_trains_exports_and_is_gated_on_true_success(tmp_path, candidate_succeeds):
    run = make_reach_run(tmp_path, n_episodes=8, ep_len=20, seed=1)
    reward_model = _save_model(run, 0)
    still = tmp_path / "still.onnx"
    export_onnx(Still(), SPEC, still, {"algorithm": "still"})
    calls = []

    def twin(path, task, k, seed):  # stands in for the twin: the true task success, chosen by the test
        name = os.path.basename(path)
        calls.append(name)
        ok = candidate_succeeds if name.startswith("rlhf-") else not candidate_succeeds  # the incumbent: the other
        return EvalResult(task, k, seed, [ok] * k, [0.0] * k, [1] * k)

    L = _learner(run, evaluate=twin, initial=str(still), algo="rlhf", rlhf_beta=0.5, candidate_every_updates=20)
    try:
        events = []
        while not events:
            events = [e for e in L.step() if e.kind in ("candidate", "promoted")]
        assert isinstance(L.algo, RLHFSAC) and L.algo.beta == 0.5 and L.updates == 20
        assert L.reward_source == "learned"  # rlhf always trains on the learned reward
        [ev] = events
        assert ev.promoted is candidate_succeeds  # the twin's true success decides, not the learned reward
        assert {c.startswith("rlhf-") for c in calls} == {True, False}  # the candidate and the incumbent, paired
        _, lineage, version = read_model_metadata(ev.path)
        assert lineage["algorithm"] == "rlhf" and lineage["training_steps"] == 20
        assert lineage["reward"] == {"source": "learned", "reward_model": reward_model.version, "rlhf_beta": 0.5}
        assert lineage["twin_success_at_gate"]["rate"] == float(candidate_succeeds)
        # the KL anchor is live and the reference is frozen
        assert all(not p.requires_grad for p in L.algo.reference.parameters())
        ref = {k: v.clone() for k, v in L.algo.reference.state_dict().items()}
        L.checkpoint()
    finally:
        L.close()
    R = _learner(run, evaluate=twin, initial=str(still), algo="rlhf", rlhf_beta=0.5, candidate_every_updates=20)
    try:  # resumed as RLHF, its reference restored
        assert isinstance(R.algo, RLHFSAC) and R.updates == 20
        assert all(torch.equal(ref[k], v) for k, v in R.algo.reference.state_dict().items())
    finally:
        R.close()


def test_learner_node_algo_rlhf_waits_for_a_reward_model_then_gates_in_the_twin(launch, probe, tmp_path):
    """learner_node with ``algo: rlhf``: no reward model, no training; once one is saved it trains on it and its
    candidate is gated by real seeded twin episodes (the true reach success), the reward model in its lineage."""
    import json

    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from conftest import params_file
    from vla_rl_ros.buffer import open_run
    from vla_rl_ros.commands.demos import collect_and_import

    run = make_reach_run(tmp_path, n_episodes=6, ep_len=20, seed=2)
    collect_and_import(open_run(run.path), "reach", 6, seed=0)  # demos: the BC reference
    still = tmp_path / "still.onnx"
    export_onnx(Still(), SPEC, still, {"algorithm": "still"})
    params = params_file(tmp_path / "sim.yaml", learner_node={
        "run_dir": str(run.path), "initial_model": str(still), "task": "reach", "algo": "rlhf", "rlhf_beta": 0.2,
        "min_transitions": 100, "batch_size": 64, "bc_init_steps": 50, "candidate_every_updates": 100,
        "gate_episodes": 10, "gate_block": 10, "hindsight_k": 0, "monitor_episodes": 0})
    probe.collect("/rl/learner/events", String, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    node = launch("learner_node", params)
    probe.wait_for(lambda: "waiting for a reward model" in node.log(), 60, "the learner waiting for a reward model")
    saved = _save_model(run, 0)
    ev = probe.wait_for(lambda: [json.loads(m.data) for _, m in probe.get("/rl/learner/events")
                                 if json.loads(m.data)["kind"] in ("candidate", "promoted")], 240, "a gated candidate")
    _, lineage, version = read_model_metadata(ev[0]["path"])
    assert version.startswith("rlhf-") and lineage["algorithm"] == "rlhf"
    assert lineage["reward"] == {"source": "learned", "reward_model": saved.version, "rlhf_beta": 0.2}
    gate = lineage["twin_success_at_gate"]
    assert gate["episodes"] >= 10 and gate["incumbent_rate"] == 0.0  # the still incumbent never reaches: true success
    assert node.alive
