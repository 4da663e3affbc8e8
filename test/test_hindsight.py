"""Hindsight goal relabelling (vla_rl_ros/algos/hindsight.py) on hand-built episodes."""
import numpy as np
import pytest

from vla_rl_ros.algos.hindsight import first_success, hindsight_episodes, relabel_goal, relabelled_transitions
from vla_rl_ros.rewards import SuccessDetector
from vla_rl_ros.spec import Spec

SPEC = Spec(task="pick_place")


def episode(object_path, goal=(0.45, -0.15, 0.10)):
    """Observations [L+1, d] with the hand on the object along ``object_path`` [L+1, 3], and zero actions."""
    path = np.asarray(object_path, dtype=np.float64)
    obs = np.stack([SPEC.build_observation(np.zeros(7), 0.05, p + [0, 0, 0.01], p, goal) for p in path])
    return obs, np.zeros((len(path) - 1, SPEC.action_dim), np.float32)


def carry(start, end, moving, resting):
    """The object still for 2 ticks, carried in ``moving`` ticks from start to end, then resting there."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    still = [start] * 2
    move = [start + (end - start) * (i + 1) / moving for i in range(moving)]
    return np.array(still + move + [end] * resting)


def test_relabel_goal_rewrites_only_the_goal_segments():
    obs, _ = episode(carry([0.5, 0, 0.025], [0.6, 0.1, 0.1], 5, 3))
    g = np.array([0.55, 0.05, 0.08], np.float32)
    out = relabel_goal(SPEC, obs, g)
    assert np.allclose(out[:, SPEC.obs_slice("goal_pos")], g)
    assert np.allclose(out[:, SPEC.obs_slice("object_to_goal")], g - obs[:, SPEC.obs_slice("object_pos")], atol=1e-6)
    assert np.allclose(out[:, SPEC.obs_slice("ee_to_goal")], g - obs[:, SPEC.obs_slice("ee_pos")], atol=1e-6)
    for name in ("joint_pos", "gripper_width", "ee_pos", "object_pos", "ee_to_object"):
        assert np.array_equal(out[:, SPEC.obs_slice(name)], obs[:, SPEC.obs_slice(name)])
    assert not np.array_equal(out, obs)  # a copy, and the input is untouched
    assert np.allclose(obs[:, SPEC.obs_slice("goal_pos")], [0.45, -0.15, 0.10])


def test_a_failed_episode_that_moved_the_cube_becomes_a_success_the_detector_agrees_with():
    end = [0.62, 0.12, 0.10]
    obs, act = episode(carry([0.45, -0.10, 0.025], end, moving=8, resting=10))  # failed: its goal is elsewhere
    rel = hindsight_episodes(SPEC, obs, act, k=1, tolerance=0.05, n_consecutive=3)
    assert len(rel) == 1
    r = rel[0]
    assert np.allclose(r.goal, end, atol=1e-6)
    assert len(r.obs) == len(r.actions) + 1 and r.source_length == len(act)
    # the success detector, fed the relabelled episode tick by tick, succeeds exactly on its last tick
    det = SuccessDetector("pick_place", tolerance=0.05, n_consecutive=3, spec=SPEC)
    verdicts = [det.update(o) for o in r.obs[1:]]
    assert verdicts[-1] and not any(verdicts[:-1])
    assert np.array_equal(r.actions, act[: len(r.actions)])


def test_no_relabel_when_the_object_did_not_move_far_enough():
    obs, act = episode(carry([0.5, 0.0, 0.025], [0.55, 0.03, 0.025], moving=4, resting=10))  # 5.8 cm
    assert hindsight_episodes(SPEC, obs, act, k=4, min_displacement=0.10) == []
    assert len(hindsight_episodes(SPEC, obs, act, k=1, min_displacement=0.05)) == 1


def test_goals_outside_the_task_region_are_not_used():
    obs, act = episode(carry([0.42, 0.0, 0.025], [0.62, 0.0, 0.20], moving=20, resting=6))  # up 17.5 cm, on 20 cm
    kw = dict(k=8, goal_low=(0.40, -0.20, 0.025), goal_high=(0.65, 0.20, 0.15), rng=np.random.default_rng(0))
    inside = hindsight_episodes(SPEC, obs, act, **kw)
    assert inside and all(np.all(r.goal >= np.array(kw["goal_low"]) - 1e-6)
                          and np.all(r.goal <= np.array(kw["goal_high"]) + 1e-6) for r in inside)
    anywhere = hindsight_episodes(SPEC, obs, act, k=8, rng=np.random.default_rng(0))
    assert any(r.goal[2] > 0.15 for r in anywhere)  # the final, too-high position is a goal only without a region
    assert hindsight_episodes(SPEC, obs, act, k=4, goal_low=(0.40, -0.20, 0.20), goal_high=(0.41, 0.20, 0.25)) == []


def test_several_goals_give_distinct_prefixes_and_are_seeded():
    obs, act = episode(carry([0.42, -0.15, 0.025], [0.62, 0.15, 0.12], moving=20, resting=5))
    a = hindsight_episodes(SPEC, obs, act, k=4, rng=np.random.default_rng(3))
    b = hindsight_episodes(SPEC, obs, act, k=4, rng=np.random.default_rng(3))
    assert 1 < len(a) <= 4
    assert len({len(r.actions) for r in a}) == len(a)  # no two relabels share a prefix
    assert [len(r.actions) for r in a] == [len(r.actions) for r in b]


def test_first_success_needs_consecutive_ticks_and_ignores_the_reset_state():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]], float)
    assert first_success(pts, np.zeros(3), 0.05, 3) == 7
    assert first_success(pts, np.zeros(3), 0.05, 2) == 3
    assert first_success(pts[:4], np.zeros(3), 0.05, 3) is None


def test_bad_shapes_are_refused():
    obs, act = episode(carry([0.5, 0, 0.025], [0.6, 0.1, 0.1], 5, 3))
    with pytest.raises(ValueError):
        hindsight_episodes(SPEC, obs, act[:-1])


def test_relabelled_transitions_are_rewarded_by_the_runs_reward_and_end_in_success():
    from vla_rl_ros.rewards import make_reward

    obs, act = episode(carry([0.45, -0.10, 0.025], [0.62, 0.12, 0.10], moving=8, resting=10))
    rel = hindsight_episodes(SPEC, obs, act, k=1)
    fn = make_reward("pick_place_task", SPEC)
    c = relabelled_transitions(rel, fn)
    n = len(rel[0].actions)
    assert len(c["reward"]) == n and c["terminated"].tolist() == [0.0] * (n - 1) + [1.0]
    assert np.array_equal(c["next_obs"][:-1], c["obs"][1:])
    per_step = [fn(o, a, o2, bool(t)) for o, a, o2, t in zip(c["obs"], c["action"], c["next_obs"], c["terminated"])]
    assert np.allclose(per_step, c["reward"])
    assert c["reward"][-1] > 0.9  # the success bonus on the relabelled goal's terminal tick
    assert not c["intervention"].any() and not c["is_demo"].any()
    assert relabelled_transitions([], fn) == {}


def test_replay_takes_relabelled_transitions_on_the_online_side(tmp_path):
    from vla_rl_ros.buffer import Replay, create_run
    from vla_rl_ros.rewards import make_reward

    run = create_run(str(tmp_path), "run", SPEC)
    obs, act = episode(carry([0.45, -0.10, 0.025], [0.62, 0.12, 0.10], moving=8, resting=10))
    cols = relabelled_transitions(hindsight_episodes(SPEC, obs, act, k=1), make_reward("pick_place_task", SPEC))
    with Replay([run.buffer_path]) as replay:
        assert replay.add_transitions(cols) == len(cols["reward"])
        assert replay.n_online == len(cols["reward"]) and replay.n_demo == 0
        b = replay.sample(8, demo_ratio=0.5)
        assert b["obs"].shape == (8, SPEC.obs_dim) and not bool(b["is_demo"].any())
        with pytest.raises(ValueError, match="not of length"):
            replay.add_transitions({k: v for k, v in cols.items() if k != "reward"} | {"reward": cols["reward"][:1]})
