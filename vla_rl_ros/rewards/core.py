"""Shared machinery for reward functions: the observation view and the base class.

Every reward here is a pure function of ``(obs, action, next_obs)`` vectors in
the spec layout (see :mod:`vla_rl_ros.spec`). Segments are extracted with
``spec.obs_slice(name)``; no dimension is hard-coded. Inputs may be a single
transition (1-D arrays, a Python ``float`` comes back) or a batch (``(N, dim)``
arrays, an ``(N,)`` float64 array comes back), so the learner can relabel a
whole replay batch with the same code the recorder runs per tick.

**Which state is rewarded.** The seed's sketch (§5.2) reads every term from
``state``, the observation *before* the action. That rewards the situation the
policy was handed, not what its action did, and the last action of an episode
would never be credited. Here every task term is evaluated on ``next_obs``
(``s'``), the state the action produced: ``r_t = R(s_t, a_t, s_{t+1})`` with the
seed's formulas applied to ``s_{t+1}``. Potential-based shaping (see
:mod:`.shaping`) is the one place where both ``s`` and ``s'`` enter.
"""
from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from typing import Any, Mapping

import numpy as np

from ..spec import Spec

#: Size of every observation segment after ``joint_pos``; the observation layout
#: only varies with the number of arm joints, so the layout can be recovered
#: from the observation length when no spec is given.
_FIXED_OBS = Spec().obs_dim - Spec().n_arm


def spec_for_obs_dim(obs_dim: int) -> Spec:
    """A spec whose observation layout has ``obs_dim`` entries.

    Only the number of arm joints varies the layout; the joint names are
    placeholders. Used when a reward is built without an explicit spec.
    """
    n_arm = int(obs_dim) - _FIXED_OBS
    if n_arm < 1:
        raise ValueError(f"observation of size {obs_dim} is too short for the spec layout (needs > {_FIXED_OBS})")
    return Spec(arm_joints=tuple(f"joint{i + 1}" for i in range(n_arm)))


class ObsView:
    """Named, slice-based access to observation segments (vectorised on the last axis)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.obs_dim = spec.obs_dim
        self._sl = {name: spec.obs_slice(name) for name, _ in spec.obs_segments}

    def seg(self, obs: np.ndarray, name: str) -> np.ndarray:
        return obs[..., self._sl[name]]

    def ee(self, obs: np.ndarray) -> np.ndarray:
        return self.seg(obs, "ee_pos")

    def obj(self, obs: np.ndarray) -> np.ndarray:
        return self.seg(obs, "object_pos")

    def goal(self, obs: np.ndarray) -> np.ndarray:
        return self.seg(obs, "goal_pos")

    def gripper_width(self, obs: np.ndarray) -> np.ndarray:
        return self.seg(obs, "gripper_width")[..., 0]

    def d_hand_obj(self, obs: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self.obj(obs) - self.ee(obs), axis=-1)

    def d_obj_goal(self, obs: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self.goal(obs) - self.obj(obs), axis=-1)

    def d_hand_goal(self, obs: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self.goal(obs) - self.ee(obs), axis=-1)


def _as_float(x: np.ndarray) -> float | np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


class RewardFn(ABC):
    """A reward ``r(obs, action, next_obs)`` with a JSON-serialisable :attr:`config`.

    Subclasses set :attr:`name` and :attr:`defaults` (every tunable constant with
    its default) and implement :meth:`_reward` and :meth:`_success`.

    Args:
        spec: the observation layout. If ``None`` the layout is inferred from the
            first observation's length (it only depends on the number of joints).
        **params: overrides of :attr:`defaults`; unknown names are an error.
    """

    name: str = ""
    defaults: Mapping[str, Any] = {}

    def __init__(self, spec: Spec | None = None, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"reward {self.name!r}: unknown params {sorted(unknown)}; known: {sorted(self.defaults)}")
        self.params: dict[str, Any] = {**copy.deepcopy(dict(self.defaults)), **params}
        self._validate_params()
        self._view: ObsView | None = ObsView(spec) if spec is not None else None

    # ----------------------------------------------------------------- API
    def __call__(self, obs: Any, action: Any, next_obs: Any, terminated: Any = False) -> float | np.ndarray:
        """Reward for the transition ``(obs, action) -> next_obs``.

        ``terminated`` is accepted by every reward so callers can pass it
        uniformly; only potential shaping uses it (the potential of a terminal
        state is taken as zero).
        """
        o, a, o2 = self._inputs(obs, action, next_obs)
        return _as_float(self._reward(self._view_for(o2), o, a, o2, np.asarray(terminated, dtype=bool)))

    def is_success(self, obs: Any) -> bool | np.ndarray:
        """Whether ``obs`` satisfies this task's instantaneous success condition."""
        o = np.asarray(obs, dtype=np.float64)
        r = np.asarray(self._success(self._view_for(o), o), dtype=bool)
        return bool(r) if r.ndim == 0 else r

    @property
    def config(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``; ``make_reward(config)`` rebuilds an equal reward."""
        cfg = {"name": self.name, "params": copy.deepcopy(self.params)}
        json.dumps(cfg)  # fail loudly here, not when an episode is written
        return cfg

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.config, sort_keys=True)})"

    # ------------------------------------------------------- for subclasses
    @abstractmethod
    def _reward(self, v: ObsView, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray,
                terminated: np.ndarray) -> np.ndarray:
        ...

    @abstractmethod
    def _success(self, v: ObsView, obs: np.ndarray) -> np.ndarray:
        ...

    def _validate_params(self) -> None:
        pass

    # ---------------------------------------------------------- internals
    def _view_for(self, obs: np.ndarray) -> ObsView:
        n = obs.shape[-1]
        if self._view is None:
            self._view = ObsView(spec_for_obs_dim(n))
        if n != self._view.obs_dim:
            raise ValueError(f"reward {self.name!r}: observation has {n} entries, the spec layout has {self._view.obs_dim}")
        return self._view

    def _inputs(self, obs: Any, action: Any, next_obs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        o = np.asarray(obs, dtype=np.float64)
        o2 = np.asarray(next_obs, dtype=np.float64)
        a = np.asarray(action, dtype=np.float64)
        if o.shape != o2.shape:
            raise ValueError(f"obs shape {o.shape} != next_obs shape {o2.shape}")
        return o, a, o2
