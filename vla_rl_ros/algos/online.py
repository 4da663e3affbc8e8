"""A plain online SAC loop over any gymnasium environment with Box spaces.

Used for algorithm sanity checks (Pendulum, MuJoCo-like tasks) and for training
in the twin without the ROS graph. The durable, crash-safe buffer of the robot
pipeline lives in :mod:`vla_rl_ros.buffer`; this loop keeps a minimal in-memory
ring buffer of numpy arrays.

Loop: ``learning_starts`` steps of uniform random actions (or of the policy when
it was behaviour-cloned from demonstrations first), then per environment step
one :meth:`SAC.train_step` (``utd`` critic updates + one actor/temperature
update). Transitions store ``done = terminated``; a time-limit truncation ends
the episode but still bootstraps. Actions are produced in ``[-1, 1]`` and mapped
affinely to the environment's bounds.

With demonstrations (``demos``), batches mix ``demo_ratio`` demo transitions
with online ones (RLPD's symmetric sampling) and, if ``bc_init_steps > 0``, the
actor is behaviour-cloned on them before interaction.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Mapping

import gymnasium as gym
import numpy as np
import torch

from .sac import SAC, Batch, SACConfig, concat_batches, metrics_to_floats


class ReplayBuffer:
    """Fixed-capacity ring buffer of float32 transitions."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int) -> None:
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.action = np.zeros((self.capacity, action_dim), np.float32)
        self.reward = np.zeros(self.capacity, np.float32)
        self.done = np.zeros(self.capacity, np.float32)
        self.pos = 0
        self.size = 0

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, done: bool) -> None:
        i = self.pos
        self.obs[i], self.action[i], self.reward[i], self.next_obs[i], self.done[i] = obs, action, reward, next_obs, done
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def add_columns(self, cols: Mapping[str, np.ndarray]) -> None:
        """Add each row of ``obs, action, reward, next_obs, terminated`` columns (e.g. hindsight relabellings,
        :func:`twin_hindsight`); nothing for empty ones."""
        for i in range(len(cols.get("reward", ()))):
            self.add(cols["obs"][i], cols["action"][i], float(cols["reward"][i]), cols["next_obs"][i],
                     bool(cols["terminated"][i]))

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        i = rng.integers(0, self.size, n)
        return Batch(*(torch.from_numpy(x[i]) for x in (self.obs, self.action, self.reward, self.next_obs, self.done)))

    @classmethod
    def from_arrays(cls, d: Mapping[str, np.ndarray]) -> "ReplayBuffer":
        """Build a full buffer from arrays ``obs, action, reward, next_obs, done``."""
        obs = np.asarray(d["obs"], np.float32)
        buf = cls(len(obs), obs.shape[1], np.asarray(d["action"]).shape[1])
        buf.obs[:] = obs
        buf.action[:] = d["action"]
        buf.reward[:] = np.asarray(d["reward"]).reshape(-1)
        buf.next_obs[:] = d["next_obs"]
        buf.done[:] = np.asarray(d["done"]).reshape(-1)
        buf.size = len(obs)
        return buf


def sample_mixed(replay: ReplayBuffer, demos: ReplayBuffer | None, batch_size: int, n_demo: int,
                 rng: np.random.Generator) -> Batch:
    """A batch of ``batch_size`` rows, ``n_demo`` of them from ``demos`` (RLPD's symmetric sampling), marked in
    ``demo`` for a BC term; with ``n_demo`` 0 (or no demos), all from ``replay``, unmarked."""
    online = replay.sample(batch_size - n_demo, rng)
    if not n_demo or demos is None:
        return online
    demo = demos.sample(n_demo, rng)
    return concat_batches(online._replace(demo=torch.zeros(len(online.obs), dtype=torch.bool)),
                          demo._replace(demo=torch.ones(n_demo, dtype=torch.bool)))


def flatten_dict_obs(env: gym.Env) -> gym.Env:
    """Wrap an environment with a ``Dict`` (goal-conditioned) observation space in
    gymnasium's :class:`~gymnasium.wrappers.FlattenObservation`; others are returned as is.

    The flat vector is the sub-spaces' concatenation in key order (gymnasium's
    ``flatten``), e.g. panda-gym's ``achieved_goal, desired_goal, observation``.
    """
    if isinstance(env.observation_space, gym.spaces.Dict):
        from gymnasium.wrappers import FlattenObservation

        return FlattenObservation(env)
    return env


