"""URDF kinematics against PyBullet, IK convergence, and the safety filter."""
import numpy as np
import pybullet as pb
import pytest

from vla_rl_ros.kinematics import Kinematics, KinematicsError, default_panda_urdf
from vla_rl_ros.runtime.control import PANDA_HOME, Controller, SafetyFilter, SafetyLimits
from vla_rl_ros.spec import Spec


@pytest.fixture(scope="module")
def kin():
    s = Spec()
    return Kinematics(default_panda_urdf(), s.base_link, s.ee_link, s.arm_joints)


def test_fk_matches_pybullet(kin):
    c = pb.connect(pb.DIRECT)
    try:
        rid = pb.loadURDF(default_panda_urdf(), useFixedBase=True, physicsClientId=c)
        idx = {pb.getJointInfo(rid, i, physicsClientId=c)[1].decode(): i for i in range(pb.getNumJoints(rid, physicsClientId=c))}
        link = {pb.getJointInfo(rid, i, physicsClientId=c)[12].decode(): i for i in range(pb.getNumJoints(rid, physicsClientId=c))}
        rng = np.random.default_rng(0)
        for _ in range(10):
            q = rng.uniform(kin.lower, kin.upper)
            for n, qi in zip(kin.joint_names, q):
                pb.resetJointState(rid, idx[n], qi, physicsClientId=c)
            ls = pb.getLinkState(rid, link["panda_grasptarget"], computeForwardKinematics=True, physicsClientId=c)
            np.testing.assert_allclose(kin.fk_pos(q), ls[4], atol=1e-6)
    finally:
        pb.disconnect(c)


def test_ik_reaches_targets_within_limits(kin):
    T = kin.fk(PANDA_HOME)
    rng = np.random.default_rng(1)
    for _ in range(20):
        target = T[:3, 3] + rng.uniform(-0.05, 0.05, 3)
        q = kin.ik(target, PANDA_HOME, target_rot=T[:3, :3], iters=10, q_rest=PANDA_HOME)
        assert np.linalg.norm(kin.fk_pos(q) - target) < 2e-3
        assert np.all(q >= kin.lower) and np.all(q <= kin.upper)


def test_jacobian_matches_finite_differences(kin):
    q = PANDA_HOME + 0.1
    J, _ = kin.jacobian(q)
    eps = 1e-6
    for i in range(kin.n):
        dq = np.zeros(kin.n)
        dq[i] = eps
        num = (kin.fk_pos(q + dq) - kin.fk_pos(q - dq)) / (2 * eps)
        np.testing.assert_allclose(J[:3, i], num, atol=1e-6)


def test_bad_urdf_chain_is_a_clear_error(tmp_path, kin):
    with pytest.raises(KinematicsError, match="not found"):
        Kinematics(str(tmp_path / "nope.urdf"), "a", "b", ["j"])
    with pytest.raises(KinematicsError, match="no kinematic chain"):
        Kinematics(default_panda_urdf(), "panda_link0", "no_such_link", ["panda_joint1"])
    with pytest.raises(KinematicsError, match="not on the chain"):
        Kinematics(default_panda_urdf(), "panda_link0", "panda_grasptarget", ["panda_joint1", "bogus"])


def test_safety_filter_limits_step_workspace_and_nan(kin):
    spec = Spec()
    lim = SafetyLimits(max_joint_step=0.05, max_tracking_error=0.1)
    f = SafetyFilter(spec, kin, lim)
    q = PANDA_HOME.copy()
    # NaN target → hold at measured, never zeros
    c = f.filter(np.full(7, np.nan), 0.04, q, 0.04)
    assert c.hold and np.array_equal(c.arm, q) and "non-finite" in c.reason
    # a wild jump is cut to max step per tick
    c = f.filter(q + 1.0, 0.04, q, 0.04)
    assert not c.hold and np.all(np.abs(c.arm - q) <= 0.05 + 1e-12)
    # beyond joint limits → clipped inside the URDF limits with margin
    f.reset()
    q_edge = PANDA_HOME.copy()
    q_edge[6] = kin.upper[6] - 0.01  # wrist rotation: the hand stays put, only the limit matters
    far = q_edge.copy()
    far[6] = kin.upper[6] + 1.0
    c = f.filter(far, 0.04, q_edge, 0.04)
    assert not c.hold and "joint limits" in c.reason
    assert c.arm[6] == pytest.approx(kin.upper[6] - lim.joint_margin)
    # a target whose hand leaves the workspace box → hold
    f.reset()
    q_low = PANDA_HOME.copy()
    q_low[3] = -0.5  # arm stretched up and out
    c = f.filter(q_low, 0.04, q_low, 0.04)
    assert c.hold and c.reason == "workspace"


