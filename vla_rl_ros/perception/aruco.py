"""Camera frame -> object pose in the base frame, from an ArUco marker on the object (OpenCV; no ROS inside).

The pipeline, one frame at a time (:meth:`MarkerPoseEstimator.estimate`):

1. detect the configured markers (a dictionary; one id on the object's top face, and optionally one on each
   side face, upright: the hand hides the top while it holds the object) with ``cv2.aruco.ArucoDetector``,
   corners refined to sub-pixel; the top marker's pose is used when it gives one, else the surest side's;
2. its pose in the camera's optical frame (x right, y down, z forward) with ``cv2.solvePnPGeneric``
   (``SOLVEPNP_IPPE_SQUARE``), from the intrinsics (``fx, fy, cx, cy``: a ``CameraInfo``'s ``K``). IPPE
   gives the two poses a small square cannot tell apart (the tilt "flip"); where their reprojection errors
   are close (:attr:`MarkerConfig.ambiguity_ratio`) or both small (:attr:`MarkerConfig.ambiguity_px`: a
   15 px marker's two poses often both reproject within 0.3 px), the one whose normal is closer to the base frame's
   ``up_prior`` is taken for the object's z axis (an object on a table, or in a hand, stands upright);
3. into the base frame through the camera->base extrinsic (a 4x4, :func:`extrinsic_from_look_at` or
   :func:`extrinsic_from_xyzquat`), and from the marker's centre to the object's centre:
   :attr:`MarkerConfig.center_offset` metres into the object along the marker's normal (half a cube's
   side, for a marker on any of its faces);
4. the object's orientation from the marker's and its face's rotation (:func:`face_rotation`), its yaw from
   the object's x axis, and a first-order position covariance
   (lateral: the corner noise over the focal length; along the ray: the marker's apparent size).

It returns ``None`` when it is unsure: marker not found, smaller than ``min_side_px``, reprojection error
over ``max_reprojection_px``, predicted position standard deviation over ``max_position_std_m``, or a marker
seen nearly edge-on (``max_view_angle_deg``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DICTIONARIES = ("DICT_4X4_50", "DICT_4X4_100", "DICT_5X5_50", "DICT_5X5_100", "DICT_6X6_50", "DICT_6X6_250",
                "DICT_ARUCO_ORIGINAL", "DICT_APRILTAG_16h5", "DICT_APRILTAG_36h11")


@dataclass(frozen=True)
class MarkerConfig:
    """The marker and the thresholds below which a detection is dropped."""

    dictionary: str = "DICT_4X4_50"
    marker_id: int = 0  # on the object's top face
    marker_size: float = 0.045  # m: side of the black square (the twin's cube: 4.5 cm on its 5 cm top face)
    side_ids: tuple = ()  # ids of markers on the side faces +x, +y, -x, -y (as many as there are; -1: none)
    center_offset: float = 0.025  # m from the marker's centre into the object, along its normal (cube: half height)
    min_side_px: float = 8.0  # shorter side of the marker in the image
    max_reprojection_px: float = 1.5  # RMS reprojection error of the chosen pose
    max_position_std_m: float = 0.02  # largest predicted position standard deviation
    max_view_angle_deg: float = 80.0  # angle between the marker's normal and the line of sight
    ambiguity_ratio: float = 0.8  # IPPE's two poses closer than this in error ratio ...
    ambiguity_px: float = 0.5  # ... or both within this RMS reprojection error (px): the up_prior decides
    up_prior: tuple | None = (0.0, 0.0, 1.0)  # base frame: where the marker's normal most likely points;
    # None: always the pose of least error (the flag `ambiguous` still says when the two were close)
    corner_noise_px: float = 0.3  # floor of the corner noise used for the covariance
    refine_shift_frac: float = 0.2  # the refined corners may move max(2 px, this x the marker's side) from the
    # first pass's (sub-pixel corners of a 15-20 px marker seen at a slant are often 2-3 px off)

    def __post_init__(self):
        if self.dictionary not in DICTIONARIES:
            raise ValueError(f"marker dictionary {self.dictionary!r} is not one of {DICTIONARIES}")
        if not self.marker_size > 0:
            raise ValueError(f"marker_size must be > 0 m, got {self.marker_size}")
        if len(self.side_ids) > 4:
            raise ValueError(f"side_ids: at most 4 (faces +x, +y, -x, -y), got {list(self.side_ids)}")
        ids = [i for i in (self.marker_id, *self.side_ids) if i >= 0]
        if len(set(ids)) != len(ids):
            raise ValueError(f"marker ids must differ, got top {self.marker_id} and sides {list(self.side_ids)}")

    def faces(self) -> dict[int, np.ndarray]:
        """{marker id: its face's rotation in the object's frame} (:func:`face_rotation`)."""
        out = {self.marker_id: face_rotation("top")} if self.marker_id >= 0 else {}
        for i, face in zip(self.side_ids, SIDE_FACES):
            if i >= 0:
                out[int(i)] = face_rotation(face)
        return out


SIDE_FACES = ("+x", "+y", "-x", "-y")


def face_rotation(face: str) -> np.ndarray:
    """The marker frame (x right and y up in the marker image, z out of the face) of a face of a box, in the
    object's frame: ``top`` is the identity; on a side face the marker stands upright (its y along the object's
    z), its z along the face's outward normal."""
    if face == "top":
        return np.eye(3)
    normals = {"+x": (1.0, 0.0, 0.0), "+y": (0.0, 1.0, 0.0), "-x": (-1.0, 0.0, 0.0), "-y": (0.0, -1.0, 0.0)}
    if face not in normals:
        raise ValueError(f"face must be top or one of {SIDE_FACES}, got {face!r}")
    z = np.array(normals[face])
    y = np.array([0.0, 0.0, 1.0])
    return np.column_stack([np.cross(y, z), y, z])


