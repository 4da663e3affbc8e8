"""How far the twin can be trusted: the gate's predicted success of each promoted model beside its live success.

The gate promotes a candidate on its success in paired seeded *twin* episodes (the registry's
``twin_success_at_gate``). Once promoted, the model runs on the arm, and the store records how it does there.
:func:`gate_vs_live` puts the two side by side, one row per promoted model (and the model the run started with):

* ``gate_rate`` / ``gate_episodes``: the candidate's success on the gate's twin episodes (``None`` for the
  starting model, which no gate measured);
* ``monitor_rate``: its success on the monitor's fixed block of twin episodes (:mod:`.monitor`), when measured;
* ``live_rate`` / ``live_episodes`` / ``live_ci95``: its success on the arm, over the completed episodes it ran
  alone from start to end with no intervention (not demos, not a hot-swap episode, not crashed or reset);
* ``difference``: ``live_rate - gate_rate``.

Live episodes run with the policy's exploration noise (``policy_node``'s ``exploration_std``) and the gate's
without, and the gate's figure of a promoted model is biased upwards (it won on those seeds; see
:mod:`.monitor`): a live figure below the gate's is expected even with no reality gap. ``vla-rl-ros sim --gap 0``
measures that baseline; the difference beyond it is the reality gap's (:mod:`vla_rl_ros.twin.gap`).

The continual learner writes the table to ``<run>/models/gate_vs_live.json`` (atomically) after each promotion and
once a minute, and announces it (event ``gate_vs_live``); ``vla-rl-ros data gap RUN`` prints it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .registry import read_jsonl

GATE_VS_LIVE_FILE = "gate_vs_live.json"
LIVE_END_REASONS = ("success", "timeout")  # the policy's own outcomes (not a crash, an e-stop or a reset)


def live_success(stores: Iterable[str | Path]) -> dict[str, dict[str, int]]:
    """``{version: {"episodes", "successes"}}`` of the completed, unassisted, single-model episodes in ``stores``
    (store files or run folders; every segment of a store counts)."""
    from ..buffer import connect, list_stores

    out: dict[str, dict[str, int]] = {}
    for path in list_stores(stores):
        con = connect(path, readonly=True)
        try:
            rows = con.execute(
                "SELECT model_versions, success FROM episodes WHERE is_demo = 0 AND n_intervention_steps = 0 AND "
                f"end_reason IN ({', '.join('?' * len(LIVE_END_REASONS))})", LIVE_END_REASONS).fetchall()
        finally:
            con.close()
        for models, success in rows:
            models = json.loads(models)
            if len(models) != 1 or not models[0]:
                continue
            d = out.setdefault(models[0], {"episodes": 0, "successes": 0})
            d["episodes"] += 1
            d["successes"] += int(bool(success))
    return out


def _wilson(successes: int, n: int) -> list[float] | None:
    from .evaluate import EvalResult

    if n <= 0:
        return None
    r = EvalResult(task="", episodes=n, seed=0, successes=[True] * successes + [False] * (n - successes))
    return list(r.wilson_interval())


def gate_vs_live(models_dir: str | Path, stores: Iterable[str | Path]) -> list[dict[str, Any]]:
    """One row per model the arm was given (the starting model, then each promotion, in order): the gate's
    predicted success beside the live one (see the module's docstring for the fields)."""
    models_dir = Path(models_dir)
    promoted: dict[str, dict] = {}
    for rec in read_jsonl(models_dir / "registry.jsonl"):
        if rec.get("promoted") and rec.get("version"):
            promoted.pop(rec["version"], None)
            promoted[rec["version"]] = rec
    monitor: dict[str, float] = {}
    for rec in read_jsonl(models_dir / "monitor.jsonl"):
        if rec.get("version") and rec.get("success_rate") is not None:
            monitor[rec["version"]] = float(rec["success_rate"])
    live = live_success(stores)
    rows = []
    for i, (version, rec) in enumerate(promoted.items()):
        gate = rec.get("twin_success_at_gate") or {}
        gate_rate = gate.get("rate")
        lv = live.get(version, {"episodes": 0, "successes": 0})
        n, k = lv["episodes"], lv["successes"]
        live_rate = k / n if n else None
        rows.append({
            "n": i, "version": version, "promoted_at": rec.get("created"), "reason": rec.get("reason", ""),
            "gate_rate": None if gate_rate is None else float(gate_rate), "gate_episodes": gate.get("episodes"),
            "monitor_rate": monitor.get(version),
            "live_rate": live_rate, "live_episodes": n, "live_successes": k, "live_ci95": _wilson(k, n),
            "difference": None if gate_rate is None or live_rate is None else live_rate - float(gate_rate),
        })
    return rows


def write_gate_vs_live(models_dir: str | Path, rows: list[dict[str, Any]]) -> Path:
    """``<models_dir>/gate_vs_live.json`` (a temp file, then ``os.replace``)."""
    models_dir = Path(models_dir)
    path = models_dir / GATE_VS_LIVE_FILE
    fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=".gate_vs_live.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(rows, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def row_line(row: dict[str, Any]) -> str:
    """One row in words: ``v3: gate 80% of 30 twin episodes, live 62% [48-74] of 45 unassisted (-18 points)``."""
    gate = (f"gate {_pct(row['gate_rate'])} of {row.get('gate_episodes')} twin episodes"
            if row.get("gate_rate") is not None else "gate - (starting model)")
    if row.get("live_episodes"):
        lo, hi = row["live_ci95"]
        live = (f"live {_pct(row['live_rate'])} [{100 * lo:.0f}-{100 * hi:.0f}] of {row['live_episodes']} "
                f"unassisted episodes")
    else:
        live = "live - (no unassisted episode yet)"
    diff = f" ({100 * row['difference']:+.0f} points)" if row.get("difference") is not None else ""
    mon = f", monitor {_pct(row['monitor_rate'])}" if row.get("monitor_rate") is not None else ""
    return f"{row['version']}: {gate}, {live}{diff}{mon}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The table for a terminal."""
    if not rows:
        return "no promoted model yet"
    head = (f"{'#':>2}  {'model':32s} {'gate':>6} {'(eps)':>6} {'monitor':>8} {'live':>6} {'(eps)':>6} "
            f"{'95% CI':>10} {'live-gate':>10}")
    lines = [head]
    for r in rows:
        ci = f"{100 * r['live_ci95'][0]:.0f}-{100 * r['live_ci95'][1]:.0f}%" if r.get("live_ci95") else "-"
        diff = f"{100 * r['difference']:+.0f} pts" if r.get("difference") is not None else "-"
        lines.append(f"{r['n']:>2}  {r['version'][:32]:32s} {_pct(r['gate_rate']):>6} "
                     f"{str(r.get('gate_episodes') or '-'):>6} "
                     f"{_pct(r.get('monitor_rate')):>8} {_pct(r['live_rate']):>6} {r['live_episodes']:>6} {ci:>10} "
                     f"{diff:>10}")
    lines.append("gate: the candidate's success on the gate's paired twin episodes; live: the arm's completed "
                 "episodes with that model alone and no intervention (with exploration noise)")
    return "\n".join(lines)
