"""Validation of the runtime's inputs (no ROS inside).

Every function returns ``None`` for a good input or a one-line error; the node
counts the error on the input's watchdog channel and holds (see
:mod:`~vla_rl_ros.runtime.watchdog`). Nothing here raises on bad data.

:class:`JointStateMatcher` matches ``sensor_msgs/JointState`` entries **by
name** against the configured joints: extra joints are ignored, a missing or
duplicated one is an error. The index map is cached per name list, so a
publisher that always sends the same names (every real one) costs one list
comparison per message.
"""
from __future__ import annotations

import array
import math
from typing import Sequence

import numpy as np

SUPPORTED_ENCODINGS = ("rgb8", "bgr8")
MAX_POSITION_M = 100.0
"""A task pose coordinate farther than this from the base (m) is a broken message, not an object. (A finite but
absurd value, say 1e300, would overflow the float32 observation to Inf.)"""
MAX_JOINT_ABS = 1000.0
"""A joint position beyond this (rad or m) is a broken message: far outside any joint's range, multi-turn ones
included."""


def _as_f64(values) -> np.ndarray:
    if isinstance(values, array.array) and values.typecode == "d":
        return np.frombuffer(values, dtype=np.float64) if len(values) else np.zeros(0)
    return np.asarray(values, dtype=np.float64).reshape(-1)


class JointStateMatcher:
    """Arm positions (configured order) and gripper width from a joint-state message.

    After a successful :meth:`update`, ``q`` holds the arm positions and
    ``gripper_width`` the gripper's opening: the sum of the gripper joint positions
    (0 when no gripper joints are configured), through ``width_of`` when given
    (the spec's gripper model, :meth:`~vla_rl_ros.spec.Spec.gripper_width_of`). A
    rejected message leaves both untouched, so they always hold the last *valid*
    measurement.
    """

    def __init__(self, arm_joints: Sequence[str], gripper_joints: Sequence[str] = (), width_of=None):
        self.width_of = width_of
        self.arm_joints = tuple(arm_joints)
        self.gripper_joints = tuple(gripper_joints)
        if not self.arm_joints:
            raise ValueError("no arm joints configured")
        self.required = self.arm_joints + self.gripper_joints
        if len(set(self.required)) != len(self.required):
            raise ValueError(f"configured joints contain duplicates: {self.required}")
        self.q = np.zeros(len(self.arm_joints))
        self.gripper_width = 0.0
        self.valid = False  # True once one message was accepted
        self._names: list[str] | None = None
        self._idx = np.zeros(len(self.arm_joints), dtype=np.intp)
        self._gidx = np.zeros(len(self.gripper_joints), dtype=np.intp)
        self._tmp = np.zeros(len(self.arm_joints))
        self._abs = np.zeros(len(self.arm_joints))
        self._gtmp = np.zeros(len(self.gripper_joints))

    def _index(self, names: Sequence[str]) -> str | None:
        lookup: dict[str, int] = {}
        for i, n in enumerate(names):
            if n in lookup:
                return f"joint name {n!r} appears twice"
            lookup[n] = i
        missing = [j for j in self.required if j not in lookup]
        if missing:
            return f"missing joints {missing} (message names {list(names)})"
        self._idx[:] = [lookup[j] for j in self.arm_joints]
        self._gidx[:] = [lookup[j] for j in self.gripper_joints]
        self._names = list(names)
        return None

    def update(self, names: Sequence[str], position) -> str | None:
        if self._names is None or names != self._names:
            self._names = None
            err = self._index(names)
            if err:
                return err
        pos = _as_f64(position)
        if pos.shape[0] != len(names):
            return f"position has {pos.shape[0]} values for {len(names)} names"
        np.take(pos, self._idx, out=self._tmp)
        # one comparison accepts a good message (NaN fails it as well as a value beyond the bound); the error
        # is worked out only for a bad one (this runs for every joint state, up to kHz)
        if not np.abs(self._tmp, out=self._abs).max() <= MAX_JOINT_ABS:
            if not np.all(np.isfinite(self._tmp)):
                bad = [self.arm_joints[i] for i in np.flatnonzero(~np.isfinite(self._tmp))]
                return f"non-finite position for {bad}"
            bad = [self.arm_joints[i] for i in np.flatnonzero(np.abs(self._tmp) > MAX_JOINT_ABS)]
            return f"position beyond {MAX_JOINT_ABS:g} for {bad}"
        g = 0.0
        if len(self._gidx):
            gp = np.take(pos, self._gidx, out=self._gtmp)
            if not np.abs(gp).max() <= MAX_JOINT_ABS:
                return f"non-finite or out-of-range position for gripper joints {list(self.gripper_joints)}"
            g = float(gp.sum())
        self.q[:] = self._tmp
        self.gripper_width = g if self.width_of is None or not len(self._gidx) else self.width_of(g)
        self.valid = True
        return None


def validate_pose(frame_id: str, position: Sequence[float], orientation: Sequence[float], base_frame: str) -> str | None:
    """A task pose must be finite, within :data:`MAX_POSITION_M` of the base, and expressed in the base frame
    (``''`` is taken as the base frame)."""
    if frame_id not in ("", base_frame):
        return f"frame_id {frame_id[:80]!r} is not the base frame {base_frame!r} (no tf lookup in the control loop)"
    for v in position:
        if not math.isfinite(v):
            return f"non-finite position {list(position)}"
        if abs(v) > MAX_POSITION_M:
            return f"position {list(position)} is more than {MAX_POSITION_M:g} m from the base"
    for v in orientation:
        if not math.isfinite(v):
            return f"non-finite orientation {list(orientation)}"
    return None


def validate_image(encoding: str, height: int, width: int, step: int, data_len: int,
                   supported: Sequence[str] = SUPPORTED_ENCODINGS) -> str | None:
    """A camera frame must be 8-bit RGB/BGR, non-empty, and its buffer must match its header."""
    if encoding not in supported:
        return f"unsupported image encoding {encoding!r} (supported: {', '.join(supported)})"
    if height <= 0 or width <= 0:
        return f"empty image {width}x{height}"
    if step < width * 3:
        return f"row step {step} is shorter than width*3 = {width * 3}"
    if data_len != step * height:
        return f"image buffer has {data_len} bytes, header says {step}x{height} = {step * height}"
    return None


def validate_action(values, action_dim: int) -> str | None:
    """A human (teleop) action must have ``action_dim`` finite values."""
    a = _as_f64(values)
    if a.shape[0] != action_dim:
        return f"action has {a.shape[0]} values, expected {action_dim} (action_dim)"
    if not np.all(np.isfinite(a)):
        return "action contains NaN/Inf"
    return None


def validate_command(values, n: int, what: str = "command") -> str | None:
    """A position command must have ``n`` finite values (the twin's input check)."""
    a = _as_f64(values)
    if a.shape[0] != n:
        return f"{what} has {a.shape[0]} values, expected {n}"
    if not np.all(np.isfinite(a)):
        return f"{what} contains NaN/Inf"
    return None
