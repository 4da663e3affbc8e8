"""``vla-rl-ros train``: training without ROS.

    vla-rl-ros train --algo sac   --env VlaRlRos/PandaReach-v0 --steps 5000 --out reach_sac.onnx
    vla-rl-ros train --algo sac   --env Pendulum-v1 --steps 20000 --out pendulum_sac.pt
    vla-rl-ros train --algo ppo   --env VlaRlRos/PandaReach-v0 --steps 200000 --n-envs 2 --out reach_ppo.onnx
    vla-rl-ros train --algo bc    --data runs/pick_place-sim --steps 3000 --out pp_bc.onnx
    vla-rl-ros train --algo recap --data runs/pick_place-sim --steps 2000 --out pp_recap.onnx
    vla-rl-ros train --algo sac   --data runs/pick_place-sim --steps 20000 --out pp_sac_offline.onnx
    vla-rl-ros train --algo iql   --data runs/pick_place-sim --steps 20000 --out pp_iql.onnx
    vla-rl-ros train --algo cql   --data runs/pick_place-sim --steps 20000 --out pp_cql.onnx

``--env`` trains SAC online on any registered gymnasium env with Box spaces (a
``Dict`` observation space, as goal-conditioned envs have, is flattened), with
:func:`~vla_rl_ros.algos.online.default_online_config`'s settings, or PPO
(:mod:`~vla_rl_ros.algos.ppo`, its defaults) on ``--n-envs`` copies of it, one
process each;
``--data`` trains offline from a run's durable buffer (one or more runs): BC,
Recap, or one of the transition learners of :mod:`~vla_rl_ros.algos.learners`
(SAC with RLPD sampling, CQL, IQL; each with its config's defaults).
ONNX output needs the robot spec, so it is available for the twin's envs and
for runs; other envs write a checkpoint (``.pt``, weights-only). Progress bar
and TensorBoard logs (``--tb``) in every mode.
"""
from __future__ import annotations

import os
import time

from ._arm import add_params_argument


def register(sub) -> None:
    p = sub.add_parser("train", help="train without ROS: online on a gymnasium env, or offline from a run's buffer")
    p.add_argument("--algo", choices=["sac", "ppo", "cql", "iql", "recap", "bc", "drq"], required=True,
                   help="drq: SAC from the twin camera's frames and the arm's proprioception (DrQ augmentation), "
                        "on the twin's envs")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", nargs="+", metavar="RUN", help="run folder(s) or store(s) to learn from offline")
    src.add_argument("--env", metavar="GYM_ID", help="gymnasium env id (Box observation and action spaces)")
    p.add_argument("--steps", type=int, required=True,
                   help="env steps (--env), gradient steps (sac/cql/iql/bc --data), or actor+value steps of one "
                        "round (recap)")
    p.add_argument("--out", required=True, help="output: .onnx (twin envs and runs) or .pt checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tb", default=None, help="TensorBoard log dir (default runs/train/<out name>/tb)")
    p.add_argument("--demo-ratio", type=float, default=None,
                   help="--data: share of each batch from the demo side (default: the algorithm's; sac 0.5 as RLPD, "
                        "cql/iql uniform over all transitions)")
    p.add_argument("--bc-init-steps", type=int, default=None,
                   help="sac/cql --data: behaviour-cloning init on demos first (default 1000 for sac, 0 for cql)")
    p.add_argument("--utd", type=int, default=None,
                   help="sac: critic updates per env step / per actor update (default 1)")
    p.add_argument("--hindsight", type=int, default=4, metavar="K",
                   help="sac --env on the twin's goal-conditioned envs: each episode also counts as up to K successes "
                        "for goals it reached (HER; 0 = off)")
    p.add_argument("--n-envs", type=int, default=2, help="ppo: environments stepped together, one process each")
    p.add_argument("--n-steps", type=int, default=None, help="ppo: steps per env per rollout (default 2048)")
    p.add_argument("--all", action="store_true", help="bc --data: clone every episode, not just demos + successes")
    p.add_argument("--eval-episodes", type=int, default=20, help="seeded twin episodes to evaluate the result on")
    add_params_argument(p)  # the arm: the twin env's (--env VlaRlRos/...) and the evaluation's
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..algos.learners import reuse_freed_memory

    torch.set_num_threads(1)
    reuse_freed_memory()
    out = os.path.abspath(args.out)
    if not (out.endswith(".onnx") or out.endswith(".pt")):
        raise ValueError("--out must end in .onnx or .pt")
    tb = args.tb or os.path.join("runs", "train", os.path.splitext(os.path.basename(out))[0], "tb")
    t0 = time.time()
    if args.env:
        module, spec, lineage, state = _online(args, tb)
    else:
        module, spec, lineage, state = _offline(args, tb)
    lineage["wall_time_s"] = round(time.time() - t0, 1)
    return _write(args, out, module, spec, lineage, state)


