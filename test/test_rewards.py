"""Reward math against hand-computed cases from the seed's formulas (§5), shaping and success detection."""
import json

import numpy as np
import pytest

from vla_rl_ros.rewards import (POTENTIALS, PickAndPlace, PotentialShaping, Reach, SparseSuccess, SuccessDetector,
                                make_reward)
from vla_rl_ros.spec import Spec

SPEC = Spec(task="pick_place")
OPEN, CLOSED_ON_CUBE = 0.08, 0.05


def obs(hand, obj, goal, width=OPEN, spec=SPEC):
    return spec.build_observation(np.zeros(spec.n_arm), width, hand, obj, goal)


A = np.zeros(SPEC.action_dim)


# ------------------------------------------------------------------ pick_and_place
@pytest.mark.parametrize("hand,obj,goal,width,expected", [
    # open hand 0.18 m above the cube: -0.1*0.18 + 0 - 0.1*1.0 (not grasping -> d_target = 1)
    ((0.5, 0.0, 0.20), (0.5, 0.0, 0.02), (0.6, 0.1, 0.02), OPEN, -0.018 - 0.1),
    # holding the cube (closed on it, hand 1 cm from its centre), goal 0.3 m away:
    # -0.1*0.01 + 0.5 - 0.1*0.3
    ((0.5, 0.0, 0.11), (0.5, 0.0, 0.10), (0.5, 0.3, 0.10), CLOSED_ON_CUBE, -0.001 + 0.5 - 0.03),
    # closed but 3 cm away (> 0.02): not grasping
    ((0.5, 0.0, 0.13), (0.5, 0.0, 0.10), (0.5, 0.3, 0.10), CLOSED_ON_CUBE, -0.003 - 0.1),
    # open hand right at the cube: not grasping (gripper not closed)
    ((0.5, 0.0, 0.11), (0.5, 0.0, 0.10), (0.5, 0.3, 0.10), OPEN, -0.001 - 0.1),
    # holding the cube 4 cm from the goal (< 0.05): success bonus
    ((0.5, 0.0, 0.11), (0.5, 0.0, 0.10), (0.5, 0.04, 0.10), CLOSED_ON_CUBE, -0.001 + 0.5 - 0.004 + 10.0),
    # holding the cube 6 cm from the goal: no bonus
    ((0.5, 0.0, 0.11), (0.5, 0.0, 0.10), (0.5, 0.06, 0.10), CLOSED_ON_CUBE, -0.001 + 0.5 - 0.006),
])
def test_pick_and_place_hand_computed(hand, obj, goal, width, expected):
    fn = PickAndPlace(SPEC)
    o2 = obs(hand, obj, goal, width)
    assert fn(o2, A, o2) == pytest.approx(expected, abs=1e-6)


def test_pick_and_place_rewards_the_next_state():
    fn = PickAndPlace(SPEC)
    far = obs((0.5, 0.0, 0.3), (0.5, 0.0, 0.10), (0.5, 0.04, 0.10))
    held_at_goal = obs((0.5, 0.0, 0.11), (0.5, 0.0, 0.10), (0.5, 0.04, 0.10), CLOSED_ON_CUBE)
    assert fn(far, A, held_at_goal) == pytest.approx(-0.001 + 0.5 - 0.004 + 10.0, abs=1e-6)
    assert fn(held_at_goal, A, far) == pytest.approx(-0.02 - 0.1, abs=1e-6)


def test_pick_and_place_constants_configurable():
    held = obs((0.5, 0.0, 0.11), (0.5, 0.0, 0.10), (0.5, 0.04, 0.10), CLOSED_ON_CUBE)
    fn = PickAndPlace(SPEC, success_bonus=5.0, grasp_bonus=1.0)
    assert fn(held, A, held) == pytest.approx(-0.001 + 1.0 - 0.004 + 5.0, abs=1e-6)
    # a threshold below the cube width: the hand on the cube no longer counts as closed
    fn = PickAndPlace(SPEC, closed_width=0.04)
    assert fn(held, A, held) == pytest.approx(-0.001 - 0.1, abs=1e-6)
    with pytest.raises(ValueError, match="unknown params"):
        PickAndPlace(SPEC, succes_bonus=1.0)


