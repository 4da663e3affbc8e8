"""Crash safety and concurrency: kill -9 a writer process mid-run; read while another process writes."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from vla_rl_ros.buffer import Replay, Writer, create_store
from vla_rl_ros.spec import Spec

SPEC = Spec(task="pick_place")
EP_LEN = 50

# Writes a known sequence forever: the k-th step of the store carries reward k, obs = k, next_obs = k + 0.5,
# in episodes of EP_LEN steps. After every commit it appends the committed step count to the report file.
WRITER_SCRIPT = r"""
import sys, time, sqlite3
import numpy as np
from vla_rl_ros.buffer import Writer
from vla_rl_ros.spec import Spec

store, report, ep_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = Spec(task="pick_place")
con = sqlite3.connect(store)
k = int(con.execute("SELECT COUNT(*) FROM steps").fetchone()[0])
con.close()
f = open(report, "a")
def on_commit(total, wall):
    f.write(f"{k0 + total}\n")
    f.flush()
k0 = k
w = Writer(store, spec=spec, commit_window_s=0.02, on_commit=on_commit)
a = np.zeros(spec.action_dim, np.float32)
while True:
    w.begin_episode("pick_place")
    for t in range(ep_len):
        o = np.full(spec.obs_dim, k, np.float32)
        w.add_step(o, a, float(k), o + 0.5, model_version="v1")
        k += 1
        if k % 20 == 0:
            time.sleep(0.002)
    w.end_episode("timeout")
"""


def start_writer(store, report):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(store), str(report), str(EP_LEN)], env=env,
                            stderr=subprocess.PIPE)


def reported(report):
    if not report.exists():
        return 0
    lines = [ln for ln in report.read_text().splitlines() if ln.strip()]
    return int(lines[-1]) if lines else 0


def wait_for(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def kill9_after(proc, report, at_least):
    ok = wait_for(lambda: reported(report) >= at_least or proc.poll() is not None)
    if proc.poll() is not None:
        pytest.fail(f"writer exited early: {proc.stderr.read().decode()}")
    assert ok, "writer made no progress"
    time.sleep(np.random.default_rng().uniform(0.0, 0.05))  # land anywhere in the commit cycle
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def check_store(store, min_steps):
    con = sqlite3.connect(store)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = con.execute("SELECT reward, obs, next_obs FROM steps ORDER BY id").fetchall()
    finally:
        con.close()
    assert len(rows) >= min_steps, f"{min_steps} steps were reported committed, only {len(rows)} in the store"
    rewards = np.array([r[0] for r in rows])
    np.testing.assert_array_equal(rewards, np.arange(len(rows)))  # every committed step, in order, no gaps
    obs = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), SPEC.obs_dim)
    nxt = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), SPEC.obs_dim)
    np.testing.assert_array_equal(obs, np.repeat(rewards[:, None], SPEC.obs_dim, 1).astype(np.float32))
    np.testing.assert_array_equal(nxt, obs + 0.5)
    return len(rows)


def test_kill9_loses_nothing_committed_and_reopen_appends(tmp_path):
    store, report = tmp_path / "buffer.sqlite", tmp_path / "committed.txt"
    create_store(store, SPEC)
    n_prev = 0
    for round_ in range(2):  # crash, resume in a new process, crash again
        proc = start_writer(store, report)
        kill9_after(proc, report, n_prev + 1500)
        committed = reported(report)
        n_prev = check_store(store, committed)

    # Reopen: the episode the crash left open is closed as 'crash' with its committed steps, then we append.
    con = sqlite3.connect(store)
    n_crashed = con.execute("SELECT COUNT(*) FROM episodes WHERE end_reason = 'crash'").fetchone()[0]
    open_ids = [r[0] for r in con.execute("SELECT id FROM episodes WHERE ended_at IS NULL")]
    con.close()
    assert n_crashed >= 1  # the first round's open episode, closed when round 2 reopened
    with Writer(store, spec=SPEC) as w:
        assert w.recovered_episodes == open_ids
        e = w.begin_episode()
        w.add_step(np.full(SPEC.obs_dim, n_prev, np.float32), np.zeros(SPEC.action_dim), float(n_prev),
                   np.full(SPEC.obs_dim, n_prev + 0.5, np.float32))
        w.end_episode("timeout")
    check_store(store, n_prev + 1)
    con = sqlite3.connect(store)
    try:
        for eid in open_ids:
            reason, length, ret = con.execute(
                "SELECT end_reason, length, episode_return FROM episodes WHERE id = ?", (eid,)).fetchone()
            n, s = con.execute("SELECT COUNT(*), COALESCE(SUM(reward), 0) FROM steps WHERE episode_id = ?",
                               (eid,)).fetchone()
            assert (reason, length, ret) == ("crash", n, pytest.approx(s))
            if n:
                last = con.execute("SELECT truncated FROM steps WHERE episode_id = ? ORDER BY t DESC LIMIT 1",
                                   (eid,)).fetchone()[0]
                assert last == 1
        assert con.execute("SELECT MAX(id) FROM episodes").fetchone()[0] == e
        assert con.execute("SELECT COUNT(*) FROM episodes WHERE ended_at IS NULL").fetchone()[0] == 0
        idx = [r[0] for r in con.execute("SELECT idx FROM episodes ORDER BY id")]
        assert idx == list(range(len(idx)))
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


def test_reader_sees_growing_data_while_another_process_writes(tmp_path):
    store, report = tmp_path / "buffer.sqlite", tmp_path / "committed.txt"
    create_store(store, SPEC)
    proc = start_writer(store, report)
    try:
        replay = Replay([store])
        sizes = []
        deadline = time.monotonic() + 30
        while len(set(sizes)) < 5 and time.monotonic() < deadline:
            replay.refresh()
            sizes.append(len(replay))
            time.sleep(0.03)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert len(set(sizes)) >= 5 and sizes == sorted(sizes) and sizes[-1] > 0
        # every transition read so far is complete and consistent
        n = replay.n_online
        obs, nxt, rew = replay._online.obs[:n], replay._online.next_obs[:n], replay._online.reward[:n]
        np.testing.assert_array_equal(rew, np.arange(n))
        np.testing.assert_array_equal(obs[:, 0], rew)
        np.testing.assert_array_equal(nxt, obs + 0.5)
        # Recap's view: only completed episodes, while episodes keep completing
        eps = replay.episodes()
        assert all(len(e) == EP_LEN and e.end_reason == "timeout" for e in eps)
        replay.close()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
