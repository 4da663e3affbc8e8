"""The gate's predicted success of each promoted model beside its live success, from a hand-built registry and
store: which episodes count as live, the figures, the file, the CLI's table."""
import json

import numpy as np
import pytest

from vla_rl_ros.buffer import create_run
from vla_rl_ros.learner.gate_vs_live import (GATE_VS_LIVE_FILE, format_table, gate_vs_live, live_success, row_line,
                                             write_gate_vs_live)
from vla_rl_ros.learner.monitor import append_record
from vla_rl_ros.learner.registry import Registry
from vla_rl_ros.spec import Spec

SPEC = Spec(task="pick_place")


def _episode(w, models, success, *, intervention=False, reason=None, demo=False):
    w.begin_episode("pick_place", seed=None, reward_config={"name": "sparse_success"}, is_demo=demo)
    obs = np.zeros(SPEC.obs_dim, np.float32)
    for i, m in enumerate(models):
        w.add_step(obs, np.zeros(SPEC.action_dim, np.float32), 0.0, obs, intervention=intervention and i == 0,
                   model_version=m)
    w.end_episode(reason or ("success" if success else "timeout"), success)


def _run(tmp_path):
    run = create_run(tmp_path, "r", SPEC, robot_id="sim")
    reg = Registry(run.models_dir)
    reg.append({"version": "v0", "promoted": True, "reason": "initial model", "created": 1.0})
    reg.append({"version": "v1", "promoted": True, "reason": "won", "created": 2.0,
                "twin_success_at_gate": {"rate": 0.8, "episodes": 30, "seed": 1_000_030}})
    reg.append({"version": "vx", "promoted": False, "reason": "lost", "created": 2.5,
                "twin_success_at_gate": {"rate": 0.1, "episodes": 10, "seed": 1_000_060}})
    reg.append({"version": "v2", "promoted": True, "reason": "won", "created": 3.0,
                "twin_success_at_gate": {"rate": 0.9, "episodes": 20, "seed": 1_000_090}})
    append_record(run.models_dir / "monitor.jsonl", {"version": "v1", "success_rate": 0.7})
    append_record(run.models_dir / "monitor.jsonl", {"version": "v2", "success_rate": None, "error": "boom"})
    with run.writer() as w:
        for s in (True, False, False, True):  # v0: 2 of 4
            _episode(w, ["v0"], s)
        for s in (True, True, False, True, False, True, True, True, False, True):  # v1: 7 of 10
            _episode(w, ["v1"], s)
        # not live: assisted, a hot swap, crashed, a reset, a demo; all "successful"
        _episode(w, ["v1"], True, intervention=True)
        _episode(w, ["v1", "v2"], True)
        _episode(w, ["v1"], False, reason="crash")
        _episode(w, ["v2"], False, reason="reset")
        _episode(w, ["v1"], True, demo=True)
    return run


def test_live_success_counts_only_unassisted_single_model_episodes(tmp_path):
    run = _run(tmp_path)
    assert live_success([run.path]) == {"v0": {"episodes": 4, "successes": 2}, "v1": {"episodes": 10, "successes": 7}}


def test_gate_vs_live_one_row_per_promoted_model(tmp_path):
    run = _run(tmp_path)
    rows = gate_vs_live(run.models_dir, [run.path])
    assert [r["version"] for r in rows] == ["v0", "v1", "v2"] and [r["n"] for r in rows] == [0, 1, 2]
    v0, v1, v2 = rows
    assert v0["gate_rate"] is None and v0["live_rate"] == 0.5 and v0["difference"] is None
    assert (v1["gate_rate"], v1["gate_episodes"], v1["monitor_rate"]) == (0.8, 30, 0.7)
    assert (v1["live_rate"], v1["live_episodes"], v1["live_successes"]) == (0.7, 10, 7)
    assert v1["difference"] == pytest.approx(-0.1)
    lo, hi = v1["live_ci95"]
    assert 0.39 < lo < 0.7 < hi < 0.92  # Wilson, 7 of 10
    assert v2["gate_rate"] == 0.9 and v2["live_episodes"] == 0 and v2["live_rate"] is None
    assert v2["monitor_rate"] is None and v2["difference"] is None

    assert row_line(v1) == "v1: gate 80% of 30 twin episodes, live 70% [40-89] of 10 unassisted episodes " \
                           "(-10 points), monitor 70%"
    assert "no unassisted episode yet" in row_line(v2) and "starting model" in row_line(v0)
    table = format_table(rows)
    assert len(table.splitlines()) == 5 and "-10 pts" in table and format_table([]) == "no promoted model yet"

    path = write_gate_vs_live(run.models_dir, rows)
    assert path.name == GATE_VS_LIVE_FILE and json.loads(path.read_text()) == rows


