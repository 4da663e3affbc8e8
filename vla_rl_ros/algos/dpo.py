"""Direct Preference Optimisation on trajectory segments (Rafailov et al. 2023; seed §6.1, Q6).

DPO trains the policy from the preference pairs directly, with no reward model
and no RL loop. Its derivation: the KL-regularised RL objective
``max_pi E[r] - beta KL(pi || pi_ref)`` has the optimum
``pi*(a|s) = pi_ref(a|s) exp(r(s, a) / beta) / Z(s)``, i.e. the reward is
implied by the policy, ``r(s, a) = beta log(pi(a|s) / pi_ref(a|s)) + beta log Z(s)``.
Put that into the Bradley–Terry model of :mod:`vla_rl_ros.preferences.reward_model`
and sum over a segment's ticks. For two segments of the *same states* the
``log Z`` terms cancel exactly; for segments from different states (what a
labeller compares) they do not, and, as the trajectory forms of DPO do
(e.g. CPL, Hejna et al. 2024, which derives it from the regret model), we drop
them. What is left is the loss this file minimises, with ``w`` the preferred
segment and ``l`` the other::

    h = sum_{t in w} [log pi(a_t|s_t) - log pi_ref(a_t|s_t)] - sum_{t in l} [log pi(a_t|s_t) - log pi_ref(a_t|s_t)]
    L_DPO = -log sigmoid(beta * h)

(the seed's ``L_DPO`` with a segment's summed log-likelihood in place of a
sentence's). An ``equal`` label (target ``y = 1/2``) uses the same cross-entropy
as the reward model: ``-[y log sigmoid(beta h) + (1 - y) log sigmoid(-beta h)]``,
which is ``L_DPO`` for ``y = 1``; ``skip`` is not trained on.

* **At initialisation** ``pi = pi_ref``, so ``h = 0`` and ``L = log 2`` for every pair.
* **Gradient.** ``dL/dh = -beta sigmoid(-beta h)`` (``-beta/2`` at the start):
  gradient descent raises the preferred segment's log-likelihood and lowers
  the other's, weighted by how wrongly the implicit reward ranks the pair.
  ``test/test_algo_dpo.py`` checks both.

**The actor.** :class:`~vla_rl_ros.algos.networks.SquashedGaussianActor`
(``a = tanh(u)``, ``u ~ N(mean(s), std(s))``): its log-density of a recorded
action is exact (Gaussian of ``atanh(a)`` minus the tanh Jacobian), which DPO
needs, unlike a deterministic policy. Recorded actions on the ``±1`` bounds
are clipped to ``±action_clip`` (0.999, as the BC ``nll`` loss does) before
``atanh``. The Jacobian term is the same under ``pi`` and ``pi_ref`` and cancels
in ``h``.

**The reference** ``pi_ref`` is the SFT/BC policy (seed §6.1: RLHF's stage 1):
a behaviour-cloned actor, best fit with the ``nll`` loss so that its std is
fitted too (:func:`~vla_rl_ros.algos.bc.train_bc`), or the running SAC actor.
It is frozen; ``pi`` starts as a copy of it. Memory: two actors (no critic, no
reward model): the seed's Q6 point.

Export: :meth:`DPO.policy_module` is ``obs -> tanh(mean)`` like every other
policy here, for :func:`~vla_rl_ros.algos.export.export_onnx`.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .networks import DeterministicPolicy, SquashedGaussianActor, squashed_log_prob


@dataclass
class DPOConfig:
    """DPO settings.

    Attributes:
        beta: the KL weight ``beta`` (0.1, as Rafailov et al.); smaller lets the policy move further from the reference.
        lr: Adam learning rate (1e-4).
        steps: gradient steps of :meth:`DPO.fit` (500).
        batch_size: pairs per step (32).
        action_clip: recorded actions are clipped to ``±action_clip`` before ``atanh`` (0.999).
        seed: seeds the minibatches.
    """

    beta: float = 0.1
    lr: float = 1e-4
    steps: int = 500
    batch_size: int = 32
    action_clip: float = 0.999
    seed: int = 0

    def __post_init__(self) -> None:
        if self.beta <= 0 or not 0 < self.action_clip < 1:
            raise ValueError("beta must be > 0 and action_clip in (0, 1)")


def segment_log_prob(actor: SquashedGaussianActor, obs: torch.Tensor, action: torch.Tensor, mask: torch.Tensor,
                     action_clip: float = 0.999) -> torch.Tensor:
    """``sum_t log pi(a_t | s_t)`` over each segment's valid ticks: ``obs (N, L, od)``, ``mask (N, L)`` -> ``(N,)``."""
    n, L = mask.shape
    mean, log_std = actor.dist_params(obs.reshape(n * L, -1))
    u = torch.atanh(action.reshape(n * L, -1).clamp(-action_clip, action_clip))
    return (squashed_log_prob(u, mean, log_std).view(n, L) * mask).sum(-1)


