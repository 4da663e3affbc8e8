"""The second arm (issue 9's target: the shipped-style reach model >= 90% over 50 seeded episodes).

Usage::

    .venv/bin/python bench/bench_second_arm.py [--params config/xarm6.yaml] [--out docs/bench/second_arm.md]

In the twin of the arm the params file declares (the xArm6 by default), and side by side in the Panda's
twin with the same recipe and seeds: the scripted expert's pick_place and reach success, then the shipped-style recipe
(``vla-rl-ros ship --task reach``: 100 DART demos, BC 3000 steps, seed 0) and its model over 50 seeded
episodes (seeds 10000..10049). The models are written to a temporary folder (the shipped files in models/
are left alone). Writes its markdown section to ``--out`` (collected into docs/BENCHMARKS.md by
bench/collect.py).
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

from collect import cpu_model, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_rl_ros.arm import read_arm  # noqa: E402
from vla_rl_ros.learner.recipes import arm_name, ship_bc_model  # noqa: E402
from vla_rl_ros.twin.expert import ScriptedExpert, collect_demos  # noqa: E402


def expert_success(arm, episodes: int, seed: int, task: str = "reach") -> float:
    env = arm.with_task(task).twin().env(task)
    try:
        eps = collect_demos(env, ScriptedExpert(env.spec_), episodes, seed=seed)
    finally:
        env.close()
    return float(np.mean([e["success"] for e in eps]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="config/xarm6.yaml")
    ap.add_argument("--expert-episodes", type=int, default=50)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "bench" / "second_arm.md"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    arms = [("second arm", read_arm(args.params, "reach")), ("reference: the Panda", read_arm(None, "reach"))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, arm in arms:
            t0 = time.time()
            exp = expert_success(arm, args.expert_episodes, seed=0)
            exp_pp = expert_success(arm, args.expert_episodes, seed=0, task="pick_place")
            res = ship_bc_model("reach", os.path.join(tmp, f"{len(rows)}.onnx"), eval_episodes=args.eval_episodes,
                                progress=False, arm=arm)
            lo, hi = res.success_ci95
            rows.append(f"| {label}: {arm_name(arm)} | {arm.spec.n_arm} | {arm.spec.obs_dim} | {100 * exp_pp:.0f}% "
                        f"| {100 * exp:.0f}% "
                        f"| {100 * res.demo_success_rate:.0f}% ({res.demo_transitions}) "
                        f"| **{100 * res.success_rate:.0f}%** ({100 * lo:.0f}–{100 * hi:.0f}%) | {res.mean_return:.3f} "
                        f"| {time.time() - t0:.0f} s |")
            print(rows[-1], flush=True)
    text = f"""## The second arm: reach on the xArm6 (`bench/bench_second_arm.py`)

Command: `.venv/bin/python bench/bench_second_arm.py --params {args.params}`

Machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, torch {torch.__version__} (1 thread), Python {platform.python_version()}; shared machine.

Each arm in its own twin, declared by its params file (`{args.params}`; the Panda: the built-in defaults):
the scripted expert's success over {args.expert_episodes} seeded episodes (seeds 0..{args.expert_episodes - 1}) of
pick_place (the Panda's expert, unchanged: it reads widths in metres, which the xArm's gripper model gives) and of reach,
then the shipped recipe (`vla-rl-ros ship --task reach [--params FILE]`: 100 expert episodes with DART noise
0.3, behaviour cloning 3000 steps, seed 0) and its ONNX model over {args.eval_episodes} seeded episodes
(seeds 10000..{10000 + args.eval_episodes - 1}), deterministic. Target (issue 9): the second arm's model ≥ 90%.

| arm | joints | obs | pick_place: expert success | reach: expert success | reach: expert success with DART noise (transitions) | reach: model success (95% CI) | reach: model's mean return | wall time |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}
"""
    write_section(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
