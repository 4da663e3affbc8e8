"""SAC: target computation against an explicit numpy formula, losses, temperature, Polyak, UTD, BC init."""
import copy
import math

import numpy as np
import pytest
import torch

from vla_rl_ros.algos.sac import SAC, Batch, SACConfig, as_batch, metrics_to_floats

torch.set_num_threads(1)

OBS, ACT = 3, 2


def _np(t):
    return t.detach().double().numpy()


def _relu(x):
    return np.maximum(x, 0.0)


def _actor_np(sac, obs, eps):
    """Independent numpy re-implementation of the squashed Gaussian sample and its log-prob."""
    norm = sac.actor.normalizer
    x = np.clip((obs - _np(norm.mean)) / _np(norm.std), -norm.clip, norm.clip)
    lin = [m for m in sac.actor.net if isinstance(m, torch.nn.Linear)]
    h = x
    for i, layer in enumerate(lin):
        h = h @ _np(layer.weight).T + _np(layer.bias)
        if i < len(lin) - 1:
            h = _relu(h)
    mean, raw = h[:, :ACT], h[:, ACT:]
    log_std = -5.0 + 0.5 * 7.0 * (np.tanh(raw) + 1.0)
    u = mean + eps * np.exp(log_std)
    a = np.tanh(u)
    logp = (-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi) - np.log(1.0 - a**2)).sum(-1)
    return a, logp


def _critic_np(critic, obs, act):
    """Per-member numpy forward of the ensemble: [E, B]."""
    norm = critic.normalizer
    x = np.concatenate([np.clip((obs - _np(norm.mean)) / _np(norm.std), -norm.clip, norm.clip), act], -1)
    qs = []
    for i in range(critic.n_critics):
        h = _relu(x @ _np(critic.w_in[i]).T + _np(critic.b_in[i])[:, 0])
        for w, b in zip(critic.w_hidden, critic.b_hidden):
            h = _relu(h @ _np(w[i]).T + _np(b[i])[:, 0])
        qs.append(h @ _np(critic.w_out[i])[0] + _np(critic.b_out[i])[0, 0])
    return np.stack(qs)


def _batch(rng, n=32):
    return Batch(
        torch.tensor(rng.normal(size=(n, OBS)), dtype=torch.float32),
        torch.tensor(rng.uniform(-1, 1, size=(n, ACT)), dtype=torch.float32),
        torch.tensor(rng.normal(size=n), dtype=torch.float32),
        torch.tensor(rng.normal(size=(n, OBS)), dtype=torch.float32),
        torch.tensor(rng.random(n) < 0.3, dtype=torch.float32),
    )


def _make_sac(**kw):
    cfg = SACConfig(hidden=(8, 8), gamma=0.9, init_alpha=0.37, seed=5, **kw)
    sac = SAC(OBS, ACT, cfg, obs_mean=np.array([0.1, -0.2, 0.3]), obs_std=np.array([1.0, 2.0, 0.5]))
    with torch.no_grad():  # make the target critics clearly different from the online ones
        for p in sac.critic_target.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return sac


def test_target_is_the_clipped_double_q_soft_target():
    rng = np.random.default_rng(0)
    sac = _make_sac()
    b = _batch(rng)
    state = sac.generator.get_state()
    y = sac.compute_target(b).double().numpy()

    sac.generator.set_state(state)
    eps = torch.randn((len(b.obs), ACT), generator=sac.generator).double().numpy()
    a2, logp2 = _actor_np(sac, _np(b.next_obs), eps)
    q_targ = _critic_np(sac.critic_target, _np(b.next_obs), a2)  # [2, B]
    expected = _np(b.reward) + 0.9 * (1 - _np(b.done)) * (q_targ.min(0) - 0.37 * logp2)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # terminals do not bootstrap
    d = _np(b.done).astype(bool)
    assert d.any() and np.allclose(y[d], _np(b.reward)[d], atol=1e-6)
    # and the online critics are *not* what the target uses
    q_online = _critic_np(sac.critic, _np(b.next_obs), a2)
    assert not np.allclose(q_online.min(0), q_targ.min(0), atol=1e-3)


