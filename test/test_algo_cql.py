"""CQL: the conservative gap against a numpy re-computation, the term lowering Q on out-of-data actions
(against plain SAC on the same data), the Lagrangian multiplier's direction, ONNX parity and resume."""
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vla_rl_ros.algos.checkpoint import load_checkpoint, save_checkpoint
from vla_rl_ros.algos.cql import CQL, CQLConfig
from vla_rl_ros.algos.export import INPUT_NAME, OUTPUT_NAME, export_onnx
from vla_rl_ros.algos.learners import learner_from_state
from vla_rl_ros.algos.sac import SAC, SACConfig, Batch
from vla_rl_ros.spec import Spec

torch.set_num_threads(1)


def test_conservative_gap_is_the_importance_sampled_logsumexp_minus_q_on_data():
    cql = CQL(3, 2, CQLConfig(hidden=(16, 16), cql_n_actions=4, cql_temperature=2.0, seed=0))
    rng = np.random.default_rng(0)
    obs = torch.tensor(rng.normal(size=(5, 3)), dtype=torch.float32)
    nxt = torch.tensor(rng.normal(size=(5, 3)), dtype=torch.float32)
    q_data = torch.tensor(rng.normal(size=(2, 5)), dtype=torch.float32)
    state = cql.generator.get_state()
    gap = cql.conservative_gap(obs, nxt, q_data)
    # redo the estimate by hand with the same random draws
    cql.generator.set_state(state)
    N, T = 4, 2.0
    with torch.no_grad():
        a_rand = torch.rand(5 * N, 2, generator=cql.generator) * 2 - 1
        a_pi, lp_pi = cql.actor(obs.repeat_interleave(N, 0), generator=cql.generator)
        a_nx, lp_nx = cql.actor(nxt.repeat_interleave(N, 0), generator=cql.generator)
        want = []
        for e in range(2):
            per_state = []
            for b in range(5):
                rows = slice(b * N, (b + 1) * N)
                s = obs[b:b + 1].expand(N, -1)
                terms = torch.cat([cql.critic(s, a_rand[rows])[e] + 2 * math.log(2.0),
                                   cql.critic(s, a_pi[rows])[e] - lp_pi[rows],
                                   cql.critic(s, a_nx[rows])[e] - lp_nx[rows]])
                per_state.append(T * math.log(float(torch.exp(terms.double() / T).sum())) - float(q_data[e, b]))
            want.append(np.mean(per_state))
    assert np.allclose(gap.detach().numpy(), want, atol=1e-4)


def _bandit(n=256, seed=0):
    """One-step data: every recorded action sits near a = (0.3, -0.3), reward 0, terminal."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 3))
    act = np.clip(np.array([0.3, -0.3]) + 0.05 * rng.normal(size=(n, 2)), -1, 1)
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    return Batch(t(obs), t(act), torch.zeros(n), t(rng.normal(size=(n, 3))), torch.ones(n))


def _q_far_minus_near(algo, data):
    far = torch.tensor([[-0.9, 0.9]]).expand(len(data.obs), -1)
    with torch.no_grad():
        return float(algo.critic(data.obs, far).mean() - algo.critic(data.obs, data.action).mean())


def test_conservative_term_lowers_q_on_out_of_data_actions():
    """Same data, same seed: SAC's critic is free off the data; CQL's is pushed down there."""
    data = _bandit()
    common = dict(hidden=(32, 32), lr=1e-3, seed=0, init_alpha=0.1)
    sac = SAC(3, 2, SACConfig(**common))
    cql = CQL(3, 2, CQLConfig(**common, cql_alpha=1.0))
    for _ in range(300):
        sac.update(data)
        m = cql.update(data)
    with torch.no_grad():
        q_data_cql = float(cql.critic(data.obs, data.action).mean())
    assert abs(q_data_cql) < 0.3  # still the TD target (0) on the data's actions
    assert _q_far_minus_near(cql, data) < -1.0  # well below on an action the data never took
    assert abs(_q_far_minus_near(sac, data)) < 0.5  # plain SAC: no such preference
    assert float(m["cql_gap"]) > 0


def test_lagrangian_multiplier_rises_while_the_gap_exceeds_the_threshold_and_falls_below():
    data = _bandit()
    up = CQL(3, 2, CQLConfig(hidden=(16, 16), cql_lagrange=True, cql_target_gap=-100.0, cql_alpha_lr=1e-2, seed=0))
    down = CQL(3, 2, CQLConfig(hidden=(16, 16), cql_lagrange=True, cql_target_gap=100.0, cql_alpha_lr=1e-2, seed=0))
    for _ in range(20):
        mu, md = up.update(data), down.update(data)
    assert float(mu["cql_multiplier"]) > 1.1 and float(md["cql_multiplier"]) < 0.9


def test_cql_onnx_parity_and_resume(tmp_path):
    spec = Spec(task="pick_place")
    rng = np.random.default_rng(1)
    cql = CQL(spec.obs_dim, spec.action_dim, CQLConfig(hidden=(32, 32), cql_lagrange=True, seed=2))
    cql.fit_obs_normalizer(rng.normal(0.2, 0.3, size=(200, spec.obs_dim)))

    def batch():
        n = 32
        return Batch(*(torch.tensor(x, dtype=torch.float32) for x in (
            rng.normal(0.2, 0.3, size=(n, spec.obs_dim)), rng.uniform(-1, 1, size=(n, spec.action_dim)),
            rng.normal(size=n), rng.normal(0.2, 0.3, size=(n, spec.obs_dim)), rng.integers(0, 2, n))))

    for _ in range(10):
        cql.update(batch())
    path = tmp_path / "cql.onnx"
    export_onnx(cql.policy_module(), spec, path, {"algorithm": "cql"})
    obs = rng.normal(0.2, 0.5, size=(9, spec.obs_dim)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([OUTPUT_NAME], {INPUT_NAME: obs})[0]
    assert np.abs(got - cql.act(obs, deterministic=True)).max() < 1e-5
    save_checkpoint(tmp_path / "cql.pt", {"algo": cql.state_dict()})
    clone = learner_from_state(load_checkpoint(tmp_path / "cql.pt")["algo"])
    assert isinstance(clone, CQL) and float(clone.log_cql_alpha.detach()) == float(cql.log_cql_alpha.detach())
    b = batch()
    m1, m2 = cql.update(b), clone.update(b)
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    assert all(torch.equal(p, q) for p, q in zip(cql.critic.parameters(), clone.critic.parameters()))
    with pytest.raises(ValueError, match="not a SAC state"):
        SAC(spec.obs_dim, spec.action_dim, SACConfig(hidden=(32, 32))).load_state_dict(cql.state_dict())
