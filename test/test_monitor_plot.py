"""The promotion monitor (every model on the same seeded twin episodes, monitor.jsonl), the progress plot
(success.png: minutes and environment-step panels) and the sim's once-a-minute summary line."""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from vla_rl_ros.learner.evaluate import EvalResult, evaluate_onnx
from vla_rl_ros.learner.monitor import MONITOR_SEED, PromotionMonitor, append_record, read_monitor
from vla_rl_ros.runtime.paths import resolve_path

REACH = resolve_path("models/reach_bc.onnx")


# ----------------------------------------------------------------------------- monitor
def test_monitor_evaluates_a_model_on_the_fixed_seeds_and_records_it(tmp_path):
    got = []
    m = PromotionMonitor(tmp_path / "models", "reach", episodes=3, on_result=got.append, log=lambda s: None)
    m.submit("reach-v0", REACH, reason="incumbent at start")
    [rec] = m.run_pending()
    assert got == [rec]
    [line] = read_monitor(tmp_path / "models" / "monitor.jsonl")
    assert line == json.loads(json.dumps(rec))  # what was written is what was reported
    assert rec["version"] == "reach-v0" and rec["path"] == REACH and rec["task"] == "reach"
    assert rec["episodes"] == 3 and rec["seed"] == MONITOR_SEED and rec["error"] is None and not rec["cached"]
    assert rec["reason"] == "incumbent at start"
    # the same episodes as an in-process evaluation with the same seeds: the figure is reproducible
    ref = evaluate_onnx(REACH, "reach", episodes=3, seed=MONITOR_SEED)
    assert rec["success_rate"] == ref.success_rate and rec["successes"] == sum(ref.successes)
    assert rec["success_ci95"] == pytest.approx(list(ref.wilson_interval()))
    lo, hi = rec["success_ci95"]
    assert 0.0 <= lo <= rec["success_rate"] <= hi <= 1.0
    assert rec["queued"] <= rec["started"] <= rec["finished"]
    # the same model again (a restarted learner re-submits its incumbent): not evaluated again, re-recorded
    m.submit("reach-v0", REACH)
    [again] = m.run_pending()
    assert again["cached"] and again["success_rate"] == rec["success_rate"]
    assert len(read_monitor(tmp_path / "models")) == 2


def test_monitor_survives_a_bad_model_with_an_error_record(tmp_path):
    not_onnx = tmp_path / "garbage.onnx"
    not_onnx.write_bytes(b"not a model")
    calls = []

    def fake(path, task, episodes, seed):  # the good model after the bad ones: the queue keeps going
        calls.append((path, task, episodes, seed))
        return EvalResult(task, episodes, seed, successes=[True, False, True, True], returns=[1, 0, 1, 1],
                          lengths=[5, 9, 5, 5])

    m = PromotionMonitor(tmp_path / "models", "reach", episodes=3, log=lambda s: None)
    m.submit("missing", str(tmp_path / "nope.onnx"))
    m.submit("garbage", str(not_onnx))
    recs = m.run_pending()
    assert [r["version"] for r in recs] == ["missing", "garbage"]
    for r in recs:
        assert r["error"] and r["success_rate"] is None and r["success_ci95"] is None
    assert "nope.onnx" in recs[0]["error"]
    m._evaluate = fake
    m.submit("good", REACH)
    [good] = m.run_pending()
    assert good["error"] is None and good["success_rate"] == 0.75 and calls == [(REACH, "reach", 3, MONITOR_SEED)]
    assert [r["version"] for r in read_monitor(m.path)] == ["missing", "garbage", "good"]


