"""Which Recap settings make the best candidate from the same recorded data? (the continual learner's defaults)

Usage::

    .venv/bin/python bench/bench_recap_settings.py [--episodes 240] [--seeds 0,1,2]
    .venv/bin/python bench/bench_recap_settings.py --teacher 0.5   # as `vla-rl-ros sim` (teacher on) sees it

One dataset, made once and shared by every variant, as the continual learner sees it some minutes into
``vla-rl-ros sim --teacher 0``: the starting model's 10 scripted demos (flagged as demos) and ``--episodes``
gym-twin episodes of the shipped ``models/pick_place_bc.onnx`` with the sim's exploration noise (std 0.3),
plus their hindsight relabellings (up to 4 per episode, ``vla_rl_ros/algos/hindsight.py``). Each variant
trains one Recap round from fresh weights on it (value fit, relabel, actor fit: what one learner round
does) per seed, and the exported guided policy is evaluated on the same 100 seeded twin episodes
(seeds 10000.., deterministic). Writes ``docs/bench/recap_settings.md``.

``--teacher F``: the same with the sim teacher's rule (``vla_rl_ros/twin/teacher.py``, on env time) watching a
share ``F`` of the episodes and taking over on a grasp miss or a stall, and the variants that matter there:
how much of each actor batch comes from demos and corrections, and which corrections count as good examples.
Writes ``docs/bench/recap_settings_teacher.md``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collect import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EVAL_SEED = 10_000
VARIANTS = [  # (name, RecapConfig overrides on top of h_norm 200, hindsight on)
    ("RecapConfig's defaults (w 1, demo share 0.5)", {}, True),
    ("no hindsight relabelling", {}, False),
    ("guidance w 2", {"cfg_weight": 2.0}, True),
    ("demo share 0.2", {"demo_ratio": 0.2}, True),
    ("**guidance w 2, demo share 0.2 (the continual learner's)**", {"cfg_weight": 2.0, "demo_ratio": 0.2}, True),
    ("guidance w 3, demo share 0.2", {"cfg_weight": 3.0, "demo_ratio": 0.2}, True),
    ("positive fraction 0.15", {"positive_fraction": 0.15}, True),
    ("3x value and actor steps", {"value_steps": 6000, "actor_steps": 6000}, True),
]
TEACHER_VARIANTS = [  # with the teacher on: the corrections' share of each actor batch, and which count
    ("guidance w 2, demo share 0.2 throughout (the learner's before)", {"cfg_weight": 2.0, "demo_ratio": 0.2}, True),
    ("guidance w 2, demo share 0.35", {"cfg_weight": 2.0, "demo_ratio": 0.35}, True),
    ("**guidance w 2, demo share 0.2, 0.5 once corrections are in (the continual learner's)**",
     {"cfg_weight": 2.0, "demo_ratio": 0.2, "correction_ratio": 0.5}, True),
    ("guidance w 2, demo share 0.2, every correction trusted", {"cfg_weight": 2.0, "demo_ratio": 0.2,
                                                                "corrections": "always"}, True),
    ("guidance w 1, demo share 0.5", {"demo_ratio": 0.5}, True),
]


def make_data(n: int, seed: int = 0, teacher: float = 0.0):
    from vla_rl_ros.learner.evaluate import onnx_actor
    from vla_rl_ros.learner.gymloop import demo_dicts, relabelled, rollout
    from vla_rl_ros.twin.env import TwinEnv
    from vla_rl_ros.twin.expert import ScriptedExpert, collect_demos
    from vla_rl_ros.twin.teacher import Teacher

    env = TwinEnv(task="pick_place")
    spec = env.spec_
    start = onnx_actor(str(ROOT / "models" / "pick_place_bc.onnx"))
    lo, hi = env.twin.region.goals(spec.task)
    data = demo_dicts(collect_demos(env, ScriptedExpert(spec), 10, seed=0))
    rel, rng = [], np.random.default_rng(seed + 1)
    t = Teacher(spec, watch_fraction=teacher, seed=seed) if teacher > 0 else None
    for ep in range(n):
        e, O = rollout(env, start, 100_000 + ep, 0.3, rng, t)
        data.append(e)
        rel += relabelled(spec, O, e["actions"], 4, lo, hi, np.random.default_rng([seed, ep]))
    return env, data, rel


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=240)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--teacher", type=float, default=0.0,
                    help="share of episodes the sim teacher watches (0: no one helps, as `sim --teacher 0`)")
    ap.add_argument("--out", default=None, help="default: docs/bench/recap_settings[_teacher].md")
    args = ap.parse_args()
    out = args.out or str(ROOT / "docs" / "bench" / ("recap_settings_teacher.md" if args.teacher > 0
                                                     else "recap_settings.md"))
    variants = TEACHER_VARIANTS if args.teacher > 0 else VARIANTS
    import torch
    from tqdm import tqdm

    from bench_learner import machine_info, machine_line
    from vla_rl_ros.algos.recap import RecapConfig, RecapTrainer
    from vla_rl_ros.learner.evaluate import evaluate_policy, onnx_actor

    torch.set_num_threads(1)
    t0 = time.time()
    seeds = [int(s) for s in args.seeds.split(",")]
    env, data, rel = make_data(args.episodes, teacher=args.teacher)
    own = data[10:]
    start_rate = evaluate_policy(onnx_actor(str(ROOT / "models" / "pick_place_bc.onnx")), "pick_place",
                                 args.eval_episodes, EVAL_SEED, env=env).success_rate
    rows = []
    bar = tqdm(total=len(variants) * len(seeds), desc="variants x seeds")
    for name, kw, hs in variants:
        rates = []
        for s in seeds:
            tr = RecapTrainer(data[0]["obs"].shape[1], data[0]["actions"].shape[1],
                              RecapConfig(**{"h_norm": 200, **kw, "seed": s}))
            tr.round(data + (rel if hs else []))
            mod = tr.export_module()

            def pol(o, mod=mod):
                with torch.no_grad():
                    return mod(torch.as_tensor(np.asarray(o, np.float32)[None]))[0].numpy()

            rates.append(evaluate_policy(pol, "pick_place", args.eval_episodes, EVAL_SEED, env=env).success_rate)
            bar.update()
        rows.append((name, rates))
    bar.close()
    env.close()
    info = machine_info()
    lines = [
        "## Recap settings for the continual learner: one round on the same data"
        + (", teacher on" if args.teacher > 0 else "") + " (`bench/bench_recap_settings.py`)",
        "",
        f"Command: `.venv/bin/python bench/bench_recap_settings.py --episodes {args.episodes} --seeds {args.seeds}"
        + (f" --teacher {args.teacher:g}`" if args.teacher > 0 else "`"),
        "",
        machine_line(info, load=False) + f" {time.time() - t0:.0f} s in all.",
        "",
        f"Data: the 10 demos of `models/pick_place_bc.onnx` and {args.episodes} gym-twin episodes of that model with "
        f"exploration noise 0.3 ({100 * np.mean([d['success'] for d in own]):.0f}% of them succeeded"
        + (f"; the sim teacher watched {100 * args.teacher:.0f}% and took over in "
           f"{sum(d['intervention'].any() for d in own)} of them, {100 * np.mean(np.concatenate([d['intervention'] for d in own])):.0f}% of the steps"
           if args.teacher > 0 else "") + f"), plus {len(rel)} "
        "hindsight relabellings. Each cell: one Recap round from fresh weights (seed per column), the guided policy "
        f"evaluated on the same {args.eval_episodes} seeded twin episodes (deterministic). The starting model scores "
        f"**{100 * start_rate:.0f}%** on them.",
        "",
        "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | median |",
        "| --- | " + " | ".join("---:" for _ in seeds) + " | ---: |",
    ]
    for name, rates in rows:
        lines.append(f"| {name} | " + " | ".join(f"{100 * r:.0f}%" for r in rates) + f" | **{100 * np.median(rates):.0f}%** |")
    lines += ["", "95% intervals on 100 episodes are about ±9 points; read the medians across seeds.", ""]
    text = "\n".join(lines)
    print(text)
    write_section(text, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
