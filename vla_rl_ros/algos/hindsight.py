"""Hindsight goal relabelling: every episode that moved the object is a success for *some* goal.

After Andrychowicz et al., "Hindsight Experience Replay" (2017) and Ghosh et
al., "Learning to Reach Goals via Iterated Supervised Learning" (GCSL, 2019).

The twin's tasks are goal-conditioned: the goal is part of the observation
(``goal_pos`` and the two differences to it, see :mod:`vla_rl_ros.spec`). An
episode of the arm's own that put the cube down 12 cm from its goal failed its
task, but it *is* a successful demonstration of the task whose goal is where
the cube ended up. :func:`hindsight_episodes` turns a recorded episode into
such relabelled episodes:

1. Candidate goals are positions the tracked point reached (the object for
   ``pick_place``, the hand for ``reach``): the last one and ``k - 1`` more
   drawn from the episode. A candidate is kept only if it is a goal the task
   could have asked for: at least ``min_displacement`` (the task's minimum
   object-to-goal distance, 10 cm, in the xy plane) from where the point
   started, and inside ``goal_low .. goal_high`` when given. This keeps
   "the cube did not move, so it is at its goal" out of the data.
2. For goal ``g`` the success detector's own rule is replayed on the recorded
   positions: the first tick ``t*`` at which the point has been within
   ``tolerance`` of ``g`` for ``n_consecutive`` ticks in a row. The relabelled
   episode is the prefix ``obs[0 .. t*]``, ``actions[0 .. t*-1]``, a success of
   length ``t*`` (the episode would have ended there).
3. The goal segments of every observation are rewritten
   (:func:`relabel_goal`): ``goal_pos = g``, ``object_to_goal`` and
   ``ee_to_goal`` recomputed. Joint positions, the hand and the object are
   untouched: the arm did exactly what it did.

The result is ordinary episodes (``obs [L+1, d]``, ``actions [L, a]``,
``success=True``), so any learner takes them: supervised ones clone them
(GCSL), Recap labels them, and a critic's rewards are recomputed on them by the
reward function with ``terminated`` on the last step.

Only the goal is relabelled, so this needs no model of the world and is exact
for the twin's tasks (success depends on the tracked point and the goal only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..spec import Spec


@dataclass
class RelabelledEpisode:
    obs: np.ndarray  # [L + 1, obs_dim] with the new goal
    actions: np.ndarray  # [L, action_dim]
    goal: np.ndarray  # [3]
    source_length: int  # length of the episode it came from
    success: bool = True


def tracked_point(spec: Spec, obs: np.ndarray, task: str | None = None) -> np.ndarray:
    """The point whose distance to the goal defines success: the object (pick_place) or the hand (reach)."""
    task = task or spec.task
    return np.asarray(obs)[..., spec.obs_slice("object_pos" if task == "pick_place" else "ee_pos")]


def relabel_goal(spec: Spec, obs: np.ndarray, goal: Sequence[float]) -> np.ndarray:
    """A copy of ``obs [..., obs_dim]`` with the goal replaced by ``goal`` and the goal differences recomputed."""
    o = np.array(obs, dtype=np.float32, copy=True)
    g = np.asarray(goal, dtype=np.float32)
    o[..., spec.obs_slice("goal_pos")] = g
    o[..., spec.obs_slice("object_to_goal")] = g - o[..., spec.obs_slice("object_pos")]
    o[..., spec.obs_slice("ee_to_goal")] = g - o[..., spec.obs_slice("ee_pos")]
    return o


def first_success(points: np.ndarray, goal: np.ndarray, tolerance: float, n_consecutive: int) -> int | None:
    """The first tick ``t >= 1`` at which ``points[t-n+1 .. t]`` are all within ``tolerance`` of ``goal``.

    ``points [L + 1, 3]``: index 0 is the state after the reset, which the success detector does not see
    (it is fed the observation after each step)."""
    near = np.linalg.norm(points[1:] - goal, axis=-1) < tolerance
    streak = 0
    for i, ok in enumerate(near):
        streak = streak + 1 if ok else 0
        if streak >= n_consecutive:
            return i + 1
    return None


def hindsight_episodes(
    spec: Spec,
    obs: np.ndarray,
    actions: np.ndarray,
    *,
    task: str | None = None,
    k: int = 4,
    tolerance: float = 0.05,
    n_consecutive: int = 3,
    min_displacement: float = 0.10,
    goal_low: Sequence[float] | None = None,
    goal_high: Sequence[float] | None = None,
    rng: np.random.Generator | None = None,
) -> list[RelabelledEpisode]:
    """Relabelled successes of one recorded episode (see the module docstring).

    Args:
        obs: ``[L + 1, obs_dim]``, the observations of the episode including the last next-observation.
        actions: ``[L, action_dim]``.
        k: candidate goals per episode (the final position and ``k - 1`` drawn ones); duplicates (the same
            success prefix) are dropped.
        tolerance, n_consecutive: the success detector's settings.
        min_displacement: the candidate goal's least xy distance from the point's starting position.
        goal_low, goal_high: the task's goal region (inclusive); ``None`` = anywhere.
    """
    o = np.asarray(obs, dtype=np.float32)
    a = np.asarray(actions, dtype=np.float32)
    if o.ndim != 2 or a.ndim != 2 or len(o) != len(a) + 1:
        raise ValueError(f"expected obs [L+1, d] and actions [L, a], got {o.shape} and {a.shape}")
    if len(a) == 0 or k < 1:
        return []
    rng = rng or np.random.default_rng(0)
    pts = tracked_point(spec, o, task).astype(np.float64)
    start = pts[0]
    ok = np.linalg.norm(pts[1:, :2] - start[:2], axis=-1) >= min_displacement
    if goal_low is not None:
        ok &= np.all(pts[1:] >= np.asarray(goal_low, dtype=np.float64) - 1e-9, axis=-1)
    if goal_high is not None:
        ok &= np.all(pts[1:] <= np.asarray(goal_high, dtype=np.float64) + 1e-9, axis=-1)
    valid = np.flatnonzero(ok) + 1  # ticks whose position may serve as a goal
    if len(valid) == 0:
        return []
    picks = [int(valid[-1])]
    if k > 1 and len(valid) > 1:
        picks += [int(t) for t in rng.choice(valid[:-1], size=min(k - 1, len(valid) - 1), replace=False)]
    out: list[RelabelledEpisode] = []
    seen: set[int] = set()
    for t in picks:
        g = pts[t]
        end = first_success(pts, g, tolerance, n_consecutive)
        if end is None or end in seen:
            continue
        seen.add(end)
        out.append(RelabelledEpisode(relabel_goal(spec, o[: end + 1], g), a[:end].copy(), g.astype(np.float32),
                                     source_length=len(a)))
    return out


def relabelled_transitions(episodes: Sequence[RelabelledEpisode], reward_fn) -> dict[str, np.ndarray]:
    """The transitions of relabelled episodes, rewards recomputed by ``reward_fn`` (the run's reward, called
    as the recorder calls it: ``reward_fn(obs, action, next_obs, terminated)``, vectorised), ``terminated`` on
    each episode's last (success) step. Columns as :class:`~vla_rl_ros.buffer.Replay` stores them."""
    if not episodes:
        return {}
    obs = np.concatenate([e.obs[:-1] for e in episodes]).astype(np.float32)
    nxt = np.concatenate([e.obs[1:] for e in episodes]).astype(np.float32)
    act = np.concatenate([e.actions for e in episodes]).astype(np.float32)
    term = np.concatenate([np.arange(len(e.actions)) == len(e.actions) - 1 for e in episodes])
    rew = np.broadcast_to(np.asarray(reward_fn(obs, act, nxt, term), dtype=np.float32), term.shape).copy()
    n = len(term)
    return {"obs": obs, "action": act, "reward": rew, "next_obs": nxt, "terminated": term.astype(np.float32),
            "intervention": np.zeros(n, bool), "is_demo": np.zeros(n, bool)}
