"""Pixel SAC (DrQ) on the twin: success against env steps, from the camera's frames and the arm's proprioception.

Issue 13's target: pixel SAC on the twin's reach (camera + proprioception) at >= 90% success within 30,000 env
steps, 3 seeds; pick_place: the best figure, reported.

Each seed runs in its own process (``--seed S``), one after the other on the shared machine, and saves its curve
(the deterministic policy's success on 20 seeded episodes every ``--eval-every`` steps) beside ``--out``;
``--report`` writes the section and a PNG of the curves from what was saved.

    .venv/bin/python bench/bench_pixel_sac.py --task reach --seed 0        # one seed (~30k steps)
    .venv/bin/python bench/bench_pixel_sac.py --task reach --report --plot
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

TARGET = {"reach": (0.90, 30_000)}


def result_path(out: Path, task: str, seed: int) -> Path:
    return out.with_name(f"{out.stem}_{task}_s{seed}.json")


def run_seed(a) -> dict:
    import torch

    from vla_rl_ros.algos.drq import DrQConfig, train_pixel_sac

    torch.set_num_threads(1)
    t0 = time.time()
    agent, curve = train_pixel_sac(a.task, a.steps, seed=a.seed, cfg=DrQConfig(), eval_every=a.eval_every,
                                   eval_episodes=a.eval_episodes, progress=True)
    res = {"task": a.task, "seed": a.seed, "steps": a.steps, "curve": curve, "seconds": time.time() - t0,
           "updates": agent.updates, "size": agent.spec.images[0].height, "batch": agent.cfg.batch_size}
    p = result_path(Path(a.out), a.task, a.seed)
    p.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return res


def report(a) -> str:
    from bench_learner import machine_info

    out = Path(a.out)
    runs = [json.loads(p.read_text()) for p in sorted(out.parent.glob(f"{out.stem}_{a.task}_s*.json"))]
    if not runs:
        raise SystemExit(f"no saved seeds for {a.task} beside {out}")
    info = machine_info()
    goal, within = TARGET.get(a.task, (None, None))
    lines = [f"## Pixel SAC (DrQ) on the twin's {a.task}, from the camera (`bench/bench_pixel_sac.py`)", "",
             f"Commands: `.venv/bin/python bench/bench_pixel_sac.py --task {a.task} --seed S` for each seed, then "
             f"`--report --plot`. Machine: {info.get('cpu')}, `nproc` = {info.get('nproc')}, shared; one seed per "
             "process, one after the other.", "",
             f"Inputs: the twin camera's {runs[0]['size']}x{runs[0]['size']} RGB frame and the proprioception "
             "(joint positions, gripper width, hand position); the object and goal positions are not given. "
             f"Batch {runs[0]['batch']}, one update per env step after 1,000 random steps; success of the "
             "deterministic policy on 20 seeded episodes (seeds 10000..10019).", "",
             "| seed | env steps | success by step | best | wall time |", "| ---: | ---: | --- | ---: | ---: |"]
    met = []
    for r in runs:
        c = r["curve"]
        lines.append(f"| {r['seed']} | {r['steps']:,} | " + ", ".join(f"{s // 1000}k: {100 * v:.0f}%" for s, v in c)
                     + f" | {100 * max((v for _, v in c), default=0):.0f}% | {r['seconds'] / 60:.0f} min |")
        if goal is not None:
            met.append(any(v >= goal and s <= within for s, v in c))
    if goal is not None:
        lines += ["", f"Target: ≥ {100 * goal:.0f}% within {within:,} env steps in every seed: met in "
                      f"**{sum(met)} of {len(met)}** seeds."]
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for r in runs:
            ax.plot([s for s, _ in r["curve"]], [100 * v for _, v in r["curve"]], marker="o", label=f"seed {r['seed']}")
        ax.set_xlabel("env steps")
        ax.set_ylabel("success (%)")
        ax.set_title(f"pixel SAC (DrQ), twin {a.task}")
        ax.legend()
        img = REPO / "docs" / "img" / f"pixel_sac_{a.task}.png"
        fig.tight_layout()
        fig.savefig(img, dpi=100)
        lines += ["", f"![pixel SAC curves](../img/{img.name})"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["reach", "pick_place"], default="reach")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--eval-every", type=int, default=5_000)
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--out", default=str(REPO / "docs" / "bench" / "pixel_sac.md"))
    a = ap.parse_args()
    if a.report:
        from collect import write_section

        text = report(a)
        out = Path(a.out)
        write_section(text, out.with_name(f"{out.stem}_{a.task}.md"))
        print(text)
        return 0
    run_seed(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
