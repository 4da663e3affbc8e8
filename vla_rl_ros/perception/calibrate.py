"""Camera -> base extrinsic by hand-eye calibration (eye-to-hand: camera fixed, marker on the gripper; no ROS).

The arm holds an ArUco marker rigidly (taped to the hand, or the marked cube in its gripper) and is moved
to N poses; at each one the gripper's pose in the base frame comes from forward kinematics of the joint
positions (:class:`~vla_rl_ros.kinematics.Kinematics`), and the marker's pose in the camera's optical frame
from the image (:class:`~vla_rl_ros.perception.aruco.MarkerPoseEstimator`). ``cv2.calibrateHandEye`` then
solves for the camera's pose in the base frame (:func:`solve_eye_to_hand`; eye-to-hand is OpenCV's eye-in-hand
problem given the base's pose in the gripper instead of the gripper's in the base). The marker's pose on the
hand is not needed: it is the other unknown, and how constant it comes out over the N poses
(:func:`consistency`) says how good the solution is without knowing the answer.

:func:`twin_samples` runs the procedure in the twin (a marker plate fixed to the hand, random postures around
home, 640x480 frames), so the solution can be checked against the twin camera's known pose.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

METHODS = ("TSAI", "PARK", "HORAUD", "ANDREFF", "DANIILIDIS")
#: the marker estimator of the calibration: poses in the camera's frame, the flip decided by the error alone (a held
#: marker has no "up"), flagged ambiguous when IPPE's two poses are within a factor 2 in error
CALIBRATION_MARKER = dict(center_offset=0.0, up_prior=None, ambiguity_ratio=0.5, ambiguity_px=0.0)


@dataclass
class Sample:
    """One pose of the arm: its joint positions, the gripper's pose in the base frame, the marker's in the camera."""

    joints: np.ndarray
    base_ee: np.ndarray  # (4, 4)
    camera_marker: np.ndarray  # (4, 4)
    corners: np.ndarray | None = None  # (4, 2) px: the marker's image corners, for :func:`refine`
    ambiguous: bool = False  # PnP's two poses of the marker were close (the tilt flip): kept out of the hand-eye
    # solve, used by :func:`refine` (which reads corners, not poses)


def hand_eye(samples: list[Sample], method: str = "PARK") -> np.ndarray:
    """:func:`solve_eye_to_hand` on the samples whose marker pose is unambiguous (all, if fewer than 3 are)."""
    sure = [s for s in samples if not s.ambiguous]
    use = sure if len(sure) >= 3 else samples
    return solve_eye_to_hand([s.base_ee for s in use], [s.camera_marker for s in use], method)


def _inv(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def solve_eye_to_hand(base_ee: list[np.ndarray], camera_marker: list[np.ndarray], method: str = "PARK") -> np.ndarray:
    """The camera's optical frame in the base frame (4x4) from N >= 3 pairs (gripper in base, marker in camera)."""
    import cv2

    if len(base_ee) != len(camera_marker) or len(base_ee) < 3:
        raise ValueError(f"hand-eye calibration needs at least 3 pairs of poses, got {len(base_ee)} and "
                         f"{len(camera_marker)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    ee_base = [_inv(T) for T in base_ee]  # eye-to-hand: the base in the gripper stands for the gripper in the base
    R, t = cv2.calibrateHandEye([T[:3, :3] for T in ee_base], [T[:3, 3] for T in ee_base],
                                [T[:3, :3] for T in camera_marker], [T[:3, 3] for T in camera_marker],
                                method=getattr(cv2, f"CALIB_HAND_EYE_{method}"))
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, np.asarray(t, dtype=float).ravel()
    if not np.all(np.isfinite(T)):
        raise ValueError("hand-eye calibration failed (poses without enough rotation between them?)")
    return T


def refine(base_camera: np.ndarray, samples: list[Sample], K, marker_size: float, dist=None,
           iterations: int = 30) -> tuple[np.ndarray, float, float]:
    """Bundle adjustment of the hand-eye solution: the camera's pose in the base and the marker's on the hand
    (12 numbers) by Levenberg-Marquardt on the marker corners' reprojection error over every sample (the
    hand-eye solvers only see each sample's PnP pose, whose depth is the noisiest part of it).

    Returns (the camera's pose in the base, RMS reprojection px before, after)."""
    import cv2

    from .aruco import marker_object_points

    K = np.asarray(K, dtype=float).reshape(3, 3)
    dist = np.zeros(5) if dist is None else np.asarray(dist, dtype=float)
    used = [s for s in samples if s.corners is not None]
    if len(used) < 3:
        raise ValueError("refine needs at least 3 samples with their marker corners")
    obj = marker_object_points(marker_size)
    seen = np.concatenate([np.asarray(s.corners, dtype=float).reshape(4, 2) for s in used]).ravel()
    ee_marker0 = np.mean([(_inv(s.base_ee) @ base_camera @ s.camera_marker)[:3, 3] for s in used], axis=0)
    R_em = _mean_rotation([(_inv(s.base_ee) @ base_camera @ s.camera_marker)[:3, :3] for s in used])
    x = np.concatenate([cv2.Rodrigues(base_camera[:3, :3])[0].ravel(), base_camera[:3, 3],
                        cv2.Rodrigues(R_em)[0].ravel(), ee_marker0])

    def unpack(x):
        Tbc, Tem = np.eye(4), np.eye(4)
        Tbc[:3, :3], Tbc[:3, 3] = cv2.Rodrigues(x[:3])[0], x[3:6]
        Tem[:3, :3], Tem[:3, 3] = cv2.Rodrigues(x[6:9])[0], x[9:12]
        return Tbc, Tem

    def residual(x):
        Tbc, Tem = unpack(x)
        Tcb = _inv(Tbc)
        out = []
        for s in used:
            Tcm = Tcb @ s.base_ee @ Tem
            uv, _ = cv2.projectPoints(obj, cv2.Rodrigues(Tcm[:3, :3])[0], Tcm[:3, 3], K, dist)
            out.append(uv.reshape(-1))
        return np.concatenate(out) - seen

    r = residual(x)
    rms0 = float(np.sqrt(np.mean(r ** 2)))
    lam = 1e-3
    for _ in range(iterations):
        J = np.empty((r.size, x.size))
        for i in range(x.size):  # forward differences: 1e-6 rad / m
            dx = np.zeros_like(x)
            dx[i] = 1e-6
            J[:, i] = (residual(x + dx) - r) / 1e-6
        A, g = J.T @ J, J.T @ r
        while True:
            step = np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-12), -g)
            r_new = residual(x + step)
            if r_new @ r_new < r @ r:
                x, r, lam = x + step, r_new, max(lam / 3.0, 1e-9)
                break
            lam *= 4.0
            if lam > 1e6:
                break
        if lam > 1e6 or np.abs(step).max() < 1e-9:
            break
    return unpack(x)[0], rms0, float(np.sqrt(np.mean(r ** 2)))


