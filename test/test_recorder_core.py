"""Recorder core (ROS-free): ticks → rewarded transitions and episodes in a real SQLite store."""
import numpy as np
import pytest

from vla_rl_ros.buffer import Writer, connect
from vla_rl_ros.recorder import EpisodeRecorder, RecorderConfig
from vla_rl_ros.rewards import make_reward
from vla_rl_ros.spec import Spec
from vla_rl_ros.stepmsg import META_FIELDS, StepDecodeError, StepRecord, decode, encode_layout
from vla_rl_ros.twin.env import TwinEnv
from vla_rl_ros.twin.expert import ScriptedExpert


def _rec(obs, act, tick, *, hold=False, intervention=False, stamp=None, version="m1"):
    return StepRecord(obs=np.asarray(obs, np.float32), action=np.asarray(act, np.float32), tick=tick,
                      obs_stamp=1e9 + tick if stamp is None else stamp, cmd_stamp=1e9 + tick, intervention=intervention,
                      hold=hold, control_rate_hz=20.0, model_version=version)


@pytest.fixture()
def setup(tmp_path):
    spec = Spec(task="reach")
    w = Writer(tmp_path / "buffer.sqlite", spec=spec, commit_window_s=0.05)
    fn = make_reward({"name": "reach"}, spec)
    ended = []
    rec = EpisodeRecorder(w, spec, fn, RecorderConfig(task="reach", max_episode_s=2.5, success_hold_s=0.15, settle_s=0.0),
                          on_episode_end=ended.append)
    rec.arm(seed=7, not_before=0.0)
    yield spec, w, fn, rec, ended, tmp_path
    w.close()


def _rollout(spec, n_ticks, seed=3, expert=True):
    env = TwinEnv(task="reach")
    try:
        obs, _ = env.reset(seed=seed)
        ex = ScriptedExpert(env.spec_)
        steps = []
        for t in range(n_ticks):
            a = ex(obs) if expert else np.zeros(spec.action_dim, np.float32)
            steps.append((obs.copy(), a))
            obs, *_ = env.step(a)
        steps.append((obs.copy(), np.zeros(spec.action_dim, np.float32)))
        return steps
    finally:
        env.close()


def test_success_episode_rewards_and_metadata(setup):
    spec, w, fn, rec, ended, tmp = setup
    steps = _rollout(spec, 40)
    for k, (o, a) in enumerate(steps):
        rec.on_step(_rec(o, a, 100 + k))
        if ended:
            break
    w.flush()
    assert len(ended) == 1 and ended[0]["success"] and ended[0]["end_reason"] == "success"
    assert ended[0]["seed"] == 7 and ended[0]["reward_config"] == fn.config
    con = connect(tmp / "buffer.sqlite", readonly=True)
    rows = con.execute("SELECT t, obs, action, reward, next_obs, terminated FROM steps ORDER BY t").fetchall()
    ep = con.execute("SELECT success, length, end_reason, seed, reward_config FROM episodes").fetchone()
    con.close()
    assert ep[0] == 1 and ep[1] == len(rows) and ep[2] == "success" and ep[3] == 7
    for t, ob, ac, r, nob, term in rows:
        o, a, o2 = (np.frombuffer(x, np.float32) for x in (ob, ac, nob))
        np.testing.assert_array_equal(o, steps[t][0])      # exactly the obs acted on
        np.testing.assert_array_equal(a, steps[t][1])      # exactly the action sent
        np.testing.assert_array_equal(o2, steps[t + 1][0])
        assert r == pytest.approx(float(fn(o, a, o2, bool(term))), rel=1e-6)
    assert rows[-1][5] == 1 and all(r[5] == 0 for r in rows[:-1])


def test_timeout_hold_and_gap(setup):
    spec, w, fn, rec, ended, tmp = setup
    steps = _rollout(spec, 80, expert=False)  # a policy that does nothing never succeeds
    tick = 0
    for k, (o, a) in enumerate(steps):
        tick += 1
        if k == 5:
            rec.on_step(_rec(o, a, tick, hold=True))   # hold breaks the chain
            continue
        if k == 9:
            tick += 3                                   # lost messages: a gap, never a fake transition
        rec.on_step(_rec(o, a, tick))
        if ended:
            break
    assert rec.counters.hold_ticks == 1 and rec.counters.gaps == 1
    assert len(ended) == 1 and ended[0]["end_reason"] == "timeout" and not ended[0]["success"]
    assert ended[0]["length"] == 49  # 2.5 s at 20 Hz: 50 ticks, one of them held (no transition)


