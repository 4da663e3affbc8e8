"""Neural network building blocks shared by SAC, CQL, IQL, PPO, Recap and BC.

* :class:`ObsNormalizer`: fixed ``(obs - mean) / std`` (then clipped) with the
  statistics stored as buffers. It lives *inside* the actor, so an exported
  model takes raw observations in the spec's SI units.
* :func:`mlp`: a plain ReLU MLP (optionally LayerNorm after each hidden layer).
* :class:`StateValue`: ``V(s)`` on the normalised observation.
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


# --------------------------------------------------------------------------- images
class ImageEncoder(nn.Module):
    """uint8 RGB ``(B, 3, H, W)`` -> ``(B, features)``: three 3x3 convolutions (``channels``, ReLU; strides 2, 2,
    1), a linear layer, LayerNorm and tanh. DrQ's encoder (Kostrikov et al., 2020) has four 32-channel layers
    with one stride-2; this one strides twice and has 16 channels, ~15x fewer multiply-adds at 84x84, so that it
    trains on a CPU (the same head: linear, LayerNorm, tanh)."""

    def __init__(self, im, features: int = 50, channels: int = 16):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU(),
        )
        with torch.no_grad():
            n = self.convs(torch.zeros(1, 3, im.height, im.width)).numel()
        self.head = nn.Sequential(nn.Linear(n, features), nn.LayerNorm(features), nn.Tanh())
        self.features = features

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img.float() / 255.0 - 0.5
        return self.head(self.convs(x).flatten(1))



# --------------------------------------------------------------------------- MLP
def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    layernorm: bool = False,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """``Linear -> [LayerNorm] -> activation`` (ReLU) for each hidden size, then a final ``Linear``."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers.append(nn.Linear(d, h))
        if layernorm:
            layers.append(nn.LayerNorm(h))
        layers.append(activation())
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class StateValue(nn.Module):
    """``V(s)``: an MLP on the normalised observation, output ``[B]`` (IQL's expectile
    value, PPO's critic).

    Args:
        obs_dim: observation size.
        hidden: hidden sizes (default ``(256, 256)``).
        normalizer: observation normaliser (a fresh identity one if omitted).
        activation: hidden activation (ReLU; PPO uses Tanh).
    """

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (256, 256), normalizer: ObsNormalizer | None = None,
                 activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.normalizer = normalizer if normalizer is not None else ObsNormalizer(obs_dim)
        self.net = mlp(int(obs_dim), tuple(hidden), 1, activation=activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalizer(obs)).squeeze(-1)


# --------------------------------------------------------------------------- actor
def _log_det_tanh(u: torch.Tensor) -> torch.Tensor:
    """Elementwise ``log(1 - tanh(u)^2)`` computed stably as ``2 (log 2 - u - softplus(-2u))``
    (no catastrophic cancellation of ``1 - tanh^2`` near the bounds)."""
    return 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))


