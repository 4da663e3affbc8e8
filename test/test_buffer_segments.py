"""Store segments: rollover at an episode boundary by size and by age, read together by Replay, `data` and the
exporter exactly as one store would be, archived without deleting anything, and safe against kill -9."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vla_rl_ros.buffer import (Replay, Writer, archive_segments, create_run, export_mcap, list_segments, list_stores,
                               stats)
from vla_rl_ros.commands import data as data_cmd
from vla_rl_ros.spec import Spec

SPEC = Spec(task="pick_place")
EP_LEN = 40


def episode(w, k, length=EP_LEN, *, flush=True):
    """Episode ``k``: deterministic contents (obs tagged with (k, t)), one in five a demo, one in four a success."""
    rng = np.random.default_rng(k)
    w.begin_episode(seed=k, is_demo=k % 5 == 0, reward_config={"name": "t"})
    for t in range(length):
        o = rng.normal(size=SPEC.obs_dim).astype(np.float32)
        o[:2] = k, t
        a = rng.uniform(-1, 1, SPEC.action_dim).astype(np.float32)
        last = t == length - 1
        w.add_step(o, a, float(rng.normal()), o + 0.5, terminated=last and k % 4 == 0, intervention=t % 7 == 3,
                   model_version=f"v{k // 3}")
    w.end_episode("success" if k % 4 == 0 else "timeout")
    if flush:
        w.flush()


def rows(path, sql, args=()):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def check_segments(base, n_episodes):
    """Every segment is a whole store; episodes are whole, unique and in order across segments."""
    segs = list_segments(base)
    ids = []
    for seg in segs:
        assert rows(seg, "PRAGMA integrity_check") == [("ok",)]
        for eid, length, n in rows(seg, "SELECT e.id, e.length, (SELECT COUNT(*) FROM steps s WHERE "
                                        "s.episode_id = e.id) FROM episodes e ORDER BY e.id"):
            assert n == length == EP_LEN, (seg.name, eid)  # never split across segments
            ids.append(eid)
        orphans = rows(seg, "SELECT COUNT(*) FROM steps WHERE episode_id NOT IN (SELECT id FROM episodes)")
        assert orphans == [(0,)]
    assert ids == list(range(1, n_episodes + 1))
    idx = [i for seg in segs for (i,) in rows(seg, "SELECT idx FROM episodes ORDER BY id")]
    assert idx == list(range(n_episodes))
    return segs


def test_rollover_by_size_happens_at_episode_ends_and_closes_the_segment(tmp_path):
    base = tmp_path / "buffer.sqlite"
    with Writer(base, spec=SPEC, commit_window_s=0.02, segment_max_bytes=64 * 1024) as w:
        for k in range(1, 13):
            episode(w, k)
        assert w.segments_rolled >= 2 and w.segment_path == list_segments(base)[-1]
        for seg in list_segments(base)[:-1]:
            assert not Path(str(seg) + "-wal").exists()  # closed cleanly: checkpointed, no WAL left
    segs = check_segments(base, 12)
    assert len(segs) >= 3 and segs[0] == base and segs[1].name == "buffer.seg000001.sqlite"
    for seg in segs[:-1]:
        page, count = rows(seg, "PRAGMA page_size")[0][0], rows(seg, "PRAGMA page_count")[0][0]
        assert page * count < 64 * 1024 + 40 * 1024  # at most one episode past the limit
    meta = dict(rows(segs[1], "SELECT key, value FROM meta"))
    first = dict(rows(segs[0], "SELECT key, value FROM meta"))
    assert meta["segment_index"] == "1" and meta["series_id"] == first["store_id"] != meta["store_id"]


def test_rollover_by_age(tmp_path):
    base = tmp_path / "buffer.sqlite"
    with Writer(base, spec=SPEC, commit_window_s=0.02, segment_max_s=0.3) as w:
        for k in range(1, 4):
            episode(w, k, flush=False)  # fast: all in the first segment
        time.sleep(0.35)
        episode(w, 4)  # ends past the age limit: the next episode goes to a new segment
        for k in range(5, 7):
            episode(w, k)
    segs = check_segments(base, 6)
    assert [[i for (i,) in rows(s, "SELECT id FROM episodes ORDER BY id")] for s in segs] == [[1, 2, 3, 4], [5, 6]]


def test_a_new_empty_segment_keeps_the_ids_going_after_a_reopen(tmp_path):
    base = tmp_path / "buffer.sqlite"
    with Writer(base, spec=SPEC, commit_window_s=0.02, segment_max_bytes=1) as w:
        episode(w, 1)  # passes the limit: rolls to segment 1, which stays empty
    assert len(list_segments(base)) == 2 and rows(list_segments(base)[1], "SELECT COUNT(*) FROM episodes") == [(0,)]
    with Writer(base, spec=SPEC) as w:  # no limits now: goes on in the newest segment
        assert w.segment_index == 1
        episode(w, 2)
    check_segments(base, 2)


def _write_run(root, name, limit):
    run = create_run(root, name, SPEC, robot_id="arm")
    with run.writer(commit_window_s=0.02, segment_max_bytes=limit) as w:
        for k in range(1, 11):
            episode(w, k)
    return run


def test_replay_reads_segments_as_one_store(tmp_path):
    one = _write_run(tmp_path, "one", 0)
    seg = _write_run(tmp_path, "seg", 48 * 1024)
    assert len(list_segments(one.buffer_path)) == 1 and len(list_segments(seg.buffer_path)) >= 3
    # Replay given the run's store path (as the learner does) or its folder reads every segment
    for src in (seg.buffer_path, seg.path):
        with Replay([one.buffer_path], seed=3) as a, Replay([src], seed=3) as b:
            assert a.refresh() == b.refresh() == 10 * EP_LEN
            assert (a.n_demo, a.n_online) == (b.n_demo, b.n_online)
            ba, bb = a.sample(128, demo_ratio=0.3), b.sample(128, demo_ratio=0.3)
            for key in ba:
                assert np.array_equal(ba[key].numpy(), bb[key].numpy()), key
            ea, eb = a.episodes(), b.episodes()
            assert len(ea) == len(eb) == 10
            for x, y in zip(ea, eb):
                for f in ("id", "idx", "seed", "is_demo", "success", "end_reason", "episode_return",
                          "model_versions", "model_version"):
                    assert getattr(x, f) == getattr(y, f), f
                for f in ("obs", "actions", "rewards", "next_obs", "terminated", "truncated", "intervention"):
                    assert np.array_equal(getattr(x, f), getattr(y, f)), f
    assert list_stores([seg.path]) == list_segments(seg.buffer_path) == list_stores([seg.buffer_path])


def test_replay_picks_up_the_segments_a_live_writer_rolls_over_to(tmp_path):
    base = tmp_path / "buffer.sqlite"
    w = Writer(base, spec=SPEC, commit_window_s=0.02, segment_max_bytes=48 * 1024)
    try:
        episode(w, 1)
        r = Replay([base])
        assert r.refresh() == EP_LEN and len(r.episodes()) == 1
        for k in range(2, 11):
            episode(w, k)
        assert w.segments_rolled >= 2
        assert r.refresh() == 9 * EP_LEN and [e.id for e in r.episodes()] == list(range(1, 11))
        assert r.stores == [p.resolve() for p in list_segments(base)]
        r.close()
    finally:
        w.close()


def test_data_stats_and_export_over_segments(tmp_path, capsys):
    one = _write_run(tmp_path, "one", 0)
    seg = _write_run(tmp_path, "seg", 48 * 1024)
    a, b = stats(one.path), stats(seg.path)
    assert len(b["stores"]) == len(list_segments(seg.buffer_path)) >= 3
    assert a["totals"] == b["totals"] and a["by_model"] == b["by_model"] and a["end_reasons"] == b["end_reasons"]
    assert data_cmd.main(["data", "stats", str(seg.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["episodes"] == 10
    pytest.importorskip("mcap_ros2")
    ca = export_mcap(one.path, tmp_path / "one.mcap")
    cb = export_mcap(seg.path, tmp_path / "seg.mcap")
    assert ca == cb and cb["/rl/episode"] == 10 and cb["/rl/step"] == 10 * EP_LEN


def test_archive_moves_closed_segments_only_and_replay_reads_the_rest(tmp_path, capsys):
    run = create_run(tmp_path, "arm", SPEC)
    w = run.writer(commit_window_s=0.02, segment_max_bytes=48 * 1024)
    try:
        for k in range(1, 11):
            episode(w, k)
        segs = list_segments(run.buffer_path)
        assert len(segs) >= 3 and w.segment_path == segs[-1] and run.segments == segs
        before = {s.name: rows(s, "SELECT id FROM episodes ORDER BY id") for s in segs}
        assert data_cmd.main(["data", "archive", str(run.path), "--keep", "1", "--dry-run"]) == 0
        assert "would move" in capsys.readouterr().out and list_segments(run.buffer_path) == segs
        assert data_cmd.main(["data", "archive", str(run.path), "--keep", "1"]) == 0
        assert "archived: " in capsys.readouterr().out
        assert list_segments(run.buffer_path) == segs[-2:]  # the open segment and the one kept
        manifest = json.loads((run.path / "archive.json").read_text())["archived"]
        assert [m["segment"] for m in manifest] == [s.name for s in segs[:-2]]
        for m in manifest:  # moved whole: same digest, same episodes, nothing deleted
            moved = run.path / m["moved_to"]
            assert moved == run.path / "archive" / m["segment"]
            assert rows(moved, "PRAGMA integrity_check") == [("ok",)]
            assert rows(moved, "SELECT id FROM episodes ORDER BY id") == before[m["segment"]]
            assert m["episodes"] == len(before[m["segment"]]) and m["steps"] == m["episodes"] * EP_LEN
        assert archive_segments(run.buffer_path, keep=0)[0]["segment"] == segs[-2].name  # never the open one
        assert list_segments(run.buffer_path) == [segs[-1]]
        assert archive_segments(run.buffer_path) == []
        for k in range(11, 13):  # the writer goes on in its segment
            episode(w, k)
    finally:
        w.close()
    remaining = [i for s in list_segments(run.buffer_path) for (i,) in rows(s, "SELECT id FROM episodes ORDER BY id")]
    assert remaining[-2:] == [11, 12]
    with Replay([run.buffer_path]) as r:  # the base segment is archived: the path still names the series
        r.refresh()
        assert [e.id for e in r.episodes()] == remaining
        assert len(r.archived) == len(segs) - 1
        assert f"archived: {len(segs) - 1} segment(s)" in r.summary()
    with Replay(list_stores([run.path])) as r:  # as `train --data RUN` does: the first file there is a later segment
        assert r.refresh() == len(remaining) * EP_LEN and len(r.archived) == len(segs) - 1
    st = stats(run.path)
    assert st["totals"]["episodes"] == len(remaining) and len(st["archived"]) == len(segs) - 1
    assert stats(run.path / "archive")["totals"]["episodes"] == 12 - len(remaining)  # the archive reads as a store
    assert stats(tmp_path)["totals"]["episodes"] == len(remaining)  # a folder of runs leaves archives out
    other = create_run(tmp_path, "archive", SPEC)  # (a run may be called archive all the same)
    with other.writer() as w3:
        episode(w3, 1)
    assert stats(tmp_path)["totals"]["episodes"] == len(remaining) + 1
    assert data_cmd.main(["data", "stats", str(run.path)]) == 0
    assert "archived: " in capsys.readouterr().out
    with run.writer() as w2:  # a new writer resumes the newest segment, ids going on
        assert w2.segment_path == list_segments(run.buffer_path)[-1]
        episode(w2, 13)
    assert [i for (i,) in rows(list_segments(run.buffer_path)[-1], "SELECT MAX(id) FROM episodes")] == [13]


# Writes episodes of EP_LEN steps into a segmented store forever: episode k's steps carry reward k. After each
# commit it appends the committed step count to the report file.
WRITER_SCRIPT = r"""
import sys, time
import numpy as np
from vla_rl_ros.buffer import Writer
from vla_rl_ros.spec import Spec