def test_a_hand_outside_the_workspace_may_move_back_but_not_further_out(kin):
    """A hand carried past the box (by momentum, or pushed) is not held there for good: a command that brings it
    nearer the box passes, one that takes it further out (or leaves it where it is) holds. Seen live: the hand
    ended at x = 0.814 (box to 0.80 + 0.02 tolerance), every command back was refused, and the arm held for the
    rest of the run. Here the hand is put 4 cm below the box's floor."""
    spec = Spec()
    f = SafetyFilter(spec, kin, SafetyLimits(max_joint_step=0.05, max_tracking_error=0.2))
    ctl = Controller(spec, kin)
    rot = ctl.mapper.target_rot  # the hand's orientation as the controller keeps it
    floor = spec.workspace_low[2] - f.limits.workspace_tolerance
    q = PANDA_HOME.copy()
    for _ in range(40):
        q = kin.ik(np.array([0.5, 0.0, floor - 0.04]), q, target_rot=rot, iters=20)
    p_out = kin.fk_pos(q)
    assert p_out[2] < floor - 0.03
    up = kin.ik(p_out + np.array([0.0, 0.0, 0.01]), q, target_rot=rot, iters=20)  # 1 cm up: still out, nearer
    assert kin.fk_pos(up)[2] < floor
    c = f.filter(up, 0.04, q, 0.04)
    assert not c.hold and kin.fk_pos(c.arm)[2] > p_out[2]
    f.reset()
    down = kin.ik(p_out - np.array([0.0, 0.0, 0.01]), q, target_rot=rot, iters=20)
    assert f.filter(down, 0.04, q, 0.04).hold
    f.reset()
    assert f.filter(q, 0.04, q, 0.04).hold  # staying out is no way back either
    # the whole controller: the policy's "up" action brings the hand back into the box, tick after tick
    for _ in range(20):
        cmd = ctl.step(np.array([0.0, 0.0, 1.0, 1.0]), q, 0.04)
        assert not cmd.hold
        q = cmd.arm
    assert kin.fk_pos(q)[2] > floor


def test_controller_maps_ee_delta_and_guards_inputs(kin):
    spec = Spec()
    ctl = Controller(spec, kin)
    q = PANDA_HOME.copy()
    ee = kin.fk_pos(q)
    cmd = ctl.step(np.array([1.0, 0.0, 0.0, 1.0]), q, 0.08)
    assert not cmd.hold
    assert kin.fk_pos(cmd.arm)[0] > ee[0] + 0.01  # moved toward +x
    assert cmd.gripper == pytest.approx(0.08)
    ctl.reset()
    bad = ctl.step(np.array([np.inf, 0, 0, 0]), q, 0.08)
    assert bad.hold and np.array_equal(bad.arm, q)
    wrong = ctl.step(np.zeros(3), q, 0.08)
    assert wrong.hold and "shape" in wrong.reason


@pytest.mark.parametrize("limits", [SafetyLimits(), SafetyLimits(max_joint_step=0.01, max_tracking_error=0.05,
                                                                  workspace_tolerance=0.0, joint_margin=0.1)])
