"""The arm, as one robot's params file declares it (no ROS inside).

A params file's ``/**`` section (``config/robot.yaml``, ``config/sim.yaml``,
``config/xarm6_sim.yaml``) declares the arm once: the spec's parameters
(:func:`~vla_rl_ros.spec.spec_from_params`), the URDF, the twin's scene and the
home posture. Every node reads it through ``declare_arm`` (nodes/_common.py);
the CLI's tools (``eval``, ``ship``, ``demos``, ``train``, ``sim``) read the same
section with :func:`read_arm`. So a model, its demonstrations and its twin
evaluation are all the arm's, and nothing quietly falls back to the Panda.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .spec import PANDA_ARM_JOINTS, Spec, spec_from_params

if TYPE_CHECKING:
    from .learner.evaluate import TwinConfig

#: the Panda's "ready" posture (hand pointing down): its home and IK rest posture
PANDA_HOME = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)


def default_home(spec: Spec) -> np.ndarray:
    """The home posture when the params file names none: the Panda's ready posture for the Panda's joints,
    all zeros for any other arm (declare ``home`` for it: zeros may put the hand in the table)."""
    return np.array(PANDA_HOME if tuple(spec.arm_joints) == PANDA_ARM_JOINTS else np.zeros(spec.n_arm), dtype=np.float64)


def check_home(home: Sequence[float] | None, spec: Spec) -> np.ndarray:
    """``home`` as an array with one position per arm joint (``None``: :func:`default_home`)."""
    if home is None or len(home) == 0:
        return default_home(spec)
    q = np.asarray(home, dtype=np.float64)
    if q.shape != (spec.n_arm,) or not np.all(np.isfinite(q)):
        raise ValueError(f"home must hold {spec.n_arm} finite joint positions, one per arm joint "
                         f"{list(spec.arm_joints)}; got {list(home)}")
    return q


@dataclass(frozen=True)
class Arm:
    """What a node or a tool knows about the arm: the spec, the URDF (resolved; ``None`` = the Franka Panda from
    pybullet_data), the twin's scene (``None`` = ``sim/panda_table.yaml``) and the home posture (``None`` =
    :func:`default_home`)."""

    spec: Spec
    urdf_path: str | None = None
    scene: str | None = None
    home: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.home is not None:
            object.__setattr__(self, "home", tuple(float(v) for v in check_home(self.home, self.spec)))

    @property
    def urdf(self) -> str:
        """The URDF file to load (the Panda from pybullet_data when none is configured)."""
        from .kinematics import default_panda_urdf

        return self.urdf_path or default_panda_urdf()

    @property
    def home_q(self) -> np.ndarray:
        return check_home(self.home, self.spec)

    def with_task(self, task: str | None) -> "Arm":
        return self if not task or task == self.spec.task else dataclasses.replace(self, spec=self.spec.replace(task=task))

    def twin(self) -> "TwinConfig":
        """The twin this arm is evaluated in (the gate's, the monitor's, ``eval``'s, ``ship``'s)."""
        from .learner.evaluate import TwinConfig

        return TwinConfig(spec=self.spec, urdf_path=self.urdf_path, scene=self.scene, home=self.home)


def arm_from_params(params: Mapping[str, Any]) -> Arm:
    """The arm from flat parameters (a params file's ``/**`` section, merged with a node's): the spec's
    parameters, ``urdf_path`` (relative: resolved like every data path), ``scene``, ``home``."""
    from .runtime.paths import resolve_path

    urdf = params.get("urdf_path") or ""
    home = params.get("home")
    return Arm(spec=spec_from_params(params), urdf_path=resolve_path(urdf) if urdf else None,
               scene=params.get("scene") or None, home=tuple(home) if home else None)


def read_arm(params_files: str | Sequence[str] | None, task: str | None = None, node: str = "policy_node") -> Arm:
    """The arm params files declare (each file's ``/**`` section merged with ``node``'s as rcl does; later
    files win, as rcl merges ``--params-file``s), with ``task`` when given. ``None`` or ``[]``: the Panda with
    the built-in defaults (the spec's, the Panda's URDF and scene), as a node without a params file."""
    import os

    from .graph import read_params_file

    files = [params_files] if isinstance(params_files, str) else list(params_files or [])
    if not files:
        return Arm(spec=Spec(**({"task": task} if task else {})))
    merged: dict[str, Any] = {}
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"params file not found: {f}")
        merged.update(read_params_file(f, node))
    if task:
        merged["task"] = task
    return arm_from_params(merged)


def joint_mimics(urdf_path: str) -> dict[str, tuple[str, float, float]]:
    """``{joint: (source joint, multiplier, offset)}`` of every URDF joint with a ``<mimic>``
    (``joint = multiplier * source + offset``): how a driver that publishes one finger joint of a parallel
    gripper gives the other (:class:`~vla_rl_ros.runtime.inputs.JointStateMatcher`)."""
    import xml.etree.ElementTree as ET

    out = {}
    for j in ET.parse(urdf_path).getroot().iter("joint"):
        m = j.find("mimic")
        if m is not None and j.get("name") and m.get("joint"):
            out[j.get("name")] = (m.get("joint"), float(m.get("multiplier", 1.0)), float(m.get("offset", 0.0)))
    return out