def test_an_endless_hold_still_ends_the_episode(setup):
    """A safety hold the arm cannot leave (its every command refused) is still the episode's time: it ends as a
    timeout when the time limit is reached, so the twin resets and the loop goes on."""
    spec, w, fn, rec, ended, tmp = setup
    steps = _rollout(spec, 10, expert=False)
    for k, (o, a) in enumerate(steps[:10]):
        rec.on_step(_rec(o, a, k))
    o, a = steps[9]
    for k in range(10, 200):
        rec.on_step(_rec(o, a, k, hold=True))
        if ended:
            break
    assert len(ended) == 1 and ended[0]["end_reason"] == "timeout" and not ended[0]["success"]
    assert k == 50  # 2.5 s of ticks at 20 Hz: 10 acted (9 transitions) + 41 held
    assert ended[0]["length"] == 9 and rec.counters.hold_ticks == 41


def test_estop_ends_episode_and_waits(setup):
    spec, w, fn, rec, ended, tmp = setup
    steps = _rollout(spec, 10, expert=False)
    for k, (o, a) in enumerate(steps[:5]):
        rec.on_step(_rec(o, a, k))
    rec.set_estop(True)
    assert ended and ended[-1]["end_reason"] == "estop"
    for k, (o, a) in enumerate(steps[5:], start=5):
        assert rec.on_step(_rec(o, a, k)) is None
    assert not rec.recording
    rec.set_estop(False)


def test_step_codec_rejects_bad_input():
    spec = Spec()
    labels, sizes = encode_layout(spec.obs_dim, spec.action_dim, "v1")
    data = np.zeros(spec.obs_dim + spec.action_dim + len(META_FIELDS))
    data[-3:] = (2, 1.5, 1e9)  # chunk 2, step 1.5, from the frame stamped 1e9
    r = decode(labels, sizes, data, spec.obs_dim, spec.action_dim)
    assert r.model_version == "v1" and (r.chunk_seq, r.chunk_step, r.frame_stamp) == (2, 1.5, 1e9)
    # a record of the six fields from before chunks: no chunk
    old = decode(labels, sizes[:2] + [6] + sizes[3:], data[:-3], spec.obs_dim, spec.action_dim)
    assert (old.chunk_seq, old.chunk_step, old.frame_stamp) == (-1, -1.0, 0.0)
    for i, v in ((-3, 1.5), (-3, -2.0), (-2, -5.0), (-1, -1.0)):
        bad = data.copy()
        bad[i] = v
        with pytest.raises(StepDecodeError, match="chunk"):
            decode(labels, sizes, bad, spec.obs_dim, spec.action_dim)
    bad = data.copy()
    bad[3] = np.nan
    with pytest.raises(StepDecodeError, match="NaN"):
        decode(labels, sizes, bad, spec.obs_dim, spec.action_dim)
    with pytest.raises(StepDecodeError, match="values"):
        decode(labels, sizes, data[:-1], spec.obs_dim, spec.action_dim)
    with pytest.raises(StepDecodeError, match="configured"):
        decode(labels, [spec.obs_dim + 1] + sizes[1:], data, spec.obs_dim, spec.action_dim)


def test_an_unarmed_recorder_begins_no_episode_before_its_first_reset(tmp_path):
    # the twin's episode manager starts unarmed: steps from the twin's state before
    # the first /twin/reset must not open an episode that then spans the reset
    spec = Spec(task="reach")
    w = Writer(tmp_path / "buffer.sqlite", spec=spec, commit_window_s=0.05)
    ended = []
    rec = EpisodeRecorder(w, spec, make_reward({"name": "reach"}, spec),
                          RecorderConfig(task="reach", max_episode_s=2.5, success_hold_s=0.15, settle_s=0.0),
                          on_episode_end=ended.append, armed=False)
    try:
        steps = _rollout(spec, 40)
        for k, (o, a) in enumerate(steps[:10]):
            rec.on_step(_rec(o, a, 100 + k))
        assert not rec.recording and rec.counters.waiting == 10
        rec.arm(seed=12, not_before=0.0)
        for k, (o, a) in enumerate(steps):
            rec.on_step(_rec(o, a, 200 + k))
            if ended:
                break
        assert rec.recording or ended
        w.flush()
        assert ended and ended[0]["seed"] == 12
    finally:
        w.close()
