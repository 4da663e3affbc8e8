"""The on-disk format of a transition store: one SQLite file, WAL mode, versioned schema.

Why SQLite
----------
* **Embedded, no server.** A store is one file next to the run's models and
  logs; nothing to install, start or supervise on the robot's computer, and a
  store can be copied, archived or opened by any SQLite tool.
* **Crash-safe.** Every commit is atomic. In WAL (write-ahead log) mode a
  commit appends to ``buffer.sqlite-wal``; a process killed at any instant
  (``kill -9``, a segfault, the OOM killer) leaves the database consistent and
  every committed transaction readable. Uncommitted work is rolled back on the
  next open: the store is never corrupted, only the last, uncommitted batch is
  lost.
* **Concurrent readers with one writer.** WAL lets learners (other processes,
  other stores) read while the recorder writes, without blocking either side.
  A reader sees a consistent snapshot of committed transactions only.

``synchronous``: FULL by default
--------------------------------
With WAL, ``synchronous=NORMAL`` is already safe against a *process* crash (the
committed WAL frames are in the OS page cache and survive the process), and it
never corrupts the database; it only risks the last commits on a *power loss or
kernel panic*. ``FULL`` also fsyncs the WAL at every commit, so a committed
batch survives power loss too. The writer batches many transitions per commit
(one commit per ``commit_window_s``, 0.1 s by default), so FULL costs ~10 fsyncs
per second whatever the step rate, a price worth paying on a robot whose power
can be cut (e-stop circuits, battery). ``NORMAL`` is available for bulk imports
and throwaway simulation runs.

Schema (``SCHEMA_VERSION`` 1)
-----------------------------
* ``meta(key, value)``: ``schema_version``, ``created_at``, ``store_id`` (uuid),
  ``spec`` (JSON), ``robot_id``, ``obs_dim``, ``action_dim``, ``rejected_steps``;
  ``dropped_steps`` once a full disk made the writer drop queued steps (see
  :mod:`.writer`); a segment's ``segment_index``, ``series_id``,
  ``episode_id_base`` and ``episode_idx_base`` (see :mod:`.segments`).
* ``writer_sessions``: one row per writer open (pid, host, open/close stamps,
  episodes recovered after a crash).
* ``episodes``: see the DDL. ``model_versions`` is a JSON list in order of first
  use (a hot swap mid-episode gives two entries); ``reward_config`` is the reward
  function's JSON config; ``seed`` is set for twin episodes only;
  ``end_reason`` is one of :data:`END_REASONS` (NULL while the episode is open).
* ``steps``: one full transition per row. ``obs``, ``action`` and ``next_obs``
  are little-endian float32 BLOBs of ``obs_dim``/``action_dim`` entries.
  **next_obs is stored explicitly** (not implied by the next row): every row is
  a self-contained transition, so a reader tailing the store can use a step the
  moment it is committed, a crash never leaves a transition whose successor is
  missing, and episode boundaries need no special case. The cost is
  ``4 * obs_dim`` bytes a row (104 B for the Panda), negligible beside frames.
  ``done`` is not a column: ``terminated`` (a true MDP end, no bootstrapping)
  and ``truncated`` (time limit, reset, e-stop, crash: bootstrap from
  ``next_obs``) are stored, and ``done = terminated or truncated``.
  Stamps are seconds: ``obs_stamp``/``cmd_stamp`` from the policy node's step
  message, ``recv_stamp`` the writer's wall clock when the step arrived.
  ``chunk_seq``/``chunk_step``/``frame_stamp``: for a chunked model, which
  inference's chunk and which (fractional) step of it the action came from, and
  the newest camera frame that chunk saw (:mod:`vla_rl_ros.stepmsg`); NULL
  otherwise. These three were added to schema 1 as nullable columns: a writer
  adds them to an older store when it opens it (:func:`ensure_columns`), and
  older builds, which never name them, read such a store unchanged.
* ``frames``: optional encoded camera images (JPEG/PNG bytes from
  ``cv2.imencode``) keyed by (episode, t, camera).
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from ..spec import Spec, SpecError

SCHEMA_VERSION = 1
END_REASONS = ("success", "timeout", "estop", "reset", "crash")
SYNCHRONOUS_MODES = ("FULL", "NORMAL")


class BufferError(RuntimeError):
    """Base class of the buffer's errors."""


class SchemaVersionError(BufferError):
    """The store was written by a newer (or unknown) schema version than this build reads."""


class StoreLockedError(BufferError):
    """Another writer holds the store."""


_DDL = f"""
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE writer_sessions (
    id                  INTEGER PRIMARY KEY,
    opened_at           REAL NOT NULL,
    closed_at           REAL,
    pid                 INTEGER,
    host                TEXT,
    recovered_episodes  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE episodes (
    id                    INTEGER PRIMARY KEY,
    idx                   INTEGER NOT NULL UNIQUE,
    session_id            INTEGER REFERENCES writer_sessions(id),
    task                  TEXT NOT NULL,
    seed                  INTEGER,
    model_versions        TEXT NOT NULL DEFAULT '[]',
    success               INTEGER,
    episode_return        REAL NOT NULL DEFAULT 0,
    length                INTEGER NOT NULL DEFAULT 0,
    n_intervention_steps  INTEGER NOT NULL DEFAULT 0,
    reward_config         TEXT NOT NULL,
    is_demo               INTEGER NOT NULL DEFAULT 0,
    started_at            REAL NOT NULL,
    ended_at              REAL,
    end_reason            TEXT CHECK (end_reason IS NULL OR end_reason IN ({", ".join(repr(r) for r in END_REASONS)})),
    info                  TEXT
);
CREATE TABLE steps (
    id             INTEGER PRIMARY KEY,
    episode_id     INTEGER NOT NULL REFERENCES episodes(id),
    t              INTEGER NOT NULL,
    obs            BLOB NOT NULL,
    action         BLOB NOT NULL,
    reward         REAL NOT NULL,
    next_obs       BLOB NOT NULL,
    terminated     INTEGER NOT NULL,
    truncated      INTEGER NOT NULL,
    intervention   INTEGER NOT NULL,
    model_version  TEXT NOT NULL,
    obs_stamp      REAL,
    cmd_stamp      REAL,
    recv_stamp     REAL NOT NULL,
    chunk_seq      INTEGER,
    chunk_step     REAL,
    frame_stamp    REAL,
    UNIQUE (episode_id, t)
);
CREATE TABLE frames (
    id          INTEGER PRIMARY KEY,
    episode_id  INTEGER NOT NULL REFERENCES episodes(id),
    t           INTEGER NOT NULL,
    camera      TEXT NOT NULL,
    format      TEXT NOT NULL,
    data        BLOB NOT NULL,
    stamp       REAL,
    UNIQUE (episode_id, t, camera)
);
"""


