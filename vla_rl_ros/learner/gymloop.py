"""The continual loop without ROS, in the gymnasium twin: what ``vla-rl-ros sim`` does, episode for episode.

Rounds of ``per_round`` episodes of the arm's current model (with the sim's exploration noise and,
optionally, the sim teacher's rule on env time), then a learning round on everything recorded so far (the
starting model's demos included) with the continual learner's Recap and hindsight settings, then the
learner's twin gate between candidate and incumbent (or, ``gate=False``, the candidate replaces it). It
is the loop's ablation bench (``bench/bench_continual.py --ablation``) and the no-teacher learning test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..algos.hindsight import hindsight_episodes
from ..algos.recap import RecapConfig, RecapTrainer
from .continual import CONTINUAL_RECAP
from .evaluate import evaluate_policy

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class LoopResult:
    rounds: list[dict] = field(default_factory=list)  # per round: episodes, live success, candidate/gate figures
    final: Policy | None = None  # the incumbent at the end


def demo_dicts(demos: list[dict]) -> list[dict]:
    """Demonstrations ``{"obs", "actions"}`` as Recap's episode dicts, on the demo side (every step flagged)."""
    return [{"obs": d["obs"][: len(d["actions"])], "actions": d["actions"], "success": True,
             "intervention": np.ones(len(d["actions"]), bool), "demo": True} for d in demos]


def rollout(env, policy: Policy, seed: int, noise: float, rng: np.random.Generator, teacher=None
            ) -> tuple[dict, np.ndarray]:
    """One episode of ``policy`` with Gaussian exploration noise (std ``noise``, from ``rng``) in ``env``, seeded
    ``seed``; the ``teacher``'s action (on env time) replaces it when it takes over. Returns the episode as
    Recap's dict (``obs [L, d]``, ``actions``, ``success``, ``intervention``) and every observation ``[L + 1, d]``."""
    spec = env.spec_
    dt = 1.0 / spec.control_hz
    obs, _ = env.reset(seed=seed)
    if teacher is not None:
        teacher.new_episode(0.0)
    O, A, I, t, done = [obs], [], [], 0, False
    info = {"is_success": False}
    while not done:
        a_t = teacher.act(obs, t * dt)[0] if teacher is not None else None
        if a_t is None:
            a = np.clip(policy(obs) + noise * rng.standard_normal(spec.action_dim), -1, 1).astype(np.float32)
        else:
            a = np.asarray(a_t, np.float32)
        A.append(a), I.append(a_t is not None)
        obs, _, term, trunc, info = env.step(a)
        O.append(obs)
        t += 1
        done = term or trunc
    O = np.array(O)
    return {"obs": O[:-1], "actions": np.array(A), "success": bool(info["is_success"]),
            "intervention": np.array(I, dtype=bool)}, O


def relabelled(spec, O: np.ndarray, actions: np.ndarray, k: int, goal_low, goal_high,
               rng: np.random.Generator) -> list[dict]:
    """The hindsight successes of one own episode (:func:`~vla_rl_ros.algos.hindsight.hindsight_episodes`) as
    Recap's episode dicts (autonomous steps)."""
    return [{"obs": r.obs[:-1], "actions": r.actions, "success": True, "intervention": np.zeros(len(r.actions), bool)}
            for r in hindsight_episodes(spec, O, actions, k=k, goal_low=goal_low, goal_high=goal_high, rng=rng)]


def run_gym_loop(env, start: Policy, demos: list[dict], *, rounds: int, per_round: int, noise: float = 0.3,
                 teacher=None, hindsight_k: int = 4, gate=None, recap: RecapConfig | None = None, seed: int = 0,
                 episode_seed: int = 100_000, gate_seed: int = 1_000_000,
                 log: Callable[[dict], None] | None = None) -> LoopResult:
    """Run the loop (see the module docstring) in ``env`` (a :class:`~vla_rl_ros.twin.env.TwinEnv`).

    Args:
        start: the starting model (obs -> action).
        demos: its demonstrations, episodes ``{"obs" [L, d], "actions" [L, a]}`` (on the demo side).
        teacher: a :class:`~vla_rl_ros.twin.teacher.Teacher` (None: no one helps).
        hindsight_k: relabelled successes per own episode (:mod:`vla_rl_ros.algos.hindsight`; 0 = off).
        gate: a gate from :func:`~vla_rl_ros.learner.gate.make_gate` (None: every candidate is taken).
        recap: Recap settings (default: the continual learner's, :data:`~.continual.CONTINUAL_RECAP`).
    """
    import torch

    spec = env.spec_
    goal_low, goal_high = env.twin.region.goals(spec.task)
    data = demo_dicts(demos)
    rng = np.random.default_rng(seed + 1)
    incumbent = start
    out = LoopResult()
    ep = 0
    for rd in range(rounds):
        live = []
        for _ in range(per_round):
            e, O = rollout(env, incumbent, episode_seed + ep, noise, rng, teacher)
            ep += 1
            data.append(e)
            live.append(e["success"] and not e["intervention"].any())
            if hindsight_k > 0:
                data += relabelled(spec, O, e["actions"], hindsight_k, goal_low, goal_high,
                                   np.random.default_rng([seed, ep]))
        cfg = recap or RecapConfig(**CONTINUAL_RECAP)
        tr = RecapTrainer(spec.obs_dim, spec.action_dim, RecapConfig(**{**cfg.__dict__, "seed": seed + rd}))
        tr.round(data)
        mod = tr.export_module()

        def cand(o, mod=mod):
            with torch.no_grad():
                return mod(torch.as_tensor(np.asarray(o, np.float32)[None]))[0].numpy()

        row = {"round": rd + 1, "episodes": ep, "data_episodes": len(data), "live_success": float(np.mean(live))}
        if gate is None:
            incumbent = cand
            row["promoted"] = True
        else:
            def block(k, sd, cand=cand, inc=incumbent):
                return (evaluate_policy(cand, spec.task, k, sd, env=env).successes,
                        evaluate_policy(inc, spec.task, k, sd, env=env).successes)

            d = gate.run(block, gate_seed + 60 * (rd + 1))
            row.update(candidate=d.candidate_rate, incumbent=d.incumbent_rate, promoted=bool(d.promote),
                       pairs=d.pairs_used)
            if d.promote:
                incumbent = cand
        out.rounds.append(row)
        if log is not None:
            log(row)
    out.final = incumbent
    return out
