"""From a policy action to safe joint commands (no ROS inside).

``ActionMapper`` turns a spec-layout action into joint position targets (IK on
the URDF model for end-effector deltas). ``SafetyFilter`` then applies, in this
order: a NaN/Inf guard, a workspace box on the hand target, the URDF joint
limits, a maximum change per tick, and a bound on the distance from the measured
state. ``Controller`` chains both and is what the twin env and ``policy_node``
call every tick, so the simulator and the robot run the same code.

A command is always either the filtered action or a *hold*: the last measured
joint positions (never zeros, never a stale action).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..arm import PANDA_HOME as _PANDA_HOME
from ..arm import check_home
from ..kinematics import Kinematics, ee_delta_targets_jit, filter_targets_jit
from ..spec import Spec

# Panda "ready" posture (hand pointing down): the Panda's twin home and IK rest posture (vla_rl_ros/arm.py).
PANDA_HOME = np.array(_PANDA_HOME)


@dataclass
class SafetyLimits:
    """Limits applied to every command. Defaults suit a Panda at 20-1000 Hz."""

    joint_margin: float = 0.02  # rad kept away from the URDF limits
    max_joint_step: float = 0.25  # rad: max change of a joint target per tick vs the last command
    max_tracking_error: float = 0.35  # rad: max distance of a target from the measured position
    workspace_tolerance: float = 0.02  # m: FK of the final target may exceed the box by this much
    max_gripper_step: float = 0.08  # m per tick


@dataclass
class Command:
    arm: np.ndarray  # joint position targets, spec.arm_joints order
    gripper: float  # opening width target (m)
    hold: bool = False
    reason: str = ""  # why the command was held or modified ('' when untouched)
    clipped: bool = False


class ActionMapper:
    """Spec action → unfiltered joint targets."""

    def __init__(self, spec: Spec, kin: Kinematics, ik_iters: int = 3, rest_posture: np.ndarray | None = None):
        if kin.joint_names != spec.arm_joints:
            raise ValueError(f"kinematic model joints {kin.joint_names} differ from spec joints {spec.arm_joints}")
        self.spec = spec
        self.kin = kin
        self.ik_iters = ik_iters
        # the arm's home (the params file's `home`; default: the Panda's ready posture, zeros for other arms)
        self.rest = np.clip(check_home(rest_posture, spec), kin.lower, kin.upper)
        self.target_rot = kin.fk(self.rest)[:3, :3].copy()  # keep the hand's orientation of the rest posture
        self.ws_low = np.asarray(spec.workspace_low, dtype=np.float64)
        self.ws_high = np.asarray(spec.workspace_high, dtype=np.float64)

    def map(self, action: np.ndarray, q_meas: np.ndarray, ee_meas: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """Return (arm targets, gripper width, hand target clipped to workspace?)."""
        s = self.spec
        # ufuncs rather than np.clip: the same values, a few µs less of Python dispatch per call (the control tick)
        a = np.minimum(np.maximum(action, -1.0), 1.0)
        clipped = False
        if s.action_mode == "ee_delta":
            target = ee_meas + a[:3] * s.max_ee_step
            boxed = np.minimum(np.maximum(target, self.ws_low), self.ws_high)
            clipped = bool((boxed != target).any())
            q = self.kin.ik(boxed, q_meas, target_rot=self.target_rot, iters=self.ik_iters, q_rest=self.rest)
        else:
            q = q_meas + a[: s.n_arm] * s.max_joint_step
        return q, s.gripper_target(float(a[-1])), clipped


class SafetyFilter:
    def __init__(self, spec: Spec, kin: Kinematics, limits: SafetyLimits | None = None):
        self.spec = spec
        self.kin = kin
        self.limits = limits or SafetyLimits()
        m = self.limits.joint_margin
        self.lower = kin.lower + m
        self.upper = kin.upper - m
        self.ws_low = np.asarray(spec.workspace_low, dtype=np.float64) - self.limits.workspace_tolerance
        self.ws_high = np.asarray(spec.workspace_high, dtype=np.float64) + self.limits.workspace_tolerance
        self.last_cmd: np.ndarray | None = None
        self.last_grip: float | None = None

    def reset(self) -> None:
        self.last_cmd = None
        self.last_grip = None

    def hold(self, q_meas: np.ndarray, grip_meas: float, reason: str) -> Command:
        """Hold = the last measured positions as targets (finite measurements required by the caller)."""
        q = np.asarray(q_meas, dtype=np.float64).copy()
        self.last_cmd = q.copy()
        self.last_grip = float(grip_meas)
        return Command(arm=q, gripper=float(grip_meas), hold=True, reason=reason)

    def filter(self, q_target: np.ndarray, grip_target: float, q_meas: np.ndarray, grip_meas: float,
               ee_meas: np.ndarray | None = None) -> Command:
        """``ee_meas``: the measured hand position (FK of ``q_meas`` if None). A target whose hand is outside the
        workspace box (by more than the tolerance) holds the arm, unless it brings a hand that is already
        outside nearer to the box."""
        L = self.limits
        if not (np.isfinite(q_target).all() and math.isfinite(grip_target)):
            return self.hold(q_meas, grip_meas, "non-finite target")
        if ee_meas is None:
            ee_meas = self.kin.fk_pos(np.asarray(q_meas, dtype=np.float64))
        ref = q_meas if self.last_cmd is None else self.last_cmd
        q2, flags = filter_targets_jit(
            np.ascontiguousarray(q_target, dtype=np.float64), np.ascontiguousarray(q_meas, dtype=np.float64),
            np.ascontiguousarray(ref, dtype=np.float64), self.lower, self.upper, float(L.max_joint_step),
            float(L.max_tracking_error), self.ws_low, self.ws_high, *self.kin.chain_arrays,
            np.ascontiguousarray(ee_meas, dtype=np.float64))
        if flags & 4:
            return self.hold(q_meas, grip_meas, "workspace")
        return self._accept(q2, flags, grip_target, grip_meas)

    def _accept(self, q2: np.ndarray, flags: int, grip_target: float, grip_meas: float) -> Command:
        """The filtered joint targets ``q2`` (flags of :func:`filter_targets_jit`, no hold) and the gripper's."""
        L = self.limits
        g_ref = grip_meas if self.last_grip is None else self.last_grip
        g = min(max(float(grip_target), 0.0), self.spec.gripper_open)
        g = min(max(g, g_ref - L.max_gripper_step), g_ref + L.max_gripper_step)
        self.last_cmd = q2
        self.last_grip = g
        reason = ""
        if flags & 3:
            reasons = ("joint limits" if flags & 1 else "", "max step" if flags & 2 else "")
            reason = ", ".join(r for r in reasons if r)
        return Command(arm=q2, gripper=g, hold=False, reason=reason, clipped=bool(flags & 3))


