"""Offline RL: our IQL and CQL against d3rlpy's, with BC and Recap, on the offline benchmark's mixed dataset.

Usage (one learner and seed per command, each a few minutes of CPU; then the report)::

    .venv/bin/python bench/bench_offline_rl.py --build
    .venv/bin/python bench/bench_offline_rl.py --learner iql --seed 0      # iql cql d3rlpy_iql d3rlpy_cql bc recap recap_outcome
    .venv/bin/python bench/bench_offline_rl.py --report [--out docs/bench/offline_rl.md]

The dataset is ``bench/bench_offline.py``'s (``build_dataset``: 20 clean-expert,
60 noisy-expert and 20 random-ish ``pick_place`` episodes in one durable run,
the clean ones flagged as demos). Every learner reads it back through
``Replay``:

* **IQL / CQL (ours)**: :func:`~vla_rl_ros.algos.learners.make_learner` with
  the config's defaults (IQL: expectile 0.7, beta 3, 2x256; CQL: SAC backbone,
  fixed alpha' = 5, 10 sampled actions per proposal, actor lr 1e-4), the
  normaliser fitted on the data, batches uniform over every transition
  (:func:`replay_sampler`), the env's staged rewards; exported to ONNX and
  evaluated through ONNX Runtime (the deployed path).
* **IQL / CQL (d3rlpy)**: ``IQLConfig()`` / ``CQLConfig()`` defaults (the same
  2x256 networks, batch 256, 2 critics; d3rlpy's CQL learns its alpha' by
  Lagrangian dual ascent, threshold 10) with ``StandardObservationScaler``, on
  the same transitions as an ``MDPDataset``; evaluated through ``predict``.
* **BC, Recap**: as in ``bench/bench_offline.py`` (BC on every transition;
  one Recap round, demo flags positive), as many actor steps as the others'
  gradient steps.

Every policy is evaluated on the same seeded twin episodes. Each ``--learner``
run writes ``runs/bench/offline_rl/<learner>_s<seed>.json``; ``--report``
tabulates what is there.
"""
from __future__ import annotations

import argparse
import json
import os
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

from bench_learner import machine_info, machine_line  # noqa: E402
from bench_offline import (EVAL_SEED, GROUPS, TASK, _quiet_d3rlpy, build_dataset, iql_dataset,  # noqa: E402
                           load_episodes, train_bc_policy, train_recap_policy)
from collect import load_runs, save_run, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LEARNERS = ("iql", "cql", "d3rlpy_iql", "d3rlpy_cql", "bc", "recap", "recap_outcome", "iql_rlpd", "cql_rlpd")
LABELS = {"iql": "IQL (ours)", "cql": "CQL (ours)", "d3rlpy_iql": "IQL (d3rlpy {v})", "d3rlpy_cql": "CQL (d3rlpy {v})",
          "bc": "BC", "recap": "Recap", "recap_outcome": "Recap, outcomes only",
          "iql_rlpd": "IQL (ours), RLPD sampling (context)",
          "cql_rlpd": "CQL (ours), as in the continual learner (context)"}
WHAT = {
    "iql": "`make_learner(\"iql\")` defaults, uniform batches, ONNX",
    "cql": "`make_learner(\"cql\")` defaults (fixed alpha' 5), uniform batches, ONNX",
    "d3rlpy_iql": "`IQLConfig()` + standard obs scaler, `predict`",
    "d3rlpy_cql": "`CQLConfig()` (Lagrangian alpha') + standard obs scaler, `predict`",
    "bc": "`train_bc` (MSE) on all transitions, ONNX",
    "recap": "one `RecapTrainer.round` (demo-flagged episodes positive), w = 1, ONNX",
    "recap_outcome": "one `RecapTrainer.round` with the demo flags **ignored** (every episode labelled by its "
                     "advantage), the continual learner's settings (`CONTINUAL_RECAP`: w = 2), ONNX",
    "iql_rlpd": "as IQL (ours), but half of each batch from the demo-flagged episodes (`demo_ratio=0.5`, the "
                "continual learner's sampling)",
    "cql_rlpd": "as CQL (ours), with the continual learner's settings: 1,000 BC steps on the demo-flagged episodes "
                "first, then half of each batch from them, SAC temperature from 0.05",
}


