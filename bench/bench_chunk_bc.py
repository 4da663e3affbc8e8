"""Chunked behaviour cloning beside per-tick behaviour cloning, from the same demos (issue 13: "both reported").

For each seed: the pick_place recipe's scripted-expert demos (``--demos`` episodes from seed ``100 * seed``),
then, on exactly those demos, the per-tick BC model of the shipped recipe (`algos/bc.py`, MSE, 2x256) and the
chunked model (`algos/chunk_bc.py`, ACT's masked L1 on the next K actions, for each ``--chunk-lens`` K), each
exported to ONNX and evaluated on the same 50 seeded twin episodes (seeds 10000..10049), the chunked ones executed
as ``policy_node`` executes them (receding horizon, a new chunk every K/2 steps).

    .venv/bin/python bench/bench_chunk_bc.py            # 3 seeds, writes docs/bench/chunk_bc.md
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pick_place")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--demos", type=int, default=10)
    ap.add_argument("--chunk-lens", default="5,10")
    ap.add_argument("--bc-steps", type=int, default=2000)
    ap.add_argument("--chunk-steps", type=int, default=3000)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--execution", default="receding,ensemble",
                    help="how the chunks run in the evaluation: receding (a new chunk every K/2 steps) and/or "
                         "ensemble (ACT's temporal ensembling, a new chunk every step)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", default=str(REPO / "docs" / "bench" / "chunk_bc.md"))
    a = ap.parse_args()

    import torch

    from bench_learner import machine_info
    from vla_rl_ros.algos.bc import train_bc
    from vla_rl_ros.algos.chunk_bc import ChunkData, train_chunk_bc
    from vla_rl_ros.algos.export import export_onnx
    from vla_rl_ros.arm import Arm
    from vla_rl_ros.learner.evaluate import ChunkActor, evaluate_onnx, evaluate_policy
    from vla_rl_ros.runtime.onnx_policy import load_validated
    from vla_rl_ros.learner.recipes import collect_demo_episodes
    from vla_rl_ros.spec import Spec

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_chunk_bc_"))
    arm = Arm(Spec(task=a.task))
    Ks = [int(k) for k in a.chunk_lens.split(",")]
    modes = a.execution.split(",")
    rows: dict[str, list[float]] = {"per-tick BC": []} | {f"chunked BC, K = {k}, {m}": [] for k in Ks for m in modes}
    t0 = time.time()
    for seed in (int(s) for s in a.seeds.split(",")):
        eps = collect_demo_episodes(a.task, a.demos, 0.0, 100 * seed, progress=True, arm=arm)
        obs = np.concatenate([e["obs"] for e in eps])
        act = np.concatenate([e["actions"] for e in eps])
        torch.manual_seed(seed)
        p = export_onnx(train_bc(obs, act, steps=a.bc_steps, seed=seed), arm.spec, work / f"bc_{seed}.onnx",
                        {"algorithm": "bc"}).path
        rows["per-tick BC"].append(evaluate_onnx(str(p), a.task, episodes=a.episodes, twin=arm.twin()).success_rate)
        for k in Ks:
            spec = arm.spec.replace(chunk_len=k)
            net = train_chunk_bc(ChunkData.from_episodes(eps, k), spec, steps=a.chunk_steps, seed=seed)
            p = export_onnx(net, spec, work / f"chunk{k}_{seed}.onnx", {"algorithm": "chunk_bc"}).path
            pol = load_validated(str(p), None, spec)
            env = Arm(spec).twin().env(a.task, spec)
            try:
                for m in modes:
                    r = evaluate_policy(ChunkActor(pol, env, mode=m).act, a.task, episodes=a.episodes, env=env)
                    rows[f"chunked BC, K = {k}, {m}"].append(r.success_rate)
            finally:
                env.close()
        print(json.dumps({"seed": seed, **{k: v[-1] for k, v in rows.items()}}), flush=True)
    info = machine_info()
    seeds = a.seeds.split(",")
    lines = ["## Chunked BC beside per-tick BC, the same demos (`bench/bench_chunk_bc.py`)", "",
             "Command: `.venv/bin/python bench/bench_chunk_bc.py" + "".join(" " + x for x in sys.argv[1:]) + "`. "
             f"Machine: {info.get('cpu')}, `nproc` = {info.get('nproc')}, shared; {(time.time() - t0) / 60:.0f} min.",
             "",
             f"Per seed s: {a.demos} scripted-expert `{a.task}` demos (seeds 100s..100s+{a.demos - 1}, no noise: the "
             f"shipped recipe's data), per-tick BC ({a.bc_steps} steps, MSE) and chunked BC ({a.chunk_steps} steps, "
             f"masked L1) on those demos; success on the same {a.episodes} seeded twin episodes (seeds 10000..), "
             "chunks run as policy_node runs them: receding (a new chunk every K/2 steps) or ensemble (ACT's "
             "temporal ensembling, m = 0.01, a new chunk every step).", "",
             "| model | success, median | per seed |", "| --- | ---: | --- |"]
    for name, v in rows.items():
        lines.append(f"| {name} | **{100 * float(np.median(v)):.0f}%** | "
                     + ", ".join(f"{100 * x:.0f} (s{s})" for x, s in zip(v, seeds)) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.no_write:
        from collect import write_section

        write_section(text, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
