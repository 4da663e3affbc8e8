"""Camera frames for twin_node, rendered in a child process (no ROS inside).

PyBullet holds the GIL while it renders (~20-30 ms a frame here), so a render
thread would stall the physics timer just as much as rendering inline. The
child owns a second, kinematic copy of the scene: the parent sends it the
joint positions and object/goal poses, it sets them and renders, and the
parent picks the frame up without blocking. Under a reality gap
(:class:`~vla_rl_ros.twin.gap.RealityGap`) the copy's object has the gap's size and
its camera the gap's pose.
"""
from __future__ import annotations

import math
import multiprocessing as mp

import numpy as np

FOV_DEG = 55.0  # TwinCore.render's vertical field of view


def intrinsics(width: int, height: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of TwinCore.render's pinhole camera, in OpenCV's pixel convention (what twin_node's
    CameraInfo says). The principal point was measured, not derived: TinyRenderer draws the scene about one
    pixel higher than a pinhole centred at (W/2, H/2) would (corners of a 20 cm ArUco marker on the table,
    320x240 and 640x480 alike: -0.8 to -1.0 px in y, 0.0 to +0.25 px in x, depending on the corner refinement;
    test/test_perception.py checks the fit)."""
    fy = 0.5 * height / math.tan(math.radians(FOV_DEG) / 2.0)
    return fy, fy, 0.5 * width, 0.5 * height - 1.0


def _worker(conn, spec_json: str, urdf_path: str, width: int, height: int, scene: str | None = None,
            gap: dict | None = None) -> None:
    import pybullet as pb

    from ..spec import Spec
    from ..twin.core import TwinCore
    from ..twin.gap import RealityGap

    gap = RealityGap(**(gap or {}))
    twin = TwinCore(Spec.from_json(spec_json), urdf_path=urdf_path, scene=scene,  # the arm's twin and scene
                    object_scale=gap.object_size_scale)
    twin.scene.camera_eye, twin.scene.camera_target = gap.camera(twin.scene.camera_eye, twin.scene.camera_target)
    c = twin.cid
    joints = twin.arm_idx + twin.finger_idx
    n_arm = len(twin.arm_idx)
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            break
        if req is None:
            break
        q, obj_pos, obj_quat, goal = req
        for j, v in zip(joints, q):
            pb.resetJointState(twin.robot, j, float(v), 0.0, physicsClientId=c)
        for j, k, mult, off in twin.gripper_mimics:  # a linkage gripper's other joints, as the twin drives them
            pb.resetJointState(twin.robot, j, mult * float(q[n_arm + k]) + off, 0.0, physicsClientId=c)
        pb.resetBasePositionAndOrientation(twin.cube, list(obj_pos), list(obj_quat), physicsClientId=c)
        pb.resetBasePositionAndOrientation(twin.goal_body, list(goal), [0, 0, 0, 1], physicsClientId=c)
        frame = twin.render(width, height)
        try:
            conn.send_bytes(frame.tobytes())
        except (BrokenPipeError, OSError):
            break
    twin.close()


class Renderer:
    """One frame in flight at a time: :meth:`request` when :attr:`busy` is False, :meth:`poll` for the result."""

    def __init__(self, spec, urdf_path: str, width: int, height: int, scene: str | None = None, gap=None):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        gap = gap.to_dict() if gap is not None else None
        self._proc = ctx.Process(target=_worker, args=(child, spec.to_json(), urdf_path, width, height, scene, gap),
                                 name="twin_camera", daemon=True)
        self._proc.start()
        child.close()
        self.width, self.height = width, height
        self.busy = False
        self._stamp = None

    def request(self, q: np.ndarray, obj_pos, obj_quat, goal, stamp) -> None:
        self._conn.send((np.asarray(q, dtype=float).tolist(), list(obj_pos), list(obj_quat), list(goal)))
        self.busy = True
        self._stamp = stamp

    def poll(self):
        """``(stamp, rgb bytes)`` of a finished frame, or None."""
        if not self.busy or not self._conn.poll():
            return None
        data = self._conn.recv_bytes()
        self.busy = False
        return self._stamp, data

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=2.0)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=1.0)
        self._conn.close()
