"""Assemble docs/BENCHMARKS.md from the sections the benchmarks wrote to docs/bench/*.md.

    .venv/bin/python bench/collect.py

Each bench script writes its own section (command, machine, medians and
ratios, side by side with its reference, measured in the same run); this
only puts them in a fixed order under one header.
"""
from __future__ import annotations

import fnmatch
import json
import os
import platform

ORDER = ["continual_summary", "continual_noteacher_gap_0", "continual_noteacher_gap_1", "continual_noteacher_gap_2", "continual_noteacher_gap_3", "continual_teacher_latch_4", "continual_teacher_latch_5", "continual_teacher_latch_6", "continual_teacher_latch_7", "continual_teacher_latch_8", "continual_teacher_latch_9", "continual_teacher_strict_10", "continual_teacher_strict_11", "continual_teacher_strict_12", "continual_noteacher_strict_10", "continual_noteacher_strict_11", "continual_noteacher_strict_12", "continual_teacher_percep_0", "continual_teacher_percep_1", "continual_teacher_gapq_3", "continual_teacher_gap_0", "continual_teacher_gap_1", "continual_teacher_gap_2", "continual_teacher_v4_1", "continual_teacher_v3_1", "continual_teacher_v3_2", "continual_teacher_v3_3", "continual_noteacher_v2_1", "continual_noteacher_v2_2", "continual_noteacher_v2_3", "continual_noteacher_v2_4", "soak", "soak_capped", "teacher", "teacher_lag", "teacher_live", "recap_settings_teacher", "continual_teacher_v2_1", "recap_settings", "gate", "continual_noteacher_her_1", "continual_teacher_her_1", "sac_twin_her", "continual_teacher_1", "continual_teacher_2", "continual_teacher_3", "continual_noteacher_1",
         "continual_noteacher_2", "continual_noteacher_3", "continual_ablation", "continual", "continual_run2", "policy", "control_1khz", "buffer", "learner", "sample_efficiency_task", "sample_efficiency", "offline", "offline_rl", "offline_to_online", "ppo", "ppo_pick_place", "loop_latency", "chunked", "chunk_bc", "camera_loop", "pixel_sac_reach", "prefs_live", "prefs_reach", "prefs_reach_noher", "prefs_pick_place", "prefs_pick_place_demos", "prefs_pick_place_noher", "perception_live_track", "perception_live_notrack", "perception_live_track10", "perception_live_v2", "dds_frames"]
HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(HERE), "docs")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_section(text: str, out: str | os.PathLike) -> str:
    """Write one benchmark's markdown section (atomically, creating docs/bench/); returns the path."""
    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, out)
    print(f"wrote {out}")
    return out


def save_run(root: str | os.PathLike, kind: str, name: str, result: dict) -> str:
    """One run's result of a multi-process bench, as ``<root>/<kind>/<name>.json`` (read back by :func:`load_runs`)."""
    d = os.path.join(os.fspath(root), kind)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{name}.json")
    with open(path, "w") as f:
        f.write(json.dumps(result, indent=1))
    return path


def load_runs(root: str | os.PathLike, kind: str, key: str) -> dict[str, list[dict]]:
    """Every ``<root>/<kind>/*_s*.json`` result, grouped by its ``key`` field (sorted by file name)."""
    d = os.path.join(os.fspath(root), kind)
    names = sorted(n for n in (os.listdir(d) if os.path.isdir(d) else []) if fnmatch.fnmatch(n, "*_s*.json"))
    if not names:
        raise SystemExit(f"no results under {d}: run the bench's per-run command first")
    by: dict[str, list[dict]] = {}
    for n in names:
        with open(os.path.join(d, n)) as f:
            r = json.load(f)
        by.setdefault(r[key], []).append(r)
    return by


def main() -> None:
    sec_dir = os.path.join(DOCS, "bench")
    names = [n[:-3] for n in os.listdir(sec_dir) if n.endswith(".md")]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    parts = [
        "# Benchmarks\n",
        "Every figure below was measured by the script named in its section, on the machine it names, with its",
        "reference (bare ONNX Runtime, Stable-Baselines3, d3rlpy) measured side by side in the same run. The",
        "machines are shared and noisy: read medians and ratios, not single absolute times.\n",
        f"Collected on: {cpu_model()}, {os.cpu_count()} cores. Re-run a section with its command, then",
        "`.venv/bin/python bench/collect.py`.\n",
        "The references are not runtime dependencies. Install them into the venv without touching torch or",
        "gymnasium (d3rlpy 2.8.1 pins gymnasium==1.0.0; it runs with the installed 1.x):\n",
        "    .venv/bin/pip install stable-baselines3",
        "    .venv/bin/pip install --no-deps d3rlpy && .venv/bin/pip install structlog colorama dataclasses-json h5py gym click "
        "scikit-learn\n",
    ]
    for n in names:
        with open(os.path.join(sec_dir, n + ".md")) as f:
            # sections link images relative to docs/bench/; BENCHMARKS.md sits in docs/
            parts.append(f.read().rstrip().replace("](../img/", "](img/") + "\n")
    out = os.path.join(DOCS, "BENCHMARKS.md")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(parts))
    os.replace(tmp, out)
    print(f"wrote {out} ({', '.join(names)})")


if __name__ == "__main__":
    main()
