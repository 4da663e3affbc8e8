"""The continual loop without ROS or a teacher (vla_rl_ros/learner/gymloop.py) lifts the shipped,
deliberately imperfect pick_place model from its own noisy episodes (behaviour, seeded; not timed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

MODEL = str(Path(__file__).resolve().parents[1] / "models" / "pick_place_bc.onnx")


@pytest.fixture(scope="module")
def env():
    from vla_rl_ros.twin.env import TwinEnv

    e = TwinEnv(task="pick_place")
    yield e
    e.close()


def test_no_teacher_loop_lifts_the_shipped_model_from_its_own_episodes(env):
    import torch

    from vla_rl_ros.learner.evaluate import evaluate_policy, onnx_actor
    from vla_rl_ros.learner.gymloop import run_gym_loop
    from vla_rl_ros.twin.expert import ScriptedExpert, collect_demos

    torch.set_num_threads(1)
    start = onnx_actor(MODEL)
    demos = collect_demos(env, ScriptedExpert(env.spec_), 10, seed=0)  # exactly the model's demos
    res = run_gym_loop(env, start, demos, rounds=2, per_round=40, noise=0.3, teacher=None, gate=None, seed=0)
    assert len(res.rounds) == 2 and res.rounds[-1]["episodes"] == 80
    # nobody helped: every data episode beyond the demos and the hindsight relabellings is the arm's own
    assert all(r["promoted"] for r in res.rounds)
    before = evaluate_policy(start, "pick_place", 60, 30_000, env=env).success_rate
    after = evaluate_policy(res.final, "pick_place", 60, 30_000, env=env).success_rate
    assert after >= before + 0.15, (before, after)


def test_the_loop_with_a_gate_keeps_the_incumbent_when_the_candidate_is_refused(env):
    from vla_rl_ros.learner.gymloop import run_gym_loop

    class Never:  # a gate that refuses everything: the incumbent must stay the starting model
        def run(self, block, seed):
            c, i = block(5, seed)
            assert len(c) == len(i) == 5

            class D:
                candidate_rate, incumbent_rate, promote, pairs_used = float(np.mean(c)), float(np.mean(i)), False, 5
            return D()

    def start(o):
        return np.zeros(env.spec_.action_dim, np.float32)

    res = run_gym_loop(env, start, [], rounds=1, per_round=3, noise=0.0, gate=Never(), hindsight_k=0)
    assert res.final is start and res.rounds[0]["promoted"] is False and res.rounds[0]["pairs"] == 5
