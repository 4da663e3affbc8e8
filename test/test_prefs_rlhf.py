"""`reward: learned` (newest / pinned, ONNX only), relabelling at sampling time, and RLHF's KL anchor."""
import numpy as np
import pytest
import torch

from prefs_fixtures import SPEC, make_reach_run
from vla_rl_ros.algos.networks import SquashedGaussianActor
from vla_rl_ros.algos.sac import SACConfig
from vla_rl_ros.buffer import open_replay
from vla_rl_ros.preferences.oracle import Oracle
from vla_rl_ros.preferences.reward_model import (OnnxRewardModel, RewardTrainConfig, labelled_pairs,
                                                 save_reward_model, train_reward_model)
from vla_rl_ros.preferences.rlhf import RLHFSAC, learned_reward_sampler
from vla_rl_ros.preferences.segments import EpisodeIndex, random_pairs
from vla_rl_ros.preferences.store import PreferenceStore
from vla_rl_ros.rewards import make_reward

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_with_models(tmp_path_factory):
    run = make_reach_run(tmp_path_factory.mktemp("runs"), n_episodes=20, ep_len=20, seed=3)
    index = EpisodeIndex.from_paths([run.path])
    oracle = Oracle(seed=0)
    with PreferenceStore(run.path) as store:
        for a, b in random_pairs(index, 60, 10, np.random.default_rng(0)):
            label, info = oracle.label(index.data(a), index.data(b))
            store.add(a, b, label, oracle.name, info=info)
        batch, used = labelled_pairs(store.labels(trainable=True), index)
    versions = []
    for seed in (0, 1):
        m, _ = train_reward_model(batch, RewardTrainConfig(steps=30, seed=seed))
        versions.append(save_reward_model(m, run.models_dir, SPEC, {"training_steps": 30}))
    return run, versions


def test_learned_reward_newest_pinned_and_refresh(run_with_models):
    run, (v1, v2) = run_with_models
    fn = make_reward({"name": "learned", "params": {"models_dir": str(run.models_dir)}}, SPEC)
    assert fn.version == v2.version and fn.config["params"]["version"] == v2.version
    pinned = make_reward({"name": "learned", "params": {"models_dir": str(run.models_dir), "version": v1.version}}, SPEC)
    assert pinned.version == v1.version
    again = make_reward(fn.config, SPEC)  # a stored config rebuilds the same reward
    assert again.version == v2.version
    rng = np.random.default_rng(0)
    o = rng.normal(size=(5, SPEC.obs_dim)).astype(np.float32)
    a = rng.uniform(-1, 1, (5, SPEC.action_dim)).astype(np.float32)
    # a cost: the model's r in [-1, 1] less the offset (1 by default), so ending an episode never loses value
    np.testing.assert_allclose(fn(o, a, o), OnnxRewardModel(v2.path)(o, a) - 1.0, atol=1e-6)
    assert isinstance(fn(o[0], a[0], o[0]), float) and np.all((fn(o, a, o) <= 0) & (fn(o, a, o) >= -2))
    raw = make_reward({"name": "learned", "params": {"models_dir": str(run.models_dir), "offset": 0.0}}, SPEC)
    np.testing.assert_allclose(raw(o, a, o), OnnxRewardModel(v2.path)(o, a), atol=1e-6)
    assert not np.allclose(pinned(o, a, o), fn(o, a, o))
    assert fn.refresh() is False and pinned.refresh() is False
    # success stays the task's
    g = np.zeros(SPEC.obs_dim)
    assert fn.is_success(g) is True
    with pytest.raises(ValueError):
        make_reward({"name": "learned", "params": {}}, SPEC)


def test_relabel_at_sampling_time_leaves_the_store(run_with_models):
    run, (_, v2) = run_with_models
    replay = open_replay([run.path])
    fn = make_reward({"name": "learned", "params": {"models_dir": str(run.models_dir)}}, SPEC)
    sample = learned_reward_sampler(lambda: replay.sample(64, demo_ratio=0.0), fn)
    b = sample()
    want = OnnxRewardModel(v2.path)(b["obs"].numpy(), b["action"].numpy()) - 1.0  # the default offset
    np.testing.assert_allclose(b["reward"].numpy(), want, atol=1e-6)
    assert b["reward"].dtype == torch.float32 and b["reward"].shape == (64,)
    # the recorded reward (reach_cost, <= -0.1 a tick) is kept beside it, and the store is unchanged
    assert float(b["recorded_reward"].max()) <= -0.1 + 1e-6
    replay.close()
    again = open_replay([run.path])
    assert float(again.sample(256, demo_ratio=0.0)["reward"].max()) <= -0.1 + 1e-6
    again.close()


def _train(beta, steps=150):
    torch.manual_seed(0)
    od, ad = 6, 2
    ref = SquashedGaussianActor(od, ad, (32, 32))
    sac = RLHFSAC(od, ad, ref, beta=beta, config=SACConfig(hidden=(32, 32), batch_size=64, seed=0,
                                                            autotune_alpha=False, init_alpha=0.01))
    g = torch.Generator().manual_seed(1)

    def sample():
        obs = torch.randn(64, od, generator=g)
        act = torch.rand(64, ad, generator=g) * 2 - 1
        return {"obs": obs, "action": act, "reward": act[:, 0] * 5.0, "next_obs": obs, "done": torch.ones(64)}

    m = {}
    for _ in range(steps):
        m = sac.train_step(sample)
    obs = torch.randn(256, od, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        drift = (sac.actor.dist_params(obs)[0] - ref.dist_params(obs)[0]).abs().mean().item()
        a0 = sac.actor.deterministic(obs)[:, 0].mean().item()
    return drift, a0, m


def test_kl_anchor_keeps_the_actor_near_the_reference():
    d0, a_free, m0 = _train(beta=0.0)
    d5, a_anchored, m5 = _train(beta=5.0)
    assert "kl_ref" in m5 and float(m0["kl_ref"]) == float(m0["kl_ref"])  # reported in both
    assert a_free > 0.5  # the reward pays action[0]: plain SAC pushes it up
    assert d5 < 0.5 * d0  # the anchor holds the actor near pi_ref
