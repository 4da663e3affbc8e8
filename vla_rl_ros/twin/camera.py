"""The twin's camera: 640x480 frames fast enough for perception (twin_node's ``camera_renderer``).

TinyRenderer, PyBullet's software rasteriser, spends most of a 640x480 frame on pixels that never change: the
floor and the table fill nearly all of it, and drawing them takes about two thirds of the frame's CPU time
(``bench/bench_twin_camera.py``). The ``layered`` renderer draws those fixed bodies once, keeping their depth
buffer, and then, each frame, only the bodies that move (the arm, the object and its markers, the goal), and
keeps per pixel the nearer of the two layers: a z-buffer composite. TinyRenderer draws no shadows and lights
each body alone, so nothing fixed looks different for what moves in front of it, and the composite is the frame
one pass over the whole scene draws, pixel for pixel (``test/test_twin_camera.py``): same image, same
intrinsics, same ``CameraInfo``. ``tiny`` is that one pass (:meth:`TwinCore.render`), kept for comparison.

The arm is most of what is left: the Panda's visual meshes have ~100k triangles. ``arm_shapes="collision"``
(twin_node's ``camera_arm``; ``vla-rl-ros sim --perception`` sets it) draws the arm from its collision shapes
instead, about ten times fewer: a coarser arm in the picture, the marker and the cube unchanged.

Measured and not taken (``bench/bench_twin_camera.py``, ``docs/bench/twin_camera.md``): PyBullet's EGL plugin
(OpenGL; Mesa's llvmpipe on a machine without a GPU) is slower here and does not draw the markers' textures;
a frame cropped to the workspace (an off-centre projection) saves less than the layers and changes the
published image's size and intrinsics.
"""
from __future__ import annotations

import numpy as np
import pybullet as pb
import pybullet_data

from .core import TwinCore, load_fixed_bodies
from .gap import RealityGap

RENDERERS = ("layered", "tiny")


class TwinCamera:
    """Frames of the twin's scene at given joint positions and object/goal poses.

    It owns a render-only copy of the twin (a :class:`TwinCore` whose physics is never stepped: :meth:`render`
    sets every moving body), as twin_node's camera process does, so hiding the fixed bodies there changes
    nothing in the twin that runs the arm. Under a reality gap the copy's object has the gap's size and its
    camera the gap's pose. ``arm_shapes`` "collision" draws the arm from its collision shapes: a coarser arm
    (the Panda's: ~10x fewer triangles, about half the layered frame's CPU time; bench/bench_twin_camera.py).
    """

    def __init__(self, width: int, height: int, spec=None, urdf_path: str | None = None, scene=None,
                 gap: RealityGap | None = None, renderer: str = "layered", arm_shapes: str = "visual"):
        if renderer not in RENDERERS:
            raise ValueError(f"camera renderer {renderer!r}: expected one of {', '.join(RENDERERS)}")
        gap = gap or RealityGap()
        self.twin = tw = TwinCore(spec, urdf_path=urdf_path, scene=scene, object_scale=gap.object_size_scale,
                                  arm_shapes=arm_shapes)
        tw.scene.camera_eye, tw.scene.camera_target = gap.camera(tw.scene.camera_eye, tw.scene.camera_target)
        self.width, self.height, self.renderer = int(width), int(height), renderer
        self._joints = tw.arm_idx + tw.finger_idx
        self._background: tuple[np.ndarray, np.ndarray] | None = None
        if renderer == "layered":
            self._background = self._draw_fixed_bodies()
            for body in (tw.plane, tw.table):  # from now on drawn by the background: TinyRenderer skips a shape
                for link in range(-1, pb.getNumJoints(body, physicsClientId=tw.cid)):  # with alpha 0
                    pb.changeVisualShape(body, link, rgbaColor=[1, 1, 1, 0], physicsClientId=tw.cid)

    def _draw_fixed_bodies(self) -> tuple[np.ndarray, np.ndarray]:
        """The fixed bodies alone, in a client of their own, through the same camera: (RGB, depth)."""
        cid = pb.connect(pb.DIRECT)
        try:
            pb.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=cid)
            load_fixed_bodies(self.twin.scene, cid)
            return self.twin.draw(self.width, self.height, cid=cid)
        finally:
            pb.disconnect(physicsClientId=cid)

    def render(self, q, obj_pos, obj_quat, goal) -> np.ndarray:
        """The RGB frame (H, W, 3) uint8 with the arm's and gripper's joints at ``q`` (the spec's order, the
        arm's then the gripper's), the object at ``obj_pos``/``obj_quat`` (x, y, z, w) and the goal at ``goal``."""
        tw, c = self.twin, self.twin.cid
        n_arm = len(tw.arm_idx)
        for j, v in zip(self._joints, q):
            pb.resetJointState(tw.robot, j, float(v), 0.0, physicsClientId=c)
        for j, k, mult, off in tw.gripper_mimics:  # a linkage gripper's other joints, as the twin drives them
            pb.resetJointState(tw.robot, j, mult * float(q[n_arm + k]) + off, 0.0, physicsClientId=c)
        pb.resetBasePositionAndOrientation(tw.cube, list(obj_pos), list(obj_quat), physicsClientId=c)
        pb.resetBasePositionAndOrientation(tw.goal_body, list(goal), [0, 0, 0, 1], physicsClientId=c)
        if self._background is None:
            return tw.render(self.width, self.height)
        if tw.scene.object_marker is not None:
            tw._place_marker()
        rgb, depth = tw.draw(self.width, self.height)
        out, bg_depth = self._background
        out = out.copy()
        np.copyto(out, rgb, where=(depth < bg_depth)[:, :, None])  # what moves, where it is nearer
        return out

    def render_twin(self, twin: TwinCore) -> np.ndarray:
        """The frame of another twin's state as it stands (its joints, object and goal)."""
        st = twin.state()
        return self.render(np.concatenate([st.q, st.finger_q]), st.object_pos, st.object_quat, st.goal_pos)

    def close(self) -> None:
        self.twin.close()