def connect(path: str | Path, *, synchronous: str = "FULL", readonly: bool = False) -> sqlite3.Connection:
    """Open a store connection in WAL mode (autocommit; callers use explicit BEGIN/COMMIT).

    Checks the schema version; raises :class:`SchemaVersionError` for a newer one and
    ``FileNotFoundError`` if the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no transition store at {path}")
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
    con = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
    try:
        set_wal(con, path, synchronous)
        if readonly:
            con.execute("PRAGMA query_only = ON")
        check_schema(con, path)
    except BaseException:
        con.close()
        raise
    return con


ADDED_STEP_COLUMNS = (("chunk_seq", "INTEGER"), ("chunk_step", "REAL"), ("frame_stamp", "REAL"))


def ensure_columns(con: sqlite3.Connection) -> None:
    """Add the nullable ``steps`` columns that came after a store was created (a writer's open)."""
    have = {r[1] for r in con.execute("PRAGMA table_info(steps)")}
    for name, typ in ADDED_STEP_COLUMNS:
        if name not in have:
            con.execute(f"ALTER TABLE steps ADD COLUMN {name} {typ}")


def set_wal(con: sqlite3.Connection, path: Any, synchronous: str) -> None:
    """A connection's durability settings, shared by the transition and preference stores: a 30 s busy timeout,
    WAL (refused if the file system cannot give it) and ``synchronous``."""
    con.execute("PRAGMA busy_timeout = 30000")
    mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise BufferError(f"{path}: could not switch to WAL mode (got {mode!r})")
    con.execute(f"PRAGMA synchronous = {synchronous}")


def check_schema(con: sqlite3.Connection, path: Any = "store", *, kind: str = "transition store",
                 supported: int = SCHEMA_VERSION) -> int:
    """Return the file's schema version, refusing versions this build cannot read (``kind``/``supported``: the
    transition store's by default; the preference store, :mod:`vla_rl_ros.preferences.store`, passes its own)."""
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as e:
        raise BufferError(f"{path} is not a vla_rl_ros {kind}: {e}") from e
    if row is None:
        raise BufferError(f"{path} is not a vla_rl_ros {kind} (no schema_version)")
    try:
        v = int(row[0])
    except ValueError:
        raise SchemaVersionError(f"{path}: unreadable schema_version {row[0]!r}") from None
    if v > supported:
        raise SchemaVersionError(
            f"{path} has {kind} schema version {v}, newer than this build of vla_rl_ros reads "
            f"(schema version {supported}); upgrade vla_rl_ros to open it")
    if v < 1:
        raise SchemaVersionError(f"{path}: invalid schema version {v}")
    return v


def create_store(path: str | Path, spec: Spec, robot_id: str = "", *, synchronous: str = "FULL",
                 meta: dict[str, str] | None = None) -> Path:
    """Create an empty store at ``path`` (which must not exist) for observations of ``spec``.

    ``meta``: more ``meta`` rows (a segment's ``segment_index``, ``episode_id_base``...; see :mod:`.segments`).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".creating")
    for leftover in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):  # from an interrupted create
        leftover.unlink(missing_ok=True)
    con = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode = WAL")
        con.execute(f"PRAGMA synchronous = {synchronous}")
        con.execute("BEGIN")
        for stmt in _DDL.split(";"):
            if stmt.strip():
                con.execute(stmt)
        meta = {
            "schema_version": str(SCHEMA_VERSION),
            "created_at": repr(time.time()),
            "store_id": uuid.uuid4().hex,
            "spec": spec.to_json(),
            "robot_id": str(robot_id),
            "obs_dim": str(spec.obs_dim),
            "action_dim": str(spec.action_dim),
            "rejected_steps": "0",
            **{k: str(v) for k, v in (meta or {}).items()},
        }
        con.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", sorted(meta.items()))
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()  # the last connection's close checkpoints and removes the WAL
    # Only a complete store ever appears under the final name.
    tmp.replace(path)
    dir_fd = os.open(str(path.parent), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_meta(con: sqlite3.Connection) -> dict[str, str]:
    return {k: v for k, v in con.execute("SELECT key, value FROM meta")}


def store_spec(con: sqlite3.Connection) -> Spec:
    return Spec.from_json(read_meta(con)["spec"])


def check_spec(expected: Spec, found: Spec, where: Any) -> None:
    """Raise :class:`~vla_rl_ros.spec.SpecError` listing every field that differs."""
    d = expected.diff(found)
    if d:
        raise SpecError(f"{where}: spec differs from the expected one: " + "; ".join(
            x.replace("configured", "expected").replace("model has", "store has") for x in d))


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
