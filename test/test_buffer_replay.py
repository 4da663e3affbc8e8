"""The learner-side Replay: incremental tail, episode boundaries, RLPD demo/online split, episodes for Recap."""
import numpy as np
import pytest

from vla_rl_ros.buffer import Replay, Writer, create_run, import_episodes, list_stores
from vla_rl_ros.spec import Spec, SpecError

SPEC = Spec(task="pick_place")
A = np.zeros(SPEC.action_dim, np.float32)


def tagged(ep, t):
    """An observation that names its (episode, t) in its first two entries."""
    o = np.zeros(SPEC.obs_dim, np.float32)
    o[0], o[1] = ep, t
    return o


def write_episode(w, tag, length, *, end="timeout", terminated=False, intervention=(), model="v1", reward=None,
                  demo=False):
    w.begin_episode(is_demo=demo)
    for t in range(length):
        last = t == length - 1
        w.add_step(tagged(tag, t), A, float(tag if reward is None else reward), tagged(tag, t + 1),
                   terminated=terminated and last, intervention=t in intervention, model_version=model)
    w.end_episode(end)


def test_refresh_is_incremental(tmp_path):
    store = tmp_path / "buffer.sqlite"
    w = Writer(store, spec=SPEC)
    for i in range(3):
        write_episode(w, i, 50)
    w.flush()
    r = Replay([store], chunk_rows=64)  # small chunks: several queries per refresh
    assert r.refresh() == 150 and r.rows_fetched == 150
    assert r.refresh() == 0 and r.rows_fetched == 150  # nothing re-read
    write_episode(w, 3, 40)
    w.begin_episode()  # an open episode: its committed steps are usable transitions already
    w.add_step(tagged(4, 0), A, 4.0, tagged(4, 1))
    w.flush()
    assert r.refresh() == 41 and r.rows_fetched == 191 and len(r) == 191
    w.close()
    r.close()


def test_next_obs_and_done_are_correct_at_episode_boundaries(tmp_path):
    store = tmp_path / "buffer.sqlite"
    with Writer(store, spec=SPEC) as w:
        write_episode(w, 0, 7, end="success", terminated=True)
        write_episode(w, 1, 5, end="timeout")           # cut: last step truncated, not terminal
        write_episode(w, 2, 1, end="success", terminated=True)
        write_episode(w, 3, 9, end="estop")
    r = Replay([store])
    r.refresh()
    n = r.n_online
    obs, nxt, done = r._online.obs[:n], r._online.next_obs[:n], r._online.terminated[:n]
    np.testing.assert_array_equal(nxt[:, 0], obs[:, 0])          # never crosses into another episode
    np.testing.assert_array_equal(nxt[:, 1], obs[:, 1] + 1)
    terminal = {(0, 6), (2, 0)}
    expected = np.array([(int(o[0]), int(o[1])) in terminal for o in obs], np.float32)
    np.testing.assert_array_equal(done, expected)
    b = r.sample(512)
    np.testing.assert_array_equal(b["next_obs"][:, 1], b["obs"][:, 1] + 1)
    assert set(b["done"].tolist()) <= {0.0, 1.0}
    r.close()


def test_demo_online_split_ratio(tmp_path):
    store = tmp_path / "buffer.sqlite"
    w = Writer(store, spec=SPEC)
    T = 100
    demo = {"obs": np.stack([tagged(100, t) for t in range(T + 1)]), "actions": np.zeros((T, SPEC.action_dim)),
            "rewards": np.full(T, 100.0), "success": True}
    import_episodes(w, [demo])                              # 100 demo steps
    for i in range(10):                                     # 1000 online steps, 50 of them interventions
        write_episode(w, i, 100, intervention=range(5))
    w.close()
    r = Replay([store], seed=0)
    r.refresh()
    assert (r.n_demo, r.n_online) == (150, 950)
    n_batches, B, ratio = 200, 256, 0.25
    demo_side, interv_in_demo, from_demo_eps = 0, 0, 0
    online_tags = []
    for _ in range(n_batches):
        b = r.sample(B, demo_ratio=ratio)
        assert b["obs"].shape == (B, SPEC.obs_dim) and b["reward"].shape == (B,)
        side = b["is_demo"] | b["intervention"]
        assert int(side.sum()) == round(B * ratio)          # exact per batch
        demo_side += int(side.sum())
        interv_in_demo += int(b["intervention"].sum())
        from_demo_eps += int(b["is_demo"].sum())
        online_tags.append(b["obs"][~side][:, 0].numpy())
    # within the demo side, draws are uniform: 50 of its 150 transitions are interventions
    p = interv_in_demo / demo_side
    assert abs(p - 50 / 150) < 5 * np.sqrt((1 / 3) * (2 / 3) / demo_side)
    assert interv_in_demo + from_demo_eps == demo_side
    # within the online side, each of the 10 episodes is drawn ~equally often (95 of 950 each)
    counts = np.bincount(np.concatenate(online_tags).astype(int), minlength=10)
    n_online = counts.sum()
    assert abs(counts / n_online - 0.1).max() < 5 * np.sqrt(0.1 * 0.9 / n_online)
    r.close()