def calibrate(samples: list[Sample], K, marker_size: float, dist=None, method: str = "PARK"
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """The camera's pose in the base: :func:`refine` started from OpenCV's hand-eye solutions (``method`` on
    the unambiguous samples, and on all of them), keeping the one with the least reprojection error.

    Returns (the refined pose, the hand-eye solution it started from, its RMS reprojection px)."""
    sure = [s for s in samples if not s.ambiguous]
    starts = [solve_eye_to_hand([s.base_ee for s in use], [s.camera_marker for s in use], method)
              for use in ([sure] if len(sure) >= 3 else []) + [samples]]
    best = None
    for T0 in starts:
        T, _, rms = refine(T0, samples, K, marker_size, dist)
        if best is None or rms < best[2]:
            best = (T, T0, rms)
    return best


def _mean_rotation(Rs) -> np.ndarray:
    U, _, Vt = np.linalg.svd(sum(Rs))
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    return R


def consistency(base_camera: np.ndarray, samples: list[Sample]) -> dict:
    """How constant the marker's pose on the hand comes out under ``base_camera``: the spread of its position
    (m, RMS about the mean) and orientation (deg, RMS angle to the mean's rotation) over the samples."""
    ee_marker = [_inv(s.base_ee) @ base_camera @ s.camera_marker for s in samples]
    p = np.array([T[:3, 3] for T in ee_marker])
    R_mean = _mean_rotation([T[:3, :3] for T in ee_marker])
    ang = [rotation_angle(R_mean.T @ T[:3, :3]) for T in ee_marker]
    return {"position_rms_m": float(np.sqrt(((p - p.mean(axis=0)) ** 2).sum(axis=1).mean())),
            "rotation_rms_deg": float(math.degrees(np.sqrt(np.mean(np.square(ang))))),
            "marker_on_hand_xyz": [float(v) for v in p.mean(axis=0)]}


def rotation_angle(R: np.ndarray) -> float:
    """The angle (rad) of the rotation ``R``."""
    return float(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0))))


