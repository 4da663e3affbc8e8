"""Bradley–Terry reward model: the loss on a hand-built pair, ranking held-out oracle pairs, save/load/ONNX,
the synthetic labellers, query selection, and the `learned` reward."""
import math

import numpy as np
import pytest
import torch

from prefs_fixtures import SPEC, make_reach_run
from vla_rl_ros.preferences.oracle import Oracle, TrueReturn, margin_from_returns
from vla_rl_ros.preferences.reward_model import (OnnxRewardModel, PairBatch, RewardEnsemble, RewardTrainConfig,
                                                 agreement, bt_loss, data_range, labelled_pairs, load_reward_model,
                                                 reward_model_path, save_reward_model, train_reward_model)
from vla_rl_ros.preferences.segments import EpisodeIndex, disagreement_pairs, random_pairs
from vla_rl_ros.preferences.store import PreferenceStore

torch.set_num_threads(1)


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


@pytest.mark.parametrize("y", [1.0, 0.0, 0.5])
def test_bt_loss_and_gradient_hand_computed(y):
    rl = torch.tensor([1.0], requires_grad=True)
    rr = torch.tensor([0.0], requires_grad=True)
    loss = bt_loss(rl, rr, torch.tensor([y])).sum()
    loss.backward()
    # -[y log s(1) + (1-y) log s(-1)]: y=1 -> log(1+e^-1) = 0.313262; y=0 -> log(1+e) = 1.313262; y=.5 -> 0.813262
    want = {1.0: 0.3132617, 0.0: 1.3132617, 0.5: 0.8132617}[y]
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert loss.item() == pytest.approx(-(y * math.log(sig(1)) + (1 - y) * math.log(sig(-1))), abs=1e-6)
    # dL/dR_L = s(R_L - R_R) - y = 0.731059 - y; dL/dR_R = -that
    assert rl.grad.item() == pytest.approx(sig(1) - y, abs=1e-6)
    assert rr.grad.item() == pytest.approx(y - sig(1), abs=1e-6)
    if y == 1.0:  # a correctly labelled winner is pushed up (descent raises R_L), the loser down
        assert rl.grad.item() < 0 < rr.grad.item()


def test_segment_sums_enter_the_loss():
    """One member whose reward is tanh(w . action): the loss equals BT on hand-summed returns."""
    m = RewardEnsemble(3, 2, n_members=1, hidden=())
    with torch.no_grad():
        lin = m.members[0][0]
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[0, 3] = 1.0  # r = tanh(action[0])
    obs = torch.zeros(1, 3, 3)
    al = torch.tensor([[[0.5, 0], [0.5, 0], [0.0, 0]]])
    ar = torch.tensor([[[-0.2, 0], [0.1, 0], [9.0, 0]]])
    mask_r = torch.tensor([[1.0, 1.0, 0.0]])  # the right segment is 2 ticks: its padded third tick is ignored
    Rl = m.segment_returns(obs, al, torch.ones(1, 3))
    Rr = m.segment_returns(obs, ar, mask_r)
    hl, hr = 2 * math.tanh(0.5), math.tanh(-0.2) + math.tanh(0.1)
    assert Rl.item() == pytest.approx(hl, abs=1e-6) and Rr.item() == pytest.approx(hr, abs=1e-6)
    assert bt_loss(Rl, Rr, torch.tensor([1.0])).item() == pytest.approx(math.log(1 + math.exp(-(hl - hr))), abs=1e-6)


