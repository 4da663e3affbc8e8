"""Generic SAC defaults: ours vs Stable-Baselines3 SAC, each with its own defaults, on envs the project was not built for.

Usage::

    # public panda-gym envs (PyPI `panda-gym`, PyBullet; Dict observations flattened for both learners)
    .venv/bin/python bench/bench_sac_generic.py --env PandaReach-v3 --steps 10000 --seeds 0,1,2
    # the twin's reach through the CLI verbs exactly as a user runs them (issue 8, target A)
    .venv/bin/python bench/bench_sac_generic.py --twin-cli --seeds 0,1,2
    # the twin's reach with another reward than the env's default (train_online + the same evaluation)
    .venv/bin/python bench/bench_sac_generic.py --env VlaRlRos/PandaReach-v0 --reward reach --steps 5000 --algos ours
    # only rebuild the report from the result files on disk
    .venv/bin/python bench/bench_sac_generic.py --report-only

Runs are sequential, one process, one torch thread (the machine is shared).
Every run writes ``runs/bench/sac_generic/<env>_<learner>_s<seed>.json``; the
report ``docs/bench/sac_generic.md`` is rebuilt from every result file on disk.

Protocol:

* **ours**: ``vla_rl_ros.algos.online.train_online(env_id, steps=N, seed=s)``
  with no config, i.e. :func:`vla_rl_ros.algos.online.default_online_config`
  (what ``vla-rl-ros train --algo sac --env ID --steps N`` runs);
* **SB3**: ``stable_baselines3.SAC("MlpPolicy", env, seed=s)`` with every
  hyper-parameter at its default (``learning_starts=100``, ``ent_coef="auto"``
  i.e. initial alpha 1.0, batch 256, lr 3e-4, 2x256, ``gradient_steps=1``),
  then ``learn(N)``;
* the same env for both: ``gym.make(ID)``, a ``Dict`` observation flattened
  with gymnasium's ``FlattenObservation`` (our loop does it by itself; SB3 gets
  the wrapped env), the env's own reward and time limit;
* success: the deterministic policy on 50 episodes with seeds 10000..10049 (the
  same episodes for both), an episode counts when its last step's
  ``info["is_success"]`` is true;
* ``--twin-cli``: ``vla-rl-ros train --algo sac --env VlaRlRos/PandaReach-v0
  --steps 5000 --seed s --out M.onnx`` then ``vla-rl-ros eval --model M --task
  reach --episodes 50`` (seeds 10000..10049), as subprocesses, defaults
  otherwise (the env's default reward, whichever it is at the time; on the
  twin's envs ``train`` relabels goals in hindsight by default, ``--hindsight 4``);
* ``--env VlaRlRos/PandaReach-v0 --reward NAME``: the same env with another
  reward, trained by ``train_online`` with the same defaults and evaluated on
  the same 50 episodes (success is the env's detector, whatever the reward).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_sample_efficiency import git_head  # noqa: E402  (the commit, for the record)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "runs" / "bench" / "sac_generic"
EVAL_SEED = 10_000
TWIN_ID = "VlaRlRos/PandaReach-v0"
TWIN_STEPS = 5000


def _threads() -> None:
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def make_env(env_id: str, reward: str | None = None):
    import gymnasium as gym

    try:
        import panda_gym  # noqa: F401  (registers Panda*-v3)
    except ImportError:
        pass
    import vla_rl_ros.twin  # noqa: F401
    from vla_rl_ros.algos.online import flatten_dict_obs

    return flatten_dict_obs(gym.make(env_id, **({"reward": {"name": reward}} if reward else {})))


def success_rate(policy, env_id: str, episodes: int = 50, seed: int = EVAL_SEED, reward: str | None = None) -> float:
    """Fraction of seeded episodes whose last step reports ``info['is_success']``."""
    env = make_env(env_id, reward)
    low, high = env.action_space.low, env.action_space.high
    wins = 0
    try:
        for k in range(episodes):
            obs, info = env.reset(seed=seed + k)
            done = False
            while not done:
                a = np.clip(np.asarray(policy(obs), dtype=np.float32), low, high)
                obs, _, term, trunc, info = env.step(a)
                done = term or trunc
            wins += bool(info.get("is_success", False))
    finally:
        env.close()
    return wins / episodes


def run_ours(env_id: str, steps: int, seed: int, episodes: int, overrides: dict, reward: str | None = None) -> dict:
    import torch

    from vla_rl_ros.algos.online import default_online_config, train_online

    _threads()
    cfg = default_online_config(steps, **overrides) if overrides else None
    t0 = time.perf_counter()
    sac, _ = train_online(make_env(env_id, reward), cfg, steps=steps, seed=seed, progress=False, eval_every=10 ** 9,
                          eval_fn=lambda agent: float("nan"))
    train_s = time.perf_counter() - t0
    # act() maps nothing: our actions are in [-1, 1]; rescale to the env's bounds as train_online does
    env = make_env(env_id)
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    env.close()
    rate = success_rate(lambda o: low + (sac.act(o, deterministic=True) + 1.0) * 0.5 * (high - low), env_id,
                        episodes, reward=reward)
    return {"success": rate, "train_s": train_s, "config": json.loads(sac.cfg.to_json()),
            "overrides": overrides, "torch": torch.__version__}


def run_sb3(env_id: str, steps: int, seed: int, episodes: int, overrides: dict, reward: str | None = None) -> dict:
    import stable_baselines3
    from stable_baselines3 import SAC as SB3SAC

    _threads()
    t0 = time.perf_counter()
    model = SB3SAC("MlpPolicy", make_env(env_id, reward), seed=seed, device="cpu", verbose=0, **overrides)
    model.learn(total_timesteps=steps)
    train_s = time.perf_counter() - t0
    rate = success_rate(lambda o: model.predict(o, deterministic=True)[0], env_id, episodes, reward=reward)
    return {"success": rate, "train_s": train_s, "overrides": overrides,
            "config": {"learning_starts": model.learning_starts, "batch_size": model.batch_size,
                       "gamma": model.gamma, "tau": model.tau, "lr": model.learning_rate,
                       "ent_coef": str(model.ent_coef), "target_entropy": float(model.target_entropy),
                       "gradient_steps": model.gradient_steps},
            "sb3": stable_baselines3.__version__}


def run_twin_cli(seed: int, episodes: int) -> dict:
    """Issue 8 target A: the two CLI verbs with their defaults, as subprocesses."""
    out = RESULTS / f"twin_cli_s{seed}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    cli = [str(ROOT / ".venv" / "bin" / "vla-rl-ros")]
    if not Path(cli[0]).exists():
        cli = [sys.executable, "-m", "vla_rl_ros"]
    train = cli + ["train", "--algo", "sac", "--env", TWIN_ID, "--steps", str(TWIN_STEPS), "--seed", str(seed),
                   "--out", str(out), "--eval-episodes", "0", "--tb", str(RESULTS / "tb" / f"twin_s{seed}")]
    t0 = time.perf_counter()
    subprocess.run(train, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    train_s = time.perf_counter() - t0
    ev = subprocess.run(cli + ["eval", "--model", str(out), "--task", "reach", "--episodes", str(episodes), "--json"],
                        cwd=ROOT, check=True, capture_output=True, text=True)
    s = json.loads(ev.stdout.strip().splitlines()[-1])
    import torch

    return {"success": s["success_rate"], "train_s": train_s, "eval": s, "torch": torch.__version__,
            "commands": [" ".join(["vla-rl-ros"] + train[1:]), " ".join(["vla-rl-ros"] + ev.args[1:])]}


def save(res: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = f"_{res['variant']}" if res.get("variant") else ""
    if res["env"] == TWIN_ID:
        tag += f"_{res['reward']}_{res['via']}"
    path = RESULTS / f"{res['env'].replace('/', '_')}_{res['algo']}{tag}_s{res['seed']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(path)
    return path


def reward_name(env_id: str, reward: str | None = None) -> str:
    """The reward the env uses (recorded with the twin's results)."""
    if env_id != TWIN_ID:
        return "the env's own"
    env = make_env(env_id, reward)
    try:
        return getattr(env.unwrapped.reward_fn, "name", "?")
    finally:
        env.close()


# ----------------------------------------------------------------------------- report
def load(variants: bool = False) -> dict[tuple[str, int], dict[str, dict[int, dict]]]:
    """``{(env, steps): {learner: {seed: result}}}``; ``variants``: only the runs of ours with overrides."""
    out: dict = {}
    for p in sorted(RESULTS.glob("*_s*.json")):
        r = json.loads(p.read_text())
        if bool(r.get("variant")) != variants:
            continue
        if variants:
            out.setdefault((r["env"], r["steps"]), {}).setdefault(
                f"ours, {r['variant']}, `{r['reward']}` reward", {})[r["seed"]] = r
            continue
        algo = r["algo"] if r["env"] != TWIN_ID else f"{r['algo']} via {r.get('via', 'cli')}"
        out.setdefault((r["env"], r["steps"]), {}).setdefault(algo, {})[r["seed"]] = r
    return out


def report(commands: list[str]) -> str:
    from bench_learner import machine_info, machine_line

    res = load()
    twin = {k: v for k, v in res.items() if k[0] == TWIN_ID}
    other = {k: v for k, v in res.items() if k[0] != TWIN_ID}
    only_cli = bool(twin) and not other and all(r.get("via") == "cli" for by in twin.values()
                                                for runs in by.values() for r in runs.values())
    title = ("The twin's reach through the CLI with hindsight relabelling on (`train`'s default now; "
             "`bench/bench_sac_generic.py --twin-cli`)" if only_cli
             else "Generic SAC defaults: ours vs Stable-Baselines3 SAC (`bench/bench_sac_generic.py`)")
    lines = [f"## {title}", "",
             "Commands:", ""] + [f"    {c}" for c in commands] + ["",
             machine_line(machine_info(), load=False) + " Runs sequential, one at a time.", "",
             "Protocol:" + __doc__.split("Protocol:")[1], ""]
    if twin:
        lines += ["### The twin's reach with the CLI defaults (issue 8, target A: ≥ 95% for every seed)", "",
                  "| env | reward | steps | learner | success per seed (50 episodes) | median | train time / run |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for (env_id, steps), by in sorted(twin.items()):
            for algo, runs in sorted(by.items()):
                rs = [runs[s] for s in sorted(runs)]
                lines.append(f"| `{env_id}` | `{rs[0].get('reward', '?')}` | {steps:,} | {algo} | "
                             + ", ".join(f"s{r['seed']}: {100 * r['success']:.0f}%" for r in rs)
                             + f" | {100 * statistics.median(r['success'] for r in rs):.0f}% | "
                             f"{statistics.median(r['train_s'] for r in rs) / 60:.1f} min |")
        lines.append("")
        for (env_id, steps), by in sorted(twin.items()):
            for algo, runs in sorted(by.items()):
                rs = [runs[s] for s in sorted(runs)]
                met = sum(r["success"] >= 0.95 for r in rs)
                lines.append(f"* {algo}, `{rs[0].get('reward', '?')}` reward: ≥ 95% on {met}/{len(rs)} seeds "
                             f"({'met' if met == len(rs) else 'not met'}).")
        lines += ["", "Why the reach's default reward is `reach_cost` at its scale, and what the initial temperature "
                  "does: see `vla_rl_ros.algos.online.default_online_config` and "
                  "`vla_rl_ros.rewards.finishing.ReachCost`.", ""]
    if other:
        lines += ["### Public envs, each learner with its own defaults, same steps", "",
                  "| env | steps | learner | success per seed (50 episodes) | median | train time / run |",
                  "| --- | --- | --- | --- | --- | --- |"]
        verdicts = []
        for (env_id, steps), by in sorted(other.items()):
            med = {}
            for algo in ("ours", "sb3"):
                runs = by.get(algo)
                if not runs:
                    continue
                rs = [runs[s] for s in sorted(runs)]
                med[algo] = statistics.median(r["success"] for r in rs)
                lines.append(f"| `{env_id}` | {steps:,} | {algo} | "
                             + ", ".join(f"s{r['seed']}: {100 * r['success']:.0f}%" for r in rs)
                             + f" | {100 * med[algo]:.0f}% | {statistics.median(r['train_s'] for r in rs) / 60:.1f} min |")
            if len(med) == 2:
                verdicts.append(f"`{env_id}` at {steps:,} steps: ours {100 * med['ours']:.0f}% vs SB3 "
                                f"{100 * med['sb3']:.0f}% median ("
                                + ("ours ≥ SB3" if med["ours"] >= med["sb3"] else "ours < SB3") + ")")
        lines += [""] + [f"* {v}." for v in verdicts] + [""]
    var = load(variants=True)
    if var:
        lines += ["### Other settings of ours (exploratory: `--variant NAME --ours-overrides JSON`)", "",
                  "| env | steps | learner | success per seed (50 episodes) | median |", "| --- | --- | --- | --- | --- |"]
        for (env_id, steps), by in sorted(var.items()):
            for algo, runs in sorted(by.items()):
                rs = [runs[s] for s in sorted(runs)]
                lines.append(f"| `{env_id}` | {steps:,} | {algo} | "
                             + ", ".join(f"s{r['seed']}: {100 * r['success']:.0f}%" for r in rs)
                             + f" | {100 * statistics.median(r['success'] for r in rs):.0f}% |")
        lines.append("")
    allr = [r for by in res.values() for runs in by.values() for r in runs.values()]
    if allr:
        heads = sorted({r["git_head"] for r in allr if r.get("git_head")})
        lines += [f"Result files written {min(r['finished_utc'] for r in allr)} – "
                  f"{max(r['finished_utc'] for r in allr)} UTC (HEAD {', '.join(heads)}); torch "
                  f"{next((r['torch'] for r in allr if 'torch' in r), '?')}, stable-baselines3 "
                  f"{next((r['sb3'] for r in allr if 'sb3' in r), '?')}.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="PandaReach-v3")
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--algos", default="ours,sb3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--reward", default=None, help="twin envs: reward name instead of the env's default")
    ap.add_argument("--twin-cli", action="store_true", help="target A: the train/eval CLI on the twin's reach")
    ap.add_argument("--variant", default="", help="exploration only: a name for --ours-overrides (not reported)")
    ap.add_argument("--ours-overrides", default="{}", help="exploration only: JSON SACConfig overrides for ours")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "sac_generic.md"))
    args = ap.parse_args()

    cmd_file = RESULTS / "commands.json"
    commands = json.loads(cmd_file.read_text()) if cmd_file.exists() else {}
    if not args.report_only:
        env_id = TWIN_ID if args.twin_cli else args.env
        steps = TWIN_STEPS if args.twin_cli else args.steps
        rew = reward_name(env_id, None if args.twin_cli else args.reward)
        algos = ["ours"] if args.twin_cli else args.algos.split(",")
        for seed in (int(s) for s in args.seeds.split(",")):
            for algo in algos:
                t = time.perf_counter()
                load1 = os.getloadavg()[0]
                if args.twin_cli:
                    r = run_twin_cli(seed, args.episodes)
                    r["via"] = "cli"
                else:
                    ov = json.loads(args.ours_overrides) if algo == "ours" else {}
                    r = (run_ours if algo == "ours" else run_sb3)(env_id, steps, seed, args.episodes, ov,
                                                                  args.reward)
                    r["via"] = "train_online"
                r.update({"env": env_id, "algo": algo, "seed": seed, "steps": steps, "episodes": args.episodes,
                          "variant": args.variant, "reward": rew, "wall_s": time.perf_counter() - t,
                          "load1": [load1, os.getloadavg()[0]], "git_head": git_head(),
                          "finished_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())})
                path = save(r)
                print(f"{env_id} {algo}{'/' + args.variant if args.variant else ''} seed {seed}: success "
                      f"{100 * r['success']:.0f}% ({r['train_s']:.0f} s training) -> {os.path.relpath(path, ROOT)}",
                      flush=True)
        if not args.variant:
            key = "twin-cli" if args.twin_cli else f"{env_id}:{steps}:{args.reward or ''}"
            commands[key] = ".venv/bin/python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
            cmd_file.write_text(json.dumps(commands, indent=1))
    if args.variant:
        return 0
    text = report([c for _, c in sorted(commands.items(), key=lambda kv: kv[0] != "twin-cli")])
    print(text)
    from collect import write_section

    write_section(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
