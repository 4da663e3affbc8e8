"""Build a reward from a JSON config: ``make_reward({"name": ..., "params": {...}, "shaping": {...}})``.

The config round-trips: ``make_reward(fn.config)`` gives an equal reward, and
``fn.config`` is what the buffer stores with every episode, so any episode can
be re-rewarded exactly as it was recorded.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..spec import Spec
from .core import RewardFn
from .finishing import PickPlaceTask, ReachCost, ReachTask
from .learned import LearnedReward
from .shaping import PotentialShaping
from .tasks import ClassifierSuccess, PickAndPlace, Reach, SparseSuccess, canonical_task

REWARDS: dict[str, type[RewardFn]] = {
    SparseSuccess.name: SparseSuccess,
    PickAndPlace.name: PickAndPlace,
    Reach.name: Reach,
    PickPlaceTask.name: PickPlaceTask,
    ReachTask.name: ReachTask,
    ReachCost.name: ReachCost,
    LearnedReward.name: LearnedReward,  # from preference labels: vla_rl_ros/rewards/learned.py
    ClassifierSuccess.name: ClassifierSuccess,
}
#: Also accept the spec's task names.
ALIASES = {"pick_place": PickAndPlace.name}

#: The reward each task learns from when none is chosen (recorder ``reward: ""``, the gym env, demos):
#: the ones whose optimum is finishing (see :mod:`.finishing`), not the seed's, which reward hovering.
#: Reach: ``reach_cost``, whose scale SAC learns from in 5,000 steps (``reach_task`` before; see ReachCost).
DEFAULT_REWARD: dict[str, str] = {"reach": ReachCost.name, "pick_place": PickPlaceTask.name}


def default_reward_name(task: str) -> str:
    """The default reward's name for a task (spec name, or the alias ``pick_and_place``)."""
    return DEFAULT_REWARD[canonical_task(task)]


def make_reward(config: Mapping[str, Any] | str, spec: Spec | None = None) -> RewardFn:
    """Build a reward function.

    Args:
        config: ``{"name": str, "params": {...}?, "shaping": {"potential": str,
            "gamma": float, "scale": float?, "zero_terminal": bool?}?}``, or just a name.
        spec: observation layout (recommended); inferred from the first
            observation's length if omitted.
    Raises:
        ValueError: unknown name, unknown params or keys.
    """
    if isinstance(config, str):
        config = {"name": config}
    unknown = set(config) - {"name", "params", "shaping"}
    if unknown:
        raise ValueError(f"reward config: unknown keys {sorted(unknown)}")
    name = ALIASES.get(config.get("name", ""), config.get("name", ""))
    if name not in REWARDS:
        raise ValueError(f"unknown reward {config.get('name')!r}; known: {sorted(REWARDS) + sorted(ALIASES)}")
    fn: RewardFn = REWARDS[name](spec=spec, **dict(config.get("params") or {}))
    shaping = config.get("shaping")
    if shaping:
        s = dict(shaping)
        extra = set(s) - {"potential", "gamma", "scale", "zero_terminal"}
        if extra or "potential" not in s:
            raise ValueError(f"reward shaping config needs 'potential'; unknown keys {sorted(extra)}")
        fn = PotentialShaping(fn, spec=spec, **s)
    return fn
