"""IQL: the expectile loss by hand, a two-state dataset whose V, Q and policy are known in closed form,
ONNX parity, exact resume, and `train --algo iql --data RUN` end to end."""
import argparse
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vla_rl_ros.algos.checkpoint import load_checkpoint, save_checkpoint
from vla_rl_ros.algos.export import INPUT_NAME, OUTPUT_NAME, export_onnx, read_model_metadata
from vla_rl_ros.algos.iql import IQL, IQLConfig, expectile_loss
from vla_rl_ros.algos.learners import learner_from_state, make_learner
from vla_rl_ros.algos.sac import Batch
from vla_rl_ros.spec import Spec

torch.set_num_threads(1)


def test_expectile_loss_at_one_half_is_half_the_squared_error():
    u = torch.tensor([2.0, -2.0, 0.5, -0.25, 0.0])
    assert torch.allclose(expectile_loss(u, 0.5), 0.5 * u**2)


def test_expectile_loss_weights_are_asymmetric_at_0_7():
    u = torch.tensor([2.0, -2.0, 0.5, -0.5])
    # positive residuals (target above V) weigh tau = 0.7, negative ones 1 - tau = 0.3
    want = torch.tensor([0.7 * 4.0, 0.3 * 4.0, 0.7 * 0.25, 0.3 * 0.25])
    assert torch.allclose(expectile_loss(u, 0.7), want)
    # so the minimiser over a constant v of E[L(q - v)] with q in {0, 1} equally is tau itself:
    # tau (1 - v) = (1 - tau) v  ->  v = tau
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.5)
    q = torch.tensor([0.0, 1.0])
    for _ in range(200):
        opt.zero_grad()
        expectile_loss(q - v, 0.7).mean().backward()
        opt.step()
    assert abs(float(v.detach()) - 0.7) < 1e-4


def _two_state_data(n=256):
    """State A = [1, 0]: a one-step bandit, action -0.5 pays 0, action +0.5 pays 1 (terminal).
    State B = [0, 1]: one action (0), reward 0, leads to A (not terminal)."""
    A, B = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    obs, act, rew, nxt, done = [], [], [], [], []
    for i in range(n):
        if i % 4 == 3:
            obs.append(B), act.append([0.0]), rew.append(0.0), nxt.append(A), done.append(0.0)
        else:
            good = (i // 4 + i) % 2 == 0  # half of A's rows each way
            obs.append(A), act.append([0.5 if good else -0.5]), rew.append(1.0 if good else 0.0)
            nxt.append(A), done.append(1.0)
    t = lambda x: torch.tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    return Batch(t(obs), t(act), t(rew), t(nxt), t(done))


def test_iql_learns_the_closed_form_value_q_and_weighted_policy():
    cfg = IQLConfig(hidden=(32, 32), lr=3e-3, tau=0.05, batch_size=256, seed=0)
    iql = IQL(2, 1, cfg)
    data = _two_state_data()
    for _ in range(1500):
        m = iql.update(data)
    A, B = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    with torch.no_grad():
        v_a, v_b = float(iql.value(A)), float(iql.value(B))
        q_good = float(iql.critic(A, torch.tensor([[0.5]])).mean())
        q_bad = float(iql.critic(A, torch.tensor([[-0.5]])).mean())
        q_b = float(iql.critic(B, torch.tensor([[0.0]])).mean())
    # Q(A, .) = r; V(A) = the 0.7-expectile of {0, 1} (equally often) = 0.7; Q(B) = gamma V(A); V(B) = Q(B)
    assert q_good == pytest.approx(1.0, abs=0.03) and q_bad == pytest.approx(0.0, abs=0.03)
    assert v_a == pytest.approx(0.7, abs=0.03)
    assert q_b == pytest.approx(0.99 * 0.7, abs=0.03) and v_b == pytest.approx(0.99 * 0.7, abs=0.03)
    # AWR with weights exp(3 (Q - V)): the weighted mean of the two actions
    w_good, w_bad = math.exp(3.0 * (1.0 - 0.7)), math.exp(3.0 * (0.0 - 0.7))
    want = (0.5 * w_good - 0.5 * w_bad) / (w_good + w_bad)  # 0.453
    assert float(iql.act(np.array([1.0, 0.0]))[0]) == pytest.approx(want, abs=0.03)
    assert {"value_loss", "critic_loss", "actor_loss", "adv_mean", "weight_mean"} <= set(m)
    # the advantages used for the weights are Q_hat - V
    adv = iql.advantages(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.5], [-0.5]]))
    assert adv[0] == pytest.approx(0.3, abs=0.05) and adv[1] == pytest.approx(-0.7, abs=0.05)


