"""Behaviour cloning from demonstration arrays (seed §6.2, phase 1).

Two losses on the :class:`~vla_rl_ros.algos.networks.SquashedGaussianActor`:

* ``"mse"`` (default): mean squared error between the deterministic action
  ``tanh(mean(s))`` and the demonstrated action. This trains exactly what is
  deployed, and is robust to demonstrations that sit on the ``±1`` bounds
  (a gripper command, say).
* ``"nll"``: maximum likelihood of the squashed Gaussian. The tanh Jacobian does
  not depend on the parameters, so this equals the Gaussian negative log-likelihood
  of ``u = atanh(a)``; actions are clipped to ``±0.999`` first (``|u| <= 3.8``)
  so that saturated demonstrations cannot drive the mean to infinity. It also
  fits the log-std, which is what you want before SAC fine-tuning.

:func:`train_bc` returns a :class:`~vla_rl_ros.algos.networks.DeterministicPolicy`
(``obs -> tanh(mean)``) ready for :func:`~vla_rl_ros.algos.export.export_onnx`;
its ``.actor`` is the full stochastic actor (e.g. to initialise SAC).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .networks import DeterministicPolicy, SquashedGaussianActor, squashed_log_prob

BC_LOSSES = ("mse", "nll")
NLL_ACTION_CLIP = 0.999


def bc_loss(
    actor: SquashedGaussianActor,
    obs: torch.Tensor,
    action: torch.Tensor,
    kind: str = "mse",
    cond: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Behaviour-cloning loss of ``actor`` on a batch (see module docstring).

    ``weight`` (optional, ``[B]``) weighs each sample's loss before the batch mean:
    advantage-weighted regression (IQL's policy extraction) is this loss with
    ``weight = exp(beta * advantage)``.
    """
    mean, log_std = actor.dist_params(obs, cond)
    if kind == "mse":
        per_sample = (torch.tanh(mean) - action).pow(2).mean(-1)
    elif kind == "nll":
        u = torch.atanh(action.clamp(-NLL_ACTION_CLIP, NLL_ACTION_CLIP))
        per_sample = -squashed_log_prob(u, mean, log_std)
    else:
        raise ValueError(f"unknown BC loss {kind!r}; expected one of {BC_LOSSES}")
    return per_sample.mean() if weight is None else (weight * per_sample).mean()


def fit_bc(
    actor: SquashedGaussianActor,
    sample_fn: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float = 3e-4,
    loss: str = "mse",
    weight_decay: float = 0.0,
    progress: bool = False,
) -> list[float]:
    """Run ``steps`` Adam steps of :func:`bc_loss` on batches ``(obs, action) = sample_fn()``.

    Uses a fresh optimiser (so an RL optimiser's moments are left untouched).
    Returns the loss every 100 steps (and the last one).
    """
    if loss not in BC_LOSSES:
        raise ValueError(f"unknown BC loss {loss!r}; expected one of {BC_LOSSES}")
    params = [p for p in actor.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True) if weight_decay
           else torch.optim.Adam(params, lr=lr, fused=True))
    it = range(int(steps))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="bc", leave=False)
    history: list[float] = []
    actor.train()
    for i in it:
        obs, act = sample_fn()
        l = bc_loss(actor, obs, act, loss)
        opt.zero_grad(set_to_none=True)
        l.backward()
        opt.step()
        if i % 100 == 0 or i == steps - 1:
            history.append(float(l.detach()))
    return history


def train_bc(
    obs: np.ndarray,
    actions: np.ndarray,
    *,
    hidden: Sequence[int] = (256, 256),
    steps: int = 5000,
    batch_size: int = 256,
    lr: float = 3e-4,
    loss: str = "mse",
    weight_decay: float = 0.0,
    normalize_obs: bool = True,
    seed: int = 0,
    actor: SquashedGaussianActor | None = None,
    progress: bool = False,
) -> DeterministicPolicy:
    """Behaviour-clone ``actions [N, act_dim]`` (in ``[-1, 1]``) from raw ``obs [N, obs_dim]``.

    Args:
        hidden: actor hidden sizes (ignored when ``actor`` is given).
        steps, batch_size, lr, weight_decay: Adam(W) optimisation (minibatches
            drawn uniformly with replacement, seeded).
        loss: ``"mse"`` (default) or ``"nll"``; see the module docstring.
        normalize_obs: fit the actor's observation normaliser on ``obs`` first
            (skipped if a given ``actor``'s normaliser is already fitted).
        actor: continue training this actor instead of a fresh one.

    Returns:
        ``DeterministicPolicy`` (``obs -> action``) in eval mode; ``.actor`` is the
        trained stochastic actor and ``.bc_history`` the logged losses.
    """
    obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32))
    act_t = torch.as_tensor(np.asarray(actions, dtype=np.float32))
    if obs_t.ndim != 2 or act_t.ndim != 2 or len(obs_t) != len(act_t) or len(obs_t) == 0:
        raise ValueError(f"expected obs [N, obs_dim] and actions [N, act_dim], got {tuple(obs_t.shape)} and {tuple(act_t.shape)}")
    if not (torch.isfinite(obs_t).all() and torch.isfinite(act_t).all()):
        raise ValueError("demonstrations contain NaN/inf")
    if act_t.abs().max() > 1.0 + 1e-6:
        raise ValueError("demonstrated actions must lie in [-1, 1] (policy space)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if actor is None:
            actor = SquashedGaussianActor(obs_t.shape[1], act_t.shape[1], hidden)
    if normalize_obs and not bool(actor.normalizer.fitted):
        actor.normalizer.fit(obs_t)
    gen = torch.Generator().manual_seed(seed)
    n = len(obs_t)

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(n, (batch_size,), generator=gen)
        return obs_t[idx], act_t[idx]

    history = fit_bc(actor, sample, steps, lr=lr, loss=loss, weight_decay=weight_decay, progress=progress)
    policy = DeterministicPolicy(actor).eval()
    policy.bc_history = history
    return policy
