"""Neural network building blocks shared by SAC, Recap and BC.

* :class:`ObsNormalizer`: fixed ``(obs - mean) / std`` (then clipped) with the
  statistics stored as buffers. It lives *inside* the actor, so an exported
  model takes raw observations in the spec's SI units.
* :func:`mlp`: a plain ReLU MLP (optionally LayerNorm after each hidden layer).
* :class:`SquashedGaussianActor`: ``a = tanh(u)``, ``u ~ N(mean(s), std(s))``,
  log-probability with the tanh change-of-variables correction; deterministic
  mode is ``tanh(mean)``. An optional conditioning vector (Recap's indicator)
  is concatenated to the normalised observation.
* :class:`DeterministicPolicy`: the ``obs -> tanh(mean)`` module that is exported.
* :class:`EnsembleCritic`: ``E`` Q-networks with stacked weights evaluated in
  one batched pass (``torch.baddbmm``), no Python loop over members.

All modules are float32 and CPU friendly; nothing here imports ROS.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOG_STD_MIN = -5.0
"""Lower bound of the actor's log standard deviation (std >= 6.7e-3), as CleanRL."""
LOG_STD_MAX = 2.0
"""Upper bound of the actor's log standard deviation (std <= 7.4)."""
_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


# --------------------------------------------------------------------------- normaliser
class ObsNormalizer(nn.Module):
    """Fixed observation normaliser: ``clip((obs - mean) / std, -clip, clip)``.

    The statistics are buffers (saved in state dicts and baked into exported ONNX
    graphs), computed once from data with :meth:`fit` / :meth:`set_stats`; they are
    *not* updated by gradient descent or running averages, so a deployed model
    always sees the same transform it was trained with. Until fitted it is the
    identity (mean 0, std 1) apart from the clip.

    Args:
        dim: observation size.
        min_std: floor on the per-feature std so that a feature that was constant
            in the data (a fixed goal, say) cannot blow up later (default 1e-2, i.e.
            1 cm / 0.01 rad for SI observations).
        clip: bound on the normalised value (default 10).
    """

    def __init__(self, dim: int, min_std: float = 1e-2, clip: float = 10.0) -> None:
        super().__init__()
        self.dim = int(dim)
        self.min_std = float(min_std)
        self.clip = float(clip)
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("std", torch.ones(self.dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def set_stats(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(self.dim)
        std = torch.as_tensor(np.asarray(std, dtype=np.float32)).reshape(self.dim)
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("observation statistics contain NaN/inf")
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(self.min_std))
        self.fitted.fill_(True)

    def fit(self, obs: np.ndarray | torch.Tensor) -> "ObsNormalizer":
        """Set mean/std from a ``[N, dim]`` array of raw observations."""
        x = np.asarray(obs.detach().cpu().numpy() if isinstance(obs, torch.Tensor) else obs, dtype=np.float64)
        x = x.reshape(-1, self.dim)
        if len(x) == 0:
            raise ValueError("cannot fit an observation normaliser on zero samples")
        self.set_stats(x.mean(0), x.std(0))
        return self

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self.mean) / self.std).clamp(-self.clip, self.clip)


# --------------------------------------------------------------------------- MLP
def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    layernorm: bool = False,
) -> nn.Sequential:
    """``Linear -> [LayerNorm] -> ReLU`` for each hidden size, then a final ``Linear``."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers.append(nn.Linear(d, h))
        if layernorm:
            layers.append(nn.LayerNorm(h))
        layers.append(nn.ReLU())
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- actor
def squashed_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log pi(tanh(u))`` for ``u ~ N(mean, exp(log_std))``, summed over action dims.

    ``log pi(a) = log N(u) - sum_i log(1 - tanh(u_i)^2)`` and, without the
    catastrophic cancellation of ``1 - tanh^2`` near the bounds,
    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``.
    """
    z = (u - mean) * torch.exp(-log_std)
    gauss = -0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI
    correction = 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))
    return (gauss - correction).sum(-1)