def test_iql_beta_zero_is_behaviour_cloning():
    """With beta = 0 every weight is 1: the policy is the data's mean action in A (0)."""
    iql = IQL(2, 1, IQLConfig(hidden=(32, 32), lr=3e-3, beta=0.0, seed=1))
    data = _two_state_data()
    for _ in range(600):
        iql.update(data)
    assert float(iql.act(np.array([1.0, 0.0]))[0]) == pytest.approx(0.0, abs=0.03)


def test_iql_onnx_parity_and_exact_resume(tmp_path):
    spec = Spec(task="reach")
    rng = np.random.default_rng(0)
    iql = make_learner("iql", spec.obs_dim, spec.action_dim, hidden=(64, 64), seed=3)
    iql.fit_obs_normalizer(rng.normal(0.2, 0.3, size=(300, spec.obs_dim)))

    def batch():
        n = 64
        return Batch(*(torch.tensor(x, dtype=torch.float32) for x in (
            rng.normal(0.2, 0.3, size=(n, spec.obs_dim)), rng.uniform(-1, 1, size=(n, spec.action_dim)),
            rng.normal(size=n), rng.normal(0.2, 0.3, size=(n, spec.obs_dim)), rng.integers(0, 2, n))))

    for _ in range(30):
        iql.update(batch())
    path = tmp_path / "iql.onnx"
    export_onnx(iql.policy_module(), spec, path, {"algorithm": "iql"})
    obs = rng.normal(0.2, 0.5, size=(17, spec.obs_dim)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([OUTPUT_NAME], {INPUT_NAME: obs})[0]
    assert np.abs(got - iql.act(obs)).max() < 1e-5
    assert read_model_metadata(path)[1]["algorithm"] == "iql"
    from vla_rl_ros.runtime.onnx_policy import load_validated  # policy_node's loader takes it

    assert np.abs(load_validated(str(path), None, spec).act(obs[0]) - got[0]).max() < 1e-5
    # resume from a checkpoint file: the rebuilt learner continues bit-exactly
    save_checkpoint(tmp_path / "iql.pt", {"algo": iql.state_dict()})
    clone = learner_from_state(load_checkpoint(tmp_path / "iql.pt")["algo"])
    b = batch()
    m1, m2 = iql.update(b), clone.update(b)
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    assert all(torch.equal(p, q) for p, q in zip(iql.actor.parameters(), clone.actor.parameters()))


def test_make_learner_refuses_unknown_settings():
    with pytest.raises(ValueError, match="expectile"):
        make_learner("iql", 3, 2, expectle=0.9)
    with pytest.raises(ValueError, match="expectile"):
        IQLConfig(expectile=1.0)


def _reach_run(tmp_path, spec):
    """A run with 12 short reach episodes: 4 toward the goal (successes), 8 random."""
    from vla_rl_ros.buffer import create_run, import_episodes

    run = create_run(tmp_path, "run", spec, robot_id="test")
    rng = np.random.default_rng(0)
    eps = []
    for i in range(12):
        T = 15
        obs = rng.normal(0.3, 0.1, size=(T + 1, spec.obs_dim)).astype(np.float32)
        act = rng.uniform(-1, 1, size=(T, spec.action_dim)).astype(np.float32)
        good = i < 4
        eps.append({"obs": obs, "actions": act, "rewards": np.full(T, 1.0 if good else -1.0, np.float32),
                    "success": good, "terminated": good, "task": "reach"})
    import_episodes(run.buffer_path, eps, is_demo=False, spec=spec)
    return run


@pytest.mark.parametrize("algo", ["iql", "cql"])
def test_train_cli_offline_writes_an_onnx_model_with_lineage(tmp_path, algo):
    from vla_rl_ros.commands.train import run as train

    spec = Spec(task="reach")
    run = _reach_run(tmp_path, spec)
    out = tmp_path / f"{algo}.onnx"
    args = argparse.Namespace(algo=algo, data=[str(run.path)], env=None, steps=20, out=str(out), seed=0,
                              tb=str(tmp_path / "tb"), demo_ratio=None, bc_init_steps=None, utd=None, hindsight=0,
                              all=False, eval_episodes=0)
    assert train(args) == 0
    got_spec, lineage, version = read_model_metadata(out)
    assert got_spec == spec and lineage["algorithm"] == algo and version.startswith(algo + "-")
    assert lineage["training_steps"] == 20 and lineage["data_range"]["episodes"] == 12
    assert f'"seed": 0' in lineage["config"]
