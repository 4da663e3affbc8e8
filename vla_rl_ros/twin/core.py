"""The PyBullet twin of the arm: one core behind the gymnasium env and ``twin_node``.

Scene: a table whose top is the plane z = 0 of the robot base frame, the arm
(Franka Panda from ``pybullet_data`` unless another URDF is given) bolted at the
origin, a 5 cm cube, and a goal marker (visual only). All positions are in the
robot base frame, as a real arm's perception would report them.

The arm is the params file's (vla_rl_ros/arm.py): its URDF (``package://`` meshes
resolved by :mod:`.urdf`), its ``home`` posture (reset), and its gripper through
the spec's gripper model (a width in metres to the gripper joints' positions),
with any URDF joint that ``<mimic>``s a gripper joint driven along (PyBullet
ignores ``<mimic>``).

Joint position control respects the URDF's limits: targets are clipped to
``[lower, upper]``, motors are capped at the URDF ``effort`` and ``velocity``.
Objects and goals are drawn per episode from a seeded generator, so an episode
is reproducible from its seed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pybullet as pb
import pybullet_data

from ..arm import check_home
from ..kinematics import default_panda_urdf
from ..spec import Spec
from .urdf import pybullet_urdf

CUBE_HALF = 0.025
ARM_SHAPES = ("visual", "collision")  # what the camera draws of the arm (TwinCore's arm_shapes)
DEFAULT_SCENE = "sim/panda_table.yaml"


@dataclass
class TaskRegion:
    """Where objects and goals are drawn (robot base frame, metres)."""

    object_low: tuple[float, float] = (0.40, -0.20)
    object_high: tuple[float, float] = (0.65, 0.20)
    goal_low: tuple[float, float, float] = (0.40, -0.20, CUBE_HALF)
    goal_high: tuple[float, float, float] = (0.65, 0.20, 0.15)
    reach_low: tuple[float, float, float] = (0.35, -0.25, 0.08)
    reach_high: tuple[float, float, float] = (0.65, 0.25, 0.40)
    min_object_goal_dist: float = 0.10

    def goals(self, task: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """``(low, high)`` of the goals ``task`` draws (pick_place: ``goal_*``; reach: ``reach_*``)."""
        return (tuple(self.goal_low), tuple(self.goal_high)) if task == "pick_place" else \
            (tuple(self.reach_low), tuple(self.reach_high))


@dataclass(frozen=True)
class MarkerSpec:
    """ArUco markers on the object: ``id`` on its top face, its x axis along the object's x axis (so the
    marker's yaw is the object's), and ``sides`` on the side faces +x, +y, -x, -y (upright: seen while the hand
    holds the object and hides its top). ``size`` m is the black square's side (a printed sticker: it keeps its
    size when the reality gap scales the object), centred on a white face."""

    dictionary: str = "DICT_4X4_50"
    id: int = 0
    size: float = 0.045
    sides: tuple = (1, 2, 3, 4)

    def __post_init__(self):
        object.__setattr__(self, "sides", tuple(int(i) for i in self.sides))


@dataclass
class Scene:
    """The twin's scene (``sim/panda_table.yaml``): fixed bodies, the object, the marker, regions, camera."""

    table_urdf: str = "table/table.urdf"
    table_position: tuple = (0.5, 0.0, -0.625)
    plane_urdf: str = "plane.urdf"
    plane_position: tuple = (0.0, 0.0, -0.625)
    object_urdf: str = "cube_small.urdf"
    object_half_height: float = CUBE_HALF
    object_friction: float = 1.5
    goal_radius: float = 0.02
    goal_rgba: tuple = (0.1, 0.8, 0.1, 0.6)
    region: TaskRegion = field(default_factory=TaskRegion)
    camera_eye: tuple = (1.2, 0.0, 0.6)
    camera_target: tuple = (0.5, 0.0, 0.05)
    camera_fov_deg: float = 55.0
    # an ArUco marker printed on the object's top face (``object.marker``; None = a plain object): seen by the
    # twin's camera, read by perception_node (vla_rl_ros/perception/aruco.py)
    object_marker: "MarkerSpec | None" = field(default_factory=lambda: MarkerSpec())

    @classmethod
    def load(cls, path: str | None = None) -> "Scene":
        """Read a scene YAML (default ``sim/panda_table.yaml``, resolved like every data path)."""
        from ..runtime.paths import resolve_path

        resolved = resolve_path(path or DEFAULT_SCENE)
        if not os.path.isfile(resolved):
            if path:
                raise FileNotFoundError(f"twin scene not found: {path}")
            return cls()  # a bare pip install without the sim/ folder: the built-in defaults (same scene)
        import yaml

        with open(resolved) as f:
            d = yaml.safe_load(f) or {}
        try:
            r = d.get("regions", {})
            region = TaskRegion(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()})
            return cls(
                table_urdf=d["table"]["urdf"], table_position=tuple(d["table"]["position"]),
                plane_urdf=d["plane"]["urdf"], plane_position=tuple(d["plane"]["position"]),
                object_urdf=d["object"]["urdf"], object_half_height=float(d["object"]["half_height"]),
                object_friction=float(d["object"].get("lateral_friction", 1.5)),
                goal_radius=float(d["goal_marker"]["radius"]), goal_rgba=tuple(d["goal_marker"]["rgba"]),
                region=region, camera_eye=tuple(d["camera"]["eye"]), camera_target=tuple(d["camera"]["target"]),
                camera_fov_deg=float(d["camera"]["fov_deg"]),
                object_marker=MarkerSpec(**d["object"]["marker"]) if d["object"].get("marker") else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"twin scene {resolved} is malformed: {e!r}") from e