def pose_error(A: np.ndarray, B: np.ndarray) -> tuple[float, float]:
    """(position error m, rotation error deg) between two 4x4 poses."""
    return float(np.linalg.norm(A[:3, 3] - B[:3, 3])), float(math.degrees(rotation_angle(A[:3, :3].T @ B[:3, :3])))


def extrinsic_yaml(base_camera: np.ndarray, comment: str = "") -> str:
    """The ``perception_node`` section that sets the extrinsic (paste it into the robot's params file)."""
    from .aruco import extrinsic_to_xyzquat

    xyz, q = extrinsic_to_xyzquat(base_camera)
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return (f"{head}perception_node:\n  ros__parameters:\n    extrinsic_from_scene: false\n"
            f"    camera_xyz: [{', '.join(f'{v:.5f}' for v in xyz)}]\n"
            f"    camera_quat: [{', '.join(f'{v:.6f}' for v in q)}]  # x, y, z, w\n")


# ---------------------------------------------------------------------------------------------- the twin
def twin_samples(n: int = 20, seed: int = 0, width: int = 640, height: int = 480, marker_size: float = 0.06,
                 spread_rad: float = 0.3, arm=None, frames_dir: str | None = None, gap=None
                 ) -> tuple[list[Sample], np.ndarray, int]:
    """The procedure in the twin: a ``marker_size`` ArUco plate (DICT_4X4_50 id 0) fixed to the hand, 9 cm from
    the tool centre point towards the camera and facing it at home; the arm at ``n`` postures of home plus
    uniform noise of ``spread_rad`` per joint (postures whose marker is not found are skipped, up to 4n tries);
    gripper poses from the project's FK of the joint positions, marker poses from the rendered frames.

    ``frames_dir``: also write each used frame there (PNG) with a ``samples.yaml`` in the format of
    :func:`samples_from_file`, as a cell's recording would be. ``gap``: a
    :class:`~vla_rl_ros.twin.gap.RealityGap` whose camera offset moves the twin's camera first (the sim's "real"
    camera, which the params file's nominal pose does not know).

    Returns (samples, the twin camera's true extrinsic, postures tried)."""
    import pybullet as pb

    from ..arm import Arm
    from ..kinematics import Kinematics
    from ..nodes._camera import intrinsics
    from ..spec import Spec
    from ..twin.core import MarkerSpec, TwinCore, _marker_plate
    from .aruco import MarkerConfig, MarkerPoseEstimator, camera_matrix, extrinsic_from_look_at, twin_extrinsic

    arm = arm or Arm(spec=Spec())
    spec = arm.spec
    twin = TwinCore(spec, urdf_path=arm.urdf_path, scene=arm.scene, home=arm.home)
    try:
        if gap is not None:
            twin.scene.camera_eye, twin.scene.camera_target = gap.camera(twin.scene.camera_eye, twin.scene.camera_target)
        c = twin.cid
        pb.resetBasePositionAndOrientation(twin.cube, [2.0, 2.0, -1.0], [0, 0, 0, 1], physicsClientId=c)  # away
        kin = Kinematics(twin.urdf_path, spec.base_link, spec.ee_link, spec.arm_joints)
        truth = twin_extrinsic(twin.scene)
        est = MarkerPoseEstimator(MarkerConfig(marker_size=marker_size, **CALIBRATION_MARKER),
                                  camera_matrix(*intrinsics(width, height)), np.eye(4))
        plate = _marker_plate(MarkerSpec(size=marker_size), marker_size / 2 + 0.01, c)
        # the marker on the hand: placed at home, towards the camera and facing it; fixed in the ee frame
        home_ee = kin.fk(twin.home)
        eye = np.asarray(twin.scene.camera_eye, dtype=float)
        p = home_ee[:3, 3] + 0.09 * _unit(np.r_[(eye - home_ee[:3, 3])[:2], 0.0])
        T_base_plate = extrinsic_from_look_at(p, 2 * p - eye)  # z away from the camera ...
        T_base_plate[:3, 0] *= -1.0  # ... turned about y: z (the marker's normal) towards it, a right-handed frame
        T_base_plate[:3, 2] *= -1.0
        T_ee_plate = _inv(home_ee) @ T_base_plate
        rng = np.random.default_rng(seed)
        samples, tried = [], 0
        while len(samples) < n and tried < 4 * n:
            tried += 1
            q = np.clip(twin.home + rng.uniform(-spread_rad, spread_rad, len(twin.home)), twin.arm_lower, twin.arm_upper)
            for j, v in zip(twin.arm_idx, q):
                pb.resetJointState(twin.robot, j, float(v), 0.0, physicsClientId=c)
            ls = pb.getLinkState(twin.robot, twin.ee_idx, computeForwardKinematics=True, physicsClientId=c)
            T_pb = np.eye(4)  # the twin's own ee pose places the plate; the solver gets the project's FK
            T_pb[:3, :3] = np.array(pb.getMatrixFromQuaternion(ls[5])).reshape(3, 3)
            T_pb[:3, 3] = ls[4]
            T_plate = T_pb @ T_ee_plate
            pb.resetBasePositionAndOrientation(plate, T_plate[:3, 3].tolist(), _quat(T_plate[:3, :3]).tolist(),
                                               physicsClientId=c)
            frame = twin.render(width, height)
            corners = est.detect(frame)
            sol = est.marker_in_camera(corners) if corners is not None else None
            if sol is None:
                continue
            samples.append(Sample(joints=q, base_ee=kin.fk(q), camera_marker=sol[0], corners=corners, ambiguous=sol[2]))
            if frames_dir:
                _save_frame(frames_dir, len(samples) - 1, frame, q, est.K, marker_size)
        return samples, truth, tried
    finally:
        twin.close()


