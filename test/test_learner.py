"""The continual learner: the twin gate with real seeded evaluations, the registry, checkpoint resume,
and learner_node announcing a promoted model."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from vla_rl_ros.algos.export import export_onnx, read_model_metadata, sha256_file
from vla_rl_ros.buffer import create_run
from vla_rl_ros.commands.demos import collect_and_import
from vla_rl_ros.learner.continual import ContinualLearner, LearnerConfig
from vla_rl_ros.spec import Spec

SPEC = Spec(task="reach")


class PController(torch.nn.Module):
    """A decent reach policy: move the hand toward the goal."""

    def __init__(self, gain=1.5):
        super().__init__()
        s = SPEC.obs_slice("ee_to_goal")
        self.a, self.b, self.gain = s.start, s.stop, gain

    def forward(self, obs):
        d = obs[:, self.a:self.b] * (self.gain / SPEC.max_ee_step)
        return torch.cat([d.clamp(-1, 1), torch.ones_like(obs[:, :1])], dim=1)


class Still(torch.nn.Module):
    """A useless policy: never moves."""

    def forward(self, obs):
        return torch.cat([torch.zeros_like(obs[:, :3]), torch.ones_like(obs[:, :1])], dim=1)


@pytest.fixture()
def run(tmp_path):
    r = create_run(tmp_path, "run", SPEC, robot_id="test")
    still = tmp_path / "still.onnx"
    export_onnx(Still(), SPEC, still, {"algorithm": "still"})
    return r, str(still)


def _learner(r, initial, **kw):
    cfg = LearnerConfig(algo="recap", gate_episodes=12, checkpoint_every_s=1e9,
                        recap_overrides={"value_steps": 200, "actor_steps": 600, "h_norm": 50}, **kw)
    return ContinualLearner(str(r.path), cfg, initial_model=initial, log=lambda m: None, tb=False)


def test_gate_promotes_a_better_candidate_and_refuses_a_worse_one(run):
    r, still = run
    L = _learner(r, still)
    try:
        inc0 = L.incumbent
        assert inc0["version"] == read_model_metadata(still)[2]
        [good] = L._candidate(PController(), "test")
        assert good.promoted, good.reason
        assert good.data["candidate_rate"] >= 0.8 and good.data["incumbent_rate"] == 0.0
        assert L.incumbent["version"] == good.version and L.incumbent["sha256"] == sha256_file(good.path)
        [bad] = L._candidate(Still(), "test")
        assert not bad.promoted and "keep incumbent" in bad.reason
        assert L.incumbent["version"] == good.version  # unchanged
        recs = L.registry.records()
        assert [x["promoted"] for x in recs] == [True, True, False]  # initial, good, bad: every candidate kept
        assert all(os.path.isfile(x["path"]) for x in recs)
        # the measured gate figure and the lineage travel inside the promoted model
        _, lineage, version = read_model_metadata(good.path)
        assert version == good.version and lineage["parent_version"] == inc0["version"]
        assert lineage["twin_success_at_gate"]["rate"] == good.data["candidate_rate"]
        # different gates use different seed blocks (no overfitting to one set of episodes)
        assert recs[1]["eval"]["candidate"]["seed"] != recs[2]["eval"]["candidate"]["seed"]
    finally:
        L.close()


def test_recap_round_from_the_buffer_and_resume_from_checkpoint(run):
    r, still = run
    collect_and_import(r, "reach", 12, seed=0)
    L = _learner(r, still, recap_min_episodes=10, recap_round_episodes=10)
    try:
        L.replay.refresh()
        events = L._recap_step()
        assert L.rounds == 1 and len(events) == 1
        assert events[0].promoted, events[0].reason  # imitating 12 expert demos beats standing still
        L.checkpoint()
    finally:
        L.close()
    L2 = _learner(r, still, recap_min_episodes=10, recap_round_episodes=10)
    try:
        assert L2.rounds == 1 and L2.episodes_at_last_round == 12 and L2.gates == 1
        # the resumed trainer carries the trained weights: same action as the promoted candidate's
        L2.replay.refresh()
        obs = L2.replay.sample(8)["obs"]
        with torch.no_grad():
            a = L2.algo.export_module()(obs).numpy()
        import onnxruntime as ort

        sess = ort.InferenceSession(L2.incumbent["path"], providers=["CPUExecutionProvider"])
        b = sess.run(None, {"obs": obs.numpy()})[0]
        np.testing.assert_allclose(a, np.clip(b, -1, 1), atol=1e-5)
    finally:
        L2.close()


def test_learner_node_announces_the_promoted_model(launch, probe, tmp_path, run):
    from conftest import params_file

    r, still = run
    collect_and_import(r, "reach", 12, seed=0)
    params = params_file(tmp_path / "sim.yaml", learner_node={
        "run_dir": str(r.path), "initial_model": still, "task": "reach", "algo": "recap",
        "recap_min_episodes": 10, "recap_round_episodes": 10, "gate_episodes": 12})
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.collect("/rl/policy_update", String, latched)
    probe.collect("/rl/learner/events", String, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    node = launch("learner_node", params, extra_ros_args=["-p", "recap_value_steps:=200", "-p", "recap_actor_steps:=600"])
    first = probe.wait_for(lambda: probe.get("/rl/policy_update"), 60, "the incumbent announced")
    assert json.loads(first[0][1].data)["version"] == read_model_metadata(still)[2]
    ev = probe.wait_for(lambda: [m for _, m in probe.get("/rl/learner/events")
                                 if json.loads(m.data)["kind"] in ("candidate", "promoted")], 240, "a gated candidate")
    e = json.loads(ev[0].data)
    assert e["promoted"], e["reason"]
    upd = probe.wait_for(lambda: [json.loads(m.data) for _, m in probe.get("/rl/policy_update")
                                  if json.loads(m.data)["version"] == e["version"]], 30, "the promotion announced")
    assert upd[0]["sha256"] == sha256_file(upd[0]["path"])
    assert node.alive


def test_sac_learner_adds_hindsight_transitions_of_new_episodes(tmp_path):
    """SAC (HER): a failed own episode that carried the cube 25 cm gives relabelled successes on the replay's
    online side, rewarded by the run's reward with the success bonus on their terminal step; demos give none."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from test_hindsight import SPEC as PP, carry, episode

    from vla_rl_ros.rewards import make_reward

    r = create_run(tmp_path, "pp", PP, robot_id="test")
    obs, act = episode(carry([0.42, -0.15, 0.025], [0.62, 0.12, 0.10], moving=20, resting=6))
    fn = make_reward("pick_place_task", PP)
    w = r.writer()
    for demo in (True, False):
        w.begin_episode("pick_place", seed=1, reward_config=fn.config, is_demo=demo,
                        info={"success": {"task": "pick_place", "tolerance": 0.05, "n_consecutive": 3}})
        for t in range(len(act)):
            w.add_step(obs[t], act[t], float(fn(obs[t], act[t], obs[t + 1], False)), obs[t + 1],
                       truncated=t == len(act) - 1)
        w.end_episode("timeout", False)
    w.close()
    cfg = LearnerConfig(algo="sac", min_transitions=10**9, checkpoint_every_s=1e9, hindsight_k=4,
                        goal_low=(0.40, -0.20, 0.025), goal_high=(0.65, 0.20, 0.15))
    L = ContinualLearner(str(r.path), cfg, log=lambda m: None, tb=False)
    try:
        L.step()
        n_rel = L.hindsight_transitions
        assert n_rel > 0 and L.replay.n_demo == len(act)  # the demo episode: on the demo side, not relabelled
        assert L.replay.n_online == len(act) + n_rel
        b = L.replay.sample(512, demo_ratio=0.0)
        assert float(b["done"].sum()) > 0 and float(b["reward"].max()) > 0.9  # relabelled success ticks
        L.step()
        assert L.hindsight_transitions == n_rel  # each episode is relabelled once
    finally:
        L.close()


