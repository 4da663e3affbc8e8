"""The one observation/action spec.

Joint names, observation layout, action layout, scales and limits are declared
here once, as data. The gymnasium twin, the policy node, the recorder and the
learners all build observations and interpret actions through this module, and
every exported ONNX model carries the spec in its ``metadata_props`` under
:data:`METADATA_KEY`. A node refuses a model whose spec differs from its own
configuration and says exactly which fields differ (:func:`Spec.diff`).

Observation (float32, raw SI units, no normalisation: models normalise inside):

========================  ====  ==========================================
segment                   size  meaning
========================  ====  ==========================================
``joint_pos``             n_arm measured arm joint positions (rad)
``gripper_width``         1     finger opening (m): the sum of the gripper
                                joints' positions, mapped linearly by
                                ``gripper_joint_range`` when declared
``ee_pos``                3     hand (tool centre point) position, FK (m)
``object_pos``            3     object position (m)
``goal_pos``              3     goal position (m)
``ee_to_object``          3     object_pos - ee_pos
``object_to_goal``        3     goal_pos - object_pos
``ee_to_goal``            3     goal_pos - ee_pos
========================  ====  ==========================================

Action (float32, each in [-1, 1]):

* ``ee_delta``: ``[dx, dy, dz, gripper]``. The hand's position target is the
  *measured* hand position plus ``a[:3] * max_ee_step`` (m). Because the target
  is relative to the measured state, the same model can run at any tick rate.
* ``joint_delta``: ``[dq_1 .. dq_n, gripper]``. Joint targets are measured
  positions plus ``a[:n] * max_joint_step`` (rad).
* ``gripper``: -1 closed ... +1 fully open (``gripper_open`` m).

The gripper model: the width is linear in the sum ``s`` of the gripper joints'
positions. By default ``s`` is the width (the Panda's two prismatic fingers,
each at half the opening). An angular or linkage gripper declares
``gripper_joint_range = (s_open, s_closed)``: ``s`` at the fully open width
``gripper_open`` and at 0 (the xArm's drive joint: ``(0.0, 0.85)`` rad).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

SPEC_VERSION = 1
METADATA_KEY = "vla_rl_ros.spec"
LINEAGE_KEY = "vla_rl_ros.lineage"
TASKS = ("reach", "pick_place")
ACTION_MODES = ("ee_delta", "joint_delta")

PANDA_ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
PANDA_GRIPPER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")


class SpecError(ValueError):
    """Raised when a spec is malformed or two specs disagree."""


@dataclass(frozen=True)
class ImageSpec:
    """An optional camera input (declared now, used by later pixel policies)."""

    height: int = 84
    width: int = 84
    encoding: str = "rgb8"  # rgb8 | bgr8


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_type(name: str, v: Any, default: Any) -> None:
    """A spec field read from JSON has its field's type (strings, numbers, lists of either; ``image``: an object
    or null), else :class:`SpecError`: malformed metadata is refused with a reason, never a stray exception."""
    if name == "image":
        ok = v is None or (isinstance(v, dict) and set(v) <= {"height", "width", "encoding"})
    elif isinstance(default, str):
        ok = isinstance(v, str)
    elif isinstance(default, tuple):
        item = str if default and isinstance(default[0], str) else None
        ok = isinstance(v, list) and all(isinstance(x, str) if item else _is_number(x) for x in v)
    elif isinstance(default, bool):
        ok = isinstance(v, bool)
    elif isinstance(default, int):
        ok = isinstance(v, int) and not isinstance(v, bool)
    else:
        ok = _is_number(v)
    if not ok:
        raise SpecError(f"spec field {name!r} has the wrong type: {json.dumps(v)[:80]}")


@dataclass(frozen=True)
class Spec:
    task: str = "reach"
    action_mode: str = "ee_delta"
    arm_joints: tuple[str, ...] = PANDA_ARM_JOINTS
    gripper_joints: tuple[str, ...] = PANDA_GRIPPER_JOINTS
    base_link: str = "panda_link0"
    ee_link: str = "panda_grasptarget"
    control_hz: float = 20.0
    max_ee_step: float = 0.05
    max_joint_step: float = 0.1
    gripper_open: float = 0.08
    gripper_joint_range: tuple[float, ...] = ()  # (s_open, s_closed); () = the width is the sum of positions
    workspace_low: tuple[float, float, float] = (0.25, -0.45, 0.0)
    workspace_high: tuple[float, float, float] = (0.80, 0.45, 0.60)
    image: ImageSpec | None = None
    version: int = SPEC_VERSION

    # ------------------------------------------------------------------ layout
    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SpecError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.action_mode not in ACTION_MODES:
            raise SpecError(f"action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
        if len(self.arm_joints) == 0:
            raise SpecError("arm_joints is empty")
        if len(set(self.arm_joints)) != len(self.arm_joints):
            raise SpecError(f"arm_joints has duplicates: {self.arm_joints}")
        for name in ("max_ee_step", "max_joint_step", "gripper_open", "control_hz"):
            if not float(getattr(self, name)) > 0:
                raise SpecError(f"{name} must be > 0")
        r = self.gripper_joint_range
        if r and (len(r) != 2 or r[0] == r[1] or not all(np.isfinite(r))):
            raise SpecError(f"gripper_joint_range must be (positions at open, positions at closed), two different "
                            f"finite numbers, or empty; got {list(r)}")
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
            raise SpecError("workspace_low must be below workspace_high on every axis")
        if self.image is not None and self.image.encoding not in ("rgb8", "bgr8"):
            raise SpecError(f"unsupported image encoding {self.image.encoding!r}")

    @property
    def n_arm(self) -> int:
        return len(self.arm_joints)

    @property
    def obs_segments(self) -> tuple[tuple[str, int], ...]:
        return (
            ("joint_pos", self.n_arm),
            ("gripper_width", 1),
            ("ee_pos", 3),
            ("object_pos", 3),
            ("goal_pos", 3),
            ("ee_to_object", 3),
            ("object_to_goal", 3),
            ("ee_to_goal", 3),
        )

    @property
    def obs_dim(self) -> int:
        return sum(n for _, n in self.obs_segments)

    @property
    def action_dim(self) -> int:
        return (3 if self.action_mode == "ee_delta" else self.n_arm) + 1

    def obs_slice(self, name: str) -> slice:
        start = 0
        for seg, n in self.obs_segments:
            if seg == name:
                return slice(start, start + n)
            start += n
        raise KeyError(name)

    # ------------------------------------------------------------ observation
    def build_observation(
        self,
        joint_pos: Sequence[float],
        gripper_width: float,
        ee_pos: Sequence[float],
        object_pos: Sequence[float],
        goal_pos: Sequence[float],
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Assemble the observation vector in the declared layout."""
        n = self.n_arm
        o = np.empty(self.obs_dim, dtype=np.float32) if out is None else out
        ee = np.asarray(ee_pos, dtype=np.float64)
        obj = np.asarray(object_pos, dtype=np.float64)
        goal = np.asarray(goal_pos, dtype=np.float64)
        o[0:n] = joint_pos
        o[n] = gripper_width
        o[n + 1 : n + 4] = ee
        o[n + 4 : n + 7] = obj
        o[n + 7 : n + 10] = goal
        o[n + 10 : n + 13] = obj - ee
        o[n + 13 : n + 16] = goal - obj
        o[n + 16 : n + 19] = goal - ee
        return o

    def gripper_target(self, a_grip: float) -> float:
        """Map the gripper action in [-1, 1] to an opening width in metres."""
        return min(max((float(a_grip) + 1.0) * 0.5, 0.0), 1.0) * self.gripper_open

    def gripper_width_of(self, joint_sum: float) -> float:
        """The opening width (m) of the gripper whose joints' positions sum to ``joint_sum``."""
        if not self.gripper_joint_range:
            return float(joint_sum)
        s_open, s_closed = self.gripper_joint_range
        return float(self.gripper_open * (joint_sum - s_closed) / (s_open - s_closed))

    def gripper_joint_sum(self, width: float) -> float:
        """The sum of the gripper joints' positions at opening ``width`` (m): the inverse of :meth:`gripper_width_of`."""
        if not self.gripper_joint_range:
            return float(width)
        s_open, s_closed = self.gripper_joint_range
        return float(s_closed + (width / self.gripper_open) * (s_open - s_closed))

    # ----------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        d["obs_dim"] = self.obs_dim
        d["action_dim"] = self.action_dim
        d["obs_segments"] = [list(s) for s in self.obs_segments]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Spec":
        names = {f.name for f in dataclasses.fields(cls)}
        derived = {"obs_dim", "action_dim", "obs_segments"}
        unknown = set(d) - names - derived
        if unknown:
            raise SpecError(f"unknown spec fields: {sorted(unknown)}")
        kw: dict[str, Any] = {}
        defaults = cls()
        for k, v in d.items():
            if k in derived:
                continue
            _check_type(k, v, getattr(defaults, k))
            if k == "image":
                kw[k] = None if v is None else ImageSpec(**v)
            elif isinstance(v, list):
                kw[k] = tuple(v)
            else:
                kw[k] = v
        spec = cls(**kw)
        if spec.version != SPEC_VERSION:
            raise SpecError(f"spec version {spec.version} is not supported (this build reads {SPEC_VERSION})")
        return spec

    @classmethod
    def from_json(cls, text: str) -> "Spec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"spec metadata is not valid JSON: {e}") from e
        if not isinstance(d, dict):
            raise SpecError("spec metadata must be a JSON object")
        return cls.from_dict(d)

    def diff(self, other: "Spec") -> list[str]:
        """Human-readable list of every field where ``other`` differs from ``self``."""
        a, b = self.to_dict(), other.to_dict()
        out = []
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out.append(f"{k}: configured {a.get(k)!r}, model has {b.get(k)!r}")
        return out

    def replace(self, **kw: Any) -> "Spec":
        return dataclasses.replace(self, **kw)


def spec_from_params(params: Mapping[str, Any]) -> Spec:
    """Build a spec from flat ROS-style parameters (``task``, ``action_mode``, ``joints``...)."""
    kw: dict[str, Any] = {}
    mapping = {
        "task": "task",
        "action_mode": "action_mode",
        "joints": "arm_joints",
        "gripper_joints": "gripper_joints",
        "base_link": "base_link",
        "ee_link": "ee_link",
        "spec_control_hz": "control_hz",
        "max_ee_step": "max_ee_step",
        "max_joint_step": "max_joint_step",
        "gripper_open": "gripper_open",
        "gripper_joint_range": "gripper_joint_range",
        "workspace_low": "workspace_low",
        "workspace_high": "workspace_high",
    }
    for p, f in mapping.items():
        if p in params and params[p] is not None:
            v = params[p]
            kw[f] = tuple(v) if isinstance(v, (list, tuple)) else v
    return Spec(**kw)
