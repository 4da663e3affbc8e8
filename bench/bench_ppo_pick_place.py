"""PPO from scratch on the twin's pick_place: the best success reached within a stated budget.

Usage (one seed per command; then the report)::

    .venv/bin/python bench/bench_ppo_pick_place.py --seed 0 [--steps 2000000] [--minutes 85]
    .venv/bin/python bench/bench_ppo_pick_place.py --report [--plot]

Trains ``algos/ppo.py`` with the CLI's defaults (``vla-rl-ros train --algo ppo``: 2 envs,
one process each, 2,048 steps per env per rollout, SB3's other defaults) on
``VlaRlRos/PandaPickPlace-v0`` with its default reward (``pick_place_task``: sparse
success plus potential-based shaping over the seed's stages, README "Rewards"), until
``--steps`` env steps or ``--minutes`` of training wall time, whichever comes first.

Every ``--eval-every`` env steps the deterministic policy plays the same
``--episodes`` seeded twin episodes (the selection set), and the best such policy is
kept. Picking the best of many noisy evaluations flatters it, so at the end the kept
policy is exported to ONNX and scored again through ONNX Runtime on ``--final``
different seeded episodes (the held-out figure the report leads with).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

torch.set_num_threads(1)

from bench_learner import machine_info, machine_line  # noqa: E402
from collect import save_run, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "VlaRlRos/PandaPickPlace-v0"
TASK = "pick_place"
SELECT_SEED = 40_000
FINAL_SEED = 50_000


def run_one(args) -> int:
    from vla_rl_ros.algos.export import export_onnx
    from vla_rl_ros.algos.ppo import PPOConfig, make_vector_env, train_ppo
    from vla_rl_ros.learner.evaluate import evaluate_onnx, evaluate_policy
    from vla_rl_ros.spec import Spec

    cfg = PPOConfig(n_envs=args.n_envs, n_steps=args.n_steps, seed=args.seed)
    envs = make_vector_env(ENV_ID, cfg.n_envs, asynchronous=True)
    evals: list[dict] = []
    best = {"success": -1.0}
    t0 = time.perf_counter()
    eval_s = 0.0
    next_eval = args.eval_every

    def on_update(ppo, m) -> bool:
        nonlocal next_eval, eval_s
        train_s = time.perf_counter() - t0 - eval_s
        last = ppo.env_steps >= args.steps or train_s >= 60 * args.minutes
        if ppo.env_steps >= next_eval or last:
            next_eval += args.eval_every
            e0 = time.perf_counter()
            res = evaluate_policy(ppo.act, TASK, episodes=args.episodes, seed=SELECT_SEED)
            eval_s += time.perf_counter() - e0
            evals.append({"env_steps": ppo.env_steps, "train_s": train_s, "success": res.success_rate,
                          "mean_return": res.mean_return, "train_success": m.get("success")})
            print(f"  {ppo.env_steps:>9,} steps, {train_s / 60:5.1f} min: {100 * res.success_rate:.0f}% "
                  f"(training episodes {100 * (m.get('success') or 0):.0f}%)", flush=True)
            if res.success_rate > best["success"]:
                best.update(success=res.success_rate, env_steps=ppo.env_steps, train_s=train_s,
                            module=ppo.policy_module())
        return last

    try:
        ppo, hist = train_ppo(envs, cfg, args.steps, on_update=on_update, progress=True)
    finally:
        envs.close()
    train_s = time.perf_counter() - t0 - eval_s
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ppo.onnx"
        export_onnx(best["module"], Spec(task=TASK), path, {"algorithm": "ppo", "training_steps": best["env_steps"]})
        final = evaluate_onnx(str(path), TASK, episodes=args.final, seed=FINAL_SEED)
        last_path = Path(d) / "ppo_last.onnx"
        export_onnx(ppo.policy_module(), Spec(task=TASK), last_path, {"algorithm": "ppo", "training_steps": ppo.env_steps})
        final_last = evaluate_onnx(str(last_path), TASK, episodes=args.final, seed=FINAL_SEED)
    curve = [(int(m["env_steps"]), m.get("success")) for m in hist]
    out = {"seed": args.seed, "env_steps": ppo.env_steps, "train_s": train_s, "steps_per_s": ppo.env_steps / train_s,
           "budget_steps": args.steps, "budget_min": args.minutes, "n_envs": args.n_envs, "n_steps": args.n_steps,
           "episodes": args.episodes, "final_episodes": args.final, "evals": evals,
           "best": {k: v for k, v in best.items() if k != "module"}, "final_success": final.success_rate,
           "final_last_success": final_last.success_rate, "curve": curve, "load1": os.getloadavg()[0],
           "machine": machine_info()}
    save_run(args.data_root, "ppo_pick_place", f"s{args.seed}", out)
    print(f"seed {args.seed}: {ppo.env_steps:,} env steps in {train_s / 60:.1f} min of training; best selection "
          f"{100 * best['success']:.0f}% at {best['env_steps']:,} steps; held-out {100 * final.success_rate:.1f}% "
          f"(last policy {100 * final_last.success_rate:.1f}%)")
    return 0


def report(args) -> int:
    runs = sorted(_all(args.data_root), key=lambda r: r["seed"])
    if not runs:
        print("no runs under", args.data_root, file=sys.stderr)
        return 1
    r0 = runs[0]
    lines = [
        "## PPO from scratch on the twin's pick_place, within a stated budget (`bench/bench_ppo_pick_place.py`)",
        "",
        "Command: `.venv/bin/python bench/bench_ppo_pick_place.py --seed S --steps N --minutes M` per seed, then "
        "`.venv/bin/python bench/bench_ppo_pick_place.py --report --plot`.",
        "",
        machine_line(r0["machine"], load=False) + (f" {args.note}" if args.note else ""),
        "",
        f"Env `{ENV_ID}` with its default reward (`pick_place_task`: sparse success plus potential-based shaping "
        f"over the seed's stages), from scratch (no demos, no BC start); `algos/ppo.py` with the CLI's defaults: "
        f"{r0['n_envs']} envs (one process each), {r0['n_steps']:,} steps per env per rollout, minibatch 64, "
        "10 epochs, lr 3e-4, 64x64 Tanh, observation and reward normalisation. Budget: "
        f"{r0['budget_steps']:,} env steps or {r0['budget_min']:g} minutes of training wall time, whichever came "
        f"first. Every few rollouts the deterministic policy played the same {r0['episodes']} seeded episodes "
        f"(seeds {SELECT_SEED}..); the best of those policies was then exported to ONNX and scored on "
        f"{r0['final_episodes']} other seeded episodes (seeds {FINAL_SEED}..) through ONNX Runtime.",
        "",
        "| seed | env steps trained | training minutes | env steps/s | best on the selection episodes (at steps) "
        "| **best policy, held-out episodes** | last policy, held-out episodes | training episodes' success, last rollout |",
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in runs:
        b = r["best"]
        last_train = next((y for _, y in reversed(r["curve"]) if y is not None), None)
        lines.append(
            f"| {r['seed']} | {r['env_steps']:,} | {r['train_s'] / 60:.1f} | {r['steps_per_s']:.0f} | "
            f"{100 * b['success']:.0f}% ({b['env_steps']:,}) | **{100 * r['final_success']:.1f}%** | "
            f"{100 * r['final_last_success']:.1f}% | "
            + (f"{100 * last_train:.0f}%" if last_train is not None else "–") + " |")
    lines.append("")
    finals = [r["final_success"] for r in runs]
    lines += [f"Best success reached within the budget, held out: median **{100 * statistics.median(finals):.1f}%** "
              f"over {len(runs)} seed(s) ({', '.join(f'{100 * f:.1f}%' for f in finals)}).", ""]
    for r in runs:
        pts = [(s, y) for s, y in r["curve"] if y is not None]
        if pts:
            s_max, y_max = max(pts, key=lambda p: p[1])
            half = [y for s, y in pts if s > r["env_steps"] / 2]
            lines.append(f"Seed {r['seed']}: the stochastic policy's training episodes succeeded in at most "
                         f"{100 * y_max:.0f}% of a rollout's episodes (at {s_max:,} steps), and in "
                         f"{100 * statistics.mean(half):.1f}% on average over the second half of training; "
                         f"the deterministic policy on the selection episodes at best "
                         f"{100 * r['best']['success']:.0f}%.")
    lines.append("")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 3.5))
        for i, r in enumerate(runs):
            pts = [(s, y) for s, y in r["curve"] if y is not None]
            if pts:
                ax.plot(*zip(*pts), color=f"C{i}", alpha=0.35, label=f"seed {r['seed']}: training episodes")
            ev = [(e["env_steps"], e["success"]) for e in r["evals"]]
            ax.plot(*zip(*ev), color=f"C{i}", marker="o", ms=3, label=f"seed {r['seed']}: deterministic, selection set")
        ax.set_xlabel("env steps")
        ax.set_ylabel("success")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("PPO from scratch on the twin's pick_place")
        ax.legend(fontsize=7)
        fig.tight_layout()
        img = ROOT / "docs" / "img" / "ppo_pick_place.png"
        fig.savefig(img, dpi=100)
        lines += [f"![PPO on pick_place](../img/{img.name})", ""]
    text = "\n".join(lines)
    print(text)
    write_section(text, args.out)
    return 0


def _all(root) -> list[dict]:
    import json

    d = Path(root) / "ppo_pick_place"
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--seed", type=int)
    mode.add_argument("--report", action="store_true")
    ap.add_argument("--steps", type=int, default=2_000_000, help="env-step budget")
    ap.add_argument("--minutes", type=float, default=85.0, help="training wall-time budget (evaluations excluded)")
    ap.add_argument("--eval-every", type=int, default=100_000, help="env steps between selection evaluations")
    ap.add_argument("--n-envs", type=int, default=2)
    ap.add_argument("--n-steps", type=int, default=2048)
    ap.add_argument("--episodes", type=int, default=50, help="selection episodes per evaluation")
    ap.add_argument("--final", type=int, default=200, help="held-out episodes for the kept policy")
    ap.add_argument("--plot", action="store_true", help="--report: also docs/img/ppo_pick_place.png")
    ap.add_argument("--note", default="", help="--report: what else ran on the machine meanwhile")
    ap.add_argument("--data-root", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "ppo_pick_place.md"))
    args = ap.parse_args()
    return report(args) if args.report else run_one(args)


if __name__ == "__main__":
    raise SystemExit(main())
