"""Behaviour cloning of action chunks: the project's own VLA-shaped model (ACT-style, Zhao et al., 2023).

From a state (and, when the spec declares them, camera frames and an instruction) the
policy predicts the next K actions at once::

    a_{t:t+K} = pi(s_t, I_t, l),      loss = mean_k m_k * |a_{t+k} - a*_{t+k}|_1

L1, as ACT uses, on the demonstrated actions that follow ``t`` in the same episode;
steps past the episode's end are masked out (``m_k = 0``), as ACT pads and masks.
The network (:class:`ChunkPolicyNet`) is a plain MLP over the normalised state,
each camera's features (:class:`ImageEncoder`: a small conv stack after DrQ's,
84x84 RGB -> 50 features) and the instruction's one-hot; its output is ``tanh``-squashed
and reshaped to ``(K, action_dim)``. ACT's CVAE and transformer are left out: the
chunking, the loss and the execution (:mod:`vla_rl_ros.runtime.chunks`: receding
horizon or temporal ensembling) are what make it a chunked policy, and a small
MLP trains in a minute on this machine.

It exports like every other policy (:func:`~vla_rl_ros.algos.export.export_onnx`,
the inputs :func:`~vla_rl_ros.algos.export.input_names` gives), and runs through
the very path an externally trained VLA would: ``policy_node``'s inference thread.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..spec import Spec
from .networks import ImageEncoder, ObsNormalizer, mlp


class ChunkPolicyNet(nn.Module):
    """``forward(obs, *images, [instruction]) -> (B, K, action_dim)`` in [-1, 1], inputs as the spec orders them
    (:func:`~vla_rl_ros.algos.export.input_names`)."""

    def __init__(self, spec: Spec, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.spec = spec
        self.K, self.A = spec.chunk_len, spec.action_dim
        self.normalizer = ObsNormalizer(spec.obs_dim)
        self.encoders = nn.ModuleList(ImageEncoder(im) for im in spec.images)
        d = spec.obs_dim + sum(e.features for e in self.encoders) + len(spec.instructions)
        self.body = mlp(d, list(hidden), self.K * self.A)

    def forward(self, obs: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        feats = [self.normalizer(obs)]
        for enc, img in zip(self.encoders, rest):
            feats.append(enc(img))
        if self.spec.instructions:
            feats.append(rest[len(self.encoders)])
        return torch.tanh(self.body(torch.cat(feats, -1))).reshape(-1, self.K, self.A)


def chunk_targets(actions: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """For one episode's ``actions (T, A)``: targets ``(T, K, A)`` (``actions[t + k]``, the last action repeated
    past the end) and their mask ``(T, K)`` (1 inside the episode, 0 past its end)."""
    T = len(actions)
    idx = np.arange(T)[:, None] + np.arange(K)[None, :]
    mask = (idx < T).astype(np.float32)
    return actions[np.minimum(idx, T - 1)], mask


@dataclass
class ChunkData:
    """Episodes flattened for training: states, their chunk targets and masks, frames per camera, instruction."""

    obs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (N, 3, H, W) uint8
    instruction: np.ndarray | None = None  # (N,) vocabulary index

    @classmethod
    def from_episodes(cls, episodes: Sequence[dict], K: int) -> "ChunkData":
        """``episodes``: dicts with ``obs (T, d)``, ``actions (T, A)`` (the labels at those states), optionally
        ``frames`` ``{camera: (T, 3, H, W)}`` and ``instruction`` (an index)."""
        O, Y, M, F, L = [], [], [], {}, []
        for ep in episodes:
            y, m = chunk_targets(np.asarray(ep["actions"], np.float32), K)
            O.append(np.asarray(ep["obs"], np.float32)[: len(y)])
            Y.append(y)
            M.append(m)
            for cam, fr in (ep.get("frames") or {}).items():
                F.setdefault(cam, []).append(np.asarray(fr, np.uint8)[: len(y)])
            L.append(np.full(len(y), int(ep.get("instruction", 0))))
        return cls(np.concatenate(O), np.concatenate(Y), np.concatenate(M),
                   {c: np.concatenate(v) for c, v in F.items()}, np.concatenate(L))


def train_chunk_bc(data: ChunkData, spec: Spec, *, steps: int = 3000, batch_size: int = 256, lr: float = 3e-4,
                   hidden: Sequence[int] = (256, 256), seed: int = 0, progress: bool = False) -> ChunkPolicyNet:
    """Fit a :class:`ChunkPolicyNet` for ``spec`` (its ``chunk_len``, cameras and vocabulary) by masked L1 on
    ``data``; returns it in eval mode, ``.history`` the logged losses."""
    from tqdm import tqdm

    if data.targets.shape[1:] != (spec.chunk_len, spec.action_dim):
        raise ValueError(f"targets {data.targets.shape[1:]} do not match the spec's chunk ({spec.chunk_len}, "
                         f"{spec.action_dim})")
    missing = [im.name for im in spec.images if im.name not in data.frames]
    if missing:
        raise ValueError(f"the spec's cameras {missing} have no frames in the data")
    torch.manual_seed(seed)
    net = ChunkPolicyNet(spec, hidden)
    net.normalizer.fit(data.obs)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    obs, y, m = (torch.as_tensor(x) for x in (data.obs, data.targets, data.mask))
    frames = [torch.as_tensor(data.frames[im.name]) for im in spec.images]
    instr = None
    if spec.instructions:
        instr = nn.functional.one_hot(torch.as_tensor(data.instruction), len(spec.instructions)).float()
    gen = torch.Generator().manual_seed(seed)
    history = []
    net.train()
    for step in tqdm(range(steps), desc="chunk BC", disable=not progress, unit="step"):
        i = torch.randint(0, len(obs), (batch_size,), generator=gen)
        xs = [obs[i], *(f[i] for f in frames)] + ([instr[i]] if instr is not None else [])
        err = (net(*xs) - y[i]).abs().sum(-1)  # (B, K): L1 over the action's components
        loss = (err * m[i]).sum() / m[i].sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            history.append((step, loss.item()))
    net.eval()
    net.history = history
    return net
