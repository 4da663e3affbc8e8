"""The transition learners (SAC, CQL, IQL): one protocol, built by name.

Each learns from batches of transitions ``(s, a, r, s', done)`` and implements
:class:`TransitionLearner`, so the CLI and the continual learner drive any of
them the same way::

    learner = make_learner("iql", spec.obs_dim, spec.action_dim, seed=0)
    learner.fit_obs_normalizer(all_obs)
    sample = replay_sampler(replay, learner.cfg)
    for _ in range(steps):
        metrics = learner.train_step(sample)
    export_onnx(learner.policy_module(), spec, "m.onnx", {"algorithm": learner.algo_name, ...})

Adding one is adding a line to :data:`TRANSITION_LEARNERS`.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch

TRANSITION_LEARNERS: dict[str, tuple[str, str, str]] = {
    "sac": ("vla_rl_ros.algos.sac", "SAC", "SACConfig"),
    "cql": ("vla_rl_ros.algos.cql", "CQL", "CQLConfig"),
    "iql": ("vla_rl_ros.algos.iql", "IQL", "IQLConfig"),
}
"""Name -> (module, learner class, config class)."""


class TransitionLearner(Protocol):
    """What the CLI and the continual learner use of SAC, CQL and IQL."""

    algo_name: str
    cfg: Any

    def fit_obs_normalizer(self, obs: np.ndarray | torch.Tensor) -> None: ...

    def train_step(self, sample_fn: Callable[[], Any]) -> dict[str, torch.Tensor]: ...

    def policy_module(self) -> torch.nn.Module: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, sd: Mapping[str, Any]) -> None: ...


def _classes(name: str) -> tuple[type, type]:
    if name not in TRANSITION_LEARNERS:
        raise ValueError(f"unknown transition learner {name!r} (one of {sorted(TRANSITION_LEARNERS)})")
    mod, cls, cfg = TRANSITION_LEARNERS[name]
    m = importlib.import_module(mod)
    return getattr(m, cls), getattr(m, cfg)


def make_learner(name: str, obs_dim: int, action_dim: int, **config: Any) -> TransitionLearner:
    """A fresh learner ``name`` with its config class's defaults overridden by ``config``
    (keys that config does not have are refused, naming the valid ones)."""
    cls, cfg_cls = _classes(name)
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"{name} has no settings {unknown}; valid: {sorted(fields)}")
    return cls(int(obs_dim), int(action_dim), cfg_cls(**config))


def learner_from_state(sd: Mapping[str, Any]) -> TransitionLearner:
    """Rebuild a learner from its :meth:`state_dict` (``sd["algo"]`` names it)."""
    cls, _ = _classes(str(sd.get("algo")))
    return cls.from_state_dict(sd)


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (process-wide; call it in training processes).

    A gradient step allocates and frees the same large activation buffers every
    update. With glibc's defaults the freed top of the heap goes back to the OS
    and comes back page by page on the next update: CQL's critic passes over
    ``3 * 10 * 256`` sampled actions spent about a quarter of their CPU time in
    the kernel here (``bench/bench_offline_rl.py``'s runs under ``/usr/bin/time``);
    these settings remove most of it. Large blocks are served from the heap up
    to 32 MB (glibc's ceiling) and the heap is not trimmed below 1 GB of free
    space. Linux/glibc only; returns whether it applied.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def replay_sampler(replay: Any, cfg: Any) -> Callable[[], dict[str, Any]]:
    """``sample()`` drawing ``cfg.batch_size`` transitions from a :class:`~vla_rl_ros.buffer.Replay`:
    ``cfg.demo_ratio`` of them from the demo/intervention side, or, when it is ``None``,
    uniformly over every transition (the demo side's share of the data)."""
    def sample() -> dict[str, Any]:
        ratio = cfg.demo_ratio
        if ratio is None:
            ratio = replay.n_demo / max(1, len(replay))
        return replay.sample(cfg.batch_size, demo_ratio=ratio)

    return sample