def test_batched_equals_per_transition():
    rng = np.random.default_rng(0)
    o = np.stack([obs(rng.uniform(0.3, 0.7, 3), rng.uniform(0.3, 0.7, 3), rng.uniform(0.3, 0.7, 3),
                      rng.choice([OPEN, CLOSED_ON_CUBE])) for _ in range(32)])
    o2 = o[::-1].copy()
    o2[:8, SPEC.obs_slice("ee_pos")] = o2[:8, SPEC.obs_slice("object_pos")] + 0.005  # some grasps
    a = rng.uniform(-1, 1, (32, SPEC.action_dim))
    for fn in (PickAndPlace(SPEC), Reach(SPEC), SparseSuccess(SPEC),
               make_reward({"name": "pick_and_place", "shaping": {"potential": "neg_dist_obj_goal", "gamma": 0.9}})):
        batch = fn(o, a, o2)
        assert batch.shape == (32,)
        np.testing.assert_allclose(batch, [fn(o[i], a[i], o2[i]) for i in range(32)], rtol=0, atol=1e-12)


# ------------------------------------------------------------------ reach, sparse
def test_reach_dense_and_bonus():
    fn = Reach(SPEC)
    far = obs((0.5, 0.0, 0.3), (0.6, 0.0, 0.0), (0.5, 0.3, 0.3))
    assert fn(far, A, far) == pytest.approx(-0.3)
    near = obs((0.5, 0.27, 0.3), (0.6, 0.0, 0.0), (0.5, 0.3, 0.3))
    assert fn(far, A, near) == pytest.approx(-0.03 + 1.0)
    assert Reach(SPEC, success_bonus=0.0, distance_weight=2.0)(far, A, near) == pytest.approx(-0.06)


def test_sparse_success_pick_place_and_reach():
    at_goal = obs((0.5, 0.0, 0.4), (0.5, 0.3, 0.1), (0.5, 0.32, 0.1))  # object 2 cm from goal, hand far
    away = obs((0.5, 0.32, 0.1), (0.5, 0.0, 0.1), (0.5, 0.32, 0.1))    # hand at goal, object far
    pp = SparseSuccess(SPEC, task="pick_place")
    assert pp(away, A, at_goal) == 1.0 and pp(at_goal, A, away) == 0.0
    rc = SparseSuccess(SPEC, task="reach", success_value=2.0)
    assert rc(at_goal, A, away) == 2.0 and rc(away, A, at_goal) == 0.0
    # requiring the grasp: object at goal but not held is no success
    assert SparseSuccess(SPEC, require_grasp=True)(away, A, at_goal) == 0.0


def test_gripper_closed_is_derived_from_width_segment():
    spec = Spec(task="pick_place", arm_joints=tuple(f"j{i}" for i in range(6)))  # a 6-joint arm, other layout
    fn = PickAndPlace(spec)
    o = obs((0.5, 0.0, 0.11), (0.5, 0.0, 0.10), (0.5, 0.3, 0.10), CLOSED_ON_CUBE, spec=spec)
    assert fn(o, np.zeros(spec.action_dim), o) == pytest.approx(0.469, abs=1e-6)
    o[spec.obs_slice("gripper_width")] = 0.07
    assert fn(o, np.zeros(spec.action_dim), o) == pytest.approx(-0.101, abs=1e-6)
    # without a spec the layout is inferred from the observation length
    assert PickAndPlace()(o, np.zeros(spec.action_dim), o) == pytest.approx(-0.101, abs=1e-6)
    with pytest.raises(ValueError, match="entries"):
        PickAndPlace(SPEC)(o, A, o)


