"""The default rewards' optimum is finishing the task; the seed's pick_and_place / reach reward hovering.

The defaults: ``reach_cost`` (reach) and ``pick_place_task`` (pick_place), see vla_rl_ros/rewards/finishing.py.

Discounted returns of hand-built behaviours (observations in the spec's layout,
episode ends from the same SuccessDetector the recorder and the gym env use),
for learner discounts across [0.9, 0.999] and for every task's default reward:

* finish now: into the tolerance and held for the detector's N ticks (the soonest possible success);
* hover forever: just outside the tolerance (pick_place: the cube held there), never terminating;
* dip forever: N-1 ticks inside, one outside, repeated (never completes the N-tick success);
* hover K ticks, then finish.

The learner's discount differs from the reward's shaping discount (0.99) in most
of the grid on purpose: the defaults must hold for any learner discount there.
"""
import numpy as np
import pytest

from vla_rl_ros.buffer import Writer, connect
from vla_rl_ros.recorder import EpisodeRecorder, RecorderConfig
from vla_rl_ros.rewards import (DEFAULT_REWARD, FinishTaskReward, PickAndPlace, Reach, SuccessDetector,
                                default_reward_name, make_reward)
from vla_rl_ros.spec import Spec
from vla_rl_ros.stepmsg import StepRecord

GAMMAS = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
N_TICKS = (1, 3, 5)  # detector's n_consecutive; env default 3, recorder 0.15 s at 20 Hz = 3
TOL = 0.05
D_OUT, D_IN = 0.06, 0.01  # tracked point's distance to the goal: just outside / well inside the tolerance
GOAL = np.array([0.5, 0.1, 0.1])
TASKS = ("reach", "pick_place")


def state(task: str, d: float) -> np.ndarray:
    """Tracked point (pick_place: the cube, held; reach: the hand) at distance ``d`` from the goal."""
    spec = Spec(task=task)
    at = GOAL - np.array([0.0, d, 0.0])
    if task == "pick_place":  # fingers closed on the cube (0.05 m), hand 1 cm above its centre
        return spec.build_observation(np.zeros(spec.n_arm), 0.05, at + [0, 0, 0.01], at, GOAL)
    return spec.build_observation(np.zeros(spec.n_arm), 0.08, at, [0.6, -0.1, 0.025], GOAL)


def detector(task, n):
    return SuccessDetector(task, tolerance=TOL, n_consecutive=n, spec=Spec(task=task))


def _rewards(fn, task, seq, term):
    o = np.asarray(seq, dtype=np.float64)
    a = np.zeros((len(o) - 1, Spec(task=task).action_dim))
    return np.atleast_1d(fn(o[:-1], a, o[1:], np.asarray(term, dtype=bool)))


def finite_return(fn, task, seq, gamma, n):
    """Return of ``seq`` = s_0..s_T; the detector must end the episode in success exactly at s_T."""
    det = detector(task, n)
    term = [det.update(o) for o in seq[1:]]
    assert term[-1] and not any(term[:-1]), "the behaviour must succeed exactly on its last tick"
    r = _rewards(fn, task, seq, term)
    return float(np.sum(gamma ** np.arange(len(r)) * r))


def periodic_return(fn, task, cycle, gamma, n):
    """Return of starting at ``cycle[-1]`` and repeating ``cycle`` forever (exact geometric sum)."""
    det = detector(task, n)
    det.update(cycle[-1])
    assert not any(det.update(o) for o in list(cycle) * (n + 2)), "a hover must never end the episode"
    r = _rewards(fn, task, [cycle[-1], *cycle], np.zeros(len(cycle), bool))
    return float(np.sum(gamma ** np.arange(len(r)) * r) / (1.0 - gamma ** len(r)))


def behaviours(fn, task, gamma, n, ks=(1, 10, 100)):
    out, i = state(task, D_OUT), state(task, D_IN)
    v = {"finish_now": finite_return(fn, task, [out] + [i] * n, gamma, n),
         "hover_forever": periodic_return(fn, task, [out], gamma, n)}
    if n >= 2:
        v["dip_forever"] = periodic_return(fn, task, [i] * (n - 1) + [out], gamma, n)
    for k in ks:
        v[f"hover_{k}_then_finish"] = finite_return(fn, task, [out] * (k + 1) + [i] * n, gamma, n)
    return v


@pytest.mark.parametrize("n", N_TICKS)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("task", TASKS)
def test_every_default_reward_prefers_finishing_now(task, gamma, n):
    fn = make_reward(default_reward_name(task), Spec(task=task))
    v = behaviours(fn, task, gamma, n)
    for name, value in v.items():
        if name != "finish_now":
            assert v["finish_now"] > value, (DEFAULT_REWARD[task], gamma, n, v)
    for name, value in v.items():  # after the same K ticks of hovering, finishing beats hovering on forever
        if name.endswith("_then_finish"):
            assert value > v["hover_forever"], (gamma, n, v)


