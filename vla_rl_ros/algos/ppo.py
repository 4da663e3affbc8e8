"""Proximal Policy Optimization (PPO) on vectorised gymnasium envs, in one readable file.

References: Schulman et al., "Proximal Policy Optimization Algorithms", 2017
(arXiv:1707.06347); Schulman et al., "High-Dimensional Continuous Control Using
Generalized Advantage Estimation", 2016; Huang et al., "The 37 Implementation
Details of PPO" (ICLR blog track 2022, CleanRL's ``ppo_continuous_action.py``);
seed §4.1 (whose sketch bootstraps nothing at the rollout's end, recomputes no
advantages per rollout and takes full-batch steps: this file does not).

**Policy.** A Gaussian ``pi(a|s) = N(mu(s), diag(exp(log_std))^2)`` with a
learned, state-independent ``log_std`` (CleanRL); ``mu`` and the value ``V(s)``
are separate ``Tanh`` MLPs (orthogonal init, gain sqrt 2, output gains 0.01 and
1) on the *normalised* observation. The environment receives the sample clipped
to the action bounds ``[-1, 1]``; the log-probability is of the unclipped sample.
The exported policy is ``obs -> clamp(mu(normalise(obs)), -1, 1)``.

**Observation normalisation inside the model.** Running mean and variance of
every observation seen (``RunningMeanStd``) are copied into the networks'
:class:`~.networks.ObsNormalizer` at the start of each rollout and held fixed
through the rollout and its update (so the stored log-probabilities stay
exact); the exported ONNX graph carries them, so it takes raw observations.
Rewards are optionally scaled by the running std of the discounted return
(``norm_reward``, CleanRL's ``NormalizeReward``); that changes only training.

**Rollout.** ``n_envs`` envs (gymnasium's vector API, ``SAME_STEP`` autoreset:
an ended env returns its reset observation and the ended episode's last
observation in ``info["final_obs"]``) step ``n_steps`` times.

**GAE(lambda) with truncation bootstrapping** (:func:`gae`): with ``s'_t`` the
true successor of ``s_t`` (the final observation when the episode ended),
``term_t`` = terminated and ``done_t`` = terminated or truncated::

    delta_t = r_t + gamma (1 - term_t) V(s'_t) - V(s_t)
    A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1}
    R_t     = A_t + V(s_t)                                  (the value target)

A time-limit truncation is not a terminal: its ``delta`` bootstraps from the
value of its final observation; only the recursion stops there. The last step
of a rollout bootstraps from ``V`` of the observation after it.

**Update.** ``n_epochs`` passes over the rollout in shuffled minibatches of
``batch_size``; per minibatch, with ``rho = exp(log pi(a|s) - log pi_old(a|s))``
and the minibatch's advantages normalised to zero mean and unit std::

    L_clip = -E[ min(rho A, clip(rho, 1 - eps, 1 + eps) A) ]              (:func:`clipped_surrogate`)
    L_V    = 1/2 E[ max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2) ]   (:func:`clipped_value_loss`)
    L      = L_clip + vf_coef L_V - ent_coef H[pi]

one Adam step with the gradient's global norm clipped to ``max_grad_norm``;
an epoch loop stops early when the approximate KL ``E[(rho - 1) - log rho]``
exceeds ``target_kl`` (if set).

Defaults (:class:`PPOConfig`) are Stable-Baselines3's ``PPO`` defaults
(``n_steps`` 2048 per env, batch 64, 10 epochs, lr 3e-4, gamma 0.99, lambda
0.95, clip 0.2, ent 0, vf 0.5, grad norm 0.5, ``log_std`` 0) with CleanRL's
choices where SB3 has none: a clipped value loss, 64x64 Tanh networks, and
observation and reward normalisation.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .networks import ObsNormalizer, StateValue, mlp


@dataclass
class PPOConfig:
    """PPO hyper-parameters (SB3's ``PPO`` defaults; CleanRL's where SB3 has none).

    Attributes:
        n_envs: environments stepped together (1, as SB3; the CLI uses 2).
        n_steps: steps per env per rollout (2048; the rollout is ``n_envs * n_steps``).
        batch_size: minibatch size (64).
        n_epochs: passes over each rollout (10).
        lr: Adam learning rate (3e-4); ``anneal_lr`` decays it linearly to 0 (False).
        gamma, gae_lambda: discount and GAE's lambda (0.99, 0.95).
        clip_coef: ``eps`` of the clipped surrogate (0.2).
        clip_vloss: clip the value loss around the old values with ``clip_coef`` (True, CleanRL).
        norm_adv: normalise advantages per minibatch (True).
        ent_coef, vf_coef: entropy bonus and value-loss weights (0.0, 0.5).
        max_grad_norm: global gradient-norm clip (0.5).
        target_kl: stop an update's epochs once the approximate KL exceeds this (None: never).
        hidden: hidden sizes of the policy mean and the value nets ((64, 64), Tanh).
        log_std_init: initial log standard deviation (0.0).
        norm_obs: running observation normalisation, stored in the model (True).
        norm_reward: scale rewards by the running std of the discounted return (True, CleanRL).
        clip_reward: bound on a scaled reward (10).
        seed: seeds initialisation, sampling and the envs' resets.
    """

    n_envs: int = 1
    n_steps: int = 2048
    batch_size: int = 64
    n_epochs: int = 10
    lr: float = 3e-4
    anneal_lr: bool = False
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    norm_adv: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    hidden: tuple[int, ...] = (64, 64)
    log_std_init: float = 0.0
    norm_obs: bool = True
    norm_reward: bool = True
    clip_reward: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.n_envs < 1 or self.n_steps < 1 or self.batch_size < 1 or self.n_epochs < 1:
            raise ValueError("n_envs, n_steps, batch_size and n_epochs must be >= 1")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0):
            raise ValueError("gamma and gae_lambda must be in [0, 1]")
        if not self.clip_coef > 0:
            raise ValueError("clip_coef must be > 0")

    @property
    def rollout_size(self) -> int:
        return self.n_envs * self.n_steps

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PPOConfig":
        return cls(**json.loads(text))


# --------------------------------------------------------------------------- the pieces
def gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
        dones: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE(lambda) advantages and value targets, ``[T, N]`` each (see the module docstring).

    Args:
        rewards, values: ``r_t`` and ``V(s_t)``.
        next_values: ``V(s'_t)`` of each step's true successor (its final
            observation when the episode ended there; ``V(s_{t+1})`` otherwise).
        terminated: 1 where ``s'_t`` is terminal (no bootstrap).
        dones: 1 where the episode ended at ``t`` (terminated or truncated).
    """
    T = len(rewards)
    adv = np.zeros_like(values, dtype=np.float64)
    last = np.zeros(values.shape[1:], dtype=np.float64)
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * next_values[t] - values[t]
        last = delta + gamma * lam * (1.0 - dones[t]) * last
        adv[t] = last
    return adv.astype(np.float32), (adv + values).astype(np.float32)


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """``-E[min(rho A, clip(rho, 1 - clip, 1 + clip) A)]``, ``rho = exp(logp - old_logp)``.

    Its gradient vanishes for samples whose ratio has left the clip range in the
    direction the advantage favours (``rho > 1 + clip`` with ``A > 0``, ``rho < 1 - clip``
    with ``A < 0``).
    """
    ratio = torch.exp(logp - old_logp)
    return torch.max(-adv * ratio, -adv * ratio.clamp(1.0 - clip, 1.0 + clip)).mean()


