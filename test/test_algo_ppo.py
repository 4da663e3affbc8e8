"""PPO: GAE on a hand-built trajectory (termination, truncation bootstrapping, rollout end), the clipped
surrogate's gradient by hand, the clipped value loss, observation normalisation inside the exported ONNX
model, seeded determinism, a short seeded run on the twin's reach beating random actions, and the CLI."""
import argparse

import gymnasium as gym
import numpy as np
import onnxruntime as ort
import pytest
import torch

from vla_rl_ros.algos.export import INPUT_NAME, OUTPUT_NAME, export_onnx, read_model_metadata
from vla_rl_ros.algos.ppo import (PPO, PPOConfig, RunningMeanStd, clipped_surrogate, clipped_value_loss, gae,
                                  make_vector_env, train_ppo)
from vla_rl_ros.spec import Spec

torch.set_num_threads(1)


def test_gae_by_hand_with_termination_truncation_and_rollout_end():
    # env 0 terminates at t=1; env 1 is truncated at t=1 (time limit) with V(final obs) = 8; both run on after
    # the reset and the rollout ends at t=3 without an episode end (bootstrap from V(s_4)).
    g, lam = 0.5, 0.5
    rewards = np.array([[1, 1], [2, 1], [3, 1], [4, 1]], np.float32)
    values = np.array([[10, 2], [20, 2], [30, 2], [40, 2]], np.float32)
    next_values = np.array([[20, 2], [99, 8], [40, 2], [50, 4]], np.float32)  # 99: a terminal's, never used
    terminated = np.array([[0, 0], [1, 0], [0, 0], [0, 0]], np.float32)
    dones = np.array([[0, 0], [1, 1], [0, 0], [0, 0]], np.float32)
    adv, ret = gae(rewards, values, next_values, terminated, dones, g, lam)
    # env 0: deltas 1+10-10=1, 2-20=-18, 3+20-30=-7, 4+25-40=-11
    #        A3=-11, A2=-7+0.25*-11=-9.75, A1=-18 (episode ended), A0=1+0.25*-18=-3.5
    # env 1: deltas 1+1-2=0, 1+4-2=3 (truncated: bootstraps from 8), 1+1-2=0, 1+2-2=1
    #        A3=1, A2=0+0.25*1=0.25, A1=3, A0=0+0.25*3=0.75
    want = np.array([[-3.5, 0.75], [-18.0, 3.0], [-9.75, 0.25], [-11.0, 1.0]])
    assert np.allclose(adv, want)
    assert np.allclose(ret, want + values)


def test_clipped_surrogate_gradient_vanishes_outside_the_clip_range():
    ratios = torch.tensor([0.5, 0.9, 1.1, 1.5] * 2, dtype=torch.float64)
    adv = torch.tensor([1.0] * 4 + [-1.0] * 4, dtype=torch.float64)
    logp = ratios.log().requires_grad_(True)
    loss = clipped_surrogate(logp, torch.zeros(8, dtype=torch.float64), adv, clip=0.2)
    loss.backward()
    n = 8
    # d/dlogp of -rho A / n is -rho A / n, unless min() picked the clipped (constant) branch:
    # A > 0 and rho > 1.2 (index 3); A < 0 and rho < 0.8 (index 4)
    want = -ratios * adv / n
    want[3] = 0.0
    want[4] = 0.0
    assert torch.allclose(logp.grad, want)
    # and the loss value: the pessimistic minimum
    vals = torch.min(ratios * adv, ratios.clamp(0.8, 1.2) * adv)
    assert float(loss.detach()) == pytest.approx(float(-vals.mean()))


def test_clipped_value_loss_by_hand():
    v = torch.tensor([1.0, 3.0])
    old = torch.tensor([0.0, 2.0])
    ret = torch.tensor([2.0, 2.0])
    # sample 0: unclipped (1-2)^2=1, clipped old+0.2=0.2 -> (0.2-2)^2=3.24, max 3.24
    # sample 1: unclipped (3-2)^2=1, clipped 2.2 -> 0.04, max 1
    assert float(clipped_value_loss(v, old, ret, 0.2)) == pytest.approx(0.5 * (3.24 + 1.0) / 2)
    assert float(clipped_value_loss(v, old, ret, None)) == pytest.approx(0.5 * (1.0 + 1.0) / 2)


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(500, 4))
    rms = RunningMeanStd((4,), epsilon=0.0 + 1e-12)
    for chunk in np.array_split(x, 7):
        rms.update(chunk)
    assert np.allclose(rms.mean, x.mean(0)) and np.allclose(rms.var, x.var(0))


