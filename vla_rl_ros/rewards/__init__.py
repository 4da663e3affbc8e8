"""Reward functions from the seed's reward design (§5), potential shaping and success detection.

ROS-free. Typical use (recorder node, learner relabelling)::

    fn = make_reward({"name": "pick_and_place", "shaping": {"potential": "neg_dist_obj_goal", "gamma": 0.99}}, spec)
    r = fn(obs, action, next_obs, terminated)     # float, or (N,) array for batches
    episode_meta["reward_config"] = fn.config     # JSON, stored with the episode
    det = SuccessDetector("pick_place", tolerance=0.05, n_consecutive=5, spec=spec)
"""
from .core import ObsView, RewardFn, spec_for_obs_dim
from .registry import REWARDS, make_reward
from .shaping import POTENTIALS, PotentialShaping
from .success import SuccessDetector
from .tasks import PickAndPlace, Reach, SparseSuccess, canonical_task

__all__ = [
    "ObsView", "RewardFn", "spec_for_obs_dim", "REWARDS", "make_reward", "POTENTIALS", "PotentialShaping",
    "SuccessDetector", "PickAndPlace", "Reach", "SparseSuccess", "canonical_task",
]