def dataset_path(data_root: Path) -> Path:
    counts = {g[0]: g[1] for g in GROUPS}
    return data_root / f"offline_dataset_c{counts['clean expert']}_n{counts['noisy expert']}_r{counts['random-ish']}"


def train_ours(name: str, run_path: Path, eps, seed: int, steps: int, **overrides):
    from vla_rl_ros.algos.learners import make_learner, replay_sampler, reuse_freed_memory
    from vla_rl_ros.buffer import Replay

    reuse_freed_memory()

    learner = make_learner(name, eps[0].obs.shape[1], eps[0].actions.shape[1], seed=seed, **overrides)
    learner.fit_obs_normalizer(np.concatenate([e.obs for e in eps]))
    with Replay([run_path], seed=seed) as replay:
        replay.refresh()
        if getattr(learner.cfg, "bc_init_steps", 0):  # as the CLI and the continual learner do
            learner.bc_pretrain(lambda: (lambda b: (b["obs"], b["action"]))(replay.sample(256, demo_ratio=1.0)),
                                learner.cfg.bc_init_steps)
        sample = replay_sampler(replay, learner.cfg)
        for _ in range(steps):
            learner.train_step(sample)
    return learner.policy_module()


def train_d3rlpy(name: str, eps, seed: int, steps: int):
    import d3rlpy
    from d3rlpy.logging import NoopAdapterFactory

    _quiet_d3rlpy()
    d3rlpy.seed(seed)
    torch.set_num_threads(1)
    scaler = d3rlpy.preprocessing.StandardObservationScaler()
    cfg = (d3rlpy.algos.IQLConfig(observation_scaler=scaler) if name == "d3rlpy_iql"
           else d3rlpy.algos.CQLConfig(observation_scaler=scaler))
    algo = cfg.create(device="cpu:0")
    algo.fit(iql_dataset(eps), n_steps=steps, n_steps_per_epoch=min(steps, 5000), show_progress=False,
             logger_adapter=NoopAdapterFactory(), save_interval=10 ** 9)
    return algo


def run_one(args) -> int:
    from vla_rl_ros.algos.export import export_onnx
    from vla_rl_ros.learner.evaluate import evaluate_onnx, evaluate_policy
    from vla_rl_ros.spec import Spec
    from vla_rl_ros.twin.env import DEFAULT_MAX_STEPS

    run_path = dataset_path(Path(args.data_root))
    eps = load_episodes(run_path)
    spec = Spec(task=TASK)
    t0 = time.perf_counter()
    if args.learner in ("iql", "cql"):
        module = train_ours(args.learner, run_path, eps, args.seed, args.steps)
    elif args.learner == "iql_rlpd":
        module = train_ours("iql", run_path, eps, args.seed, args.steps, demo_ratio=0.5)
    elif args.learner == "cql_rlpd":
        module = train_ours("cql", run_path, eps, args.seed, args.steps, demo_ratio=0.5, bc_init_steps=1000,
                            init_alpha=0.05)
    elif args.learner == "bc":
        module = train_bc_policy(eps, args.seed, args.steps)
    elif args.learner == "recap":
        module = train_recap_policy(eps, args.seed, args.steps, DEFAULT_MAX_STEPS[TASK])[0].export_module()
    elif args.learner == "recap_outcome":
        from vla_rl_ros.learner.continual import CONTINUAL_RECAP

        module = train_recap_policy(eps, args.seed, args.steps, DEFAULT_MAX_STEPS[TASK], use_flags=False,
                                    **{k: v for k, v in CONTINUAL_RECAP.items() if k != "h_norm"})[0].export_module()
    else:
        algo = train_d3rlpy(args.learner, eps, args.seed, args.steps)
        module = None
    train_s = time.perf_counter() - t0
    if module is not None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "m.onnx"
            export_onnx(module, spec, path, {"algorithm": args.learner, "training_steps": args.steps})
            res = evaluate_onnx(str(path), TASK, episodes=args.episodes, seed=EVAL_SEED)
    else:
        pol = lambda o: np.clip(algo.predict(np.asarray(o, np.float32)[None])[0], -1.0, 1.0)  # noqa: E731
        res = evaluate_policy(pol, TASK, episodes=args.episodes, seed=EVAL_SEED)
    out = {"learner": args.learner, "seed": args.seed, "steps": args.steps, "episodes": args.episodes,
           "success": res.success_rate, "mean_return": res.mean_return, "train_s": train_s,
           "load1": os.getloadavg()[0], "machine": machine_info()}
    save_run(args.data_root, "offline_rl", f"{args.learner}_s{args.seed}", out)
    print(f"{args.learner} seed {args.seed}: {100 * res.success_rate:.0f}% over {args.episodes} episodes, "
          f"return {res.mean_return:.2f}, trained in {train_s:.0f} s")
    return 0


