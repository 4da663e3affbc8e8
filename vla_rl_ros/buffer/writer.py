"""The durable writer: validates transitions, batches them, commits every ``commit_window_s``.

Threading model. :meth:`Writer.add_step` runs on the caller's thread (the
recorder's callback): it validates and serialises the step and appends it to an
in-memory queue, a few microseconds. A background thread wakes every
``commit_window_s`` and writes everything queued in one SQLite transaction
(SQLite releases the GIL while it works, so the caller keeps running). A
``kill -9`` therefore loses at most the steps that arrived since the last
commit, i.e. one commit window plus the duration of one commit; it never
corrupts the store (see :mod:`.schema`). :meth:`flush` blocks until everything
queued so far is committed.

One writer per store. A second :class:`Writer` on the same store (in any
process) is refused with :class:`~.schema.StoreLockedError` (an ``flock`` on
``<store>.writer.lock``, released by the kernel when the holder dies).

Resuming. Opening an existing store appends to it. An episode left open by a
crash is closed on open: ``end_reason='crash'``, ``success=0``, its aggregates
recomputed from the committed steps, and its last committed step marked
``truncated`` (bootstrapping from its ``next_obs`` remains valid).

Segments. With ``segment_max_bytes`` or ``segment_max_s`` the writer rolls over
to a new segment of the store when the current one passes either, at the end
of an episode (an episode is never split): see :mod:`.segments`. The path given
names the series; the writer resumes its newest segment.

A full disk. A commit that fails with SQLITE_FULL or ENOSPC is rolled back
(SQLite is atomic: nothing committed earlier is touched), its steps go back to
the head of the queue, and the writer retries with a backoff (up to
``disk_full_retry_max_s``) until space returns; meanwhile :attr:`Writer.disk_full`
is true and :meth:`add_step` goes on queueing. The queue is bounded while the
disk is full: past ``max_pending_steps`` the oldest queued steps (and frames)
are dropped and counted in :attr:`Writer.dropped_steps` (and in the store's
``meta.dropped_steps`` once it can be written), never silently. A writer closed
while the disk is still full gives up after ``close_timeout_s`` and says how
many steps it could not store.
"""
from __future__ import annotations

import collections
import errno
import fcntl
import logging
import math
import os
import socket
import sqlite3
import threading
import time
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..spec import Spec
from .schema import (END_REASONS, BufferError, StoreLockedError, check_spec, connect, create_store, dumps,
                     ensure_columns, read_meta, store_spec)
from .segments import list_segments, segment_path, series_of

_log = logging.getLogger(__name__)

_STEP_COLS = ("episode_id, t, obs, action, reward, next_obs, terminated, truncated, intervention, model_version, "
              "obs_stamp, cmd_stamp, recv_stamp, chunk_seq, chunk_step, frame_stamp")
_N_STEP_COLS = 16


def _step_sql(n: int) -> str:
    return f"INSERT INTO steps ({_STEP_COLS}) VALUES " + ",".join(["(" + ",".join("?" * _N_STEP_COLS) + ")"] * n)


