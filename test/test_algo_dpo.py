"""DPO on trajectory segments: log 2 at initialisation, the gradient's sign, learning from oracle pairs, ONNX."""
import math

import numpy as np
import pytest
import torch

from prefs_fixtures import SPEC, make_reach_run
from vla_rl_ros.algos.bc import train_bc
from vla_rl_ros.algos.dpo import DPO, DPOConfig, dpo_loss, segment_log_prob
from vla_rl_ros.algos.export import export_onnx
from vla_rl_ros.algos.networks import SquashedGaussianActor
from vla_rl_ros.preferences.oracle import Oracle
from vla_rl_ros.preferences.reward_model import labelled_pairs
from vla_rl_ros.preferences.segments import EpisodeIndex, random_pairs
from vla_rl_ros.preferences.store import Preference

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    run = make_reach_run(tmp_path_factory.mktemp("runs"), n_episodes=60, ep_len=30, seed=1)
    index = EpisodeIndex.from_paths([run.path])
    oracle = Oracle(seed=0)

    def labels(n, seed):
        out = []
        for k, (a, b) in enumerate(random_pairs(index, n, 15, np.random.default_rng(seed))):
            label, _ = oracle.label(index.data(a), index.data(b))
            out.append(Preference(k + 1, f"u{seed}-{k}", a, b, label, oracle.name, 0.0))
        return labelled_pairs(out, index)[0]

    ep = list(index.episodes.values())
    obs = np.concatenate([e.obs for e in ep])
    act = np.concatenate([e.actions for e in ep])
    ref = train_bc(obs, act, hidden=(64, 64), steps=600, loss="nll", seed=0).actor
    return run, index, labels(300, 1), labels(150, 2), ref


def test_loss_is_log2_at_initialisation(data):
    _, _, train, _, ref = data
    dpo = DPO(ref, DPOConfig(beta=0.5))
    loss, m = dpo.loss(train)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert m["implicit_reward_margin"].item() == pytest.approx(0.0, abs=1e-5)
    # the same with an equal label and a right label
    y = train.y.clone()
    y[:] = 0.5
    train.y, saved = y, train.y
    try:
        assert dpo.loss(train)[0].item() == pytest.approx(math.log(2), abs=1e-6)
    finally:
        train.y = saved


def test_gradient_sign_raises_the_preferred_segment():
    beta = 0.3
    lw, ll = torch.tensor([-4.0], requires_grad=True), torch.tensor([-6.0], requires_grad=True)
    rw, rl = torch.tensor([-4.0]), torch.tensor([-6.0])  # pi = pi_ref
    dpo_loss(lw, ll, rw, rl, torch.tensor([1.0]), beta).sum().backward()
    assert lw.grad.item() == pytest.approx(-beta / 2) and ll.grad.item() == pytest.approx(beta / 2)
    # through the actor: one step raises the preferred segment's log-likelihood relative to the other's
    torch.manual_seed(0)
    actor = SquashedGaussianActor(SPEC.obs_dim, SPEC.action_dim, (32, 32))
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(1, 6, SPEC.obs_dim, generator=g)
    aw, al = torch.rand(1, 6, SPEC.action_dim, generator=g) * 2 - 1, torch.rand(1, 6, SPEC.action_dim, generator=g) * 2 - 1
    mask = torch.ones(1, 6)

    from vla_rl_ros.preferences.reward_model import PairBatch

    b = PairBatch(obs, aw, mask, obs, al, mask, torch.tensor([1.0]))
    dpo = DPO(actor, DPOConfig(lr=1e-3, beta=beta))
    before = (segment_log_prob(dpo.actor, obs, aw, mask) - segment_log_prob(dpo.actor, obs, al, mask)).item()
    dpo.update(b)
    after = (segment_log_prob(dpo.actor, obs, aw, mask) - segment_log_prob(dpo.actor, obs, al, mask)).item()
    assert after > before
    # with the label reversed, the same step lowers it
    dpo2 = DPO(actor, DPOConfig(lr=1e-3, beta=beta))
    b.y = torch.tensor([0.0])
    dpo2.update(b)
    after2 = (segment_log_prob(dpo2.actor, obs, aw, mask) - segment_log_prob(dpo2.actor, obs, al, mask)).item()
    assert after2 < before


def test_dpo_learns_from_oracle_pairs_and_exports(data, tmp_path):
    import onnxruntime as ort

    _, index, train, held, ref = data
    dpo = DPO(ref, DPOConfig(beta=0.1, lr=3e-4, seed=0))
    hist = dpo.fit(train, steps=300)
    assert hist[-1] < hist[0]
    _, m = dpo.loss(held)
    assert m["implicit_accuracy"].item() >= 0.65  # the implicit reward ranks held-out oracle pairs
    # (Whether the deployed mean action gets better is for the bench: on this data it did not; the goal cosine
    # of tanh(mean) fell from 0.64 to 0.53 with these settings. See bench/bench_prefs.py.)
    out = export_onnx(dpo.policy_module(), SPEC, tmp_path / "dpo.onnx", {"algorithm": "dpo", "parent_version": "bc-ref"})
    assert out.version.startswith("dpo-")
    obs = np.random.default_rng(0).normal(size=(7, SPEC.obs_dim)).astype(np.float32)
    got = ort.InferenceSession(str(out.path), providers=["CPUExecutionProvider"]).run(None, {"obs": obs})[0]
    with torch.no_grad():
        want = dpo.policy_module()(torch.from_numpy(obs)).clamp(-1, 1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
