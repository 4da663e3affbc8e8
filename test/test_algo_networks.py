"""Networks: tanh-squashed Gaussian log-prob, batched critic ensemble, normaliser."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vla_rl_ros.algos.networks import (
    DeterministicPolicy,
    EnsembleCritic,
    ObsNormalizer,
    SquashedGaussianActor,
    squashed_log_prob,
)

torch.set_num_threads(1)


def test_squashed_log_prob_matches_change_of_variables_numerically():
    """log pi(a) must equal log N(atanh a) + log |d atanh(a)/da| with the Jacobian
    taken by finite differences, and the density must integrate to 1 over (-1, 1)."""
    mean = torch.tensor([[0.3]], dtype=torch.float64)
    log_std = torch.tensor([[math.log(0.7)]], dtype=torch.float64)
    a = torch.linspace(-0.999, 0.999, 4001, dtype=torch.float64).reshape(-1, 1)
    u = torch.atanh(a)
    logp = squashed_log_prob(u, mean, log_std)

    h = 1e-6
    dudA = (torch.atanh(a + h) - torch.atanh(a - h)) / (2 * h)  # numeric Jacobian of the inverse map
    normal = torch.distributions.Normal(mean, log_std.exp())
    expected = normal.log_prob(u).sum(-1) + torch.log(dudA).sum(-1)
    assert torch.allclose(logp, expected, atol=1e-6)

    # Density integrates to ~1 (the tails beyond |a| = 0.999 hold almost no mass here).
    dens = logp.exp()
    integral = torch.trapezoid(dens, a.squeeze(-1))
    tail = normal.cdf(torch.atanh(torch.tensor(-0.999, dtype=torch.float64))) + 1 - normal.cdf(
        torch.atanh(torch.tensor(0.999, dtype=torch.float64)))
    assert abs(float(integral + tail.squeeze()) - 1.0) < 1e-3


def test_log_prob_is_stable_near_the_bounds():
    u = torch.tensor([[25.0, -25.0]])
    lp = squashed_log_prob(u, torch.zeros(1, 2), torch.zeros(1, 2))
    assert torch.isfinite(lp).all()  # the naive log(1 - tanh(u)^2 + 1e-6) would clip here
    # For large |u|: log(1 - tanh^2 u) = log(4) - 2|u| + O(e^{-2|u|})
    expected = (-0.5 * u.pow(2) - 0.5 * math.log(2 * math.pi) - (math.log(4) - 2 * u.abs())).sum(-1)
    assert torch.allclose(lp, expected, atol=1e-4)


def test_actor_sample_log_prob_and_deterministic_mode():
    torch.manual_seed(0)
    actor = SquashedGaussianActor(5, 3, hidden=(32, 32))
    obs = torch.randn(64, 5)
    g = torch.Generator().manual_seed(3)
    a, logp = actor(obs, generator=g)
    assert a.shape == (64, 3) and logp.shape == (64,)
    assert (a.abs() < 1).all()
    # The sampler's log-prob (computed from the noise) equals the density evaluated at the action.
    assert torch.allclose(logp, actor.log_prob(obs, a), atol=1e-3)
    # Same generator state -> same sample; deterministic mode is tanh(mean).
    g2 = torch.Generator().manual_seed(3)
    assert torch.equal(actor(obs, generator=g2)[0], a)
    mean, _ = actor.dist_params(obs)
    det, _ = actor(obs, deterministic=True)
    assert torch.equal(det, torch.tanh(mean))
    assert torch.equal(DeterministicPolicy(actor)(obs), torch.tanh(mean))


def test_conditioned_actor_requires_and_uses_condition():
    actor = SquashedGaussianActor(4, 2, hidden=(16,), cond_dim=3)
    obs = torch.randn(8, 4)
    with pytest.raises(ValueError):
        actor(obs)
    c1, c2 = torch.eye(3)[[0] * 8], torch.eye(3)[[2] * 8]
    assert not torch.allclose(actor.deterministic(obs, c1), actor.deterministic(obs, c2))


@pytest.mark.parametrize("layernorm", [False, True])
def test_ensemble_critic_equals_independent_mlps(layernorm):
    """Every member of the batched ensemble is exactly the MLP it claims to be."""
    torch.manual_seed(1)
    E, obs_dim, act_dim, hidden = 3, 7, 2, (16, 12)
    critic = EnsembleCritic(obs_dim, act_dim, hidden, n_critics=E, layernorm=layernorm)
    critic.normalizer.set_stats(np.linspace(-1, 1, obs_dim), np.linspace(0.5, 2, obs_dim))
    if layernorm:  # make the affine non-trivial
        with torch.no_grad():
            for p in [*critic.ln_weights, *critic.ln_biases]:
                p.add_(torch.randn_like(p) * 0.1)
    obs, act = torch.randn(10, obs_dim), torch.rand(10, act_dim) * 2 - 1
    q = critic(obs, act)
    assert q.shape == (E, 10)

    x = torch.cat([(obs - critic.normalizer.mean) / critic.normalizer.std, act], -1)
    for i in range(E):
        h = F.linear(x, critic.w_in[i], critic.b_in[i, :, 0])
        layers = [(critic.w_in[i], critic.b_in[i])] + [(w[i], b[i]) for w, b in zip(critic.w_hidden, critic.b_hidden)]
        for j in range(len(layers)):
            if j > 0:
                h = F.linear(h, layers[j][0], layers[j][1][:, 0])
            if layernorm:
                h = F.layer_norm(h, (h.shape[-1],), critic.ln_weights[j][i, :, 0], critic.ln_biases[j][i, :, 0])
            h = F.relu(h)
        qi = F.linear(h, critic.w_out[i], critic.b_out[i, 0])[:, 0]
        assert torch.allclose(q[i], qi, atol=1e-5), i


def test_ensemble_detached_params_give_action_gradients_only():
    critic = EnsembleCritic(4, 2, (8, 8))
    obs, act = torch.randn(5, 4), torch.randn(5, 2, requires_grad=True)
    critic(obs, act, detach_params=True).sum().backward()
    assert act.grad is not None and act.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())
    # Same values as the attached forward.
    assert torch.equal(critic(obs, act, detach_params=True), critic(obs, act))


def test_ensemble_members_are_initialised_independently():
    critic = EnsembleCritic(4, 2, (8, 8), n_critics=2)
    assert not torch.equal(critic.w_hidden[0][0], critic.w_hidden[0][1])


def test_obs_normalizer_fit_floor_and_clip():
    n = ObsNormalizer(3, min_std=0.01, clip=5.0)
    assert not bool(n.fitted)
    data = np.stack([np.random.default_rng(0).normal(2.0, 3.0, 1000), np.full(1000, 7.0), np.arange(1000.0)], 1)
    n.fit(data)
    assert bool(n.fitted)
    assert np.allclose(n.mean.numpy(), data.mean(0), rtol=1e-5)
    assert n.std[1] == pytest.approx(0.01)  # constant feature: floored, not zero
    out = n(torch.tensor([[2.0, 7.5, 499.5]]))
    assert out[0, 1] == 5.0  # (7.5 - 7) / 0.01 = 50 -> clipped
    with pytest.raises(ValueError):
        n.set_stats([0, 0, np.nan], [1, 1, 1])


def test_fused_critic_backward_passes_gradcheck():
    """The hand-written backward of the LayerNorm-free ensemble equals finite differences."""
    from vla_rl_ros.algos.networks import _StackedReluMLP

    torch.manual_seed(2)
    E, B, d_in, hs = 2, 5, 4, (6, 5, 3)
    args = [torch.randn(B, d_in), torch.randn(E, hs[0], d_in), torch.randn(E, hs[0], 1),
            torch.randn(E, 1, hs[-1]), torch.randn(E, 1, 1)]
    for a, b in zip(hs[:-1], hs[1:]):
        args += [torch.randn(E, b, a), torch.randn(E, b, 1)]
    args = [t.double().requires_grad_(True) for t in args]
    assert torch.autograd.gradcheck(_StackedReluMLP.apply, args, eps=1e-6, atol=1e-5)
    # weights detached (the actor-loss case): only the input gets a gradient
    x = args[0].detach().clone().requires_grad_(True)
    out = _StackedReluMLP.apply(x, *[t.detach() for t in args[1:]])
    out.sum().backward()
    ref = torch.autograd.grad(_StackedReluMLP.apply(args[0], *args[1:]).sum(), args[0])[0]
    torch.testing.assert_close(x.grad, ref)


def test_fused_and_autograd_critic_paths_agree():
    torch.manual_seed(3)
    c = EnsembleCritic(5, 2, (16, 16, 8), n_critics=3)
    obs, act = torch.randn(9, 5), torch.randn(9, 2, requires_grad=True)
    w = torch.randn(3, 9)
    results = []
    for fused in (True, False):
        c.fused = fused
        q = c(obs, act)
        results.append((q, torch.autograd.grad((q * w).sum(), [act, *c.parameters()])))
        qd = c(obs, act, detach_params=True)
        torch.testing.assert_close(torch.autograd.grad((qd * w).sum(), act)[0], results[-1][1][0])
    (q1, g1), (q2, g2) = results
    torch.testing.assert_close(q1, q2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
