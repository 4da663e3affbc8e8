"""The twin's camera (vla_rl_ros/twin/camera.py): the layered renderer draws TinyRenderer's frame, pixel for pixel,
and the perception core reads the cube's pose from it (real PyBullet, real cv2.aruco, no ROS)."""
from __future__ import annotations

import math

import numpy as np
import pybullet as pb
import pytest

from vla_rl_ros.nodes._camera import intrinsics
from vla_rl_ros.perception.aruco import MarkerConfig, MarkerPoseEstimator, angle_diff, camera_matrix, twin_extrinsic
from vla_rl_ros.spec import Spec
from vla_rl_ros.twin.camera import TwinCamera
from vla_rl_ros.twin.core import TwinCore
from vla_rl_ros.twin.gap import RealityGap

W, H = 640, 480


@pytest.fixture(scope="module")
def twin():
    t = TwinCore(Spec(task="pick_place"))
    yield t
    t.close()


@pytest.fixture(scope="module")
def layered():
    cam = TwinCamera(W, H, Spec(task="pick_place"))
    yield cam
    cam.close()


def pose(twin, rng, arm_noise=0.4):
    """A seeded scene: the arm near home (±``arm_noise`` rad a joint: it reaches over the table and hides part of
    it), the gripper half open, the cube resting in the object region at a random yaw."""
    c = twin.cid
    for j, q in zip(twin.arm_idx, twin.home + rng.uniform(-arm_noise, arm_noise, len(twin.arm_idx))):
        pb.resetJointState(twin.robot, j, q, physicsClientId=c)
    for j in twin.finger_idx:
        pb.resetJointState(twin.robot, j, 0.02, physicsClientId=c)
    r = twin.region
    x, y = rng.uniform(r.object_low, r.object_high)
    yaw = rng.uniform(-math.pi, math.pi)
    pb.resetBasePositionAndOrientation(twin.cube, [x, y, twin.object_half], pb.getQuaternionFromEuler([0, 0, yaw]),
                                       physicsClientId=c)
    return np.array([x, y, twin.object_half]), yaw


def test_layered_frames_are_tinyrenderers(twin, layered):
    """At seeded arm postures and cube poses, the layered frame is the one TwinCore.render draws in one pass."""
    rng = np.random.default_rng(0)
    for _ in range(4):
        pose(twin, rng)
        ref = twin.render(W, H)
        frame = layered.render_twin(twin)
        assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
        np.testing.assert_array_equal(frame, ref)


def test_layered_frames_under_a_reality_gap():
    """Under a gap (a larger cube, a moved camera) both renderers draw the same frame, and not the exact twin's."""
    gap = RealityGap(object_size_scale=1.2, camera_shift_m=(0.02, -0.01, 0.01), camera_pan_rad=0.02)
    spec = Spec(task="pick_place")
    cams = {r: TwinCamera(160, 120, spec, gap=gap, renderer=r) for r in ("layered", "tiny")}
    exact = TwinCamera(160, 120, spec)
    twin = TwinCore(spec)
    try:
        pose(twin, np.random.default_rng(1))
        frames = {r: cam.render_twin(twin) for r, cam in cams.items()}
        np.testing.assert_array_equal(frames["layered"], frames["tiny"])
        assert (frames["layered"] != exact.render_twin(twin)).any()
    finally:
        for cam in (*cams.values(), exact):
            cam.close()
        twin.close()


def test_perception_reads_layered_frames(twin, layered):
    """The cube's pose from layered frames at known poses, through the perception core with twin_node's
    CameraInfo intrinsics: found in at least 8 of 10 (the hand may hide it), each within 10 mm and 3 degrees,
    median within 5 mm."""
    m = layered.twin.scene.object_marker
    est = MarkerPoseEstimator(MarkerConfig(dictionary=m.dictionary, marker_id=m.id, marker_size=m.size,
                                           side_ids=m.sides), camera_matrix(*intrinsics(W, H)),
                              twin_extrinsic(layered.twin.scene))
    rng = np.random.default_rng(2)
    errs, yaws = [], []
    for _ in range(10):
        truth, yaw = pose(twin, rng, arm_noise=0.2)
        p = est.estimate(layered.render_twin(twin))
        if p is not None:
            errs.append(float(np.linalg.norm(p.position - truth)))
            yaws.append(abs(angle_diff(p.yaw, yaw)))
    assert len(errs) >= 8
    assert max(errs) < 0.010 and np.median(errs) < 0.005, np.round(np.array(errs) * 1000, 1).tolist()
    assert math.degrees(max(yaws)) < 3.0, np.degrees(yaws).round(2).tolist()


def test_the_arms_collision_shapes(twin, layered):
    """arm_shapes "collision": only the arm's pixels change (the table, floor and cube are the same frame's), and
    the cube's pose is read as before."""
    coarse = TwinCamera(W, H, Spec(task="pick_place"), arm_shapes="collision")
    try:
        truth, yaw = pose(twin, np.random.default_rng(4), arm_noise=0.0)
        fine, rough = layered.render_twin(twin), coarse.render_twin(twin)
        differ = (fine != rough).any(axis=2)
        assert 0 < differ.mean() < 0.03  # the arm at home fills the top of the frame; nothing else moves
        assert not differ[H // 2:].any()  # the lower half (table and cube) is the same
        m = layered.twin.scene.object_marker
        est = MarkerPoseEstimator(MarkerConfig(dictionary=m.dictionary, marker_id=m.id, marker_size=m.size),
                                  camera_matrix(*intrinsics(W, H)), twin_extrinsic(layered.twin.scene))
        p = est.estimate(rough)
        assert p is not None and np.linalg.norm(p.position - truth) < 0.010 and abs(angle_diff(p.yaw, yaw)) < 0.05
    finally:
        coarse.close()


def test_unknown_choices_are_refused():
    with pytest.raises(ValueError, match="layered, tiny"):
        TwinCamera(64, 48, renderer="egl")
    with pytest.raises(ValueError, match="visual, collision"):
        TwinCore(arm_shapes="none")