def dpo_loss(logp_l: torch.Tensor, logp_r: torch.Tensor, ref_l: torch.Tensor, ref_r: torch.Tensor,
             target: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-pair DPO loss (module docstring) for segments ``l``(eft) and ``r``(ight) and ``target = P(left preferred)``."""
    h = (logp_l - ref_l) - (logp_r - ref_r)
    return F.binary_cross_entropy_with_logits(beta * h, target, reduction="none")


class DPO:
    """Trains a copy of ``reference`` with :func:`dpo_loss` on a :class:`~vla_rl_ros.preferences.reward_model.PairBatch`."""

    algo_name = "dpo"

    def __init__(self, reference: SquashedGaussianActor, cfg: DPOConfig | None = None) -> None:
        self.cfg = cfg or DPOConfig()
        self.reference = copy.deepcopy(reference).eval().requires_grad_(False)
        self.actor = copy.deepcopy(reference).train()
        self.actor.normalizer.requires_grad_(False)
        self.optimizer = torch.optim.Adam([p for p in self.actor.parameters() if p.requires_grad], lr=self.cfg.lr)
        self.generator = torch.Generator().manual_seed(self.cfg.seed)
        self.num_updates = 0

    def loss(self, b: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.cfg.action_clip
        lp_l = segment_log_prob(self.actor, b.obs_l, b.act_l, b.mask_l, c)
        lp_r = segment_log_prob(self.actor, b.obs_r, b.act_r, b.mask_r, c)
        with torch.no_grad():
            ref_l = segment_log_prob(self.reference, b.obs_l, b.act_l, b.mask_l, c)
            ref_r = segment_log_prob(self.reference, b.obs_r, b.act_r, b.mask_r, c)
        per_pair = dpo_loss(lp_l, lp_r, ref_l, ref_r, b.y, self.cfg.beta)
        h = ((lp_l - ref_l) - (lp_r - ref_r)).detach()
        strict = (b.y == 0) | (b.y == 1)
        acc = ((h > 0) == (b.y > 0.5))[strict].float().mean() if bool(strict.any()) else h.new_tensor(float("nan"))
        return per_pair.mean(), {"dpo_loss": per_pair.mean().detach(), "implicit_reward_margin": h.abs().mean(),
                                 "implicit_accuracy": acc}

    def update(self, b: Any) -> dict[str, torch.Tensor]:
        """One Adam step on the batch of pairs ``b``."""
        loss, metrics = self.loss(b)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        return metrics

    def fit(self, batch: Any, steps: int | None = None) -> list[float]:
        """``steps`` updates on minibatches of ``cfg.batch_size`` pairs drawn uniformly from ``batch``; the loss
        every 50 steps."""
        steps = self.cfg.steps if steps is None else int(steps)
        hist: list[float] = []
        for i in range(steps):
            idx = torch.randint(len(batch), (min(self.cfg.batch_size, len(batch)),), generator=self.generator)
            m = self.update(batch.take(idx))
            if i % 50 == 0 or i == steps - 1:
                hist.append(float(m["dpo_loss"]))
        return hist

    def policy_module(self) -> DeterministicPolicy:
        """``obs -> tanh(mean)``: what is exported."""
        return DeterministicPolicy(self.actor).eval()

    def state_dict(self) -> dict[str, Any]:
        return {"algo": self.algo_name, "cfg": dataclasses.asdict(self.cfg), "actor": self.actor.state_dict(),
                "reference": self.reference.state_dict(), "optimizer": self.optimizer.state_dict(),
                "num_updates": self.num_updates}
