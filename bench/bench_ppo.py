"""PPO from scratch on the twin's reach: ours (algos/ppo.py) against Stable-Baselines3's PPO, same env, steps, seeds.

Usage (one implementation and seed per command; then the report)::

    .venv/bin/python bench/bench_ppo.py --impl ours --seed 0 [--steps 50000]
    .venv/bin/python bench/bench_ppo.py --impl sb3  --seed 0 [--steps 50000]
    .venv/bin/python bench/bench_ppo.py --report [--out docs/bench/ppo.md]

Both train on ``VlaRlRos/PandaReach-v0`` (the twin's reach: its default finishing
reward, 50-step episodes) from scratch, with the same PPO settings: ``n_envs``
envs in one process each (ours: gymnasium's ``AsyncVectorEnv``; SB3:
``SubprocVecEnv``), ``n_steps`` per env per rollout, minibatch 64, 10 epochs,
lr 3e-4, gamma 0.99, lambda 0.95, clip 0.2, 64x64 Tanh networks, learned
state-independent log-std starting at 0, and observation plus reward
normalisation (ours inside the model; SB3 with ``VecNormalize``, its usual
companion for continuous control). Differences left as each library defines
them: ours clips the value loss (CleanRL), SB3 does not by default.

Success: the deterministic policy on the same 50 seeded twin episodes (ours
exported to ONNX and run through ONNX Runtime; SB3 through ``predict`` on
``VecNormalize``-normalised observations). Throughput: env steps per second of
wall time over the whole training (rollouts and updates).
"""
from __future__ import annotations

import argparse
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
from collect import load_runs, save_run, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "VlaRlRos/PandaReach-v0"
TASK = "reach"
EVAL_SEED = 30_000


def run_ours(args):
    from vla_rl_ros.algos.export import export_onnx
    from vla_rl_ros.algos.ppo import PPOConfig, make_vector_env, train_ppo
    from vla_rl_ros.learner.evaluate import evaluate_onnx
    from vla_rl_ros.spec import Spec

    cfg = PPOConfig(n_envs=args.n_envs, n_steps=args.n_steps, seed=args.seed)
    envs = make_vector_env(ENV_ID, cfg.n_envs, asynchronous=True)
    t0 = time.perf_counter()
    try:
        ppo, hist = train_ppo(envs, cfg, args.steps)
    finally:
        envs.close()
    wall = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ppo.onnx"
        export_onnx(ppo.policy_module(), Spec(task=TASK), path, {"algorithm": "ppo", "training_steps": ppo.env_steps})
        res = evaluate_onnx(str(path), TASK, episodes=args.episodes, seed=EVAL_SEED)
    curve = [(int(m["env_steps"]), m.get("success")) for m in hist]
    return ppo.env_steps, wall, res, curve


def run_sb3(args):
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize

    from vla_rl_ros.learner.evaluate import evaluate_policy

    def make():
        import vla_rl_ros.twin  # noqa: F401

        return gym.make(ENV_ID)

    venv = VecNormalize(SubprocVecEnv([make] * args.n_envs), norm_obs=True, norm_reward=True, gamma=0.99)
    curve: list = []

    class Successes(BaseCallback):
        """Success rate of the episodes finished in each rollout (as ours reports it)."""

        def _on_rollout_start(self) -> None:
            self.ended: list[bool] = []

        def _on_step(self) -> bool:
            for done, info in zip(self.locals["dones"], self.locals["infos"]):
                if done:
                    self.ended.append(bool(info.get("is_success", False)))
            return True

        def _on_rollout_end(self) -> None:
            curve.append((int(self.num_timesteps), float(np.mean(self.ended)) if self.ended else None))

    model = PPO("MlpPolicy", venv, n_steps=args.n_steps, batch_size=64, n_epochs=10, learning_rate=3e-4,
                gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
                seed=args.seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.steps, callback=Successes())
    wall = time.perf_counter() - t0
    venv.training = False

    def pol(o):
        a, _ = model.predict(venv.normalize_obs(np.asarray(o, np.float32)[None]), deterministic=True)
        return np.clip(a[0], -1.0, 1.0)

    res = evaluate_policy(pol, TASK, episodes=args.episodes, seed=EVAL_SEED)
    n = int(model.num_timesteps)
    venv.close()
    return n, wall, res, curve


def run_one(args) -> int:
    steps, wall, res, curve = (run_ours if args.impl == "ours" else run_sb3)(args)
    out = {"impl": args.impl, "seed": args.seed, "env_steps": steps, "wall_s": wall, "steps_per_s": steps / wall,
           "success": res.success_rate, "mean_return": res.mean_return, "episodes": args.episodes,
           "n_envs": args.n_envs, "n_steps": args.n_steps, "curve": curve, "load1": os.getloadavg()[0],
           "machine": machine_info()}
    save_run(args.data_root, "ppo", f"{args.impl}_s{args.seed}", out)
    print(f"{args.impl} seed {args.seed}: {100 * res.success_rate:.0f}% success over {args.episodes} episodes, "
          f"{steps} env steps in {wall:.0f} s ({steps / wall:.0f} steps/s)")
    return 0