def report(args) -> int:
    by = load_runs(args.data_root, "offline_rl", "learner")
    first = next(iter(by.values()))[0]  # the first result file: machine and evaluation settings
    try:
        import d3rlpy

        v = d3rlpy.__version__
    except ImportError:
        v = "?"
    run_path = dataset_path(Path(args.data_root))
    groups = json.loads((run_path / "dataset.json").read_text())
    info = first["machine"]
    med = {k: statistics.median(r["success"] for r in rs) for k, rs in by.items()}
    lines = [
        "## Offline RL: IQL and CQL against d3rlpy, BC and Recap (`bench/bench_offline_rl.py`)",
        "",
        "Commands: `.venv/bin/python bench/bench_offline_rl.py --build`, then for each learner and seed "
        "`.venv/bin/python bench/bench_offline_rl.py --learner L --seed S --steps N`, then "
        "`.venv/bin/python bench/bench_offline_rl.py --report` (one learner and seed per process, each timed alone "
        "on the shared machine, niced).",
        "",
        machine_line(info, load=False),
        "",
        f"Dataset: `bench/bench_offline.py`'s, the durable run `{os.path.relpath(run_path, ROOT)}`: "
        + ", ".join(f"{g['episodes']} {g['group']} episodes ({100 * g['success_rate']:.0f}% successful)"
                    for g in groups) + ".",
        "",
        f"Evaluation: the same {first['episodes']} seeded twin `{TASK}` episodes (seeds {EVAL_SEED}.."
        f"{EVAL_SEED + first['episodes'] - 1}) for every policy.",
        "",
        "| learner | what | gradient steps | success, median | per seed | train time / seed, median |",
        "| --- | --- | ---: | ---: | --- | ---: |",
    ]
    for k in LEARNERS:
        if k not in by:
            continue
        rs = sorted(by[k], key=lambda r: r["seed"])
        steps = {r["steps"] for r in rs}
        steps_s = ", ".join(f"{s:,}" for s in sorted(steps)) + (" value + actor" if k == "recap" else "")
        lines.append(f"| {LABELS[k].format(v=v)} | {WHAT[k]} | {steps_s} | **{100 * med[k]:.0f}%** | "
                     + ", ".join(f"{100 * r['success']:.0f} (s{r['seed']})" for r in rs)
                     + f" | {statistics.median(r['train_s'] for r in rs):.0f} s |")
    lines.append("")
    def verdict(a: str, b: str) -> str:
        if med[a] == 0 and med[b] == 0:
            return "**not shown** (both 0%: neither has learned the task at this budget)"
        return "**met**" if med[a] >= med[b] else "**missed**"

    verdicts = []
    for ours, ref in (("iql", "d3rlpy_iql"), ("cql", "d3rlpy_cql")):
        if ours in by and ref in by:
            verdicts.append(f"{LABELS[ours]} {100 * med[ours]:.0f}% vs {LABELS[ref].format(v=v)} "
                            f"{100 * med[ref]:.0f}%: {verdict(ours, ref)}")
            for other in ("bc", "recap"):
                if other in by:
                    verdicts.append(f"{LABELS[ours]} vs {LABELS[other]} {100 * med[other]:.0f}%: "
                                    f"{verdict(ours, other)}")
    if "recap_outcome" in by and "bc" in by:  # issue 8's offline target for Recap: outcomes, not labels
        verdicts.append(f"{LABELS['recap_outcome']} {100 * med['recap_outcome']:.0f}% vs BC + 20 points "
                        f"({100 * med['bc'] + 20:.0f}%): "
                        + ("**met**" if med["recap_outcome"] >= med["bc"] + 0.2 else "**missed**"))
        if "d3rlpy_iql" in by:
            verdicts.append(f"{LABELS['recap_outcome']} vs {LABELS['d3rlpy_iql'].format(v=v)} "
                            f"{100 * med['d3rlpy_iql']:.0f}%: {verdict('recap_outcome', 'd3rlpy_iql')}")
    if verdicts:
        lines += ["Targets (success ≥ d3rlpy's for each, and against BC and Recap):", ""]
        lines += [f"- {x}" for x in verdicts] + [""]
    times = {k: statistics.median(r["train_s"] for r in rs) / max(1, rs[0]["steps"]) for k, rs in by.items()}
    for ours, ref in (("iql", "d3rlpy_iql"), ("cql", "d3rlpy_cql")):
        if ours in times and ref in times:
            lines.append(f"- {LABELS[ours]}: {1e3 * times[ours]:.1f} ms per gradient step (training and its batch "
                         f"sampling) vs d3rlpy's {1e3 * times[ref]:.1f} ms ({times[ref] / times[ours]:.1f}x).")
    lines.append("")
    lines += [
        "Budgets: a CQL gradient step costs an order of magnitude more than an IQL one (3 x 10 sampled actions per "
        "state through both critics; times above), so, to keep each process to a few minutes on this shared "
        "machine, CQL got 2,000 steps, far short of the papers' budgets.",
        "",
        "Reading: on this data (80% noisy or random-ish episodes, the clean demos 5% of the transitions), IQL and "
        "CQL with the papers' uniform sampling trail BC on everything and Recap, which is told which episodes are "
        "demonstrations." + (
            f" With half of each batch from the flagged demos, as the continual learner samples, IQL scores "
            f"{100 * med['iql_rlpd']:.0f}% (median of {len(by['iql_rlpd'])} seed(s)) against BC's "
            f"{100 * med['bc']:.0f}%." if "iql_rlpd" in by and "bc" in by else "")
        + (f" Recap with the demo flags ignored scores {100 * med['recap_outcome']:.0f}% against "
           f"{100 * med['recap']:.0f}% with them: on this data its outcome-only advantages do not find the "
           "clean episodes by themselves (issue 8's target, BC + 20 points from outcomes alone, is missed; not "
           "yet isolated whether the value fit, the 30% positive share or guidance 2 is what fails)."
           if "recap_outcome" in by and "recap" in by else "")
        + " Compare rows within this section only: the offline section's figures "
        "(`bench/bench_offline.py`) came from a dataset built and evaluated with earlier versions of the twin and "
        "of its default rewards; this one was rebuilt by `--build` for this run.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(text, args.out)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--build", action="store_true", help="build the dataset run (bench_offline's) if missing")
    mode.add_argument("--learner", choices=LEARNERS)
    mode.add_argument("--report", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=5000, help="gradient steps (Recap: value and actor steps each)")
    ap.add_argument("--episodes", type=int, default=50, help="seeded evaluation episodes")
    ap.add_argument("--data-root", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "offline_rl.md"))
    args = ap.parse_args()
    if args.build:
        path = dataset_path(Path(args.data_root))
        if not (path / "dataset.json").exists():
            build_dataset(Path(args.data_root), path.name, {g[0]: g[1] for g in GROUPS})
        print(f"dataset {path}")
        return 0
    if args.report:
        return report(args)
    return run_one(args)


if __name__ == "__main__":
    sys.exit(main())
