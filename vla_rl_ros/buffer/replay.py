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

Derived transitions (hindsight relabellings, :meth:`Replay.add_transitions`)
belong to the online side but have a ring of their own (``derived_capacity``):
they are several per recorded one, and in a shared ring they would evict the
arm's real experience (4:1 with four relabellings per episode). With a derived
ring ``hindsight_k`` times the size of the online one (the continual learner's
choice), the newest ``capacity`` real transitions and up to every relabelling
of them are kept, so the mix the learner samples is the one it had before the
online ring filled.

:meth:`Replay.refresh` reads only step rows with ``id`` greater than the last
one it saw in each store (the primary-key index makes this a range scan), so a
refresh costs in proportion to what is new. Readers see committed transactions
only, and every row carries its own ``next_obs`` (see :mod:`.schema`), so each
row read is a complete, correct transition, including at episode boundaries:
a terminal step has ``done = 1`` (no bootstrapping), a truncated one keeps
``done = 0`` and bootstraps from its stored ``next_obs``.

:meth:`Replay.episodes` gives Recap whole *completed* episodes with their
outcome, also loaded incrementally (and only if asked for). They are held to the
same capacities as the rings: the arm's own episodes (neither a demonstration
nor holding an intervention step) up to ``capacity`` steps in all, the rest up
to ``demo_capacity``; past that the oldest are dropped from memory (never from
the store) and counted in :attr:`Replay.episodes_evicted`.

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

    @property
    def evicted(self) -> int:
        """Rows added and since overwritten (FIFO)."""
        return self.total_added - self.size

    def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: getattr(self, k)[idx] for k in _STEP_FIELDS}


