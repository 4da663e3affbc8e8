"""The object tracker that bridges perception's gaps (vla_rl_ros/perception/tracking.py).

The hand-built cases pin each rule; the last test replays the scripted expert's pick-and-place in the PyBullet
twin with every detection within 12 cm of the hand withheld (harsher than the live camera, which loses the cube
only part of that time), and checks the predicted pose against the twin's truth on every tick.
"""
from __future__ import annotations

import numpy as np
import pytest

from vla_rl_ros.perception.tracking import ObjectTracker, TrackerConfig

Q0 = np.array([0.0, 0.0, 0.0, 1.0])


def hand(x, y, z, yaw=0.0) -> np.ndarray:
    T = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    T[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    T[:3, 3] = (x, y, z)
    return T


def test_a_resting_object_stays_put_until_its_last_sighting_is_too_old():
    tr = ObjectTracker(TrackerConfig(max_age_s=2.0, std_growth_m_per_s=0.01))
    assert tr.predict(0.0) is None  # nothing seen yet
    tr.detection(10.0, [0.5, 0.1, 0.025], Q0, 0.003)
    p = tr.predict(11.5, hand(0.5, 0.1, 0.2))
    assert p is not None and not p.held
    np.testing.assert_allclose(p.position, [0.5, 0.1, 0.025])
    assert p.age_s == pytest.approx(1.5) and p.std_m == pytest.approx(0.003 + 0.015)
    assert tr.predict(12.01) is None  # older than max_age_s: quiet, so the policy holds
    assert tr.predict(9.0) is None  # before the detection it comes from


def test_a_closing_hand_carries_the_object_and_an_opening_one_puts_it_down():
    tr = ObjectTracker(TrackerConfig(max_age_s=5.0))
    tr.detection(0.0, [0.5, 0.0, 0.025], Q0, 0.003)
    tr.hand(hand(0.5, 0.0, 0.03), 0.08)  # open: nothing happens
    assert not tr.held
    tr.hand(hand(0.5, 0.0, 0.03), 0.048)  # closed on the cube
    assert tr.held and tr.grasps == 1
    p = tr.predict(1.0, hand(0.4, 0.2, 0.25, yaw=np.pi / 2))  # lifted, moved and turned a quarter
    np.testing.assert_allclose(p.position, [0.4, 0.2, 0.245], atol=1e-9)  # 5 mm below the hand, as grasped
    np.testing.assert_allclose(abs(p.quaternion @ [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]), 1.0, atol=1e-9)
    assert p.held
    assert tr.predict(1.0) is None  # held, but the hand's pose unknown: no guess
    tr.hand(hand(0.3, 0.2, 0.1), 0.08)  # opened over the goal
    assert not tr.held
    p = tr.predict(2.0, hand(0.3, 0.2, 0.4))  # the hand leaves; the cube stays where it was let go
    np.testing.assert_allclose(p.position, [0.3, 0.2, 0.095], atol=1e-9)


def test_a_hand_shut_on_nothing_or_closing_far_away_holds_nothing():
    tr = ObjectTracker(TrackerConfig(max_age_s=5.0, held_min_width_m=0.005, held_distance_m=0.05))
    tr.detection(0.0, [0.5, 0.0, 0.025], Q0, 0.003)
    tr.hand(hand(0.5, 0.0, 0.03), 0.001)  # shut: missed the cube
    assert not tr.held
    tr.hand(hand(0.5, 0.2, 0.03), 0.048)  # closing 20 cm away
    assert not tr.held
    np.testing.assert_allclose(tr.predict(1.0, hand(0.1, 0.1, 0.3)).position, [0.5, 0.0, 0.025])


def test_a_detection_in_the_hand_sets_where_in_the_hand_it_sits_and_reset_forgets():
    tr = ObjectTracker(TrackerConfig(max_age_s=5.0))
    tr.detection(0.0, [0.5, 0.01, 0.2], Q0, 0.003, hand(0.5, 0.0, 0.21), 0.048)
    assert tr.held
    np.testing.assert_allclose(tr.predict(0.5, hand(0.6, 0.0, 0.31)).position, [0.6, 0.01, 0.3], atol=1e-9)
    tr.reset()
    assert not tr.held and tr.predict(0.6, hand(0.6, 0.0, 0.31)) is None


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_age_s"):
        TrackerConfig(max_age_s=-1.0)
    with pytest.raises(ValueError, match="held_distance_m"):
        TrackerConfig(held_distance_m=float("nan"))


def _replay(max_age_s: float, carry: bool):
    """The expert's pick-and-place in the twin (seeded), the cube's detections withheld within 12 cm of the hand;
    per tick, the truth, the tracker's prediction (None when it has none) and whether the cube was seen."""
    from vla_rl_ros.twin import TwinEnv
    from vla_rl_ros.twin.expert import ScriptedExpert

    env = TwinEnv(task="pick_place")
    try:
        expert = ScriptedExpert(env.spec_)
        # without the held model (carry False), the tracker is told nothing of the gripper: it can only rest
        tr = ObjectTracker(TrackerConfig(max_age_s=max_age_s))
        obs, _ = env.reset(seed=7)
        out, dt = [], 1.0 / env.spec_.control_hz
        for k in range(1000):
            st = env.twin.state()
            T_hand = env.kin.fk(st.q)
            t = k * dt
            if carry:
                tr.hand(T_hand, st.gripper_width)
            seen = bool(np.linalg.norm(st.object_pos - T_hand[:3, 3]) > 0.12)
            if seen:
                tr.detection(t, st.object_pos, st.object_quat, 0.003, T_hand if carry else None,
                             st.gripper_width if carry else None)
            p = tr.predict(t, T_hand)
            out.append((st.object_pos.copy(), None if p is None else p.position, seen))
            obs, _, term, trunc, info = env.step(expert(obs))
            if term or trunc:
                break
        return out, bool(info.get("is_success")), tr.grasps
    finally:
        env.close()


def test_through_the_experts_grasp_and_carry_the_prediction_follows_the_cube():
    ticks, success, grasps = _replay(max_age_s=30.0, carry=True)
    assert success and grasps == 1
    hidden = [(truth, pred) for truth, pred, seen in ticks if not seen]
    assert len(hidden) >= len(ticks) // 3  # the grasp and the carry without a detection
    assert all(pred is not None for _, pred in hidden)
    moved = max(float(np.linalg.norm(truth - ticks[0][0])) for truth, _, _ in ticks)
    assert moved > 0.1  # the cube was carried a real distance
    err = [float(np.linalg.norm(truth - pred)) for truth, pred in hidden]
    assert max(err) < 0.02, f"prediction off by up to {max(err):.3f} m"
    # the same replay with the resting model only: the carried cube is lost by far more
    ticks_rest, _, _ = _replay(max_age_s=30.0, carry=False)
    err_rest = [float(np.linalg.norm(t - p)) for t, p, seen in ticks_rest if not seen]
    assert max(err_rest) > 0.05
