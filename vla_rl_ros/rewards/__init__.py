"""Reward functions: the seed's (§5), the finishing-optimal learning defaults, shaping, success detection.

ROS-free. Typical use (recorder node, learner relabelling)::

    fn = make_reward(default_reward_name("pick_place"), spec)   # the learning default: "pick_place_task"
    fn = make_reward({"name": "pick_and_place", "shaping": {"potential": "neg_dist_obj_goal", "gamma": 0.99}}, spec)
    r = fn(obs, action, next_obs, terminated)     # float, or (N,) array for batches
    episode_meta["reward_config"] = fn.config     # JSON, stored with the episode
    det = SuccessDetector("pick_place", tolerance=0.05, n_consecutive=5, spec=spec)
"""
from .core import ObsView, RewardFn, spec_for_obs_dim
from .finishing import FinishTaskReward, PickPlaceTask, ReachCost, ReachTask
from .registry import DEFAULT_REWARD, REWARDS, default_reward_name, make_reward
from .shaping import POTENTIALS, PotentialShaping
from .success import SuccessDetector
from .tasks import ClassifierSuccess, PickAndPlace, Reach, SparseSuccess, canonical_task

__all__ = [
    "ObsView", "RewardFn", "spec_for_obs_dim", "REWARDS", "make_reward", "POTENTIALS", "PotentialShaping",
    "SuccessDetector", "PickAndPlace", "Reach", "SparseSuccess", "canonical_task", "FinishTaskReward",
    "PickPlaceTask", "ReachTask", "ReachCost", "ClassifierSuccess", "DEFAULT_REWARD", "default_reward_name",
]