@dataclass
class ObjectPose:
    """One estimate: the object's centre and yaw in the base frame, and how sure it is."""

    position: np.ndarray  # (3,) m, base frame
    quaternion: np.ndarray  # (4,) x, y, z, w: the object's orientation in the base frame (from its marker's)
    yaw: float  # rad: the object's x axis about the base z axis
    covariance: np.ndarray  # (3, 3) m^2, base frame (first-order, from the corner noise)
    reprojection_px: float  # RMS, of the chosen pose
    side_px: float  # shorter side of the marker in the image
    ambiguous: bool  # IPPE's two poses were close and the up prior chose
    marker_in_camera: np.ndarray  # (4, 4) the marker's pose in the camera's optical frame
    marker_id: int = 0  # the marker it came from (the surest of those seen)

    @property
    def position_std(self) -> float:
        """The largest predicted position standard deviation (m)."""
        return float(math.sqrt(max(np.linalg.eigvalsh(self.covariance).max(), 0.0)))

    @property
    def confidence(self) -> float:
        """A score in (0, 1]: 1 / (1 + (position_std / 5 mm)^2); 0.5 at a predicted 5 mm."""
        return 1.0 / (1.0 + (self.position_std / 0.005) ** 2)


# ---------------------------------------------------------------------------------------------- geometry
def camera_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def quat_to_matrix(q) -> np.ndarray:
    x, y, z, w = (float(v) for v in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not n > 1e-12:
        raise ValueError(f"zero quaternion {list(q)}")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """(x, y, z, w) of a rotation matrix (Shepperd's method), w >= 0."""
    R = np.asarray(R, dtype=float)
    t = np.trace(R)
    if t > 0:
        s = 2.0 * math.sqrt(t + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + R[i, i] - R[j, j] - R[k, k], 1e-12))
        q = [0.0, 0.0, 0.0, (R[k, j] - R[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
    q = np.array(q)
    return q if q[3] >= 0 else -q


def extrinsic_from_xyzquat(xyz, quat) -> np.ndarray:
    """The camera's optical frame in the base frame (4x4) from its position and ``(x, y, z, w)`` quaternion."""
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(quat)
    T[:3, 3] = np.asarray(xyz, dtype=float)
    return T


def extrinsic_to_xyzquat(T: np.ndarray) -> tuple[list[float], list[float]]:
    return [float(v) for v in T[:3, 3]], [float(v) for v in matrix_to_quat(T[:3, :3])]


def extrinsic_from_look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """The optical frame (x right, y down, z forward) in the base frame of a camera at ``eye`` looking at
    ``target`` with ``up`` up in the image: what ``pybullet.computeViewMatrix(eye, target, up)`` renders,
    so the twin's camera (``scene.camera_eye`` / ``camera_target``) has this extrinsic."""
    eye, target, up = (np.asarray(v, dtype=float) for v in (eye, target, up))
    f = target - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    if np.linalg.norm(r) < 1e-9:
        raise ValueError("camera looks along its up vector")
    r /= np.linalg.norm(r)
    u = np.cross(r, f)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = r, -u, f, eye
    return T


def twin_extrinsic(scene=None) -> np.ndarray:
    """The twin's camera extrinsic, from its scene's ``camera.eye`` / ``camera.target`` (``scene``: a
    :class:`~vla_rl_ros.twin.core.Scene`, a scene YAML path, or None for ``sim/panda_table.yaml``)."""
    from ..twin.core import Scene

    sc = scene if isinstance(scene, Scene) else Scene.load(scene)
    return extrinsic_from_look_at(sc.camera_eye, sc.camera_target)


def yaw_of(R: np.ndarray) -> float:
    """Angle of ``R``'s x axis about the base z axis (rad, in (-pi, pi])."""
    return float(math.atan2(R[1, 0], R[0, 0]))


def angle_diff(a: float, b: float) -> float:
    """``a - b`` wrapped into (-pi, pi]."""
    return float((a - b + math.pi) % (2.0 * math.pi) - math.pi)


# ---------------------------------------------------------------------------------------------- estimator
def _detector(dictionary: str, refinement: str):
    import cv2

    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = getattr(cv2.aruco, f"CORNER_REFINE_{refinement}")
    if refinement == "SUBPIX":
        params.cornerRefinementWinSize = 3  # small markers: a window larger than a cell pulls corners off
    return cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary)), params)


