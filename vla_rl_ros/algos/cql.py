"""Conservative Q-Learning (CQL), continuous actions, on the SAC backbone of :mod:`.sac`.

Reference: Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline
Reinforcement Learning", NeurIPS 2020 (arXiv:2006.04779), the CQL(H) variant
with a SAC actor (their continuous-control setting); seed §4.3.1.

CQL is SAC (:class:`~.sac.SAC`: the soft clipped double-Q target, the actor and
the temperature, unchanged) with one term added to each critic's loss that
pushes ``Q`` down on actions the policy could pick and up on the data's::

    L_Q_i = alpha' * ( E_s[ T log sum_a exp(Q_i(s, a) / T) ] - E_(s,a)~D[ Q_i(s, a) ] ) + L_TD_i

The log-sum-exp over a continuous action space is estimated by importance
sampling with ``N = cql_n_actions`` actions per state from each of three
proposals ``mu``, all scored at the *current* state ``s``:

* uniform actions in ``[-1, 1]^d`` (``log mu = -d log 2``),
* ``a ~ pi(.|s)`` (``log mu = log pi(a|s)``),
* ``a' ~ pi(.|s')`` (``log mu = log pi(a'|s')``),

``log sum_a exp Q(s, a) ~ T logsumexp_j((Q(s, a_j) - log mu(a_j)) / T)`` over the
``3N`` samples (the constant ``-log 3N`` is omitted, as in the authors' code
and d3rlpy: it shifts the gap by a constant, which matters only for the
Lagrangian threshold). Sampled actions and their log-probabilities are
detached: the penalty trains the critics only.

``alpha'`` is either fixed (``cql_alpha``, default 5.0, the paper's MuJoCo
setting) or, with ``cql_lagrange=True``, a Lagrange multiplier
``alpha' = exp(log_alpha')`` (clipped to ``[0, 1e6]``) trained by dual ascent so
that the weighted gap ``cql_alpha * gap`` stays at ``cql_target_gap`` (tau):
the critics minimise ``alpha' (cql_alpha * gap - tau)`` and ``alpha'`` minimises
``-alpha' (cql_alpha * gap - tau)``. All terms touch disjoint parameters and go
through SAC's single backward pass and fused Adam step; the actor gets its own
learning rate (``actor_lr``, 1e-4 as in the authors' code).

The TD term is SAC's ``1/2 (Q_i - y)^2`` (the paper's Eq. 3 writes the 1/2 too;
the authors' code drops it, doubling the TD weight relative to ``alpha'``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .sac import SAC, Batch, SACConfig


@dataclass
class CQLConfig(SACConfig):
    """CQL hyper-parameters: :class:`~.sac.SACConfig`'s (``lr`` is the critics' and the
    temperature's) plus the conservative term's.

    Attributes:
        demo_ratio: ``None`` (default): batches are uniform over every recorded
            transition, as the paper samples its dataset.
        actor_lr: the actor's Adam learning rate (1e-4; the authors' code).
        cql_alpha: weight of the conservative gap (5.0; the paper's MuJoCo value).
        cql_n_actions: sampled actions per state and proposal (10).
        cql_temperature: ``T`` of the log-sum-exp (1.0).
        cql_lagrange: learn the multiplier ``alpha'`` by dual ascent (False).
        cql_target_gap: the Lagrangian threshold ``tau`` on ``cql_alpha * gap``, as the
            authors' code puts it (10.0; d3rlpy's ``alpha_threshold`` of 10 bounds the
            unweighted gap instead).
        cql_alpha_lr: Adam learning rate of ``log alpha'`` (3e-4).
        cql_init_alpha: initial ``alpha'`` of the Lagrangian form (1.0).
    """

    demo_ratio: float | None = None
    actor_lr: float = 1e-4
    cql_alpha: float = 5.0
    cql_n_actions: int = 10
    cql_temperature: float = 1.0
    cql_lagrange: bool = False
    cql_target_gap: float = 10.0
    cql_alpha_lr: float = 3e-4
    cql_init_alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cql_alpha < 0 or self.cql_n_actions < 1 or not self.cql_temperature > 0:
            raise ValueError("cql_alpha must be >= 0, cql_n_actions >= 1, cql_temperature > 0")
        if not (self.actor_lr > 0 and self.cql_alpha_lr > 0 and self.cql_init_alpha > 0):
            raise ValueError("actor_lr, cql_alpha_lr and cql_init_alpha must be > 0")


class CQL(SAC):
    """CQL(H): :class:`~.sac.SAC` whose critics also minimise the conservative gap.

    Args:
        obs_dim, action_dim: sizes; actions live in ``[-1, 1]``.
        config: :class:`CQLConfig`.
    """

    algo_name = "cql"
    config_cls = CQLConfig

    def __init__(self, obs_dim: int, action_dim: int, config: CQLConfig | None = None, **kw: Any) -> None:
        cfg = config if config is not None else CQLConfig()
        if not isinstance(cfg, CQLConfig):
            raise TypeError("CQL needs a CQLConfig")
        super().__init__(obs_dim, action_dim, cfg, **kw)
        self.log_cql_alpha = torch.tensor(float(np.log(cfg.cql_init_alpha)), requires_grad=cfg.cql_lagrange)
        # SAC's single fused Adam, with a learning rate per part (parameters without a
        # gradient in a step are skipped, so this is one Adam per part).
        groups = [{"params": list(self.critic.parameters()), "lr": cfg.lr},
                  {"params": list(self.actor.parameters()), "lr": cfg.actor_lr}]
        if cfg.autotune_alpha:
            groups.append({"params": [self.log_alpha], "lr": cfg.lr})
        if cfg.cql_lagrange:
            groups.append({"params": [self.log_cql_alpha], "lr": cfg.cql_alpha_lr})
        self.optimizer = torch.optim.Adam(groups, lr=cfg.lr, fused=True)

    def conservative_gap(self, obs: torch.Tensor, next_obs: torch.Tensor, q_data: torch.Tensor) -> torch.Tensor:
        """Per critic ``E_s[T log sum_a exp(Q(s,a)/T)] - E_D[Q(s,a)]``, ``[E]`` (see the module docstring).

        ``q_data`` is ``[E, B]``: the critics on the batch's actions (gradients flow
        through both terms into the critics, never into the actor).
        """
        cfg = self.cfg
        B, N, A = obs.shape[0], cfg.cql_n_actions, self.action_dim
        with torch.no_grad():
            obs_rep = obs.repeat_interleave(N, 0)  # [B*N, obs_dim], state b's N copies adjacent
            a_rand = torch.rand(B * N, A, generator=self.generator) * 2.0 - 1.0
            logp_rand = torch.full((B * N,), -A * math.log(2.0))
            a_pi, logp_pi = self.actor(obs_rep, generator=self.generator)
            a_next, logp_next = self.actor(next_obs.repeat_interleave(N, 0), generator=self.generator)
            log_mu = torch.cat([logp_rand, logp_pi, logp_next])  # [3*B*N]
        q = self.critic(obs_rep.repeat(3, 1), torch.cat([a_rand, a_pi, a_next]))  # [E, 3*B*N]
        E, T = q.shape[0], cfg.cql_temperature
        x = (q - log_mu).view(E, 3, B, N).transpose(1, 2).reshape(E, B, 3 * N)
        lse = T * torch.logsumexp(x / T, dim=-1)  # [E, B]
        return (lse - q_data).mean(1)

    def critic_regularizer(self, batch: Batch, q: torch.Tensor, metrics: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.cfg
        gap = self.conservative_gap(batch.obs, batch.next_obs, q)  # [E]
        penalty = cfg.cql_alpha * gap
        metrics["cql_gap"] = gap.detach().mean()
        if not cfg.cql_lagrange:
            return penalty.sum()
        mult = self.log_cql_alpha.exp().clamp(0.0, 1e6)
        slack = penalty - cfg.cql_target_gap
        multiplier_loss = -(mult * slack.detach()).mean()  # dual ascent on alpha'
        metrics["cql_multiplier"] = mult.detach()
        return (mult.detach() * slack).sum() + multiplier_loss

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["log_cql_alpha"] = self.log_cql_alpha.detach().clone()
        return sd

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        super().load_state_dict(sd)
        with torch.no_grad():
            self.log_cql_alpha.copy_(sd["log_cql_alpha"])
