"""Segments of recorded episodes, and which pairs of them to ask about.

A segment is ``L`` consecutive ticks of one episode (Christiano et al. 2017
use 1-2 s clips; PEBBLE, Lee et al. 2021, 50 ticks). :class:`EpisodeIndex`
holds the completed episodes of one or more stores, keyed by the store
series' id, and turns a :class:`~.store.Segment` back into its arrays.

Query selection (which two segments a labeller sees next):

* :func:`random_pairs`: both segments uniformly at random (the start, before
  there is a reward model, and the baseline);
* :func:`disagreement_pairs`: PEBBLE's ensemble disagreement: draw
  ``n_candidates`` random pairs, score each by the variance over the
  ensemble's members of the predicted ``P(left > right)``, and ask about the
  ``n`` highest (Lee et al. 2021, §4.2 "disagreement-based sampling").
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .store import Segment


def store_key(path: str | Path) -> str:
    """A store file's series id (``meta.series_id``, else ``store_id``): the same for every segment of a series."""
    con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        meta = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('series_id', 'store_id')").fetchall())
    finally:
        con.close()
    return meta.get("series_id") or meta["store_id"]


@dataclass
class SegmentData:
    """A segment's arrays: ``obs``, ``actions``, ``next_obs`` ``(L, dim)`` and ``terminated`` ``(L,)``."""

    segment: Segment
    task: str
    obs: np.ndarray
    actions: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    rewards: np.ndarray  # the recorded reward column


class EpisodeIndex:
    """Completed episodes of one or more runs, addressable by ``(store id, episode id)``.

    Args:
        episodes: :class:`~vla_rl_ros.buffer.replay.Episode` objects (``Replay.episodes()``).
        run_names: ``{store path: run name}``; the store's parent folder's name by default.
    """

    def __init__(self, episodes: Iterable[Any], run_names: dict[str, str] | None = None) -> None:
        self.episodes: dict[tuple[str, int], Any] = {}
        self.run_of: dict[str, str] = {}
        keys: dict[str, str] = {}
        for e in episodes:
            if e.store not in keys:
                keys[e.store] = store_key(e.store)
                self.run_of[keys[e.store]] = (run_names or {}).get(e.store, Path(e.store).parent.name)
            self.episodes[(keys[e.store], int(e.id))] = e

    @classmethod
    def from_paths(cls, paths: Sequence[str | Path]) -> "EpisodeIndex":
        """Every completed episode of the given runs / stores."""
        import sys

        from ..buffer.replay import Replay
        from ..buffer.run import list_stores

        # Only episodes() is wanted: a 1-row sampling ring (never refreshed), and no cap on the episodes held
        # (Replay holds episodes() to its capacities since the replay_capacity change, which capacity=1 emptied).
        r = Replay(list_stores(paths), capacity=1)
        r.capacity = r.demo_capacity = sys.maxsize
        try:
            return cls(r.episodes())
        finally:
            r.close()

    def __len__(self) -> int:
        return len(self.episodes)

    def data(self, seg: Segment) -> SegmentData:
        e = self.episodes.get((seg.store, seg.episode))
        if e is None:
            raise KeyError(f"episode {seg.episode} of store {seg.store} is not loaded")
        if seg.t1 > len(e):
            raise ValueError(f"segment {seg} runs past the episode's {len(e)} ticks")
        s = slice(seg.t0, seg.t1)
        return SegmentData(seg, e.task, e.obs[s], e.actions[s], e.next_obs[s], e.terminated[s], e.rewards[s])

    def random_segment(self, length: int, rng: np.random.Generator, recent: int | None = None) -> Segment:
        """``length`` ticks from a uniformly chosen episode at least that long, at a uniform start.

        ``recent``: only the newest ``recent`` such episodes (in the order the stores hold them: by episode id),
        the queries aligned with the policy that acts now (QPA, Hu et al. 2023: labels on the current policy's
        segments improve the reward where that policy is, instead of where it was)."""
        keys = [k for k, e in self.episodes.items() if len(e) >= length]
        if recent is not None:
            keys = keys[-int(recent):]
        if not keys:
            raise ValueError(f"no episode has {length} ticks or more")
        store, eid = keys[int(rng.integers(len(keys)))]
        n = len(self.episodes[(store, eid)])
        t0 = int(rng.integers(0, n - length + 1))
        return Segment(store, self.run_of[store], eid, t0, t0 + length)


def random_pairs(index: EpisodeIndex, n: int, length: int, rng: np.random.Generator,
                 exclude: set[tuple[Segment, Segment]] | None = None,
                 recent: int | None = None) -> list[tuple[Segment, Segment]]:
    """``n`` pairs of distinct random segments (none in ``exclude``, e.g. ``store.asked()``), from the newest
    ``recent`` episodes if set (:meth:`EpisodeIndex.random_segment`)."""
    out: list[tuple[Segment, Segment]] = []
    seen = set(exclude or ())
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n + 100:
            raise ValueError(f"could only find {len(out)} new pairs of {length}-tick segments")
        a, b = index.random_segment(length, rng, recent), index.random_segment(length, rng, recent)
        if a == b or (a, b) in seen:
            continue
        seen.update({(a, b), (b, a)})
        out.append((a, b))
    return out


def disagreement_pairs(index: EpisodeIndex, model: Any, n: int, length: int, rng: np.random.Generator,
                       n_candidates: int = 10, exclude: set[tuple[Segment, Segment]] | None = None,
                       recent: int | None = None) -> tuple[list[tuple[Segment, Segment]], np.ndarray]:
    """PEBBLE's disagreement sampling: of ``n * n_candidates`` random pairs, the ``n`` whose predicted
    ``P(left > right)`` varies most across ``model``'s ensemble members.

    ``model`` needs ``member_probs(pairs_of_SegmentData) -> (E, N)`` (see
    :class:`~.reward_model.RewardEnsemble`). Returns the pairs and their variances (highest first).
    """
    cands = random_pairs(index, n * n_candidates, length, rng, exclude, recent)
    probs = model.member_probs([(index.data(a), index.data(b)) for a, b in cands])  # (E, N)
    var = np.asarray(probs).var(axis=0)
    order = np.argsort(-var, kind="stable")[:n]
    return [cands[i] for i in order], var[order]
