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

VLA-shaped models (issue 13; every field below is optional and serialised only
when used, so a state model's spec is unchanged):

* ``images``: camera inputs (:class:`ImageSpec`: name, topic, size, encoding,
  crop). The model's input ``image_<name>`` is ``uint8`` RGB ``(1, 3, H, W)``.
* ``instructions``: a vocabulary; the model's input ``instruction`` is a float32
  one-hot ``(1, len(instructions))``, chosen at run time on ``/task/instruction``.
* ``chunk_len`` K and ``chunk_hz``: the model's output ``action`` is ``(1, K,
  action_dim)`` (or ``(1, K * action_dim)``), K actions for the K chunk steps
  ``1/chunk_hz`` apart that follow the observation it was computed from.

A VLA-shaped model takes the state vector too, as its input ``obs``.
``policy_node`` runs it in an inference thread, never on the control thread.

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
    """A camera input of the model.

    The node reads ``topic`` (``sensor_msgs/Image``, ``encoding`` rgb8 or bgr8),
    cuts ``crop`` = ``(top, left, height, width)`` in the camera's pixels (empty:
    the whole frame), resizes to ``height`` x ``width`` (area interpolation) and
    feeds the model ``uint8`` RGB in ``(1, 3, height, width)`` under the input
    named ``image_<name>``.
    """

    name: str = "image"
    topic: str = "/camera/image_raw"
    height: int = 84
    width: int = 84
    encoding: str = "rgb8"  # rgb8 | bgr8: what the camera publishes (the model always gets RGB)
    crop: tuple[int, ...] = ()  # (top, left, height, width) in source pixels; () = the whole frame

    @property
    def input_name(self) -> str:
        return "image_" + self.name

    def check(self) -> None:
        if not self.name or not all(c.isalnum() or c == "_" for c in self.name):
            raise SpecError(f"image name {self.name!r} must be a non-empty identifier (letters, digits, _)")
        if self.encoding not in ("rgb8", "bgr8"):
            raise SpecError(f"unsupported image encoding {self.encoding!r} (rgb8 or bgr8)")
        if not (1 <= int(self.height) <= 4096 and 1 <= int(self.width) <= 4096):
            raise SpecError(f"image {self.name!r}: height and width must be in 1..4096")
        c = self.crop
        if c and (len(c) != 4 or c[0] < 0 or c[1] < 0 or c[2] < 1 or c[3] < 1):
            raise SpecError(f"image {self.name!r}: crop must be (top, left, height, width) with top, left >= 0 "
                            f"and height, width >= 1, or empty; got {list(c)}")

    @classmethod
    def from_dict(cls, d: Any) -> "ImageSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or not set(d) <= names:
            raise SpecError(f"an image spec must be an object with fields {sorted(names)}: {json.dumps(d)[:80]}")
        defaults = cls()
        for k, v in d.items():
            _check_type(f"image.{k}", v, getattr(defaults, k))
        if any(not isinstance(x, int) for x in d.get("crop", [])):
            raise SpecError(f"image crop must be whole pixels: {d.get('crop')}")
        for k in ("height", "width"):
            if k in d and not isinstance(d[k], int):
                raise SpecError(f"image {k} must be a whole number of pixels: {d[k]!r}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_type(name: str, v: Any, default: Any) -> None:
    """A spec field read from JSON has its field's type (strings, numbers, lists of either; ``images``: a list
    of objects), else :class:`SpecError`: malformed metadata is refused with a reason, never a stray exception."""
    if name == "images":
        ok = isinstance(v, list) and all(isinstance(x, dict) for x in v)
    elif name == "instructions":
        ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
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
    # VLA-shaped models (issue 13). Each is serialised only when used, so a state model's spec JSON (and its
    # signature's spec_sha256) is what it was before these existed.
    images: tuple[ImageSpec, ...] = ()  # camera inputs, in the model's input order
    instructions: tuple[str, ...] = ()  # the instruction vocabulary; the model gets a one-hot "instruction" input
    chunk_len: int = 1  # K: actions per inference (1 = one action per tick, the state MLPs)
    chunk_hz: float = 0.0  # the rate of a chunk's steps (0 = control_hz)
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
        for im in self.images:
            if not isinstance(im, ImageSpec):
                raise SpecError(f"images must be ImageSpec entries, got {type(im).__name__}")
            im.check()
        names = [im.name for im in self.images]
        if len(set(names)) != len(names):
            raise SpecError(f"image names must be unique: {names}")
        if len(set(self.instructions)) != len(self.instructions) or any(not i.strip() for i in self.instructions):
            raise SpecError(f"instructions must be unique, non-empty strings: {list(self.instructions)}")
        if not 1 <= int(self.chunk_len) <= 1000 or isinstance(self.chunk_len, bool):
            raise SpecError(f"chunk_len must be a whole number in 1..1000, got {self.chunk_len!r}")
        if not (float(self.chunk_hz) >= 0.0 and np.isfinite(self.chunk_hz)):
            raise SpecError(f"chunk_hz must be >= 0 (0 = control_hz), got {self.chunk_hz!r}")

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

    @property
    def chunk_rate_hz(self) -> float:
        """The rate a chunk's steps are executed at (Hz)."""
        return float(self.chunk_hz) if self.chunk_hz > 0 else float(self.control_hz)

    @property
    def vla_shaped(self) -> bool:
        """True for a model that needs more than the state vector each tick: images, an instruction or chunks.
        ``policy_node`` runs such a model off the control thread."""
        return bool(self.images or self.instructions or self.chunk_len > 1)

    def instruction_index(self, text: str) -> int:
        """The vocabulary index of ``text`` (exact match after stripping), or -1 when it is not in it."""
        t = text.strip()
        return self.instructions.index(t) if t in self.instructions else -1

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
        d["images"] = [{k: list(v) if isinstance(v, tuple) else v for k, v in im.items()} for im in d["images"]]
        for k in _OPTIONAL_FIELDS:  # the VLA fields only when used: a state model's JSON is unchanged
            if d[k] == _OPTIONAL_FIELDS[k]:
                del d[k]
        d["image"] = None  # the legacy single-camera field, always null (older builds require it)
        d["obs_dim"] = self.obs_dim
        d["action_dim"] = self.action_dim
        d["obs_segments"] = [list(s) for s in self.obs_segments]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Spec":
        names = {f.name for f in dataclasses.fields(cls)}
        derived = {"obs_dim", "action_dim", "obs_segments", "image"}
        unknown = set(d) - names - derived
        if unknown:
            raise SpecError(f"unknown spec fields: {sorted(unknown)}")
        kw: dict[str, Any] = {}
        defaults = cls()
        for k, v in d.items():
            if k == "image":  # legacy: null, or one camera (the old ImageSpec's fields)
                if v is not None:
                    kw["images"] = (ImageSpec.from_dict(v),)
                continue
            if k in derived:
                continue
            _check_type(k, v, getattr(defaults, k))
            if k == "images":
                kw[k] = tuple(ImageSpec.from_dict(x) for x in v)
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
            va, vb = a.get(k, _OPTIONAL_FIELDS.get(k)), b.get(k, _OPTIONAL_FIELDS.get(k))
            if va != vb:
                out.append(f"{k}: configured {va!r}, model has {vb!r}")
        return out

    def replace(self, **kw: Any) -> "Spec":
        return dataclasses.replace(self, **kw)


_OPTIONAL_FIELDS = {"images": [], "instructions": [], "chunk_len": 1, "chunk_hz": 0.0}


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
    kw.update(vla_from_params(params))
    return Spec(**kw)


IMAGE_PARAM_FIELDS = ("topic", "height", "width", "encoding", "crop")


def vla_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The VLA fields of a spec from flat parameters: ``images`` (camera names), for each name ``image.<name>.``
    ``topic``/``height``/``width``/``encoding``/``crop``, ``instructions``, ``chunk_len``, ``chunk_hz``. As YAML::

        images: [wrist]
        image:
          wrist: {topic: /wrist/image_raw, height: 84, width: 84, encoding: rgb8, crop: [0, 80, 480, 480]}
        instructions: ["put the cube on the goal", "lift the cube"]
        chunk_len: 20
        chunk_hz: 50.0
    """
    kw: dict[str, Any] = {}
    names = params.get("images") or []
    if isinstance(names, str):
        raise SpecError(f"images must be a list of camera names, got the string {names!r}")
    ims = []
    for n in names:
        d: dict[str, Any] = {"name": str(n)}
        for f in IMAGE_PARAM_FIELDS:
            v = params.get(f"image.{n}.{f}")
            if v is not None and not (f == "crop" and len(v) == 0):
                d[f] = list(v) if isinstance(v, (list, tuple)) else v
        ims.append(ImageSpec.from_dict(d))
    if ims:
        kw["images"] = tuple(ims)
    if params.get("instructions"):
        kw["instructions"] = tuple(str(x) for x in params["instructions"])
    for k in ("chunk_len", "chunk_hz"):
        if params.get(k) is not None:
            kw[k] = params[k]
    return kw