def load_fixed_bodies(scene: Scene, cid: int) -> tuple[int, int]:
    """The scene's bodies that never move, loaded into client ``cid``: the floor plane and the table; their ids."""
    plane = pb.loadURDF(scene.plane_urdf, list(scene.plane_position), physicsClientId=cid)
    table = pb.loadURDF(scene.table_urdf, list(scene.table_position), useFixedBase=True, physicsClientId=cid)
    return plane, table


def _gripper_mimics(urdf_path: str, gripper_joints, joint_index: dict) -> list[tuple[int, int, float, float]]:
    """``(joint index, gripper joint number, multiplier, offset)`` of every URDF joint that ``<mimic>``s one of
    the gripper joints (PyBullet ignores ``<mimic>``: the twin drives them): a parallel or linkage gripper with
    one actuated joint, as the xArm's, moves as one."""
    import xml.etree.ElementTree as ET

    out = []
    for j in ET.parse(urdf_path).getroot().findall("joint"):
        m = j.find("mimic")
        name = j.get("name")
        if m is None or name in gripper_joints or m.get("joint") not in gripper_joints or name not in joint_index:
            continue
        out.append((joint_index[name], list(gripper_joints).index(m.get("joint")),
                    float(m.get("multiplier", 1.0)), float(m.get("offset", 0.0))))
    return out