def test_one_empty_side_samples_from_the_other(tmp_path):
    store = tmp_path / "buffer.sqlite"
    w = Writer(store, spec=SPEC)
    r = Replay([store])
    with pytest.raises(RuntimeError, match="empty"):
        r.sample(4)
    write_episode(w, 0, 20)
    w.flush()
    r.refresh()
    b = r.sample(64, demo_ratio=0.9)
    assert not b["is_demo"].any() and b["obs"].shape[0] == 64
    w.close()
    r.close()
    store2 = tmp_path / "demo.sqlite"
    w = Writer(store2, spec=SPEC)
    import_episodes(w, [{"obs": np.zeros((6, SPEC.obs_dim)), "actions": np.zeros((5, SPEC.action_dim)),
                         "rewards": np.zeros(5)}])
    w.close()
    r = Replay([store2])
    r.refresh()
    assert r.sample(32, demo_ratio=0.0)["is_demo"].all()
    r.close()


def test_capacity_is_fifo_per_side(tmp_path):
    store = tmp_path / "buffer.sqlite"
    with Writer(store, spec=SPEC) as w:
        for i in range(5):
            write_episode(w, i, 50, reward=0.0)
    r = Replay([store], capacity=120, chunk_rows=30)
    r.refresh()
    assert r.n_online == 120 and r.rows_fetched == 250
    kept = sorted(zip(r._online.obs[:, 0].astype(int), r._online.obs[:, 1].astype(int)))
    newest = sorted((i, t) for i in range(5) for t in range(50))[-120:]
    assert kept == newest
    r.close()


def test_episodes_for_recap_are_incremental_and_complete(tmp_path):
    store = tmp_path / "buffer.sqlite"
    w = Writer(store, spec=SPEC)
    write_episode(w, 0, 10, end="success", terminated=True)
    write_episode(w, 1, 12, end="timeout", intervention=(3,))
    w.begin_episode()
    w.add_step(tagged(2, 0), A, 2.0, tagged(2, 1))
    w.flush()
    r = Replay([store])
    eps = r.episodes()
    assert [(e.id, len(e), e.success, e.end_reason) for e in eps] == [(1, 10, True, "success"), (2, 12, False, "timeout")]
    e1 = eps[1]
    np.testing.assert_array_equal(e1.obs[:, 1], np.arange(12))
    np.testing.assert_array_equal(e1.next_obs[:, 1], np.arange(1, 13))
    assert e1.intervention.tolist() == [t == 3 for t in range(12)] and e1.truncated[-1] and not e1.terminated.any()
    assert eps[0].terminated[-1] and e1.model_versions == ["v1"] and e1.rewards.dtype == np.float32
    assert r.episode_rows_fetched == 22
    assert len(r.episodes()) == 2 and r.episode_rows_fetched == 22  # the open episode waits; nothing re-read
    w.add_step(tagged(2, 1), A, 2.0, tagged(2, 2))
    w.end_episode("estop")
    w.flush()
    eps = r.episodes()
    assert [len(e) for e in eps] == [10, 12, 2] and eps[2].end_reason == "estop" and r.episode_rows_fetched == 24
    w.close()
    r.close()


