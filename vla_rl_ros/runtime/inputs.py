"""Validation of the runtime's inputs (no ROS inside).

Every function returns ``None`` for a good input or a one-line error; the node
counts the error on the input's watchdog channel and holds (see
:mod:`~vla_rl_ros.runtime.watchdog`). Nothing here raises on bad data.

:class:`JointStateMatcher` merges ``sensor_msgs/JointState`` messages **by
name** into the configured joints, group by group (arm, gripper), across
messages and topics: extra joints are ignored, a group with a missing joint or
a duplicated name is an error. The index map is cached per name list, so a
publisher that always sends the same names (every real one) costs one list
comparison per message. Poses in frames other than the base frame go through
:mod:`~vla_rl_ros.runtime.frames` before :func:`validate_pose`.
"""
from __future__ import annotations

import array
import math
from typing import Mapping, Sequence

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


ARM, GRIPPER = 1, 2
"""Bits of :attr:`JointStateMatcher.carried`: the joint groups a message carried."""
_PLAN_CACHE = 8  # name lists remembered (one per publisher in practice: the arm's, the gripper's)


class _Plan:
    """Where one name list puts each configured joint: built once per distinct name list."""
    __slots__ = ("names", "carried", "arm", "grip", "grip_mult", "grip_off")

    def __init__(self, names, carried, arm, grip, grip_mult, grip_off):
        self.names, self.carried, self.arm = names, carried, arm
        self.grip, self.grip_mult, self.grip_off = grip, grip_mult, grip_off