# ------------------------------------------------------------------ registry
def test_registry_config_round_trip_and_json():
    cfg = {"name": "pick_and_place", "params": {"success_bonus": 7.0},
           "shaping": {"potential": "neg_dist_obj_goal", "gamma": 0.99}}
    fn = make_reward(cfg, SPEC)
    assert isinstance(fn, PotentialShaping)
    c = fn.config
    assert json.loads(json.dumps(c)) == c
    assert c["params"]["success_bonus"] == 7.0 and c["params"]["approach_weight"] == 0.1
    assert c["shaping"] == {"potential": "neg_dist_obj_goal", "gamma": 0.99, "scale": 1.0, "zero_terminal": True}
    again = make_reward(c, SPEC)
    assert again.config == c
    rng = np.random.default_rng(1)
    o, o2 = rng.uniform(0, 0.6, (2, 16, SPEC.obs_dim))
    np.testing.assert_array_equal(fn(o, A, o2), again(o, A, o2))
    assert make_reward("pick_place").config["name"] == "pick_and_place"
    assert make_reward({"name": "reach"}).config == {"name": "reach", "params": dict(Reach.defaults)}
    assert make_reward({"name": "sparse_success", "params": {"task": "reach"}}).config["params"]["task"] == "reach"
    for bad in ({"name": "nope"}, {"name": "reach", "params": {"x": 1}}, {"name": "reach", "extra": 1},
                {"name": "reach", "shaping": {"gamma": 0.9}}, {"name": "reach", "shaping": {"potential": "nope"}}):
        with pytest.raises(ValueError):
            make_reward(bad)


# ------------------------------------------------------------------ shaping
def test_shaping_single_step_formula():
    gamma = 0.9
    fn = make_reward({"name": "reach", "shaping": {"potential": "neg_dist_hand_goal", "gamma": gamma}}, SPEC)
    s = obs((0.5, 0.0, 0.3), (0.6, 0.0, 0.0), (0.5, 0.3, 0.3))   # d = 0.3
    s2 = obs((0.5, 0.1, 0.3), (0.6, 0.0, 0.0), (0.5, 0.3, 0.3))  # d = 0.2
    assert fn(s, A, s2) == pytest.approx(-0.2 + gamma * -0.2 - (-0.3))
    # terminal next state: its potential counts as zero
    assert fn(s, A, s2, terminated=True) == pytest.approx(-0.2 + 0.0 + 0.3)
    assert fn.potential(s) == pytest.approx(-0.3)


def _random_episode(rng, T, s0):
    """A random walk of the hand and object from s0 (a 'policy' is just a trajectory here)."""
    states = [s0]
    for _ in range(T):
        s = states[-1].copy()
        hand, ob, goal = s[SPEC.obs_slice("ee_pos")], s[SPEC.obs_slice("object_pos")], s[SPEC.obs_slice("goal_pos")]
        hand = hand + rng.normal(0, 0.03, 3)
        ob = ob + rng.normal(0, 0.02, 3)
        width = rng.choice([OPEN, CLOSED_ON_CUBE])
        states.append(obs(hand, ob, goal, width))
    return np.stack(states)


@pytest.mark.parametrize("potential", sorted(POTENTIALS))
def test_shaping_telescopes_and_preserves_policy_ranking(potential):
    gamma, T = 0.95, 40
    base = make_reward({"name": "pick_and_place"}, SPEC)
    shaped = make_reward({"name": "pick_and_place", "shaping": {"potential": potential, "gamma": gamma}}, SPEC)
    rng = np.random.default_rng(2)
    s0 = obs((0.5, 0.0, 0.3), (0.55, 0.05, 0.02), (0.45, -0.2, 0.02))
    disc = gamma ** np.arange(T)
    base_returns, shaped_returns = [], []
    for _ in range(8):  # eight 'policies' from the same start state
        S = _random_episode(rng, T, s0)
        acts = np.zeros((T, SPEC.action_dim))
        r = base(S[:-1], acts, S[1:])
        # not terminated: the difference is exactly gamma^T Phi(s_T) - Phi(s_0)
        rs = shaped(S[:-1], acts, S[1:])
        expected = gamma ** T * shaped.potential(S[-1]) - shaped.potential(S[0])
        assert np.dot(disc, rs) - np.dot(disc, r) == pytest.approx(expected, abs=1e-9)
        # terminated at T: Phi(s_T) = 0, the difference is -Phi(s_0) for every policy
        term = np.zeros(T, bool)
        term[-1] = True
        rs_t = shaped(S[:-1], acts, S[1:], term)
        assert np.dot(disc, rs_t) - np.dot(disc, r) == pytest.approx(-shaped.potential(s0), abs=1e-9)
        base_returns.append(np.dot(disc, r))
        shaped_returns.append(np.dot(disc, rs_t))
    assert len(set(np.round(base_returns, 9))) == 8  # the policies are really different
    assert list(np.argsort(base_returns)) == list(np.argsort(shaped_returns))


