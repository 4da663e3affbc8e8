"""Offline-to-online: IQL (or CQL) in the continual learner, first from a run's recorded data, then on in the loop.

Issue 10's last target: a transition learner started from a run's data, then continued in the loop, improves
over its offline start. Usage (one seed per command, each several minutes of CPU; then the report)::

    .venv/bin/python bench/bench_offline_to_online.py --seed 0            # --algo iql | cql
    .venv/bin/python bench/bench_offline_to_online.py --report [--out docs/bench/offline_to_online.md]

Per seed, everything goes through the code ``learner_node`` runs (:class:`ContinualLearner`, its replay, its gate
and its exports), without ROS and with the gymnasium twin standing in for the arm:

1. **The run's data.** A copy of the offline benchmark's mixed ``pick_place`` run (``bench/bench_offline.py``'s
   ``build_dataset``: 20 clean-expert episodes flagged as demos, 60 noisy-expert, 20 random-ish; built once
   under ``runs/bench/``), as a robot's run would hold after a day of collection.
2. **Offline.** The learner, with ``learner_node``'s defaults for ``algo`` (RLPD sampling of the demo side,
   BC initialisation, hindsight relabelling, a candidate every ``--candidate-every`` updates, each gated in the
   twin against the incumbent; the first, with no incumbent, promoted if it succeeds at all), trains on that
   data alone for ``--offline-updates`` updates. The incumbent then is the **offline start**.
3. **Online.** The arm (the gym twin) runs the incumbent with the sim's exploration noise (0.3) for
   ``--online-episodes`` episodes; each finished episode is written to the run's store (``import_episodes``,
   the arm's own side) and the learner goes on, ``--updates-per-step`` gradient updates per environment step,
   gating candidates as it goes. The incumbent at the end is the **online end**.

The offline start and the online end (and the learner's raw policy at both points) are evaluated on the same
``--eval-episodes`` seeded twin episodes (seeds 10000.., the offline benchmark's), each result written to
``runs/bench/offline_to_online/<algo>_s<seed>.json``; ``--report`` tabulates what is there.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

torch.set_num_threads(1)

from bench_learner import cmd_line, machine_info, machine_line  # noqa: E402
from bench_offline import EVAL_SEED, GROUPS, TASK, build_dataset  # noqa: E402
from bench_offline_rl import dataset_path  # noqa: E402
from collect import load_runs, save_run, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KIND = "offline_to_online"
NOISE = 0.3  # config/sim.yaml policy_node.exploration_std


def rollout(env, policy, seed: int, rng: np.random.Generator) -> dict:
    """One episode of ``policy`` plus the exploration noise, as the store's ``import_episodes`` takes it (the
    executed, noisy action recorded, as ``policy_node`` records its sample)."""
    obs, _ = env.reset(seed=seed)
    O, A, R = [obs], [], []
    term = trunc = False
    info = {"is_success": False}
    while not (term or trunc):
        a = np.clip(policy(obs) + NOISE * rng.standard_normal(env.spec_.action_dim), -1, 1).astype(np.float32)
        obs, r, term, trunc, info = env.step(a)
        O.append(obs), A.append(a), R.append(r)
    return {"obs": np.array(O, np.float32), "actions": np.array(A, np.float32), "rewards": np.array(R, np.float32),
            "success": bool(info["is_success"]), "terminated": bool(term), "task": TASK, "seed": seed,
            "end_reason": "success" if info["is_success"] else "timeout"}


def run_one(args) -> int:
    from tqdm import tqdm

    from vla_rl_ros.algos.export import export_onnx
    from vla_rl_ros.buffer import import_episodes, open_run
    from vla_rl_ros.learner.continual import ContinualLearner, LearnerConfig
    from vla_rl_ros.learner.evaluate import evaluate_onnx, onnx_actor
    from vla_rl_ros.twin.env import TwinEnv

    data = dataset_path(Path(args.data_root))
    if not data.exists():
        print(f"building the offline benchmark's dataset in {data}")
        build_dataset(data.parent, data.name, {g[0]: g[1] for g in GROUPS})
    t_start = time.perf_counter()
    out: dict = {"algo": args.algo, "seed": args.seed, "offline_updates": args.offline_updates,
                 "online_episodes": args.online_episodes, "updates_per_step": args.updates_per_step,
                 "eval_episodes": args.eval_episodes, "candidate_every": args.candidate_every,
                 "gate_episodes": args.gate_episodes, "machine": machine_info()}
    with tempfile.TemporaryDirectory() as tmp:
        run_path = Path(tmp) / "run"
        shutil.copytree(data, run_path, ignore=shutil.ignore_patterns("*.lock"))
        run = open_run(run_path)
        cfg = LearnerConfig(algo=args.algo, seed=args.seed, candidate_every_updates=args.candidate_every,
                            gate_episodes=args.gate_episodes, refresh_every_s=0.0, checkpoint_every_s=1e9,
                            gate_vs_live_every_s=0.0)
        events: list = []
        L = ContinualLearner(str(run_path), cfg, log=lambda m: None, tb=False)

        def learn_until(updates: float, bar=None) -> None:
            while L.updates < updates:
                before = L.updates
                events.extend(ev for ev in L.step() if ev.kind in ("candidate", "promoted"))
                if bar is not None:
                    bar.update(L.updates - before)

        def measure(path: str | None, label: str) -> float | None:
            if path is None:
                return None
            r = evaluate_onnx(path, TASK, episodes=args.eval_episodes, seed=EVAL_SEED)
            print(f"  {label}: {100 * r.success_rate:.1f}% over {args.eval_episodes} episodes")
            return r.success_rate

        def raw_policy(name: str) -> str:
            path = str(Path(tmp) / f"{name}.onnx")
            export_onnx(L.algo.policy_module(), run.spec, path, {"algorithm": args.algo})
            return path

        env = TwinEnv(task=TASK)
        try:
            with tqdm(total=args.offline_updates, desc=f"offline {args.algo} s{args.seed}") as bar:
                learn_until(args.offline_updates, bar)
            inc = L.incumbent
            out["offline_promotions"] = sum(e.promoted for e in events)
            out["offline_s"] = time.perf_counter() - t_start
            out["offline_start"] = {"version": inc["version"] if inc else None,
                                    "success": measure(inc["path"] if inc else None, "offline start (incumbent)"),
                                    "raw_success": measure(raw_policy("offline_raw"), "offline raw policy")}
            n_offline_events = len(events)
            rng = np.random.default_rng(args.seed)
            live, policy, version = [], None, None
            steps = 0
            t_online = time.perf_counter()
            for i in tqdm(range(args.online_episodes), desc=f"online {args.algo} s{args.seed}"):
                inc = L.incumbent
                if inc is None:
                    raise SystemExit("no incumbent after the offline phase: nothing for the arm to run")
                if inc["version"] != version:
                    policy, version = onnx_actor(inc["path"]), inc["version"]
                ep = rollout(env, policy, 200_000 + 1_000 * args.seed + i, rng)
                ep["model_version"] = version
                import_episodes(run.buffer_path, [ep], is_demo=False, spec=run.spec)
                live.append(ep["success"])
                steps += len(ep["actions"])
                learn_until(args.offline_updates + args.updates_per_step * steps)
            out["online_s"] = time.perf_counter() - t_online
            inc = L.incumbent
            online_events = events[n_offline_events:]
            out["online_promotions"] = sum(e.promoted for e in online_events)
            out["online_candidates"] = len(online_events)
            out["env_steps"] = steps
            out["updates"] = L.updates
            k = min(50, len(live) // 2)
            out["live_first"] = float(np.mean(live[:k])) if k else None
            out["live_last"] = float(np.mean(live[-k:])) if k else None
            out["live_window"] = k
            out["online_end"] = {"version": inc["version"],
                                 "success": measure(inc["path"], "online end (incumbent)"),
                                 "raw_success": measure(raw_policy("online_raw"), "online raw policy")}
        finally:
            env.close()
            L.close()
    out["total_s"] = time.perf_counter() - t_start
    save_run(args.data_root, KIND, f"{args.algo}_s{args.seed}", out)
    s0, s1 = out["offline_start"]["success"], out["online_end"]["success"]
    print(f"{args.algo} seed {args.seed}: offline start {100 * (s0 or 0):.1f}% -> online end {100 * s1:.1f}% "
          f"({out['online_promotions']} online promotions, {out['total_s']:.0f} s)")
    return 0


def report(args) -> int:
    by = load_runs(args.data_root, KIND, "algo")
    pct = lambda x: "—" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    lines = [
        "## Offline-to-online: the continual learner from a run's data, then on in the loop "
        "(`bench/bench_offline_to_online.py`)",
        "",
        "Command: per seed `.venv/bin/python bench/bench_offline_to_online.py --seed K` (K = "
        + ", ".join(sorted({str(r["seed"]) for rs in by.values() for r in rs})) + "), then " + cmd_line() + ".",
        "",
        machine_line(next(iter(by.values()))[0]["machine"], load=False),
        "",
        "Everything runs through the continual learner `learner_node` runs (its replay, RLPD sampling, BC "
        "initialisation, hindsight, twin gate and exports, with `learner_node`'s defaults), the gymnasium twin "
        "standing in for the arm. **Offline start**: the incumbent after training on the offline benchmark's "
        "mixed pick_place run alone (20 clean-expert demos, 60 noisy-expert, 20 random-ish episodes). **Online "
        "end**: the incumbent after the arm ran the incumbent with exploration noise 0.3, each episode written to "
        "the run's store and learnt from as it came. *Raw*: the learner's own policy at that point, gated or not. "
        "Success on the same seeded twin episodes (seeds 10000..).",
        "",
        "| algo | seed | offline updates | online episodes (env steps) | updates | offline start | online end | "
        "change | raw: offline → online | live success, first → last episodes | promotions offline / online "
        "(candidates online) | wall clock |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|",
    ]
    verdicts = []
    for algo, rs in sorted(by.items()):
        changes = []
        for r in sorted(rs, key=lambda r: r["seed"]):
            s0, s1 = r["offline_start"]["success"], r["online_end"]["success"]
            ch = None if s0 is None else 100 * (s1 - s0)
            changes.append(ch)
            lines.append(
                f"| {algo} | {r['seed']} | {r['offline_updates']:,} | {r['online_episodes']} ({r['env_steps']:,}) | "
                f"{r['updates']:,} | {pct(s0)} | {pct(s1)} | {'—' if ch is None else f'{ch:+.0f} pts'} | "
                f"{pct(r['offline_start']['raw_success'])} → {pct(r['online_end']['raw_success'])} | "
                f"{pct(r['live_first'])} → {pct(r['live_last'])} (first and last {r['live_window']}) | "
                f"{r['offline_promotions']} / {r['online_promotions']} ({r['online_candidates']}) | "
                f"{r['total_s'] / 60:.0f} min |")
        known = [c for c in changes if c is not None]
        better = sum(c > 0 for c in known)
        verdicts.append(f"* {algo}: the online end beat the offline start in **{better} of {len(rs)}** seeds "
                        f"(median change {statistics.median(known):+.0f} points)." if known else
                        f"* {algo}: no offline start to compare with.")
    n = next(iter(by.values()))[0]["eval_episodes"]
    lines += ["", f"Success over {n} seeded episodes per model. Issue 10's target: the learner, started from a "
              "run's data and continued in the loop, improves over its offline start.", "", *verdicts, ""]
    if args.note:
        lines += [args.note, ""]
    text = "\n".join(lines)
    print(text)
    write_section(text, args.out)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algo", default="iql", choices=["iql", "cql", "sac"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--offline-updates", type=int, default=5_000,
                    help="learner updates on the run's data alone (each is utd = 2 gradient steps for IQL)")
    ap.add_argument("--online-episodes", type=int, default=150)
    ap.add_argument("--updates-per-step", type=float, default=0.5,
                    help="learner updates per environment step online (0.5: one gradient step per env step at utd 2)")
    ap.add_argument("--candidate-every", type=int, default=2_500)
    ap.add_argument("--gate-episodes", type=int, default=50)
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--data-root", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--note", default="", help="--report: a paragraph added under the table")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "offline_to_online.md"))
    args = ap.parse_args()
    return report(args) if args.report else run_one(args)


if __name__ == "__main__":
    sys.exit(main())
