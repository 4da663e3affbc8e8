"""Camera frames for twin_node, rendered in a child process (no ROS inside).

PyBullet holds the GIL while it renders (tens of ms a frame at 640x480 even with
the layered renderer), so a render thread would stall the physics timer just as
much as rendering inline. The child owns a second, kinematic copy of the scene
(:class:`~vla_rl_ros.twin.camera.TwinCamera`): the parent sends it the joint
positions and object/goal poses, it sets them and renders, and the parent picks
the frame up without blocking. Under a reality gap
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
            gap: dict | None = None, renderer: str = "layered", arm_shapes: str = "visual") -> None:
    from ..spec import Spec
    from ..twin.camera import TwinCamera
    from ..twin.gap import RealityGap

    camera = TwinCamera(width, height, Spec.from_json(spec_json), urdf_path=urdf_path, scene=scene,
                        gap=RealityGap(**(gap or {})), renderer=renderer, arm_shapes=arm_shapes)
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            break
        if req is None:
            break
        frame = camera.render(*req)  # q, object position, object quaternion, goal
        try:
            conn.send_bytes(frame.tobytes())
        except (BrokenPipeError, OSError):
            break
    camera.close()


class Renderer:
    """One frame in flight at a time: :meth:`request` when :attr:`busy` is False, :meth:`poll` for the result."""

    def __init__(self, spec, urdf_path: str, width: int, height: int, scene: str | None = None, gap=None,
                 renderer: str = "layered", arm_shapes: str = "visual"):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        gap = gap.to_dict() if gap is not None else None
        self._proc = ctx.Process(target=_worker, args=(child, spec.to_json(), urdf_path, width, height, scene, gap,
                                                       renderer, arm_shapes), name="twin_camera", daemon=True)
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
