"""Potential-based reward shaping (Ng, Harada & Russell 1999; seed §5.3).

``r'(s, a, s') = r(s, a, s') + F(s, s')`` with ``F = scale * (gamma * Phi(s') - Phi(s))``.

The seed's sketch returns ``F`` alone; the shaped reward is the task reward
*plus* ``F`` (``F`` alone would throw the task away). Over an episode the shaping
terms telescope: the discounted return changes by exactly
``gamma^T Phi(s_T) - Phi(s_0)``. With ``zero_terminal=True`` (default) the
potential of a *terminal* state (``terminated=True``, not a time-limit
truncation) is taken as 0, so a terminated episode's return changes by
``-Phi(s_0)`` only, independent of the policy: optimal policies and the ranking
of policies are preserved. ``gamma`` must equal the learner's discount for the
guarantee to hold.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np

from ..spec import Spec
from .core import ObsView, RewardFn, _as_float

Potential = Callable[[ObsView, np.ndarray], np.ndarray]

#: Named potentials Phi(s) (higher is better). Each takes the view and an obs array.
POTENTIALS: dict[str, Potential] = {
    "neg_dist_obj_goal": lambda v, o: -v.d_obj_goal(o),
    "neg_dist_hand_obj": lambda v, o: -v.d_hand_obj(o),
    "neg_dist_hand_goal": lambda v, o: -v.d_hand_goal(o),
}


class PotentialShaping(RewardFn):
    """Wraps any :class:`RewardFn` and adds ``scale * (gamma * Phi(s') - Phi(s))``.

    Args:
        inner: the task reward being shaped.
        potential: a name in :data:`POTENTIALS`.
        gamma: discount used in ``F``; use the learner's discount.
        scale: multiplier on ``Phi``.
        zero_terminal: take ``Phi(s') = 0`` on terminal transitions.
    """

    name = "potential_shaping"

    def __init__(self, inner: RewardFn, potential: str, gamma: float = 0.99, scale: float = 1.0,
                 zero_terminal: bool = True, spec: Spec | None = None) -> None:
        if potential not in POTENTIALS:
            raise ValueError(f"unknown potential {potential!r}; known: {sorted(POTENTIALS)}")
        if not 0.0 < float(gamma) <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.inner = inner
        self.params = {}
        self.shaping = {"potential": potential, "gamma": float(gamma), "scale": float(scale),
                        "zero_terminal": bool(zero_terminal)}
        self._phi = POTENTIALS[potential]
        self._view = ObsView(spec) if spec is not None else inner._view

    def potential(self, obs: Any) -> float | np.ndarray:
        """``scale * Phi(obs)``."""
        o = np.asarray(obs, dtype=np.float64)
        return _as_float(self.shaping["scale"] * self._phi(self._view_for(o), o))

    def _reward(self, v, obs, action, next_obs, terminated):
        s = self.shaping
        base = np.asarray(self.inner(obs, action, next_obs, terminated), dtype=np.float64)
        phi_next = s["scale"] * self._phi(v, next_obs)
        if s["zero_terminal"]:
            phi_next = np.where(terminated, 0.0, phi_next)
        return base + s["gamma"] * phi_next - s["scale"] * self._phi(v, obs)

    def _success(self, v, obs):
        return np.asarray(self.inner.is_success(obs), dtype=bool)

    @property
    def config(self) -> dict[str, Any]:
        cfg = self.inner.config
        cfg["shaping"] = copy.deepcopy(self.shaping)
        return cfg
