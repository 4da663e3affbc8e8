"""Behaviour cloning from demonstration arrays."""
import numpy as np
import pytest
import torch

from vla_rl_ros.algos.bc import bc_loss, train_bc
from vla_rl_ros.algos.networks import DeterministicPolicy, SquashedGaussianActor

torch.set_num_threads(1)


def _demos(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal([5.0, -3.0, 0.0, 100.0], [1.0, 0.1, 2.0, 10.0], size=(n, 4)).astype(np.float32)
    z = (obs - [5.0, -3.0, 0.0, 100.0]) / [1.0, 0.1, 2.0, 10.0]
    act = np.tanh(np.stack([z[:, 0] - 0.5 * z[:, 1], 0.7 * z[:, 2] * z[:, 3]], 1)).astype(np.float32)
    return obs, act


@pytest.mark.parametrize("loss", ["mse", "nll"])
def test_bc_recovers_the_demonstrator_on_raw_observations(loss):
    obs, act = _demos()
    policy = train_bc(obs, act, hidden=(64, 64), steps=600, lr=1e-3, loss=loss, seed=0)
    assert isinstance(policy, DeterministicPolicy) and not policy.training
    assert bool(policy.actor.normalizer.fitted)  # raw SI observations in, normalisation inside
    test_obs, test_act = _demos(500, seed=1)
    with torch.no_grad():
        pred = policy(torch.from_numpy(test_obs)).numpy()
    mse = float(np.mean((pred - test_act) ** 2))
    baseline = float(np.mean((test_act - act.mean(0)) ** 2))
    assert mse < 0.1 * baseline, (mse, baseline)
    assert np.abs(pred).max() <= 1.0
    assert policy.bc_history[-1] < policy.bc_history[0]


def test_bc_is_seeded():
    obs, act = _demos(500)
    a = train_bc(obs, act, hidden=(16,), steps=50, seed=3)
    b = train_bc(obs, act, hidden=(16,), steps=50, seed=3)
    x = torch.from_numpy(obs[:10])
    assert torch.equal(a(x), b(x))


def test_nll_loss_is_finite_on_saturated_actions():
    actor = SquashedGaussianActor(2, 2, hidden=(8,))
    l = bc_loss(actor, torch.zeros(4, 2), torch.tensor([[1.0, -1.0]] * 4), "nll")
    assert torch.isfinite(l)


def test_bc_validates_inputs():
    obs, act = _demos(100)
    with pytest.raises(ValueError):
        train_bc(obs, act * 3, steps=1)
    with pytest.raises(ValueError):
        train_bc(obs[:50], act, steps=1)
    bad = obs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        train_bc(bad, act, steps=1)
    with pytest.raises(ValueError):
        train_bc(obs, act, steps=1, loss="l1")
