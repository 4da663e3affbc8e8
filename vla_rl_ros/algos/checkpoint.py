"""Training checkpoints: weights, optimiser states, RNG states and counters.

Checkpoints are ``torch.save`` files restricted to plain data: nested
dicts/lists/tuples of tensors, strings, numbers, booleans and ``None`` (what
``state_dict()`` of modules, optimisers, :class:`~.sac.SAC` and
:class:`~.recap.RecapTrainer` return). Saving refuses anything else, and loading
uses ``torch.load(weights_only=True)``, so a checkpoint can never execute code
(no arbitrary pickle). Files are written atomically: temp file in the same
directory, fsync, ``os.replace``.

Typical use::

    save_checkpoint("ckpt/sac.pt", {"sac": sac.state_dict(), "env_steps": n})
    state = load_checkpoint("ckpt/sac.pt")
    sac = SAC.from_state_dict(state["sac"])
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .export import write_bytes_atomic

_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype)


def _check_plain(obj: Any, where: str = "state") -> None:
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; only str/int keys are allowed")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__name__}; checkpoints hold only tensors and plain data "
                    "(convert configs to JSON strings, arrays to tensors)")


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Atomically write ``state`` (plain data only, see module docstring) to ``path``."""
    _check_plain(state)
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint onto the CPU with ``weights_only=True``."""
    return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
