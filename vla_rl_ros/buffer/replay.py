"""The learner-side view of one or more stores: in-memory transitions, tailed incrementally.

:class:`Replay` keeps transitions in preallocated numpy ring buffers, split in
two sides in the RLPD style (Ball et al. 2023, "Efficient Online RL with
Offline Data"):

* the **demo side**: every step of a demonstration episode (``is_demo``) and
  every human-intervention step of an online episode;
* the **online side**: every other step.

:meth:`Replay.sample` draws ``round(batch_size * demo_ratio)`` transitions from
the demo side and the rest from the online side, uniformly within each (all
from one side if the other is empty). Each side is a FIFO ring of fixed
capacity, so a long run cannot evict the demonstrations.

:meth:`Replay.refresh` reads only step rows with ``id`` greater than the last
one it saw in each store (the primary-key index makes this a range scan), so a
refresh costs in proportion to what is new. Readers see committed transactions
only, and every row carries its own ``next_obs`` (see :mod:`.schema`), so each
row read is a complete, correct transition, including at episode boundaries:
a terminal step has ``done = 1`` (no bootstrapping), a truncated one keeps
``done = 0`` and bootstraps from its stored ``next_obs``.

:meth:`Replay.episodes` gives Recap whole *completed* episodes with their
outcome, also loaded incrementally (and only if asked for).

Segments (:mod:`.segments`): a store path (or run folder) names its whole
series. Every segment is read, oldest first, as one store would be (episode ids
continue across segments), and :meth:`Replay.refresh` picks up the segments a
recorder rolls over to while the learner runs. Archived segments are no longer
read; :attr:`Replay.archived` and :meth:`Replay.summary` say what they held.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..spec import Spec
from .schema import check_spec, connect, store_spec
from .segments import archived_segments, describe_archived, list_segments, series_of

_STEP_FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "intervention", "is_demo")


@dataclass
class Episode:
    """One completed episode, as Recap and offline tools need it."""

    store: str
    id: int
    idx: int
    task: str
    seed: int | None
    is_demo: bool
    success: bool
    end_reason: str
    episode_return: float
    model_versions: list[str]
    reward_config: dict[str, Any]
    obs: np.ndarray            # (T, obs_dim) float32
    actions: np.ndarray        # (T, action_dim) float32
    rewards: np.ndarray        # (T,) float32
    next_obs: np.ndarray       # (T, obs_dim) float32
    terminated: np.ndarray     # (T,) bool
    truncated: np.ndarray      # (T,) bool
    intervention: np.ndarray   # (T,) bool
    model_version: list[str] = field(default_factory=list)  # per step
    info: dict[str, Any] = field(default_factory=dict)  # the recorder's: control rate, max steps, success detector

    def __len__(self) -> int:
        return len(self.actions)


def _json_dict(text: str | None) -> dict[str, Any]:
    try:
        d = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return d if isinstance(d, dict) else {}


class _Ring:
    """Preallocated FIFO storage for one side of the replay."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, act_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.intervention = np.zeros(capacity, bool)
        self.is_demo = np.zeros(capacity, bool)
        self.pos = 0
        self.size = 0
        self.total_added = 0

    def add(self, cols: dict[str, np.ndarray]) -> None:
        n = len(cols["reward"])
        if n == 0:
            return
        if n > self.capacity:  # only the newest `capacity` rows can survive anyway
            cols = {k: v[-self.capacity:] for k, v in cols.items()}
            self.total_added += n - self.capacity
            n = self.capacity
        idx = (self.pos + np.arange(n)) % self.capacity
        for k in _STEP_FIELDS:
            getattr(self, k)[idx] = cols[k]
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)
        self.total_added += n

    def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: getattr(self, k)[idx] for k in _STEP_FIELDS}


