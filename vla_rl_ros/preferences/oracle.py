"""Synthetic labellers for tests and benchmarks, as B-Pref does (Lee et al. 2021, "B-Pref").

Each labeller answers a query ``(left, right)`` from the two segments' *true
task returns*: the sum over the segment's ticks of the task's reward,
recomputed from the recorded ``(obs, action, next_obs, terminated)`` with
:func:`vla_rl_ros.rewards.make_reward` (the task's learning default,
:data:`~vla_rl_ros.rewards.DEFAULT_REWARD`, unless a reward config is given),
not read from the recorded reward column, which holds whatever reward the
recorder ran (a learned one, even).

B-Pref's labellers implemented here, each a :class:`Oracle` setting:

* **oracle** (``mistake=0, equal_margin=0``): ``left`` if ``R_left > R_right``,
  ``right`` if lower, ``equal`` on an exact tie;
* **mistake** (``mistake=0.1``): the oracle's answer, flipped (left <-> right)
  with probability ``mistake``; equal answers are not flipped (B-Pref's
  "Mistake" labeller flips the preference);
* **equal** (``equal_margin=m``): ``equal`` when ``|R_left - R_right| <= m``
  (B-Pref's "Equal" labeller, which states its threshold relative to the
  return's scale: pass :func:`margin_from_returns` for that).

Every random choice comes from the labeller's own seeded generator, so a
labelling run is reproducible from ``seed``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .segments import SegmentData


class TrueReturn:
    """``R(segment) = sum_t r(s_t, a_t, s_{t+1}, terminated_t)`` with the task's true reward.

    Args:
        reward: a reward config or name; ``None`` uses each segment's task's learning default.
        spec: the observation layout.
    """

    def __init__(self, reward: Mapping[str, Any] | str | None = None, spec: Any = None) -> None:
        self.reward = reward
        self.spec = spec
        self._fns: dict[str, Any] = {}

    def fn(self, task: str) -> Any:
        from ..rewards import default_reward_name, make_reward

        cfg = self.reward if self.reward is not None else default_reward_name(task)
        key = json.dumps(cfg, sort_keys=True)
        if key not in self._fns:
            self._fns[key] = make_reward(cfg, self.spec)
        return self._fns[key]

    def __call__(self, seg: SegmentData) -> float:
        r = self.fn(seg.task)(seg.obs, seg.actions, seg.next_obs, seg.terminated)
        return float(np.sum(r))


@dataclass
class Oracle:
    """A synthetic labeller (see the module docstring); ``label(left, right)`` gives left | right | equal."""

    mistake: float = 0.0
    equal_margin: float = 0.0
    seed: int = 0
    true_return: TrueReturn = field(default_factory=TrueReturn)

    def __post_init__(self) -> None:
        if not 0.0 <= self.mistake <= 1.0 or self.equal_margin < 0:
            raise ValueError("mistake must be in [0, 1] and equal_margin >= 0")
        self.rng = np.random.default_rng(self.seed)

    @property
    def name(self) -> str:
        """The labeller id written with each label."""
        parts = ["oracle"]
        if self.mistake:
            parts.append(f"mistake{self.mistake:g}")
        if self.equal_margin:
            parts.append(f"equal{self.equal_margin:g}")
        return ":".join(parts) + f":seed{self.seed}"

    def decide(self, r_left: float, r_right: float) -> str:
        """The label for two returns (draws from the generator only when ``mistake > 0``)."""
        if abs(r_left - r_right) <= self.equal_margin:
            return "equal"
        label = "left" if r_left > r_right else "right"
        if self.mistake and self.rng.random() < self.mistake:
            label = "right" if label == "left" else "left"
        return label

    def label(self, left: SegmentData, right: SegmentData) -> tuple[str, dict[str, float]]:
        """``(label, info)``; ``info`` holds both true returns (stored with the label for later analysis)."""
        rl, rr = self.true_return(left), self.true_return(right)
        return self.decide(rl, rr), {"return_left": rl, "return_right": rr}


def margin_from_returns(returns: np.ndarray, fraction: float = 0.1) -> float:
    """An "equal" threshold as a fraction of the spread of segment returns (B-Pref states its
    thresholds relative to the average return; a spread is robust to a reward's offset)."""
    r = np.asarray(returns, dtype=np.float64)
    return float(fraction * (np.percentile(r, 90) - np.percentile(r, 10)))
