"""Soft Actor-Critic with a learned temperature, in one readable file.

References:
    Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018 (SAC
    with automatic entropy tuning), and Ball et al., "Efficient Online
    Reinforcement Learning with Offline Data" (RLPD), 2023: symmetric sampling of
    demo/online data (``demo_ratio``), LayerNorm critics, large critic ensembles
    with the target minimum over a random subset, high update-to-data ratio.

One update (:meth:`SAC.update`) on a batch ``(s, a, r, s', d)``, with ``d`` =
*terminated* (a time-limit truncation is not a terminal: it bootstraps), all
three losses evaluated at the current parameters:

1. Critic. ``a' ~ pi(.|s')``,
   ``y = r + gamma (1 - d) (min_i Qtarg_i(s', a') - alpha log pi(a'|s'))``
   where the minimum is over all target critics, or over a random subset of
   ``target_subset`` of them (REDQ / RLPD). Loss ``1/2 sum_i mean (Q_i(s,a) - y)^2``.
2. Actor (skipped when ``update_actor=False``). ``a~ ~ pi(.|s)`` reparameterised,
   loss ``mean(alpha log pi(a~|s) - Q(s, a~))`` with ``Q`` the min (default) or
   mean over the critics; critic weights are detached so the actor loss moves
   only the actor (and no critic weight gradient is computed at all).
3. Temperature. Loss ``-mean(log_alpha (log pi(a~|s) + target_entropy))``: log
   alpha rises when the policy entropy ``-log pi`` is below the target and falls
   when above (Haarnoja et al. 2018b, optimised in log space as SB3/CleanRL).

The gradients of the three losses touch disjoint parameters, so they are summed,
back-propagated once and applied by one fused Adam step (as the reference
implementation, softlearning, which runs the Q, policy and temperature train ops
in one ``session.run``); then the target critics are Polyak-averaged,
``targ <- (1 - tau) targ + tau online``.

:meth:`SAC.train_step` does ``utd`` critic updates on fresh batches and one
actor/temperature update (RLPD). Metrics come back as detached 0-d tensors, so
the hot loop never forces a ``.item()``; call :func:`metrics_to_floats` when
logging.

Speed (CPU): both critics are one :class:`~.networks.EnsembleCritic` (one batched
matmul per layer), one backward pass and one fused Adam kernel per update, the
target update is one ``torch._foreach_lerp_``, and the actor loss skips critic
weight gradients. At 2x256 and batch 256 the update is bound by its 16
256x256x256-equivalent matrix products (SB3's update does 18).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import numpy as np
import torch

from .bc import BC_LOSSES, bc_loss, fit_bc
from .networks import DeterministicPolicy, EnsembleCritic, ObsNormalizer, SquashedGaussianActor


@dataclass
class SACConfig:
    """SAC hyper-parameters. Defaults follow Stable-Baselines3 / the SAC paper.

    Attributes:
        gamma: discount (0.99).
        tau: Polyak coefficient of the target critics (0.005).
        lr: Adam learning rate for actor, critics and temperature (3e-4).
        batch_size: transitions per gradient step (256).
        hidden: hidden sizes of actor and each critic ((256, 256)).
        n_critics: critic ensemble size (2 = clipped double Q; RLPD uses 10).
        critic_layernorm: LayerNorm in the critics (off; RLPD turns it on).
        target_subset: if set, the TD target takes the min over a random subset
            of this many target critics per update (REDQ/RLPD use 2 of 10);
            ``None`` = min over all of them.
        actor_q: how the actor aggregates the ensemble, ``"min"`` (SAC) or
            ``"mean"`` (REDQ/RLPD with large ensembles).
        utd: critic updates per :meth:`SAC.train_step` (update-to-data ratio, 1).
        init_alpha: initial temperature (1.0, as SB3 ``ent_coef="auto"`` and
            RLPD; lower it, e.g. 0.1, after BC initialisation so the entropy bonus
            does not wash the demonstrations out).
        autotune_alpha: learn alpha (True); False keeps ``init_alpha`` fixed.
        target_entropy: entropy target; ``None`` means ``-action_dim``.
        demo_ratio: fraction of each batch drawn from demonstrations/offline
            data when there are some (0.5, RLPD's symmetric sampling); ``None``:
            uniform over all transitions. Used by whoever samples batches
            (``train_online``, the learner, :func:`~.learners.replay_sampler`).
        bc_init_steps: behaviour-cloning steps on demonstrations before RL
            (0 = none; see :meth:`SAC.bc_pretrain`).
        bc_loss: ``"mse"`` (default: the deterministic action, what is
            deployed) or ``"nll"`` (also fits the log-std); see :mod:`.bc`. On
            20 pick_place demos ``"nll"`` gave a 0% actor, ``"mse"`` 65%
            (``bench/bench_sample_efficiency.py --bc-check``).
        bc_weight: weight of a behaviour-cloning term in the actor loss on the
            demo/intervention rows of each batch (0 = pure SAC). As TD3+BC
            (Fujimoto & Gu, 2021) the RL term is divided by the batch's mean
            ``|Q|`` so the weight does not depend on the reward scale:
            ``loss = mean(alpha log pi - Q) / mean|Q| + bc_weight * mse_demo``.
            Keeps a BC-initialised actor from being erased while the critics
            are still wrong.
        actor_warmup_updates: critic-only updates after BC initialisation
            before the actor and temperature start to move (0 = none), so the
            first policy-improvement steps follow a critic that has evaluated
            the BC policy rather than a random one.
        learning_starts: environment steps with uniform random actions before
            learning starts, for online loops (5000, as CleanRL).
        seed: seeds network initialisation and the update's sampling noise.
    """

    gamma: float = 0.99
    tau: float = 0.005
    lr: float = 3e-4
    batch_size: int = 256
    hidden: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    critic_layernorm: bool = False
    target_subset: int | None = None
    actor_q: str = "min"
    utd: int = 1
    init_alpha: float = 1.0
    autotune_alpha: bool = True
    target_entropy: float | None = None
    demo_ratio: float | None = 0.5
    bc_init_steps: int = 0
    bc_loss: str = "mse"
    bc_weight: float = 0.0
    actor_warmup_updates: int = 0
    learning_starts: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1]")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError("tau must be in (0, 1]")
        if self.n_critics < 1 or self.utd < 1 or self.batch_size < 1:
            raise ValueError("n_critics, utd and batch_size must be >= 1")
        if self.target_subset is not None and not 1 <= self.target_subset <= self.n_critics:
            raise ValueError("target_subset must be in [1, n_critics]")
        if self.actor_q not in ("min", "mean"):
            raise ValueError("actor_q must be 'min' or 'mean'")
        if not self.init_alpha > 0:
            raise ValueError("init_alpha must be > 0")
        if self.demo_ratio is not None and not 0.0 <= self.demo_ratio <= 1.0:
            raise ValueError("demo_ratio must be None (uniform over all transitions) or in [0, 1]")
        if self.bc_loss not in BC_LOSSES:
            raise ValueError(f"bc_loss must be one of {BC_LOSSES}")
        if self.bc_weight < 0 or self.actor_warmup_updates < 0:
            raise ValueError("bc_weight and actor_warmup_updates must be >= 0")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SACConfig":
        return cls(**json.loads(text))


class Batch(NamedTuple):
    """A batch of transitions; ``reward`` and ``done`` are ``[B]``, ``done`` = terminated;
    ``demo`` (optional, ``[B]``) marks demonstration/intervention rows (for ``bc_weight``)."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    done: torch.Tensor
    demo: torch.Tensor | None = None


def as_batch(b: Batch | Mapping[str, Any] | tuple) -> Batch:
    """Coerce a mapping (keys ``obs, action, reward, next_obs, done``; ``actions``,
    ``rewards``, ``next_observations``, ``dones``/``terminated`` also accepted), a
    tuple or a :class:`Batch` of arrays/tensors into float32 tensors."""
    if isinstance(b, Mapping):
        def get(*names: str) -> Any:
            for n in names:
                if n in b:
                    return b[n]
            raise KeyError(f"batch has none of {names}")

        demo = None
        if "is_demo" in b or "demo" in b:
            demo = torch.as_tensor(b["is_demo"] if "is_demo" in b else b["demo"]).reshape(-1).bool()
            if "intervention" in b:
                demo = demo | torch.as_tensor(b["intervention"]).reshape(-1).bool()
        b = Batch(get("obs", "observations"), get("action", "actions"), get("reward", "rewards"),
                  get("next_obs", "next_observations"), get("done", "dones", "terminated"), demo)
    elif not isinstance(b, Batch):
        b = Batch(*b)

    def t(x: Any) -> torch.Tensor:
        x = torch.as_tensor(x)
        return x if x.dtype == torch.float32 else x.to(torch.float32)

    demo = None if b.demo is None else torch.as_tensor(b.demo).reshape(-1).bool()
    return Batch(t(b.obs), t(b.action), t(b.reward).reshape(-1), t(b.next_obs), t(b.done).reshape(-1), demo)


def concat_batches(a: Batch, b: Batch) -> Batch:
    """Concatenate two batches (RLPD symmetric sampling: online half + demo half)."""
    fields = [torch.cat([x, y], 0) for x, y in zip(a[:5], b[:5])]
    demo = None if a.demo is None or b.demo is None else torch.cat([a.demo, b.demo], 0)
    return Batch(*fields, demo)


def metrics_to_floats(m: Mapping[str, Any]) -> dict[str, float]:
    """Convert a metrics dict of 0-d tensors to Python floats (do it at log time only)."""
    return {k: float(v) for k, v in m.items()}


class SAC:
    """Soft Actor-Critic (see the module docstring for the exact update).

    Args:
        obs_dim, action_dim: sizes; actions live in ``[-1, 1]`` (policy space).
        config: :class:`SACConfig`.
        obs_mean, obs_std: optional observation statistics for the normaliser
            baked into actor and critics (see :meth:`set_obs_stats`).

    A subclass may add a term to the critic loss with :meth:`critic_regularizer`
    (CQL's conservative penalty, :mod:`.cql`).
    """

    algo_name = "sac"
    config_cls = SACConfig

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: SACConfig | None = None,
        obs_mean: np.ndarray | None = None,
        obs_std: np.ndarray | None = None,
    ) -> None:
        self.cfg = cfg = config if config is not None else SACConfig()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.target_entropy = float(-self.action_dim if cfg.target_entropy is None else cfg.target_entropy)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.actor = SquashedGaussianActor(obs_dim, action_dim, cfg.hidden)
            self.critic = EnsembleCritic(obs_dim, action_dim, cfg.hidden, cfg.n_critics, cfg.critic_layernorm)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        self.log_alpha = torch.tensor(float(np.log(cfg.init_alpha)), requires_grad=cfg.autotune_alpha)
        # One fused Adam (one kernel) over critic, actor and log alpha. Adam keeps a
        # step count per parameter, and parameters whose gradient is None in a step
        # (the actor on critic-only steps) are skipped, so this is exactly three
        # separate Adams with the same learning rate.
        params = [*self.critic.parameters(), *self.actor.parameters()]
        if cfg.autotune_alpha:
            params.append(self.log_alpha)
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=True)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.num_critic_updates = 0
        self.num_actor_updates = 0
        if obs_mean is not None or obs_std is not None:
            if obs_mean is None or obs_std is None:
                raise ValueError("give both obs_mean and obs_std")
            self.set_obs_stats(obs_mean, obs_std)

    # ------------------------------------------------------------------ helpers
    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def set_obs_stats(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        """Fix the observation normaliser of actor, critics and target critics."""
        for m in (self.actor, self.critic, self.critic_target):
            m.normalizer.set_stats(mean, std)

    def fit_obs_normalizer(self, obs: np.ndarray | torch.Tensor) -> None:
        """Fit the normaliser on raw observations ``[N, obs_dim]`` (do it once, before training)."""
        n = ObsNormalizer(self.obs_dim).fit(obs)
        self.set_obs_stats(n.mean, n.std)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Action(s) in ``[-1, 1]`` for raw observation(s) (``[obs_dim]`` or ``[B, obs_dim]``)."""
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = o.ndim == 1
        a, _ = self.actor(o.reshape(1, -1) if single else o, deterministic=deterministic,
                          with_log_prob=False, generator=self.generator)
        a = a.numpy()
        return a[0] if single else a

    def policy_module(self) -> DeterministicPolicy:
        """A frozen copy ``obs -> tanh(mean)`` of the current actor, for export."""
        actor = copy.deepcopy(self.actor).eval().requires_grad_(False)
        return DeterministicPolicy(actor).eval()

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def compute_target(self, batch: Batch | Mapping[str, Any]) -> torch.Tensor:
        """Soft clipped double-Q target ``[B]``:
        ``r + gamma (1 - d) (min_i Qtarg_i(s', a') - alpha log pi(a'|s'))``, ``a' ~ pi(.|s')``
        (min over a random ``target_subset`` of the target critics if configured).
        Draws the noise for ``a'`` (and the subset) from :attr:`generator`."""
        cfg = self.cfg
        b = as_batch(batch)
        next_a, next_logp = self.actor(b.next_obs, generator=self.generator)
        q_next = self.critic_target(b.next_obs, next_a)  # [E, B]
        if cfg.target_subset is not None and cfg.target_subset < cfg.n_critics:
            idx = torch.randperm(cfg.n_critics, generator=self.generator)[: cfg.target_subset]
            q_next = q_next.index_select(0, idx)
        soft_v = q_next.min(0).values - self.log_alpha.detach().exp() * next_logp
        return b.reward + cfg.gamma * (1.0 - b.done) * soft_v

    def update(self, batch: Batch | Mapping[str, Any], update_actor: bool = True) -> dict[str, torch.Tensor]:
        """One SAC gradient step on ``batch`` (see the module docstring).

        The critic, actor and temperature losses are evaluated at the current
        parameters, summed (their gradients touch disjoint parameters: the actor
        loss sees detached critic weights and a detached alpha, the temperature
        loss a detached log-prob), back-propagated once and applied with one fused
        Adam step; then the target critics are Polyak-averaged. This is the update
        of the reference implementation (softlearning evaluates the Q, policy and
        temperature train ops together in one ``session.run``).

        Args:
            batch: :class:`Batch` or mapping of ``obs, action, reward, next_obs, done``.
            update_actor: also update actor and temperature (False for the extra
                critic-only steps of a UTD > 1 schedule).

        Returns:
            detached 0-d tensors ``critic_loss, q_mean, target_q_mean`` and, with
            the actor, ``actor_loss, entropy, alpha[, alpha_loss]``.
        """
        cfg = self.cfg
        b = as_batch(batch)
        alpha = self.log_alpha.detach().exp()
        target = self.compute_target(b)
        q = self.critic(b.obs, b.action)  # [E, B]
        critic_loss = 0.5 * (q - target).pow(2).mean(1).sum()
        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean(), "target_q_mean": target.mean()}
        loss = critic_loss + self.critic_regularizer(b, q, metrics)
        if update_actor:
            a, logp = self.actor(b.obs, generator=self.generator)
            q_pi = self.critic(b.obs, a, detach_params=True)  # gradients reach `a` only
            q_pi = q_pi.min(0).values if cfg.actor_q == "min" else q_pi.mean(0)
            actor_loss = (alpha * logp - q_pi).mean()
            if cfg.bc_weight > 0 and b.demo is not None and bool(b.demo.any()):
                bc = bc_loss(self.actor, b.obs[b.demo], b.action[b.demo].clamp(-1.0, 1.0), "mse")
                actor_loss = actor_loss / q_pi.detach().abs().mean().clamp_min(1e-3) + cfg.bc_weight * bc
                metrics["bc_loss"] = bc.detach()
            actor_loss = actor_loss + self.actor_regularizer(b, a, logp, metrics)
            loss = loss + actor_loss
            logp = logp.detach()
            metrics.update(actor_loss=actor_loss.detach(), entropy=-logp.mean(), alpha=alpha)
            if cfg.autotune_alpha:
                alpha_loss = -(self.log_alpha * (logp + self.target_entropy)).mean()
                loss = loss + alpha_loss
                metrics["alpha_loss"] = alpha_loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()  # parameters without a gradient (the actor on critic-only steps) are skipped
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, cfg.tau)
        self.num_critic_updates += 1
        self.num_actor_updates += int(update_actor)
        return metrics

    def actor_regularizer(self, batch: Batch, action: torch.Tensor, logp: torch.Tensor,
                          metrics: dict[str, torch.Tensor]) -> torch.Tensor:
        """An extra term added to the actor loss (0 for SAC); ``action``/``logp`` are the reparameterised
        sample on ``batch.obs`` and its log-prob (RLHF's KL anchor: :mod:`vla_rl_ros.preferences.rlhf`)."""
        return logp.new_zeros(())

    def critic_regularizer(self, batch: Batch, q: torch.Tensor, metrics: dict[str, torch.Tensor]) -> torch.Tensor:
        """An extra term added to the critic loss (0 for SAC); ``q`` is ``[E, B]`` on the
        batch's actions. Subclasses may add detached entries to ``metrics``."""
        return q.new_zeros(())

    def train_step(self, sample_fn: Callable[[], Batch | Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """``cfg.utd`` critic updates on fresh batches, the actor/alpha update on the last."""
        metrics: dict[str, torch.Tensor] = {}
        warm = self.num_critic_updates < self.cfg.actor_warmup_updates
        for i in range(self.cfg.utd):
            metrics = self.update(sample_fn(), update_actor=(i == self.cfg.utd - 1) and not warm)
        return metrics

    # ------------------------------------------------------------------ BC init
    def bc_pretrain(
        self,
        demo_batches: Callable[[], Any] | Iterable[Any],
        steps: int | None = None,
        loss: str | None = None,
        progress: bool = False,
    ) -> list[float]:
        """Behaviour-cloning initialisation of the actor (seed §6.2, phase 1).

        Args:
            demo_batches: a ``sample_fn()`` returning a batch, or a finite
                iterable of batches (cycled); a batch is a mapping/:class:`Batch`/
                ``(obs, action, ...)`` tuple with raw observations and actions in
                ``[-1, 1]``.
            steps: number of gradient steps (default ``cfg.bc_init_steps``; for
                an iterable and ``bc_init_steps == 0``, one pass over it).
            loss: ``"nll"``/``"mse"`` (default ``cfg.bc_loss``).

        Critics are left alone: they learn from the first RL updates (whose
        batches contain the demonstrations with ``demo_ratio``). Returns the
        logged BC losses.
        """
        if callable(demo_batches):
            sample = demo_batches
            steps = self.cfg.bc_init_steps if steps is None else int(steps)
        else:
            batches = list(demo_batches)
            if not batches:
                raise ValueError("no demonstration batches")
            steps = (self.cfg.bc_init_steps or len(batches)) if steps is None else int(steps)
            cycle = itertools.cycle(batches)
            sample = lambda: next(cycle)  # noqa: E731

        def pairs() -> tuple[torch.Tensor, torch.Tensor]:
            b = sample()
            if isinstance(b, Mapping):
                o = b["obs"] if "obs" in b else b["observations"]
                a = b["action"] if "action" in b else b["actions"]
            else:
                o, a = b[0], b[1]
            return torch.as_tensor(o, dtype=torch.float32), torch.as_tensor(a, dtype=torch.float32)

        history = fit_bc(self.actor, pairs, steps, lr=self.cfg.lr, loss=loss or self.cfg.bc_loss, progress=progress)
        return history

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly: weights, optimisers, RNG, counters, config."""
        return {
            "algo": self.algo_name,
            "config": self.cfg.to_json(),
            "dims": [self.obs_dim, self.action_dim],
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.generator.get_state(),
            "counters": {"critic_updates": self.num_critic_updates, "actor_updates": self.num_actor_updates},
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        if sd.get("algo") != self.algo_name:
            raise ValueError(f"not a {self.algo_name.upper()} state (algo={sd.get('algo')!r})")
        if list(sd["dims"]) != [self.obs_dim, self.action_dim]:
            raise ValueError(f"state is for dims {list(sd['dims'])}, this SAC has {[self.obs_dim, self.action_dim]}")
        self.actor.load_state_dict(sd["actor"])
        self.critic.load_state_dict(sd["critic"])
        self.critic_target.load_state_dict(sd["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(sd["log_alpha"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.generator.set_state(sd["rng"])
        self.num_critic_updates = int(sd["counters"]["critic_updates"])
        self.num_actor_updates = int(sd["counters"]["actor_updates"])

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> "SAC":
        """Rebuild a SAC (config and dims from the state) and load it."""
        sac = cls(*[int(d) for d in sd["dims"]], cls.config_cls.from_json(sd["config"]))
        sac.load_state_dict(sd)
        return sac
