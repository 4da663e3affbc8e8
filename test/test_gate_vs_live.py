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