def test_monitor_thread_runs_the_queue_and_a_torn_line_is_skipped(tmp_path):
    done = threading.Event()
    got = []

    def on_result(rec):
        got.append(rec)
        if len(got) == 2:
            done.set()

    fake = lambda path, task, n, seed: EvalResult(task, n, seed, successes=[True] * n, returns=[1.0] * n,  # noqa: E731
                                                  lengths=[3] * n)
    m = PromotionMonitor(tmp_path, "reach", episodes=4, seed=123, evaluate=fake, on_result=on_result,
                         log=lambda s: None).start()
    try:
        m.submit("a", "a.onnx")
        m.submit("b", "b.onnx")
        assert done.wait(60)
    finally:
        m.close()
    assert [r["version"] for r in got] == ["a", "b"] and all(r["seed"] == 123 for r in got)
    with open(m.path, "a") as f:
        f.write('{"version": "torn", "succ')  # a crash mid-write
    append_record(m.path, {"version": "c"})
    assert [r["version"] for r in read_monitor(tmp_path)] == ["a", "b", "c"]
    with pytest.raises(ValueError):
        PromotionMonitor(tmp_path, "reach", episodes=0)


# ----------------------------------------------------------------------------- plot
def synthetic(t0=1_000_000.0, n=120):
    rng = np.random.default_rng(0)
    episodes, promotions = [], []
    steps, t, p = 0, t0 + 20.0, 0.4
    for i in range(n):
        length = int(rng.integers(80, 200))
        steps += length
        t += 4.0
        assisted = bool(rng.random() < 0.5)
        if i in (50, 90):
            p += 0.15
            promotions.append({"kind": "promoted", "version": f"recap-{i}", "env_steps": steps, "t": t,
                               "promoted": True, "data": {"candidate_rate": p + 0.1, "incumbent_rate": p - 0.1}})
        episodes.append({"env_steps": steps, "t": t, "success": bool(rng.random() < p), "assisted": assisted,
                         "n_intervention_steps": int(rng.integers(5, 40)) if assisted else 0, "length": length,
                         "model_versions": ["x"]})
    monitor = [{"version": "bc-start", "success_rate": 0.38, "success_ci95": [0.26, 0.52], "episodes": 50,
                "queued": t0 + 5, "finished": t0 + 60}]
    for i, pr in enumerate(promotions):
        monitor.append({"version": pr["version"], "success_rate": 0.55 + 0.15 * i, "success_ci95": [0.4, 0.8],
                        "episodes": 50, "queued": pr["t"], "finished": pr["t"] + 70})
    monitor.append({"version": "broken", "success_rate": None, "error": "RuntimeError: x", "queued": t0 + 1,
                    "finished": t0 + 2})
    return episodes, promotions, monitor, t0


