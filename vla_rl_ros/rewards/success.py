"""Episode-level success: the tracked point within tolerance of the goal for N consecutive ticks.

A single tick inside the tolerance is not success: an object knocked through
the goal region, or a hand sweeping past it, would count. The detector requires
the condition to hold for ``n_consecutive`` ticks in a row (at 20 Hz the default
of 5 ticks is a quarter of a second of settling). The tracked point is the
object for ``pick_place`` and the hand (``ee_pos``) for ``reach``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..spec import Spec
from .core import ObsView, spec_for_obs_dim
from .tasks import canonical_task, task_distance


class SuccessDetector:
    """Stateful per-episode success check; call :meth:`update` once per tick and :meth:`reset` per episode.

    Args:
        task: ``"pick_place"`` (alias ``"pick_and_place"``) or ``"reach"``.
        tolerance: distance to the goal (m) that counts as "at the goal".
        n_consecutive: ticks in a row the condition must hold (>= 1).
        spec: observation layout; inferred from the observation length if omitted.

    Once the streak reaches ``n_consecutive``, :attr:`succeeded` latches to
    ``True`` until :meth:`reset`, even if the object later leaves the goal (the
    recorder ends the episode on success anyway).
    """

    def __init__(self, task: str = "pick_place", tolerance: float = 0.05, n_consecutive: int = 5,
                 spec: Spec | None = None) -> None:
        if not tolerance > 0:
            raise ValueError("tolerance must be > 0")
        if int(n_consecutive) < 1:
            raise ValueError("n_consecutive must be >= 1")
        self.task = canonical_task(task)
        self.tolerance = float(tolerance)
        self.n_consecutive = int(n_consecutive)
        self._view = ObsView(spec) if spec is not None else None
        self.streak = 0
        self.succeeded = False

    @property
    def config(self) -> dict[str, Any]:
        return {"task": self.task, "tolerance": self.tolerance, "n_consecutive": self.n_consecutive}

    def reset(self) -> None:
        self.streak = 0
        self.succeeded = False

    def distance(self, obs: Any) -> float:
        o = np.asarray(obs, dtype=np.float64)
        if o.ndim != 1:
            raise ValueError("SuccessDetector takes one observation per tick")
        if self._view is None:
            self._view = ObsView(spec_for_obs_dim(o.shape[0]))
        if o.shape[0] != self._view.obs_dim:
            raise ValueError(f"observation has {o.shape[0]} entries, the spec layout has {self._view.obs_dim}")
        return float(task_distance(self._view, o, self.task))

    def update(self, obs: Any) -> bool:
        """Feed this tick's observation; returns :attr:`succeeded`."""
        d = self.distance(obs)
        self.streak = self.streak + 1 if d < self.tolerance else 0
        if self.streak >= self.n_consecutive:
            self.succeeded = True
        return self.succeeded