def test_shaping_rejects_bad_gamma():
    with pytest.raises(ValueError):
        make_reward({"name": "reach", "shaping": {"potential": "neg_dist_hand_goal", "gamma": 1.5}})


# ------------------------------------------------------------------ success detector
def test_success_detector_needs_n_consecutive_ticks():
    det = SuccessDetector("pick_place", tolerance=0.05, n_consecutive=3, spec=SPEC)
    inside = obs((0.5, 0.0, 0.4), (0.5, 0.3, 0.1), (0.5, 0.33, 0.1))   # object 3 cm from goal
    outside = obs((0.5, 0.0, 0.4), (0.5, 0.3, 0.1), (0.5, 0.36, 0.1))  # 6 cm
    seq = [inside, inside, outside, inside, inside, inside, outside]
    got = [det.update(o) for o in seq]
    assert got == [False, False, False, False, False, True, True]  # latched after the streak
    assert det.streak == 0 and det.succeeded
    det.reset()
    assert not det.succeeded and det.streak == 0
    assert det.update(inside) is False


def test_success_detector_reach_tracks_the_hand():
    det = SuccessDetector("reach", tolerance=0.02, n_consecutive=1)
    hand_at_goal = obs((0.5, 0.3, 0.1), (0.7, 0.0, 0.0), (0.5, 0.31, 0.1))
    object_at_goal = obs((0.5, 0.0, 0.4), (0.5, 0.31, 0.1), (0.5, 0.31, 0.1))
    assert det.update(object_at_goal) is False
    assert det.update(hand_at_goal) is True
    with pytest.raises(ValueError):
        SuccessDetector("reach", n_consecutive=0)
    with pytest.raises(ValueError):
        SuccessDetector("fly")


# ------------------------------------------------------------------ reach_cost (the reach default)
def test_reach_cost_hand_computed():
    from vla_rl_ros.rewards import ReachCost

    spec = Spec(task="reach")
    fn = make_reward("reach_cost", spec)
    assert isinstance(fn, ReachCost) and make_reward(fn.config, spec).config == fn.config
    goal = (0.5, 0.0, 0.2)
    far, near = obs((0.5, 0.2, 0.2), (0.6, 0.0, 0.02), goal, spec=spec), obs((0.5, 0.03, 0.2), (0.6, 0.0, 0.02), goal, spec=spec)
    a = np.zeros(spec.action_dim)
    # -(10 * d(s') + 0.1), the state after the action; + 10 on the terminal success tick only
    assert fn(near, a, far) == pytest.approx(-(10 * 0.2 + 0.1), abs=1e-6)
    assert fn(far, a, near) == pytest.approx(-(10 * 0.03 + 0.1), abs=1e-6)
    assert fn(far, a, near, True) == pytest.approx(-(10 * 0.03 + 0.1) + 10.0, abs=1e-6)
    assert fn.is_success(near) and not fn.is_success(far)
    with pytest.raises(ValueError, match="time_penalty"):
        make_reward({"name": "reach_cost", "params": {"time_penalty": 0.0}})
