"""``vla-rl-ros demos``: scripted-expert demonstrations in the twin, imported as flagged demo episodes."""
from __future__ import annotations

import os


def register(sub) -> None:
    p = sub.add_parser("demos", help="collect scripted-expert demos in the twin and import them into a run's store")
    p.add_argument("--task", choices=["reach", "pick_place"], required=True)
    p.add_argument("--run", required=True, help="run folder (created if missing)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed SEED+i")
    p.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise on the expert's hand motion")
    p.set_defaults(func=run)


def collect_and_import(run, task: str, episodes: int, seed: int = 0, noise: float = 0.0, progress: bool = False) -> list[int]:
    import numpy as np

    from ..buffer import import_episodes
    from ..twin.env import TwinEnv
    from ..twin.expert import ScriptedExpert, collect_demos

    env = TwinEnv(task=task)
    try:
        expert = ScriptedExpert(env.spec_, noise=noise, rng=np.random.default_rng(seed))
        eps = collect_demos(env, expert, episodes, seed=seed, progress=progress)
    finally:
        env.close()
    for ep in eps:
        ep["task"] = task
        ep["end_reason"] = "success" if ep["success"] else "timeout"
        ep["reward_config"] = env.reward_fn.config
        ep["model_version"] = f"expert{'-noise' + str(noise) if noise else ''}"
    return import_episodes(run.buffer_path, eps, is_demo=True, spec=run.spec)


def run(args) -> int:
    from ..buffer import create_run
    from ..spec import Spec

    root, name = os.path.split(os.path.abspath(args.run))
    run = create_run(root, name, Spec(task=args.task), robot_id="sim", exist_ok=True)
    ids = collect_and_import(run, args.task, args.episodes, args.seed, args.noise, progress=True)
    print(f"imported {len(ids)} demo episodes into {run.buffer_path}")
    return 0