def test_oracles():
    o = Oracle()
    assert [o.decide(1, 0), o.decide(0, 1), o.decide(2, 2)] == ["left", "right", "equal"]
    eq = Oracle(equal_margin=0.5)
    assert [eq.decide(1.0, 0.6), eq.decide(1.0, 0.4)] == ["equal", "left"]
    m = Oracle(mistake=0.1, seed=3)
    answers = [m.decide(1.0, 0.0) for _ in range(4000)]
    assert abs(answers.count("right") / 4000 - 0.1) < 0.02  # 10% flipped (4 standard errors)
    assert [m.decide(1.0, 1.0) for _ in range(100)] == ["equal"] * 100  # ties are never flipped
    m1, m2 = Oracle(mistake=0.1, seed=7), Oracle(mistake=0.1, seed=7)
    assert [m1.decide(1, 0) for _ in range(200)] == [m2.decide(1, 0) for _ in range(200)]  # seeded
    assert Oracle(mistake=0.1).name == "oracle:mistake0.1:seed0"
    assert Oracle(equal_margin=0.5, seed=2).name == "oracle:equal0.5:seed2"
    assert margin_from_returns(np.linspace(0, 10, 101), 0.1) == pytest.approx(0.8)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run = make_reach_run(root, n_episodes=60, ep_len=30, seed=0)
    return run, EpisodeIndex.from_paths([run.path])


def test_true_return_is_the_task_reward_on_recorded_steps(recorded):
    run, index = recorded
    rng = np.random.default_rng(0)
    seg = index.random_segment(10, rng)
    d = index.data(seg)
    # the run was recorded with the task's default (reach_cost): the recomputed return equals the stored column
    assert TrueReturn()(d) == pytest.approx(float(d.rewards.sum()), rel=1e-5)
    # and reach_cost's per-tick formula by hand: -(10 d(s') + 0.1)
    dist = np.linalg.norm(d.next_obs[:, SPEC.obs_slice("goal_pos")] - d.next_obs[:, SPEC.obs_slice("ee_pos")], axis=1)
    assert TrueReturn()(d) == pytest.approx(float(-(10 * dist + 0.1).sum()), rel=1e-5)


def _oracle_labels(index, n, seed, store=None, oracle=None):
    rng = np.random.default_rng(seed)
    oracle = oracle or Oracle(seed=seed)
    out = []
    for a, b in random_pairs(index, n, 20, rng):
        label, info = oracle.label(index.data(a), index.data(b))
        if store is not None:
            out.append(store.add(a, b, label, oracle.name, info=info))
    return out


def test_reward_model_ranks_held_out_oracle_pairs(recorded, tmp_path):
    run, index = recorded
    with PreferenceStore(run.path) as store:
        train = _oracle_labels(index, 300, seed=1, store=store)
        held_store = PreferenceStore(tmp_path / "held.sqlite")
        held = _oracle_labels(index, 200, seed=2, store=held_store)
        tb, used = labelled_pairs(store.labels(trainable=True), index)
        hb, _ = labelled_pairs(held, index)
        assert len(used) == len(train)
        model, hist = train_reward_model(tb, RewardTrainConfig(steps=400, seed=0))
        assert hist[-1] < hist[0]
        acc = agreement(model, hb)
        assert acc >= 0.8, acc
        untrained = RewardEnsemble(SPEC.obs_dim, SPEC.action_dim)
        assert abs(agreement(untrained, hb) - 0.5) < 0.25  # chance, for contrast
        # save: versioned, lineage with its data range, ONNX parity, newest or pinned
        saved = save_reward_model(model, run.models_dir, SPEC, {"data_range": data_range(used, store.meta()),
                                                                "training_steps": 400})
        assert saved.lineage["data_range"]["n_labels"] == 300
        assert saved.lineage["data_range"]["label_ids"] == [used[0].id, used[-1].id]
        assert saved.lineage["data_range"]["prefs_id"] == store.meta()["prefs_id"]
        onnx_model = OnnxRewardModel(saved.path)
        assert onnx_model.version == saved.version and onnx_model.spec == SPEC
        d = index.data(used[0].left)
        with torch.no_grad():
            want = model.reward(torch.tensor(d.obs), torch.tensor(d.actions)).numpy()
        np.testing.assert_allclose(onnx_model(d.obs, d.actions), want, atol=1e-5)
        assert onnx_model(d.obs[0], d.actions[0]) == pytest.approx(float(want[0]), abs=1e-5)
        assert onnx_model.members(d.obs, d.actions).shape == (len(d.obs), 3)
        again = load_reward_model(run.models_dir)
        assert again.version == saved.version and agreement(again, hb) == acc
        # a second model becomes the newest; the first stays pinnable
        model2, _ = train_reward_model(tb, RewardTrainConfig(steps=5, seed=1))
        saved2 = save_reward_model(model2, run.models_dir, SPEC, {"parent_version": saved.version})
        assert reward_model_path(run.models_dir) == saved2.path
        assert reward_model_path(run.models_dir, saved.version) == saved.path
        with pytest.raises(FileNotFoundError):
            reward_model_path(run.models_dir, "nope")
        # PEBBLE query selection: the chosen pairs are the ensemble's most disputed among the candidates
        rng = np.random.default_rng(5)
        pairs, var = disagreement_pairs(index, model, 10, 20, rng, n_candidates=10, exclude=store.asked())
        assert len(pairs) == 10 and np.all(np.diff(var) <= 0)
        rand = random_pairs(index, 100, 20, np.random.default_rng(6))
        rand_var = model.member_probs([(index.data(a), index.data(b)) for a, b in rand]).var(0)
        assert var.mean() > rand_var.mean()
        assert not set(pairs) & store.asked()