class Replay:
    """Transitions from one or more stores, for off-policy learners.

    Args:
        stores: store files (see :func:`~vla_rl_ros.buffer.run.list_stores`).
        capacity: transitions kept on the online side (FIFO).
        demo_capacity: transitions kept on the demo side (default: ``capacity``).
        spec: expected spec; every store must match it (and each other).
        device: torch device for :meth:`sample`'s tensors.
        seed: sampling RNG seed.
        chunk_rows: rows fetched per SQL query during :meth:`refresh`.

    Not thread-safe: refresh and sample from the learner's thread. Each store
    is opened read-only (``query_only``) and no read transaction is held
    between calls, so the recorder's WAL checkpoints are never blocked.
    """

    def __init__(self, stores: Iterable[str | Path] = (), *, capacity: int = 1_000_000,
                 demo_capacity: int | None = None, spec: Spec | None = None, device: str = "cpu",
                 seed: int | None = None, chunk_rows: int = 20_000) -> None:
        self.spec = spec
        self.device = device
        self.capacity = int(capacity)
        self.demo_capacity = int(demo_capacity if demo_capacity is not None else capacity)
        self.chunk_rows = int(chunk_rows)
        self.rng = np.random.default_rng(seed)
        self._stores: list[dict[str, Any]] = []
        self._online: _Ring | None = None
        self._demo: _Ring | None = None
        self._episodes: list[Episode] = []
        self._series: dict[Path, Path] = {}  # resolved base -> base: series whose new segments refresh() adds
        #: step rows read from SQLite by refresh() (each row is read once).
        self.rows_fetched = 0
        #: step rows read by episodes().
        self.episode_rows_fetched = 0
        for s in stores:
            self.add_store(s)

    # ----------------------------------------------------------------- stores
    def add_store(self, path: str | Path) -> None:
        """Start tailing another store (a store file or run folder, e.g. a recorder that appeared later).

        A run folder or any store file stands for its series: all its segments
        now, and those it rolls over to later.
        """
        path = Path(path)
        if path.is_dir():
            from .run import STORE_FILE

            path = path / STORE_FILE
        base, _ = series_of(path)
        segments = list_segments(base) or [path]  # none: connect() says the store is missing
        for seg in segments:
            self._add_file(seg)
        self._series.setdefault(base.resolve(), base)

    def _discover(self) -> None:
        """Add segments the recorders rolled over to since the last call."""
        for base in self._series.values():
            for seg in list_segments(base):
                self._add_file(seg)

    def _add_file(self, path: Path) -> None:
        if any(s["path"] == path.resolve() for s in self._stores):
            return
        con = connect(path, readonly=True)
        spec = store_spec(con)
        if self.spec is None:
            self.spec = spec
        else:
            check_spec(self.spec, spec, path)
        if self._online is None:
            self._online = _Ring(self.capacity, self.spec.obs_dim, self.spec.action_dim)
            self._demo = _Ring(self.demo_capacity, self.spec.obs_dim, self.spec.action_dim)
        self._stores.append({"path": path.resolve(), "con": con, "last_step": 0, "last_episode": 0})

    @property
    def stores(self) -> list[Path]:
        return [s["path"] for s in self._stores]

    @property
    def archived(self) -> list[dict[str, Any]]:
        """Archive records (:func:`~.segments.archive_segments`) of the series read here: no longer read."""
        return [r for base in self._series.values() for r in archived_segments(base)]

    def summary(self) -> str:
        """What this replay reads (stores, transitions) and what of its series was archived."""
        lines = [f"{len(self._stores)} store file(s): {', '.join(p.name for p in self.stores)}; "
                 f"{self.n_demo} demo-side + {self.n_online} online transitions"]
        archived = describe_archived(self.archived)
        if archived:
            lines.append(archived + " (not read)")
        return "\n".join(lines)

    def close(self) -> None:
        for s in self._stores:
            s["con"].close()
        self._stores.clear()
        self._series.clear()

    # ---------------------------------------------------------------- tailing
    def refresh(self) -> int:
        """Read steps committed since the last refresh, from every store; returns how many."""
        self._discover()
        if self._online is None:
            return 0
        od, ad = self.spec.obs_dim, self.spec.action_dim
        new = 0
        for s in self._stores:
            while True:
                rows = s["con"].execute(
                    "SELECT s.id, s.obs, s.action, s.reward, s.next_obs, s.terminated, s.intervention, e.is_demo "
                    "FROM steps s JOIN episodes e ON e.id = s.episode_id WHERE s.id > ? ORDER BY s.id LIMIT ?",
                    (s["last_step"], self.chunk_rows)).fetchall()
                if not rows:
                    break
                self.rows_fetched += len(rows)
                s["last_step"] = rows[-1][0]
                ids, obs, act, rew, nobs, term, interv, demo = zip(*rows)
                cols = {
                    "obs": np.frombuffer(b"".join(obs), np.float32).reshape(-1, od),
                    "action": np.frombuffer(b"".join(act), np.float32).reshape(-1, ad),
                    "reward": np.asarray(rew, np.float32),
                    "next_obs": np.frombuffer(b"".join(nobs), np.float32).reshape(-1, od),
                    "terminated": np.asarray(term, np.float32),
                    "intervention": np.asarray(interv, bool),
                    "is_demo": np.asarray(demo, bool),
                }
                to_demo = cols["is_demo"] | cols["intervention"]
                self._demo.add({k: v[to_demo] for k, v in cols.items()})
                self._online.add({k: v[~to_demo] for k, v in cols.items()})
                new += len(rows)
                if len(rows) < self.chunk_rows:
                    break
        return new

    def add_transitions(self, cols: dict[str, np.ndarray]) -> int:
        """Add derived transitions (e.g. hindsight-relabelled ones, :mod:`vla_rl_ros.algos.hindsight`) to the
        online side; columns ``obs, action, reward, next_obs, terminated, intervention, is_demo``. They live in
        memory only: the store keeps exactly what the arm did. Returns how many were added."""
        if self._online is None or not cols:
            return 0
        n = len(cols["reward"])
        for k in _STEP_FIELDS:
            if k not in cols or len(cols[k]) != n:
                raise ValueError(f"add_transitions: column {k!r} missing or not of length {n}")
        self._online.add(cols)
        return n

    # --------------------------------------------------------------- sampling
    @property
    def n_demo(self) -> int:
        return self._demo.size if self._demo else 0

    @property
    def n_online(self) -> int:
        return self._online.size if self._online else 0

    def __len__(self) -> int:
        return self.n_demo + self.n_online

    def sample(self, batch_size: int, demo_ratio: float = 0.5) -> dict[str, Any]:
        """A batch of torch tensors.

        Keys: ``obs`` ``(B, obs_dim)``, ``action`` ``(B, action_dim)``, ``reward``
        ``(B,)``, ``next_obs``, ``done`` ``(B,)`` (1.0 where terminated: do not
        bootstrap), all float32; ``is_demo`` and ``intervention`` ``(B,)`` bool.
        The first ``round(B * demo_ratio)`` rows come from the demo side, the
        rest from the online side (all from one side when the other is empty).
        """
        import torch

        if not 0.0 <= demo_ratio <= 1.0:
            raise ValueError("demo_ratio must be in [0, 1]")
        nd_avail, no_avail = self.n_demo, self.n_online
        if nd_avail + no_avail == 0:
            raise RuntimeError("replay is empty: call refresh() after data has been committed")
        if nd_avail == 0:
            n_demo = 0
        elif no_avail == 0:
            n_demo = batch_size
        else:
            n_demo = int(round(batch_size * demo_ratio))
        parts = []
        if n_demo:
            parts.append(self._demo.gather(self.rng.integers(0, nd_avail, n_demo)))
        if batch_size - n_demo:
            parts.append(self._online.gather(self.rng.integers(0, no_avail, batch_size - n_demo)))
        batch = {k: np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in _STEP_FIELDS}
        out = {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in
               ("obs", "action", "reward", "next_obs", "is_demo", "intervention")}
        out["done"] = torch.from_numpy(batch["terminated"])
        if self.device != "cpu":
            out = {k: v.to(self.device) for k, v in out.items()}
        return out

    # --------------------------------------------------------------- episodes
    def episodes(self) -> list[Episode]:
        """Every completed episode of every store (demos included), oldest first per store.

        Loaded incrementally: each call reads only episodes completed since the
        previous call. An open episode (and any after it) waits for its end.
        """
        self._discover()
        od, ad = self.spec.obs_dim if self.spec else 0, self.spec.action_dim if self.spec else 0
        for s in self._stores:
            con: sqlite3.Connection = s["con"]
            con.execute("BEGIN")  # one snapshot for the episode rows and their steps
            try:
                first_open = con.execute("SELECT MIN(id) FROM episodes WHERE ended_at IS NULL").fetchone()[0]
                q = ("SELECT id, idx, task, seed, is_demo, success, end_reason, episode_return, model_versions, "
                     "reward_config, info FROM episodes WHERE id > ? AND ended_at IS NOT NULL")
                args: list[Any] = [s["last_episode"]]
                if first_open is not None:
                    q += " AND id < ?"
                    args.append(first_open)
                eps = con.execute(q + " ORDER BY id", args).fetchall()
                for (eid, idx, task, seed, is_demo, success, reason, ret, models, rcfg, info) in eps:
                    rows = con.execute(
                        "SELECT obs, action, reward, next_obs, terminated, truncated, intervention, model_version "
                        "FROM steps WHERE episode_id = ? ORDER BY t", (eid,)).fetchall()
                    self.episode_rows_fetched += len(rows)
                    cols = list(zip(*rows)) if rows else [()] * 8
                    self._episodes.append(Episode(
                        store=str(s["path"]), id=eid, idx=idx, task=task, seed=seed, is_demo=bool(is_demo),
                        success=bool(success), end_reason=reason, episode_return=float(ret),
                        model_versions=json.loads(models), reward_config=json.loads(rcfg),
                        obs=np.frombuffer(b"".join(cols[0]), np.float32).reshape(-1, od),
                        actions=np.frombuffer(b"".join(cols[1]), np.float32).reshape(-1, ad),
                        rewards=np.asarray(cols[2], np.float32),
                        next_obs=np.frombuffer(b"".join(cols[3]), np.float32).reshape(-1, od),
                        terminated=np.asarray(cols[4], bool), truncated=np.asarray(cols[5], bool),
                        intervention=np.asarray(cols[6], bool), model_version=list(cols[7]),
                        info=_json_dict(info)))
                    s["last_episode"] = eid
            finally:
                con.execute("COMMIT")
        return list(self._episodes)

    def __enter__(self) -> "Replay":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_replay(paths: Sequence[str | Path], **kw: Any) -> Replay:
    """``Replay(list_stores(paths), **kw)`` followed by a first :meth:`Replay.refresh`."""
    from .run import list_stores

    r = Replay(list_stores(paths), **kw)
    r.refresh()
    return r