class SquashedGaussianActor(nn.Module):
    """Tanh-squashed diagonal Gaussian policy ``pi(a | s[, c])`` with ``a`` in ``(-1, 1)``.

    Args:
        obs_dim, action_dim: sizes (from the spec).
        hidden: hidden layer sizes (default ``(256, 256)``).
        cond_dim: size of an optional conditioning input concatenated after the
            normalised observation (Recap's one-hot indicator: 3); 0 for none.
        normalizer: observation normaliser (a fresh identity one if omitted).

    The log-std head is squashed smoothly into ``[LOG_STD_MIN, LOG_STD_MAX]``.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256),
        cond_dim: int = 0,
        normalizer: ObsNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.action_dim, self.cond_dim = int(obs_dim), int(action_dim), int(cond_dim)
        self.normalizer = normalizer if normalizer is not None else ObsNormalizer(obs_dim)
        self.net = mlp(self.obs_dim + self.cond_dim, tuple(hidden), 2 * self.action_dim)

    def _features(self, obs: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        x = self.normalizer(obs)
        if self.cond_dim:
            if cond is None:
                raise ValueError("this actor is conditioned: pass cond")
            x = torch.cat([x, cond.expand(x.shape[0], -1) if cond.dim() == 1 else cond], -1)
        return x

    def dist_params(self, obs: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh ``mean`` and ``log_std``, each ``[B, action_dim]``."""
        mean, raw = self.net(self._features(obs, cond)).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw) + 1.0)
        return mean, log_std

    def forward(
        self,
        obs: torch.Tensor,
        cond: torch.Tensor | None = None,
        deterministic: bool = False,
        with_log_prob: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Reparameterised sample ``a = tanh(mean + std * eps)`` and its log-prob ``[B]``.

        ``deterministic=True`` returns ``tanh(mean)`` (log-prob evaluated there).
        """
        mean, log_std = self.dist_params(obs, cond)
        if deterministic:
            u = mean
        else:
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            u = mean + eps * log_std.exp()
        logp = squashed_log_prob(u, mean, log_std) if with_log_prob else None
        return torch.tanh(u), logp

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor, cond: torch.Tensor | None = None,
                 clip: float = 1.0 - 1e-6) -> torch.Tensor:
        """Log-density of given actions in ``(-1, 1)`` (clipped to ``±clip`` before atanh)."""
        mean, log_std = self.dist_params(obs, cond)
        u = torch.atanh(action.clamp(-clip, clip))
        return squashed_log_prob(u, mean, log_std)

    def deterministic(self, obs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.dist_params(obs, cond)[0])


class DeterministicPolicy(nn.Module):
    """``obs -> tanh(mean(obs[, cond]))``: the plain module that gets exported to ONNX.

    ``cond`` (optional) is a fixed conditioning vector baked in as a buffer.
    """

    def __init__(self, actor: SquashedGaussianActor, cond: torch.Tensor | None = None) -> None:
        super().__init__()
        self.actor = actor
        if cond is not None:
            self.register_buffer("cond", torch.as_tensor(cond, dtype=torch.float32).reshape(1, -1))
        else:
            self.cond = None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        cond = None if self.cond is None else self.cond.expand(obs.shape[0], -1)
        return torch.tanh(self.actor.dist_params(obs, cond)[0])


# --------------------------------------------------------------------------- critic
class EnsembleCritic(nn.Module):
    """``n_critics`` Q-functions ``Q_i(s, a)`` evaluated together.

    The weights of layer ``l`` of all members are one ``[E, in, out]`` parameter,
    so a forward pass is one ``baddbmm`` per layer for the whole ensemble
    (no Python loop over members, few large kernels, one optimiser tensor per
    layer). Each member is initialised independently like ``nn.Linear``.

    Args:
        obs_dim, action_dim: sizes.
        hidden: hidden sizes per member (default ``(256, 256)``).
        n_critics: ensemble size ``E`` (default 2: clipped double Q).
        layernorm: LayerNorm (with per-member affine) after each hidden layer,
            as recommended by RLPD for high update-to-data ratios (default off).
        normalizer: observation normaliser (fresh identity one if omitted).

    ``forward`` returns ``[E, B]``.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256),
        n_critics: int = 2,
        layernorm: bool = False,
        normalizer: ObsNormalizer | None = None,
    ) -> None:
        super().__init__()
        if n_critics < 1:
            raise ValueError("n_critics must be >= 1")
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.n_critics, self.layernorm = int(n_critics), bool(layernorm)
        self.normalizer = normalizer if normalizer is not None else ObsNormalizer(obs_dim)
        sizes = [self.obs_dim + self.action_dim, *[int(h) for h in hidden], 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.ln_weights = nn.ParameterList()
        self.ln_biases = nn.ParameterList()
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default init
            self.weights.append(nn.Parameter(torch.empty(n_critics, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_critics, 1, d_out).uniform_(-bound, bound)))
        if layernorm:
            for h in sizes[1:-1]:
                self.ln_weights.append(nn.Parameter(torch.ones(n_critics, 1, h)))
                self.ln_biases.append(nn.Parameter(torch.zeros(n_critics, 1, h)))

    def forward(self, obs: torch.Tensor, action: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """All members' ``Q(s, a)`` as ``[E, B]``.

        ``detach_params=True`` uses detached weights: gradients still flow to
        ``action`` (for the actor loss) but no weight gradients are computed,
        which is both correct and about a third cheaper than SB3's approach of
        computing critic weight gradients and then discarding them.
        """
        x = torch.cat([self.normalizer(obs), action], dim=-1)
        h = x.unsqueeze(0).expand(self.n_critics, -1, -1)
        last = len(self.weights) - 1
        for i in range(last + 1):
            w, b = self.weights[i], self.biases[i]
            if detach_params:
                w, b = w.detach(), b.detach()
            h = torch.baddbmm(b, h, w)
            if i < last:
                if self.layernorm:
                    g, beta = self.ln_weights[i], self.ln_biases[i]
                    if detach_params:
                        g, beta = g.detach(), beta.detach()
                    h = torch.addcmul(beta, F.layer_norm(h, h.shape[-1:]), g)
                h = F.relu(h)
        return h.squeeze(-1)
