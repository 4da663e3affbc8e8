"""The durable store of preference labels: ``<run>/preferences.sqlite``.

A label compares two *segments* of recorded episodes (Christiano et al. 2017):
``(store_id, run, episode_id, t0, t1)`` each, ticks ``t0 <= t < t1`` of the
episode, and says which one the labeller prefers: ``left``, ``right``,
``equal`` (both as good: the Bradley–Terry target is 1/2) or ``skip`` (cannot
tell: kept, so a person is not asked again, but never trained on).

Why a file of its own, beside the transition store and not a table inside it
-------------------------------------------------------------------------
* Labels are written by another process (the labelling page, an oracle) while
  the recorder holds the transition store's writer lock (one writer per store,
  :mod:`vla_rl_ros.buffer.writer`); a separate file keeps the recorder's commits
  free of the labeller's and the writer lock's meaning unchanged.
* The transition store is split into segments that roll over and get archived
  (:mod:`vla_rl_ros.buffer.segments`); a label may compare episodes of two
  segments, or of two runs. The run folder outlives its segments.

It is built exactly like the transition store (:mod:`vla_rl_ros.buffer.schema`):
SQLite in WAL mode, ``synchronous=FULL`` by default, a ``meta`` table with
``schema_version``, a store made under a temporary name and renamed only when
complete, and **one transaction per label**: :meth:`PreferenceStore.add`
returns only once the label is committed (fsynced), so a ``kill -9`` of the
labelling server at any instant loses at most the label being written, never a
returned one, and never corrupts the file (``test/test_prefs_store.py`` kills a
writer process and checks).

Schema versions. ``meta.schema_version`` is :data:`SCHEMA_VERSION`. A file
written by a newer version is refused (:class:`~vla_rl_ros.buffer.schema.SchemaVersionError`),
as the transition store does. An older file is brought up to date on open by
the steps in :data:`MIGRATIONS` (``{from_version: sql}``, applied in order, each
in the same transaction as its ``schema_version`` bump, so a crash mid-migration
leaves the old version intact). Version 1 is the first, so there is none yet.

Schema (version 1)::

    meta(key, value)                   schema_version, created_at, prefs_id (uuid)
    preferences(
        id          INTEGER PRIMARY KEY  order of commit
        uid         TEXT UNIQUE          uuid4 hex: the label's identity in exports and merges
        {left,right}_store   TEXT        the transition store's series id (meta series_id or store_id)
        {left,right}_run     TEXT        the run's name (readable; the store id is the key)
        {left,right}_episode INTEGER     the episode's id in that series
        {left,right}_t0, _t1 INTEGER     ticks t0 <= t < t1
        label       TEXT   left | right | equal | skip
        labeller    TEXT   who: a person's name, "oracle:..." for a synthetic one
        created_at  REAL   UNIX seconds
        info        TEXT   JSON: how the query was chosen, the oracle's returns, ...)
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..buffer.schema import SYNCHRONOUS_MODES, BufferError, SchemaVersionError, check_schema, set_wal

PREFS_FILE = "preferences.sqlite"
SCHEMA_VERSION = 1
LABELS = ("left", "right", "equal", "skip")
#: Bradley–Terry target P(left preferred) for each trainable label (skip is not trained on).
LABEL_TARGET = {"left": 1.0, "right": 0.0, "equal": 0.5}

#: ``{from_version: [sql, ...]}``: the statements that take a file from ``v`` to ``v + 1``.
MIGRATIONS: dict[int, list[str]] = {}

_SEG_COLS = ("store", "run", "episode", "t0", "t1")

_DDL = [
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    f"""CREATE TABLE preferences (
        id            INTEGER PRIMARY KEY,
        uid           TEXT NOT NULL UNIQUE,
        left_store    TEXT NOT NULL,
        left_run      TEXT NOT NULL,
        left_episode  INTEGER NOT NULL,
        left_t0       INTEGER NOT NULL,
        left_t1       INTEGER NOT NULL,
        right_store   TEXT NOT NULL,
        right_run     TEXT NOT NULL,
        right_episode INTEGER NOT NULL,
        right_t0      INTEGER NOT NULL,
        right_t1      INTEGER NOT NULL,
        label         TEXT NOT NULL CHECK (label IN ({", ".join(repr(x) for x in LABELS)})),
        labeller      TEXT NOT NULL,
        created_at    REAL NOT NULL,
        info          TEXT,
        CHECK (left_t0 >= 0 AND left_t1 > left_t0 AND right_t0 >= 0 AND right_t1 > right_t0))""",
    "CREATE INDEX preferences_left ON preferences(left_store, left_episode)",
    "CREATE INDEX preferences_right ON preferences(right_store, right_episode)",
]


@dataclass(frozen=True)
class Segment:
    """Ticks ``t0 <= t < t1`` of episode ``episode`` of the store series ``store`` (run ``run``)."""

    store: str
    run: str
    episode: int
    t0: int
    t1: int

    def __post_init__(self) -> None:
        if not (isinstance(self.t0, int) and isinstance(self.t1, int) and 0 <= self.t0 < self.t1):
            raise ValueError(f"segment ticks must satisfy 0 <= t0 < t1, got t0={self.t0!r} t1={self.t1!r}")
        if not self.store:
            raise ValueError("segment needs its store id")

    def __len__(self) -> int:
        return self.t1 - self.t0


@dataclass(frozen=True)
class Preference:
    """One stored label."""

    id: int
    uid: str
    left: Segment
    right: Segment
    label: str
    labeller: str
    created_at: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> float | None:
        """P(left is preferred) for the Bradley–Terry loss; ``None`` for ``skip``."""
        return LABEL_TARGET.get(self.label)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _check_version(con: sqlite3.Connection, path: Any) -> int:
    return check_schema(con, path, kind="preference store", supported=SCHEMA_VERSION)


def _migrate(con: sqlite3.Connection, path: Any) -> int:
    """Bring the file up to :data:`SCHEMA_VERSION`, one step per transaction."""
    v = _check_version(con, path)
    while v < SCHEMA_VERSION:
        con.execute("BEGIN IMMEDIATE")
        try:
            v = _check_version(con, path)  # another process may have migrated meanwhile
            if v >= SCHEMA_VERSION:
                con.execute("COMMIT")
                break
            for stmt in MIGRATIONS[v]:
                con.execute(stmt)
            con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(v + 1),))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        v += 1
    return v


def create_prefs(path: str | Path) -> Path:
    """Create an empty preference store at ``path`` (which must not exist); atomic like the transition store."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".creating.{os.getpid()}")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    con = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = FULL")
        con.execute("BEGIN")
        for stmt in _DDL:
            con.execute(stmt)
        con.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
            ("schema_version", str(SCHEMA_VERSION)), ("created_at", repr(time.time())),
            ("prefs_id", uuid.uuid4().hex)])
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    try:  # two processes creating at once: the first rename wins, the other's file is dropped
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    dfd = os.open(str(path.parent), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def prefs_path(run_or_path: str | Path) -> Path:
    """The preference store of a run folder (or the path itself if it names a file)."""
    p = Path(run_or_path)
    return p / PREFS_FILE if p.is_dir() else p


class PreferenceStore:
    """Read and write a run's preference labels. One connection, shared by the caller's threads under a lock
    (a web server's handlers); other processes open their own and SQLite serialises the writers.

    Args:
        path: a run folder or a ``preferences.sqlite`` path.
        create: create the file if it does not exist (default True; False for readers).
        synchronous: ``FULL`` (default: a returned label survives power loss) or ``NORMAL``.
        readonly: refuse writes.
    """

    def __init__(self, path: str | Path, *, create: bool = True, synchronous: str = "FULL",
                 readonly: bool = False) -> None:
        self.path = prefs_path(path)
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        if not self.path.is_file():
            if not create or readonly:
                raise FileNotFoundError(f"no preference store at {self.path}")
            create_prefs(self.path)
        con = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            set_wal(con, self.path, synchronous)
            if readonly:
                _check_version(con, self.path)
                con.execute("PRAGMA query_only = ON")
            else:
                _migrate(con, self.path)
        except BaseException:
            con.close()
            raise
        self._con = con
        self._lock = threading.Lock()
        self.readonly = readonly

    # ------------------------------------------------------------------ write
    def add(self, left: Segment, right: Segment, label: str, labeller: str, *,
            info: dict[str, Any] | None = None, uid: str | None = None, created_at: float | None = None) -> Preference:
        """Commit one label (its own transaction) and return it; durable when this returns."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        if not labeller:
            raise ValueError("labeller must be named")
        if self.readonly:
            raise BufferError(f"{self.path} was opened read-only")
        uid = uid or uuid.uuid4().hex
        created_at = time.time() if created_at is None else float(created_at)
        info_json = json.dumps(info or {}, sort_keys=True, allow_nan=False)
        con = self._con
        with self._lock:
            return self._insert(con, uid, left, right, label, labeller, created_at, info_json, info)

    def _insert(self, con: sqlite3.Connection, uid: str, left: Segment, right: Segment, label: str, labeller: str,
                created_at: float, info_json: str, info: dict[str, Any] | None) -> Preference:
        con.execute("BEGIN IMMEDIATE")
        try:
            cur = con.execute(
                "INSERT INTO preferences (uid, left_store, left_run, left_episode, left_t0, left_t1, right_store, "
                "right_run, right_episode, right_t0, right_t1, label, labeller, created_at, info) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (uid, *(getattr(left, c) for c in _SEG_COLS), *(getattr(right, c) for c in _SEG_COLS),
                 label, str(labeller), created_at, info_json))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return Preference(int(cur.lastrowid), uid, left, right, label, str(labeller), created_at, dict(info or {}))

    # ------------------------------------------------------------------- read
    def labels(self, *, since_id: int = 0, trainable: bool = False, labeller: str | None = None) -> list[Preference]:
        """Labels with ``id > since_id`` in commit order; ``trainable`` leaves out ``skip``."""
        return list(self.iter_labels(since_id=since_id, trainable=trainable, labeller=labeller))

    def iter_labels(self, *, since_id: int = 0, trainable: bool = False,
                    labeller: str | None = None) -> Iterator[Preference]:
        q = ("SELECT id, uid, left_store, left_run, left_episode, left_t0, left_t1, right_store, right_run, "
             "right_episode, right_t0, right_t1, label, labeller, created_at, info FROM preferences WHERE id > ?")
        args: list[Any] = [int(since_id)]
        if trainable:
            q += " AND label != 'skip'"
        if labeller is not None:
            q += " AND labeller = ?"
            args.append(labeller)
        with self._lock:
            rows = self._con.execute(q + " ORDER BY id", args).fetchall()
        for r in rows:
            yield Preference(int(r[0]), r[1], Segment(r[2], r[3], int(r[4]), int(r[5]), int(r[6])),
                             Segment(r[7], r[8], int(r[9]), int(r[10]), int(r[11])), r[12], r[13], float(r[14]),
                             json.loads(r[15]) if r[15] else {})

    def count(self, *, trainable: bool = False) -> int:
        q = "SELECT COUNT(*) FROM preferences" + (" WHERE label != 'skip'" if trainable else "")
        return int(self._con.execute(q).fetchone()[0])

    def counts(self) -> dict[str, int]:
        """Labels per kind (every kind listed)."""
        got = dict(self._con.execute("SELECT label, COUNT(*) FROM preferences GROUP BY label").fetchall())
        return {k: int(got.get(k, 0)) for k in LABELS}

    def asked(self) -> set[tuple[Segment, Segment]]:
        """Every pair already labelled (either order), so a query is never asked twice."""
        out: set[tuple[Segment, Segment]] = set()
        for p in self.iter_labels():
            out.add((p.left, p.right))
            out.add((p.right, p.left))
        return out

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in self._con.execute("SELECT key, value FROM meta")}

    def integrity_check(self) -> str:
        return str(self._con.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "PreferenceStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def iter_label_dicts(path: str | Path) -> Iterable[dict[str, Any]]:
    """Every label as a JSON-ready dict (for ``data export``); nothing if the run has no preference store."""
    p = prefs_path(path)
    if not p.is_file():
        return []
    with PreferenceStore(p, readonly=True) as s:
        return [x.to_json() for x in s.iter_labels()]