def _box_dims(env: gym.Env) -> tuple[int, int, np.ndarray, np.ndarray]:
    os_, as_ = env.observation_space, env.action_space
    if not isinstance(os_, gym.spaces.Box) or len(os_.shape) != 1:
        raise TypeError(f"need a flat Box observation space, got {os_}")
    if not isinstance(as_, gym.spaces.Box) or len(as_.shape) != 1:
        raise TypeError(f"need a flat Box action space, got {as_}")
    low, high = as_.low.astype(np.float64), as_.high.astype(np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError("the action space must be bounded")
    return os_.shape[0], as_.shape[0], low, high


ONLINE_INIT_ALPHA = 0.1
"""Initial temperature of :func:`default_online_config` (see there)."""
ONLINE_LEARNING_STARTS = 1000
"""Cap on the uniform-random warm-up of :func:`default_online_config`."""


def default_online_config(steps: int, **overrides) -> SACConfig:
    """The SAC settings for learning from scratch online (``train_online``'s and the
    ``train --env`` verb's defaults): :class:`SACConfig` (SB3's / the SAC paper's
    hyper-parameters) except for two settings that depend on the step budget.

    * ``init_alpha = 0.1``, still auto-tuned towards ``-action_dim``: the
      initial temperature of Yarats & Kostrikov's pytorch_sac, SAC-AE and
      DrQ, instead of SB3's 1.0. Two effects make 1.0 fail on tasks whose
      value changes by ~0.1-1 per unit of action (distance penalties, -1/0
      sparse rewards). (1) The tanh-squashed Gaussian's entropy bonus
      ``-alpha log pi`` contains ``alpha sum log(1 - tanh(u)^2)``, whose
      gradient pulls every pre-tanh mean ``u`` back to 0 with a force
      ``2 alpha tanh(u)`` against the critic's ``dQ/da``: the deterministic
      action settles near ``a ~ dQ/da / (2 alpha)``, a policy that crawls and
      times out. (2) Alpha cannot fall fast enough by itself: it is learnt in
      log space with Adam, whose steps are about ``lr`` = 3e-4 whatever the
      gradient, so from 1.0 it needs ``ln 10 / 3e-4`` ~ 7,700 updates just to
      reach 0.1 (the twin's reach, seed ``reach`` reward, 5,000 steps: 16%
      from 1.0, 86-100% from 0.1 (3 seeds); panda-gym's PandaReachDense-v3: SB3's
      defaults 8-10%, these 100%; ``docs/bench/sac_generic.md``). Lower
      starts (0.01) move the trade-off the other way (76-84% on the dense
      reach); where the entropy falls below its target the tuning raises alpha.
      The same force is why the reward's *scale* matters on the twin's reach,
      whose default reward is therefore ``reach_cost``
      (:class:`~vla_rl_ros.rewards.finishing.ReachCost`: ``-(10 d + 0.1)`` per
      tick, ``+10`` on the terminal success). With ``reach_task`` (telescoping
      potential + terminal bonus, the reach default before) only the time an
      action saves is left between two actions (~0.02 per tick at gamma 0.99):
      0-6% after 5,000 steps from 0.1 (0, 0, 0% with hindsight), ~40-55% from
      0.01 or 0.001; the deterministic policy stopped 5-10 cm from the goal,
      just outside the tolerance. ``reach_cost`` pays for every centimetre on
      every tick: with hindsight through the CLI (``vla-rl-ros train --algo sac
      --env VlaRlRos/PandaReach-v0 --steps 5000``, 50 seeded episodes) 100% on
      seeds 0-2 (``docs/bench/sac_twin_her.md``) and 3-4; at a tenth of that
      scale (``-(d + 0.01)``, ``+1``) 94, 82, 98%, its failures stalling 5-7.5
      cm from the goal with ~0.5 mm steps; at 0.3 and 3 times it 100% on every
      seed (exploratory runs, see ``ReachCost``). These SAC settings are the
      same for every env; only the reach's reward changed.
    * ``learning_starts = min(1000, steps // 5)``: uniform random actions for at
      most 1,000 steps (between SB3's 100 and CleanRL's 5,000) and at most a
      fifth of a short run, so that most of the budget is learning.

    ``overrides`` are passed on to :class:`SACConfig`.
    """
    kw = dict(init_alpha=ONLINE_INIT_ALPHA, learning_starts=min(ONLINE_LEARNING_STARTS, max(int(steps) // 5, 1)))
    kw.update(overrides)
    return SACConfig(**kw)


def evaluate(sac: SAC, env: gym.Env, episodes: int = 5, seed: int = 0) -> float:
    """Mean undiscounted return of the deterministic policy over ``episodes`` episodes."""
    env = flatten_dict_obs(env)
    _, _, low, high = _box_dims(env)
    total = 0.0
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done = False
        while not done:
            a = sac.act(obs, deterministic=True)
            obs, r, term, trunc, _ = env.step((low + (a + 1.0) * 0.5 * (high - low)).astype(env.action_space.dtype))
            total += float(r)
            done = term or trunc
    return total / episodes


def train_online(
    env_id_or_env: str | gym.Env,
    algo_config: SACConfig | None = None,
    steps: int = 100_000,
    seed: int = 0,
    eval_fn: Callable[[SAC], float] | None = None,
    tb_dir: str | None = None,
    progress: bool = True,
    *,
    eval_every: int = 5000,
    eval_episodes: int = 5,
    buffer_size: int = 1_000_000,
    normalize_obs: bool = False,
    demos: Mapping[str, np.ndarray] | None = None,
    log_every: int = 1000,
    hindsight: Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]] | None = None,
) -> tuple[SAC, list[tuple[int, float]]]:
    """Train SAC online on a gymnasium environment.

    Args:
        env_id_or_env: an id for ``gym.make`` or an environment instance; a
            ``Dict`` observation space (goal-conditioned envs such as
            panda-gym's) is flattened with :func:`flatten_dict_obs`, so the
            returned agent takes the flattened vector.
        algo_config: :class:`SACConfig` (its ``seed`` is replaced by ``seed``;
            ``learning_starts``, ``utd``, ``demo_ratio``, ``bc_init_steps`` apply).
            Default: :func:`default_online_config` for ``steps``.
        steps: environment steps.
        seed: seeds the networks, the environment, warm-up actions and sampling.
        eval_fn: ``eval_fn(sac) -> float`` (higher is better). Default: mean
            deterministic return over ``eval_episodes`` on a fresh copy of the
            environment (``gym.make(env.spec)``) or, for an environment without a
            spec, the mean return of the last 10 training episodes.
        tb_dir: TensorBoard log directory (None: no logging).
        progress: show a tqdm progress bar.
        eval_every: evaluate every this many environment steps (also at step 0
            and at the end).
        buffer_size: replay capacity.
        normalize_obs: fit the (fixed) observation normaliser on the warm-up data
            when learning starts (on the demonstrations, if any, before BC). Off by
            default: statistics of random warm-up actions describe a tiny region
            around the start pose, and on the twin's reach, SAC with them reached
            ≤ 65 % in 5,000 steps against 90-100 % without (docs/BENCHMARKS.md).
        demos: optional demonstration transitions, arrays ``obs, action (in
            [-1, 1]), reward, next_obs, done``.
        log_every: TensorBoard/progress-bar metrics every this many steps.
        hindsight: ``hindsight(obs [L+1, d], actions [L, a]) -> columns`` called on every finished episode;
            the transitions it returns (``obs, action, reward, next_obs, terminated``) are added to the replay
            beside the real ones (HER; :func:`twin_hindsight` for the twin's goal-conditioned envs).

    Returns:
        ``(sac, history)`` with ``history`` a list of ``(env_steps, metric)``.
    """
    env = gym.make(env_id_or_env) if isinstance(env_id_or_env, str) else env_id_or_env
    env = flatten_dict_obs(env)
    obs_dim, act_dim, low, high = _box_dims(env)
    cfg = dataclasses.replace(algo_config if algo_config is not None else default_online_config(steps), seed=seed)
    sac = SAC(obs_dim, act_dim, cfg)
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    replay = ReplayBuffer(min(buffer_size, max(steps, 1)), obs_dim, act_dim)
    demo_buf = ReplayBuffer.from_arrays(demos) if demos is not None else None
    n_demo = int(round(cfg.batch_size * cfg.demo_ratio)) if demo_buf is not None else 0

    def sample() -> Batch:
        return sample_mixed(replay, demo_buf, cfg.batch_size, n_demo, rng)

    recent_returns: list[float] = []
    if eval_fn is None:
        if getattr(env, "spec", None) is not None:
            eval_env = flatten_dict_obs(gym.make(env.spec))

            def eval_fn(agent: SAC) -> float:
                return evaluate(agent, eval_env, eval_episodes, seed=seed + 10_000)
        else:
            def eval_fn(agent: SAC) -> float:
                return float(np.mean(recent_returns[-10:])) if recent_returns else float("nan")

    writer = None
    if tb_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(tb_dir)

    policy_acts = False
    if demo_buf is not None:
        if normalize_obs:
            sac.fit_obs_normalizer(demo_buf.obs)
        if cfg.bc_init_steps > 0:
            sac.bc_pretrain(lambda: demo_buf.sample(cfg.batch_size, rng), steps=cfg.bc_init_steps)
            policy_acts = True  # explore with the cloned policy rather than uniformly

    history: list[tuple[int, float]] = [(0, float(eval_fn(sac)))]
    if writer is not None:
        writer.add_scalar("eval/metric", history[-1][1], 0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="sac", unit="step", dynamic_ncols=True)

    obs, _ = env.reset(seed=seed)
    ep_obs, ep_act = [obs], []
    ep_return, ep_len, t_log, metrics = 0.0, 0, time.perf_counter(), {}
    try:
        for t in range(1, steps + 1):
            if t <= cfg.learning_starts and not policy_acts:
                a = rng.uniform(-1.0, 1.0, act_dim).astype(np.float32)
            else:
                a = sac.act(obs)
            env_a = (low + (a + 1.0) * 0.5 * (high - low)).astype(env.action_space.dtype)
            next_obs, r, term, trunc, _ = env.step(env_a)
            replay.add(obs, a, float(r), next_obs, bool(term))
            ep_return += float(r)
            ep_len += 1
            obs = next_obs
            if hindsight is not None:
                ep_obs.append(next_obs)
                ep_act.append(a)
            if term or trunc:
                if hindsight is not None:
                    replay.add_columns(hindsight(np.asarray(ep_obs), np.asarray(ep_act)))
                recent_returns.append(ep_return)
                if writer is not None:
                    writer.add_scalar("train/episode_return", ep_return, t)
                    writer.add_scalar("train/episode_length", ep_len, t)
                obs, _ = env.reset()
                ep_obs, ep_act = [obs], []
                ep_return, ep_len = 0.0, 0

            if t == cfg.learning_starts and normalize_obs and demo_buf is None:
                sac.fit_obs_normalizer(replay.obs[: replay.size])
            if t >= cfg.learning_starts:
                metrics = sac.train_step(sample)

            if t % log_every == 0 and metrics:
                m = metrics_to_floats(metrics)
                now = time.perf_counter()
                m["updates_per_s"] = log_every * cfg.utd / max(now - t_log, 1e-9)
                t_log = now
                if writer is not None:
                    for k, v in m.items():
                        writer.add_scalar(f"train/{k}", v, t)
                if bar is not None:
                    bar.set_postfix(ret=f"{recent_returns[-1]:.1f}" if recent_returns else "-",
                                    q=f"{m['q_mean']:.1f}", alpha=f"{m.get('alpha', float('nan')):.3f}")
            if t % eval_every == 0 or t == steps:
                if history[-1][0] != t:
                    history.append((t, float(eval_fn(sac))))
                    if writer is not None:
                        writer.add_scalar("eval/metric", history[-1][1], t)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    return sac, history


def twin_hindsight(env: gym.Env, k: int = 4, seed: int = 0) -> Callable[[np.ndarray, np.ndarray], dict] | None:
    """HER for the twin's goal-conditioned envs (:class:`~vla_rl_ros.twin.env.TwinEnv`, whose spec declares where
    the goal is in the observation): each finished episode also counts as up to ``k`` successes for goals it
    reached (:mod:`.hindsight`), rewarded by the env's own reward and success rule. ``None`` for any other env."""
    from .hindsight import hindsight_episodes, relabelled_transitions

    twin = env.unwrapped
    spec = getattr(twin, "spec_", None)
    if spec is None or k <= 0 or not hasattr(twin, "success") or not hasattr(twin, "reward_fn"):
        return None
    low, high = twin.twin.region.goals(spec.task)
    rng = np.random.default_rng(seed)

    def relabel(obs: np.ndarray, actions: np.ndarray) -> dict:
        rel = hindsight_episodes(spec, obs, actions, k=k, tolerance=twin.success.tolerance,
                                 n_consecutive=twin.success.n_consecutive, goal_low=low, goal_high=high, rng=rng)
        return relabelled_transitions(rel, twin.reward_fn)

    return relabel
