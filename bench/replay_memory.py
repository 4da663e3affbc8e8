"""The continual learner's memory per transition held, measured on a recorded run: what ``replay_capacity`` bounds.

Usage::

    nice -n 19 .venv/bin/python bench/replay_memory.py runs/bench/noteacher_v2_4 [--capacity 200000]

Copies the run's ``run.json`` and store to a temporary folder (the run itself is not touched), builds a
:class:`~vla_rl_ros.learner.continual.ContinualLearner` on the copy (Recap with hindsight, as ``vla-rl-ros
sim`` runs it; no gate, no TensorBoard) and measures, with :mod:`tracemalloc` (numpy reports its arrays to it)
and the process's RSS, what each part holds per transition:

* the replay's rings after :meth:`~vla_rl_ros.buffer.Replay.refresh` (RSS: their pages are touched as filled;
  bytes per row also from the arrays' item sizes);
* the episodes Recap trains on (:meth:`~vla_rl_ros.buffer.Replay.episodes`: arrays, per-step model versions);
* the hindsight relabellings cached for them (``ContinualLearner._hindsight``);
* with ``--round``, a Recap round's working set over them (the rise of the process's peak RSS, ``VmHWM``, in
  one round of ``recap_round``'s steps; the data it concatenates scales with the episodes held; no gate).

Prints one line per part and the total bytes per own transition held, and what that makes at ``--capacity``.
The transition learners (``algo: sac``, ``cql``, ``iql``) hold the same and their relabellings in the
replay's derived ring (its rows counted, at the ring's row size).
"""
from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss(field: str = "VmRSS") -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a recorded run folder (run.json + buffer.sqlite)")
    ap.add_argument("--capacity", type=int, default=200_000, help="replay_capacity to work out the memory for")
    ap.add_argument("--round", action="store_true", help="also measure one Recap round's peak over the data")
    ap.add_argument("--round-steps", type=int, default=50, help="value and actor steps of that round")
    args = ap.parse_args(argv)

    from vla_rl_ros.learner.continual import ContinualLearner, LearnerConfig
    from vla_rl_ros.twin.core import Scene

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        for f in ("run.json", "buffer.sqlite"):
            shutil.copyfile(Path(args.run) / f, run / f)
        goal_low, goal_high = Scene.load().region.goals("pick_place")
        with sqlite3.connect(run / "buffer.sqlite") as con:
            rows = con.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
        # a capacity over the whole store: every transition is held, so each figure is per transition held
        cfg = LearnerConfig(algo="recap", replay_capacity=rows + 1, goal_low=goal_low, goal_high=goal_high,
                            checkpoint_every_s=1e9, recap_min_episodes=1, recap_round_episodes=1,
                            recap_overrides={"value_steps": args.round_steps, "actor_steps": args.round_steps})
        L = ContinualLearner(str(run), cfg, evaluate=lambda *a: None, log=lambda m: None, tb=False)
        tracemalloc.start()
        parts = {}
        m0, r0 = tracemalloc.get_traced_memory()[0], rss()
        L.replay.refresh()
        own, demo = L.replay._online.size, L.replay._demo.size
        rings = (L.replay._online, L.replay._demo)
        row = sum(getattr(rings[0], k).nbytes for k in ("obs", "action", "reward", "next_obs", "terminated",
                                                          "intervention", "is_demo")) / rings[0].capacity
        r1 = rss()
        parts["rings (RSS)"] = r1 - r0
        m1 = tracemalloc.get_traced_memory()[0]
        eps = L._held_episodes()
        m2, r2 = tracemalloc.get_traced_memory()[0], rss()
        parts["episodes (tracemalloc)"] = m2 - m1
        for e in eps:
            if not e.is_demo:
                L._hindsight(e, raw=True)
        m3, r3 = tracemalloc.get_traced_memory()[0], rss()
        parts["relabel cache (tracemalloc)"] = m3 - m2
        steps = sum(len(e) for e in eps)
        n = own + demo
        print(f"store {args.run}: {len(eps)} episodes, {steps} steps; replay {own} own + {demo} demo-side "
              f"transitions; {len(L._relabelled)} episodes relabelled "
              f"({sum(len(v) for v in L._relabelled.values())} relabellings)")
        print(f"ring row: {row:.0f} B (item sizes); rings RSS {parts['rings (RSS)'] / n:.0f} B/transition")
        print(f"episodes: {parts['episodes (tracemalloc)'] / steps:.0f} B/step (RSS {(r2 - r1) / steps:.0f})")
        print(f"relabel cache: {parts['relabel cache (tracemalloc)'] / steps:.0f} B/step of the episodes "
              f"(RSS {(r3 - r2) / steps:.0f})")
        derived = sum(len(x.actions) for v in L._relabelled.values() for x in v)
        print(f"SAC, CQL, IQL also: their relabellings as {derived} derived-ring rows = {derived * row / steps:.0f} "
              f"B/step of the episodes (ring row size x rows)")
        total = (parts["rings (RSS)"] + parts["episodes (tracemalloc)"] + parts["relabel cache (tracemalloc)"]) / n
        print(f"total: {total:.0f} B per transition held -> {total * args.capacity / 2**20:.0f} MiB at "
              f"replay_capacity {args.capacity} (own side; demos and corrections up to as much again)")
        if args.round:
            tracemalloc.stop()
            L._candidate = lambda *a, **kw: []  # the round only: no export, no gate
            hwm = max(rss("VmHWM"), rss())
            L._recap_step()
            rise = rss("VmHWM") - hwm
            print(f"Recap round (+{args.round_steps} value/actor steps): peak RSS +{rise / 2**20:.0f} MiB = "
                  f"{rise / steps:.0f} B/step of the episodes (transient; glibc may keep it)")
        L.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
