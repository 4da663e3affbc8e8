"""Offline: Recap vs behaviour cloning vs d3rlpy IQL on one fixed mixed-quality pick_place dataset.

Usage::

    .venv/bin/python bench/bench_offline.py [--seeds 0,1,2] [--iql-steps 10000] [--out docs/bench/offline.md]

The dataset (``runs/bench/offline_dataset``, a durable run: ``create_run`` +
``import_episodes``; built once, reused unless ``--rebuild``) holds
``pick_place`` episodes of the :class:`ScriptedExpert` at several noise levels
(the noise is added to the executed and recorded action, so the data mixes
good and bad actions; ``collect_demos``):

* clean expert episodes (noise 0),
* noisy expert episodes (noise uniform in [0.5, 1.0] per episode),
* random-ish episodes (noise uniform in [1.5, 3.0]: mostly failures).

All three learners read the *same* data back through
``Replay([...]).episodes()``:

* **BC**: :func:`vla_rl_ros.algos.bc.train_bc` on every transition (its
  defaults: MSE loss, 2x256, batch 256, lr 3e-4, normaliser fitted on the data).
* **Recap**: one :meth:`RecapTrainer.round` on every episode
  (``RecapConfig`` defaults, ``h_norm`` = the task's episode length, and as many
  actor steps as BC gets), exported with :meth:`export_module` (positive
  indicator, guidance ``w = cfg_weight``). The episodes flagged as demos in the
  store are always positive and sit on the demo side of the actor's batches,
  exactly as the continual learner treats them (``intervention | is_demo``).
  For context, the same round with the flags ignored, and BC on the flagged
  demos alone.
* **IQL**: ``d3rlpy.algos.IQLConfig`` defaults (expectile 0.7, beta 3.0,
  2 critics, 256x256 encoders, batch 256, lr 3e-4, gamma 0.99) on the same
  transitions with the env's (staged ``pick_and_place``) rewards, as an
  ``MDPDataset`` with ``terminals`` (success) and ``timeouts`` (time limit; the
  final observation is appended so the last transition keeps its true next
  observation). Changed: ``StandardObservationScaler`` (ours normalise
  observations too) and ``n_steps`` (compute budget; default examples use 1M).

Our two policies are exported to ONNX (:func:`export_onnx`) and evaluated
through ONNX Runtime (:func:`evaluate_onnx`), the deployed path; IQL through
``predict``. Every policy is evaluated on the same 50 seeded twin episodes.
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

from collect import write_section

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

torch.set_num_threads(1)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:
    pass

from bench_learner import cmd_line, machine_info, machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASK = "pick_place"
EVAL_SEED = 10_000
GROUPS = (  # name, episodes (default), noise range, first seed
    ("clean expert", 20, (0.0, 0.0), 20_000),
    ("noisy expert", 60, (0.5, 1.0), 21_000),
    ("random-ish", 20, (1.5, 3.0), 22_000),
)


# ----------------------------------------------------------------------------- dataset
def build_dataset(root: Path, name: str, counts: dict[str, int]) -> Path:
    """Roll out the expert groups and store them in a durable run; returns the run folder."""
    from vla_rl_ros.buffer import create_run, import_episodes
    from vla_rl_ros.twin.env import TwinEnv
    from vla_rl_ros.twin.expert import ScriptedExpert, collect_demos

    env = TwinEnv(task=TASK)
    run = create_run(root, name, env.spec_, robot_id="twin-bench")
    meta = []
    try:
        for g, (group, _, (lo, hi), seed0) in enumerate(GROUPS):
            rng = np.random.default_rng(seed0)
            eps = []
            for i in range(counts[group]):
                noise = float(rng.uniform(lo, hi))
                expert = ScriptedExpert(env.spec_, noise=noise, rng=np.random.default_rng(seed0 + i))
                ep = collect_demos(env, expert, 1, seed=seed0 + i)[0]
                ep.update(task=TASK, info={"group": group, "noise": noise},
                          end_reason="success" if ep["success"] else "timeout")
                eps.append(ep)
            import_episodes(run.buffer_path, eps, is_demo=(group == "clean expert"), spec=env.spec_,
                            model_version=f"expert-noise-{lo}-{hi}")
            meta.append({"group": group, "episodes": len(eps), "noise": [lo, hi],
                         "success_rate": float(np.mean([e["success"] for e in eps])),
                         "transitions": int(sum(len(e["actions"]) for e in eps))})
    finally:
        env.close()
    (run.path / "dataset.json").write_text(json.dumps(meta, indent=1))
    return run.path


def load_episodes(run_path: Path):
    from vla_rl_ros.buffer import Replay

    with Replay([run_path]) as replay:
        return replay.episodes()


# ----------------------------------------------------------------------------- learners
def train_bc_policy(eps, seed: int, steps: int):
    from vla_rl_ros.algos.bc import train_bc

    obs = np.concatenate([e.obs for e in eps])
    act = np.concatenate([e.actions for e in eps])
    return train_bc(obs, act, steps=steps, seed=seed)


def train_recap_policy(eps, seed: int, steps: int, h_norm: int, use_flags: bool = True, **overrides):
    """One Recap round; ``use_flags``: demo episodes are positive, as in the continual learner (False: they are
    ordinary episodes, labelled by their advantage like the rest). ``overrides`` go to :class:`RecapConfig`."""
    from vla_rl_ros.algos.recap import RecapConfig, RecapTrainer

    cfg = RecapConfig(**{"h_norm": h_norm, "actor_steps": steps, "value_steps": steps, "seed": seed, **overrides})
    trainer = RecapTrainer(eps[0].obs.shape[1], eps[0].actions.shape[1], cfg)
    data = [{"obs": e.obs, "actions": e.actions, "success": e.success,
             "intervention": e.intervention | (bool(e.is_demo) and use_flags)} for e in eps]
    metrics = trainer.round(data)
    # label quality: which steps did the advantage indicator call "positive"?
    ind = trainer.label(data)["indicator"]
    clean = np.concatenate([np.full(len(e), e.is_demo) for e in eps])
    ok = np.concatenate([np.full(len(e), e.success) for e in eps])
    metrics.update(pos_clean=float(ind[clean].mean()), pos_other_success=float(ind[~clean & ok].mean()),
                   pos_failed=float(ind[~ok].mean()), positives_clean_share=float(ind[clean].sum() / max(ind.sum(), 1)))
    return trainer, metrics


def iql_dataset(eps):
    """d3rlpy MDPDataset; timed-out episodes get their final observation appended (dummy action, reward 0)."""
    import d3rlpy

    obs_l, act_l, rew_l, term_l, tout_l = [], [], [], [], []
    for e in eps:
        n = len(e.actions)
        term = np.zeros(n, np.float32)
        tout = np.zeros(n, np.float32)
        o, a, r = e.obs, e.actions, e.rewards
        if bool(e.terminated[-1]):
            term[-1] = 1.0
        else:
            o = np.concatenate([o, e.next_obs[-1:]])
            a = np.concatenate([a, np.zeros((1, a.shape[1]), np.float32)])
            r = np.concatenate([r, np.zeros(1, np.float32)])
            term = np.concatenate([term, [0.0]]).astype(np.float32)
            tout = np.concatenate([tout, [1.0]]).astype(np.float32)
        obs_l.append(o), act_l.append(a), rew_l.append(r), term_l.append(term), tout_l.append(tout)
    return d3rlpy.dataset.MDPDataset(np.concatenate(obs_l), np.concatenate(act_l),
                                     np.concatenate(rew_l).reshape(-1, 1), np.concatenate(term_l),
                                     np.concatenate(tout_l),
                                     action_space=d3rlpy.ActionSpace.CONTINUOUS)


def _quiet_d3rlpy() -> None:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def train_iql(dataset, seed: int, steps: int):
    import d3rlpy
    from d3rlpy.logging import NoopAdapterFactory

    _quiet_d3rlpy()
    d3rlpy.seed(seed)
    torch.set_num_threads(1)  # d3rlpy.seed does not touch it, but be explicit
    iql = d3rlpy.algos.IQLConfig(observation_scaler=d3rlpy.preprocessing.StandardObservationScaler()).create(
        device="cpu:0")
    iql.fit(dataset, n_steps=steps, n_steps_per_epoch=min(steps, 5000), show_progress=False,
            logger_adapter=NoopAdapterFactory(), save_interval=10 ** 9)
    return iql


# ----------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="training seeds (each learner, each seed)")
    ap.add_argument("--steps", type=int, default=5000, help="BC steps = Recap actor steps = Recap value steps")
    ap.add_argument("--iql-steps", type=int, default=10_000)
    ap.add_argument("--episodes", type=int, default=50, help="seeded evaluation episodes per policy")
    ap.add_argument("--clean", type=int, default=GROUPS[0][1])
    ap.add_argument("--noisy", type=int, default=GROUPS[1][1])
    ap.add_argument("--random", type=int, default=GROUPS[2][1])
    ap.add_argument("--data-root", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--rebuild", action="store_true", help="rebuild the dataset run even if it exists")
    ap.add_argument("--cfg-weights", default="1.5,2.0", help="extra Recap guidance weights to report (context)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "offline.md"))
    args = ap.parse_args()

    from vla_rl_ros.algos.export import export_onnx
    from vla_rl_ros.learner.evaluate import evaluate_onnx, evaluate_policy
    from vla_rl_ros.spec import Spec
    from vla_rl_ros.twin.env import DEFAULT_MAX_STEPS

    info = machine_info()
    spec = Spec(task=TASK)
    counts = {"clean expert": args.clean, "noisy expert": args.noisy, "random-ish": args.random}
    name = f"offline_dataset_c{args.clean}_n{args.noisy}_r{args.random}"
    run_path = Path(args.data_root) / name
    if args.rebuild and run_path.exists():
        import shutil

        shutil.rmtree(run_path)
    t0 = time.perf_counter()
    if not (run_path / "dataset.json").exists():
        if run_path.exists():  # an interrupted build: start over
            import shutil

            shutil.rmtree(run_path)
        build_dataset(Path(args.data_root), name, counts)
    build_s = time.perf_counter() - t0
    groups = json.loads((run_path / "dataset.json").read_text())
    eps = load_episodes(run_path)
    n_tr = sum(len(e) for e in eps)
    print(f"dataset {run_path}: {len(eps)} episodes, {n_tr} transitions, "
          f"success {100 * np.mean([e.success for e in eps]):.0f}% ({build_s:.0f} s)", flush=True)

    seeds = [int(s) for s in args.seeds.split(",")]
    weights = [float(w) for w in args.cfg_weights.split(",") if w]
    res: dict[str, list[float]] = {"bc": [], "recap": [], "iql": [], "recap_noflags": [], "bc_demos": []}
    res.update({f"recap_w{w:g}": [] for w in weights})
    train_s: dict[str, list[float]] = {"bc": [], "recap": [], "iql": []}
    recap_metrics = []

    def ev_onnx(module, algo: str, steps: int) -> float:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / f"{algo}.onnx"
            export_onnx(module, spec, path, {"algorithm": algo, "training_steps": steps,
                                             "data_range": {"run": str(run_path), "episodes": len(eps)}})
            return evaluate_onnx(str(path), TASK, episodes=args.episodes, seed=EVAL_SEED).success_rate

    mdp = iql_dataset(eps)
    for seed in seeds:
        t = time.perf_counter()
        bc = train_bc_policy(eps, seed, args.steps)
        train_s["bc"].append(time.perf_counter() - t)
        res["bc"].append(ev_onnx(bc, "bc", args.steps))
        print(f"seed {seed} BC: {100 * res['bc'][-1]:.0f}%", flush=True)

        t = time.perf_counter()
        trainer, m = train_recap_policy(eps, seed, args.steps, DEFAULT_MAX_STEPS[TASK])
        train_s["recap"].append(time.perf_counter() - t)
        recap_metrics.append(m)
        res["recap"].append(ev_onnx(trainer.export_module(), "recap", args.steps))
        for w in weights:
            res[f"recap_w{w:g}"].append(ev_onnx(trainer.export_module(cfg_weight=w), "recap", args.steps))
        print(f"seed {seed} Recap: {100 * res['recap'][-1]:.0f}% "
              + " ".join(f"w={w:g}: {100 * res[f'recap_w{w:g}'][-1]:.0f}%" for w in weights), flush=True)
        trainer_nf, _ = train_recap_policy(eps, seed, args.steps, DEFAULT_MAX_STEPS[TASK], use_flags=False)
        res["recap_noflags"].append(ev_onnx(trainer_nf.export_module(), "recap", args.steps))
        bc_d = train_bc_policy([e for e in eps if e.is_demo], seed, args.steps)
        res["bc_demos"].append(ev_onnx(bc_d, "bc", args.steps))
        print(f"seed {seed} Recap without demo flags: {100 * res['recap_noflags'][-1]:.0f}%, "
              f"BC on the demos only: {100 * res['bc_demos'][-1]:.0f}%", flush=True)

        t = time.perf_counter()
        iql = train_iql(mdp, seed, args.iql_steps)
        train_s["iql"].append(time.perf_counter() - t)
        pol = lambda o: np.clip(iql.predict(np.asarray(o, np.float32)[None])[0], -1.0, 1.0)  # noqa: E731
        res["iql"].append(evaluate_policy(pol, TASK, episodes=args.episodes, seed=EVAL_SEED).success_rate)
        print(f"seed {seed} IQL: {100 * res['iql'][-1]:.0f}% ({train_s['iql'][-1]:.0f} s)", flush=True)

    med = {k: statistics.median(v) for k, v in res.items() if v}
    import d3rlpy

    def row(label: str, key: str, what: str, steps: str, tkey: str | None) -> str:
        t = f"{statistics.median(train_s[tkey]):.0f} s" if tkey else "—"
        return (f"| {label} | {what} | {steps} | **{100 * med[key]:.0f}%** | "
                f"{', '.join(f'{100 * x:.0f}' for x in res[key])} | {t} |")

    gain = [100 * (r - b) for r, b in zip(res["recap"], res["bc"])]
    lines = [
        "## Offline: Recap vs BC vs IQL on a mixed-quality dataset (`bench/bench_offline.py`)",
        "",
        f"Command: {cmd_line()}",
        "",
        machine_line(info, os.getloadavg()[0]),
        "",
        f"Dataset: durable run `{os.path.relpath(run_path, ROOT)}` (`create_run` + `import_episodes`), read back "
        f"with `Replay.episodes()`: {len(eps)} `{TASK}` episodes, {n_tr:,} transitions, "
        f"{100 * np.mean([e.success for e in eps]):.0f}% successful.",
        "",
        "| group | episodes | expert action noise (std) | success | transitions |",
        "| --- | ---: | --- | ---: | ---: |",
        *[f"| {g['group']} | {g['episodes']} | {g['noise'][0]}–{g['noise'][1]} | {100 * g['success_rate']:.0f}% | "
          f"{g['transitions']:,} |" for g in groups],
        "",
        f"Evaluation: {args.episodes} seeded twin episodes (seeds {EVAL_SEED}..{EVAL_SEED + args.episodes - 1}), "
        "the same "
        f"for every policy; training seeds {args.seeds}.",
        "",
        "| learner | what | gradient steps | success, median | per seed | train time / seed |",
        "| --- | --- | ---: | ---: | --- | ---: |",
        row("BC", "bc", "`train_bc` (MSE) on all transitions, ONNX", f"{args.steps:,}", "bc"),
        row("Recap", "recap", f"one `RecapTrainer.round`, `h_norm={DEFAULT_MAX_STEPS[TASK]}`, defaults otherwise "
            "(demo-flagged episodes positive, half of each actor batch), w = 1, ONNX",
            f"{args.steps:,} value + {args.steps:,} actor", "recap"),
        row(f"IQL (d3rlpy {d3rlpy.__version__})", "iql", "`IQLConfig()` + standard obs scaler, `predict`",
            f"{args.iql_steps:,}", "iql"),
        *[row(f"Recap, w = {w:g} (context)", f"recap_w{w:g}", "same trainer, guidance weight w at export",
              "same", None) for w in weights],
        row("Recap, demo flags ignored (context)", "recap_noflags", "same round, every step labelled by its "
            "advantage alone", "same", None),
        row("BC on the flagged demos only (context)", "bc_demos", "`train_bc` on the clean-expert episodes", 
            f"{args.steps:,}", None),
        "",
        f"Recap − BC per seed: {', '.join(f'{g:+.0f}' for g in gain)} points (median {statistics.median(gain):+.0f}). "
        f"Recap labelled {100 * statistics.median(m['positive_fraction'] for m in recap_metrics):.0f}% of the steps "
        f"positive (value MAE {statistics.median(m['value_mae'] for m in recap_metrics):.3f} in normalised return).",
        "",
        "Recap's labels (median over seeds): positive on "
        f"{100 * statistics.median(m['pos_clean'] for m in recap_metrics):.0f}% of the clean-expert steps, "
        f"{100 * statistics.median(m['pos_other_success'] for m in recap_metrics):.0f}% of the other steps of "
        f"successful episodes and {100 * statistics.median(m['pos_failed'] for m in recap_metrics):.0f}% of the "
        "steps of failed episodes; clean-expert steps are "
        f"{100 * statistics.median(m['positives_clean_share'] for m in recap_metrics):.0f}% of the positives "
        f"({100 * sum(len(e) for e in eps if e.is_demo) / n_tr:.0f}% of the data).",
        "",
        "Target: Recap ≥ BC + 20 points: "
        + ("**met**." if statistics.median(gain) >= 20 else f"**not met** (median {statistics.median(gain):+.0f})."),
        "",
    ]
    lines += [
        "Reading: most of Recap's lead comes from the demo flags (a store records which episodes are "
        "demonstrations, and Recap, like π*0.6 with corrections, keeps them positive): BC on the flagged demos "
        "alone is the row to compare with. Without the flags Recap's advantages alone barely separate good "
        "from bad steps on this data (next paragraph).",
        "",
    ] if statistics.median(gain) >= 20 else []
    if statistics.median([100 * (r - b) for r, b in zip(res["recap_noflags"], res["bc"])]) < 20:
        lines += [
            "Why Recap without the flags stays near BC: the noise in this dataset is zero-mean Gaussian on the expert's hand "
            "motion, so whether the noisy actions taken from a state end in success is largely luck; with a value "
            "function trained on outcomes only, the N-step advantages separate clean-expert steps from the rest only "
            "weakly (the label rates above), and the positive-conditioned policy imitates a set dominated by noisy "
            "steps, much like BC. IQL learns from the env's staged reward (grasp bonus, distances), a denser signal "
            "than Recap's outcome-only reward (a likely reason for its lead, not isolated here).",
            "",
        ]
    text = "\n".join(lines)
    print(text)
    write_section(text, args.out)
    (Path(args.data_root) / "offline_results.json").write_text(json.dumps(
        {"res": res, "train_s": train_s, "recap_metrics": recap_metrics, "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
