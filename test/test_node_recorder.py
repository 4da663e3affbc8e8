"""recorder_node in its own process: rewarded episodes from the live graph, kill -9 safety, bad input."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String

from conftest import REPO, params_file
from ros_helpers import diag
from vla_rl_ros.algos.export import read_model_metadata
from vla_rl_ros.rewards import default_reward_name, make_reward
from vla_rl_ros.runtime.control import PANDA_HOME
from vla_rl_ros.spec import Spec
from vla_rl_ros.stepmsg import encode_layout

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
SPEC = Spec()
REACH_MODEL = os.path.join(REPO, "models", "reach_bc.onnx")


def _recorder_diag(probe):
    out = [diag(m) for _, m in probe.get("/diagnostics") if m.status and m.status[0].name.endswith("recorder")]
    return out[-1] if out else None


def _db(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    return con


def test_sim_graph_fills_the_store_with_rewarded_episodes(launch, probe, tmp_path):
    run_dir = tmp_path / "run"
    params = params_file(tmp_path / "sim.yaml", twin_node={"seed": 11, "task": "reach"},
                         policy_node={"model_path": REACH_MODEL, "task": "reach"},
                         recorder_node={"run_dir": str(run_dir), "task": "reach", "twin_reset": True})
    probe.collect("/rl/episode", String, RELIABLE)
    launch("twin_node", params)
    launch("policy_node", params)
    launch("recorder_node", params)
    probe.wait_for(lambda: len(probe.get("/rl/episode")) >= 3, 120, "three recorded episodes")
    summaries = [json.loads(m.data) for _, m in probe.get("/rl/episode")]
    _, _, version = read_model_metadata(REACH_MODEL)
    assert sum(s["success"] for s in summaries) >= 2  # the shipped reach model solves the task
    seeds = [s["seed"] for s in summaries]
    assert len(set(seeds)) == len(seeds) and all(isinstance(x, int) for x in seeds)  # a reset per episode, seeded
    time.sleep(0.5)  # one commit window
    con = _db(run_dir / "buffer.sqlite")
    try:
        eps = con.execute("SELECT * FROM episodes WHERE end_reason IS NOT NULL ORDER BY id").fetchall()
        assert len(eps) >= 3
        fn = make_reward({"name": default_reward_name("reach")}, SPEC)  # recorder_node's reward: "" default
        for ep in eps[:3]:
            assert ep["task"] == "reach" and ep["is_demo"] == 0
            assert json.loads(ep["model_versions"]) == [version]
            assert json.loads(ep["reward_config"]) == fn.config
            rows = con.execute("SELECT obs, action, reward, next_obs, terminated FROM steps WHERE episode_id=? "
                               "ORDER BY t", (ep["id"],)).fetchall()
            assert len(rows) == ep["length"] > 0
            total = 0.0
            for r in rows:
                o, a, o2 = (np.frombuffer(r[k], np.float32) for k in ("obs", "action", "next_obs"))
                assert abs(r["reward"] - float(fn(o, a, o2, bool(r["terminated"])))) < 1e-5
                total += r["reward"]
            assert abs(total - ep["episode_return"]) < 1e-3
            assert bool(rows[-1]["terminated"]) == bool(ep["success"])
    finally:
        con.close()


class StepSource:
    """Publishes valid /rl/step messages (a hand far from its goal, so episodes end by timeout)."""

    def __init__(self, probe, rate_hz=200.0, version="synthetic", spec=SPEC):
        self.pub = probe.publisher("/rl/step", Float64MultiArray, RELIABLE)
        self.tick = 0
        self.rng = np.random.default_rng(0)
        self.version = version
        self.spec = spec
        q = PANDA_HOME if spec.n_arm == len(PANDA_HOME) else np.zeros(spec.n_arm)
        self.obs = spec.build_observation(q, 0.08, [0.3, 0.0, 0.5], [0.5, 0.1, 0.025], [0.6, -0.2, 0.1])
        self.rate = rate_hz
        self.timer = probe.node.create_timer(1.0 / rate_hz, self.publish)
        self.paused = False

    def message(self, obs=None, action=None, obs_size=None, spec=None):
        spec = spec or self.spec
        labels, sizes = encode_layout(spec.obs_dim, spec.action_dim, self.version)
        if obs_size is not None:
            sizes[0] = obs_size
        obs = self.obs if obs is None else obs
        action = self.rng.uniform(-1, 1, spec.action_dim) if action is None else action
        now = time.time()
        self.tick += 1
        m = Float64MultiArray()
        m.layout.dim = [MultiArrayDimension(label=lb, size=sz, stride=sz) for lb, sz in zip(labels, sizes)]
        m.data = [float(x) for x in (*obs, *action, self.tick, now, now, 0.0, 0.0, self.rate, -1.0, -1.0, 0.0)]
        return m

    def publish(self):
        if not self.paused:
            self.pub.publish(self.message())


def _count_steps(path):
    con = _db(path)
    try:
        return con.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    finally:
        con.close()


def test_kill9_loses_nothing_committed_and_restart_appends(launch, probe, tmp_path):
    run_dir = tmp_path / "run"
    params = params_file(tmp_path / "sim.yaml", recorder_node={"run_dir": str(run_dir), "task": "reach",
                                                                "twin_reset": False, "max_episode_s": 1.0,
                                                                "auto_next_episode": True})
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    rec = launch("recorder_node", params)
    src = StepSource(probe)
    d = probe.wait_for(lambda: (lambda x: x if x and int(x["committed"]) >= 400 else None)(_recorder_diag(probe)),
                       90, "400 committed transitions")
    committed_reported = int(_recorder_diag(probe)["committed"])
    assert committed_reported >= int(d["committed"])
    os.kill(rec.proc.pid, signal.SIGKILL)
    rec.proc.wait(10)
    src.paused = True
    store = run_dir / "buffer.sqlite"
    con = sqlite3.connect(str(store))
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    n_after_kill = _count_steps(store)
    assert n_after_kill >= committed_reported  # everything the recorder said it committed is there

    probe.clear("/diagnostics")
    rec2 = launch("recorder_node", params)
    src.paused = False
    probe.wait_for(lambda: _count_steps(store) > n_after_kill + 100, 60, "the restarted recorder appending")
    con = _db(store)
    try:
        reasons = [r[0] for r in con.execute("SELECT end_reason FROM episodes ORDER BY id")]
        assert "crash" in reasons  # the episode cut by the kill was closed on reopen
        assert con.execute("SELECT COUNT(DISTINCT session_id) FROM episodes").fetchone()[0] == 2
    finally:
        con.close()
    assert rec2.alive
    assert "left open by a crash" in rec2.log()


def test_bad_steps_are_rejected_counted_and_never_stored(launch, probe, tmp_path):
    run_dir = tmp_path / "run"
    params = params_file(tmp_path / "sim.yaml", recorder_node={"run_dir": str(run_dir), "task": "reach",
                                                                "twin_reset": False, "max_episode_s": 100.0})
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    rec = launch("recorder_node", params)
    src = StepSource(probe, rate_hz=50.0)
    probe.wait_for(lambda: (lambda x: x and int(x["transitions"]) >= 20)(_recorder_diag(probe)), 60, "good transitions")
    src.paused = True
    time.sleep(0.3)
    bad_obs = src.obs.copy()
    bad_obs[3] = np.nan
    src.pub.publish(src.message(obs=bad_obs))                        # NaN
    src.pub.publish(src.message(obs_size=SPEC.obs_dim + 1))          # wrong sizes
    src.pub.publish(src.message(action=np.array([np.inf, 0, 0, 0])))  # Inf action
    d = probe.wait_for(lambda: (lambda x: x if x and int(x["rejected_steps"]) >= 3 else None)(_recorder_diag(probe)),
                       30, "three rejected steps in diagnostics")
    assert d["_level"] == 1 and d["_message"]  # WARN, with the last error
    time.sleep(0.3)
    con = _db(run_dir / "buffer.sqlite")
    try:
        for ob, ac, nob in con.execute("SELECT obs, action, next_obs FROM steps"):
            for blob in (ob, ac, nob):
                assert np.all(np.isfinite(np.frombuffer(blob, np.float32)))
    finally:
        con.close()
    assert rec.alive and "rejected step" in rec.log()


def test_a_non_panda_spec_reaches_the_recorder_and_run_json(launch, probe, tmp_path):
    """A 6-joint arm declared once in the params file's /** section: the recorder takes its 6-joint steps,
    writes its spec to run.json and rejects a Panda-shaped step."""
    from arms import xarm6_params, xarm6_spec

    spec = xarm6_spec("reach", "joint_delta")
    run_dir = tmp_path / "run"
    params = params_file(tmp_path / "arm.yaml", common=xarm6_params("reach", "joint_delta"),
                         recorder_node={"run_dir": str(run_dir), "twin_reset": False, "max_episode_s": 100.0})
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    rec = launch("recorder_node", params)
    src = StepSource(probe, rate_hz=50.0, spec=spec)
    probe.wait_for(lambda: (lambda x: x and int(x["transitions"]) >= 20)(_recorder_diag(probe)), 60,
                   "transitions of the 6-joint arm")
    assert int(_recorder_diag(probe)["rejected_steps"]) == 0
    run = json.loads((run_dir / "run.json").read_text())
    assert run["spec"] == spec.to_dict()
    assert run["spec"]["arm_joints"] == [f"joint{i}" for i in range(1, 7)] and run["spec"]["obs_dim"] == 25
    src.paused = True
    time.sleep(0.3)
    panda_obs = SPEC.build_observation(PANDA_HOME, 0.08, [0.3, 0.0, 0.5], [0.5, 0.1, 0.025], [0.6, -0.2, 0.1])
    src.pub.publish(src.message(obs=panda_obs, spec=SPEC))  # the Panda's layout
    probe.wait_for(lambda: (lambda x: x and int(x["rejected_steps"]) >= 1)(_recorder_diag(probe)), 30,
                   "the Panda-shaped step rejected")
    time.sleep(0.3)
    con = _db(run_dir / "buffer.sqlite")
    try:
        sizes = {(len(o) // 4, len(a) // 4) for o, a in con.execute("SELECT obs, action FROM steps")}
    finally:
        con.close()
    assert sizes == {(spec.obs_dim, spec.action_dim)}
    assert rec.alive


def test_reward_learned_rewards_steps_with_the_reward_model(launch, probe, tmp_path):
    """``reward: learned``: each stored step's reward is the saved reward model's r(s, a), and the episode's reward
    config names the model's version (so the store says which model rewarded it)."""
    import torch

    from vla_rl_ros.preferences.onnx_reward import OnnxRewardModel
    from vla_rl_ros.preferences.reward_model import RewardEnsemble, save_reward_model

    torch.manual_seed(0)
    saved = save_reward_model(RewardEnsemble(SPEC.obs_dim, SPEC.action_dim, hidden=(16,)), tmp_path / "models",
                              SPEC, {"training_steps": 0})
    run_dir = tmp_path / "run"
    params = params_file(tmp_path / "sim.yaml", recorder_node={
        "run_dir": str(run_dir), "task": "reach", "twin_reset": False, "max_episode_s": 100.0, "reward": "learned",
        "reward_params_json": json.dumps({"models_dir": str(tmp_path / "models")})})
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    rec = launch("recorder_node", params)
    src = StepSource(probe, rate_hz=50.0)
    probe.wait_for(lambda: (lambda x: x and int(x["transitions"]) >= 20)(_recorder_diag(probe)), 60, "transitions")
    src.paused = True
    time.sleep(0.5)  # one commit window
    model = OnnxRewardModel(saved.path)
    con = _db(run_dir / "buffer.sqlite")
    try:
        rows = con.execute("SELECT obs, action, reward FROM steps ORDER BY id").fetchall()
        [(cfg,)] = con.execute("SELECT reward_config FROM episodes").fetchall()
    finally:
        con.close()
    obs = np.stack([np.frombuffer(r["obs"], np.float32) for r in rows])
    act = np.stack([np.frombuffer(r["action"], np.float32) for r in rows])
    np.testing.assert_allclose([r["reward"] for r in rows], model(obs, act) - 1.0, atol=1e-5)  # offset 1: a cost
    cfg = json.loads(cfg)
    assert cfg["name"] == "learned" and cfg["params"]["version"] == saved.version and cfg["params"]["task"] == "reach"
    assert rec.alive