class JointStateMatcher:
    """Arm positions (configured order) and gripper width, merged by name from joint-state messages.

    The configured joints form two groups, the arm's and the gripper's. A message may carry either group, both,
    or (with other joints) neither: the arm's joints at 1 kHz from ``joint_state_broadcaster`` and the gripper's
    at 30 Hz from its own driver, on one topic or two. Each group is taken whole from one message: a message
    with some but not all of a group's joints is refused, except that a gripper joint the message lacks is
    computed from one it carries through the URDF's ``<mimic>`` relations (``mimics``): a parallel gripper that
    publishes one finger joint. Unknown names are ignored. A message is refused, and changes nothing, when a
    name appears twice, the positions do not match the names, it carries no configured group, or a position it
    carries for a configured joint is not finite or beyond :data:`MAX_JOINT_ABS`.

    After an accepted :meth:`update`, ``q`` holds the arm positions and ``gripper_width`` the gripper's opening
    (the sum of the gripper joint positions, through ``width_of``, the spec's gripper model
    :meth:`~vla_rl_ros.spec.Spec.gripper_width_of`, when given; 0 with no gripper joints), each from the last
    message that carried its group. ``carried`` is the groups (:data:`ARM`, :data:`GRIPPER` bits) of the last
    message, refused or not, so that the node can time each group and charge an error to it; ``valid`` is true
    once every group has been received. Staleness per group is the node's (one watchdog channel per group).

    Cost: the plan (indices, mimic factors) is cached per name list, so a publisher that always sends the same
    names (every real one) costs a list comparison per message and no allocation.
    """

    def __init__(self, arm_joints: Sequence[str], gripper_joints: Sequence[str] = (), width_of=None,
                 mimics: Mapping[str, tuple[str, float, float]] | None = None):
        self.width_of = width_of
        self.arm_joints = tuple(arm_joints)
        self.gripper_joints = tuple(gripper_joints)
        if not self.arm_joints:
            raise ValueError("no arm joints configured")
        self.required = self.arm_joints + self.gripper_joints
        if len(set(self.required)) != len(self.required):
            raise ValueError(f"configured joints contain duplicates: {self.required}")
        # each gripper joint as a * root + b, its root the joint its <mimic> chain ends at
        self._root = {j: _mimic_root(j, mimics or {}) for j in self.gripper_joints}
        self.q = np.zeros(len(self.arm_joints))
        self.gripper_width = 0.0
        self.carried = 0
        self.seen = 0  # the groups received so far (bits)
        self.all_groups = ARM | (GRIPPER if self.gripper_joints else 0)
        self._plans: list[_Plan] = []
        self._tmp = np.zeros(len(self.arm_joints))
        self._abs = np.zeros(len(self.arm_joints))
        self._gtmp = np.zeros(len(self.gripper_joints))

    @property
    def valid(self) -> bool:
        """Every group received at least once (the node's watchdog decides whether each is fresh)."""
        return self.seen == self.all_groups

    def _plan(self, names: Sequence[str]) -> "_Plan | str":
        for p in self._plans:
            if p.names == names:
                return p
        self.carried = 0
        lookup: dict[str, int] = {}
        for i, n in enumerate(names):
            if n in lookup:
                return f"joint name {n!r} appears twice"
            lookup[n] = i
        carried, arm, grip, mult, off = 0, None, None, None, 0.0
        present = [j for j in self.arm_joints if j in lookup]
        if present:
            carried |= ARM
            if len(present) < len(self.arm_joints):
                return f"missing joints {[j for j in self.arm_joints if j not in lookup]} (message names {list(names)})"
            arm = np.array([lookup[j] for j in self.arm_joints], dtype=np.intp)
        present = [j for j in self.gripper_joints if j in lookup]
        if present:
            carried |= GRIPPER
            idx, fac, missing = [], [], []
            for j in self.gripper_joints:
                if j in lookup:
                    idx.append(lookup[j])
                    fac.append(1.0)
                    continue
                root, a, b = self._root[j]  # j = a*root + b; a carried k = c*root + d gives j = (a/c)*k + b - a*d/c
                k = next((k for k in present if self._root[k][0] == root and self._root[k][1] != 0.0), None)
                if k is None:
                    missing.append(j)
                    continue
                _, c, d = self._root[k]
                idx.append(lookup[k])
                fac.append(a / c)
                off += b - a * d / c
            if missing:
                self.carried = carried
                return (f"missing joints {missing} (message names {list(names)}; a gripper joint may be left out "
                        "only if it <mimic>s one the message carries)")
            grip, mult = np.array(idx, dtype=np.intp), np.array(fac)
        self.carried = carried
        if not carried:
            return f"missing joints {list(self.required)} (message names {list(names)})"
        plan = _Plan(list(names), carried, arm, grip, mult, off)
        if len(self._plans) >= _PLAN_CACHE:
            self._plans.pop(0)
        self._plans.append(plan)
        return plan

    def update(self, names: Sequence[str], position) -> str | None:
        plan = self._plan(names)
        if isinstance(plan, str):
            return plan
        self.carried = plan.carried
        pos = _as_f64(position)
        if pos.shape[0] != len(names):
            return f"position has {pos.shape[0]} values for {len(names)} names"
        if plan.arm is not None:
            np.take(pos, plan.arm, out=self._tmp)
            # one comparison accepts a good message (NaN fails it as well as a value beyond the bound); the error
            # is worked out only for a bad one (this runs for every joint state, up to kHz)
            if not np.abs(self._tmp, out=self._abs).max() <= MAX_JOINT_ABS:
                if not np.all(np.isfinite(self._tmp)):
                    bad = [self.arm_joints[i] for i in np.flatnonzero(~np.isfinite(self._tmp))]
                    return f"non-finite position for {bad}"
                bad = [self.arm_joints[i] for i in np.flatnonzero(np.abs(self._tmp) > MAX_JOINT_ABS)]
                return f"position beyond {MAX_JOINT_ABS:g} for {bad}"
        if plan.grip is not None:
            gp = np.take(pos, plan.grip, out=self._gtmp)
            if not np.abs(gp).max() <= MAX_JOINT_ABS:
                return f"non-finite or out-of-range position for gripper joints {list(self.gripper_joints)}"
            g = float(np.dot(gp, plan.grip_mult)) + plan.grip_off
            self.gripper_width = g if self.width_of is None else self.width_of(g)
        if plan.arm is not None:
            self.q[:] = self._tmp
        self.seen |= plan.carried
        return None


def _mimic_root(joint: str, mimics: Mapping[str, tuple[str, float, float]]) -> tuple[str, float, float]:
    """``(root, a, b)`` with ``joint = a * root + b``, following ``mimics`` (joint -> (source, multiplier,
    offset): URDF ``<mimic>``) to the joint the chain ends at."""
    a, b, seen = 1.0, 0.0, {joint}
    while joint in mimics:
        src, m, o = mimics[joint]
        a, b, joint = a * float(m), a * float(o) + b, src
        if joint in seen:
            raise ValueError(f"<mimic> loop through {joint!r}")
        seen.add(joint)
    return joint, a, b


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