def clipped_value_loss(v: torch.Tensor, old_v: torch.Tensor, returns: torch.Tensor, clip: float | None
                       ) -> torch.Tensor:
    """``1/2 E[max((v - R)^2, (old_v + clip(v - old_v, -clip, clip) - R)^2)]`` (plain ``1/2 E[(v - R)^2]``
    when ``clip`` is None)."""
    unclipped = (v - returns).square()
    if clip is None:
        return 0.5 * unclipped.mean()
    v_clipped = old_v + (v - old_v).clamp(-clip, clip)
    return 0.5 * torch.max(unclipped, (v_clipped - returns).square()).mean()


class RunningMeanStd:
    """Running mean/variance of a stream of arrays (Chan et al.'s parallel update), float64."""

    def __init__(self, shape: Sequence[int] = (), epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = float(epsilon)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1, *self.mean.shape)
        b_mean, b_var, b_n = x.mean(0), x.var(0), len(x)
        delta, tot = b_mean - self.mean, self.count + b_n
        self.mean = self.mean + delta * b_n / tot
        self.var = (self.var * self.count + b_var * b_n + delta**2 * self.count * b_n / tot) / tot
        self.count = tot

    def state(self) -> dict[str, Any]:
        return {"mean": torch.from_numpy(np.array(self.mean, np.float64)),
                "var": torch.from_numpy(np.array(self.var, np.float64)), "count": self.count}

    def load(self, s: Mapping[str, Any]) -> None:
        self.mean, self.var, self.count = s["mean"].numpy().copy(), s["var"].numpy().copy(), float(s["count"])