def test_plot_has_minutes_and_env_step_panels_and_writes_a_png(tmp_path):
    from vla_rl_ros.learner.plot import make_figure, plot_progress

    episodes, promotions, monitor, t0 = synthetic()
    fig = make_figure(episodes, promotions, monitor, t0=t0, title="pick_place: success rate")
    try:
        axes = fig.axes
        assert len(axes) == 4  # success and interventions, against minutes and against environment steps
        titles = [a.get_title() for a in axes]
        assert "against wall-clock minutes" in titles and "against environment steps" in titles
        xlabels = " ".join(a.get_xlabel() for a in axes)
        assert "minutes" in xlabels and "environment steps" in xlabels
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        for want in ("live success", "monitor", "promotion", "episodes with an intervention", "ticks under intervention"):
            assert any(want in lab for lab in labels), (want, labels)
        top_minutes = axes[0]
        # the monitor's figures are drawn (one per evaluated model; the error record is not)
        texts = {t.get_text() for t in top_minutes.texts}
        assert {"38%", "55%", "70%"} <= texts and {"v1", "v2"} <= texts
        # minutes: the last episode ends 8.3 min after the start
        assert top_minutes.get_xlim()[1] == pytest.approx((episodes[-1]["t"] - t0) / 60, rel=0.1)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    out = tmp_path / "run" / "success.png"
    assert plot_progress(episodes, promotions, str(out), monitor=monitor, t0=t0) == str(out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    import matplotlib.image as mpimg

    h, w = mpimg.imread(str(out)).shape[:2]
    assert w > h > 300
    assert [p.name for p in out.parent.iterdir()] == ["success.png"]  # no temp file left behind


def test_plot_copes_with_no_data_and_no_times(tmp_path):
    from vla_rl_ros.learner.plot import make_figure, plot_progress

    plot_progress([], [], str(tmp_path / "empty.png"))
    assert os.path.getsize(tmp_path / "empty.png") > 0
    # episodes without wall times (an older caller): the env-step panels still work
    eps = [{"env_steps": 100 * (i + 1), "success": i % 2 == 0} for i in range(10)]
    fig = make_figure(eps, [{"env_steps": 500, "version": "v"}], None)
    assert len(fig.axes) == 4
    import matplotlib.pyplot as plt

    plt.close(fig)


# ----------------------------------------------------------------------------- summary line
def test_summary_line():
    from vla_rl_ros.commands.sim import summary_line

    hist = []
    for i in range(30):
        assisted = i % 3 == 0
        hist.append({"success": i % 2 == 0, "assisted": assisted, "length": 100,
                     "n_intervention_steps": 20 if assisted else 0})
    mon = {"version": "recap-1", "success_rate": 0.59, "success_ci95": [0.45, 0.72], "episodes": 50}
    line = summary_line(185.0, hist, mon, "recap-1", "95.4", 2)
    una = [e["success"] for e in hist if not e["assisted"]][-20:]
    assert line.startswith("[sim   3.1 min] episodes 30 ")
    assert f"live success {100 * sum(una) / 20:.0f}% (last 20 unassisted)" in line
    assert "monitor 59% [45-72] of 50 ep (recap-1)" in line
    assert "arm model recap-1" in line
    # last 20 episodes: i = 10..29, assisted when i % 3 == 0 -> 12, 15, 18, 21, 24, 27: 6 of 20, 120 of 2000 ticks
    assert "interventions 30% of episodes, 6% of ticks (last 20)" in line
    assert "learner 95 updates/s" in line and line.endswith("promotions 2")
    empty = summary_line(0.0, [], None, None, None, 0)
    assert "episodes 0 " in empty and "monitor -" in empty and "learner -" in empty and "interventions -" in empty
    assert "monitor error (bad)" in summary_line(60.0, hist, {"version": "bad", "success_rate": None}, "x", 1.0, 0)


# ----------------------------------------------------------------------------- learner_node
def test_learner_node_measures_its_incumbent_and_publishes_it(launch, probe, tmp_path):
    from conftest import params_file
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    from diagnostic_msgs.msg import DiagnosticArray

    from ros_helpers import diag
    from vla_rl_ros.algos.export import read_model_metadata
    from vla_rl_ros.buffer import create_run
    from vla_rl_ros.spec import Spec

    r = create_run(tmp_path, "run", Spec(task="reach"), robot_id="test")
    params = params_file(tmp_path / "sim.yaml", learner_node={
        "run_dir": str(r.path), "initial_model": REACH, "task": "reach", "algo": "recap",
        "monitor_episodes": 3, "monitor_seed": 777, "replay_capacity": 5000})
    probe.collect("/rl/learner/events", String, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    probe.collect("/diagnostics", DiagnosticArray)
    node = launch("learner_node", params)

    def monitor_events():
        evs = [json.loads(m.data) for _, m in probe.get("/rl/learner/events")]
        return [e for e in evs if e.get("kind") == "monitor"]

    [ev] = probe.wait_for(monitor_events, 120, "the incumbent's monitor result")
    version = read_model_metadata(REACH)[2]
    rec = ev["data"]
    assert ev["version"] == version and rec["version"] == version and rec["reason"] == "incumbent at start"
    assert rec["episodes"] == 3 and rec["seed"] == 777 and rec["error"] is None and 0 <= rec["success_rate"] <= 1
    [line] = read_monitor(r.models_dir)
    assert line["version"] == version and line["success_rate"] == rec["success_rate"]
    d = probe.wait_for(lambda: [x for x in (diag(m) for _, m in probe.get("/diagnostics"))
                                if x.get("monitor_last_version") == version], 30, "diagnostics with the monitor")[-1]
    assert float(d["updates_per_s"]) >= 0 and int(d["gradient_updates"]) == 0 and d["monitor_pending"] == "0"
    # the replay's capacity reaches the learner, and what it holds and dropped is reported
    assert d["replay_capacity"] == "5000" and d["episodes_held"] == "0" and d["episodes_evicted"] == "0"
    assert d["transitions_evicted"] == "0" and d["transitions"] == "0"
    assert node.alive
