"""Recorder core (ROS-free): the episode in flight is closed as ``crash`` when the policy node or the arm (twin)
feeding it goes away, and never by a hold on a state that no longer changes."""
import numpy as np
import pytest

from vla_rl_ros.buffer import Writer, connect
from vla_rl_ros.recorder import EpisodeRecorder, RecorderConfig
from vla_rl_ros.rewards import make_reward
from vla_rl_ros.spec import Spec
from vla_rl_ros.stepmsg import StepRecord

SPEC = Spec(task="reach")
RATE = 20.0
T0 = 1e9


def _step(rng, tick, *, obs_tick=None, hold=False):
    """Tick ``tick`` of a 20 Hz policy, acting on the observation stamped at tick ``obs_tick`` (default: this one's;
    an older one is an arm that stopped publishing)."""
    return StepRecord(obs=rng.uniform(-0.5, 0.5, SPEC.obs_dim).astype(np.float32),
                      action=rng.uniform(-1, 1, SPEC.action_dim).astype(np.float32), tick=tick,
                      obs_stamp=T0 + (tick if obs_tick is None else obs_tick) / RATE, cmd_stamp=T0 + tick / RATE,
                      intervention=False, hold=hold, control_rate_hz=RATE, model_version="m1")


@pytest.fixture()
def rec(tmp_path):
    w = Writer(tmp_path / "buffer.sqlite", spec=SPEC, commit_window_s=0.05)
    ended, lost = [], []
    r = EpisodeRecorder(w, SPEC, make_reward({"name": "reach"}, SPEC),
                        RecorderConfig(task="reach", max_episode_s=2.5, success_tolerance=1e-9, settle_s=0.0,
                                       input_lost_s=1.0),
                        on_episode_end=ended.append, on_input_lost=lambda: lost.append(True))
    r.arm(seed=5, not_before=0.0)
    r.ended, r.lost, r.rng, r.path = ended, lost, np.random.default_rng(0), tmp_path / "buffer.sqlite"
    yield r
    w.close()


def _episodes(rec):
    rec.w.flush()
    con = connect(rec.path, readonly=True)
    try:
        return con.execute("SELECT end_reason, length, success FROM episodes ORDER BY id").fetchall()
    finally:
        con.close()


def test_a_policy_that_stops_sending_steps_crashes_its_episode(rec):
    for k in range(1, 11):
        rec.on_step(_step(rec.rng, k), now=k / RATE)
    assert rec.recording and rec.check(now=10 / RATE + 0.9) is None  # not yet: 0.9 s of silence
    summary = rec.check(now=10 / RATE + 1.0)
    assert summary["end_reason"] == "crash" and not summary["success"] and summary["length"] == 9
    assert rec.ended == [summary] and rec.counters.crashes == 1 and not rec.recording
    assert rec.check(now=100.0) is None  # once
    assert _episodes(rec) == [("crash", 9, 0)]


def test_a_restarted_policy_node_counting_its_ticks_from_one_crashes_the_episode(rec):
    for k in range(100, 110):
        rec.on_step(_step(rec.rng, k))
    summary = rec.on_step(_step(rec.rng, 1))
    assert summary is not None and summary["end_reason"] == "crash"
    rec.arm(seed=6, not_before=0.0)  # the episode manager's next reset
    for k in range(2, 12):
        rec.on_step(_step(rec.rng, k))
    assert rec.recording and rec.counters.crashes == 1  # the new node's episode goes on


def test_an_arm_that_stops_publishing_crashes_the_episode_and_its_holds_do_not_end_it_as_timeout(rec):
    for k in range(1, 41):  # 40 of the 50 ticks the episode may last
        rec.on_step(_step(rec.rng, k))
    # the twin dies after tick 40: the policy acts on its last state for its joint-state timeout, then holds it
    rec.on_step(_step(rec.rng, 41, obs_tick=40))
    for k in range(42, 60):  # past the time limit (tick 50): held ticks on an old observation are no timeout
        assert rec.on_step(_step(rec.rng, k, obs_tick=40, hold=True)) is None, k
    assert rec.recording
    summary = rec.on_step(_step(rec.rng, 60, obs_tick=40, hold=True))  # 1.0 s since the observation of tick 40
    assert summary["end_reason"] == "crash" and rec.counters.crashes == 1
    assert _episodes(rec) == [("crash", 40, 0)]


def test_a_hold_on_a_live_arm_still_ends_as_a_timeout(rec):
    for k in range(1, 11):
        rec.on_step(_step(rec.rng, k))
    for k in range(11, 100):
        if rec.on_step(_step(rec.rng, k, hold=True)):
            break
    assert k == 51 and rec.ended[-1]["end_reason"] == "timeout"


def test_an_arm_that_stops_before_the_episode_begins_disarms_the_recorder_once(rec):
    rec.arm(seed=5, not_before=T0 + 1.0)  # the reset completed; the episode begins with observations after it
    rec.on_step(_step(rec.rng, 1, hold=True))
    for k in range(2, 60):
        rec.on_step(_step(rec.rng, k, obs_tick=1, hold=True))
    assert rec.lost == [True] and not rec.recording  # once, and no episode on the frozen state
    for k in range(60, 70):  # the arm is back, but the recorder waits for the next arm() (a new reset)
        rec.on_step(_step(rec.rng, k))
    assert not rec.recording
    rec.arm(seed=9, not_before=0.0)
    rec.on_step(_step(rec.rng, 70))
    assert rec.recording and rec.lost == [True]


def test_an_estop_hold_is_no_crash(rec):
    for k in range(1, 6):
        rec.on_step(_step(rec.rng, k))
    assert rec.set_estop(True)["end_reason"] == "estop"
    for k in range(6, 60):
        rec.on_step(_step(rec.rng, k, obs_tick=5, hold=True))
    assert rec.counters.crashes == 0 and rec.lost == []


def test_a_success_on_a_state_that_stopped_changing_waits_for_a_new_observation(rec):
    def at_goal(step):
        step.obs[SPEC.obs_slice("goal_pos")] = step.obs[SPEC.obs_slice("ee_pos")]
        return step

    for k in range(1, 6):
        rec.on_step(_step(rec.rng, k))
    # the hand reaches the goal as the twin dies: the policy acts on that last state for a few ticks
    assert rec.on_step(at_goal(_step(rec.rng, 6))) is None
    for k in range(7, 12):
        assert rec.on_step(at_goal(_step(rec.rng, k, obs_tick=6))) is None, k  # no success on a frozen state
    assert rec.on_step(at_goal(_step(rec.rng, 26, obs_tick=6)))["end_reason"] == "crash"
    assert _episodes(rec) == [("crash", 10, 0)]


def test_on_a_live_arm_the_success_comes_with_the_next_new_observation(rec):
    def at_goal(step):
        step.obs[SPEC.obs_slice("goal_pos")] = step.obs[SPEC.obs_slice("ee_pos")]
        return step

    rec.cfg.success_hold_s = 0.0
    for k in range(1, 6):
        rec.on_step(_step(rec.rng, k))
    assert rec.on_step(at_goal(_step(rec.rng, 6, obs_tick=5))) is None  # a tick faster than the joint states
    summary = rec.on_step(at_goal(_step(rec.rng, 7)))
    assert summary["end_reason"] == "success" and summary["success"]