def _online(args, tb):
    import gymnasium as gym

    import vla_rl_ros.twin  # noqa: F401  (registers the twin's envs)

    from ..algos.online import default_online_config, flatten_dict_obs, train_online, twin_hindsight

    if args.algo == "ppo":
        return _online_ppo(args, tb)
    if args.algo == "drq":
        return _online_drq(args, tb)
    if args.algo != "sac":
        raise ValueError(f"--algo {args.algo} learns from recorded data: use --data RUN "
                         "(online training is SAC or PPO)")
    env = flatten_dict_obs(gym.make(args.env, **_arm_env_kwargs(args, gym)))
    spec = getattr(env.unwrapped, "spec_", None)
    cfg = default_online_config(args.steps, **({} if args.utd is None else {"utd": args.utd}))
    her = twin_hindsight(env, k=args.hindsight, seed=args.seed)
    if her is not None:
        print(f"hindsight relabelling: up to {args.hindsight} goals per episode (the twin's goal-conditioned task)")
    sac, history = train_online(env, cfg, steps=args.steps, seed=args.seed, tb_dir=tb, progress=True, hindsight=her)
    for step, metric in history:
        print(f"  env step {step:7d}: eval {metric:.3f}")
    lineage = {"algorithm": "sac", "parent_version": None, "training_steps": args.steps,
               "data_range": {"env": args.env, "online_env_steps": args.steps}, "config": cfg.to_json()}
    return sac.policy_module(), spec, lineage, sac.state_dict()