store, report, ep_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = Spec(task="pick_place")
f = open(report, "a")
w = Writer(store, spec=spec, commit_window_s=0.02, segment_max_bytes=32 * 1024,
           on_commit=lambda total, wall: (f.write(f"{total}\n"), f.flush()))
a = np.zeros(spec.action_dim, np.float32)
while True:
    k = w.begin_episode("pick_place")
    for t in range(ep_len):
        o = np.full(spec.obs_dim, t, np.float32)
        w.add_step(o, a, float(k), o + 0.5, model_version="v1")
        if t % 10 == 0:
            time.sleep(0.002)
    w.end_episode("timeout")
"""


def _run_and_kill(base, report, at_least, seed):
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(base), str(report), str(EP_LEN)],
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    reported = 0
    while time.monotonic() < deadline and proc.poll() is None:
        lines = report.read_text().split() if report.exists() else []
        reported = int(lines[-1]) if lines else 0
        if reported >= at_least:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail(f"writer exited early: {proc.stderr.read().decode()}")
    time.sleep(np.random.default_rng(seed).uniform(0.0, 0.05))  # anywhere in the commit cycle
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    report.unlink()
    return reported


def test_a_writer_killed_mid_segment_reopens_and_goes_on(tmp_path):
    base = tmp_path / "buffer.sqlite"
    Writer(base, spec=SPEC).close()
    committed = 0
    for i, at_least in enumerate((150, 300, 300)):
        reported = _run_and_kill(base, tmp_path / "report.txt", at_least, seed=i)
        steps = sum(rows(s, "SELECT COUNT(*) FROM steps")[0][0] for s in list_segments(base))
        assert steps >= committed + reported  # nothing committed and reported is lost
        committed = steps
    segs = list_segments(base)
    assert len(segs) >= 3
    with Writer(base, spec=SPEC, segment_max_bytes=32 * 1024) as w:  # closes the episode a kill left open
        assert w.segment_path == segs[-1]
        k = w.begin_episode()
        w.add_step(np.zeros(SPEC.obs_dim, np.float32), np.zeros(SPEC.action_dim, np.float32), float(k),
                   np.zeros(SPEC.obs_dim, np.float32))
        w.end_episode("timeout")
    ids, n_crash = [], 0
    for seg in list_segments(base):
        assert rows(seg, "PRAGMA integrity_check") == [("ok",)]
        for eid, length, reason in rows(seg, "SELECT id, length, end_reason FROM episodes ORDER BY id"):
            ids.append(eid)
            n_crash += reason == "crash"
            got = rows(seg, "SELECT COUNT(*), MIN(reward), MAX(reward), MAX(t) FROM steps WHERE episode_id = ?",
                       (eid,))[0]
            assert got[0] == length and (length == 0 or got[1] == got[2] == eid)  # whole, in one segment
            assert reason is not None
    assert ids == list(range(1, len(ids) + 1)) and ids[-1] == k  # unique, in order, going on after every kill
    assert n_crash <= 3  # one per kill at most (none where a kill landed between an end and the next begin)
    with Replay([base]) as r:
        assert r.refresh() == sum(rows(s, "SELECT COUNT(*) FROM steps")[0][0] for s in list_segments(base))


def test_an_episode_left_open_in_a_later_segment_is_closed_as_crash_there(tmp_path):
    base = tmp_path / "buffer.sqlite"
    script = r"""
