"""The reality gap (ROS-free): how the sim's "arm" twin differs from the twin the gate and the monitor use.

``vla-rl-ros sim`` runs the arm as a PyBullet twin (``twin_node``), and the learner's gate predicts a model's
success in another twin (:class:`~vla_rl_ros.twin.env.TwinEnv`). Were the two identical, the gate's prediction
would never meet a world that differs from it. A :class:`RealityGap` makes ``twin_node``'s twin differ, as a real
cell would, in:

* the object's physics: lateral friction, mass and size (scales of the scene's cube);
* actuation: every arm and gripper command is applied ``actuation_delay_s`` late (a FIFO in ``twin_node``);
* sensing: Gaussian noise on the published joint positions (encoders, rad) and on the published object and
  goal positions (perception, m), never on the physics state;
* the camera (when on): its eye and target moved by ``camera_shift_m``, and panned by ``camera_pan_rad``
  about the vertical through the eye.

The gate's and the monitor's twin stay exact: only ``twin_node`` applies a gap. :meth:`RealityGap.scaled` is the
``--gap K`` preset scale: 0 is no gap at all (the twins identical), 1 the gap as written, 2 twice it (factors
are raised to the power K, offsets multiplied by K).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np


@dataclass(frozen=True)
class RealityGap:
    """How the arm's twin differs from the gate's. The defaults are no gap (:meth:`none`)."""

    object_friction_scale: float = 1.0  # × the scene's lateral friction of the object
    object_mass_scale: float = 1.0  # × the object's mass (and its inertia)
    object_size_scale: float = 1.0  # × the object's size (loaded with PyBullet's globalScaling)
    actuation_delay_s: float = 0.0  # commands applied this late (simulated time)
    joint_noise_std: float = 0.0  # rad, on each published joint position
    pose_noise_std: float = 0.0  # m, on each published object and goal position (each axis)
    camera_shift_m: tuple[float, float, float] = (0.0, 0.0, 0.0)  # added to the camera's eye and target
    camera_pan_rad: float = 0.0  # the view direction turned about the vertical through the eye
    _FACTORS = ("object_friction_scale", "object_mass_scale", "object_size_scale")

    def __post_init__(self):
        for name in self._FACTORS:
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0.0):
                raise ValueError(f"{name} must be a positive factor, got {v}")
        for name in ("actuation_delay_s", "joint_noise_std", "pose_noise_std"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0.0):
                raise ValueError(f"{name} must be >= 0, got {v}")
        shift = tuple(float(v) for v in self.camera_shift_m)
        if len(shift) != 3 or not all(math.isfinite(v) for v in shift):
            raise ValueError(f"camera_shift_m must be 3 finite values, got {self.camera_shift_m}")
        object.__setattr__(self, "camera_shift_m", shift)

    @classmethod
    def none(cls) -> "RealityGap":
        """No gap: the arm's twin is the gate's twin."""
        return cls()

    def scaled(self, k: float) -> "RealityGap":
        """The gap ``k`` times as large: factors ``f ** k``, delay, noise and camera offsets ``× k``
        (``k = 0``: :meth:`none`, exactly)."""
        k = float(k)
        if not (math.isfinite(k) and k >= 0.0):
            raise ValueError(f"the gap scale must be >= 0, got {k}")
        if k == 0.0:
            return self.none()
        return RealityGap(
            **{n: getattr(self, n) ** k for n in self._FACTORS},
            actuation_delay_s=self.actuation_delay_s * k, joint_noise_std=self.joint_noise_std * k,
            pose_noise_std=self.pose_noise_std * k, camera_shift_m=tuple(v * k for v in self.camera_shift_m),
            camera_pan_rad=self.camera_pan_rad * k)

    @property
    def is_none(self) -> bool:
        return self == self.none()

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def describe(self) -> str:
        """One line for a log: what differs (``none`` when nothing does)."""
        if self.is_none:
            return "none"
        parts = []
        for name, label in (("object_friction_scale", "friction"), ("object_mass_scale", "mass"),
                            ("object_size_scale", "size")):
            v = getattr(self, name)
            if v != 1.0:
                parts.append(f"{label} x{v:.3g}")
        if self.actuation_delay_s:
            parts.append(f"delay {1e3 * self.actuation_delay_s:.0f} ms")
        if self.joint_noise_std:
            parts.append(f"encoder noise {self.joint_noise_std:.2g} rad")
        if self.pose_noise_std:
            parts.append(f"pose noise {1e3 * self.pose_noise_std:.3g} mm")
        if any(self.camera_shift_m) or self.camera_pan_rad:
            shift = [round(v, 4) for v in self.camera_shift_m]
            parts.append(f"camera shift {shift} m, pan {self.camera_pan_rad:.3g} rad")
        return ", ".join(parts)

    # ------------------------------------------------------------------ applying it
    def apply_dynamics(self, twin) -> None:
        """The object's friction and mass in a :class:`~vla_rl_ros.twin.core.TwinCore` (its size is set when the
        twin loads the object: ``TwinCore(object_scale=gap.object_size_scale)``). A factor of 1 leaves PyBullet
        untouched."""
        import pybullet as pb

        c = twin.cid
        if self.object_friction_scale != 1.0:
            pb.changeDynamics(twin.cube, -1, lateralFriction=twin.scene.object_friction * self.object_friction_scale,
                              physicsClientId=c)
        if self.object_mass_scale != 1.0:
            info = pb.getDynamicsInfo(twin.cube, -1, physicsClientId=c)
            pb.changeDynamics(twin.cube, -1, mass=info[0] * self.object_mass_scale,
                              localInertiaDiagonal=[v * self.object_mass_scale for v in info[2]], physicsClientId=c)

    def camera(self, eye, target) -> tuple[list[float], list[float]]:
        """The camera's ``(eye, target)`` under this gap."""
        eye = np.asarray(eye, dtype=float) + self.camera_shift_m
        target = np.asarray(target, dtype=float) + self.camera_shift_m
        if self.camera_pan_rad:
            c, s = math.cos(self.camera_pan_rad), math.sin(self.camera_pan_rad)
            d = target - eye
            target = eye + np.array([c * d[0] - s * d[1], s * d[0] + c * d[1], d[2]])
        return eye.tolist(), target.tolist()


@dataclass
class SensorNoise:
    """The gap's sensing noise, drawn from one seeded generator (a seed gives the same noise sequence)."""

    gap: RealityGap
    seed: int = 0
    rng: np.random.Generator = field(init=False)

    def __post_init__(self):
        self.rng = np.random.default_rng([int(self.seed), 0x6A9])

    def joints(self, q) -> list[float]:
        q = [float(v) for v in q]
        if not self.gap.joint_noise_std:
            return q
        return (np.asarray(q) + self.rng.normal(0.0, self.gap.joint_noise_std, len(q))).tolist()

    def position(self, p) -> list[float]:
        p = [float(v) for v in p]
        if not self.gap.pose_noise_std:
            return p
        return (np.asarray(p) + self.rng.normal(0.0, self.gap.pose_noise_std, 3)).tolist()