def _online_drq(args, tb):
    """Pixel SAC on a twin env (``VlaRlRos/...``): the camera's 64x64 frame + proprioception."""
    import gymnasium as gym
    from torch.utils.tensorboard import SummaryWriter

    import vla_rl_ros.twin  # noqa: F401

    from ..algos.drq import DrQConfig, train_pixel_sac
    from ._arm import arm_from_args

    es = gym.spec(args.env)
    if es.entry_point != "vla_rl_ros.twin.env:TwinEnv":
        raise ValueError(f"--algo drq renders the twin's camera: use one of the twin's envs (VlaRlRos/...), not "
                         f"{args.env}")
    task = (es.kwargs or {}).get("task", "reach")
    arm = arm_from_args(args, task) if getattr(args, "params", None) else None
    writer = SummaryWriter(tb)

    def log(t, m):
        for k, v in m.items():
            writer.add_scalar(f"drq/{k}", v, t)

    cfg = DrQConfig()
    agent, curve = train_pixel_sac(task, args.steps, seed=args.seed, cfg=cfg, progress=True, log=log, arm=arm,
                                   learning_starts=min(1000, max(1, args.steps // 10)))
    for step, metric in curve:
        writer.add_scalar("eval/success", metric, step)
    writer.close()
    lineage = {"algorithm": "drq_sac", "parent_version": None, "training_steps": args.steps,
               "data_range": {"env": args.env, "online_env_steps": args.steps},
               "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}}
    return agent.policy_module(), agent.spec, lineage, None


def _arm_env_kwargs(args, gym) -> dict:
    """With ``--params``, the twin env (``VlaRlRos/...``) of that arm: its spec (the env's task and action mode),
    URDF, scene and home."""
    from ._arm import arm_from_args

    if not getattr(args, "params", None):
        return {}
    kw = gym.spec(args.env).kwargs or {}
    if gym.spec(args.env).entry_point != "vla_rl_ros.twin.env:TwinEnv":
        raise ValueError(f"--params names an arm for the twin's envs (VlaRlRos/...), not for {args.env}")
    arm = arm_from_args(args, kw.get("task"))
    spec = arm.spec.replace(action_mode=kw.get("action_mode", arm.spec.action_mode))
    return dict(spec=spec, urdf_path=arm.urdf_path, scene=arm.scene, home=arm.home)


def _online_ppo(args, tb):
    """PPO on ``--n-envs`` copies of ``--env`` (``Dict`` observations flattened, actions rescaled to [-1, 1])."""
    import gymnasium as gym
    import numpy as np

    from ..algos.online import flatten_dict_obs
    from ..algos.ppo import PPOConfig, make_vector_env, train_ppo

    def wrap(env):
        env = flatten_dict_obs(env)
        a = env.action_space
        if isinstance(a, gym.spaces.Box) and not (np.allclose(a.low, -1.0) and np.allclose(a.high, 1.0)):
            env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
        return env

    env_kw = _arm_env_kwargs(args, gym)  # --params: the arm's twin
    probe = gym.make(args.env, **env_kw)
    spec = getattr(probe.unwrapped, "spec_", None)
    probe.close()
    cfg = PPOConfig(n_envs=args.n_envs, seed=args.seed, **({"n_steps": args.n_steps} if args.n_steps else {}))
    envs = make_vector_env(lambda: gym.make(args.env, **env_kw), cfg.n_envs, asynchronous=cfg.n_envs > 1, wrap=wrap)
    try:
        ppo, history = train_ppo(envs, cfg, args.steps, progress=True, tb_dir=tb)
    finally:
        envs.close()
    for m in history[-3:]:
        print(f"  env step {int(m['env_steps']):8d}: return {m.get('ep_return', float('nan')):.3f}, "
              f"success {m.get('success', float('nan')):.2f}, {m['fps']:.0f} steps/s")
    lineage = {"algorithm": "ppo", "parent_version": None, "training_steps": ppo.env_steps,
               "data_range": {"env": args.env, "online_env_steps": ppo.env_steps}, "config": cfg.to_json()}
    return ppo.policy_module(), spec, lineage, ppo.state_dict()


def _offline(args, tb):
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from ..buffer import Replay, list_stores

    stores = list_stores(args.data)
    if not stores:
        raise FileNotFoundError(f"no stores found under {args.data}")
    replay = Replay(stores)
    n = replay.refresh()
    spec = _store_spec(stores[0])
    eps = replay.episodes()
    print(f"loaded {n} transitions, {len(eps)} episodes ({sum(e.success for e in eps)} successful, "
          f"{sum(e.is_demo for e in eps)} demos) from {len(stores)} store(s)")
    if replay.episodes_evicted:  # Replay holds the newest `capacity` steps of episodes in memory
        print(f"{replay.episodes_evicted} older episodes ({replay.episode_steps_evicted} steps) left out: past "
              f"the replay's capacity of {replay.capacity:,} steps")
    if replay.archived:
        print(replay.summary())
    data_range = {"stores": [str(s) for s in stores], "transitions": n, "episodes": len(eps)}
    writer = SummaryWriter(tb)
    try:
        if args.algo == "bc":
            from ..algos.bc import train_bc

            chosen = eps if args.all else [e for e in eps if e.is_demo or e.success]
            if not chosen:
                raise ValueError("no demo or successful episodes to clone (use --all to clone everything)")
            obs = np.concatenate([e.obs for e in chosen])
            act = np.concatenate([e.actions for e in chosen])
            policy = train_bc(obs, act, steps=args.steps, seed=args.seed, progress=True)
            for i, loss in enumerate(policy.bc_history):
                writer.add_scalar("bc/loss", loss, i * 100)
            data_range["cloned_episodes"] = len(chosen)
            return policy, spec, {"algorithm": "bc", "training_steps": args.steps, "data_range": data_range}, None
        if args.algo == "recap":
            from ..algos.recap import RecapConfig, RecapTrainer

            trainer = RecapTrainer(spec.obs_dim, spec.action_dim,
                                   RecapConfig(value_steps=args.steps, actor_steps=args.steps, seed=args.seed))
            metrics = trainer.round([{"obs": e.obs, "actions": e.actions, "success": e.success,
                                      "intervention": e.intervention | bool(e.is_demo)} for e in eps])
            for k, v in metrics.items():
                writer.add_scalar(f"recap/{k}", float(v), 1)
            print("recap round: " + ", ".join(f"{k}={float(v):.3g}" for k, v in metrics.items()))
            return (trainer.export_module(), spec,
                    {"algorithm": "recap", "training_steps": args.steps, "data_range": data_range}, trainer.state_dict())
        # a transition learner: SAC (RLPD sampling), CQL or IQL
        from ..algos.learners import make_learner, replay_sampler
        from ..algos.sac import metrics_to_floats

        overrides: dict = {"seed": args.seed}
        if args.algo == "sac":
            overrides["init_alpha"] = 0.05  # after BC initialisation (see SACConfig.init_alpha)
        if args.utd is not None:
            overrides["utd"] = args.utd
        if args.demo_ratio is not None:
            overrides["demo_ratio"] = args.demo_ratio
        learner = make_learner(args.algo, spec.obs_dim, spec.action_dim, **overrides)
        learner.fit_obs_normalizer(np.concatenate([e.obs for e in eps]))
        bc_steps = args.bc_init_steps if args.bc_init_steps is not None else (1000 if args.algo == "sac" else 0)
        if bc_steps and replay.n_demo:
            if not hasattr(learner, "bc_pretrain"):
                raise ValueError(f"--algo {args.algo} has no behaviour-cloning initialisation (--bc-init-steps 0)")
            learner.bc_pretrain(lambda: (lambda b: (b["obs"], b["action"]))(replay.sample(256, demo_ratio=1.0)),
                                bc_steps)
        sample = replay_sampler(replay, learner.cfg)
        for i in tqdm(range(args.steps), desc=f"{args.algo} (offline)", unit="upd"):
            m = learner.train_step(sample)
            if i % 500 == 0:
                for k, v in metrics_to_floats(m).items():
                    writer.add_scalar(f"{args.algo}/{k}", v, i)
        return learner.policy_module(), spec, {"algorithm": args.algo, "training_steps": args.steps,
                                               "data_range": data_range, "config": learner.cfg.to_json()}, \
            learner.state_dict()
    finally:
        writer.close()
        replay.close()


def _store_spec(path):
    from ..buffer.schema import connect, store_spec

    con = connect(path, readonly=True)
    try:
        return store_spec(con)
    finally:
        con.close()


def _write(args, out, module, spec, lineage, state) -> int:
    from ..algos.checkpoint import save_checkpoint

    if out.endswith(".pt"):
        if state is None:

            state = {"policy": {k: v.detach().clone() for k, v in module.state_dict().items()}}
        save_checkpoint(out, {"state": state, "lineage": lineage})
        print(f"wrote checkpoint {out}")
        return 0
    if spec is None:
        raise ValueError(f"{args.env} is not one of the twin's envs: there is no robot spec to put in an ONNX model; "
                         f"use --out NAME.pt for a checkpoint")
    from ..algos.export import export_onnx
    from ..learner.evaluate import evaluate_onnx
    from ..learner.lineage import update_lineage
    from .eval import twin_for_model

    exp = export_onnx(module, spec, out, lineage)
    print(f"wrote {out} ({exp.version})")
    if args.eval_episodes > 0:
        res = evaluate_onnx(out, spec.task, episodes=args.eval_episodes, progress=True,
                            twin=twin_for_model(args, spec))  # the arm's twin (--params), else the Panda's
        update_lineage(out, {"twin_success_at_gate": {"rate": res.success_rate, "episodes": args.eval_episodes,
                                                      "seed": res.seed}})
        print(f"twin success {100 * res.success_rate:.1f}% over {args.eval_episodes} seeded {spec.task} episodes, "
              f"mean return {res.mean_return:.3f}")
    return 0
