"""Bridging perception's gaps: the object's pose between detections, from the hand it sits on or in.

A camera loses the object exactly when the task is at its most delicate: the hand over the cube hides its top
marker, and the fingers around it hide the sides. With nothing published the policy holds (its
``pose_timeout_s``), and a loop on perceived poses stalls at the grasp (README, "Perception").

Between two detections the object moves only if something moves it, and in a pick-and-place cell that is the
hand. :class:`ObjectTracker` keeps the last detected pose and carries it forward with one of two models:

* **resting**: the object stays where it was last seen (the hand approaching, descending, closing);
* **held**: the hand has closed on it (the gripper opening below ``held_width_m``, but not shut on nothing,
  above ``held_min_width_m``, with the object within ``held_distance_m`` of the hand), so it moves rigidly
  with the hand: its pose in the hand's frame, fixed at the grasp (or at the latest detection while held),
  composed with the hand's pose from the arm's forward kinematics. When the hand opens again the object rests
  where the hand left it.

A prediction is given for at most ``max_age_s`` after the last detection; after that (or before a first one)
there is none and the policy holds, as before. Its position standard deviation grows by ``std_growth_m_per_s``
of age, so a consumer that reads the covariance topic sees how much to trust it. ``reset()`` forgets
everything (a new episode: the object may have been put somewhere else).

No ROS here: ``perception_node`` feeds it detections, the hand's pose and the gripper's opening.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .aruco import extrinsic_from_xyzquat, matrix_to_quat


@dataclass(frozen=True)
class TrackerConfig:
    """``max_age_s``: predict at most this long after the last detection (0 = never: detections only);
    ``held_width_m``: a gripper opening below this can hold the object, and above ``held_min_width_m`` it has
    something between its fingers; ``held_distance_m``: the object's centre within this of the hand's point (the
    spec's ee link) counts as in the hand; ``std_growth_m_per_s``: the prediction's position standard deviation
    grows by this per second of age."""

    max_age_s: float = 2.0
    held_width_m: float = 0.06
    held_min_width_m: float = 0.005
    held_distance_m: float = 0.05
    std_growth_m_per_s: float = 0.01

    def __post_init__(self):
        for name in ("max_age_s", "held_width_m", "held_min_width_m", "held_distance_m", "std_growth_m_per_s"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {v!r}")


@dataclass(frozen=True)
class TrackedPose:
    position: np.ndarray  # (3,) base frame
    quaternion: np.ndarray  # (4,) x, y, z, w
    std_m: float  # position standard deviation, isotropic
    age_s: float  # since the detection it comes from (0: a detection)
    held: bool  # carried by the hand


class ObjectTracker:
    """The object's pose between detections (module docstring). Times are seconds on one clock (the images'
    stamps); the hand's pose ``T_base_hand`` is a 4x4 matrix (:meth:`~vla_rl_ros.kinematics.Kinematics.fk`)."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        self._T_obj: np.ndarray | None = None  # the object's pose when last seen or released (resting), base frame
        self._t_seen = -np.inf
        self._std = 0.0
        self._T_hand_obj: np.ndarray | None = None  # the object in the hand's frame while held
        self.grasps = 0

    @property
    def held(self) -> bool:
        return self._T_hand_obj is not None

    def can_hold(self, width: float) -> bool:
        """A gripper this open can be holding the object."""
        return self.config.held_min_width_m < width < self.config.held_width_m

    def _in_hand(self, T_obj: np.ndarray, T_hand: np.ndarray, width: float) -> bool:
        return self.can_hold(width) and \
            float(np.linalg.norm(T_obj[:3, 3] - T_hand[:3, 3])) <= self.config.held_distance_m

    def needs_hand(self, width: float) -> bool:
        """Whether the gripper's opening may change the object's state (so :meth:`hand` is worth its FK)."""
        return self._T_obj is not None and (self.can_hold(width) != self.held)

    def detection(self, t: float, position, quaternion, std_m: float, T_hand: np.ndarray | None = None,
                  width: float | None = None) -> None:
        """A detected pose at time ``t``; with the hand's pose and the gripper's opening at that time, it also
        decides whether the object is in the hand (and where in it)."""
        T_obj = extrinsic_from_xyzquat(position, quaternion)
        self._T_obj, self._t_seen, self._std = T_obj, float(t), float(std_m)
        if T_hand is not None and width is not None and self._in_hand(T_obj, T_hand, width):
            self._T_hand_obj = np.linalg.solve(T_hand, T_obj)
        else:
            self._T_hand_obj = None

    def hand(self, T_hand: np.ndarray, width: float) -> None:
        """The hand's pose and the gripper's opening now: a closing hand around the resting object picks it up,
        an opening one puts it down where it is."""
        if self._T_obj is None:
            return
        if self._T_hand_obj is None:
            if self._in_hand(self._T_obj, T_hand, width):
                self._T_hand_obj = np.linalg.solve(T_hand, self._T_obj)
                self.grasps += 1
        elif not self.can_hold(width):
            self._T_obj = T_hand @ self._T_hand_obj  # released: it rests where the hand left it
            self._T_hand_obj = None

    def predict(self, t: float, T_hand: np.ndarray | None = None) -> TrackedPose | None:
        """The pose at time ``t`` (None: no detection yet, or the last one older than ``max_age_s``). While held,
        ``T_hand`` (the hand's pose at ``t``) is needed; without it there is no prediction."""
        age = float(t) - self._t_seen
        if self._T_obj is None or age > self.config.max_age_s or age < 0:
            return None
        if self._T_hand_obj is not None:
            if T_hand is None:
                return None
            T = T_hand @ self._T_hand_obj
        else:
            T = self._T_obj
        return TrackedPose(T[:3, 3].copy(), matrix_to_quat(T[:3, :3]),
                           self._std + self.config.std_growth_m_per_s * age, age, self._T_hand_obj is not None)