def _max_rows_per_insert(con) -> int:
    """Rows per multi-row INSERT, within the connection's bound-variable limit (999 on SQLite < 3.32)."""
    try:
        limit = con.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    except AttributeError:  # Python < 3.11 cannot ask; assume the historical default
        limit = 999
    return max(1, min(1024, limit // _N_STEP_COLS))


def _insert_steps(con, rows: list[tuple], max_rows: int, sql_cache: dict[int, str]) -> None:
    """Insert steps with multi-row INSERTs.

    SQLite releases the GIL while it executes a statement, and a thread that
    gave the GIL up waits for it again (up to the 5 ms switch interval) while a
    busy caller thread holds it. One statement per row would make the writer
    thread pay that wait once per row and fall behind; a statement per
    ``max_rows`` rows (plus one for the remainder) pays it a few times a commit.
    """
    i, n = 0, len(rows)
    full = n // max_rows
    if full:
        sql = sql_cache.get(max_rows) or sql_cache.setdefault(max_rows, _step_sql(max_rows))
        con.executemany(sql, [tuple(chain.from_iterable(rows[j * max_rows:(j + 1) * max_rows])) for j in range(full)])
        i = full * max_rows
    if i < n:
        r = n - i
        sql = sql_cache.get(r) or _step_sql(r)
        if len(sql_cache) < 64:
            sql_cache[r] = sql
        con.execute(sql, tuple(chain.from_iterable(rows[i:])))


def is_disk_full(e: BaseException) -> bool:
    """SQLITE_FULL ("database or disk is full") or ENOSPC/EDQUOT: an error that goes away when space returns."""
    if isinstance(e, sqlite3.Error):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(e)
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


class InvalidStep(BufferError, ValueError):
    """A step was refused (NaN/Inf, wrong size, action outside [-1, 1]...); nothing was stored."""


class EpisodeStateError(BufferError):
    """An episode call out of order (a step with no open episode, two open episodes...)."""


def _vector(x: Any, n: int, what: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidStep(f"{what} is not numeric: {e}") from None
    if a.ndim != 1 or a.shape[0] != n:
        raise InvalidStep(f"{what} has shape {a.shape}, expected ({n},)")
    # Fast path: a float64 sum of float32 values is finite iff every value is.
    if not math.isfinite(a.sum(dtype=np.float64)):
        bad = np.flatnonzero(~np.isfinite(a))
        raise InvalidStep(f"{what} has non-finite values at indices {bad.tolist()}: {a[bad].tolist()}")
    return a


class _Episode:
    __slots__ = ("id", "idx", "t", "ret", "n_int", "models", "last_flags", "is_demo")

    def __init__(self, id: int, idx: int, is_demo: bool) -> None:
        self.id, self.idx, self.is_demo = id, idx, is_demo
        self.t = 0
        self.ret = 0.0
        self.n_int = 0
        self.models: list[str] = []
        self.last_flags = (False, False)


class Writer:
    """Append episodes and transitions to one store.

    Args:
        path: the store file (``runs/<name>/buffer.sqlite``).
        spec: expected observation/action spec. Required to create a missing
            store; checked against an existing one (a mismatch raises
            :class:`~vla_rl_ros.spec.SpecError` naming every differing field).
        robot_id: recorded in a store this call creates.
        commit_window_s: maximum time between commits (the crash-loss window).
        synchronous: ``"FULL"`` (default, survives power loss) or ``"NORMAL"``
            (survives process crashes); see :mod:`.schema`.
        on_commit: ``f(committed_steps_total, wall_time)`` called on the writer
            thread after each commit; keep it short.
        image_encoding: channel order of ``ndarray`` frames (``"rgb8"`` or ``"bgr8"``).
        frame_format: ``"jpg"`` or ``"png"`` for ``ndarray`` frames.
        jpeg_quality: 0..100.
        segment_max_bytes: roll over to a new segment at the first episode end
            after the current one holds this many bytes (0 = never).
        segment_max_s: likewise after the current segment is this old (0 = never).
        max_pending_steps: while the disk is full, steps kept in memory; past
            it the oldest are dropped and counted (:attr:`dropped_steps`).
        disk_full_retry_max_s: longest wait between retries while the disk is full.
        close_timeout_s: how long :meth:`close` retries on a full disk before giving up.
    """

    def __init__(self, path: str | Path, *, spec: Spec | None = None, robot_id: str = "",
                 commit_window_s: float = 0.1, synchronous: str = "FULL",
                 on_commit: Callable[[int, float], None] | None = None,
                 image_encoding: str = "rgb8", frame_format: str = "jpg", jpeg_quality: int = 90,
                 latency_history: int = 100_000, segment_max_bytes: int = 0, segment_max_s: float = 0.0,
                 max_pending_steps: int = 50_000, disk_full_retry_max_s: float = 5.0,
                 close_timeout_s: float = 10.0) -> None:
        self.path, _ = series_of(path)
        if not commit_window_s > 0:
            raise ValueError("commit_window_s must be > 0")
        if frame_format not in ("jpg", "png"):
            raise ValueError("frame_format must be 'jpg' or 'png'")
        if image_encoding not in ("rgb8", "bgr8"):
            raise ValueError("image_encoding must be 'rgb8' or 'bgr8'")
        self.commit_window_s = float(commit_window_s)
        self.on_commit = on_commit
        self.image_encoding, self.frame_format, self.jpeg_quality = image_encoding, frame_format, int(jpeg_quality)
        if segment_max_bytes < 0 or segment_max_s < 0:
            raise ValueError("segment_max_bytes and segment_max_s must be >= 0 (0 = no limit)")
        if max_pending_steps < 1:
            raise ValueError("max_pending_steps must be >= 1")
        self.segment_max_bytes, self.segment_max_s = int(segment_max_bytes), float(segment_max_s)
        self.max_pending_steps = int(max_pending_steps)
        self.disk_full_retry_max_s, self.close_timeout_s = float(disk_full_retry_max_s), float(close_timeout_s)
        self._synchronous = synchronous
        segments = list_segments(self.path)
        if not segments:
            if spec is None:
                raise FileNotFoundError(f"no store at {self.path} (pass spec= to create one)")
            create_store(self.path, spec, robot_id, synchronous=synchronous)
            segments = [self.path]

        self._lock_fd = os.open(str(self.path) + ".writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 64, 0).decode(errors="replace").strip()
            os.close(self._lock_fd)
            raise StoreLockedError(f"{self.path} is being written by another writer (pid {holder or '?'})") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)

        try:
            self._con = connect(segments[-1], synchronous=synchronous)
            self._con.execute("PRAGMA journal_size_limit = 67108864")
            ensure_columns(self._con)
            self.spec = store_spec(self._con)
            self._max_rows = _max_rows_per_insert(self._con)
            self._sql_cache: dict[int, str] = {}
            if spec is not None:
                check_spec(spec, self.spec, self.path)
            meta = read_meta(self._con)
            self.store_id, self.robot_id = meta["store_id"], meta["robot_id"]
            self.series_id = meta.get("series_id", self.store_id)
            self._rejected_base = int(meta.get("rejected_steps", "0"))
            self._rejected_written = self._rejected_base
            self._dropped_base = int(meta.get("dropped_steps", "0"))
            self._dropped_written = self._dropped_base
            #: the segment being written, and its index in the series (0 for a store without segments)
            self.segment_path, self.segment_index = segments[-1], series_of(segments[-1])[1]
            self._segment_created = float(meta["created_at"])
            self._page_size = int(self._con.execute("PRAGMA page_size").fetchone()[0])
            self._segment_bytes = self._page_size * int(self._con.execute("PRAGMA page_count").fetchone()[0])
            self.recovered_episodes = self._recover()
            self._con.execute("BEGIN IMMEDIATE")
            cur = self._con.execute(
                "INSERT INTO writer_sessions (opened_at, pid, host, recovered_episodes) VALUES (?,?,?,?)",
                (time.time(), os.getpid(), socket.gethostname(), len(self.recovered_episodes)))
            self.session_id = int(cur.lastrowid)
            self._con.execute("COMMIT")
            row = self._con.execute("SELECT COALESCE(MAX(id), 0), COALESCE(MAX(idx), -1) FROM episodes").fetchone()
            # a new segment may hold no episode yet: its meta says where the series' ids are
            self._next_ep_id = max(int(row[0]), int(meta.get("episode_id_base", 0))) + 1
            self._next_idx = max(int(row[1]), int(meta.get("episode_idx_base", -1))) + 1
        except BaseException:
            if hasattr(self, "_con"):
                self._con.close()
            os.close(self._lock_fd)
            raise

        self._obs_dim, self._act_dim = self.spec.obs_dim, self.spec.action_dim
        self._ep: _Episode | None = None
        self.n_rejected = 0
        self.rejected_reasons: collections.Counter[str] = collections.Counter()
        self.committed_steps = 0
        self.n_commits = 0
        self._latency = collections.deque(maxlen=int(latency_history))
        self._cv = threading.Condition()
        self._queue: list[tuple] = []
        self._enq_seq = 0
        self._done_seq = 0
        self._flush_req = False
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self._queued_steps = 0
        self._roll_pending = False
        #: segments this writer rolled over to
        self.segments_rolled = 0
        #: the disk (or quota) is full: commits are retried and steps wait in memory
        self.disk_full = False
        #: the last full-disk error, as text ("" before any)
        self.disk_full_error = ""
        #: wall time the disk became full (None while it is not)
        self.disk_full_since: float | None = None
        #: failed commit attempts on a full disk, and distinct full-disk episodes
        self.disk_full_retries = 0
        self.n_disk_full = 0
        #: steps (frames) dropped from the queue on a full disk, oldest first
        self.dropped_steps = 0
        self.dropped_frames = 0
        self._backoff_s = self.commit_window_s
        self._last_drop_log = 0.0
        self._close_deadline = math.inf
        self._thread = threading.Thread(target=self._run, name=f"buffer-writer:{self.path.name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- episodes
    @property
    def episode_id(self) -> int | None:
        """Id of the open episode, or ``None``."""
        return self._ep.id if self._ep else None

    def begin_episode(self, task: str | None = None, *, seed: int | None = None,
                      reward_config: Mapping[str, Any] | None = None, is_demo: bool = False,
                      info: Mapping[str, Any] | None = None, started_at: float | None = None) -> int:
        """Open an episode and return its id. ``seed`` is for twin episodes (None on the robot)."""
        self._check_alive()
        if self._ep is not None:
            raise EpisodeStateError(f"episode {self._ep.id} is still open; end_episode() it first")
        ep = _Episode(self._next_ep_id, self._next_idx, bool(is_demo))
        self._next_ep_id += 1
        self._next_idx += 1
        self._enqueue(("begin", (ep.id, ep.idx, self.session_id, task or self.spec.task,
                                 None if seed is None else int(seed), dumps(dict(reward_config or {})),
                                 int(ep.is_demo), time.time() if started_at is None else float(started_at),
                                 dumps(dict(info)) if info else None)))
        self._ep = ep
        return ep.id

    def add_step(self, obs: Any, action: Any, reward: float, next_obs: Any, *, terminated: bool = False,
                 truncated: bool = False, intervention: bool = False, model_version: str = "",
                 obs_stamp: float | None = None, cmd_stamp: float | None = None, frame: Any = None,
                 chunk: tuple[int, float, float] | None = None) -> int:
        """Queue one transition of the open episode; returns its ``t`` (0-based).

        ``chunk``: ``(chunk_seq, chunk_step, frame_stamp)`` of a chunked model's action (:mod:`vla_rl_ros.stepmsg`).

        Raises:
            InvalidStep: wrong sizes, non-finite values, action outside [-1, 1]
                (the policy-space action is bounded), non-finite reward. The step
                is not stored and :attr:`n_rejected` is incremented.
            EpisodeStateError: no open episode, or the episode already ended
                with a terminated/truncated step.
        """
        self._check_alive()
        ep = self._ep
        if ep is None:
            raise EpisodeStateError("add_step() with no open episode; call begin_episode() first")
        if any(ep.last_flags):
            raise EpisodeStateError(f"episode {ep.id} already has a terminated/truncated step; end_episode() it")
        try:
            o = _vector(obs, self._obs_dim, "obs")
            o2 = _vector(next_obs, self._obs_dim, "next_obs")
            a = _vector(action, self._act_dim, "action")
            if a.max() > 1.0 + 1e-6 or a.min() < -1.0 - 1e-6:
                raise InvalidStep(f"action outside [-1, 1]: {a.tolist()}")
            try:
                r = float(reward)
            except (TypeError, ValueError):
                raise InvalidStep(f"reward {reward!r} is not a number") from None
            if not math.isfinite(r):
                raise InvalidStep(f"reward is not finite: {r}")
            if not isinstance(model_version, str):
                raise InvalidStep(f"model_version must be a str, got {type(model_version).__name__}")
            stamps = []
            for name, s in (("obs_stamp", obs_stamp), ("cmd_stamp", cmd_stamp)):
                if s is not None and not math.isfinite(float(s)):
                    raise InvalidStep(f"{name} is not finite: {s}")
                stamps.append(None if s is None else float(s))
            ck = (None, None, None)
            if chunk is not None:
                seq, cstep, fst = int(chunk[0]), float(chunk[1]), float(chunk[2])
                if seq < 1 or not (math.isfinite(cstep) and math.isfinite(fst)):
                    raise InvalidStep(f"chunk {tuple(chunk)} is not (seq >= 1, finite step, finite frame stamp)")
                ck = (seq, cstep, fst if fst > 0 else None)
        except InvalidStep as e:
            self.n_rejected += 1
            self.rejected_reasons[str(e).split(":")[0][:60]] += 1
            raise
        t = ep.t
        row = (ep.id, t, o.tobytes(), a.tobytes(), r, o2.tobytes(), int(bool(terminated)), int(bool(truncated)),
               int(bool(intervention)), model_version, stamps[0], stamps[1], time.time(), *ck)
        self._enqueue(("step", row, time.perf_counter()))
        ep.t += 1
        ep.ret += r
        ep.n_int += int(bool(intervention))
        if model_version not in ep.models:
            ep.models.append(model_version)
        ep.last_flags = (bool(terminated), bool(truncated))
        if frame is not None:
            self.add_frame(frame, t=t)
        return t

    def add_frame(self, image: Any, *, t: int | None = None, camera: str = "camera", fmt: str | None = None,
                  stamp: float | None = None) -> None:
        """Store a camera frame for step ``t`` (default: the last step) of the open episode.

        ``image`` is an ``HxWx3`` uint8 array (encoded on the writer thread with
        ``cv2.imencode``, channel order ``image_encoding``), an ``HxW`` uint8
        array, or already-encoded bytes with ``fmt`` (``"jpg"``/``"png"``).
        """
        self._check_alive()
        ep = self._ep
        if ep is None:
            raise EpisodeStateError("add_frame() with no open episode")
        if t is None:
            if ep.t == 0:
                raise EpisodeStateError("add_frame() before the first step: pass t")
            t = ep.t - 1
        if isinstance(image, (bytes, bytearray, memoryview)):
            if fmt not in ("jpg", "jpeg", "png"):
                raise InvalidStep("encoded frame bytes need fmt='jpg' or 'png'")
            data: Any = bytes(image)
            fmt = "jpeg" if fmt in ("jpg", "jpeg") else "png"
        else:
            img = np.asarray(image)
            if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
                raise InvalidStep(f"frame must be HxW or HxWx3 uint8, got {img.dtype} {img.shape}")
            data = np.ascontiguousarray(img).copy()
            fmt = "jpeg" if (fmt or self.frame_format) in ("jpg", "jpeg") else "png"
        self._enqueue(("frame", (ep.id, int(t), camera, fmt, data, time.time() if stamp is None else float(stamp))))

    def end_episode(self, reason: str, success: bool | None = None, *,
                    info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Close the open episode. ``success`` defaults to ``reason == "success"``.

        If the last step is neither terminated nor truncated it is marked
        truncated (the episode was cut; its ``next_obs`` may be bootstrapped).
        Returns the episode summary.
        """
        self._check_alive()
        if reason not in END_REASONS:
            raise ValueError(f"end reason must be one of {END_REASONS}, got {reason!r}")
        ep = self._ep
        if ep is None:
            raise EpisodeStateError("end_episode() with no open episode")
        ok = (reason == "success") if success is None else bool(success)
        mark_truncated = ep.t > 0 and not any(ep.last_flags)
        summary = {"id": ep.id, "idx": ep.idx, "success": ok, "return": ep.ret, "length": ep.t,
                   "n_intervention_steps": ep.n_int, "model_versions": list(ep.models), "end_reason": reason,
                   "is_demo": ep.is_demo}
        self._enqueue(("end", (ep.id, ep.idx, ep.t - 1 if mark_truncated else None, int(ok), ep.ret, ep.t, ep.n_int,
                               dumps(ep.models), time.time(), reason, dumps(dict(info)) if info else None)))
        self._ep = None
        if self._roll_due():
            self._roll_pending = True
            self._enqueue(("roll", (self.segment_index + 1, ep.id, ep.idx)))
        return summary

    def _roll_due(self) -> bool:
        """Has the current segment passed a limit? (At an episode end, on the caller's thread.)"""
        if self._roll_pending or not (self.segment_max_bytes or self.segment_max_s):
            return False
        if self.segment_max_s and time.time() - self._segment_created >= self.segment_max_s:
            return True
        return bool(self.segment_max_bytes) and self._segment_bytes >= self.segment_max_bytes

    # ------------------------------------------------------------ lifecycle
    def flush(self, timeout: float | None = None) -> None:
        """Block until everything queued so far is committed."""
        with self._cv:
            target = self._enq_seq
            self._flush_req = True
            self._cv.notify_all()
            ok = self._cv.wait_for(lambda: self._done_seq >= target or self._error is not None
                                   or not self._thread.is_alive(), timeout)
        self._check_alive()
        if not ok:
            raise TimeoutError(f"flush did not complete within {timeout} s")

    def close(self, end_reason: str = "reset") -> None:
        """End an open episode with ``end_reason``, commit everything and release the store."""
        if self._closed:
            return
        try:
            if self._ep is not None and self._error is None:
                self.end_episode(end_reason)
        finally:
            with self._cv:
                self._closing = True
                self._close_deadline = time.monotonic() + self.close_timeout_s
                self._cv.notify_all()
            self._thread.join()
            self._closed = True
            try:
                if self._error is None:
                    self._close_session()
            finally:
                self._con.close()
                os.close(self._lock_fd)
        if self._error is not None:
            raise BufferError(f"writer for {self.path} failed, the last batch was not stored: "
                              f"{self._error}") from self._error

    def _close_session(self) -> None:
        """Stamp the session closed and checkpoint; on a full disk only a warning (every step is committed)."""
        try:
            self._con.execute("UPDATE writer_sessions SET closed_at = ? WHERE id = ?", (time.time(), self.session_id))
            self._con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as e:
            if not is_disk_full(e):
                raise
            _log.warning("%s: disk full at close: every step is committed, the session's close time is not",
                         self.segment_path)

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pending_steps(self) -> int:
        """Steps queued and not yet committed (they pile up while the disk is full)."""
        with self._cv:
            return self._queued_steps

    def at_risk_latencies(self) -> np.ndarray:
        """Seconds between each recent step's arrival in :meth:`add_step` and its commit."""
        with self._cv:
            return np.array(self._latency, dtype=np.float64)

    # -------------------------------------------------------------- internals
    def _check_alive(self) -> None:
        if self._error is not None:
            raise BufferError(f"writer for {self.path} failed: {self._error!r}") from self._error
        if self._closed or self._closing:
            raise BufferError(f"writer for {self.path} is closed")

    def _enqueue(self, op: tuple) -> None:
        with self._cv:
            self._queue.append(op)
            self._enq_seq += 1
            if op[0] == "step":
                self._queued_steps += 1
                if self.disk_full and self._queued_steps > self.max_pending_steps:
                    self._drop_oldest_locked()

    def _drop_oldest_locked(self) -> None:
        """Drop the oldest queued steps (and the frames queued among them) down to 99% of the cap.

        Only while the disk is full. Dropping 1% at a time keeps the list
        rebuild amortised over many steps. Begin/end ops are kept: an episode
        stays whole in the episodes table; its steps have a gap in ``t``.
        """
        n = self._queued_steps - (self.max_pending_steps - self.max_pending_steps // 100)
        if n <= 0:
            return
        keep: list[tuple] = []
        steps = frames = 0
        for op in self._queue:
            if steps < n and op[0] in ("step", "frame"):
                if op[0] == "step":
                    steps += 1
                else:
                    frames += 1
                continue
            keep.append(op)
        self._queue = keep
        self._queued_steps -= steps
        self.dropped_steps += steps
        self.dropped_frames += frames
        now = time.monotonic()
        if now - self._last_drop_log > 10.0:
            self._last_drop_log = now
            _log.error("%s: disk full, %d queued steps kept; dropped the oldest (%d dropped so far)",
                       self.segment_path, self._queued_steps, self.dropped_steps)

    def _run(self) -> None:
        next_commit = time.monotonic() + self.commit_window_s
        while True:
            with self._cv:
                while not (self._closing or self._flush_req):
                    remaining = next_commit - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
                batch, self._queue = self._queue, []
                self._queued_steps = 0
                seq = self._enq_seq
                self._flush_req = False
                closing = self._closing
            try:
                left = self._write(batch)
            except BaseException as e:  # noqa: BLE001 - surfaced to the caller's thread
                with self._cv:
                    self._error = e
                    self._cv.notify_all()
                return
            if left:  # the disk is full: keep the ops, in order, and try again later
                with self._cv:
                    self._queue = left + self._queue
                    self._queued_steps += sum(1 for op in left if op[0] == "step")
                    if self._queued_steps > self.max_pending_steps:
                        self._drop_oldest_locked()
                    if closing and time.monotonic() >= self._close_deadline:
                        self._error = BufferError(
                            f"{self.segment_path}: disk still full after {self.close_timeout_s} s; "
                            f"{self._queued_steps} queued steps not stored ({self.dropped_steps} dropped before)")
                        self._cv.notify_all()
                        return
                self._backoff_s = min(self.disk_full_retry_max_s, max(0.1, 2 * self._backoff_s))
                if closing:  # nothing wakes a closing writer's wait: sleep out the backoff here
                    time.sleep(max(0.0, min(self._backoff_s, self._close_deadline - time.monotonic())))
                next_commit = time.monotonic() + self._backoff_s
                continue
            next_commit = time.monotonic() + self.commit_window_s
            with self._cv:
                self._done_seq = seq
                self._cv.notify_all()
            if closing:
                return

    def _write(self, batch: list[tuple]) -> list[tuple]:
        """Commit ``batch`` (rolling over where it says so); returns the ops left unwritten by a full disk.

        Errors other than a full disk propagate (the writer fails, as before).
        """
        pos = 0
        try:
            while pos < len(batch):
                end = next((i for i in range(pos, len(batch)) if batch[i][0] == "roll"), len(batch))
                if end > pos:
                    part = batch[pos:end]
                    n_steps = self._commit(part)
                    pos = end
                    self._committed(part, n_steps)
                if pos < len(batch):
                    self._roll(*batch[pos][1])
                    pos += 1
        except (sqlite3.Error, OSError) as e:
            try:
                self._con.execute("ROLLBACK")
            except Exception:
                pass
            if not (is_disk_full(e) or self._io_error_on_a_full_disk(e)):
                raise
            self._full(e)
            return batch[pos:]
        if self.disk_full and batch:
            self._resumed()
        return []

    def _io_error_on_a_full_disk(self, e: BaseException) -> bool:
        """SQLite reports some ENOSPC failures (growing the -shm, an fsync) as a plain "disk I/O error": take
        one as a full disk when the store's filesystem has less than 1 MiB left."""
        if not (isinstance(e, sqlite3.OperationalError) and "disk I/O error" in str(e)):
            return False
        try:
            st = os.statvfs(self.segment_path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < 1 << 20

    def _committed(self, part: Sequence[tuple], n_steps: int) -> None:
        done = time.perf_counter()
        wall = time.time()
        if self.segment_max_bytes:
            self._segment_bytes = self._page_size * int(self._con.execute("PRAGMA page_count").fetchone()[0])
        with self._cv:
            self.committed_steps += n_steps
            self.n_commits += 1
            self._latency.extend(done - op[2] for op in part if op[0] == "step")
            total = self.committed_steps
        if self.on_commit is not None:
            try:
                self.on_commit(total, wall)
            except Exception:  # a broken observer must not stop the commits
                _log.exception("on_commit callback failed")

    def _full(self, e: BaseException) -> None:
        with self._cv:
            self.disk_full_retries += 1
            self.disk_full_error = f"{type(e).__name__}: {e}"
            if self.disk_full:
                return
            self.disk_full = True
            self.disk_full_since = time.time()
            self.n_disk_full += 1
        _log.error("%s: disk full (%s): nothing committed is lost; steps wait in memory (at most %d) and the "
                   "commit is retried until space returns", self.segment_path, e, self.max_pending_steps)

    def _resumed(self) -> None:
        with self._cv:
            since = self.disk_full_since or time.time()
            self.disk_full, self.disk_full_since = False, None
        self._backoff_s = self.commit_window_s
        _log.warning("%s: space is back, commits resumed after %.1f s (%d steps dropped in all)",
                     self.segment_path, time.time() - since, self.dropped_steps)

    def _roll(self, index: int, base_id: int, base_idx: int) -> None:
        """Close the current segment cleanly and go on in segment ``index`` (writer thread, between episodes).

        Safe to retry after a failure at any point (a full disk): the old
        segment's update is idempotent, :func:`~.schema.create_store` is atomic,
        and an existing new segment is opened rather than created again.
        """
        old = self._con
        old.execute("UPDATE writer_sessions SET closed_at = ? WHERE id = ?", (time.time(), self.session_id))
        path = segment_path(self.path, index)
        if not path.exists():
            create_store(path, self.spec, self.robot_id, synchronous=self._synchronous, meta={
                "segment_index": index, "series_id": self.series_id, "episode_id_base": base_id,
                "episode_idx_base": base_idx})
        con = connect(path, synchronous=self._synchronous)
        try:
            con.execute("PRAGMA journal_size_limit = 67108864")
            ensure_columns(con)
            con.execute("INSERT OR IGNORE INTO writer_sessions (id, opened_at, pid, host, recovered_episodes) "
                        "VALUES (?,?,?,?,0)", (self.session_id, time.time(), os.getpid(), socket.gethostname()))
            created = float(read_meta(con)["created_at"])
        except BaseException:
            con.close()
            raise
        try:
            old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:  # committed all the same; the last close checkpoints it
            _log.warning("%s: WAL checkpoint at rollover failed: %s", self.segment_path, e)
        old.close()
        _log.info("%s: closed at %d bytes; continuing in %s", self.segment_path, self._segment_bytes, path.name)
        self._con, self.segment_path, self.segment_index = con, path, index
        self._segment_created, self._segment_bytes = created, 0
        # per-segment counters: the new segment counts from what the old one recorded
        self._rejected_base, self._rejected_written = self._rejected_base - self._rejected_written, 0
        self._dropped_base, self._dropped_written = self._dropped_base - self._dropped_written, 0
        self.segments_rolled += 1
        self._roll_pending = False

    def _commit(self, batch: Sequence[tuple]) -> int:
        """Write one batch in one transaction, with a small, fixed number of statements.

        Every statement execution releases the GIL and must win it back from
        the caller's thread (see :func:`_insert_steps`), so the batch is folded
        first: all steps in multi-row INSERTs, every episode touched (begun,
        ended, or both) in one multi-row UPSERT, truncation marks applied to
        the queued rows (or one UPDATE for rows committed earlier). The tables
        have no enforced foreign keys and the transaction is atomic, so the
        order of statements inside it does not matter.
        """
        rows: list[tuple] = []
        where: dict[tuple[int, int], int] = {}
        episodes: dict[int, list] = {}
        late_trunc: list[int] = []
        frames: list[tuple] = []
        for op in batch:
            kind = op[0]
            if kind == "step":
                row = op[1]
                where[(row[0], row[1])] = len(rows)
                rows.append(row)
            elif kind == "begin":
                eid, idx, sess, task, seed, rcfg, is_demo, started, info = op[1]
                # id, idx, session, task, seed, reward_config, is_demo, started_at, info,
                # success, episode_return, length, n_intervention_steps, model_versions, ended_at, end_reason
                episodes[eid] = [eid, idx, sess, task, seed, rcfg, is_demo, started, info,
                                 None, 0.0, 0, 0, "[]", None, None]
            elif kind == "end":
                eid, idx, t_trunc, ok, ret, length, n_int, models, ended, reason, info = op[1]
                rec = episodes.get(eid) or [eid, idx, None, "", None, "{}", 0, 0.0, None,
                                            None, 0.0, 0, 0, "[]", None, None]  # begun in an earlier commit
                rec[9:16] = [ok, ret, length, n_int, models, ended, reason]
                if info is not None:
                    rec[8] = info
                episodes[eid] = rec
                if t_trunc is not None:
                    i = where.get((eid, t_trunc))
                    if i is None:
                        late_trunc += [eid, t_trunc]
                    else:
                        r = rows[i]
                        rows[i] = r[:7] + (1,) + r[8:]
            elif kind == "frame":
                eid, t, camera, fmt, data, stamp = op[1]
                frames.append((eid, t, camera, fmt, self._encode(data, fmt) if isinstance(data, np.ndarray) else data,
                               stamp))
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        if episodes:
            n = len(episodes)
            con.execute(
                "INSERT INTO episodes (id, idx, session_id, task, seed, reward_config, is_demo, started_at, info, "
                "success, episode_return, length, n_intervention_steps, model_versions, ended_at, end_reason) VALUES "
                + ",".join(["(" + ",".join("?" * 16) + ")"] * n)
                + " ON CONFLICT(id) DO UPDATE SET success=excluded.success, episode_return=excluded.episode_return, "
                "length=excluded.length, n_intervention_steps=excluded.n_intervention_steps, "
                "model_versions=excluded.model_versions, ended_at=excluded.ended_at, end_reason=excluded.end_reason, "
                "info=COALESCE(excluded.info, episodes.info)",
                tuple(chain.from_iterable(episodes.values())))
        if rows:
            _insert_steps(con, rows, self._max_rows, self._sql_cache)
        if late_trunc:
            con.execute("UPDATE steps SET truncated = 1 WHERE (episode_id, t) IN (VALUES "
                        + ",".join(["(?,?)"] * (len(late_trunc) // 2)) + ")", late_trunc)
        if frames:
            con.executemany("INSERT OR REPLACE INTO frames (episode_id, t, camera, format, data, stamp) "
                            "VALUES (?,?,?,?,?,?)", frames)
        rejected = self._rejected_base + self.n_rejected
        if rejected != self._rejected_written:
            con.execute("UPDATE meta SET value = ? WHERE key = 'rejected_steps'", (str(rejected),))
        dropped = self._dropped_base + self.dropped_steps
        if dropped != self._dropped_written:
            con.execute("INSERT INTO meta (key, value) VALUES ('dropped_steps', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(dropped),))
        con.execute("COMMIT")
        self._rejected_written = rejected
        self._dropped_written = dropped
        return len(rows)

    def _encode(self, img: np.ndarray, fmt: str) -> bytes:
        import cv2  # imported lazily: only stores with cameras need OpenCV

        if img.ndim == 3 and img.shape[2] == 3 and self.image_encoding == "rgb8":
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        ext = ".jpg" if fmt == "jpeg" else ".png"
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality] if fmt == "jpeg" else []
        ok, buf = cv2.imencode(ext, img, params)
        if not ok:
            raise BufferError(f"cv2.imencode({ext}) failed for a {img.shape} frame")
        return buf.tobytes()

    def _recover(self) -> list[int]:
        """Close episodes a crashed writer left open; returns their ids."""
        con = self._con
        open_ids = [r[0] for r in con.execute("SELECT id FROM episodes WHERE ended_at IS NULL ORDER BY id")]
        if not open_ids:
            return []
        con.execute("BEGIN IMMEDIATE")
        try:
            for eid in open_ids:
                n, ret, n_int, t_max, last_stamp = con.execute(
                    "SELECT COUNT(*), COALESCE(SUM(reward), 0), COALESCE(SUM(intervention), 0), MAX(t), "
                    "MAX(recv_stamp) FROM steps WHERE episode_id = ?", (eid,)).fetchone()
                models = [r[0] for r in con.execute(
                    "SELECT model_version FROM steps WHERE episode_id = ? GROUP BY model_version ORDER BY MIN(id)",
                    (eid,))]
                if t_max is not None:
                    con.execute("UPDATE steps SET truncated = 1 WHERE episode_id = ? AND t = ? AND terminated = 0",
                                (eid, t_max))
                con.execute("UPDATE episodes SET success = 0, episode_return = ?, length = ?, "
                            "n_intervention_steps = ?, model_versions = ?, ended_at = COALESCE(?, started_at), "
                            "end_reason = 'crash' WHERE id = ?",
                            (float(ret), int(n), int(n_int), dumps(models), last_stamp, eid))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return open_ids


def import_episodes(store: "str | Path | Writer", episodes: Iterable[Mapping[str, Any]], *, is_demo: bool = True,
                    reward_fn: Callable[..., Any] | None = None, spec: Spec | None = None,
                    model_version: str = "expert") -> list[int]:
    """Append whole episodes (e.g. the scripted expert's demonstrations); returns their ids.

    Each episode is a mapping with:

    * ``obs``: ``(T+1, obs_dim)`` observations including the final one, or
      ``(T, obs_dim)`` together with ``next_obs`` ``(T, obs_dim)``;
    * ``actions``: ``(T, action_dim)`` policy-space actions in [-1, 1];
    * ``rewards``: ``(T,)``, optional when ``reward_fn`` is given (then
      ``reward_fn(obs, actions, next_obs, terminated)`` labels them and its
      ``config`` is recorded);
    * optional: ``success`` (bool, default False), ``terminated`` (bool: the
      last step is an MDP terminal, default False), ``end_reason`` (default
      ``"success"``/``"timeout"``), ``task``, ``seed``, ``intervention`` ``(T,)``,
      ``model_version`` (default ``model_version``), ``reward_config``, ``info``.

    ``store`` is a store path (a writer is opened and closed here) or an open
    :class:`Writer`. All steps are validated; an invalid one raises
    :class:`InvalidStep` and the episode being imported is closed as ``reset``.
    """
    own = not isinstance(store, Writer)
    w = Writer(store, spec=spec, synchronous="NORMAL") if own else store
    ids: list[int] = []
    try:
        for ep in episodes:
            obs = np.asarray(ep["obs"], dtype=np.float32)
            actions = np.asarray(ep["actions"] if "actions" in ep else ep["action"], dtype=np.float32)
            T = len(actions)
            if "next_obs" in ep:
                next_obs = np.asarray(ep["next_obs"], dtype=np.float32)
            else:
                if len(obs) != T + 1:
                    raise InvalidStep(f"episode has {T} actions but {len(obs)} observations (need T+1, "
                                      "or pass next_obs)")
                obs, next_obs = obs[:-1], obs[1:]
            if len(obs) != T or len(next_obs) != T:
                raise InvalidStep(f"episode lengths disagree: obs {len(obs)}, next_obs {len(next_obs)}, actions {T}")
            terminal = bool(ep.get("terminated", False))
            term = np.zeros(T, dtype=bool)
            if T:
                term[-1] = terminal
            rewards = ep.get("rewards", ep.get("reward"))
            reward_config = ep.get("reward_config")
            if rewards is None:
                if reward_fn is None:
                    raise ValueError("episode has no rewards and no reward_fn was given")
                rewards = np.asarray(reward_fn(obs, actions, next_obs, term), dtype=np.float64).reshape(T)
                if reward_config is None:
                    reward_config = getattr(reward_fn, "config", {})
            rewards = np.asarray(rewards, dtype=np.float64).reshape(T)
            interv = np.asarray(ep.get("intervention", np.zeros(T)), dtype=bool).reshape(T)
            success = bool(ep.get("success", False))
            mv = str(ep.get("model_version", model_version))
            eid = w.begin_episode(ep.get("task"), seed=ep.get("seed"), reward_config=reward_config or {},
                                  is_demo=is_demo, info=ep.get("info"))
            try:
                for i in range(T):
                    w.add_step(obs[i], actions[i], rewards[i], next_obs[i], terminated=bool(term[i]),
                               intervention=bool(interv[i]), model_version=mv)
            except BaseException:
                w.end_episode("reset", success=False)
                raise
            w.end_episode(ep.get("end_reason", "success" if success else "timeout"), success=success)
            ids.append(eid)
        w.flush()
    finally:
        if own:
            w.close()
    return ids
