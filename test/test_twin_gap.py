"""The reality gap's core (no ROS): scaling, no gap is the identity, and what it does to a TwinCore."""
import time

import numpy as np
import pybullet as pb
import pytest

from vla_rl_ros.spec import Spec
from vla_rl_ros.twin.core import TwinCore
from vla_rl_ros.twin.gap import RealityGap, SensorNoise

GAP = RealityGap(object_friction_scale=0.9, object_mass_scale=1.1, object_size_scale=0.96, actuation_delay_s=0.05,
                 joint_noise_std=1e-4, pose_noise_std=0.002, camera_shift_m=(0.01, 0.0, 0.01), camera_pan_rad=0.01)


def test_scaling_and_none():
    assert RealityGap() == RealityGap.none() and RealityGap.none().is_none
    assert GAP.scaled(0) == RealityGap.none() and GAP.scaled(0.0).is_none
    assert GAP.scaled(1) == GAP
    two = GAP.scaled(2)
    assert two.object_friction_scale == pytest.approx(0.81) and two.object_mass_scale == pytest.approx(1.21)
    assert two.object_size_scale == pytest.approx(0.96 ** 2)
    assert (two.actuation_delay_s, two.joint_noise_std, two.pose_noise_std, two.camera_pan_rad) == \
        pytest.approx((0.1, 2e-4, 0.004, 0.02))
    assert two.camera_shift_m == pytest.approx((0.02, 0.0, 0.02))
    assert GAP.scaled(0.5).scaled(2).object_mass_scale == pytest.approx(1.1)
    assert RealityGap(**GAP.to_dict()) == GAP
    assert RealityGap.none().describe() == "none" and "delay 50 ms" in GAP.describe()
    for bad in (dict(object_mass_scale=0.0), dict(actuation_delay_s=-1.0), dict(pose_noise_std=float("nan")),
                dict(camera_shift_m=(0.0, 0.0))):
        with pytest.raises(ValueError):
            RealityGap(**bad)
    with pytest.raises(ValueError):
        GAP.scaled(-1)


def test_camera_pose_under_the_gap():
    eye, target = (1.2, 0.0, 0.6), (0.5, 0.0, 0.05)
    assert RealityGap.none().camera(eye, target) == (list(eye), list(target))
    e, t = RealityGap(camera_shift_m=(0.0, 0.1, 0.0), camera_pan_rad=np.pi / 2).camera(eye, target)
    assert e == pytest.approx([1.2, 0.1, 0.6])
    assert t == pytest.approx([1.2, 0.1 - 0.7, 0.05])  # the view direction (-0.7, 0) turned a quarter left


def test_sensor_noise_is_seeded_and_none_is_exact():
    q = [0.1, -0.2, 0.3]
    exact = SensorNoise(RealityGap.none(), seed=3)
    assert exact.joints(q) == q and exact.position(q) == q
    a, b = SensorNoise(GAP, seed=3), SensorNoise(GAP, seed=3)
    assert a.joints(q) == b.joints(q) and a.position(q) == b.position(q)
    n = SensorNoise(RealityGap(pose_noise_std=0.005, joint_noise_std=1e-3), seed=1)
    p = np.array([n.position([0.5, 0.0, 0.025]) for _ in range(2000)])
    assert p.std(axis=0) == pytest.approx([0.005] * 3, rel=0.1) and p.mean(axis=0) == pytest.approx([0.5, 0.0, 0.025],
                                                                                                  abs=5e-4)
    j = np.array([n.joints(q) for _ in range(2000)])
    assert j.std(axis=0) == pytest.approx([1e-3] * 3, rel=0.1)


def _object(twin):
    info = pb.getDynamicsInfo(twin.cube, -1, physicsClientId=twin.cid)
    lo, hi = pb.getAABB(twin.cube, -1, physicsClientId=twin.cid)
    return info[0], info[1], np.array(info[2]), np.subtract(hi, lo)


def test_the_gap_in_a_twin_core():
    exact = TwinCore(Spec(task="pick_place"))
    try:
        m0, f0, inertia0, size0 = _object(exact)
        RealityGap.none().apply_dynamics(exact)  # no gap: PyBullet untouched
        m, f, inertia, size = _object(exact)
        assert (m, f) == (m0, f0) and (inertia == inertia0).all() and (size == size0).all()
        obj0, goal0 = exact.sample_task(np.random.default_rng(5), "pick_place")
    finally:
        exact.close()
    twin = TwinCore(Spec(task="pick_place"), object_scale=GAP.object_size_scale)
    try:
        GAP.apply_dynamics(twin)
        m, f, inertia, size = _object(twin)
        assert m == pytest.approx(1.1 * m0) and f == pytest.approx(0.9 * f0)
        np.testing.assert_allclose(inertia, 1.1 * 0.96 ** 2 * inertia0)  # (globalScaling scales it with size²)
        np.testing.assert_allclose(size, 0.96 * size0, rtol=0.02)  # (the AABB has a small collision margin)
        obj, goal = twin.sample_task(np.random.default_rng(5), "pick_place")
        assert twin.object_half == pytest.approx(0.96 * exact.object_half)
        assert obj[2] == pytest.approx(twin.object_half) and obj[:2] == pytest.approx(obj0[:2])
        twin.reset_scene(np.random.default_rng(5), "pick_place")
        twin.step(240)  # a second: the smaller cube rests on the table at its own half height
        assert twin.state().object_pos[2] == pytest.approx(twin.object_half, abs=2e-3)
    finally:
        twin.close()



def test_the_camera_of_a_gap_twin_sees_from_elsewhere():
    """twin_node's camera renderer (a child process) under a gap: the moved camera's frame differs; no gap:
    the frame TwinCore.render gives."""
    from vla_rl_ros.kinematics import default_panda_urdf
    from vla_rl_ros.nodes._camera import Renderer

    twin = TwinCore(Spec())
    try:
        st = twin.state()
        frames = {}
        for name, gap in (("exact", RealityGap.none()),
                          ("gap", RealityGap(camera_shift_m=(0.05, 0.05, 0.0), camera_pan_rad=0.05))):
            r = Renderer(Spec(), default_panda_urdf(), 32, 24, gap=gap)
            try:
                r.request(np.concatenate([st.q, st.finger_q]), st.object_pos, st.object_quat, st.goal_pos, None)
                deadline = time.monotonic() + 60
                while (done := r.poll()) is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert done is not None, f"{name}: no frame"
                frames[name] = np.frombuffer(done[1], dtype=np.uint8).reshape(24, 32, 3)
            finally:
                r.close()
        np.testing.assert_array_equal(frames["exact"], twin.render(32, 24))
        assert (frames["exact"] != frames["gap"]).any()
    finally:
        twin.close()
