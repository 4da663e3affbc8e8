"""Implicit Q-Learning (IQL): offline RL without querying Q on unseen actions, in one readable file.

Reference: Kostrikov, Nair & Levine, "Offline Reinforcement Learning with
Implicit Q-Learning", ICLR 2022 (arXiv:2110.06169); seed §4.3.2. The seed calls
it quantile regression; the paper uses *expectile* regression, as here.

Three networks on a batch ``(s, a, r, s', d)`` of recorded transitions (``d`` =
terminated; a time-limit truncation bootstraps), with ``Q_hat`` the minimum over
the target critics (Polyak copies of the ``n_critics`` Q-networks):

1. **Value, expectile regression.** ``V(s)`` is fitted to the upper
   ``expectile`` of ``Q_hat(s, a)`` over the data's actions::

       L_V = E[ L2^tau( Q_hat(s, a) - V(s) ) ],   L2^tau(u) = |tau - 1(u < 0)| u^2

   At ``tau = 0.5`` this is half the squared error (``V`` is the data policy's
   mean ``Q``); as ``tau -> 1`` it approaches ``max_a Q`` over actions *in the
   data's support*, so no out-of-data action is ever evaluated.

2. **Q, a SARSA-like TD target through V** (no maximisation, no policy sample)::

       L_Q = 1/2 sum_i E[ (r + gamma (1 - d) V(s') - Q_i(s, a))^2 ]

3. **Policy extraction, advantage-weighted regression (AWR)**::

       L_pi = -E[ min(exp(beta (Q_hat(s, a) - V(s))), max_weight) log pi(a | s) ]

   with inverse temperature ``beta``. ``actor_loss="mse"`` (default) uses the
   log-likelihood of a fixed-variance Gaussian centred on the deployed action
   ``tanh(mean(s))``, i.e. the weighted squared error, which is what is
   exported and is robust to recorded actions on the ``±1`` bounds (a gripper
   command); ``"nll"`` is the squashed Gaussian's own log-likelihood (see
   :mod:`.bc`, whose :func:`~.bc.bc_loss` computes both).

The three losses are evaluated at the current parameters (``V(s')`` in the Q
target and ``V(s)`` in the weights are detached, ``Q_hat`` is the target
network), so their gradients touch disjoint parameters: they are summed,
back-propagated once and applied by one fused Adam step; then the target
critics are Polyak-averaged, ``targ <- (1 - tau) targ + tau online``. (The
paper's JAX code steps V, then the actor, then Q in sequence within one update;
evaluating all three at the same parameters is the order d3rlpy uses for its
critic and value.)

:meth:`IQL.advantages` returns ``Q_hat(s, a) - V(s)``, the advantage the policy
extraction weighs by (Recap's relabelling could use it too).

Defaults (:class:`IQLConfig`) are the paper's MuJoCo settings: expectile 0.7,
beta 3.0, max weight 100, 2x256 networks, Adam 3e-4, batch 256, gamma 0.99,
Polyak 0.005. The paper also decays the actor's learning rate with a cosine
schedule and uses dropout in some domains; neither is used here.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .bc import BC_LOSSES, bc_loss
from .networks import DeterministicPolicy, EnsembleCritic, ObsNormalizer, SquashedGaussianActor, StateValue
from .sac import Batch, as_batch


@dataclass
class IQLConfig:
    """IQL hyper-parameters (defaults: the paper's MuJoCo settings, as d3rlpy's ``IQLConfig``).

    Attributes:
        gamma: discount (0.99).
        tau: Polyak coefficient of the target critics (0.005).
        lr: Adam learning rate for actor, critics and value (3e-4).
        batch_size: transitions per gradient step (256).
        hidden: hidden sizes of actor, each critic and the value net ((256, 256)).
        n_critics: Q ensemble size; ``Q_hat`` is the min over its targets (2).
        expectile: ``tau`` of the value's expectile loss, in ``(0, 1)`` (0.7).
        beta: inverse temperature of the advantage weights (3.0).
        max_weight: clip on ``exp(beta * A)`` (100).
        actor_loss: ``"mse"`` (weighted squared error on ``tanh(mean)``, default)
            or ``"nll"`` (weighted squashed-Gaussian log-likelihood).
        demo_ratio: fraction of each batch from the demo/intervention side of a
            :class:`~vla_rl_ros.buffer.Replay` when sampled by the CLI or the
            continual learner; ``None`` (default) samples every transition
            uniformly, as the paper does.
        utd: updates per :meth:`IQL.train_step` (1).
        seed: seeds initialisation.
    """

    gamma: float = 0.99
    tau: float = 0.005
    lr: float = 3e-4
    batch_size: int = 256
    hidden: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    expectile: float = 0.7
    beta: float = 3.0
    max_weight: float = 100.0
    actor_loss: str = "mse"
    demo_ratio: float | None = None
    utd: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1]")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError("tau must be in (0, 1]")
        if not 0.0 < self.expectile < 1.0:
            raise ValueError("expectile must be in (0, 1)")
        if self.beta < 0 or not self.max_weight > 0:
            raise ValueError("beta must be >= 0 and max_weight > 0")
        if self.actor_loss not in BC_LOSSES:
            raise ValueError(f"actor_loss must be one of {BC_LOSSES}")
        if self.n_critics < 1 or self.batch_size < 1 or self.utd < 1:
            raise ValueError("n_critics, batch_size and utd must be >= 1")
        if self.demo_ratio is not None and not 0.0 <= self.demo_ratio <= 1.0:
            raise ValueError("demo_ratio must be None or in [0, 1]")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "IQLConfig":
        return cls(**json.loads(text))


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Elementwise ``L2^tau(u) = |tau - 1(u < 0)| u^2`` (asymmetric squared error).

    A positive ``u`` (target above the estimate) weighs ``tau``, a negative one
    ``1 - tau``; ``tau = 0.5`` gives ``u^2 / 2``.
    """
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff.square()


