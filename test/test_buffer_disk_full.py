"""A full disk (a real, small tmpfs): the writer stops committing with a clear error state, keeps the steps in
memory (bounded, the oldest dropped and counted), corrupts nothing, and resumes when space returns."""
import contextlib
import sqlite3
import time

import numpy as np
import pytest

from disk import fill, small_tmpfs
from vla_rl_ros.buffer import BufferError, Writer, is_disk_full
from vla_rl_ros.spec import Spec

SPEC = Spec(task="pick_place")
CAP = 3000


def rows(path, sql):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def episode(w, rng, n):
    w.begin_episode()
    for _ in range(n):
        o = rng.normal(size=SPEC.obs_dim).astype(np.float32)
        w.add_step(o, rng.uniform(-1, 1, SPEC.action_dim), 1.0, o + 0.1, model_version="v1")
    w.end_episode("timeout")
    return n


def wait(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_the_disk_full_errors_are_recognised():
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert is_disk_full(OSError(28, "No space left on device"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(OSError(5, "Input/output error"))


def test_a_full_disk_keeps_the_steps_in_memory_and_recording_resumes_when_space_returns(tmp_path):
    rng = np.random.default_rng(0)
    with small_tmpfs(tmp_path / "fs", "4m") as fs:
        base = fs / "buffer.sqlite"
        w = Writer(base, spec=SPEC, commit_window_s=0.02, disk_full_retry_max_s=0.2, max_pending_steps=CAP,
                   close_timeout_s=2.0)
        try:
            added = sum(episode(w, rng, 50) for _ in range(3))
            w.flush()
            filler = fill(fs)
            deadline = time.monotonic() + 60
            while not w.disk_full:  # the WAL's free pages fill first, then a commit fails
                assert time.monotonic() < deadline, "the writer never noticed the full disk"
                added += episode(w, rng, 50)
                time.sleep(0.03)
            assert w.disk_full and "full" in w.disk_full_error and w.disk_full_since is not None
            assert w.n_disk_full == 1 and w.pending_steps > 0
            # nothing committed is damaged, and the store says what was committed
            assert rows(base, "PRAGMA integrity_check") == [("ok",)]
            assert rows(base, "SELECT COUNT(*) FROM steps")[0][0] == w.committed_steps
            # the recorder's thread is not blocked, and the queue is bounded: the oldest steps go, counted
            t0 = time.perf_counter()
            added += episode(w, rng, CAP + 500)
            assert time.perf_counter() - t0 < 30
            # (a batch in flight when the steps arrived goes back to the queue, and is capped there)
            assert wait(lambda: w.pending_steps <= CAP and w.dropped_steps >= 500, 10), (w.pending_steps,
                                                                                         w.dropped_steps)
            assert wait(lambda: w.disk_full_retries >= 3, 10)  # retried, with a backoff
            filler.unlink()  # space returns
            assert wait(lambda: not w.disk_full and w.pending_steps == 0), w.disk_full_error
            added += episode(w, rng, 20)
            w.flush(timeout=10)
            stored = rows(base, "SELECT COUNT(*) FROM steps")[0][0]
            assert stored == w.committed_steps == added - w.dropped_steps  # every step stored or counted
            meta = dict(rows(base, "SELECT key, value FROM meta"))
            assert int(meta["dropped_steps"]) == w.dropped_steps
            assert rows(base, "SELECT COUNT(*), SUM(ended_at IS NULL) FROM episodes")[0] == (6, 0)  # rows kept
            assert rows(base, "PRAGMA integrity_check") == [("ok",)]
        except BaseException:
            with contextlib.suppress(BufferError):  # (the failure above is the one to see)
                w.close()
            raise
        w.close()
        assert rows(base, "PRAGMA integrity_check") == [("ok",)]


def test_a_writer_closed_on_a_full_disk_says_what_it_could_not_store(tmp_path):
    rng = np.random.default_rng(1)
    with small_tmpfs(tmp_path / "fs", "2m") as fs:
        base = fs / "buffer.sqlite"
        w = Writer(base, spec=SPEC, commit_window_s=0.02, disk_full_retry_max_s=0.1, close_timeout_s=0.5)
        episode(w, rng, 30)
        w.flush()
        fill(fs)
        while not w.disk_full:
            episode(w, rng, 50)
            time.sleep(0.03)
        committed = w.committed_steps
        with pytest.raises(BufferError, match="disk still full") as e:
            w.close()
        assert "queued steps not stored" in str(e.value)
        assert rows(base, "PRAGMA integrity_check") == [("ok",)]
        assert rows(base, "SELECT COUNT(*) FROM steps")[0][0] == committed