def test_target_subset_takes_min_over_chosen_members():
    rng = np.random.default_rng(1)
    sac = _make_sac(n_critics=5, target_subset=2)
    b = _batch(rng)
    state = sac.generator.get_state()
    y = sac.compute_target(b).double().numpy()
    sac.generator.set_state(state)
    eps = torch.randn((len(b.obs), ACT), generator=sac.generator).double().numpy()
    idx = torch.randperm(5, generator=sac.generator)[:2].numpy()
    a2, logp2 = _actor_np(sac, _np(b.next_obs), eps)
    q = _critic_np(sac.critic_target, _np(b.next_obs), a2)[idx].min(0)
    np.testing.assert_allclose(y, _np(b.reward) + 0.9 * (1 - _np(b.done)) * (q - 0.37 * logp2), rtol=1e-5, atol=1e-5)


def test_update_critic_loss_and_polyak_average():
    rng = np.random.default_rng(2)
    sac = _make_sac(tau=0.1)
    b = _batch(rng)
    state = sac.generator.get_state()
    y = sac.compute_target(b).double().numpy()
    q = _critic_np(sac.critic, _np(b.obs), _np(b.action))
    expected_loss = 0.5 * ((q - y) ** 2).mean(1).sum()
    target_before = copy.deepcopy(sac.critic_target.state_dict())

    sac.generator.set_state(state)
    m = sac.update(b)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in m.values())  # no .item() in the hot path
    assert float(m["critic_loss"]) == pytest.approx(expected_loss, rel=1e-5)
    online = sac.critic.state_dict()
    for k, v in sac.critic_target.state_dict().items():
        if k.startswith("normalizer"):
            continue
        torch.testing.assert_close(v, target_before[k] + 0.1 * (online[k] - target_before[k]), atol=1e-6, rtol=1e-5)


def test_fused_update_gradients_equal_separate_losses():
    """The single backward of update() gives each parameter exactly the gradient of
    its own loss: critic <- critic loss, actor <- actor loss, log alpha <- alpha loss."""
    rng = np.random.default_rng(3)
    sac = _make_sac()
    for g in sac.optimizer.param_groups:
        g["lr"] = 0.0  # keep parameters fixed so gradients can be recomputed
    b = as_batch(_batch(rng))
    state = sac.generator.get_state()
    y = sac.compute_target(b)
    critic_loss = 0.5 * (sac.critic(b.obs, b.action) - y).pow(2).mean(1).sum()
    crit_grads = torch.autograd.grad(critic_loss, list(sac.critic.parameters()))
    a, logp = sac.actor(b.obs, generator=sac.generator)
    alpha = sac.log_alpha.detach().exp()
    actor_loss = (alpha * logp - sac.critic(b.obs, a).min(0).values).mean()
    actor_grads = torch.autograd.grad(actor_loss, list(sac.actor.parameters()))
    alpha_loss = -(sac.log_alpha * (logp.detach() + sac.target_entropy)).mean()
    (alpha_grad,) = torch.autograd.grad(alpha_loss, [sac.log_alpha])

    sac.generator.set_state(state)  # same noise in the fused update
    sac.update(b)
    got = {id(p): p.grad for p in [*sac.critic.parameters(), *sac.actor.parameters(), sac.log_alpha]}
    for p, g in zip(sac.critic.parameters(), crit_grads):
        torch.testing.assert_close(got[id(p)], g, atol=1e-6, rtol=1e-5)
    for p, g in zip(sac.actor.parameters(), actor_grads):
        torch.testing.assert_close(got[id(p)], g, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got[id(sac.log_alpha)], alpha_grad)


@pytest.mark.parametrize("target_entropy, direction", [(5.0, +1), (-20.0, -1)])
def test_temperature_moves_towards_target_entropy(target_entropy, direction):
    """Entropy of a 2-D squashed Gaussian is < 2 log 2: a target of 5 is above it, so
    log alpha must rise; a target of -20 is below it, so log alpha must fall."""
    rng = np.random.default_rng(4)
    sac = SAC(OBS, ACT, SACConfig(hidden=(16, 16), target_entropy=target_entropy, lr=1e-2, seed=0))
    start = float(sac.log_alpha.detach())
    for _ in range(10):
        m = sac.update(_batch(rng, 64))
        ent = float(m["entropy"])
        assert (ent < target_entropy) == (direction > 0)
    assert (float(sac.log_alpha.detach()) - start) * direction > 0.05


def test_fixed_alpha_stays_fixed():
    sac = SAC(OBS, ACT, SACConfig(hidden=(8,), autotune_alpha=False, init_alpha=0.2))
    sac.update(_batch(np.random.default_rng(5)))
    assert float(sac.alpha) == pytest.approx(0.2)