class IQL:
    """Implicit Q-Learning (see the module docstring for the exact update).

    Same protocol as :class:`~.sac.SAC`: :meth:`update`, :meth:`train_step`,
    :meth:`policy_module`, :meth:`fit_obs_normalizer`, :meth:`state_dict`.

    Args:
        obs_dim, action_dim: sizes; actions live in ``[-1, 1]`` (policy space).
        config: :class:`IQLConfig`.
    """

    algo_name = "iql"

    def __init__(self, obs_dim: int, action_dim: int, config: IQLConfig | None = None) -> None:
        self.cfg = cfg = config if config is not None else IQLConfig()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.actor = SquashedGaussianActor(obs_dim, action_dim, cfg.hidden)
            self.critic = EnsembleCritic(obs_dim, action_dim, cfg.hidden, cfg.n_critics)
            self.value = StateValue(obs_dim, cfg.hidden)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        params = [*self.critic.parameters(), *self.value.parameters(), *self.actor.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=True)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self.num_updates = 0

    # ------------------------------------------------------------------ helpers
    def set_obs_stats(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        """Fix the observation normaliser of every network."""
        for m in (self.actor, self.critic, self.critic_target, self.value):
            m.normalizer.set_stats(mean, std)

    def fit_obs_normalizer(self, obs: np.ndarray | torch.Tensor) -> None:
        """Fit the normaliser on raw observations ``[N, obs_dim]`` (once, before training)."""
        n = ObsNormalizer(self.obs_dim).fit(obs)
        self.set_obs_stats(n.mean, n.std)

    @torch.inference_mode()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action(s) ``tanh(mean)`` in ``[-1, 1]`` for raw observation(s)."""
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        a = self.actor.deterministic(o.reshape(1, -1) if o.ndim == 1 else o).numpy()
        return a[0] if o.ndim == 1 else a

    def policy_module(self) -> DeterministicPolicy:
        """A frozen copy ``obs -> tanh(mean)`` of the current actor, for export."""
        return DeterministicPolicy(copy.deepcopy(self.actor).eval().requires_grad_(False)).eval()

    @torch.no_grad()
    def advantages(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``Q_hat(s, a) - V(s)`` ``[B]`` (``Q_hat``: min over the target critics)."""
        return self.critic_target(obs, action).min(0).values - self.value(obs)

    # ------------------------------------------------------------------ update
    def update(self, batch: Batch | Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """One IQL gradient step on ``batch``: value, critics and actor together.

        Returns detached 0-d tensors ``value_loss, critic_loss, actor_loss,
        q_mean, v_mean, adv_mean, weight_mean``.
        """
        cfg = self.cfg
        b = as_batch(batch)
        with torch.no_grad():
            q_hat = self.critic_target(b.obs, b.action).min(0).values  # [B]
            next_v = self.value(b.next_obs)
            target = b.reward + cfg.gamma * (1.0 - b.done) * next_v
        v = self.value(b.obs)
        value_loss = expectile_loss(q_hat - v, cfg.expectile).mean()
        q = self.critic(b.obs, b.action)  # [E, B]
        critic_loss = 0.5 * (q - target).pow(2).mean(1).sum()
        adv = q_hat - v.detach()
        weight = torch.exp(cfg.beta * adv).clamp_max(cfg.max_weight)
        actor_loss = bc_loss(self.actor, b.obs, b.action.clamp(-1.0, 1.0), cfg.actor_loss, weight=weight)
        self.optimizer.zero_grad(set_to_none=True)
        (value_loss + critic_loss + actor_loss).backward()
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, cfg.tau)
        self.num_updates += 1
        return {"value_loss": value_loss.detach(), "critic_loss": critic_loss.detach(),
                "actor_loss": actor_loss.detach(), "q_mean": q.detach().mean(), "v_mean": v.detach().mean(),
                "adv_mean": adv.mean(), "weight_mean": weight.mean()}

    def train_step(self, sample_fn: Callable[[], Batch | Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """``cfg.utd`` updates, each on a fresh batch from ``sample_fn``."""
        m: dict[str, torch.Tensor] = {}
        for _ in range(self.cfg.utd):
            m = self.update(sample_fn())
        return m

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser, counters and config (everything to resume exactly)."""
        return {
            "algo": self.algo_name,
            "config": self.cfg.to_json(),
            "dims": [self.obs_dim, self.action_dim],
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "value": self.value.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counters": {"updates": self.num_updates},
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        if sd.get("algo") != self.algo_name:
            raise ValueError(f"not an IQL state (algo={sd.get('algo')!r})")
        if list(sd["dims"]) != [self.obs_dim, self.action_dim]:
            raise ValueError(f"state is for dims {list(sd['dims'])}, this IQL has {[self.obs_dim, self.action_dim]}")
        for name in ("actor", "critic", "critic_target", "value", "optimizer"):
            getattr(self, name).load_state_dict(sd[name])
        self.num_updates = int(sd["counters"]["updates"])

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> "IQL":
        """Rebuild an IQL (config and dims from the state) and load it."""
        iql = cls(*[int(d) for d in sd["dims"]], IQLConfig.from_json(sd["config"]))
        iql.load_state_dict(sd)
        return iql