def test_an_episode_without_a_step_is_skipped_and_the_next_ones_load(tmp_path):
    """An episode can end before its first recorded tick (on the live graph: the arm held on a stale pose until the
    episode's time ran out). It has nothing to learn from; Recap's Episode refuses length 0, and a learner that got
    one failed on every round. episodes() skips it, counts it, and goes on to the next."""
    from vla_rl_ros.algos.recap import as_episode

    store = tmp_path / "buffer.sqlite"
    w = Writer(store, spec=SPEC)
    write_episode(w, 0, 5)
    write_episode(w, 1, 0)  # begun and ended, no step
    write_episode(w, 2, 3, end="success", terminated=True)
    w.flush()
    r = Replay([store])
    eps = r.episodes()
    assert [(e.id, len(e)) for e in eps] == [(1, 5), (3, 3)] and r.episodes_empty == 1
    for e in eps:  # what the continual Recap learner builds from each
        as_episode({"obs": e.obs, "actions": e.actions, "success": e.success, "intervention": e.intervention})
    write_episode(w, 3, 0)
    write_episode(w, 4, 2)
    w.flush()
    assert [e.id for e in r.episodes()] == [1, 3, 5] and r.episodes_empty == 2
    w.close()
    r.close()


def test_capacity_holds_the_newest_own_episodes_and_every_demo(tmp_path):
    """A days-long run: with a capacity of 120 transitions the arm's own episodes held (and the online ring) stay
    within it, the newest kept; demonstrations and corrected episodes are held beside them, all of them; what
    was dropped is counted, and derived transitions never evict real ones."""
    store = tmp_path / "buffer.sqlite"
    w = Writer(store, spec=SPEC)
    write_episode(w, 100, 20, demo=True)
    write_episode(w, 101, 20, demo=True)
    for i in range(5):
        write_episode(w, i, 50)
    write_episode(w, 102, 30, intervention=(4, 5))  # corrected by a person: an anchor, like a demo
    w.flush()
    r = Replay([store], capacity=120, demo_capacity=1000, derived_capacity=200)

    def held():
        return [int(e.obs[0, 0]) for e in r.episodes()]

    assert held() == [100, 101, 3, 4, 102]  # own: the newest 2 x 50 <= 120; anchors: all, in order
    assert r.episodes_loaded == 8 and r.n_episodes == 5
    assert (r.episodes_evicted, r.episode_steps_evicted) == (3, 150)
    for i in range(5, 9):
        write_episode(w, i, 50)
    w.flush()
    assert held() == [100, 101, 102, 7, 8] and r.episodes_loaded == 12 and r.episodes_evicted == 7
    # the rings: the online side at capacity, the demo side holds every demo and intervention step
    r.refresh()
    assert r._online.size == 120 and r.n_demo == 20 + 20 + 2
    assert r.evicted["online_transitions"] == 9 * 50 + 28 - 120 and r.evicted["demo_transitions"] == 0
    assert sorted(set(r._online.obs[:, 0].astype(int).tolist())) == [6, 7, 8]  # the newest 120 rows
    # derived (hindsight) transitions: their own ring, bounded, the arm's rows untouched
    cols = {k: getattr(r._online, k)[:100].copy() for k in ("obs", "action", "reward", "next_obs", "terminated",
                                                             "intervention", "is_demo")}
    for _ in range(3):
        r.add_transitions(cols)
    assert r._online.size == 120 and r._derived.size == 200 and r.n_online == 320
    assert sorted(set(r._online.obs[:, 0].astype(int).tolist())) == [6, 7, 8]
    assert r.sample(64, demo_ratio=0.0)["obs"].shape == (64, SPEC.obs_dim)
    w.close()
    r.close()


def test_several_stores_read_together(tmp_path):
    runs = tmp_path / "runs"
    for robot, n in (("arm-a", 30), ("arm-b", 20)):
        run = create_run(runs, robot, SPEC, robot_id=robot)
        with run.writer() as w:
            write_episode(w, 1 if robot == "arm-a" else 2, n)
    r = Replay(list_stores([runs]))
    assert r.refresh() == 50 and len(r.stores) == 2
    assert sorted(set(r._online.obs[:50, 0].astype(int).tolist())) == [1, 2]
    create_run(runs / "other", "j", SPEC.replace(action_mode="joint_delta"))
    with pytest.raises(SpecError, match="action_mode"):
        r.add_store(runs / "other" / "j")
    r.close()