def test_the_defaults_are_the_finishing_rewards_everywhere():
    from vla_rl_ros.twin.env import DEFAULT_REWARD as ENV_DEFAULT

    assert DEFAULT_REWARD == {"reach": "reach_cost", "pick_place": "pick_place_task"}
    assert ENV_DEFAULT == {t: {"name": n} for t, n in DEFAULT_REWARD.items()}
    assert default_reward_name("pick_and_place") == "pick_place_task"
    for task in TASKS:
        fn = make_reward(default_reward_name(task), Spec(task=task))
        assert fn.max_gamma >= max(GAMMAS)  # the proof's condition gamma <= gamma_s / (1 - c) holds on the grid


@pytest.mark.parametrize("gamma", (0.99, 0.995, 0.999))
def test_seed_pick_and_place_prefers_hovering(gamma):
    """The bug the default replaces: holding the cube just outside the goal beats finishing (N = 3 ticks)."""
    v = behaviours(PickAndPlace(Spec(task="pick_place")), "pick_place", gamma, 3)
    assert v["hover_forever"] > v["finish_now"], v


@pytest.mark.parametrize("gamma", GAMMAS)
def test_seed_reach_prefers_dipping_in_and_out(gamma):
    v = behaviours(Reach(Spec(task="reach")), "reach", gamma, 3)
    assert v["dip_forever"] > v["finish_now"], v


def test_readme_numbers():
    """The figures quoted in README.md ("Rewards"), gamma 0.99, N = 3 ticks."""
    seed = behaviours(PickAndPlace(Spec(task="pick_place")), "pick_place", 0.99, 3, ks=())
    assert seed["hover_forever"] == pytest.approx(49.3, abs=0.05)
    assert seed["dip_forever"] == pytest.approx(719.6, abs=0.05)
    assert seed["finish_now"] == pytest.approx(31.2, abs=0.05)
    new = behaviours(make_reward("pick_place_task", Spec(task="pick_place")), "pick_place", 0.99, 3, ks=())
    assert new["finish_now"] == pytest.approx(0.985, abs=0.0005)
    assert new["hover_forever"] == pytest.approx(-0.965, abs=0.0005)
    assert new["dip_forever"] == pytest.approx(-0.965, abs=0.0005)
    reach_seed = behaviours(Reach(Spec(task="reach")), "reach", 0.99, 3, ks=())
    assert reach_seed["dip_forever"] == pytest.approx(64.4, abs=0.05)
    assert reach_seed["finish_now"] == pytest.approx(2.94, abs=0.005)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("task", TASKS)
def test_return_bound_on_random_trajectories(task, gamma):
    """The docstring's bound on random walks (grasps, drops): G <= -Phi(s_0) - c + gamma^(T-1) B [terminated]
    (pick_place_task); G <= -c (1 - gamma^T) / (1 - gamma) + gamma^(T-1) B [terminated] (reach_cost, every tick
    costs at least c)."""
    spec = Spec(task=task)
    fn = make_reward(default_reward_name(task), spec)
    c, B = fn.params["time_penalty"], fn.params["success_bonus"]
    rng = np.random.default_rng(0)
    for _ in range(100):
        T = int(rng.integers(1, 60))
        hand = GOAL + np.cumsum(rng.normal(0, 0.03, (T + 1, 3)), axis=0)
        obj = np.where(rng.random((T + 1, 1)) < 0.5, hand - [0, 0, 0.01], GOAL + rng.normal(0, 0.1, 3))
        width = rng.choice([0.05, 0.08], T + 1)
        seq = np.array([spec.build_observation(np.zeros(spec.n_arm), w, h, o, GOAL)
                        for w, h, o in zip(width, hand, obj)], dtype=np.float64)
        terminal = bool(rng.random() < 0.5)
        term = np.zeros(T, bool)
        term[-1] = terminal
        r = _rewards(fn, task, seq, term)
        G = float(np.sum(gamma ** np.arange(T) * r))
        if isinstance(fn, FinishTaskReward):
            assert G <= -fn.potential(seq[0]) - c + gamma ** (T - 1) * B * terminal + 1e-9
        else:
            assert G <= -c * (1 - gamma ** T) / (1 - gamma) + gamma ** (T - 1) * B * terminal + 1e-9


# ------------------------------------------------ the bonus is paid on the terminal success tick, once
def _expert_episode(task):
    from vla_rl_ros.twin.env import TwinEnv
    from vla_rl_ros.twin.expert import ScriptedExpert

    env = TwinEnv(task=task)
    try:
        obs, _ = env.reset(seed=3)
        ex = ScriptedExpert(env.spec_)
        steps = []
        for _ in range(env.max_episode_steps):
            a = ex(obs)
            o2, r, term, trunc, info = env.step(a)
            steps.append((obs, a, r, o2, term))
            obs = o2
            if term or trunc:
                break
        return env.reward_fn, env.success.n_consecutive, steps
    finally:
        env.close()