def test_data_gap_prints_the_table(tmp_path, capsys):
    from vla_rl_ros.cli import build_parser

    run = _run(tmp_path)
    args = build_parser().parse_args(["data", "gap", str(run.path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "v1" in out and "-10 pts" in out
    args = build_parser().parse_args(["data", "gap", str(run.path), "--json"])
    assert args.func(args) == 0
    assert [r["version"] for r in json.loads(capsys.readouterr().out)] == ["v0", "v1", "v2"]


def test_the_continual_learner_reports_gate_vs_live_at_each_promotion(tmp_path):
    """After a promotion the learner writes the table and says how the replaced model did live; otherwise only
    when the table changed (or every gate_vs_live_every_s)."""
    import torch

    from vla_rl_ros.algos.export import export_onnx, read_model_metadata
    from vla_rl_ros.learner.continual import ContinualLearner, LearnerConfig
    from vla_rl_ros.learner.evaluate import EvalResult

    class Policy(torch.nn.Module):
        def forward(self, obs):
            return torch.zeros(obs.shape[0], SPEC.action_dim)

    run = create_run(tmp_path, "r", SPEC, robot_id="sim")
    initial = tmp_path / "initial.onnx"
    export_onnx(Policy(), SPEC, initial, {"algorithm": "test"})
    v0 = read_model_metadata(initial)[2]
    with run.writer() as w:
        for s in (True, False, False, False):
            _episode(w, [v0], s)

    def evaluate(path, task, n, seed):  # the candidate always succeeds in the twin, the starting model never
        return EvalResult(task=task, episodes=n, seed=seed, successes=[str(path) != str(initial_copy)] * n)

    logs = []
    cfg = LearnerConfig(algo="recap", gate_episodes=10, checkpoint_every_s=1e9, gate_vs_live_every_s=1e9)
    L = ContinualLearner(str(run.path), cfg, initial_model=str(initial), evaluate=evaluate, log=logs.append, tb=False)
    initial_copy = L.incumbent["path"]
    try:
        [ev] = L._candidate(Policy(), "test")
        assert ev.promoted and ev.data["replaced"] == v0
        L._recap_step = lambda: [ev]  # the step that promoted it
        events = L.step()
        assert [e.kind for e in events] == ["promoted", "gate_vs_live"]
        rep = events[1]
        assert rep.data["replaced"] == v0 and rep.reason == "promotion"
        rows = rep.data["rows"]
        assert [r["version"] for r in rows] == [v0, ev.version]
        assert rows[0]["live_rate"] == 0.25 and rows[1]["gate_rate"] == 1.0 and rows[1]["live_episodes"] == 0
        assert json.loads((run.models_dir / GATE_VS_LIVE_FILE).read_text()) == rows
        assert any(m.startswith(f"gate vs live, {v0} replaced: {v0}: gate - (starting model), live 25%") for m in logs)
        assert L.gate_vs_live() == []  # nothing new
        with run.writer() as w:
            _episode(w, [ev.version], True)
        [again] = L.gate_vs_live()
        assert again.reason == "periodic" and again.data["rows"][1]["live_rate"] == 1.0
    finally:
        L.close()


def test_the_plot_and_the_summary_line_show_gate_beside_live(tmp_path):
    from vla_rl_ros.commands.sim import summary_line
    from vla_rl_ros.learner.plot import make_figure, plot_progress

    episodes = [{"env_steps": 100 * (i + 1), "t": 1000.0 + 5 * i, "success": i % 2 == 0, "length": 100}
                for i in range(40)]
    promotions = [{"version": "v1", "env_steps": 2000, "t": 1095.0, "data": {"candidate_rate": 0.8}},
                  {"version": "v2", "env_steps": 3500, "t": 1170.0, "data": {"candidate_rate": 0.9}}]
    rows = [{"version": "v0", "gate_rate": None, "live_rate": 0.5, "live_episodes": 20},
            {"version": "v1", "gate_rate": 0.8, "live_rate": 0.6, "live_episodes": 15},
            {"version": "v2", "gate_rate": 0.9, "live_rate": None, "live_episodes": 0}]
    fig = make_figure(episodes, promotions, None, t0=1000.0, gate_vs_live=rows)
    try:
        texts = {t.get_text() for t in fig.axes[0].texts}
        assert "60% of 15" in texts and not any(t.startswith("50% of") for t in texts)  # promoted models only
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert any("live success on the arm" in lab for lab in labels)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert plot_progress(episodes, promotions, str(tmp_path / "s.png"), gate_vs_live=rows)

    line = summary_line(60.0, [], None, "v1", None, 1, gate_vs_live=rows)
    assert "arm model v1  gate/live 80%/60% (15 ep, v1)  interventions" in line and line.endswith("promotions 1")
    assert "gate/live 90%/- (0 ep, v2)" in summary_line(60.0, [], None, None, None, 1, gate_vs_live=rows)
    assert "gate/live" not in summary_line(60.0, [], None, "v1", None, 1)