@dataclass
class TwinCalibration:
    """:func:`calibrate_twin_camera`'s answer: the solved extrinsic and how far it is from the truth."""

    extrinsic: np.ndarray  # (4, 4) the camera's optical frame in the base frame, as solved
    truth: np.ndarray  # (4, 4) the twin camera's real pose (moved by the gap)
    nominal: np.ndarray  # (4, 4) the scene's camera pose, which the params file assumes
    samples: int
    reprojection_px: float

    @property
    def error(self) -> tuple[float, float]:
        """(m, deg) of the solution from the camera's real pose."""
        return pose_error(self.extrinsic, self.truth)

    @property
    def nominal_error(self) -> tuple[float, float]:
        """(m, deg) of the nominal pose from the real one: what an uncalibrated extrinsic would be off by."""
        return pose_error(self.nominal, self.truth)


def calibrate_twin_camera(arm=None, gap=None, n: int = 20, seed: int = 0, method: str = "PARK") -> TwinCalibration:
    """The whole procedure in the twin (:func:`twin_samples` then :func:`calibrate`) for the camera a reality
    ``gap`` moved: what a user does on a real cell before running perception, done for ``vla-rl-ros sim``."""
    from ..nodes._camera import intrinsics
    from .aruco import camera_matrix, twin_extrinsic

    size = 0.06
    samples, truth, _ = twin_samples(n, seed=seed, marker_size=size, arm=arm, gap=gap)
    if len(samples) < 3:
        raise RuntimeError(f"the hand's marker was seen at {len(samples)} postures; at least 3 are needed")
    T, _, rms = calibrate(samples, camera_matrix(*intrinsics(640, 480)), size, None, method)
    nominal = twin_extrinsic(arm.scene if arm is not None else None)
    return TwinCalibration(extrinsic=T, truth=truth, nominal=nominal, samples=len(samples), reprojection_px=float(rms))