@pytest.mark.parametrize("task", TASKS)
def test_gym_env_pays_the_bonus_on_the_terminal_success_tick(task):
    fn, _, steps = _expert_episode(task)
    assert fn.config["name"] == DEFAULT_REWARD[task]
    assert steps[-1][4] and not any(s[4] for s in steps[:-1]), "the expert's episode ends in success"
    for o, a, r, o2, term in steps[:-1]:  # no bonus before the end
        assert r == pytest.approx(_formula(fn, o, o2, False), abs=1e-6)
    o, a, r, o2, _ = steps[-1]  # the terminal success tick: the bonus (pick_place_task: zero potential at s')
    assert r == pytest.approx(_formula(fn, o, o2, True), abs=1e-6)


def _formula(fn, o, o2, terminated):
    """The default rewards' formulas written out (vla_rl_ros/rewards/finishing.py), from the params."""
    c, B = fn.params["time_penalty"], fn.params["success_bonus"]
    if isinstance(fn, FinishTaskReward):
        return -c + (0.0 if terminated else fn.params["gamma"] * fn.potential(o2)) - fn.potential(o) + B * terminated
    d = np.linalg.norm(o2[fn._view.spec.obs_slice("goal_pos")] - o2[fn._view.spec.obs_slice("ee_pos")])
    return -(fn.params["distance_weight"] * d + c) + B * terminated


def test_recorder_pays_the_bonus_on_the_terminal_success_tick(tmp_path):
    fn, n, steps = _expert_episode("reach")
    spec = Spec(task="reach")
    w = Writer(tmp_path / "buffer.sqlite", spec=spec, commit_window_s=0.05)
    ended = []
    rec = EpisodeRecorder(w, spec, make_reward(default_reward_name("reach"), spec),
                          RecorderConfig(task="reach", max_episode_s=10.0, success_hold_s=n / 20.0, settle_s=0.0),
                          on_episode_end=ended.append)
    rec.arm(seed=3, not_before=0.0)
    ticks = [(o, a) for o, a, *_ in steps] + [(steps[-1][3], np.zeros(spec.action_dim, np.float32))]
    for k, (o, a) in enumerate(ticks):
        rec.on_step(StepRecord(obs=np.asarray(o, np.float32), action=np.asarray(a, np.float32), tick=k,
                               obs_stamp=1e9 + k, cmd_stamp=1e9 + k, intervention=False, hold=False,
                               control_rate_hz=20.0, model_version="m1"))
        if ended:
            break
    w.close()
    assert len(ended) == 1 and ended[0]["success"]
    con = connect(tmp_path / "buffer.sqlite", readonly=True)
    rows = con.execute("SELECT reward, terminated FROM steps ORDER BY t").fetchall()
    con.close()
    assert len(rows) == len(steps) and [bool(t) for _, t in rows] == [s[4] for s in steps]
    np.testing.assert_allclose([r for r, _ in rows], [s[2] for s in steps], atol=1e-5)  # same rewards as the env
    assert rows[-1][0] == pytest.approx(_formula(fn, steps[-1][0], steps[-1][3], True), abs=1e-5)


@pytest.fixture(scope="module")
def positive_reward_models(tmp_path_factory):
    """A saved reward model whose raw output is about +0.9 everywhere: the offset Bradley–Terry leaves free."""
    import torch

    from vla_rl_ros.preferences.reward_model import RewardEnsemble, save_reward_model

    spec = Spec(task="reach")
    torch.manual_seed(0)
    model = RewardEnsemble(spec.obs_dim, spec.action_dim, hidden=(16,))
    with torch.no_grad():
        for m in model.members:
            last = [x for x in m.modules() if isinstance(x, torch.nn.Linear)][-1]
            last.weight.mul_(0.01)
            last.bias.fill_(1.5)  # tanh(1.5) ~ 0.9
    models = tmp_path_factory.mktemp("learned") / "models"
    save_reward_model(model, models, spec, {"training_steps": 0})
    return models


@pytest.mark.parametrize("gamma", GAMMAS)
def test_the_learned_reward_is_a_cost_so_finishing_wins(positive_reward_models, gamma):
    """``reward: learned`` (rewards/learned.py): a model's raw r(s, a) may be positive near the goal (the labels fix
    it only up to a constant), and then hovering forever beats finishing; the default offset makes every tick a
    cost, so finishing now beats every behaviour whatever the model learnt."""
    params = {"models_dir": str(positive_reward_models), "task": "reach"}
    raw = behaviours(make_reward({"name": "learned", "params": {**params, "offset": 0.0}}, Spec(task="reach")),
                     "reach", gamma, 3)
    assert raw["hover_forever"] > raw["finish_now"]  # the failure the offset removes
    v = behaviours(make_reward({"name": "learned", "params": params}, Spec(task="reach")), "reach", gamma, 3)
    for name, value in v.items():
        if name != "finish_now":
            assert v["finish_now"] > value, (gamma, v)