def test_state_only_reward_model_keeps_the_onnx_contract(tmp_path):
    """``use_action=False``: r(s), the same (obs, action) inputs in ONNX (the exporter would drop an unused one),
    the action without effect, and the setting kept through save and load."""
    torch.manual_seed(0)
    m = RewardEnsemble(SPEC.obs_dim, SPEC.action_dim, hidden=(16,), use_action=False)
    saved = save_reward_model(m, tmp_path / "models", SPEC, {"training_steps": 0})
    onnx_m = OnnxRewardModel(saved.path)
    rng = np.random.default_rng(0)
    o = rng.normal(size=(6, SPEC.obs_dim)).astype(np.float32)
    a = rng.uniform(-1, 1, (6, SPEC.action_dim)).astype(np.float32)
    np.testing.assert_allclose(onnx_m(o, a), onnx_m(o, -a), atol=1e-7)
    with torch.no_grad():
        np.testing.assert_allclose(onnx_m(o, a), m.reward(torch.from_numpy(o), torch.from_numpy(a)).numpy(), atol=1e-5)
    back = load_reward_model(tmp_path / "models")
    assert back.use_action is False and back.config()["use_action"] is False
    with_action = RewardEnsemble(SPEC.obs_dim, SPEC.action_dim, hidden=(16,))
    with torch.no_grad():
        assert not torch.allclose(with_action.reward(torch.from_numpy(o), torch.from_numpy(a)),
                                  with_action.reward(torch.from_numpy(o), torch.from_numpy(-a)))


def test_queries_from_the_newest_episodes_only(tmp_path):
    """``recent=N``: every queried segment comes from the index's newest N episodes (QPA's policy-aligned
    queries), for random and disagreement selection alike."""
    run = make_reach_run(tmp_path, n_episodes=8, ep_len=20, seed=0)
    index = EpisodeIndex.from_paths([run.path])
    newest = set(list(index.episodes)[-2:])
    rng = np.random.default_rng(0)
    pairs = random_pairs(index, 12, 5, rng, recent=2)
    assert {(s.store, s.episode) for p in pairs for s in p} <= newest
    torch.manual_seed(0)
    model = RewardEnsemble(SPEC.obs_dim, SPEC.action_dim, hidden=(8,))
    picked, _ = disagreement_pairs(index, model, 3, 5, rng, recent=2)
    assert {(s.store, s.episode) for p in picked for s in p} <= newest
    assert {(s.store, s.episode) for p in random_pairs(index, 40, 5, rng) for s in p} - newest  # all by default