def marker_texture(marker: MarkerSpec, face: float, marker_id: int | None = None) -> str:
    """A PNG of ``marker`` centred on a white square of side ``face`` m (the object's top face), written once
    into the temp dir (atomically: several twins may make it at once); its path."""
    import tempfile

    import cv2

    px = 40 * 6  # 6 cells across a 4x4 marker (with its border), 40 px each
    margin = max(0, int(round(px * (face - marker.size) / marker.size / 2.0)))
    d = os.path.join(tempfile.gettempdir(), "vla_rl_ros_textures")
    marker_id = marker.id if marker_id is None else marker_id
    path = os.path.join(d, f"aruco_{marker.dictionary}_{marker_id}_{px}_{margin}.png")
    if not os.path.isfile(path):
        os.makedirs(d, exist_ok=True)
        img = cv2.aruco.generateImageMarker(cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, marker.dictionary)),
                                            int(marker_id), px)
        img = cv2.copyMakeBorder(img, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=255)
        tmp = f"{path}.{os.getpid()}.png"
        cv2.imwrite(tmp, cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
        os.replace(tmp, path)
    return path


def _marker_plate(marker: MarkerSpec, object_half: float, cid: int, marker_id: int | None = None) -> int:
    """A visual-only textured square covering the object's top face (its frame: the object's, at the face)."""
    h = max(object_half, marker.size / 2.0)
    verts = [[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]]
    uvs = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    vis = pb.createVisualShape(pb.GEOM_MESH, vertices=verts, indices=[0, 1, 2, 0, 2, 3], uvs=uvs,
                               normals=[[0.0, 0.0, 1.0]] * 4, physicsClientId=cid)
    body = pb.createMultiBody(baseMass=0, baseCollisionShapeIndex=-1, baseVisualShapeIndex=vis, physicsClientId=cid)
    tex = pb.loadTexture(marker_texture(marker, 2.0 * h, marker_id), physicsClientId=cid)
    pb.changeVisualShape(body, -1, textureUniqueId=tex, rgbaColor=[1, 1, 1, 1], physicsClientId=cid)
    return body


@dataclass
class TwinState:
    q: np.ndarray  # arm joint positions (spec order)
    qd: np.ndarray  # arm joint velocities
    tau: np.ndarray  # arm joint efforts (applied motor torques)
    finger_q: np.ndarray  # finger joint positions
    finger_qd: np.ndarray
    gripper_width: float
    object_pos: np.ndarray
    object_quat: np.ndarray  # x, y, z, w
    goal_pos: np.ndarray
    ee_pos: np.ndarray  # PyBullet's own link state of the ee link (for checks)


class TwinCore:
    def __init__(
        self,
        spec: Spec | None = None,
        urdf_path: str | None = None,
        time_step: float = 1.0 / 240.0,
        region: TaskRegion | None = None,
        gui: bool = False,
        scene: "Scene | str | None" = None,
        home=None,
        object_scale: float = 1.0,
        egl: bool = False,
        arm_shapes: str = "visual",
    ):
        self.spec = spec or Spec()
        self.urdf_path = urdf_path or default_panda_urdf()
        if not os.path.isfile(self.urdf_path):
            raise FileNotFoundError(f"arm URDF not found: {self.urdf_path}")
        self.time_step = float(time_step)
        self.scene = sc = scene if isinstance(scene, Scene) else Scene.load(scene)
        self.region = region or sc.region
        # object_scale: the object loaded that much larger (the reality gap of twin_node, vla_rl_ros/twin/gap.py);
        # objects are drawn resting on the table at its scaled half height
        self.object_scale = float(object_scale)
        self.object_half = sc.object_half_height * self.object_scale
        # arm_shapes "collision": the arm drawn from its collision shapes (PyBullet draws those of a body loaded
        # without its visual ones): coarser, and the Panda's have ~10x fewer triangles (twin_node's camera_arm)
        if arm_shapes not in ARM_SHAPES:
            raise ValueError(f"arm_shapes {arm_shapes!r}: expected one of {', '.join(ARM_SHAPES)}")
        self.cid = pb.connect(pb.GUI if gui else pb.DIRECT)
        c = self.cid
        # egl: frames from PyBullet's EGL renderer plugin (OpenGL) instead of TinyRenderer. Measured and not used
        # by the nodes (bench/bench_twin_camera.py: slower here, on Mesa's llvmpipe, and it draws no marker)
        self.egl = bool(egl)
        if self.egl:  # before any body: the plugin draws only the bodies loaded after it
            import pkgutil

            plugin = pkgutil.get_loader("eglRenderer")
            if plugin is None or pb.loadPlugin(plugin.get_filename(), "_eglRendererPlugin", physicsClientId=c) < 0:
                pb.disconnect(physicsClientId=c)
                raise RuntimeError("PyBullet's EGL renderer plugin did not load (it needs libEGL and an OpenGL driver, "
                                   "e.g. Debian's libegl1 and libgl1-mesa-dri)")
        pb.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=c)
        pb.setGravity(0, 0, -9.81, physicsClientId=c)
        pb.setTimeStep(self.time_step, physicsClientId=c)
        pb.setPhysicsEngineParameter(deterministicOverlappingPairs=1, physicsClientId=c)
        self.plane, self.table = load_fixed_bodies(sc, c)
        flags = pb.URDF_USE_SELF_COLLISION_EXCLUDE_PARENT
        if arm_shapes == "collision":
            flags |= pb.URDF_IGNORE_VISUAL_SHAPES
        self.robot = pb.loadURDF(pybullet_urdf(self.urdf_path), [0, 0, 0], useFixedBase=True, flags=flags,
                                 physicsClientId=c)
        scaling = {"globalScaling": self.object_scale} if self.object_scale != 1.0 else {}
        self.cube = pb.loadURDF(sc.object_urdf, [0.5, 0.0, self.object_half], physicsClientId=c, **scaling)
        vis = pb.createVisualShape(pb.GEOM_SPHERE, radius=sc.goal_radius, rgbaColor=list(sc.goal_rgba), physicsClientId=c)
        self.goal_body = pb.createMultiBody(baseMass=0, baseVisualShapeIndex=vis, basePosition=[0.5, 0.2, 0.1], physicsClientId=c)

        idx = {}
        link_idx = {}
        self.joint_info = {}
        for i in range(pb.getNumJoints(self.robot, physicsClientId=c)):
            info = pb.getJointInfo(self.robot, i, physicsClientId=c)
            name = info[1].decode()
            idx[name] = i
            link_idx[info[12].decode()] = i
            self.joint_info[name] = dict(lower=info[8], upper=info[9], effort=info[10], velocity=info[11], type=info[2])
        missing = [j for j in (*self.spec.arm_joints, *self.spec.gripper_joints) if j not in idx]
        if missing:
            raise ValueError(f"joints {missing} are not in URDF {self.urdf_path}")
        if self.spec.ee_link not in link_idx:
            raise ValueError(f"ee link {self.spec.ee_link!r} is not in URDF {self.urdf_path}")
        self.arm_idx = [idx[j] for j in self.spec.arm_joints]
        self.finger_idx = [idx[j] for j in self.spec.gripper_joints]
        self.ee_idx = link_idx[self.spec.ee_link]
        self.arm_lower = np.array([self.joint_info[j]["lower"] for j in self.spec.arm_joints])
        self.arm_upper = np.array([self.joint_info[j]["upper"] for j in self.spec.arm_joints])
        self.arm_effort = np.array([self.joint_info[j]["effort"] for j in self.spec.arm_joints])
        self.arm_velocity = np.array([self.joint_info[j]["velocity"] for j in self.spec.arm_joints])
        self.finger_velocity = [max(float(self.joint_info[j]["velocity"]), 0.05) for j in self.spec.gripper_joints]
        for link in (*self.finger_idx, self.ee_idx):
            pb.changeDynamics(self.robot, link, lateralFriction=1.5, spinningFriction=0.01, physicsClientId=c)
        pb.changeDynamics(self.cube, -1, lateralFriction=sc.object_friction, spinningFriction=0.01, physicsClientId=c)
        self.home = np.clip(check_home(home, self.spec), self.arm_lower, self.arm_upper)
        self.gripper_mimics = _gripper_mimics(self.urdf_path, self.spec.gripper_joints, idx)
        self.goal = np.array([0.5, 0.2, 0.1])
        self._marker_body: list | None = None  # the object's markers, made at the first render
        self.sim_time = 0.0
        self._last_arm_target = self.home.copy()
        self._last_grip_target = self.spec.gripper_open
        self.reset_scene(np.random.default_rng(0), task=self.spec.task)

    # ---------------------------------------------------------------- episode
    def sample_task(self, rng: np.random.Generator, task: str) -> tuple[np.ndarray, np.ndarray]:
        r = self.region
        obj = np.array([*rng.uniform(r.object_low, r.object_high), self.object_half])
        if task == "reach":
            goal = rng.uniform(r.reach_low, r.reach_high)
        else:
            for _ in range(100):
                goal = rng.uniform(r.goal_low, r.goal_high)
                if np.linalg.norm(goal[:2] - obj[:2]) >= r.min_object_goal_dist:
                    break
        return obj, goal

    def reset_scene(self, rng: np.random.Generator, task: str | None = None) -> None:
        """Arm home, gripper open, object and goal re-drawn from ``rng``."""
        c = self.cid
        obj, goal = self.sample_task(rng, task or self.spec.task)
        for j, q in zip(self.arm_idx, self.home):
            pb.resetJointState(self.robot, j, q, 0.0, physicsClientId=c)
        q_open = self.spec.gripper_joint_sum(self.spec.gripper_open) / max(1, len(self.finger_idx))
        for j in self.finger_idx:
            pb.resetJointState(self.robot, j, q_open, 0.0, physicsClientId=c)
        for j, k, mult, off in self.gripper_mimics:
            pb.resetJointState(self.robot, j, mult * q_open + off, 0.0, physicsClientId=c)
        pb.resetBasePositionAndOrientation(self.cube, obj.tolist(), [0, 0, 0, 1], physicsClientId=c)
        pb.resetBaseVelocity(self.cube, [0, 0, 0], [0, 0, 0], physicsClientId=c)
        self.goal = goal
        pb.resetBasePositionAndOrientation(self.goal_body, goal.tolist(), [0, 0, 0, 1], physicsClientId=c)
        self.apply_command(self.home, self.spec.gripper_open)
        self.sim_time = 0.0

    # ---------------------------------------------------------------- control
    def apply_command(self, arm_targets, gripper_width: float | None = None) -> None:
        """Position targets, clipped to the URDF limits; motors capped at URDF effort/velocity."""
        c = self.cid
        q = np.clip(np.asarray(arm_targets, dtype=np.float64), self.arm_lower, self.arm_upper)
        self._last_arm_target = q
        for j, qi, f, v in zip(self.arm_idx, q, self.arm_effort, self.arm_velocity):
            pb.setJointMotorControl2(
                self.robot, j, pb.POSITION_CONTROL, targetPosition=float(qi), force=float(f), maxVelocity=float(v),
                positionGain=0.3, velocityGain=1.0, physicsClientId=c,
            )
        if gripper_width is not None:
            w = float(np.clip(gripper_width, 0.0, self.spec.gripper_open))
            self._last_grip_target = w
            q = self.spec.gripper_joint_sum(w) / max(1, len(self.finger_idx))  # the spec's gripper model
            for j, v in zip(self.finger_idx, self.finger_velocity):
                pb.setJointMotorControl2(
                    self.robot, j, pb.POSITION_CONTROL, targetPosition=q, force=40.0, maxVelocity=v, physicsClientId=c,
                )
            for j, k, mult, off in self.gripper_mimics:  # a linkage gripper's other joints, as its URDF's <mimic> says
                pb.setJointMotorControl2(
                    self.robot, j, pb.POSITION_CONTROL, targetPosition=mult * q + off, force=40.0,
                    maxVelocity=self.finger_velocity[k] * abs(mult) or self.finger_velocity[k], physicsClientId=c,
                )

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            pb.stepSimulation(physicsClientId=self.cid)
        self.sim_time += n * self.time_step

    # ---------------------------------------------------------------- state
    def state(self) -> TwinState:
        c = self.cid
        js = pb.getJointStates(self.robot, self.arm_idx + self.finger_idx, physicsClientId=c)
        n = len(self.arm_idx)
        q = np.array([s[0] for s in js])
        qd = np.array([s[1] for s in js])
        tau = np.array([s[3] for s in js])
        pos, quat = pb.getBasePositionAndOrientation(self.cube, physicsClientId=c)
        ee = pb.getLinkState(self.robot, self.ee_idx, computeForwardKinematics=True, physicsClientId=c)[4]
        return TwinState(
            q=q[:n], qd=qd[:n], tau=tau[:n], finger_q=q[n:], finger_qd=qd[n:],
            gripper_width=self.spec.gripper_width_of(float(q[n:].sum())) if n < len(q) else 0.0,
            object_pos=np.array(pos), object_quat=np.array(quat), goal_pos=self.goal.copy(), ee_pos=np.array(ee),
        )

    def render(self, width: int = 84, height: int = 84) -> np.ndarray:
        """RGB frame (H, W, 3) uint8 from a fixed camera looking at the workspace (TinyRenderer, one pass over
        the whole scene; :class:`~vla_rl_ros.twin.camera.TwinCamera` draws the same frame faster).

        The scene's object markers (:class:`MarkerSpec`) are drawn on the object's faces: visual-only bodies
        (no collision, no mass), made at the first render and moved onto the object before each one."""
        if self.scene.object_marker is not None:
            self._place_marker()
        return self.draw(width, height)[0]

    def camera_matrices(self, width: int, height: int) -> tuple[list, list]:
        """PyBullet's (view, projection) matrices of the scene's camera for a ``width`` x ``height`` frame."""
        sc, c = self.scene, self.cid
        view = pb.computeViewMatrix(list(sc.camera_eye), list(sc.camera_target), [0, 0, 1], physicsClientId=c)
        proj = pb.computeProjectionMatrixFOV(sc.camera_fov_deg, width / height, 0.05, 3.0, physicsClientId=c)
        return view, proj

    def draw(self, width: int, height: int, cid: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One TinyRenderer pass of client ``cid`` (default: this twin's) through the scene's camera, as it
        stands: the RGB frame (H, W, 3) uint8 and TinyRenderer's depth buffer (H, W) float32 (1.0: nothing
        drawn). No shadows (TinyRenderer's default) and no segmentation mask (not used; it costs ~10% more).
        An ``egl`` twin's frames come from the EGL plugin (which draws shadows regardless)."""
        view, proj = self.camera_matrices(width, height)
        renderer = pb.ER_BULLET_HARDWARE_OPENGL if self.egl else pb.ER_TINY_RENDERER
        img = pb.getCameraImage(width, height, view, proj, renderer=renderer, shadow=0,
                                flags=pb.ER_NO_SEGMENTATION_MASK, physicsClientId=self.cid if cid is None else cid)
        rgba = np.reshape(np.asarray(img[2], dtype=np.uint8), (height, width, 4))
        depth = np.reshape(np.asarray(img[3], dtype=np.float32), (height, width))
        return np.ascontiguousarray(rgba[:, :, :3]), depth

    def _place_marker(self) -> None:
        from ..perception.aruco import SIDE_FACES, face_rotation, matrix_to_quat

        c = self.cid
        m = self.scene.object_marker
        if self._marker_body is None:  # [(body, offset in the object's frame, orientation in it)]
            self._marker_body = []
            for i, face in [(m.id, "top"), *zip(m.sides, SIDE_FACES)]:
                R = face_rotation(face)
                self._marker_body.append((_marker_plate(m, self.object_half, c, marker_id=i),
                                          ((self.object_half + 2e-4) * R[:, 2]).tolist(), matrix_to_quat(R).tolist()))
        pos, quat = pb.getBasePositionAndOrientation(self.cube, physicsClientId=c)
        for body, offset, q in self._marker_body:
            p, o = pb.multiplyTransforms(pos, quat, offset, q, physicsClientId=c)
            pb.resetBasePositionAndOrientation(body, p, o, physicsClientId=c)

    def close(self) -> None:
        if self.cid is not None and self.cid >= 0:
            try:
                pb.disconnect(physicsClientId=self.cid)
            except pb.error:
                pass
            self.cid = -1

    def __del__(self):  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass
