"""Task rewards from the seed's reward design (§5): sparse success, staged pick-and-place, dense reach.

All distances are Euclidean, in metres, between segments of the *next*
observation (see :mod:`.core` for why ``s'`` and not ``s``).

**"Gripper closed".** The seed reads a ``gripper_closed`` flag that the
observation does not carry. It is derived here from the measured finger opening
(``gripper_width`` segment, sum of both fingers, metres):
``closed = gripper_width < closed_width``. The default ``closed_width = 0.06``
sits between the cube's width (~0.05 m: fingers resting on a grasped cube read
about that, a little less when they squeeze) and fully open
(``spec.gripper_open`` = 0.08 m), 1 cm above the cube to tolerate finger
compliance and sensor offset, 2 cm below open so an open hand never counts.
An empty, fully closed hand also reads "closed"; the distance condition of
``is_grasping`` is what tells the two apart.
"""
from __future__ import annotations

import numpy as np

from .core import ObsView, RewardFn

TASK_ALIASES = {"pick_place": "pick_place", "pick_and_place": "pick_place", "reach": "reach"}


def canonical_task(task: str) -> str:
    """Map a task name (spec name or reward name) to the spec's task name."""
    try:
        return TASK_ALIASES[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASK_ALIASES)}") from None


def task_distance(v: ObsView, obs: np.ndarray, task: str) -> np.ndarray:
    """Distance that defines success: object-to-goal for pick-and-place, hand-to-goal for reach."""
    return v.d_obj_goal(obs) if canonical_task(task) == "pick_place" else v.d_hand_goal(obs)


class SparseSuccess(RewardFn):
    """``success_value`` when ``next_obs`` is a success state, else 0 (seed §5.1, "task success +1").

    Success: the tracked point (object for ``pick_place``, hand for ``reach``)
    within ``tolerance`` of the goal; with ``require_grasp`` the object must also
    be held (``is_grasping`` as in :class:`PickAndPlace`). The per-tick reward is
    paid on every tick the condition holds, so a policy that reaches the goal
    sooner earns more. Episode-level success (N consecutive ticks) is the job of
    :class:`~vla_rl_ros.rewards.success.SuccessDetector`.
    """

    name = "sparse_success"
    defaults = {
        "task": "pick_place",
        "tolerance": 0.05,
        "success_value": 1.0,
        "require_grasp": False,
        "closed_width": 0.06,
        "grasp_distance": 0.02,
    }

    def _validate_params(self) -> None:
        self.params["task"] = canonical_task(self.params["task"])
        if not self.params["tolerance"] > 0:
            raise ValueError("tolerance must be > 0")

    def _success(self, v: ObsView, obs: np.ndarray) -> np.ndarray:
        p = self.params
        ok = task_distance(v, obs, p["task"]) < p["tolerance"]
        if p["require_grasp"]:
            ok = ok & (v.gripper_width(obs) < p["closed_width"]) & (v.d_hand_obj(obs) < p["grasp_distance"])
        return ok

    def _reward(self, v, obs, action, next_obs, terminated):
        return np.where(self._success(v, next_obs), float(self.params["success_value"]), 0.0)