def report(args) -> int:
    by = load_runs(args.data_root, "ppo", "impl")
    try:
        import stable_baselines3

        v = stable_baselines3.__version__
    except ImportError:
        v = "?"
    label = {"ours": "PPO (ours, `algos/ppo.py`)", "sb3": f"PPO (Stable-Baselines3 {v})"}
    med = {k: statistics.median(r["success"] for r in rs) for k, rs in by.items()}
    fps = {k: statistics.median(r["steps_per_s"] for r in rs) for k, rs in by.items()}
    r0 = next(iter(by.values()))[0]  # the first result file
    lines = [
        "## PPO from scratch on the twin's reach, against Stable-Baselines3 (`bench/bench_ppo.py`)",
        "",
        "Commands: `.venv/bin/python bench/bench_ppo.py --impl ours|sb3 --seed S --steps N` for each, then "
        "`.venv/bin/python bench/bench_ppo.py --report --plot` (one implementation and seed per process, niced, "
        "one after the other on the shared machine: the throughputs are not from one process side by side).",
        "",
        machine_line(r0["machine"], load=False),
        "",
        f"Env `{ENV_ID}`, {r0['n_envs']} envs (one process each), {r0['n_steps']} steps per env per rollout, "
        "minibatch 64, 10 epochs, lr 3e-4, 64x64 Tanh, observation and reward normalisation in both. "
        f"Evaluation: the deterministic policy on the same {r0['episodes']} seeded episodes "
        f"(seeds {EVAL_SEED}..{EVAL_SEED + r0['episodes'] - 1}).",
        "",
        "| implementation | env steps | success, median | per seed | env steps/s, median | per seed |",
        "| --- | ---: | ---: | --- | ---: | --- |",
    ]
    for k in ("ours", "sb3"):
        if k not in by:
            continue
        rs = sorted(by[k], key=lambda r: r["seed"])
        steps = ", ".join(sorted({f"{r['env_steps']:,}" for r in rs}))
        lines.append(f"| {label[k]} | {steps} | "
                     f"**{100 * med[k]:.0f}%** | " + ", ".join(f"{100 * r['success']:.0f} (s{r['seed']})" for r in rs)
                     + f" | **{fps[k]:.0f}** | " + ", ".join(f"{r['steps_per_s']:.0f}" for r in rs) + " |")
    lines.append("")
    if "ours" in by and "sb3" in by:
        ratio = fps["ours"] / fps["sb3"]
        lines += [
            f"Targets: success at equal steps ≥ SB3's: {100 * med['ours']:.0f}% vs {100 * med['sb3']:.0f}% "
            f"**{'met' if med['ours'] >= med['sb3'] else 'missed'}**; throughput ≥ 1.5x SB3's: {ratio:.2f}x "
            f"**{'met' if ratio >= 1.5 else 'missed'}**.",
            "",
        ]
        if ratio < 1.5:
            lines += [
                "Reading the throughput miss: both implementations step the same twin envs in two worker processes "
                "on the same 2 shared cores, and the physics and IK of each env step are the same work in both; "
                "a PPO implementation controls only its own per-step inference and its updates (10 epochs of "
                "64-sample minibatches on 64x64 networks in both). How the wall time splits between the envs and "
                "the learner is not isolated by this bench.",
                "",
            ]
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k, color in (("ours", "C0"), ("sb3", "C1")):
            for i, r in enumerate(sorted(by.get(k, []), key=lambda r: r["seed"])):
                pts = [(s, y) for s, y in r["curve"] if y is not None]
                if pts:
                    ax.plot(*zip(*pts), color=color, alpha=0.8, label=label[k] if i == 0 else None)
        ax.set_xlabel("env steps")
        ax.set_ylabel("training-episode success")
        ax.set_title("PPO on the twin's reach (training rollouts)")
        ax.legend()
        fig.tight_layout()
        img = ROOT / "docs" / "img" / "ppo_reach.png"
        fig.savefig(img, dpi=100)
        lines += [f"![PPO training curves](../img/{img.name})", "",
                  "The curve is the success rate of the stochastic policy's training episodes per rollout; the "
                  "table's success is the deterministic policy's on the evaluation episodes.", ""]
    text = "\n".join(lines)
    print(text)
    write_section(text, args.out)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--impl", choices=["ours", "sb3"])
    mode.add_argument("--report", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--n-envs", type=int, default=2)
    ap.add_argument("--n-steps", type=int, default=1024)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--plot", action="store_true", help="--report: also docs/img/ppo_reach.png")
    ap.add_argument("--data-root", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "ppo.md"))
    args = ap.parse_args()
    return report(args) if args.report else run_one(args)


if __name__ == "__main__":
    sys.exit(main())
