"""The preference store: round trip, refusals, versioning, and labels surviving kill -9 of a writer process."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from vla_rl_ros.buffer.schema import SchemaVersionError
from vla_rl_ros.preferences.store import (LABELS, PREFS_FILE, SCHEMA_VERSION, PreferenceStore, Segment)

A = Segment("store-a", "arm", 3, 0, 25)
B = Segment("store-a", "arm", 7, 10, 35)


def test_round_trip_and_counts(tmp_path):
    with PreferenceStore(tmp_path) as s:
        assert (tmp_path / PREFS_FILE).is_file()
        p1 = s.add(A, B, "left", "alice", info={"query": "random"})
        p2 = s.add(B, A, "equal", "oracle:true")
        s.add(A, B, "skip", "bob")
    with PreferenceStore(tmp_path, readonly=True) as s:
        got = s.labels()
        assert [p.uid for p in got] == [p1.uid, p2.uid, got[2].uid]
        assert got[0].left == A and got[0].right == B and got[0].label == "left" and got[0].info == {"query": "random"}
        assert [p.target for p in got] == [1.0, 0.5, None]
        assert [p.label for p in s.labels(trainable=True)] == ["left", "equal"]
        assert s.labels(since_id=p2.id)[0].label == "skip"
        assert s.counts() == {"left": 1, "right": 0, "equal": 1, "skip": 1}
        assert (A, B) in s.asked() and (B, A) in s.asked()
        assert s.meta()["schema_version"] == str(SCHEMA_VERSION)
        with pytest.raises(Exception):
            s.add(A, B, "left", "x")


def test_refusals(tmp_path):
    with pytest.raises(ValueError):
        Segment("s", "r", 1, 5, 5)
    with pytest.raises(ValueError):
        Segment("s", "r", 1, -1, 3)
    with PreferenceStore(tmp_path) as s:
        with pytest.raises(ValueError):
            s.add(A, B, "maybe", "alice")
        with pytest.raises(ValueError):
            s.add(A, B, "left", "")
        assert s.count() == 0
    with pytest.raises(FileNotFoundError):
        PreferenceStore(tmp_path / "nowhere", create=False)


def test_newer_schema_refused(tmp_path):
    PreferenceStore(tmp_path).close()
    con = sqlite3.connect(tmp_path / PREFS_FILE)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError):
        PreferenceStore(tmp_path)


def test_migration_steps_apply_in_one_transaction_each(tmp_path, monkeypatch):
    """A file at version SCHEMA_VERSION is taken to SCHEMA_VERSION + 1 by a registered step (simulated upgrade)."""
    from vla_rl_ros.preferences import store as st

    PreferenceStore(tmp_path).close()
    monkeypatch.setattr(st, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(st.MIGRATIONS, SCHEMA_VERSION, ["ALTER TABLE preferences ADD COLUMN weight REAL"])
    with st.PreferenceStore(tmp_path) as s:
        assert s.meta()["schema_version"] == str(SCHEMA_VERSION + 1)
        cols = [r[1] for r in s._con.execute("PRAGMA table_info(preferences)")]
        assert "weight" in cols
    # a failing step leaves the old version in place
    monkeypatch.setattr(st, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    monkeypatch.setitem(st.MIGRATIONS, SCHEMA_VERSION + 1, ["ALTER TABLE nosuch ADD COLUMN x"])
    with pytest.raises(sqlite3.OperationalError):
        st.PreferenceStore(tmp_path)
    con = sqlite3.connect(tmp_path / PREFS_FILE)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION + 1)
    con.close()


# Writes labels forever; prints each label's uid once add() has returned (i.e. committed).
WRITER = r"""
import sys
from vla_rl_ros.preferences.store import PreferenceStore, Segment, LABELS
s = PreferenceStore(sys.argv[1])
i = 0
while True:
    p = s.add(Segment("st", "arm", i, 0, 10), Segment("st", "arm", i + 1, 5, 15), LABELS[i % 4], "oracle:loop",
              info={"i": i})
    print(p.uid, flush=True)
    i += 1
"""


@pytest.mark.parametrize("seed", [0, 1])
def test_labels_survive_kill9(tmp_path, seed):
    import random

    rnd = random.Random(seed)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    want = rnd.randint(40, 120)  # seeded kill point, counted in committed labels
    committed = []
    try:
        deadline = time.monotonic() + 120
        while len(committed) < want:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"writer died: {proc.stderr.read()}")
            committed.append(line.strip())
            assert time.monotonic() < deadline
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    committed += [ln.strip() for ln in proc.stdout.read().splitlines() if len(ln.strip()) == 32]  # printed, unread
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / (PREFS_FILE + "-wal")).exists()  # killed with its WAL open, not closed cleanly
    with PreferenceStore(tmp_path) as s:
        assert s.integrity_check() == "ok"
        got = s.labels()
        uids = [p.uid for p in got]
        # every label the writer saw committed is there, in order; at most the one being printed is extra
        assert uids[:len(committed)] == committed
        assert len(uids) - len(committed) in (0, 1)
        for k, p in enumerate(got):
            assert p.info == {"i": k} and p.label == LABELS[k % 4] and p.left.episode == k
        s.add(A, B, "left", "after")  # and it takes new labels
        assert s.count() == len(got) + 1


def test_threads_share_one_store(tmp_path):
    import threading

    with PreferenceStore(tmp_path) as s:
        def work(k):
            for i in range(25):
                s.add(Segment("st", "arm", k, i, i + 5), B, "left", f"thread{k}")

        ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert s.count() == 100 and s.integrity_check() == "ok"
        assert {p.labeller for p in s.labels()} == {f"thread{k}" for k in range(4)}