def squashed_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log pi(tanh(u))`` for ``u ~ N(mean, exp(log_std))``, summed over action dims:
    ``log pi(a) = log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2)``."""
    z = (u - mean) * torch.exp(-log_std)
    gauss = -0.5 * z.square() - log_std - 0.5 * _LOG_2PI
    return (gauss - _log_det_tanh(u)).sum(-1)


class SquashedGaussianActor(nn.Module):
    """Tanh-squashed diagonal Gaussian policy ``pi(a | s[, c])`` with ``a`` in ``(-1, 1)``.

    Args:
        obs_dim, action_dim: sizes (from the spec).
        hidden: hidden layer sizes (default ``(256, 256)``).
        cond_dim: size of an optional conditioning input (Recap's one-hot
            indicator: 3); 0 for none.
        normalizer: observation normaliser (a fresh identity one if omitted).
        cond_mode: how the condition enters. ``"input"``: concatenated after the
            normalised observation. ``"heads"``: also one output layer per
            condition, mixed by the condition's weights (for a one-hot
            condition: its own head), so that what is learnt under one
            indicator value cannot be averaged away by the others; the trunk
            is shared.

    The log-std head is squashed smoothly into ``[LOG_STD_MIN, LOG_STD_MAX]``.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256),
        cond_dim: int = 0,
        normalizer: ObsNormalizer | None = None,
        cond_mode: str = "input",
    ) -> None:
        super().__init__()
        if cond_mode not in ("input", "heads"):
            raise ValueError(f"cond_mode must be 'input' or 'heads', got {cond_mode!r}")
        self.obs_dim, self.action_dim, self.cond_dim = int(obs_dim), int(action_dim), int(cond_dim)
        self.cond_mode = cond_mode if self.cond_dim else "input"
        self.normalizer = normalizer if normalizer is not None else ObsNormalizer(obs_dim)
        if self.cond_mode == "heads":
            hidden = tuple(hidden)
            self.net = nn.Sequential(mlp(self.obs_dim + self.cond_dim, hidden[:-1], hidden[-1]), nn.ReLU())
            self.heads = nn.Linear(hidden[-1], self.cond_dim * 2 * self.action_dim)
        else:
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
        x = self._features(obs, cond)
        if self.cond_mode == "heads":
            c = x[:, self.obs_dim:]
            out = self.heads(self.net(x)).view(x.shape[0], self.cond_dim, 2 * self.action_dim)
            mean, raw = (out * c.unsqueeze(-1)).sum(1).chunk(2, dim=-1)
        else:
            mean, raw = self.net(x).chunk(2, dim=-1)
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
            eps = torch.zeros_like(mean)
        else:
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            u = torch.addcmul(mean, eps, log_std.exp())
        logp = None
        if with_log_prob:  # squashed_log_prob(u, mean, log_std), using (u - mean) / std == eps
            logp = (-0.5 * eps.square() - log_std - _log_det_tanh(u)).sum(-1) - 0.5 * _LOG_2PI * self.action_dim
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
class _StackedReluMLP(torch.autograd.Function):
    """Forward and hand-written backward of the stacked ReLU ensemble (no LayerNorm).

    Same maths as the autograd path of :meth:`EnsembleCritic.forward`, in about a
    third of the kernel launches: ReLUs run in place on fresh matmul outputs, the
    backward reuses the saved post-ReLU activations as masks, and weight
    gradients are skipped when the weights do not need them (the actor loss's
    detached critics). On a 2-core CPU this is ~10-15% of a SAC update.

    Inputs: ``x [B, in]``, ``w_in [E, h0, in]``, ``b_in [E, h0, 1]``, ``w_out [E, 1, h]``,
    ``b_out [E, 1, 1]``, then ``w_l [E, h_l, h_{l-1}], b_l [E, h_l, 1]`` per hidden layer.
    Output ``[E, B]``.
    """

    @staticmethod
    def forward(ctx, x, w_in, b_in, w_out, b_out, *hidden):  # type: ignore[override]
        E, h0, d_in = w_in.shape
        h = torch.addmm(b_in.reshape(E * h0, 1), w_in.reshape(E * h0, d_in), x.t()).view(E, h0, -1).relu_()
        acts = [h]
        for w, b in zip(hidden[0::2], hidden[1::2]):
            h = torch.baddbmm(b, w, h).relu_()
            acts.append(h)
        ctx.save_for_backward(x, w_in, w_out, *hidden[0::2], *acts)
        return torch.baddbmm(b_out, w_out, h).squeeze(1)

    @staticmethod
    def backward(ctx, grad_q):  # type: ignore[override]
        need = ctx.needs_input_grad
        x, w_in, w_out, *rest = ctx.saved_tensors
        n_hidden = len(rest) // 2
        ws, acts = rest[:n_hidden], rest[n_hidden:]
        E, h0, d_in = w_in.shape
        g = grad_q.unsqueeze(1)  # [E, 1, B]
        grads: list[torch.Tensor | None] = [None] * len(need)
        if need[3]:
            grads[3] = torch.bmm(g, acts[-1].transpose(1, 2))
            grads[4] = g.sum(-1, keepdim=True)
        gh = torch.ops.aten.threshold_backward(w_out.transpose(1, 2) * g, acts[-1], 0)
        for l in range(n_hidden - 1, -1, -1):  # hidden layer l maps acts[l] -> acts[l + 1]
            if need[5 + 2 * l]:
                grads[5 + 2 * l] = torch.bmm(gh, acts[l].transpose(1, 2))
                grads[6 + 2 * l] = gh.sum(-1, keepdim=True)
            gh = torch.ops.aten.threshold_backward(torch.bmm(ws[l].transpose(1, 2), gh), acts[l], 0)
        gz = gh.view(E * h0, -1)  # [E*h0, B]
        if need[1]:
            grads[1] = torch.mm(gz, x).view(E, h0, d_in)
            grads[2] = gz.sum(-1, keepdim=True).view(E, h0, 1)
        if need[0]:
            grads[0] = torch.mm(gz.t(), w_in.reshape(E * h0, d_in))
        return tuple(grads)


