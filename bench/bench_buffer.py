"""Benchmark the durable buffer: write throughput, at-risk window, Replay refresh and sampling.

Usage::

    .venv/bin/python bench/bench_buffer.py [--steps 100000] [--out docs/bench/buffer.md]

Prints a markdown section and writes it to ``--out`` (merged into docs/BENCHMARKS.md by hand).

* **Durable write throughput**: ``Writer.add_step`` as fast as the caller can
  go (episodes of 200 steps, no camera), from the first step until ``flush()``
  returns, i.e. until everything is committed and on disk (``synchronous=FULL``
  fsyncs every commit). Default commit window 0.1 s.
* **At-risk window**: for each step, the time from its arrival in ``add_step``
  until the commit that contains it returned: what a ``kill -9`` (or, with
  FULL, a power cut) at that instant could lose. Measured at saturation and at
  a paced 500 steps/s.
* **add_step cost**: time spent in the caller's thread per step (the recorder
  callback's budget).
* **Replay**: ``refresh()`` rows/s on the written store and ``sample(256)``
  batches/s (demo ratio 0.5, torch tensors out).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from collect import write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_rl_ros.buffer import Replay, Writer, import_episodes  # noqa: E402
from vla_rl_ros.spec import Spec  # noqa: E402

EP_LEN = 200


def write_steps(path: Path, spec: Spec, n: int, *, synchronous: str = "FULL", rate_hz: float | None = None,
                commit_window_s: float = 0.1) -> dict:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1024, spec.obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, (1024, spec.action_dim)).astype(np.float32)
    w = Writer(path, spec=spec, synchronous=synchronous, commit_window_s=commit_window_s)
    call = np.empty(n)
    t0 = time.perf_counter()
    next_t = t0
    for k in range(n):
        if k % EP_LEN == 0:
            if k:
                w.end_episode("timeout")
            w.begin_episode(reward_config={"name": "bench"})
        if rate_hz:
            next_t += 1.0 / rate_hz
            while time.perf_counter() < next_t:
                time.sleep(max(0.0, next_t - time.perf_counter() - 0.0002))
        c0 = time.perf_counter()
        w.add_step(obs[k % 1024], act[k % 1024], 0.1, obs[(k + 1) % 1024], intervention=k % 50 == 0,
                   model_version="v1")
        call[k] = time.perf_counter() - c0
    w.end_episode("timeout")
    w.flush()
    elapsed = time.perf_counter() - t0
    lat = w.at_risk_latencies()
    commits = w.n_commits
    w.close()
    return {"n": n, "elapsed": elapsed, "rate": n / elapsed, "lat": lat, "call": call, "commits": commits}


def pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--paced-steps", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3, help="repetitions of the FULL write run (median reported)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "bench" / "buffer.md"))
    args = ap.parse_args()
    spec = Spec(task="pick_place")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        load_before = os.getloadavg()[0]
        # The machines are shared and noisy: repeat the FULL run, report the median and the best.
        fulls = [write_steps(d / f"full{i}.sqlite", spec, args.steps, synchronous="FULL") for i in range(args.repeats)]
        for i in range(1, args.repeats):
            (d / f"full{i}.sqlite").unlink()
        full = sorted(fulls, key=lambda r: r["rate"])[len(fulls) // 2]
        best = max(r["rate"] for r in fulls)
        (d / "full0.sqlite").rename(d / "full.sqlite")
        normal = write_steps(d / "normal.sqlite", spec, args.steps, synchronous="NORMAL")
        paced = write_steps(d / "paced.sqlite", spec, args.paced_steps, rate_hz=500.0)
        size_mb = (d / "full.sqlite").stat().st_size / 1e6

        # demos for the demo side of the replay
        T = 200
        demo = {"obs": np.random.default_rng(1).normal(size=(T + 1, spec.obs_dim)),
                "actions": np.zeros((T, spec.action_dim)), "rewards": np.zeros(T), "success": True}
        import_episodes(d / "full.sqlite", [demo] * 10)

        r = Replay([d / "full.sqlite"], capacity=args.steps + 10_000, seed=0)
        t0 = time.perf_counter()
        n_rows = r.refresh()
        refresh_s = time.perf_counter() - t0
        import torch

        torch.set_num_threads(1)
        for _ in range(50):
            r.sample(256)
        n_batches = 2000
        t0 = time.perf_counter()
        for _ in range(n_batches):
            r.sample(256, demo_ratio=0.5)
        sample_s = time.perf_counter() - t0
        r.close()

    def lat_row(name: str, res: dict) -> str:
        ms = res["lat"] * 1e3
        return f"| {name} | {pct(ms, 50):.1f} | {pct(ms, 99):.1f} | {ms.max():.1f} |"

    lines = [
        "## Durable buffer (`bench/bench_buffer.py`)",
        "",
        f"Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"SQLite WAL; obs_dim {spec.obs_dim}, action_dim {spec.action_dim}, no camera; "
        f"{args.steps} steps in episodes of {EP_LEN}; commit window 0.1 s. "
        f"{os.cpu_count()} CPUs, shared: 1-min load average {load_before:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| durable write throughput, `synchronous=FULL` (default), median of {len(fulls)} | "
        f"**{full['rate']:,.0f} transitions/s** (best {best:,.0f}; runs: "
        + ", ".join(f"{r['rate']:,.0f}" for r in fulls) + ") |",
        f"| durable write throughput, `synchronous=NORMAL` (one run) | {normal['rate']:,.0f} transitions/s |",
        f"| `add_step` cost in the caller's thread, p50 / p99 | {pct(full['call'], 50) * 1e6:.1f} / "
        f"{pct(full['call'], 99) * 1e6:.1f} µs |",
        f"| store size | {size_mb / args.steps * 1e6:.0f} B/transition |",
        f"| `Replay.refresh()` (cold, {n_rows:,} rows) | {n_rows / refresh_s:,.0f} rows/s |",
        f"| `Replay.sample(256, demo_ratio=0.5)` → torch | {n_batches / sample_s:,.0f} batches/s "
        f"({n_batches * 256 / sample_s:,.0f} transitions/s) |",
        "",
        "At-risk window (step arrival in `add_step` → its commit returned; what a `kill -9` at that instant "
        "could lose):",
        "",
        "| load | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: |",
        lat_row(f"saturated ({full['rate']:,.0f}/s, the median run), FULL", full),
        lat_row(f"saturated ({normal['rate']:,.0f}/s), NORMAL", normal),
        lat_row(f"paced 500 steps/s ({args.paced_steps} steps), FULL", paced),
        "",
        "Target: ≥ 20,000 transitions/s durable: "
        + ("met (median run)." if full["rate"] >= 20_000 else
           f"**not met** by the median run on this (loaded) machine{'; met by the best run' if best >= 20_000 else ''}."),
        "",
        "At saturation the at-risk window exceeds the commit window: the caller's loop holds the GIL and the "
        "writer thread must win it back for every SQLite statement; at realistic rates it is bounded by the "
        "window plus one commit.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