def _carry_run(tmp_path):
    """A pick_place run and a writer of episodes that carry the cube 25 cm (each relabels in hindsight)."""
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from test_hindsight import SPEC as PP, carry, episode

    from vla_rl_ros.rewards import make_reward

    r = create_run(tmp_path, "pp", PP, robot_id="test")
    obs, act = episode(carry([0.42, -0.15, 0.025], [0.62, 0.12, 0.10], moving=20, resting=6))
    fn = make_reward("pick_place_task", PP)
    w = r.writer()

    def write(n, demo=False):
        for _ in range(n):
            w.begin_episode("pick_place", seed=1, reward_config=fn.config, is_demo=demo,
                            info={"success": {"task": "pick_place", "tolerance": 0.05, "n_consecutive": 3}})
            for t in range(len(act)):
                w.add_step(obs[t], act[t], float(fn(obs[t], act[t], obs[t + 1], False)), obs[t + 1],
                           truncated=t == len(act) - 1)
            w.end_episode("timeout", False)
        w.flush()

    return r, w, write, len(act)


def _held_keys(L, own=True):
    return {(e.store, e.id) for e in L.replay.episodes() if not (own and e.is_demo)}


def test_replay_capacity_bounds_what_the_sac_learner_holds_and_prunes_its_relabellings(tmp_path):
    """replay_capacity 60 (two 27-step episodes): the own ring and the episodes held stay within it, the demo is
    kept, the newest episodes are the ones held (and relabelled once each, as they arrive), the relabelling
    cache holds only held episodes, and memory() says what was dropped."""
    r, w, write, T = _carry_run(tmp_path)
    write(1, demo=True)
    write(4)
    cfg = LearnerConfig(algo="sac", min_transitions=10**9, checkpoint_every_s=1e9, refresh_every_s=0.0,
                        hindsight_k=4, replay_capacity=60, goal_low=(0.40, -0.20, 0.025), goal_high=(0.65, 0.20, 0.15))
    L = ContinualLearner(str(r.path), cfg, log=lambda m: None, tb=False)
    try:
        L.step()
        held = [e.id for e in L.replay.episodes()]
        assert held == [1, 4, 5]  # the demo, then the newest two of the arm's own
        assert set(L._relabelled) == _held_keys(L) and len(L._relabelled) == 2
        n_rel = L.hindsight_transitions
        assert n_rel > 0 and L.replay._online.size == 60 and L.replay.n_demo == T
        assert L.replay._derived.size == n_rel <= L.replay.derived_capacity == 240
        write(3)
        L.step()
        assert [e.id for e in L.replay.episodes()] == [1, 7, 8]
        assert set(L._relabelled) == _held_keys(L) and len(L._relabelled) == 2  # 4 and 5 pruned
        assert L.hindsight_transitions > n_rel  # the new ones relabelled, though the held count did not grow
        L.step()
        n = L.hindsight_transitions
        L.step()
        assert L.hindsight_transitions == n  # each episode relabelled once
        m = L.memory()
        assert m["episodes_held"] == 3 and m["episodes_evicted"] == 5 and m["relabelled_episodes_held"] == 2
        assert m["transitions_evicted"] == 7 * T - 60 and m["transitions"] == 60 + T + L.replay._derived.size
    finally:
        L.close()
        w.close()