def _save_frame(frames_dir: str, i: int, frame: np.ndarray, q: np.ndarray, K: np.ndarray, size: float) -> None:
    import os

    import cv2
    import yaml

    os.makedirs(frames_dir, exist_ok=True)
    name = f"{i:03d}.png"
    cv2.imwrite(os.path.join(frames_dir, name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    path = os.path.join(frames_dir, "samples.yaml")
    doc = {"intrinsics": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])],
           "marker": {"dictionary": "DICT_4X4_50", "id": 0, "size": float(size)}, "samples": []}
    if i > 0 and os.path.isfile(path):
        with open(path) as f:
            doc = yaml.safe_load(f)
    doc["samples"].append({"joints": [float(v) for v in q], "image": name})
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _quat(R: np.ndarray) -> np.ndarray:
    from .aruco import matrix_to_quat

    return matrix_to_quat(R)


# ---------------------------------------------------------------------------------------------- recorded samples
def samples_from_file(path: str, arm) -> tuple[list[Sample], np.ndarray, np.ndarray, dict]:
    """Samples recorded on a cell, from a YAML file::

        intrinsics: [fx, fy, cx, cy]      # the camera's CameraInfo K
        distortion: [k1, k2, p1, p2, k3]  # its D (optional)
        marker: {dictionary: DICT_4X4_50, id: 0, size: 0.06}
        samples:
          - {joints: [q1, ..., qn], image: frames/000.png}   # arm joints in the spec's order; image relative to
          - ...                                              # the file (PNG/JPEG, as cv2.imread reads it)

    The gripper's poses come from ``arm``'s FK (:class:`~vla_rl_ros.arm.Arm`: URDF, base and ee links, joints),
    the marker's from the images; an image without the marker is skipped. Returns (samples, K, D, marker)."""
    import os

    import cv2
    import yaml

    from ..kinematics import Kinematics
    from .aruco import MarkerConfig, MarkerPoseEstimator, camera_matrix

    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    try:
        K = camera_matrix(*[float(v) for v in doc["intrinsics"]])
        dist = np.asarray(doc.get("distortion") or [0.0] * 5, dtype=float)
        marker = dict(doc["marker"])
        rows = list(doc["samples"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: needs intrinsics [fx, fy, cx, cy], marker {{dictionary, id, size}} and "
                         f"samples [{{joints, image}}] ({e!r})") from e
    spec = arm.spec
    kin = Kinematics(arm.urdf, spec.base_link, spec.ee_link, spec.arm_joints)
    est = MarkerPoseEstimator(MarkerConfig(dictionary=marker.get("dictionary", "DICT_4X4_50"),
                                           marker_id=int(marker.get("id", 0)), marker_size=float(marker["size"]),
                                           **CALIBRATION_MARKER), K, np.eye(4), dist)
    out = []
    for i, row in enumerate(rows):
        q = np.asarray(row["joints"], dtype=float)
        if q.shape != (spec.n_arm,):
            raise ValueError(f"{path}: sample {i} has {q.size} joints, the arm {spec.n_arm} ({list(spec.arm_joints)})")
        img_path = os.path.join(os.path.dirname(os.path.abspath(path)), row["image"])
        img = cv2.imread(img_path, cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FileNotFoundError(f"{path}: sample {i}: cannot read image {img_path}")
        corners = est.detect(img)
        sol = est.marker_in_camera(corners) if corners is not None else None
        if sol is not None:
            out.append(Sample(joints=q, base_ee=kin.fk(q), camera_marker=sol[0], corners=corners, ambiguous=sol[2]))
    return out, K, dist, marker
