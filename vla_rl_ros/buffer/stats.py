"""Summaries of stores: per model version episodes, success rate, interventions, returns."""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .run import Run, list_stores
from .schema import connect, read_meta
from .segments import archived_segments, describe_archived, series_of


def _paths(runs: Any) -> list[Path]:
    if isinstance(runs, (str, Path, Run)):
        runs = [runs]
    return list_stores(r.path if isinstance(r, Run) else r for r in runs)


def group_key(is_demo: bool, model_versions: list[str]) -> str:
    """Episodes are grouped by the models that acted in them: ``"v3"``, ``"v3>v4"`` (hot swap), ``"demo"``."""
    if is_demo:
        return "demo"
    return ">".join(m or "?" for m in model_versions) or "(no steps)"


def stats(runs: Any) -> dict[str, Any]:
    """Statistics over one or more runs/stores (a path, a :class:`Run`, or a list of them).

    Returns ``{"stores": [...], "by_model": [...], "end_reasons": {...}, "totals": {...}, "archived": [...]}``.
    A store's segments (:mod:`.segments`) are rows of ``stores`` and count together; ``archived`` lists the
    archive records of their series (those segments are not counted).
    ``by_model`` rows (completed episodes only): ``model``, ``episodes``,
    ``successes``, ``success_rate``, ``mean_return``, ``std_return``,
    ``min_return``, ``max_return``, ``mean_length``, ``steps``,
    ``intervention_steps``, ``intervention_rate`` (per step),
    ``mean_step_reward``.
    """
    stores = []
    groups: dict[str, list[tuple]] = defaultdict(list)
    reasons: Counter[str] = Counter()
    paths = _paths(runs)
    for path in paths:
        con = connect(path, readonly=True)
        try:
            meta = read_meta(con)
            n_steps = con.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
            n_frames = con.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
            rows = con.execute("SELECT is_demo, model_versions, success, episode_return, length, "
                               "n_intervention_steps, end_reason FROM episodes").fetchall()
        finally:
            con.close()
        n_open = 0
        for is_demo, models, success, ret, length, n_int, reason in rows:
            if reason is None:
                n_open += 1
                continue
            reasons[reason] += 1
            groups[group_key(bool(is_demo), json.loads(models))].append((bool(success), ret, length, n_int))
        stores.append({"path": str(path), "robot_id": meta.get("robot_id", ""), "store_id": meta.get("store_id"),
                       "schema_version": int(meta["schema_version"]), "episodes": len(rows), "open_episodes": n_open,
                       "steps": n_steps, "frames": n_frames, "rejected_steps": int(meta.get("rejected_steps", 0)),
                       "dropped_steps": int(meta.get("dropped_steps", 0))})
    by_model = []
    for key in sorted(groups, key=lambda k: (k == "demo", k)):
        g = groups[key]
        n = len(g)
        rets = [x[1] for x in g]
        mean = sum(rets) / n
        steps = sum(x[2] for x in g)
        n_int = sum(x[3] for x in g)
        by_model.append({
            "model": key, "episodes": n, "successes": sum(x[0] for x in g),
            "success_rate": sum(x[0] for x in g) / n,
            "mean_return": mean, "std_return": math.sqrt(sum((r - mean) ** 2 for r in rets) / n),
            "min_return": min(rets), "max_return": max(rets), "mean_length": steps / n, "steps": steps,
            "intervention_steps": n_int, "intervention_rate": n_int / steps if steps else 0.0,
            "mean_step_reward": sum(rets) / steps if steps else 0.0,
        })
    totals = {k: sum(s[k] for s in stores)
              for k in ("episodes", "open_episodes", "steps", "frames", "rejected_steps", "dropped_steps")}
    bases = list(dict.fromkeys(series_of(p)[0] for p in paths))
    archived = [r for b in bases for r in archived_segments(b)]
    return {"stores": stores, "by_model": by_model, "end_reasons": dict(reasons), "totals": totals,
            "archived": archived}


def format_stats(st: dict[str, Any]) -> str:
    """Render :func:`stats` output as markdown tables."""
    lines = ["| store | robot | episodes | open | steps | frames | rejected | dropped |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in st["stores"]:
        lines.append(f"| {s['path']} | {s['robot_id'] or '-'} | {s['episodes']} | {s['open_episodes']} | "
                     f"{s['steps']} | {s['frames']} | {s['rejected_steps']} | {s.get('dropped_steps', 0)} |")
    lines += ["", "| model | episodes | success | return mean ± std [min, max] | length | interventions | reward/step |",
              "|---|---:|---:|---|---:|---:|---:|"]
    for r in st["by_model"]:
        lines.append(
            f"| {r['model']} | {r['episodes']} | {r['successes']}/{r['episodes']} ({100 * r['success_rate']:.0f}%) | "
            f"{r['mean_return']:.3f} ± {r['std_return']:.3f} [{r['min_return']:.3f}, {r['max_return']:.3f}] | "
            f"{r['mean_length']:.1f} | {r['intervention_steps']} ({100 * r['intervention_rate']:.1f}%) | "
            f"{r['mean_step_reward']:.4f} |")
    if not st["by_model"]:
        lines.append("| (no completed episodes) | | | | | | |")
    if st["end_reasons"]:
        lines += ["", "end reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(st["end_reasons"].items()))]
    if st.get("archived"):
        lines += ["", describe_archived(st["archived"]) + " (not counted above)"]
    return "\n".join(lines)