def test_utd_does_critic_updates_then_one_actor_update():
    rng = np.random.default_rng(6)
    sac = SAC(OBS, ACT, SACConfig(hidden=(8, 8), utd=3))
    actor_before = copy.deepcopy(sac.actor.state_dict())
    sac.update(_batch(rng), update_actor=False)
    for k, v in sac.actor.state_dict().items():
        assert torch.equal(v, actor_before[k])  # critic-only step leaves the actor alone
    calls = []

    def sample():
        calls.append(1)
        return _batch(rng)

    m = sac.train_step(sample)
    assert len(calls) == 3 and "actor_loss" in m
    assert (sac.num_critic_updates, sac.num_actor_updates) == (4, 1)
    assert any(not torch.equal(v, actor_before[k]) for k, v in sac.actor.state_dict().items())
    assert set(metrics_to_floats(m)) >= {"critic_loss", "actor_loss", "alpha", "entropy"}


def test_bc_pretrain_clones_demonstrations():
    rng = np.random.default_rng(7)
    W = rng.normal(size=(ACT, OBS))
    obs = rng.normal(size=(2048, OBS)).astype(np.float32)
    act = np.tanh(obs @ W.T).astype(np.float32)

    def demos():
        i = rng.integers(0, len(obs), 128)
        return {"obs": obs[i], "action": act[i]}

    for loss in ("nll", "mse"):
        sac = SAC(OBS, ACT, SACConfig(hidden=(64, 64), lr=1e-3, bc_loss=loss))
        before = np.mean((sac.act(obs, deterministic=True) - act) ** 2)
        sac.bc_pretrain(demos, steps=400)
        after = np.mean((sac.act(obs, deterministic=True) - act) ** 2)
        assert after < 0.1 * before, (loss, before, after)
    # a finite list of batches is cycled
    sac = SAC(OBS, ACT, SACConfig(hidden=(16,), bc_loss="mse"))
    hist = sac.bc_pretrain([demos() for _ in range(3)], steps=7)
    assert len(hist) >= 1


def test_config_validation():
    with pytest.raises(ValueError):
        SACConfig(target_subset=3, n_critics=2)
    with pytest.raises(ValueError):
        SACConfig(actor_q="max")
    cfg = SACConfig(hidden=[64, 64])
    assert cfg.hidden == (64, 64) and SACConfig.from_json(cfg.to_json()) == cfg


def test_bc_term_holds_the_actor_on_the_demo_actions():
    """With bc_weight the actor keeps the demonstrated action on demo rows against a critic that pulls away."""
    rng = np.random.default_rng(3)
    b = _batch(rng, n=64)
    demo = torch.zeros(64, dtype=torch.bool)
    demo[:32] = True
    target_a = torch.full((64, ACT), 0.5)
    b = b._replace(action=torch.where(demo[:, None], target_a, b.action), demo=demo)
    errs = {}
    for w in (0.0, 5.0):
        sac = _make_sac(bc_weight=w, lr=3e-3)
        for _ in range(300):
            m = sac.update(b)
        with torch.no_grad():
            a = sac.actor.deterministic(b.obs[demo])
        errs[w] = float((a - 0.5).abs().mean())
        assert ("bc_loss" in m) == (w > 0)
    assert errs[5.0] < 0.1 < errs[0.0]
    # a mapping batch from the store's Replay carries the flags: demo or intervention rows are demo rows
    mb = as_batch({"obs": b.obs, "action": b.action, "reward": b.reward, "next_obs": b.next_obs, "done": b.done,
                   "is_demo": demo.numpy(), "intervention": np.r_[np.zeros(63, bool), True]})
    assert mb.demo.sum() == 33


def test_actor_warmup_updates_only_the_critics_first():
    sac = _make_sac(actor_warmup_updates=4, utd=2)
    rng = np.random.default_rng(1)
    before = [p.detach().clone() for p in sac.actor.parameters()]
    for _ in range(2):  # 4 critic updates: still warming up
        sac.train_step(lambda: _batch(rng))
    assert sac.num_actor_updates == 0 and sac.num_critic_updates == 4
    assert all(torch.equal(p, q) for p, q in zip(before, sac.actor.parameters()))
    sac.train_step(lambda: _batch(rng))
    assert sac.num_actor_updates == 1
    assert not all(torch.equal(p, q) for p, q in zip(before, sac.actor.parameters()))