def marker_object_points(size: float) -> np.ndarray:
    """The marker's corners in its own frame (centre origin, z out of the face), in ArUco's order: top-left,
    top-right, bottom-right, bottom-left as the marker image is drawn (x right, y up on the face)."""
    h = size / 2.0
    return np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0], [-h, -h, 0.0]], dtype=np.float64)


class MarkerPoseEstimator:
    """Detects one marker in RGB (or grey) frames and returns the object's pose in the base frame."""

    def __init__(self, config: MarkerConfig, K, T_base_camera, dist=None):
        self.config = config
        self.set_camera(K, dist)
        self.T_base_camera = np.asarray(T_base_camera, dtype=float).reshape(4, 4)
        # Two passes: find the marker in the whole frame (sub-pixel corners, ~2 ms at 640x480), then refine its
        # corners in a crop around it with the AprilTag method (edges fitted along each side: 3-5x less depth
        # error on a marker 15-25 px wide than corner refinement; ~30 ms on a whole 640x480 frame, ~1 ms on a crop)
        self._find = _detector(config.dictionary, "SUBPIX")
        self._refine = _detector(config.dictionary, "APRILTAG")
        self._obj = marker_object_points(config.marker_size)
        up = config.up_prior if config.up_prior is not None else (0.0, 0.0, 1.0)
        self._up = np.asarray(up, dtype=float) / max(float(np.linalg.norm(up)), 1e-12)
        self._faces = config.faces()

    def set_camera(self, K, dist=None) -> None:
        """New intrinsics (``K`` 3x3 or 9 values, ``dist`` the distortion coefficients; None or zeros: none)."""
        K = np.asarray(K, dtype=float).reshape(3, 3)
        if not (K[0, 0] > 0 and K[1, 1] > 0 and np.all(np.isfinite(K))):
            raise ValueError(f"invalid camera matrix {K.ravel().tolist()}")
        self.K = K
        d = np.zeros(5) if dist is None or len(dist) == 0 else np.asarray(dist, dtype=float).ravel()
        self.dist = d

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """The top marker's (or the first configured marker's) four image corners (4, 2), or None."""
        found = self.detect_all(image)
        return next(iter(found.values()), None)

    def detect_all(self, image: np.ndarray) -> dict[int, np.ndarray]:
        """{marker id: its four refined image corners (4, 2)} of the configured markers in the frame, in the
        configuration's order (top first)."""
        import cv2

        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        out = {}
        found = self._all(self._find, grey)
        for i in self._faces:
            if i in found:
                refined = self._refined(grey, found[i], i)
                if refined is not None:
                    out[i] = refined
        return out

    def _refined(self, grey: np.ndarray, found: np.ndarray, marker_id: int | None = None) -> np.ndarray | None:
        """The corners refined in a crop (one marker side around it) scaled up 2x, else 3x (the AprilTag
        refinement misses a marker under ~20 px 1 time in 8 at 1x, ~1 in 60 at 2x); None where it loses it."""
        import cv2

        side = float(np.linalg.norm(found - np.roll(found, 1, axis=0), axis=1).max())
        m = max(8.0, side)
        h, w = grey.shape[:2]
        x0, y0 = (int(max(0, np.floor(v - m))) for v in found.min(axis=0))
        x1, y1 = int(min(w, np.ceil(found[:, 0].max() + m))), int(min(h, np.ceil(found[:, 1].max() + m)))
        for k in (2.0, 3.0):
            crop = cv2.resize(grey[y0:y1, x0:x1], None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)
            refined = self._all(self._refine, crop).get(self.config.marker_id if marker_id is None else marker_id)
            if refined is None:
                continue
            refined = (refined + 0.5) / k - 0.5 + (x0, y0)  # pixel centres of the scaled crop -> the frame's
            if np.abs(refined - found).max() <= max(2.0, self.config.refine_shift_frac * side):  # else another
                # copy of the marker, or corners moved too far
                return refined
        return None

    def _all(self, detector, grey: np.ndarray) -> dict[int, np.ndarray]:
        corners, ids, _ = detector.detectMarkers(grey)
        out: dict[int, np.ndarray] = {}
        for c, i in zip(corners, ids.ravel() if ids is not None else ()):
            if int(i) in self._faces and int(i) not in out:
                out[int(i)] = c.reshape(4, 2).astype(np.float64)
        return {i: out[i] for i in self._faces if i in out}  # the configuration's order: the top first

    def _first(self, detector, grey: np.ndarray) -> np.ndarray | None:
        return self._all(detector, grey).get(self.config.marker_id)

    def estimate(self, image: np.ndarray) -> ObjectPose | None:
        """The object's pose from its top marker if it gives one, else from the surest of its side markers
        (least predicted position error), or None. The top comes first: in the twin a side marker, seen from
        above at a steeper angle, is less accurate (median 6 mm, against 3 mm for the top)."""
        return self.estimate_why(image)[0]

    def estimate_why(self, image: np.ndarray) -> tuple[ObjectPose | None, str | None]:
        """:meth:`estimate`, and why it gave no pose: ``no marker found``, ``refinement lost them`` or
        ``dropped by a gate``. Side markers are refined only when the top one gives no pose."""
        import cv2

        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        found = self._all(self._find, grey)
        if not found:
            return None, "no marker found"
        refined_any, best = False, None
        for i, f in found.items():  # the top first (the configuration's order)
            c = self._refined(grey, f, i)
            if c is None:
                continue
            refined_any = True
            p = self.pose_from_corners(c, i)
            if p is not None and i == self.config.marker_id:
                return p, None
            if p is not None and (best is None or p.position_std < best.position_std):
                best = p
        if best is not None:
            return best, None
        return None, "dropped by a gate" if refined_any else "refinement lost them"

    def marker_in_camera(self, corners: np.ndarray, face: np.ndarray | None = None
                         ) -> tuple[np.ndarray, float, bool] | None:
        """(4x4 marker pose in the optical frame, RMS reprojection px, ambiguous) from four corners, or None.
        ``face``: the marker's rotation in the object's frame; the up prior is for the object's z axis."""
        import cv2

        try:
            n, rvecs, tvecs, errs = cv2.solvePnPGeneric(self._obj, corners.reshape(4, 1, 2), self.K, self.dist,
                                                         flags=cv2.SOLVEPNP_IPPE_SQUARE)
        except cv2.error:
            return None
        if not n:
            return None
        errs = np.asarray(errs, dtype=float).ravel()
        sols = []
        for rv, tv, e in zip(rvecs, tvecs, errs):
            R, _ = cv2.Rodrigues(rv)
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = R, np.asarray(tv, dtype=float).ravel()
            if T[2, 3] > 0:  # in front of the camera
                sols.append((float(e), T))
        if not sols:
            return None
        sols.sort(key=lambda s: s[0])
        ambiguous = len(sols) > 1 and (sols[0][0] >= self.config.ambiguity_ratio * sols[1][0]
                                       or sols[1][0] <= self.config.ambiguity_px)
        if ambiguous and self.config.up_prior is not None:  # the flip: the object's z most along the prior
            Rb = self.T_base_camera[:3, :3]
            z_in_marker = (face if face is not None else np.eye(3))[2, :]  # the object's z axis, marker frame
            e, T = max(sols[:2], key=lambda s: float(self._up @ (Rb @ s[1][:3, :3] @ z_in_marker)))
        else:
            e, T = sols[0]
        return T, e, ambiguous

    def pose_from_corners(self, corners: np.ndarray, marker_id: int | None = None) -> ObjectPose | None:
        """The object's pose from one marker's corners (``marker_id``: which; default the top one)."""
        cfg = self.config
        marker_id = cfg.marker_id if marker_id is None else marker_id
        face = self._faces.get(marker_id, np.eye(3))
        corners = np.asarray(corners, dtype=np.float64).reshape(4, 2)
        sides = np.linalg.norm(corners - np.roll(corners, 1, axis=0), axis=1)
        side_px = float(sides.min())
        if side_px < cfg.min_side_px:
            return None
        sol = self.marker_in_camera(corners, face)
        if sol is None:
            return None
        T_cm, reproj, ambiguous = sol
        if not reproj <= cfg.max_reprojection_px:
            return None
        t = T_cm[:3, 3]
        depth = float(np.linalg.norm(t))
        cos_view = float(-T_cm[:3, 2] @ t) / depth  # marker normal vs the line of sight (towards the camera)
        if cos_view < math.cos(math.radians(cfg.max_view_angle_deg)):
            return None
        T_bm = self.T_base_camera @ T_cm
        centre = T_bm[:3, 3] - cfg.center_offset * T_bm[:3, 2]  # into the object along the marker's normal
        R = T_bm[:3, :3] @ face.T  # the object's orientation
        cov = self._covariance(T_cm, side_px, reproj, depth)
        if not math.sqrt(max(np.linalg.eigvalsh(cov).max(), 0.0)) <= cfg.max_position_std_m:
            return None
        return ObjectPose(position=centre, quaternion=matrix_to_quat(R), yaw=yaw_of(R), covariance=cov,
                          reprojection_px=float(reproj), side_px=side_px, ambiguous=bool(ambiguous),
                          marker_in_camera=T_cm, marker_id=int(marker_id))

    def _covariance(self, T_cm: np.ndarray, side_px: float, reproj: float, depth: float) -> np.ndarray:
        """First-order position covariance in the base frame: corner noise ``s`` px (the reprojection error,
        at least ``corner_noise_px``) moves the marker ``depth * s / f`` sideways and, through its apparent size
        (``side_px`` across 4 corners), ``depth * s / (side_px * sqrt(2))`` along the line of sight."""
        s = max(reproj, self.config.corner_noise_px)
        f = 0.5 * (self.K[0, 0] + self.K[1, 1])
        lateral = depth * s / f / 2.0  # the centre averages four corners
        along = depth * s / (side_px * math.sqrt(2.0))
        ray = T_cm[:3, 3] / depth
        P = np.eye(3) - np.outer(ray, ray)
        cov_cam = lateral ** 2 * P + along ** 2 * np.outer(ray, ray)
        Rb = self.T_base_camera[:3, :3]
        return Rb @ cov_cam @ Rb.T