import os, signal, sys
import numpy as np
from vla_rl_ros.buffer import Writer
from vla_rl_ros.spec import Spec
spec = Spec(task="pick_place")
w = Writer(sys.argv[1], spec=spec, commit_window_s=0.02, segment_max_bytes=1)
o, a = np.zeros(spec.obs_dim, np.float32), np.zeros(spec.action_dim, np.float32)
w.begin_episode(); w.add_step(o, a, 1.0, o); w.end_episode("timeout")  # past the limit: segment 1 follows
w.begin_episode()
for _ in range(5):
    w.add_step(o, a, 2.0, o)
w.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script, str(base)], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with Writer(base, spec=SPEC) as w:
        assert w.segment_index == 1 and w.recovered_episodes == [2]
        assert w.begin_episode() == 3
        w.end_episode("reset")
    seg1 = list_segments(base)[1]
    assert rows(seg1, "SELECT id, length, end_reason FROM episodes ORDER BY id") == [(2, 5, "crash"), (3, 0, "reset")]
    assert rows(seg1, "SELECT MAX(t), SUM(truncated) FROM steps WHERE episode_id = 2") == [(4, 1)]
    assert rows(base, "SELECT id, end_reason FROM episodes") == [(1, "timeout")]


def test_archive_to_another_filesystem_copies_checks_and_then_removes(tmp_path):
    from disk import small_tmpfs

    run = _write_run(tmp_path, "arm", 48 * 1024)
    segs = list_segments(run.buffer_path)
    digests = {s.name: rows(s, "SELECT COUNT(*) FROM steps")[0][0] for s in segs}
    with small_tmpfs(tmp_path / "other", "8m") as other:
        moved = archive_segments(run.buffer_path, dest=other / "arm")
        assert [m["segment"] for m in moved] == [s.name for s in segs[:-1]]
        assert list_segments(run.buffer_path) == segs[-1:]
        for m in moved:
            p = other / "arm" / m["segment"]
            assert (run.path / m["moved_to"]).resolve() == p.resolve()
            assert rows(p, "PRAGMA integrity_check") == [("ok",)]
            assert rows(p, "SELECT COUNT(*) FROM steps")[0][0] == digests[m["segment"]] == m["steps"]
        with Replay([run.path]) as r:
            assert r.refresh() == digests[segs[-1].name] and len(r.archived) == len(segs) - 1
