"""Action chunks at control rate: what the control tick executes while a slow model thinks (ROS-free).

A VLA-shaped model (:class:`~vla_rl_ros.runtime.onnx_policy.ChunkPolicy`) returns
K actions for the K chunk steps, ``1 / chunk_hz`` apart, that follow the
observation it was computed from (stamp ``t0``). The inference thread hands each
chunk to a :class:`ChunkExecutor` (:meth:`~ChunkExecutor.submit`); the control
tick asks it for the action at its own time ``t`` (:meth:`~ChunkExecutor.sample`),
at any control rate:

* the chunk position is ``s = (t - t0) * chunk_hz``: step ``floor(s)``, and with
  ``interpolate`` the action goes linearly from step ``floor(s)`` to the next, so
  a 50 Hz chunk drives a 500 Hz loop without steps. The inference's own latency
  is skipped, not replayed: a chunk that arrives 100 ms after its observation
  starts at ``s = 0.1 * chunk_hz``.
* ``receding``: the newest chunk alone (receding horizon: a new chunk replaces
  the rest of the old one).
* ``ensemble``: ACT's temporal ensembling (Zhao et al., 2023): every chunk that
  still covers ``t`` votes, weighted ``exp(-m * i)`` with ``i = 0`` for the
  oldest (ACT's convention: older predictions weigh more for small ``m``).
* A chunk covers ``0 <= s < K``. When the newest chunk runs out before the next
  one arrives (a late inference), :meth:`~ChunkExecutor.sample` returns ``None``
  and the tick holds: never a stale step repeated beyond its horizon.

Thread safety without a lock in the tick: the chunks live in a tuple that
:meth:`~ChunkExecutor.submit` replaces with one reference assignment; a tick
reads that reference once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXECUTION_MODES = ("receding", "ensemble")


@dataclass(frozen=True)
class Chunk:
    actions: np.ndarray  # (K, A) float64, read-only
    t0: float  # stamp of the observation it was computed from (s)
    seq: int  # inference number, from 1
    frame_stamp: float  # stamp of the newest camera frame it saw (s; 0 = none)


@dataclass
class Sample:
    """What one tick executed: the chunk (``seq``), the position in it (``step``, fractional), the stamps."""

    seq: int = -1
    step: float = -1.0
    t0: float = 0.0
    frame_stamp: float = 0.0


class ChunkExecutor:
    def __init__(self, chunk_len: int, chunk_hz: float, action_dim: int, *, mode: str = "receding",
                 interpolate: bool = True, ensemble_decay: float = 0.01):
        if mode not in EXECUTION_MODES:
            raise ValueError(f"chunk execution must be one of {EXECUTION_MODES}, got {mode!r}")
        if chunk_len < 1 or not chunk_hz > 0:
            raise ValueError("chunk_len must be >= 1 and chunk_hz > 0")
        self.K, self.hz, self.A = int(chunk_len), float(chunk_hz), int(action_dim)
        self.mode, self.interpolate, self.decay = mode, bool(interpolate), float(ensemble_decay)
        self._chunks: tuple[Chunk, ...] = ()
        self._seq = 0

    @property
    def horizon_s(self) -> float:
        """How long one chunk covers (s)."""
        return self.K / self.hz

    def clear(self) -> None:
        """Forget every chunk (a new model, an estop): the next tick holds until a fresh chunk arrives."""
        self._chunks = ()

    def submit(self, actions: np.ndarray, t0: float, frame_stamp: float = 0.0) -> Chunk:
        """Hand over a ``(K, A)`` chunk computed from the observation stamped ``t0``. Called by one thread."""
        a = np.array(actions, dtype=np.float64).reshape(self.K, self.A)
        if not np.all(np.isfinite(a)):
            raise ValueError("the chunk has non-finite actions")
        np.clip(a, -1.0, 1.0, out=a)
        a.setflags(write=False)
        self._seq += 1
        c = Chunk(a, float(t0), self._seq, float(frame_stamp))
        keep = tuple(x for x in self._chunks if x.t0 + self.horizon_s > t0 and x.t0 <= t0)
        self._chunks = (keep + (c,))[-(self.K + 1):]  # the one assignment a tick may observe
        return c

    def newest(self) -> Chunk | None:
        ch = self._chunks
        return ch[-1] if ch else None

    def steps_done(self, t: float) -> float:
        """How far (in chunk steps) the newest chunk is at ``t``; ``inf`` without one. The inference thread asks
        for a new chunk once this reaches its re-planning step."""
        c = self.newest()
        return math.inf if c is None else (t - c.t0) * self.hz

    def _at(self, c: Chunk, s: float, out: np.ndarray) -> None:
        k = int(s) if s > 0.0 else 0
        a = c.actions
        if self.interpolate and k + 1 < self.K and s > k:
            f = s - k
            np.multiply(a[k], 1.0 - f, out=out)
            out += f * a[k + 1]
        else:
            out[:] = a[k]

    def sample(self, t: float, out: np.ndarray, info: Sample | None = None) -> bool:
        """Write the action for time ``t`` into ``out`` (``(A,)`` float64); ``False`` when no chunk covers ``t``
        (none yet, or the newest ran out): the caller holds. ``info`` receives which chunk step ran."""
        chunks = self._chunks  # the one read of the shared reference
        if not chunks:
            return False
        newest = chunks[-1]
        s_new = (t - newest.t0) * self.hz
        if s_new >= self.K:
            return False
        if self.mode == "receding" or len(chunks) == 1:
            self._at(newest, s_new, out)
        else:
            tmp = np.empty(self.A)
            out[:] = 0.0
            wsum, i = 0.0, 0
            for c in chunks:  # oldest first
                s = (t - c.t0) * self.hz
                if s >= self.K:
                    continue
                w = math.exp(-self.decay * i)
                self._at(c, s, tmp)
                out += w * tmp
                wsum += w
                i += 1
            out /= wsum
        if info is not None:
            info.seq, info.step, info.t0, info.frame_stamp = newest.seq, max(s_new, 0.0), newest.t0, newest.frame_stamp
        return True