def test_onnx_model_carries_the_observation_normalisation(tmp_path):
    spec = Spec(task="reach")
    ppo = PPO(spec.obs_dim, spec.action_dim, PPOConfig(seed=0))
    rng = np.random.default_rng(0)
    ppo.obs_rms.update(rng.normal(0.5, 0.3, size=(1000, spec.obs_dim)))
    ppo._sync_normalizer()
    with torch.no_grad():  # a non-trivial mean head (the 0.01 output init is nearly constant)
        ppo.actor.mu[-1].weight.mul_(100.0)
    path = tmp_path / "ppo.onnx"
    export_onnx(ppo.policy_module(), spec, path, {"algorithm": "ppo"})
    obs = rng.normal(0.5, 0.6, size=(11, spec.obs_dim)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([OUTPUT_NAME], {INPUT_NAME: obs})[0]
    x = np.clip((obs - ppo.obs_rms.mean) / np.sqrt(ppo.obs_rms.var + 1e-8), -10, 10).astype(np.float32)
    with torch.no_grad():
        want = ppo.actor.mu(torch.from_numpy(x)).clamp(-1, 1).numpy()
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(got - ppo.act(obs)).max() < 1e-5
    assert read_model_metadata(path)[1]["algorithm"] == "ppo"
    # policy_node's loader (spec check, probe inference) takes it and acts like the model
    from vla_rl_ros.runtime.onnx_policy import load_validated

    node_policy = load_validated(str(path), None, spec)
    assert np.abs(node_policy.act(obs[0]) - got[0]).max() < 1e-5


def _pendulum_history(seed):
    envs = make_vector_env(lambda: gym.wrappers.RescaleAction(gym.make("Pendulum-v1"), -1.0, 1.0), 2,
                           asynchronous=False)
    try:
        ppo, h = train_ppo(envs, PPOConfig(n_envs=2, n_steps=64, batch_size=32, n_epochs=2, seed=seed), 256)
    finally:
        envs.close()
    return ppo, h


def test_seeded_runs_are_identical():
    (a, ha), (b, hb) = _pendulum_history(3), _pendulum_history(3)
    strip = lambda h: [{k: v for k, v in m.items() if k != "fps"} for m in h]  # noqa: E731
    assert strip(ha) == strip(hb)
    assert all(torch.equal(p, q) for p, q in zip(a.actor.parameters(), b.actor.parameters()))


def _reach_returns(policy, seeds):
    env = gym.make("VlaRlRos/PandaReach-v0")
    rng = np.random.default_rng(0)
    out = []
    for s in seeds:
        obs, _ = env.reset(seed=s)
        total, done = 0.0, False
        while not done:
            a = policy(obs) if policy is not None else rng.uniform(-1, 1, env.action_space.shape)
            obs, r, term, trunc, _ = env.step(a)
            total, done = total + r, term or trunc
        out.append(total)
    env.close()
    return float(np.mean(out))


def test_short_seeded_ppo_run_on_reach_beats_random_actions():
    import vla_rl_ros.twin  # noqa: F401

    envs = make_vector_env("VlaRlRos/PandaReach-v0", 2, asynchronous=False)
    try:
        ppo, hist = train_ppo(envs, PPOConfig(n_envs=2, n_steps=512, seed=0), 6144)
    finally:
        envs.close()
    seeds = range(5000, 5010)
    trained, random = _reach_returns(ppo.act, seeds), _reach_returns(None, seeds)
    assert trained > random + 0.1, (trained, random)
    assert hist[-1]["ep_return"] > hist[0]["ep_return"]


def test_train_cli_ppo_on_the_twin_writes_an_onnx_model(tmp_path):
    from vla_rl_ros.commands.train import run as train

    out = tmp_path / "ppo.onnx"
    args = argparse.Namespace(algo="ppo", env="VlaRlRos/PandaReach-v0", data=None, steps=256, out=str(out), seed=0,
                              tb=str(tmp_path / "tb"), n_envs=2, n_steps=64, eval_episodes=0, params=None)
    assert train(args) == 0
    spec, lineage, version = read_model_metadata(out)
    assert spec.task == "reach" and lineage["algorithm"] == "ppo" and lineage["training_steps"] == 256
    assert '"n_envs": 2' in lineage["config"]
