"""Online SAC loop: learns Pendulum-v1, logs to TensorBoard, ring buffer semantics."""
import glob

import gymnasium as gym
import numpy as np
import torch

from vla_rl_ros.algos.online import ReplayBuffer, default_online_config, train_online
from vla_rl_ros.algos.sac import SACConfig

torch.set_num_threads(1)


def _random_policy_return(episodes=5, seed=10_000):
    env = gym.make("Pendulum-v1")
    env.action_space.seed(seed)
    total = 0.0
    for k in range(episodes):
        env.reset(seed=seed + k)
        done = False
        while not done:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            total += r
            done = term or trunc
    return total / episodes


def test_sac_learns_pendulum(tmp_path):
    """5000 steps (500 random warm-up) of small-network SAC lift the mean return of
    Pendulum-v1 from about -1250 (random or untrained policy) to about -300 (seed 0: -282 with gymnasium
    1.4; 3,000 steps gave -900 there); the test asks for 400 better than random. The online defaults'
    initial temperature (0.1, see ``default_online_config``): from SACConfig's 1.0 this budget is too short
    (alpha is still ~0.5 after 2,500 updates)."""
    cfg = default_online_config(5000, hidden=(64, 64), lr=1e-3, batch_size=128, learning_starts=500)
    sac, hist = train_online("Pendulum-v1", cfg, steps=5000, seed=0, normalize_obs=True, tb_dir=str(tmp_path / "tb"),
                             progress=False, eval_every=5000, eval_episodes=5, log_every=500)
    random_return = _random_policy_return()
    steps, metric = zip(*hist)
    assert steps == (0, 5000)
    assert metric[-1] > random_return + 400, (random_return, hist)
    assert metric[-1] > metric[0] + 400, hist
    assert sac.num_critic_updates == 4501 and sac.num_actor_updates == 4501
    assert bool(sac.actor.normalizer.fitted)  # fitted on the warm-up data
    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))


def test_replay_ring_buffer_wraps_and_samples():
    buf = ReplayBuffer(4, 2, 1)
    for i in range(6):
        buf.add(np.full(2, i), np.full(1, i / 10), float(i), np.full(2, i + 1), i == 5)
    assert buf.size == 4 and buf.pos == 2
    assert sorted(buf.reward.tolist()) == [2.0, 3.0, 4.0, 5.0]  # the two oldest were overwritten
    b = buf.sample(64, np.random.default_rng(0))
    assert b.obs.shape == (64, 2) and b.obs.dtype == torch.float32
    assert torch.equal(b.next_obs, b.obs + 1) and torch.equal(b.done, (b.reward == 5).float())


def test_demos_bc_init_and_symmetric_sampling():
    """With demonstrations and bc_init_steps, the loop clones them first (the policy
    then explores from the cloned behaviour) and every batch is half demos."""
    rng = np.random.default_rng(0)
    n = 1000
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    demos = {"obs": obs, "action": np.full((n, 1), 0.5, np.float32), "reward": np.zeros(n, np.float32),
             "next_obs": obs, "done": np.zeros(n, np.float32)}
    cfg = SACConfig(hidden=(32, 32), lr=1e-3, learning_starts=50, bc_init_steps=300, bc_loss="mse", batch_size=64)
    seen = []
    sac, hist = train_online("Pendulum-v1", cfg, steps=60, seed=1, progress=False, demos=demos,
                             eval_fn=lambda agent: seen.append(agent.act(obs[:100], deterministic=True)) or 0.0)
    assert np.abs(seen[0] - 0.5).max() < 0.1  # cloned before the first evaluation
    assert len(hist) == 2 and sac.num_critic_updates == 11


class _GoalEnv(gym.Env):
    """A tiny goal-conditioned env with a Dict observation (as panda-gym's)."""

    observation_space = gym.spaces.Dict({"desired_goal": gym.spaces.Box(-1, 1, (2,), np.float32),
                                         "observation": gym.spaces.Box(-1, 1, (2,), np.float32)})
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.goal, self.t = self.np_random.uniform(-1, 1, 2), self.np_random.uniform(-1, 1, 2), 0
        return self._obs(), {}

    def _obs(self):
        return {"desired_goal": self.goal.astype(np.float32), "observation": self.pos.astype(np.float32)}

    def step(self, a):
        self.pos, self.t = np.clip(self.pos + 0.1 * np.asarray(a), -1, 1), self.t + 1
        d = float(np.linalg.norm(self.pos - self.goal))
        return self._obs(), -d, d < 0.1, self.t >= 20, {"is_success": d < 0.1}


def test_dict_observations_are_flattened_and_default_config_is_used():
    from vla_rl_ros.algos.online import default_online_config, evaluate, flatten_dict_obs

    calls = []
    sac, hist = train_online(_GoalEnv(), None, steps=300, seed=0, progress=False, eval_every=300,
                             eval_fn=lambda agent: calls.append(1) or 0.0)
    assert (sac.obs_dim, sac.action_dim) == (4, 2)  # desired_goal ++ observation
    assert sac.cfg == default_online_config(300, seed=0)
    assert sac.cfg.init_alpha == 0.1 and sac.cfg.learning_starts == 60
    assert sac.num_critic_updates == 300 - 60 + 1 and len(calls) == 2
    assert np.isfinite(evaluate(sac, _GoalEnv(), episodes=1))
    box = gym.make("Pendulum-v1")
    assert flatten_dict_obs(box) is box
    assert default_online_config(100_000).learning_starts == 1000 and default_online_config(100, utd=3).utd == 3
