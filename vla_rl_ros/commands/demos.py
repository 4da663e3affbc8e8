"""``vla-rl-ros demos``: scripted-expert demonstrations in the arm's twin, imported as flagged demo episodes."""
from __future__ import annotations

import os

from ._arm import add_params_argument, arm_from_args


def register(sub) -> None:
    p = sub.add_parser("demos", help="collect scripted-expert demos in the arm's twin and import them into a run's store")
    p.add_argument("--task", choices=["reach", "pick_place"], required=True)
    p.add_argument("--run", required=True, help="run folder (created with the arm's spec if missing)")
    add_params_argument(p)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed SEED+i")
    p.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise on the expert's hand motion")
    p.set_defaults(func=run)


def collect_and_import(run, task: str, episodes: int, seed: int = 0, noise: float = 0.0, progress: bool = False,
                       arm=None, count_successes: bool = False):
    """Expert episodes of ``task`` in ``arm``'s twin (:class:`~vla_rl_ros.arm.Arm`; ``None``: the twin of the
    run's spec, with the Panda's URDF) imported into ``run``'s store as demos; returns their ids (and, with
    ``count_successes``, how many succeeded)."""
    import numpy as np

    from ..arm import Arm
    from ..buffer import import_episodes
    from ..twin.expert import ScriptedExpert, collect_demos

    arm = (arm or Arm(run.spec)).with_task(task)
    if arm.spec != run.spec.replace(task=task):
        raise ValueError(f"the arm's spec differs from the run's ({run.path}/run.json): "
                         + "; ".join(run.spec.replace(task=task).diff(arm.spec)))
    env = arm.twin().env(task)
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
    ids = import_episodes(run.buffer_path, eps, is_demo=True, spec=run.spec)
    return (ids, sum(bool(ep["success"]) for ep in eps)) if count_successes else ids


def run(args) -> int:
    from ..buffer import create_run

    arm = arm_from_args(args, args.task)
    root, name = os.path.split(os.path.abspath(args.run))
    run = create_run(root, name, arm.spec, robot_id="sim", exist_ok=True)
    ids, n_success = collect_and_import(run, args.task, args.episodes, args.seed, args.noise, progress=True, arm=arm,
                                        count_successes=True)
    print(f"imported {len(ids)} demo episodes ({n_success} successful: the expert's success rate "
          f"{100 * n_success / max(1, len(ids)):.0f}% on seeds {args.seed}..{args.seed + args.episodes - 1}) "
          f"into {run.buffer_path}")
    return 0