def test_recap_rounds_go_on_once_the_replay_capacity_is_reached(tmp_path):
    """Recap counts new episodes by what the store completed, not by what is held: once the capacity holds
    the number of episodes steady, every recap_round_episodes new ones still start a round, on the held ones."""
    from vla_rl_ros.learner.evaluate import evaluate_onnx

    r, w, write, T = _carry_run(tmp_path)
    write(4)
    logs: list[str] = []
    cfg = LearnerConfig(algo="recap", checkpoint_every_s=1e9, hindsight_k=4, replay_capacity=60,
                        recap_min_episodes=2, recap_round_episodes=2, gate_episodes=1, gate_block=1,
                        goal_low=(0.40, -0.20, 0.025), goal_high=(0.65, 0.20, 0.15),
                        recap_overrides={"value_steps": 5, "actor_steps": 5, "h_norm": 50})
    L = ContinualLearner(str(r.path), cfg, evaluate=evaluate_onnx, log=logs.append, tb=False)
    try:
        L.replay.refresh()
        assert len(L._recap_step()) == 1 and L.rounds == 1 and L.episodes_at_last_round == 4
        assert "2 episodes" in logs[-2] and "2 older ones out of memory (replay_capacity 60)" in logs[-2]
        write(1)
        assert L._recap_step() == [] and L.rounds == 1  # one new: not yet a round
        write(1)
        assert len(L._recap_step()) == 1 and L.rounds == 2 and L.episodes_at_last_round == 6
        assert L.replay.n_episodes == 2 and set(L._relabelled) == _held_keys(L)
    finally:
        L.close()
        w.close()
