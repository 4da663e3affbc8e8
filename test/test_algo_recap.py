"""Recap: outcome values, n-step advantages, indicators, guidance and a full round on a toy task."""
import numpy as np
import pytest
import torch

from vla_rl_ros.algos.recap import (
    NULL,
    POSITIVE,
    Episode,
    GuidedPolicy,
    RecapConfig,
    RecapTrainer,
    binarize_advantages,
    correction_trust,
    indicator_tokens,
    nstep_advantages,
    outcome_rewards,
    two_hot,
    value_targets,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------- pure functions
def test_rewards_and_value_targets_by_hand():
    # h_norm 10, failure penalty 1
    np.testing.assert_allclose(outcome_rewards(3, True, 10, 1.0), [-0.1, -0.1, -0.1])
    np.testing.assert_allclose(outcome_rewards(2, False, 10, 1.0), [-0.1, -1.1])
    np.testing.assert_allclose(value_targets(3, True, 10, 1.0), [-0.3, -0.2, -0.1])  # -(steps to success)/H
    np.testing.assert_allclose(value_targets(2, False, 10, 1.0), [-1.2, -1.1])
    # the value target is the return of the rewards
    for L, ok in [(7, True), (7, False)]:
        r = outcome_rewards(L, ok, 10, 1.0)
        np.testing.assert_allclose(value_targets(L, ok, 10, 1.0), np.cumsum(r[::-1])[::-1])
    # clipped to the support [-(1 + penalty), 0]
    assert value_targets(30, False, 10, 1.0).min() == pytest.approx(-2.0)


def test_nstep_advantages_by_hand():
    r = outcome_rewards(3, True, 10, 1.0)  # [-0.1, -0.1, -0.1]
    # exact values give zero advantage everywhere
    np.testing.assert_allclose(nstep_advantages(r, value_targets(3, True, 10, 1.0), 2), 0.0, atol=1e-12)
    v = np.array([-0.5, -0.2, -0.4])
    # t0: r0 + r1 + V2 - V0 = -0.2 - 0.4 + 0.5; t1: r1 + r2 (+ 0: episode over) - V1; t2: r2 - V2
    np.testing.assert_allclose(nstep_advantages(r, v, 2), [-0.1, 0.0, 0.3], atol=1e-12)
    # failure: the terminal penalty is inside the reward sum
    rf = outcome_rewards(2, False, 10, 1.0)  # [-0.1, -1.1]
    np.testing.assert_allclose(nstep_advantages(rf, np.array([-1.0, -1.0]), 1), [-0.1 - 1.0 + 1.0, -1.1 + 1.0])


def test_binarize_top_fraction_and_interventions():
    adv = np.array([-0.1, 0.0, 0.3, 0.5, -0.7])
    iv = np.array([False, False, False, False, True])
    ind, eps = binarize_advantages(adv, iv, 0.5)
    assert eps == 0.0  # 4 autonomous steps, top 2 positive: threshold is the 3rd largest
    assert ind.tolist() == [False, False, True, True, True]  # the intervention is positive despite -0.7
    ind, eps = binarize_advantages(adv, iv, 0.0)
    assert ind.tolist() == [False, False, False, False, True]
    ind, _ = binarize_advantages(adv, iv, 1.0)
    assert ind.all()
    big = np.random.default_rng(0).normal(size=1000)
    assert binarize_advantages(big, None, 0.3)[0].mean() == pytest.approx(0.3)


def test_two_hot_keeps_the_expectation():
    support = torch.linspace(-2.0, 0.0, 11)
    y = torch.tensor([-1.93, -0.5, 0.0, -2.0, -3.0, 0.4])
    p = two_hot(y, -2.0, 0.0, 11)
    assert torch.allclose(p.sum(-1), torch.ones(6))
    assert torch.allclose(p @ support, y.clamp(-2.0, 0.0), atol=1e-6)


def test_indicator_tokens_and_dropout():
    ind = torch.tensor([True, False] * 5000)
    tok = indicator_tokens(ind)
    assert tok.shape == (10000, 3) and tok[:, NULL].sum() == 0
    assert torch.equal(tok[:, POSITIVE].bool(), ind)
    tok = indicator_tokens(ind, 0.3, torch.Generator().manual_seed(0))
    assert abs(float(tok[:, NULL].mean()) - 0.3) < 0.02
    assert torch.equal(tok.sum(-1), torch.ones(10000))


# ----------------------------------------------------------------- trainer pieces
class _KnownValues(RecapTrainer):
    """A trainer whose value function is given: V(s) = s[0] (to check the relabelling)."""

    def values(self, obs, chunk=65536):
        return np.asarray(obs, dtype=np.float64)[:, 0]


def test_label_on_hand_built_episodes():
    cfg = RecapConfig(h_norm=10, fail_penalty=1.0, n_step=2, positive_fraction=0.5, corrections="always")
    t = _KnownValues(1, 1, cfg)
    episodes = [
        Episode(obs=[[-0.5], [-0.2], [-0.4]], actions=[[0.1]] * 3, success=True),
        Episode(obs=[[-1.0], [-1.0]], actions=[[0.2]] * 2, success=False, intervention=[False, True]),
    ]
    lab = t.label(episodes)
    # episode 1: [-0.1, 0.0, 0.3] (see test_nstep_advantages_by_hand)
    # episode 2: t0: r0 + r1 - V0 = -0.1 - 1.1 + 1.0 = -0.2; t1: r1 - V1 = -1.1 + 1.0 = -0.1
    np.testing.assert_allclose(lab["advantage"], [-0.1, 0.0, 0.3, -0.2, -0.1], atol=1e-6)  # float32 obs
    # autonomous advantages sorted: [0.3, 0.0, -0.1, -0.2]; top half positive -> eps = -0.1
    assert lab["threshold"] == pytest.approx(-0.1)
    assert lab["indicator"].tolist() == [False, True, True, False, True]  # the last one is the human correction


def test_corrections_are_weighted_by_outcome():
    """A take-over that still ended in failure is not a good example by fiat; one that succeeded is."""
    cfg = RecapConfig(h_norm=10, fail_penalty=1.0, n_step=2, positive_fraction=0.5)  # corrections="outcome"
    t = _KnownValues(1, 1, cfg)
    episodes = [
        # a successful episode whose middle step was a correction
        Episode(obs=[[-0.5], [-0.2], [-0.4]], actions=[[0.1]] * 3, success=True, intervention=[False, True, False]),
        # a failed episode whose last step was a correction
        Episode(obs=[[-1.0], [-0.95]], actions=[[0.2]] * 2, success=False, intervention=[False, True]),
    ]
    lab = t.label(episodes)
    # episode 2: t0: -0.1 - 1.1 + 1.0 = -0.2; t1: -1.1 + 0.95 = -0.15
    np.testing.assert_allclose(lab["advantage"], [-0.1, 0.0, 0.3, -0.2, -0.15], atol=1e-6)
    assert lab["trusted"].tolist() == [False, True, False, False, False]
    # untrusted advantages sorted: [0.3, -0.1, -0.15, -0.2]; top half -> eps = -0.15; the trusted correction is
    # positive whatever its advantage, the failed one only on its advantage (here: not above eps)
    assert lab["threshold"] == pytest.approx(-0.15)
    assert lab["indicator"].tolist() == [True, True, True, False, False]
    always = _KnownValues(1, 1, RecapConfig(h_norm=10, fail_penalty=1.0, n_step=2, positive_fraction=0.5,
                                            corrections="always")).label(episodes)
    assert always["indicator"][-1] and always["trusted"].tolist() == [False, True, False, False, True]
    # the actor's correction share of each batch is drawn from the trusted corrections only
    assert correction_trust([Episode(obs=[[0.0]], actions=[[0.0]], success=False, intervention=[True])]).tolist() == [False]
    with pytest.raises(ValueError):
        RecapConfig(corrections="sometimes")


def test_guidance_weight_one_is_exactly_the_conditional_policy():
    torch.manual_seed(0)
    t = RecapTrainer(6, 3, RecapConfig(hidden=(32, 32)))
    t.actor.requires_grad_(False)
    obs = torch.randn(50, 6) * 3
    pos = torch.eye(3)[[POSITIVE] * 50]
    null = torch.eye(3)[[NULL] * 50]
    cond = t.actor.deterministic(obs, pos)
    assert torch.equal(t.export_module(1.0)(obs), cond)
    assert torch.equal(GuidedPolicy(t.actor, 1.0)(obs), cond)
    assert torch.equal(t.export_module(0.0)(obs), t.actor.deterministic(obs, null))
    m_c, m_u = t.actor.dist_params(obs, pos)[0], t.actor.dist_params(obs, null)[0]
    torch.testing.assert_close(t.export_module(2.5)(obs), torch.tanh(m_u + 2.5 * (m_c - m_u)))
    assert (t.export_module(25.0)(obs).abs() <= 1).all()
    np.testing.assert_array_equal(t.act(obs.numpy(), cfg_weight=1.0), cond.numpy())


# ----------------------------------------------------------------- a full round
def _chain_episodes(n, seed, p_good=0.7, H=20):
    """1-D chain: x += 0.2 a; success when x >= 1 within H steps. The data mixes a
    good action (+0.8) and a bad one (-0.8); obs = [x, t / H]."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        x, obs, acts = 0.0, [], []
        success = False
        for t in range(H):
            a = 0.8 if rng.random() < p_good else -0.8
            obs.append([x, t / H])
            acts.append([a + rng.normal(0, 0.05)])
            x += 0.2 * a
            if x >= 1.0:
                success = True
                break
        eps.append(Episode(np.array(obs), np.clip(np.array(acts), -1, 1), success))
    return eps


def test_round_learns_to_prefer_the_better_action():
    cfg = RecapConfig(hidden=(64, 64), h_norm=20, n_step=1, value_steps=600, actor_steps=600, lr=1e-3,
                      positive_fraction=0.3, seed=0)
    trainer = RecapTrainer(2, 1, cfg)
    episodes = _chain_episodes(150, seed=1)
    m = trainer.round(episodes)
    assert 0.1 < m["success_rate"] < 0.9
    # the value function ranks states: closer to the goal is better
    v = trainer.values(np.array([[0.8, 0.25], [0.0, 0.25], [-0.6, 0.25]], dtype=np.float32))
    assert v[0] > v[1] > v[2] and -2.0 <= v.min() and v.max() <= 0.0
    assert m["positive_fraction"] == pytest.approx(0.3, abs=0.03)  # ties at the threshold lower it slightly
    assert trainer.rounds == 1 and bool(trainer.actor.normalizer.fitted)

    lab = trainer.label(episodes)
    acts = np.concatenate([e.actions for e in episodes])[:, 0]
    # advantage separates the actions: positives are mostly the good action
    assert (acts[lab["indicator"]] > 0).mean() > 0.9

    obs = np.concatenate([e.obs for e in episodes]).astype(np.float32)
    o = torch.as_tensor(obs)
    a_pos = trainer.act(obs, cfg_weight=1.0)[:, 0]
    a_null = trainer.export_module(0.0)(o).detach().numpy()[:, 0]
    a_neg = trainer.actor.deterministic(o, torch.eye(3)[[1] * len(o)]).detach().numpy()[:, 0]
    assert a_pos.mean() > 0.6  # the positive-conditioned policy picks the good action
    assert a_pos.mean() > a_null.mean() + 0.15 > a_neg.mean() + 0.3
    # guidance above 1 pushes further towards the good action
    assert trainer.act(obs, cfg_weight=2.0)[:, 0].mean() > a_pos.mean()


def test_recap_rejects_bad_episodes():
    with pytest.raises(ValueError):
        Episode(obs=np.zeros((3, 2)), actions=np.zeros((5, 1)), success=True)
    t = RecapTrainer(2, 1, RecapConfig(hidden=(8,)))
    with pytest.raises(ValueError):
        t.round([])
    with pytest.raises(ValueError):
        t.round([Episode(np.zeros((4, 3)), np.zeros((4, 1)), True)])


def test_actor_batches_draw_demo_ratio_from_interventions(monkeypatch):
    """With corrections present, demo_ratio of every actor minibatch comes from them (RLPD-style); 0 = uniform."""
    import vla_rl_ros.algos.recap as recap

    rng = np.random.default_rng(0)
    n, n_iv = 1000, 20  # corrections: 2% of the steps
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    act = np.zeros((n, 1), np.float32)
    iv = np.zeros(n, bool)
    iv[:n_iv] = True
    obs[:n_iv, 0] = 100.0  # mark the correction rows so a batch's share can be counted from its observations
    seen = []

    def spy(actor, o, a, kind, cond=None):
        seen.append(float((o[:, 0] == 100.0).float().mean()))
        return real(actor, o, a, kind, cond=cond)

    real = recap.bc_loss
    monkeypatch.setattr(recap, "bc_loss", spy)
    for ratio, lo, hi in ((0.5, 0.5, 0.53), (0.0, 0.0, 0.08)):
        seen.clear()
        t = RecapTrainer(2, 1, RecapConfig(hidden=(16, 16), batch_size=200, actor_steps=30, demo_ratio=ratio, seed=0))
        t.fit_actor(obs, act, iv, intervention=iv)
        assert lo <= np.mean(seen) <= hi, (ratio, np.mean(seen))
    with pytest.raises(ValueError):
        RecapConfig(demo_ratio=1.5)


def test_corrections_in_the_data_switch_the_demo_share(monkeypatch):
    """correction_ratio replaces demo_ratio once an own (non-demo) episode holds intervention steps; demos alone,
    however fully flagged, keep demo_ratio; None keeps demo_ratio always."""
    import vla_rl_ros.algos.recap as recap

    eps = _chain_episodes(20, seed=3)
    demo = Episode(eps[0].obs, eps[0].actions, True, np.ones(len(eps[0]), bool), demo=True)
    iv = np.zeros(len(eps[1]), bool)
    iv[:2] = True
    corrected = {"obs": eps[1].obs, "actions": eps[1].actions, "success": True, "intervention": iv}
    shares = []
    real = recap.RecapTrainer.fit_actor

    def spy(self, *a, demo_ratio=None, **kw):
        shares.append(demo_ratio)
        return real(self, *a, demo_ratio=demo_ratio, **kw)

    monkeypatch.setattr(recap.RecapTrainer, "fit_actor", spy)
    small = dict(hidden=(8,), value_steps=5, actor_steps=5, demo_ratio=0.2)
    for ratio, data, want in ((0.5, [demo, *eps[2:]], 0.2), (0.5, [demo, corrected, *eps[2:]], 0.5),
                              (None, [demo, corrected, *eps[2:]], 0.2)):
        m = RecapTrainer(2, 1, RecapConfig(**small, correction_ratio=ratio)).round(data)
        assert shares[-1] == want and m["demo_share"] == want
    assert recap.as_episode({**corrected, "demo": True}).demo and not recap.as_episode(corrected).demo
    with pytest.raises(ValueError):
        RecapConfig(correction_ratio=-0.1)


@pytest.mark.parametrize("mode", ["input", "heads"])
def test_actor_conditioning_modes_follow_the_indicator(mode):
    """Both ways of feeding the indicator learn indicator-specific actions (positive -> +1, negative -> -1)."""
    from vla_rl_ros.algos.bc import bc_loss
    from vla_rl_ros.algos.networks import SquashedGaussianActor

    torch.manual_seed(0)
    actor = SquashedGaussianActor(2, 1, (32, 32), cond_dim=3, cond_mode=mode)
    opt = torch.optim.Adam(actor.parameters(), lr=3e-3)
    obs = torch.randn(256, 2)
    ind = torch.rand(256) < 0.5
    target = torch.where(ind, 0.9, -0.9).unsqueeze(-1)  # same states, opposite actions by indicator
    for _ in range(300):
        loss = bc_loss(actor, obs, target, "mse", cond=indicator_tokens(ind))
        opt.zero_grad()
        loss.backward()
        opt.step()
    pos = actor.deterministic(obs, indicator_tokens(torch.ones(256, dtype=torch.bool)))
    neg = actor.deterministic(obs, indicator_tokens(torch.zeros(256, dtype=torch.bool)))
    assert pos.mean() > 0.8 and neg.mean() < -0.8