class Replay:
    """Transitions from one or more stores, for off-policy learners.

    Args:
        stores: store files (see :func:`~vla_rl_ros.buffer.run.list_stores`).
        capacity: transitions kept on the online side (FIFO), and steps of the arm's own episodes kept by
            :meth:`episodes` (the oldest whole episodes dropped first).
        demo_capacity: likewise for the demo side and for demonstration and intervention episodes (default:
            ``capacity``).
        derived_capacity: derived transitions (:meth:`add_transitions`) kept, in a ring of their own sampled
            as part of the online side (default: ``capacity``).
        spec: expected spec; every store must match it (and each other).
        device: torch device for :meth:`sample`'s tensors.
        seed: sampling RNG seed.
        chunk_rows: rows fetched per SQL query during :meth:`refresh`.

    Not thread-safe: refresh and sample from the learner's thread. Each store
    is opened read-only (``query_only``) and no read transaction is held
    between calls, so the recorder's WAL checkpoints are never blocked.
    """

    def __init__(self, stores: Iterable[str | Path] = (), *, capacity: int = 1_000_000,
                 demo_capacity: int | None = None, derived_capacity: int | None = None, spec: Spec | None = None,
                 device: str = "cpu", seed: int | None = None, chunk_rows: int = 20_000) -> None:
        self.spec = spec
        self.device = device
        self.capacity = int(capacity)
        self.demo_capacity = int(demo_capacity if demo_capacity is not None else capacity)
        self.derived_capacity = int(derived_capacity if derived_capacity is not None else capacity)
        if min(self.capacity, self.demo_capacity, self.derived_capacity) < 1:
            raise ValueError("Replay capacities must be at least 1")
        self.chunk_rows = int(chunk_rows)
        self.rng = np.random.default_rng(seed)
        self._stores: list[dict[str, Any]] = []
        self._online: _Ring | None = None
        self._demo: _Ring | None = None
        self._derived: _Ring | None = None
        self._episodes: list[Episode] = []
        self._episode_steps = {False: 0, True: 0}  # steps held by episodes(): own (False), demo/intervention (True)
        #: completed episodes loaded by episodes() so far (held or evicted): grows with the store.
        self.episodes_loaded = 0
        #: completed episodes without a recorded step (the arm held until the episode ended), skipped by episodes().
        self.episodes_empty = 0
        #: episodes (and their steps) dropped from memory by episodes() to stay within the capacities.
        self.episodes_evicted = 0
        self.episode_steps_evicted = 0
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
            self._derived = _Ring(self.derived_capacity, self.spec.obs_dim, self.spec.action_dim)
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
        online side, in their own ring (``derived_capacity``: they never evict the arm's real experience); columns
        ``obs, action, reward, next_obs, terminated, intervention, is_demo``. They live in memory only: the store
        keeps exactly what the arm did. Returns how many were added."""
        if self._online is None or not cols:
            return 0
        n = len(cols["reward"])
        for k in _STEP_FIELDS:
            if k not in cols or len(cols[k]) != n:
                raise ValueError(f"add_transitions: column {k!r} missing or not of length {n}")
        self._derived.add(cols)
        return n

    # --------------------------------------------------------------- sampling
    @property
    def n_demo(self) -> int:
        return self._demo.size if self._demo else 0

    @property
    def n_online(self) -> int:
        """Online-side transitions held: the arm's own and derived ones."""
        return self._online.size + self._derived.size if self._online else 0

    @property
    def n_episodes(self) -> int:
        """Episodes :meth:`episodes` holds."""
        return len(self._episodes)

    @property
    def evicted(self) -> dict[str, int]:
        """What the capacities have dropped from memory so far (the store keeps it all): transitions of each
        ring, and whole episodes (with their steps) of :meth:`episodes`."""
        rings = {"online": self._online, "demo": self._demo, "derived": self._derived}
        out = {f"{k}_transitions": r.evicted if r else 0 for k, r in rings.items()}
        return out | {"episodes": self.episodes_evicted, "episode_steps": self.episode_steps_evicted}

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
        if batch_size - n_demo:  # uniform over the online side: the arm's own rows, then the derived ones
            idx = self.rng.integers(0, no_avail, batch_size - n_demo)
            own = idx < self._online.size
            parts += [self._online.gather(idx[own]), self._derived.gather(idx[~own] - self._online.size)]
        batch = {k: np.concatenate([p[k] for p in parts]) for k in _STEP_FIELDS}
        out = {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in
               ("obs", "action", "reward", "next_obs", "is_demo", "intervention")}
        out["done"] = torch.from_numpy(batch["terminated"])
        if self.device != "cpu":
            out = {k: v.to(self.device) for k, v in out.items()}
        return out

    # --------------------------------------------------------------- episodes
    def episodes(self) -> list[Episode]:
        """The completed episodes of every store (demos included) held in memory, in the order loaded (oldest
        first per store).

        Loaded incrementally: each call reads only episodes completed since the
        previous call. An open episode (and any after it) waits for its end.
        An episode that ended without a recorded step is skipped (counted in :attr:`episodes_empty`).
        Held within the capacities: the arm's own episodes (not demonstrations,
        no intervention step) up to ``capacity`` steps in all, demonstration
        and intervention episodes up to ``demo_capacity``; past either, the
        oldest loaded of that kind are dropped (:attr:`episodes_evicted`).
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
                    if not rows:  # ended before its first recorded tick (e.g. the arm held throughout)
                        self.episodes_empty += 1
                        s["last_episode"] = eid
                        continue
                    cols = list(zip(*rows))
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
                    self._episode_steps[_anchor(self._episodes[-1])] += len(rows)
                    self.episodes_loaded += 1
                    s["last_episode"] = eid
            finally:
                con.execute("COMMIT")
        self._evict_episodes()
        return list(self._episodes)

    def _evict_episodes(self) -> None:
        """Drop the oldest episodes of each kind (own; demonstration or intervention) beyond its capacity."""
        over = {False: self._episode_steps[False] - self.capacity, True: self._episode_steps[True] - self.demo_capacity}
        if max(over.values()) <= 0:
            return
        kept = []
        for e in self._episodes:  # oldest first: drop while its kind is still over
            kind = _anchor(e)
            if over[kind] > 0:
                over[kind] -= len(e)
                self._episode_steps[kind] -= len(e)
                self.episodes_evicted += 1
                self.episode_steps_evicted += len(e)
            else:
                kept.append(e)
        self._episodes = kept

    def __enter__(self) -> "Replay":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _anchor(e: Episode) -> bool:
    """A demonstration or an episode a person corrected: held to ``demo_capacity``, not ``capacity``."""
    return bool(e.is_demo or e.intervention.any())


def open_replay(paths: Sequence[str | Path], **kw: Any) -> Replay:
    """``Replay(list_stores(paths), **kw)`` followed by a first :meth:`Replay.refresh`."""
    from .run import list_stores

    r = Replay(list_stores(paths), **kw)
    r.refresh()
    return r