class Controller:
    """Action → filtered command. Validates inputs; anything bad becomes a hold."""

    def __init__(self, spec: Spec, kin: Kinematics, limits: SafetyLimits | None = None, ik_iters: int = 3,
                 home=None):
        self.spec = spec
        self.kin = kin
        self.mapper = ActionMapper(spec, kin, ik_iters=ik_iters, rest_posture=home)
        self.safety = SafetyFilter(spec, kin, limits)
        # ee_delta: map + filter in one compiled call (kinematics.ee_delta_targets_jit); the limits are read here,
        # once, as SafetyFilter reads its joint and workspace bounds once
        self._fused = None
        if spec.action_mode == "ee_delta":
            m, f, L = self.mapper, self.safety, self.safety.limits
            self._fused = (
                np.ascontiguousarray(np.stack([m.ws_low, m.ws_high, f.ws_low, f.ws_high]), dtype=np.float64),
                np.ascontiguousarray(np.stack([kin.lower, kin.upper, f.lower, f.upper]), dtype=np.float64),
                np.array([spec.max_ee_step, L.max_joint_step, L.max_tracking_error, 0.05, 0.5, 0.05]),
                int(ik_iters), np.ascontiguousarray(m.target_rot, dtype=np.float64),
                np.ascontiguousarray(m.rest, dtype=np.float64), *kin.chain_arrays)

    def reset(self) -> None:
        self.safety.reset()

    def warm_up(self) -> None:
        """One step at the rest posture, then forgotten: numba compiles (or loads from its cache) the kernels
        now, not in the first control tick."""
        q = self.mapper.rest.copy()
        self.step(np.zeros(self.spec.action_dim), q, self.spec.gripper_open, self.kin.fk_pos(q))
        self.reset()

    def step(self, action: np.ndarray, q_meas: np.ndarray, grip_meas: float, ee_meas: np.ndarray | None = None) -> Command:
        q_meas = np.asarray(q_meas, dtype=np.float64)
        if ee_meas is None:
            ee_meas = self.kin.fk_pos(q_meas)
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.spec.action_dim,):
            return self.safety.hold(q_meas, grip_meas, f"action has shape {a.shape}, expected ({self.spec.action_dim},)")
        if not np.isfinite(a).all():
            return self.safety.hold(q_meas, grip_meas, "non-finite action")
        if self._fused is not None:
            return self._step_fused(a, q_meas, grip_meas, ee_meas)
        q_t, g_t, ws_clipped = self.mapper.map(a, q_meas, ee_meas)
        cmd = self.safety.filter(q_t, g_t, q_meas, grip_meas, ee_meas)
        if ws_clipped and not cmd.hold:
            cmd.reason = ", ".join(r for r in ("workspace clip", cmd.reason) if r)
            cmd.clipped = True
        return cmd

    def _step_fused(self, a: np.ndarray, q_meas: np.ndarray, grip_meas: float, ee_meas) -> Command:
        """:meth:`step` for ee_delta actions: the same command as ``mapper.map`` then ``safety.filter``."""
        sf = self.safety
        q_meas = np.ascontiguousarray(q_meas)
        ref = q_meas if sf.last_cmd is None else sf.last_cmd
        q2, flags = ee_delta_targets_jit(a, q_meas, np.ascontiguousarray(ee_meas, dtype=np.float64),
                                         np.ascontiguousarray(ref, dtype=np.float64), *self._fused)
        if flags & 8:
            return sf.hold(q_meas, grip_meas, "non-finite target")
        if flags & 4:
            return sf.hold(q_meas, grip_meas, "workspace")
        cmd = sf._accept(q2, flags, self.spec.gripper_target(float(a[-1])), grip_meas)
        if flags & 16:
            cmd.reason = ", ".join(r for r in ("workspace clip", cmd.reason) if r)
            cmd.clipped = True
        return cmd
