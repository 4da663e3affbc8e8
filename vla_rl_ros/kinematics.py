"""Kinematic model of a serial arm loaded from its URDF (no PyBullet, no ROS).

The policy node and the twin's gymnasium env share this model: forward
kinematics builds the ``ee_pos`` observation and damped-least-squares inverse
kinematics turns end-effector deltas into joint position targets. Only the
standard URDF elements are used (``joint/origin``, ``joint/axis``,
``joint/limit``), so a user's own arm works as long as its URDF describes a
chain from ``base_link`` to ``ee_link``.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

try:  # numba makes FK/IK ~50x faster; the pure-Python fallback is correct but slow.
    from numba import njit
except ImportError:  # pragma: no cover
    def njit(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda f: f


class KinematicsError(ValueError):
    pass


def default_panda_urdf() -> str:
    """Path of the Franka Panda URDF shipped by ``pybullet_data``."""
    import pybullet_data

    return os.path.join(pybullet_data.getDataPath(), "franka_panda", "panda.urdf")


def _rpy_to_matrix(r: float, p: float, y: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def _floats(text: str | None, default: str) -> list[float]:
    return [float(v) for v in (text or default).split()]


@dataclass
class JointInfo:
    name: str
    type: str
    origin: np.ndarray  # 4x4 parent->joint
    axis: np.ndarray  # unit axis in joint frame
    lower: float
    upper: float
    velocity: float
    effort: float


class Kinematics:
    """FK, geometric Jacobian and DLS IK for the chain ``base_link`` → ``ee_link``.

    ``joint_names`` are the actuated joints of the chain, in the order used by
    commands and observations (the spec's ``arm_joints``).
    """

    def __init__(self, urdf_path: str, base_link: str, ee_link: str, joint_names: tuple[str, ...] | list[str]):
        if not os.path.isfile(urdf_path):
            raise KinematicsError(f"URDF not found: {urdf_path}")
        try:
            root = ET.parse(urdf_path).getroot()
        except ET.ParseError as e:
            raise KinematicsError(f"URDF {urdf_path} is not valid XML: {e}") from e
        by_child: dict[str, tuple[JointInfo, str]] = {}
        all_joints: dict[str, JointInfo] = {}
        for j in root.findall("joint"):  # the <robot>'s joints (not <transmission><joint>)
            o = j.find("origin")
            xyz = _floats(o.get("xyz") if o is not None else None, "0 0 0")
            rpy = _floats(o.get("rpy") if o is not None else None, "0 0 0")
            T = np.eye(4)
            T[:3, :3] = _rpy_to_matrix(*rpy)
            T[:3, 3] = xyz
            ax = j.find("axis")
            axis = np.array(_floats(ax.get("xyz") if ax is not None else None, "1 0 0"))
            n = np.linalg.norm(axis)
            axis = axis / n if n > 0 else np.array([1.0, 0.0, 0.0])
            lim = j.find("limit")
            jtype = j.get("type", "fixed")
            lower = float(lim.get("lower", -math.pi)) if lim is not None else -math.pi
            upper = float(lim.get("upper", math.pi)) if lim is not None else math.pi
            if jtype == "continuous":
                lower, upper = -math.inf, math.inf
            info = JointInfo(
                name=j.get("name"),
                type=jtype,
                origin=T,
                axis=axis,
                lower=lower,
                upper=upper,
                velocity=float(lim.get("velocity", 1.0)) if lim is not None else 1.0,
                effort=float(lim.get("effort", 100.0)) if lim is not None else 100.0,
            )
            parent = j.find("parent").get("link")
            child = j.find("child").get("link")
            by_child[child] = (info, parent)
            all_joints[info.name] = info
        self.all_joints = all_joints
        # Walk from the ee link back to the base.
        chain: list[JointInfo] = []
        link = ee_link
        while link != base_link:
            if link not in by_child:
                raise KinematicsError(f"no kinematic chain from {base_link!r} to {ee_link!r} in {urdf_path}")
            info, link = by_child[link]
            chain.append(info)
        chain.reverse()
        actuated = [j.name for j in chain if j.type in ("revolute", "continuous", "prismatic")]
        missing = [n for n in joint_names if n not in actuated]
        if missing:
            raise KinematicsError(f"joints {missing} are not on the chain {base_link}->{ee_link} (chain has {actuated})")
        if list(joint_names) != actuated:
            raise KinematicsError(f"configured joints {list(joint_names)} must list the chain's actuated joints in order: {actuated}")
        self.joint_names = tuple(joint_names)
        self.urdf_path = urdf_path
        # Fold fixed joints into the following origin transform.
        segments: list[tuple[np.ndarray, np.ndarray, bool]] = []  # (T_fixed_before, axis, prismatic)
        acc = np.eye(4)
        for j in chain:
            if j.type == "fixed":
                acc = acc @ j.origin
            else:
                segments.append((acc @ j.origin, j.axis, j.type == "prismatic"))
                acc = np.eye(4)
        self._seg_R = np.ascontiguousarray([s[0][:3, :3] for s in segments], dtype=np.float64)
        self._seg_t = np.ascontiguousarray([s[0][:3, 3] for s in segments], dtype=np.float64)
        self._seg_axis = np.ascontiguousarray([s[1] for s in segments], dtype=np.float64)
        self._seg_prismatic = np.array([s[2] for s in segments], dtype=bool)
        self._tail_R = acc[:3, :3].copy()
        self._tail_t = acc[:3, 3].copy()
        act = [all_joints[n] for n in joint_names]
        self.lower = np.array([j.lower for j in act])
        self.upper = np.array([j.upper for j in act])
        self.velocity_limits = np.array([j.velocity for j in act])
        self.effort_limits = np.array([j.effort for j in act])

    @property
    def n(self) -> int:
        return len(self.joint_names)

    # ------------------------------------------------------------------ FK
    def _chain(self, q: np.ndarray):
        return _chain_jit(
            np.ascontiguousarray(q, dtype=np.float64), self._seg_R, self._seg_t, self._seg_axis,
            self._seg_prismatic, self._tail_R, self._tail_t,
        )

    def fk(self, q) -> np.ndarray:
        """4x4 pose of the ee link in the base frame."""
        _, _, R, p = self._chain(q)
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = p
        return T

    def fk_pos(self, q) -> np.ndarray:
        return self._chain(q)[3]

    @property
    def chain_arrays(self) -> tuple:
        """The compiled chain's arrays, for other compiled kernels (the safety filter)."""
        return (self._seg_R, self._seg_t, self._seg_axis, self._seg_prismatic, self._tail_R, self._tail_t)

    def jacobian(self, q) -> tuple[np.ndarray, np.ndarray]:
        """(6xN geometric Jacobian [v; w] at the ee, 4x4 ee pose)."""
        Z, P, R, p = self._chain(q)
        J = _jacobian_jit(Z, P, p, self._seg_prismatic)
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = p
        return J, T

    # ------------------------------------------------------------------ IK
    def ik(
        self,
        target_pos,
        q_init,
        target_rot: np.ndarray | None = None,
        iters: int = 4,
        damping: float = 0.05,
        rot_weight: float = 0.5,
        q_rest: np.ndarray | None = None,
        rest_gain: float = 0.05,
    ) -> np.ndarray:
        """Damped-least-squares IK from ``q_init`` toward ``target_pos`` (and ``target_rot``).

        Each iteration solves ``dq = Jᵀ(JJᵀ + λ²I)⁻¹ e`` for the position error
        (and the weighted orientation error when ``target_rot`` is given). A
        small null-space pull toward ``q_rest`` keeps the redundant arm near a
        comfortable posture. Joints are clipped to the URDF limits after every
        iteration, so the result is always within limits.
        """
        q = np.array(q_init, dtype=np.float64)
        tp = np.ascontiguousarray(target_pos, dtype=np.float64)
        use_rot = target_rot is not None
        tr = np.ascontiguousarray(target_rot if use_rot else np.eye(3), dtype=np.float64)
        use_rest = q_rest is not None
        qr = np.ascontiguousarray(q_rest if use_rest else q, dtype=np.float64)
        return _ik_jit(
            q, tp, tr, use_rot, qr, use_rest, int(iters), float(damping), float(rot_weight), float(rest_gain),
            self._seg_R, self._seg_t, self._seg_axis, self._seg_prismatic, self._tail_R, self._tail_t,
            self.lower, self.upper,
        )


@njit(cache=True)
def _rot(axis, a):
    c, s = math.cos(a), math.sin(a)
    x, y, z = axis[0], axis[1], axis[2]
    C = 1.0 - c
    M = np.empty((3, 3))
    M[0, 0] = c + x * x * C
    M[0, 1] = x * y * C - z * s
    M[0, 2] = x * z * C + y * s
    M[1, 0] = y * x * C + z * s
    M[1, 1] = c + y * y * C
    M[1, 2] = y * z * C - x * s
    M[2, 0] = z * x * C - y * s
    M[2, 1] = z * y * C + x * s
    M[2, 2] = c + z * z * C
    return M


@njit(cache=True)
def _mm(A, B):
    n, k = A.shape
    m = B.shape[1]
    C = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            s = 0.0
            for t in range(k):
                s += A[i, t] * B[t, j]
            C[i, j] = s
    return C


@njit(cache=True)
def _mv(A, v):
    n, k = A.shape
    out = np.zeros(n)
    for i in range(n):
        s = 0.0
        for t in range(k):
            s += A[i, t] * v[t]
        out[i] = s
    return out


@njit(cache=True)
def _solve(A, b):
    """Gaussian elimination with partial pivoting for the small SPD systems of DLS."""
    n = A.shape[0]
    M = A.copy()
    x = b.copy()
    for c in range(n):
        piv = c
        for r in range(c + 1, n):
            if abs(M[r, c]) > abs(M[piv, c]):
                piv = r
        if piv != c:
            for j in range(n):
                M[c, j], M[piv, j] = M[piv, j], M[c, j]
            x[c], x[piv] = x[piv], x[c]
        for r in range(c + 1, n):
            f = M[r, c] / M[c, c]
            for j in range(c, n):
                M[r, j] -= f * M[c, j]
            x[r] -= f * x[c]
    for r in range(n - 1, -1, -1):
        s = x[r]
        for j in range(r + 1, n):
            s -= M[r, j] * x[j]
        x[r] = s / M[r, r]
    return x


@njit(cache=True)
def _chain_jit(q, seg_R, seg_t, seg_axis, prismatic, tail_R, tail_t):
    n = q.shape[0]
    R = np.eye(3)
    p = np.zeros(3)
    Z = np.empty((n, 3))
    P = np.empty((n, 3))
    for i in range(n):
        p = p + _mv(R, seg_t[i])
        R = _mm(R, seg_R[i])
        z = _mv(R, seg_axis[i])
        Z[i] = z
        P[i] = p
        if prismatic[i]:
            p = p + z * q[i]
        else:
            R = _mm(R, _rot(seg_axis[i], q[i]))
    p = p + _mv(R, tail_t)
    R = _mm(R, tail_R)
    return Z, P, R, p


@njit(cache=True)
def _jacobian_jit(Z, P, p, prismatic):
    n = Z.shape[0]
    J = np.zeros((6, n))
    for i in range(n):
        if prismatic[i]:
            J[0:3, i] = Z[i]
        else:
            d = p - P[i]
            z = Z[i]
            J[0, i] = z[1] * d[2] - z[2] * d[1]
            J[1, i] = z[2] * d[0] - z[0] * d[2]
            J[2, i] = z[0] * d[1] - z[1] * d[0]
            J[3:6, i] = z
    return J


@njit(cache=True)
def _ik_jit(q, tp, tr, use_rot, qr, use_rest, iters, damping, rot_weight, rest_gain,
            seg_R, seg_t, seg_axis, prismatic, tail_R, tail_t, lower, upper):
    n = q.shape[0]
    m = 6 if use_rot else 3
    lam2 = damping * damping
    for _ in range(iters):
        Z, P, R, p = _chain_jit(q, seg_R, seg_t, seg_axis, prismatic, tail_R, tail_t)
        J6 = _jacobian_jit(Z, P, p, prismatic)
        e = np.empty(m)
        e[0:3] = tp - p
        Jw = np.empty((m, n))
        Jw[0:3] = J6[0:3]
        if use_rot:
            eo = np.zeros(3)
            for c in range(3):
                a = R[:, c]
                b = tr[:, c]
                eo[0] += a[1] * b[2] - a[2] * b[1]
                eo[1] += a[2] * b[0] - a[0] * b[2]
                eo[2] += a[0] * b[1] - a[1] * b[0]
            e[3:6] = 0.5 * rot_weight * eo
            Jw[3:6] = rot_weight * J6[3:6]
        JJt = _mm(Jw, Jw.T.copy())
        for i in range(m):
            JJt[i, i] += lam2
        dq = _mv(Jw.T.copy(), _solve(JJt, e))
        if use_rest:
            # null-space projection of the posture pull: r - J^+ J r
            r = qr - q
            Jr = _mv(Jw, r)
            dq = dq + rest_gain * (r - _mv(Jw.T.copy(), _solve(JJt, Jr)))
        q = np.minimum(np.maximum(q + dq, lower), upper)
    return q


@njit(cache=True)
def filter_targets_jit(q_target, q_meas, ref, lower, upper, max_step, max_track, ws_low, ws_high,
                       seg_R, seg_t, seg_axis, prismatic, tail_R, tail_t, p_meas):
    """The safety filter's arithmetic in one compiled pass (see runtime.control.SafetyFilter).

    Returns (filtered targets, flags): bit 0 = clipped to joint limits, bit 1 = cut by the per-tick
    step or tracking bound, bit 2 = the hand (FK of the result) is outside the workspace box and no
    nearer to it than the measured hand ``p_meas``. A hand already outside (pushed, or carried by its
    own momentum) may always move back towards the box: refusing that would hold it outside for good.
    """
    n = q_target.shape[0]
    q = np.empty(n)
    flags = 0
    for i in range(n):
        v = min(max(q_target[i], lower[i]), upper[i])
        if v != q_target[i]:
            flags |= 1
        w = min(max(v, ref[i] - max_step), ref[i] + max_step)
        w = min(max(w, q_meas[i] - max_track), q_meas[i] + max_track)
        w = min(max(w, lower[i]), upper[i])
        if w != v:
            flags |= 2
        q[i] = w
    _, _, _, p = _chain_jit(q, seg_R, seg_t, seg_axis, prismatic, tail_R, tail_t)
    out_t = 0.0  # squared distance of the target hand from the box, and of the measured hand
    out_m = 0.0
    for k in range(3):
        e = max(ws_low[k] - p[k], 0.0) + max(p[k] - ws_high[k], 0.0)
        out_t += e * e
        e = max(ws_low[k] - p_meas[k], 0.0) + max(p_meas[k] - ws_high[k], 0.0)
        out_m += e * e
    if out_t > 0.0 and out_t >= out_m:
        flags |= 4
    return q, flags


@njit(cache=True)
def ee_delta_targets_jit(action, q_meas, ee_meas, ref, ws, jl, consts, iters, target_rot, q_rest,
                         seg_R, seg_t, seg_axis, prismatic, tail_R, tail_t):
    """An ee_delta action to filtered joint targets in one compiled call (the control tick's hot path):
    :meth:`runtime.control.ActionMapper.map` (the hand target, boxed to the workspace, then DLS IK) and
    :func:`filter_targets_jit`, with the same arithmetic in the same order as those two, minus the Python
    between them.

    ``ws`` rows: the mapper's box (low, high), the filter's box (low, high, tolerance included). ``jl`` rows:
    the URDF limits (lower, upper), the filter's (margin included). ``consts``: max_ee_step, max_joint_step,
    max_tracking_error, IK damping, rotation weight, rest gain. Returns (targets, flags): bits 0-2 as
    :func:`filter_targets_jit`; bit 3: the IK's targets are not finite (nothing filtered); bit 4: the hand
    target was clipped to the workspace box.
    """
    target = np.empty(3)
    boxed = 0
    for k in range(3):
        a = min(max(action[k], -1.0), 1.0)
        t = ee_meas[k] + a * consts[0]
        b = min(max(t, ws[0, k]), ws[1, k])
        if b != t:
            boxed = 16
        target[k] = b
    q = _ik_jit(q_meas.copy(), target, target_rot, True, q_rest, True, iters, consts[3], consts[4], consts[5],
                seg_R, seg_t, seg_axis, prismatic, tail_R, tail_t, jl[0], jl[1])
    for i in range(q.shape[0]):
        if not np.isfinite(q[i]):
            return q, 8 | boxed
    q2, flags = filter_targets_jit(q, q_meas, ref, jl[2], jl[3], consts[1], consts[2], ws[2], ws[3],
                                   seg_R, seg_t, seg_axis, prismatic, tail_R, tail_t, ee_meas)
    return q2, flags | boxed