class PickAndPlace(RewardFn):
    """The seed's staged pick-and-place reward (§5.2), evaluated on ``next_obs``.

    With ``d_ho = |hand - object|`` and ``d_og = |object - goal|``::

        is_grasping = gripper_closed and d_ho < grasp_distance          (0.02 m)
        d_target    = d_og if is_grasping else ungrasped_distance        (1.0)
        r  = -approach_weight  * d_ho                                    (0.1)
        r +=  grasp_bonus      * is_grasping                             (0.5)
        r -=  transport_weight * d_target                                (0.1)
        r +=  success_bonus  if (d_target < success_distance and is_grasping)   (10.0, 0.05 m)

    ``gripper_closed`` is ``gripper_width < closed_width`` (see module docstring).
    Every constant is a param with the seed's value as default. "Hand" is the
    spec's ``ee_pos`` (tool centre point between the fingertips).

    Kept as written; not the learning default: with the +0.5 per grasping tick
    and termination at success, holding the cube near the goal forever beats
    finishing (see :mod:`.finishing`, whose ``pick_place_task`` is the default).
    """

    name = "pick_and_place"
    defaults = {
        "approach_weight": 0.1,
        "grasp_bonus": 0.5,
        "transport_weight": 0.1,
        "ungrasped_distance": 1.0,
        "success_bonus": 10.0,
        "success_distance": 0.05,
        "grasp_distance": 0.02,
        "closed_width": 0.06,
    }

    def grasping(self, v: ObsView, obs: np.ndarray) -> np.ndarray:
        p = self.params
        return (v.gripper_width(obs) < p["closed_width"]) & (v.d_hand_obj(obs) < p["grasp_distance"])

    def _success(self, v: ObsView, obs: np.ndarray) -> np.ndarray:
        return self.grasping(v, obs) & (v.d_obj_goal(obs) < self.params["success_distance"])

    def _reward(self, v, obs, action, next_obs, terminated):
        p = self.params
        d_ho = v.d_hand_obj(next_obs)
        grasp = self.grasping(v, next_obs)
        d_target = np.where(grasp, v.d_obj_goal(next_obs), float(p["ungrasped_distance"]))
        r = -p["approach_weight"] * d_ho
        r = r + p["grasp_bonus"] * grasp.astype(np.float64)
        r = r - p["transport_weight"] * d_target
        r = r + np.where(grasp & (d_target < p["success_distance"]), float(p["success_bonus"]), 0.0)
        return r


class Reach(RewardFn):
    """Dense reach reward: ``r = -distance_weight * |hand - goal| + success_bonus * [|hand - goal| < tolerance]``.

    Defaults: ``distance_weight = 1.0`` (so the penalty is the distance in
    metres, at most ~1 in the workspace), ``tolerance = 0.05`` m (the same
    tolerance as pick-and-place success), ``success_bonus = 1.0``: every tick
    inside the tolerance is worth more than any tick outside it, so hovering at
    the goal is optimal and a small bonus keeps the return scale near the
    distance term (helps SAC's entropy tuning).

    Kept as written; not the learning default: dipping in and out of the
    tolerance without completing the episode's N-tick success beats finishing
    (see :mod:`.finishing`, whose ``reach_task`` is the default).
    """

    name = "reach"
    defaults = {"distance_weight": 1.0, "tolerance": 0.05, "success_bonus": 1.0}

    def _success(self, v: ObsView, obs: np.ndarray) -> np.ndarray:
        return v.d_hand_goal(obs) < self.params["tolerance"]

    def _reward(self, v, obs, action, next_obs, terminated):
        p = self.params
        d = v.d_hand_goal(next_obs)
        return -p["distance_weight"] * d + np.where(d < p["tolerance"], float(p["success_bonus"]), 0.0)


class ClassifierSuccess(RewardFn):
    """``success_value`` on the tick the episode ends in success, else 0: the success a learned classifier judged.

    The recorder's ``reward: classifier``: success comes from camera frames
    (:class:`vla_rl_ros.perception.success.ClassifierSuccessDetector`), not from
    the state, so this reward reads only ``terminated`` (set on the success
    tick, as for every reward). It is still a function of what the store keeps,
    so an episode can be re-rewarded from its config. ``model_version`` and
    ``model_sha256`` record which classifier judged (the recorder fills them);
    they change no value. :meth:`is_success` cannot be answered from a state
    and raises.
    """

    name = "classifier"
    defaults = {"success_value": 1.0, "model_version": "", "model_sha256": "", "threshold": 0.5,
                "n_consecutive": 3}

    def _reward(self, v, obs, action, next_obs, terminated):
        return float(self.params["success_value"]) * terminated.astype(np.float64) * np.ones(next_obs.shape[:-1])

    def _success(self, v, obs):
        raise NotImplementedError("the classifier reward's success is judged from camera frames, not the state")
