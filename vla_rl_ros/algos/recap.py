"""Recap: RL from experience and corrections with an advantage-conditioned policy.

After Physical Intelligence, "pi*0.6: a VLA that learns from experience" (2025).
One :meth:`RecapTrainer.round` on a set of finished episodes (autonomous
rollouts, failures included, and human interventions) does:

1. **Value fit on episode outcomes.** ``V(s)`` estimates the normalised return
   of the data-collecting policy. Rewards, in normalised units (``H = h_norm``,
   normally the maximum episode length in steps)::

       r_t = -1/H                      every step
       r_{L-1} += -fail_penalty        on the last step of a failed episode

   so the value target (the Monte-Carlo return from step ``t`` of an episode of
   ``L`` steps) is::

       success:  G_t = -(L - t) / H                 (minus the steps remaining to success)
       failure:  G_t = -(L - t) / H - fail_penalty

   clipped to the support ``[-(1 + fail_penalty), 0]``. The value head is
   **distributional**: ``n_bins`` bins evenly spread over the support, trained
   with cross-entropy against the two-hot encoding of ``G_t`` (two-hot keeps the
   expectation exact); ``V(s)`` is the expectation of the predicted distribution.
   This is the paper's choice; it is robust to the bimodal success/failure
   returns where an MSE head would average them.

2. **Relabel.** ``N``-step advantages with the same rewards::

       A_t = sum_{k=0}^{N-1} r_{t+k} + V(s_{t+N}) - V(s_t)

   where the sum stops at the episode end and ``V`` past the end is 0 (the
   episode is over: success or failure, its terminal reward is already in
   ``r``). The indicator is ``I_t = 1[A_t > eps]`` with ``eps`` chosen so that a
   ``positive_fraction`` (0.3) of the *autonomous* steps are positive;
   intervention (human correction) steps of successful episodes are always
   positive; those of failed episodes are labelled by their advantage
   (``corrections="outcome"``, the default; ``"always"`` trusts every one).

3. **Actor fit.** A squashed-Gaussian actor conditioned on ``[obs, onehot(I)]``
   with three tokens ``positive | negative | null`` is trained by behaviour
   cloning on *all* steps with their labels (``actor_loss`` ``"mse"`` on
   ``tanh(mean)`` by default, or ``"nll"``, see :mod:`.bc`). With probability
   ``indicator_dropout`` (0.3) a sample's token is replaced by ``null``, so the
   same network is also the unconditional policy (classifier-free guidance).

At inference the indicator is ``positive``. With guidance weight ``w``::

    mean = w * mean(s, positive) + (1 - w) * mean(s, null)      (pre-tanh)
    a = tanh(mean)

i.e. ``a_uncond + w (a_cond - a_uncond)`` applied to the action mean before
the squashing tanh, so actions stay in ``(-1, 1)`` for any ``w``. ``w = 1`` is
exactly the conditional policy (the unconditional branch is then not even
evaluated); ``w > 1`` sharpens towards better-than-average actions.

Each round warm-starts value and actor from the previous round (continual
learning); the observation normaliser is fitted once, on the first round's data,
unless statistics are given.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .bc import BC_LOSSES, bc_loss
from .networks import ObsNormalizer, SquashedGaussianActor, mlp

POSITIVE, NEGATIVE, NULL = 0, 1, 2
"""Indicator token indices (one-hot positions)."""
N_TOKENS = 3


@dataclass
class RecapConfig:
    """Recap hyper-parameters.

    Attributes:
        hidden: hidden sizes of value net and actor ((256, 256)).
        h_norm: steps that correspond to a value of -1 (use the maximum episode
            length of the task; 200).
        fail_penalty: extra (normalised) penalty at the end of a failed episode
            (1.0: a failure is worth -1 below the slowest success).
        n_step: advantage horizon ``N`` in steps (10).
        positive_fraction: fraction of autonomous steps labelled positive (0.3).
        indicator_dropout: probability of training a sample with the ``null``
            token (0.3).
        cfg_weight: guidance weight ``w`` at inference (1.0 = conditional policy).
        n_bins: bins of the distributional value head (101).
        value_steps, actor_steps: gradient steps per round for each fit (2000).
        batch_size, lr, weight_decay: Adam(W) settings (256, 3e-4, 0).
        actor_loss: ``"mse"`` (default) or ``"nll"`` (see :mod:`.bc`).
        demo_ratio: fraction of each actor minibatch drawn from intervention
            (and demonstration) steps when there are any (0.5, as RLPD's
            demo/online split; 0 = uniform over all steps). Corrections are a
            few percent of the steps; without this they are drowned by the
            autonomous positives.
        correction_ratio: that share instead once the data holds corrections
            (intervention steps in episodes that are not demonstrations), or
            None (default) for ``demo_ratio`` always. With a teacher on, the
            corrections are the steps the policy most needs: on the same
            teacher-on data one round scored a median 88% with a share of 0.5
            and 70% with 0.2, while on data without corrections the two were
            level (68%, 69%; ``docs/bench/recap_settings*.md``).
        corrections: how intervention (human correction) steps are labelled:
            ``"outcome"`` (default): positive without question only in episodes
            that ended in success; a correction in a failed episode is labelled
            by its advantage like any autonomous step (a take-over that still
            ended in failure is not a good example by fiat); ``"always"``: every
            correction is positive (π*0.6's assumption that human corrections
            are good). Demonstrations are successful episodes, so positive either way.
        actor_cond: how the indicator enters the actor: ``"heads"`` (one output
            layer per token on a shared trunk; default) or ``"input"`` (the
            one-hot token concatenated to the observation only). Heads keep
            what is learnt under one token from being averaged with the
            others; on pick_place data with corrections (exploratory runs, not
            a bench) both modes scored about the same (~60%), so this is a
            design choice, not a measured gain.
        seed: seeds initialisation, minibatches and dropout.
    """

    hidden: tuple[int, ...] = (256, 256)
    h_norm: int = 200
    fail_penalty: float = 1.0
    n_step: int = 10
    positive_fraction: float = 0.3
    indicator_dropout: float = 0.3
    cfg_weight: float = 1.0
    n_bins: int = 101
    value_steps: int = 2000
    actor_steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.0
    actor_loss: str = "mse"
    demo_ratio: float = 0.5
    correction_ratio: float | None = None
    corrections: str = "outcome"
    actor_cond: str = "heads"
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.h_norm < 1 or self.n_step < 1 or self.n_bins < 2:
            raise ValueError("h_norm, n_step must be >= 1 and n_bins >= 2")
        if self.fail_penalty < 0:
            raise ValueError("fail_penalty must be >= 0")
        if not 0.0 <= self.positive_fraction <= 1.0:
            raise ValueError("positive_fraction must be in [0, 1]")
        if not 0.0 <= self.demo_ratio <= 1.0:
            raise ValueError("demo_ratio must be in [0, 1]")
        if self.correction_ratio is not None and not 0.0 <= self.correction_ratio <= 1.0:
            raise ValueError("correction_ratio must be in [0, 1] or None")
        if not 0.0 <= self.indicator_dropout < 1.0:
            raise ValueError("indicator_dropout must be in [0, 1)")
        if self.corrections not in ("outcome", "always"):
            raise ValueError("corrections must be 'outcome' or 'always'")
        if self.actor_cond not in ("input", "heads"):
            raise ValueError("actor_cond must be 'input' or 'heads'")
        if self.actor_loss not in BC_LOSSES:
            raise ValueError(f"actor_loss must be one of {BC_LOSSES}")

    @property
    def v_min(self) -> float:
        return -(1.0 + self.fail_penalty)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RecapConfig":
        return cls(**json.loads(text))


@dataclass
class Episode:
    """A finished episode: ``obs[t]`` is the raw observation the action ``actions[t]`` was taken in.

    ``obs`` may carry one extra final observation (``L + 1`` rows); it is ignored
    because the value past the end of an episode is 0 by definition. ``demo``: a demonstration (every step
    on the demo side), as opposed to an episode of the policy's own, whose intervention steps are corrections.
    """

    obs: np.ndarray
    actions: np.ndarray
    success: bool
    intervention: np.ndarray | None = None
    demo: bool = False

    def __post_init__(self) -> None:
        self.actions = np.asarray(self.actions, dtype=np.float32)
        L = len(self.actions)
        obs = np.asarray(self.obs, dtype=np.float32)
        if self.actions.ndim != 2 or obs.ndim != 2 or len(obs) not in (L, L + 1) or L == 0:
            raise ValueError(f"episode needs obs [L(+1), obs_dim] and actions [L, act_dim] with L > 0; "
                             f"got {obs.shape} and {self.actions.shape}")
        self.obs = obs[:L]
        self.intervention = (np.zeros(L, dtype=bool) if self.intervention is None
                             else np.asarray(self.intervention, dtype=bool).reshape(L))
        self.success = bool(self.success)
        self.demo = bool(self.demo)

    def __len__(self) -> int:
        return len(self.actions)


def as_episode(e: Episode | Mapping[str, Any]) -> Episode:
    """Accept an :class:`Episode` or a mapping with ``obs, actions|action, success[, intervention, demo]``."""
    if isinstance(e, Episode):
        return e
    return Episode(e["obs"], e["actions"] if "actions" in e else e["action"], e["success"], e.get("intervention"),
                   bool(e.get("demo", False)))


# --------------------------------------------------------------------------- pure functions
def outcome_rewards(length: int, success: bool, h_norm: int, fail_penalty: float) -> np.ndarray:
    """Per-step rewards ``[L]``: ``-1/h_norm`` each step, ``-fail_penalty`` more at the end of a failure."""
    r = np.full(int(length), -1.0 / h_norm, dtype=np.float64)
    if not success:
        r[-1] -= fail_penalty
    return r


def value_targets(length: int, success: bool, h_norm: int, fail_penalty: float) -> np.ndarray:
    """Monte-Carlo returns ``[L]`` of :func:`outcome_rewards`, clipped to ``[-(1 + fail_penalty), 0]``."""
    steps_left = np.arange(length, 0, -1, dtype=np.float64)  # L - t
    g = -steps_left / h_norm - (0.0 if success else fail_penalty)
    return np.clip(g, -(1.0 + fail_penalty), 0.0)


def nstep_advantages(rewards: np.ndarray, values: np.ndarray, n_step: int) -> np.ndarray:
    """``A_t = sum_{k<N} r_{t+k} + V(s_{t+N}) - V(s_t)`` within one episode (``V`` past the end = 0)."""
    r = np.asarray(rewards, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    L = len(r)
    t = np.arange(L)
    end = np.minimum(t + n_step, L)
    csum = np.concatenate([[0.0], np.cumsum(r)])
    bootstrap = np.where(end < L, v[np.minimum(end, L - 1)], 0.0)
    return csum[end] - csum[t] + bootstrap - v


def binarize_advantages(
    advantages: np.ndarray, intervention: np.ndarray | None, positive_fraction: float
) -> tuple[np.ndarray, float]:
    """Indicator ``I_t = 1[A_t > eps]`` with ``eps`` set so that ``positive_fraction`` of the
    autonomous steps are positive (fewer on ties at the threshold); interventions are
    always positive. Returns ``(indicator[bool], eps)``."""
    a = np.asarray(advantages, dtype=np.float64)
    iv = np.zeros(len(a), dtype=bool) if intervention is None else np.asarray(intervention, dtype=bool)
    auto = np.sort(a[~iv])[::-1]
    k = int(round(positive_fraction * len(auto)))
    if len(auto) == 0 or k >= len(auto):
        eps = -np.inf
    elif k == 0:
        eps = np.inf
    else:
        eps = float(auto[k])  # the (k+1)-th largest: exactly the top k are strictly above it
    return (a > eps) | iv, eps


def correction_trust(episodes: Sequence[Episode], mode: str = "outcome") -> np.ndarray:
    """Which steps ``[N]`` (episodes concatenated) are corrections taken as positive without question.

    ``"always"``: every intervention step. ``"outcome"``: intervention steps of
    episodes that ended in success only; the corrections of a failed episode are
    left to their advantage (see :class:`RecapConfig` ``corrections``)."""
    if mode not in ("outcome", "always"):
        raise ValueError("mode must be 'outcome' or 'always'")
    return np.concatenate([e.intervention & (mode == "always" or e.success) for e in episodes])


def two_hot(y: torch.Tensor, v_min: float, v_max: float, n_bins: int) -> torch.Tensor:
    """Two-hot encoding ``[B, n_bins]`` of scalars on an even grid (expectation equals ``y``)."""
    pos = ((y.clamp(v_min, v_max) - v_min) / (v_max - v_min) * (n_bins - 1)).clamp(0, n_bins - 1)
    lo = pos.floor().long().clamp(max=n_bins - 2)
    w_hi = pos - lo
    out = torch.zeros(*y.shape, n_bins, dtype=y.dtype)
    out.scatter_(-1, lo.unsqueeze(-1), (1 - w_hi).unsqueeze(-1))
    out.scatter_add_(-1, (lo + 1).unsqueeze(-1), w_hi.unsqueeze(-1))
    return out


def indicator_tokens(indicator: torch.Tensor, dropout: float = 0.0, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """One-hot ``[B, 3]`` tokens (positive/negative/null) with ``dropout`` of them set to null."""
    idx = torch.where(indicator.bool(), POSITIVE, NEGATIVE)
    if dropout > 0:
        drop = torch.rand(idx.shape, generator=generator) < dropout
        idx = torch.where(drop, NULL, idx)
    return F.one_hot(idx, N_TOKENS).to(torch.float32)


# --------------------------------------------------------------------------- modules
class DistributionalValue(nn.Module):
    """``V(s)`` as a categorical distribution over ``n_bins`` evenly spaced returns."""

    def __init__(self, obs_dim: int, hidden: Sequence[int], n_bins: int, v_min: float, v_max: float = 0.0,
                 normalizer: ObsNormalizer | None = None) -> None:
        super().__init__()
        self.normalizer = normalizer if normalizer is not None else ObsNormalizer(obs_dim)
        self.net = mlp(obs_dim, tuple(hidden), n_bins)
        self.v_min, self.v_max, self.n_bins = float(v_min), float(v_max), int(n_bins)
        self.register_buffer("support", torch.linspace(self.v_min, self.v_max, self.n_bins))

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalizer(obs))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Expected value ``[B]``."""
        return torch.softmax(self.logits(obs), -1) @ self.support

    def loss(self, obs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against the two-hot encoding of ``target``."""
        logp = torch.log_softmax(self.logits(obs), -1)
        return -(two_hot(target, self.v_min, self.v_max, self.n_bins) * logp).sum(-1).mean()


class GuidedPolicy(nn.Module):
    """``obs -> action`` with the positive indicator and guidance weight baked in (export this)."""

    def __init__(self, actor: SquashedGaussianActor, cfg_weight: float = 1.0) -> None:
        super().__init__()
        self.actor = actor
        self.cfg_weight = float(cfg_weight)
        self.register_buffer("positive", F.one_hot(torch.tensor([POSITIVE]), N_TOKENS).float())
        self.register_buffer("null", F.one_hot(torch.tensor([NULL]), N_TOKENS).float())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        b = obs.shape[0]
        mean_c = self.actor.dist_params(obs, self.positive.expand(b, -1))[0]
        if self.cfg_weight == 1.0:
            return torch.tanh(mean_c)
        mean_u = self.actor.dist_params(obs, self.null.expand(b, -1))[0]
        w = self.cfg_weight
        return torch.tanh(w * mean_c + (1.0 - w) * mean_u)


# --------------------------------------------------------------------------- trainer
class RecapTrainer:
    """Value function, relabelling and advantage-conditioned actor (see the module docstring).

    Args:
        obs_dim, action_dim: sizes (actions in ``[-1, 1]``).
        config: :class:`RecapConfig`.
        obs_mean, obs_std: optional fixed observation statistics; otherwise they
            are fitted on the first round's observations.
    """

    def __init__(self, obs_dim: int, action_dim: int, config: RecapConfig | None = None,
                 obs_mean: np.ndarray | None = None, obs_std: np.ndarray | None = None) -> None:
        self.cfg = cfg = config if config is not None else RecapConfig()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.value_net = DistributionalValue(obs_dim, cfg.hidden, cfg.n_bins, cfg.v_min)
            self.actor = SquashedGaussianActor(obs_dim, action_dim, cfg.hidden, cond_dim=N_TOKENS,
                                               cond_mode=cfg.actor_cond)

        def adam(params: Any) -> torch.optim.Optimizer:
            if cfg.weight_decay:
                return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
            return torch.optim.Adam(params, lr=cfg.lr, fused=True)

        self.value_opt = adam(self.value_net.parameters())
        self.actor_opt = adam(self.actor.parameters())
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.rounds = 0
        self.value_updates = 0
        self.actor_updates = 0
        if obs_mean is not None and obs_std is not None:
            self.set_obs_stats(obs_mean, obs_std)

    # ------------------------------------------------------------------ helpers
    def set_obs_stats(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        self.value_net.normalizer.set_stats(mean, std)
        self.actor.normalizer.set_stats(mean, std)

    @torch.no_grad()
    def values(self, obs: np.ndarray | torch.Tensor, chunk: int = 65536) -> np.ndarray:
        """``V(s)`` for raw observations ``[N, obs_dim]``."""
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        self.value_net.eval()
        return torch.cat([self.value_net(o[i:i + chunk]) for i in range(0, len(o), chunk)]).numpy().astype(np.float64)

    def _sampler(self, n: int):
        def idx() -> torch.Tensor:
            return torch.randint(n, (self.cfg.batch_size,), generator=self.generator)
        return idx

    # ------------------------------------------------------------------ stages
    def fit_value(self, episodes: Sequence[Episode | Mapping[str, Any]], steps: int | None = None) -> dict[str, float]:
        """Fit ``V`` to the outcome returns of ``episodes`` (``steps`` defaults to ``cfg.value_steps``)."""
        cfg = self.cfg
        eps = [as_episode(e) for e in episodes]
        obs = torch.as_tensor(np.concatenate([e.obs for e in eps]))
        tgt = torch.as_tensor(np.concatenate(
            [value_targets(len(e), e.success, cfg.h_norm, cfg.fail_penalty) for e in eps]), dtype=torch.float32)
        sample = self._sampler(len(obs))
        self.value_net.train()
        loss = torch.zeros(())
        for _ in range(cfg.value_steps if steps is None else int(steps)):
            i = sample()
            loss = self.value_net.loss(obs[i], tgt[i])
            self.value_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.value_opt.step()
            self.value_updates += 1
        v = self.values(obs)
        return {"value_loss": float(loss.detach()), "value_mae": float(np.abs(v - tgt.numpy()).mean())}

    def label(self, episodes: Sequence[Episode | Mapping[str, Any]]) -> dict[str, Any]:
        """Advantages and indicators for every step (episodes concatenated in order).

        Returns ``advantage [N]``, ``indicator [N] bool``, ``threshold`` (eps),
        ``values [N]``, ``intervention [N]`` and ``trusted [N]`` (the
        corrections taken as positive without question, see ``cfg.corrections``).
        """
        cfg = self.cfg
        eps = [as_episode(e) for e in episodes]
        v_all = self.values(np.concatenate([e.obs for e in eps]))
        adv, start = [], 0
        for e in eps:
            v = v_all[start:start + len(e)]
            start += len(e)
            adv.append(nstep_advantages(outcome_rewards(len(e), e.success, cfg.h_norm, cfg.fail_penalty), v, cfg.n_step))
        a = np.concatenate(adv)
        iv = np.concatenate([e.intervention for e in eps])
        trusted = correction_trust(eps, cfg.corrections)
        ind, thr = binarize_advantages(a, trusted, cfg.positive_fraction)
        return {"advantage": a, "indicator": ind, "threshold": thr, "values": v_all, "intervention": iv,
                "trusted": trusted}

    def fit_actor(self, obs: np.ndarray, actions: np.ndarray, indicator: np.ndarray,
                  steps: int | None = None, intervention: np.ndarray | None = None,
                  demo_ratio: float | None = None) -> dict[str, float]:
        """Advantage-conditioned behaviour cloning with indicator dropout.

        With ``intervention`` given (and a share > 0), a ``demo_ratio`` share (default ``cfg.demo_ratio``) of
        every minibatch is drawn from the intervention steps, the rest uniformly from all steps."""
        cfg = self.cfg
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32)).clamp(-1.0, 1.0)
        ind = torch.as_tensor(np.asarray(indicator, dtype=bool))
        sample = self._sampler(len(o))
        iv_idx = (torch.as_tensor(np.flatnonzero(np.asarray(intervention, dtype=bool)))
                  if intervention is not None else torch.zeros(0, dtype=torch.long))
        share = cfg.demo_ratio if demo_ratio is None else float(demo_ratio)
        n_iv = int(round(share * cfg.batch_size)) if 0 < len(iv_idx) < len(o) else 0
        if n_iv > 0:
            def sample() -> torch.Tensor:  # noqa: F811 - the mixed sampler replaces the uniform one
                pick = iv_idx[torch.randint(len(iv_idx), (n_iv,), generator=self.generator)]
                rest = torch.randint(len(o), (cfg.batch_size - n_iv,), generator=self.generator)
                return torch.cat([pick, rest])
        self.actor.train()
        loss = torch.zeros(())
        for _ in range(cfg.actor_steps if steps is None else int(steps)):
            i = sample()
            cond = indicator_tokens(ind[i], cfg.indicator_dropout, self.generator)
            loss = bc_loss(self.actor, o[i], a[i], cfg.actor_loss, cond=cond)
            self.actor_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.actor_opt.step()
            self.actor_updates += 1
        self.actor.eval()
        return {"actor_loss": float(loss.detach())}

    def round(self, episodes: Sequence[Episode | Mapping[str, Any]]) -> dict[str, float]:
        """One Recap iteration: value fit, relabel, actor fit. Returns summary metrics."""
        eps = [as_episode(e) for e in episodes]
        if not eps:
            raise ValueError("Recap needs at least one finished episode")
        obs = np.concatenate([e.obs for e in eps])
        actions = np.concatenate([e.actions for e in eps])
        if obs.shape[1] != self.obs_dim or actions.shape[1] != self.action_dim:
            raise ValueError(f"episodes have obs/action dims {obs.shape[1]}/{actions.shape[1]}, "
                             f"trainer expects {self.obs_dim}/{self.action_dim}")
        if not bool(self.actor.normalizer.fitted):
            n = ObsNormalizer(self.obs_dim).fit(obs)
            self.set_obs_stats(n.mean, n.std)
        metrics: dict[str, float] = {"episodes": len(eps), "steps": len(obs),
                                     "success_rate": float(np.mean([e.success for e in eps]))}
        metrics.update(self.fit_value(eps))
        lab = self.label(eps)
        metrics.update(threshold=float(lab["threshold"]), positive_fraction=float(lab["indicator"].mean()),
                       intervention_fraction=float(lab["intervention"].mean()),
                       trusted_fraction=float(lab["trusted"].mean()),
                       advantage_mean=float(lab["advantage"].mean()))
        corrected = any(e.intervention.any() and not e.demo for e in eps)
        cfg = self.cfg
        share = cfg.correction_ratio if corrected and cfg.correction_ratio is not None else cfg.demo_ratio
        metrics["demo_share"] = float(share)
        metrics.update(self.fit_actor(obs, actions, lab["indicator"], intervention=lab["trusted"], demo_ratio=share))
        self.rounds += 1
        return metrics

    # ------------------------------------------------------------------ inference
    def export_module(self, cfg_weight: float | None = None) -> GuidedPolicy:
        """A frozen ``obs -> action`` module (positive indicator, guidance ``w`` baked in)."""
        actor = copy.deepcopy(self.actor).eval().requires_grad_(False)
        w = self.cfg.cfg_weight if cfg_weight is None else cfg_weight
        return GuidedPolicy(actor, w).eval()

    @torch.no_grad()
    def act(self, obs: np.ndarray, cfg_weight: float | None = None) -> np.ndarray:
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = o.ndim == 1
        w = self.cfg.cfg_weight if cfg_weight is None else cfg_weight
        a = GuidedPolicy(self.actor, w)(o.reshape(1, -1) if single else o).numpy()
        return a[0] if single else a

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "algo": "recap",
            "config": self.cfg.to_json(),
            "dims": [self.obs_dim, self.action_dim],
            "value_net": self.value_net.state_dict(),
            "actor": self.actor.state_dict(),
            "value_opt": self.value_opt.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "rng": self.generator.get_state(),
            "counters": {"rounds": self.rounds, "value_updates": self.value_updates,
                         "actor_updates": self.actor_updates},
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        if sd.get("algo") != "recap":
            raise ValueError(f"not a Recap state (algo={sd.get('algo')!r})")
        if list(sd["dims"]) != [self.obs_dim, self.action_dim]:
            raise ValueError(f"state is for dims {list(sd['dims'])}, trainer has {[self.obs_dim, self.action_dim]}")
        self.value_net.load_state_dict(sd["value_net"])
        self.actor.load_state_dict(sd["actor"])
        self.value_opt.load_state_dict(sd["value_opt"])
        self.actor_opt.load_state_dict(sd["actor_opt"])
        self.generator.set_state(sd["rng"])
        c = sd["counters"]
        self.rounds, self.value_updates, self.actor_updates = int(c["rounds"]), int(c["value_updates"]), int(c["actor_updates"])

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> "RecapTrainer":
        t = cls(*[int(d) for d in sd["dims"]], RecapConfig.from_json(sd["config"]))
        t.load_state_dict(sd)
        return t