class EnsembleCritic(nn.Module):
    """``n_critics`` Q-functions ``Q_i(s, a)`` evaluated together.

    The members' weights are stacked so that a forward pass is a handful of large
    kernels for the whole ensemble, with no Python loop over members. Activations
    are kept feature-major, ``[E, h, B]``, and weights as ``[E, out, in]`` (the
    ``nn.Linear`` layout), so every product runs on contiguous operands without
    copies:

    * first layer: one ``addmm`` ``[E*h, in] x [normalise(obs), action]^T``;
    * hidden layers: one ``baddbmm`` ``[E, h', h] x [E, h, B]``;
    * output layer: one ``baddbmm`` ``[E, 1, h] x [E, h, B]``.

    Without LayerNorm the pass runs through :class:`_StackedReluMLP`, whose
    backward is written out by hand (fewer, in-place kernels); with LayerNorm it is
    plain autograd.

    Each member is initialised independently like ``nn.Linear``; member ``i`` is
    mathematically the MLP ``Linear -> [LayerNorm] -> ReLU -> ... -> Linear(1)`` on
    ``[normalise(obs), action]``.

    Args:
        obs_dim, action_dim: sizes.
        hidden: hidden sizes per member (default ``(256, 256)``).
        n_critics: ensemble size ``E`` (default 2: clipped double Q).
        layernorm: LayerNorm (with per-member affine) after each hidden layer,
            as recommended by RLPD for high update-to-data ratios (default off).
        normalizer: observation normaliser (fresh identity one if omitted).

    ``forward`` returns ``[E, B]``.
    """

    LN_EPS = 1e-5

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
        if len(hidden) < 1:
            raise ValueError("the critic needs at least one hidden layer")
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.n_critics, self.layernorm = int(n_critics), bool(layernorm)
        self.hidden = tuple(int(h) for h in hidden)
        self.normalizer = normalizer if normalizer is not None else ObsNormalizer(obs_dim)
        self.fused = True  # use _StackedReluMLP when there is no LayerNorm (False: plain autograd)
        E = self.n_critics

        def uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default init
            return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))

        h0, d_in = self.hidden[0], self.obs_dim + self.action_dim
        self.w_in = uniform((E, h0, d_in), d_in)  # acts on [normalise(obs), action]
        self.b_in = uniform((E, h0, 1), d_in)
        self.w_hidden = nn.ParameterList()
        self.b_hidden = nn.ParameterList()
        for a, b in zip(self.hidden[:-1], self.hidden[1:]):
            self.w_hidden.append(uniform((E, b, a), a))
            self.b_hidden.append(uniform((E, b, 1), a))
        self.w_out = uniform((E, 1, self.hidden[-1]), self.hidden[-1])
        self.b_out = uniform((E, 1, 1), self.hidden[-1])
        self.ln_weights = nn.ParameterList()
        self.ln_biases = nn.ParameterList()
        if layernorm:
            for h in self.hidden:
                self.ln_weights.append(nn.Parameter(torch.ones(E, h, 1)))
                self.ln_biases.append(nn.Parameter(torch.zeros(E, h, 1)))

    def _act(self, h: torch.Tensor, i: int, detach: bool, inplace: bool = True) -> torch.Tensor:
        """[LayerNorm over the feature dim 1, with per-member affine] then ReLU.

        ``inplace`` ReLU saves an allocation when ``h`` is a fresh kernel output
        that no autograd node saved (not for views: autograd would replay them).
        """
        if self.layernorm:
            g, beta = self.ln_weights[i], self.ln_biases[i]
            if detach:
                g, beta = g.detach(), beta.detach()
            # mean/var by hand: torch.var_mean over dim 1 of a [E, ., .] tensor is ~10x slower on CPU here
            d = h - h.mean(1, keepdim=True)
            var = (d * d).mean(1, keepdim=True)
            h = torch.addcmul(beta, d * torch.rsqrt(var + self.LN_EPS), g)
            inplace = True
        return F.relu(h, inplace=inplace)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """All members' ``Q(s, a)`` as ``[E, B]``.

        ``detach_params=True`` uses detached weights: gradients still flow to
        ``action`` (for the actor loss) but no weight gradients are computed,
        which is both correct and cheaper than SB3's approach of computing
        critic weight gradients and then discarding them.
        """

        def p(t: torch.Tensor) -> torch.Tensor:
            return t.detach() if detach_params else t

        E, h0 = self.n_critics, self.hidden[0]
        x = torch.cat([self.normalizer(obs), action], dim=-1)  # [B, in]
        if self.fused and not self.layernorm:  # fast path, hand-written backward (same maths as below)
            params = [self.w_in, self.b_in, self.w_out, self.b_out]
            for w, b in zip(self.w_hidden, self.b_hidden):
                params += [w, b]
            return _StackedReluMLP.apply(x, *[p(t) for t in params])
        x = torch.addmm(p(self.b_in).reshape(E * h0, 1), p(self.w_in).reshape(E * h0, -1), x.t())  # [E*h0, B]
        h = self._act(x.reshape(E, h0, -1), 0, detach_params, inplace=False)  # [E, h0, B]
        for i in range(len(self.w_hidden)):
            h = self._act(torch.baddbmm(p(self.b_hidden[i]), p(self.w_hidden[i]), h), i + 1, detach_params)
        return torch.baddbmm(p(self.b_out), p(self.w_out), h).squeeze(1)