def _orthogonal(net: nn.Sequential, out_gain: float) -> nn.Sequential:
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for i, m in enumerate(linears):
        nn.init.orthogonal_(m.weight, out_gain if i == len(linears) - 1 else math.sqrt(2.0))
        nn.init.zeros_(m.bias)
    return net


class GaussianPolicy(nn.Module):
    """``N(mu(normalise(s)), exp(log_std)^2)``; ``forward`` is the deterministic ``mu`` (what is exported)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int], log_std_init: float,
                 normalizer: ObsNormalizer) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.mu = _orthogonal(mlp(obs_dim, hidden, action_dim, activation=nn.Tanh), 0.01)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mu(self.normalizer(obs))

    def dist(self, obs: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self(obs), self.log_std.exp().expand(obs.shape[0], -1))


# --------------------------------------------------------------------------- the learner
class PPO:
    """PPO: :meth:`collect` a rollout from a vector env, then :meth:`update` on it.

    Args:
        obs_dim, action_dim: sizes; actions live in ``[-1, 1]``.
        config: :class:`PPOConfig`.
    """

    algo_name = "ppo"

    def __init__(self, obs_dim: int, action_dim: int, config: PPOConfig | None = None) -> None:
        self.cfg = cfg = config if config is not None else PPOConfig()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            norm = ObsNormalizer(obs_dim)
            self.actor = GaussianPolicy(obs_dim, action_dim, cfg.hidden, cfg.log_std_init, norm)
            self.value = StateValue(obs_dim, cfg.hidden, normalizer=norm, activation=nn.Tanh)
            _orthogonal(self.value.net, 1.0)
        self.optimizer = torch.optim.Adam([*self.actor.parameters(), *self.value.net.parameters()], lr=cfg.lr,
                                          eps=1e-5)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.rng = np.random.default_rng(cfg.seed + 2)
        self.obs_rms = RunningMeanStd((obs_dim,))
        self.ret_rms = RunningMeanStd(())
        self.num_updates = 0
        self.env_steps = 0

    # ------------------------------------------------------------------ helpers
    def policy_module(self) -> GaussianPolicy:
        """A frozen copy of the policy; its ``forward`` is ``obs -> mu`` (export clamps to ``[-1, 1]``)."""
        return copy.deepcopy(self.actor).eval().requires_grad_(False)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = o.ndim == 1
        o = o.reshape(1, -1) if single else o
        a = self.actor(o) if deterministic else self.actor.dist(o).sample()
        a = a.clamp(-1.0, 1.0).numpy()
        return a[0] if single else a

    def _sync_normalizer(self) -> None:
        if self.cfg.norm_obs:
            self.actor.normalizer.set_stats(self.obs_rms.mean, np.sqrt(self.obs_rms.var + 1e-8))

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def collect(self, envs: gym.vector.VectorEnv, obs: np.ndarray, episode_stats: list | None = None
                ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """Step ``envs`` (``SAME_STEP`` autoreset) ``n_steps`` times from ``obs``.

        Returns the rollout (tensors ``obs, action, logp, value, adv, ret``, flat over
        time x envs) and the observation to continue from. Finished episodes'
        ``(return, length, success)`` (unscaled return) are appended to ``episode_stats``.
        """
        cfg = self.cfg
        T, N = cfg.n_steps, envs.num_envs
        self._sync_normalizer()  # fixed for this rollout and its update
        buf_obs = np.zeros((T, N, self.obs_dim), np.float32)
        buf_act = np.zeros((T, N, self.action_dim), np.float32)
        logp, values, next_values = (np.zeros((T, N), np.float32) for _ in range(3))
        rewards, terminated, dones = (np.zeros((T, N), np.float32) for _ in range(3))
        if not hasattr(self, "_ep_ret"):
            self._ep_ret, self._ep_len, self._disc_ret = np.zeros(N), np.zeros(N, int), np.zeros(N)
        for t in range(T):
            o = torch.from_numpy(np.asarray(obs, np.float32))
            dist = self.actor.dist(o)
            a = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=self.generator)
            buf_obs[t], buf_act[t] = obs, a.numpy()
            logp[t] = dist.log_prob(a).sum(-1).numpy()
            values[t] = self.value(o).numpy()
            obs, r, term, trunc, info = envs.step(a.clamp(-1.0, 1.0).numpy())
            r = np.asarray(r, np.float64)
            done = np.logical_or(term, trunc)
            true_next = np.array(obs, np.float32, copy=True)
            if done.any():
                for i in np.flatnonzero(done):
                    true_next[i] = info["final_obs"][i]
            if cfg.norm_obs:
                self.obs_rms.update(true_next)
            next_values[t] = self.value(torch.from_numpy(true_next)).numpy()
            self._ep_ret += r
            self._ep_len += 1
            if cfg.norm_reward:
                self._disc_ret = self._disc_ret * cfg.gamma + r
                self.ret_rms.update(self._disc_ret)
                r = np.clip(r / np.sqrt(self.ret_rms.var + 1e-8), -cfg.clip_reward, cfg.clip_reward)
            rewards[t], terminated[t], dones[t] = r, term, done
            for i in np.flatnonzero(done):
                if episode_stats is not None:
                    fin = info.get("final_info", {})
                    succ = bool(np.asarray(fin.get("is_success", np.zeros(N)))[i]) if fin else False
                    episode_stats.append((float(self._ep_ret[i]), int(self._ep_len[i]), succ))
                self._ep_ret[i], self._ep_len[i], self._disc_ret[i] = 0.0, 0, 0.0
        self.env_steps += T * N
        adv, ret = gae(rewards, values, next_values, terminated, dones, cfg.gamma, cfg.gae_lambda)
        flat = lambda x: torch.from_numpy(np.ascontiguousarray(x.reshape(T * N, *x.shape[2:])))  # noqa: E731
        return ({"obs": flat(buf_obs), "action": flat(buf_act), "logp": flat(logp), "value": flat(values),
                 "adv": flat(adv), "ret": flat(ret)}, obs)

    # ------------------------------------------------------------------ update
    def update(self, rollout: Mapping[str, torch.Tensor], lr: float | None = None) -> dict[str, float]:
        """``n_epochs`` of minibatch steps on one rollout (see the module docstring)."""
        cfg = self.cfg
        if lr is not None:
            for g in self.optimizer.param_groups:
                g["lr"] = lr
        n = len(rollout["obs"])
        mb = min(cfg.batch_size, n)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "v_loss", "entropy", "approx_kl", "clipfrac")}
        for _ in range(cfg.n_epochs):
            perm = torch.randperm(n, generator=self.generator)
            for start in range(0, n - mb + 1, mb):
                i = perm[start:start + mb]
                o, a, adv = rollout["obs"][i], rollout["action"][i], rollout["adv"][i]
                dist = self.actor.dist(o)
                new_logp = dist.log_prob(a).sum(-1)
                if cfg.norm_adv and len(adv) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = clipped_surrogate(new_logp, rollout["logp"][i], adv, cfg.clip_coef)
                v_loss = clipped_value_loss(self.value(o), rollout["value"][i], rollout["ret"][i],
                                            cfg.clip_coef if cfg.clip_vloss else None)
                entropy = dist.entropy().sum(-1).mean()
                loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    log_ratio = new_logp - rollout["logp"][i]
                    ratio = log_ratio.exp()
                    stats["approx_kl"].append(float(((ratio - 1) - log_ratio).mean()))
                    stats["clipfrac"].append(float(((ratio - 1).abs() > cfg.clip_coef).float().mean()))
                stats["pg_loss"].append(float(pg_loss.detach()))
                stats["v_loss"].append(float(v_loss.detach()))
                stats["entropy"].append(float(entropy.detach()))
            if cfg.target_kl is not None and stats["approx_kl"][-1] > cfg.target_kl:
                break
        self.num_updates += 1
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["std"] = float(self.actor.log_std.detach().exp().mean())
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"algo": self.algo_name, "config": self.cfg.to_json(), "dims": [self.obs_dim, self.action_dim],
                "actor": self.actor.state_dict(), "value": self.value.state_dict(),
                "optimizer": self.optimizer.state_dict(), "obs_rms": self.obs_rms.state(),
                "ret_rms": self.ret_rms.state(), "rng": self.generator.get_state(),
                "counters": {"updates": self.num_updates, "env_steps": self.env_steps}}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        if sd.get("algo") != self.algo_name:
            raise ValueError(f"not a PPO state (algo={sd.get('algo')!r})")
        for name in ("actor", "value", "optimizer"):
            getattr(self, name).load_state_dict(sd[name])
        self.obs_rms.load(sd["obs_rms"])
        self.ret_rms.load(sd["ret_rms"])
        self.generator.set_state(sd["rng"])
        self.num_updates, self.env_steps = int(sd["counters"]["updates"]), int(sd["counters"]["env_steps"])

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> "PPO":
        ppo = cls(*[int(d) for d in sd["dims"]], PPOConfig.from_json(sd["config"]))
        ppo.load_state_dict(sd)
        return ppo


# --------------------------------------------------------------------------- the loop
def make_vector_env(env_id: str | Callable[[], gym.Env], n_envs: int, asynchronous: bool = True,
                    wrap: Callable[[gym.Env], gym.Env] | None = None) -> gym.vector.VectorEnv:
    """``n_envs`` copies of ``env_id`` (an id or a factory), ``SAME_STEP`` autoreset; one process
    per env when ``asynchronous`` (gymnasium's ``AsyncVectorEnv``, fork), else in this process."""

    def make() -> gym.Env:
        import vla_rl_ros.twin  # noqa: F401  (registers the twin's envs, also in a spawned worker)

        env = env_id() if callable(env_id) else gym.make(env_id)
        return wrap(env) if wrap is not None else env

    kw = dict(autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    if asynchronous and n_envs > 1:
        return gym.vector.AsyncVectorEnv([make] * n_envs, **kw)
    return gym.vector.SyncVectorEnv([make] * n_envs, **kw)


def train_ppo(
    envs: gym.vector.VectorEnv,
    cfg: PPOConfig,
    steps: int,
    *,
    progress: bool = False,
    tb_dir: str | None = None,
    log_every: int = 1,
    on_update: Callable[[PPO, dict[str, float]], bool | None] | None = None,
) -> tuple[PPO, list[dict[str, float]]]:
    """Train PPO for ``steps`` env steps (rounded up to whole rollouts) on ``envs``.

    ``cfg.n_envs`` must equal ``envs.num_envs``. Returns the learner and a history
    with one entry per update: ``env_steps``, the mean return, length and success
    rate of the episodes finished in that rollout, ``fps`` and the update's losses.
    ``on_update(ppo, metrics)``, if given, is called after each update (SB3's callback
    ``_on_rollout_end``): it may evaluate or checkpoint, and stops training by returning True.
    """
    if envs.num_envs != cfg.n_envs:
        raise ValueError(f"cfg.n_envs={cfg.n_envs} but the vector env has {envs.num_envs}")
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    if not (isinstance(obs_space, gym.spaces.Box) and isinstance(act_space, gym.spaces.Box)):
        raise TypeError("PPO here needs Box observation and action spaces")
    if not (np.allclose(act_space.low, -1.0) and np.allclose(act_space.high, 1.0)):
        raise ValueError("the action space must be [-1, 1] (rescale the env's actions first)")
    ppo = PPO(obs_space.shape[0], act_space.shape[0], cfg)
    obs, _ = envs.reset(seed=cfg.seed)
    if cfg.norm_obs:
        ppo.obs_rms.update(obs)
    n_updates = max(1, math.ceil(steps / cfg.rollout_size))
    writer = None
    if tb_dir:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(tb_dir)
    it = range(n_updates)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="ppo", unit="rollout")
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    try:
        for k in it:
            lr = cfg.lr * (1.0 - k / n_updates) if cfg.anneal_lr else None
            episodes: list = []
            rollout, obs = ppo.collect(envs, obs, episodes)
            m = ppo.update(rollout, lr)
            m.update(env_steps=ppo.env_steps, fps=ppo.env_steps / (time.perf_counter() - t0), episodes=len(episodes))
            if episodes:
                m.update(ep_return=float(np.mean([e[0] for e in episodes])),
                         ep_length=float(np.mean([e[1] for e in episodes])),
                         success=float(np.mean([e[2] for e in episodes])))
            history.append(m)
            if writer is not None and k % log_every == 0:
                for key, v in m.items():
                    writer.add_scalar(f"ppo/{key}", v, ppo.env_steps)
            if on_update is not None and on_update(ppo, m):
                break
    finally:
        if writer is not None:
            writer.close()
    return ppo, history
