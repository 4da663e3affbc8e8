"""RLHF's third stage (seed §6.1): RL on the learned reward, anchored to the reference (SFT/BC) policy.

Two small pieces on top of SAC (:mod:`vla_rl_ros.algos.sac`):

* :func:`learned_reward_sampler` wraps any ``sample()`` of replay batches and
  replaces each batch's ``reward`` by the learned reward ``r(s, a)`` of the
  current reward model (:class:`~vla_rl_ros.rewards.learned.LearnedReward`,
  ``reward: learned``). The store is never rewritten: the model is applied
  when a batch is drawn, so a new reward model relabels all stored transitions
  at once; the recorded reward stays in the batch as ``recorded_reward``.
  ``done`` stays the recorded termination (the true success detector's), as
  PEBBLE keeps the environment's.
* :class:`RLHFSAC` is SAC with the KL penalty toward the reference policy::

      actor loss = E_s[ alpha log pi(a|s) - Q(s, a) + beta (log pi(a|s) - log pi_ref(a|s)) ],  a ~ pi(.|s)

  The last term is the one-sample estimate of ``beta KL(pi(.|s) || pi_ref(.|s))``
  (its expectation over ``a ~ pi`` is exactly the KL), differentiated through
  the reparameterised sample as SAC's own entropy term is. ``beta = 0`` is
  plain SAC. The actor starts as a copy of the reference (RLHF starts from the
  SFT model). Both actors are squashed Gaussians, so ``log pi_ref`` is exact.

The twin gate is unchanged: it promotes on the true task success
(:mod:`vla_rl_ros.learner.gate`), never on the learned reward.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..algos.networks import SquashedGaussianActor
from ..algos.sac import SAC, Batch, SACConfig


def learned_reward_sampler(sample_fn: Callable[[], Mapping[str, Any]], reward: Any) -> Callable[[], dict[str, Any]]:
    """``sample()`` whose batches carry ``reward(obs, action)`` as their reward (see the module docstring).

    ``reward``: a :class:`~vla_rl_ros.rewards.learned.LearnedReward` (or any ``f(obs, action, next_obs)`` on
    numpy batches). Call its ``refresh()`` to move to a newer reward model between batches.
    """
    def sample() -> dict[str, Any]:
        b = dict(sample_fn())
        obs, act, nxt = (np.asarray(torch.as_tensor(b[k]).cpu()) for k in ("obs", "action", "next_obs"))
        r = np.asarray(reward(obs, act, nxt), dtype=np.float32).reshape(-1)
        old = torch.as_tensor(b["reward"])
        b["recorded_reward"] = old
        b["reward"] = torch.from_numpy(r).to(old.device)
        return b

    return sample


class RLHFSAC(SAC):
    """SAC with ``beta * KL(pi || pi_ref)`` in the actor loss; the actor starts as ``reference``.

    Args:
        reference: the SFT/BC actor (frozen copy kept); its architecture must match ``config.hidden``.
            ``None``: this SAC's own initial actor, until :meth:`set_reference` (the continual learner sets it
            to the actor after its behaviour-cloning initialisation on the demos: the SFT model).
        beta: the KL weight (``>= 0``).
    """

    algo_name = "rlhf_sac"

    def __init__(self, obs_dim: int, action_dim: int, reference: SquashedGaussianActor | None = None,
                 beta: float = 0.1, config: SACConfig | None = None) -> None:
        if beta < 0:
            raise ValueError("beta must be >= 0")
        super().__init__(obs_dim, action_dim, config)
        self.beta = float(beta)
        self.set_reference(self.actor if reference is None else reference)

    def set_reference(self, reference: SquashedGaussianActor) -> None:
        """Anchor to (a frozen copy of) ``reference`` and start the actor from it."""
        self.reference = copy.deepcopy(reference).eval().requires_grad_(False)
        if reference is not self.actor:
            self.actor.load_state_dict(self.reference.state_dict())

    def actor_regularizer(self, batch: Batch, action: torch.Tensor, logp: torch.Tensor,
                          metrics: dict[str, torch.Tensor]) -> torch.Tensor:
        kl = (logp - self.reference.log_prob(batch.obs, action)).mean()
        metrics["kl_ref"] = kl.detach()
        return self.beta * kl

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["reference"] = self.reference.state_dict()
        sd["beta"] = self.beta
        return sd

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        super().load_state_dict(sd)
        self.reference.load_state_dict(sd["reference"])
        self.beta = float(sd.get("beta", self.beta))