def test_fused_ee_delta_step_gives_exactly_the_commands_of_map_then_filter(kin, limits):
    """Controller.step's compiled ee_delta path (kinematics.ee_delta_targets_jit) against ActionMapper.map +
    SafetyFilter.filter, the same arithmetic in Python: bit-identical commands, holds and reasons, over random
    states and actions (saturated ones, the workspace edge, a filter that carries its last command)."""
    spec = Spec()
    fused = Controller(spec, kin, limits)
    plain = Controller(spec, kin, limits)
    plain._fused = None
    rng = np.random.default_rng(3)
    q = np.array(PANDA_HOME)
    kinds = set()
    for i in range(600):
        if i % 50 == 0:
            q = np.clip(PANDA_HOME + rng.normal(0, 0.4, 7), kin.lower, kin.upper)
            fused.reset()
            plain.reset()
        a = rng.uniform(-1.5, 1.5, 4) if i % 3 else rng.choice([-1.0, 1.0], 4)
        ee = kin.fk_pos(q)
        c1, c2 = fused.step(a, q, 0.04, ee), plain.step(a, q, 0.04, ee)
        np.testing.assert_array_equal(c1.arm, c2.arm)
        assert (c1.gripper, c1.hold, c1.reason, c1.clipped) == (c2.gripper, c2.hold, c2.reason, c2.clipped)
        kinds.add((c1.hold, c1.reason))
        if not c1.hold:
            q = c1.arm + rng.normal(0, 0.002, 7)  # the arm follows, roughly
    assert len(kinds) >= 3, kinds  # acted, clipped and held along the way
    assert fused.step(np.array([np.nan, 0, 0, 0]), q, 0.04).reason == "non-finite action"


def test_warm_up_leaves_no_state(kin):
    c = Controller(Spec(), kin)
    c.warm_up()
    assert c.safety.last_cmd is None and c.safety.last_grip is None


def test_fused_ee_delta_step_matches_map_then_filter_on_a_second_arm():
    """The same bit-identity on the xArm6 (6 joints, other limits and links): nothing in the kernel assumes 7."""
    from arms import XARM6_URDF, xarm6_spec

    spec = xarm6_spec()
    kin = Kinematics(XARM6_URDF, spec.base_link, spec.ee_link, spec.arm_joints)
    home = np.clip(np.array([0.0, -0.26, -1.27, 0.0, 1.53, 0.0]), kin.lower, kin.upper)
    fused, plain = Controller(spec, kin, home=home), Controller(spec, kin, home=home)
    plain._fused = None
    rng = np.random.default_rng(5)
    q = home.copy()
    for i in range(300):
        a = rng.uniform(-1.2, 1.2, spec.action_dim)
        ee = kin.fk_pos(q)
        c1, c2 = fused.step(a, q, 0.02, ee), plain.step(a, q, 0.02, ee)
        np.testing.assert_array_equal(c1.arm, c2.arm)
        assert (c1.gripper, c1.hold, c1.reason, c1.clipped) == (c2.gripper, c2.hold, c2.reason, c2.clipped)
        if not c1.hold:
            q = c1.arm.copy()


def test_observer_gives_exactly_fk_then_build_observation(kin):
    from arms import XARM6_URDF, xarm6_spec
    from vla_rl_ros.runtime.observe import Observer

    rng = np.random.default_rng(9)
    xspec = xarm6_spec()
    xkin = Kinematics(XARM6_URDF, xspec.base_link, xspec.ee_link, xspec.arm_joints)
    for spec, k in ((Spec(), kin), (xspec, xkin)):
        observe = Observer(spec, k)
        out = np.zeros(spec.obs_dim, dtype=np.float32)
        for _ in range(200):
            q = rng.uniform(k.lower, k.upper)
            grip, obj, goal = rng.uniform(0, 0.08), rng.normal(0.4, 0.3, 3), rng.normal(0.4, 0.3, 3)
            ee = observe(q, grip, obj, goal, out)
            np.testing.assert_array_equal(ee, k.fk_pos(q))
            np.testing.assert_array_equal(out, spec.build_observation(q, grip, k.fk_pos(q), obj, goal))
