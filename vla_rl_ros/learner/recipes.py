"""Recipes for the shipped models: scripted expert → behaviour cloning → ONNX → seeded twin evaluation.

This is the seed's demo-guided phase 1 (§6.2). ``vla-rl-ros ship --task T``
runs it and writes ``models/<T>_bc.onnx`` plus its model card
``models/<T>_bc.md``; with ``--params FILE`` it does the same for the arm that
params file declares (its spec, URDF, scene and home: vla_rl_ros/arm.py), in
that arm's twin.

Demonstrations are collected DART-style when ``noise > 0``: the executed
action is the expert's plus Gaussian noise, the label is the clean expert
action, so the clone sees (and learns to recover from) states slightly off
the expert's path.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from dataclasses import dataclass

import numpy as np

# The recipes as shipped. pick_place is deliberately imperfect (few demos,
# no noise): it is the starting point the continual learner improves on.
RECIPES = {
    "reach": dict(demos=100, noise=0.3, bc_steps=3000, seed=0),
    "pick_place": dict(demos=10, noise=0.0, bc_steps=2000, seed=0),
}


@dataclass
class ShipResult:
    task: str
    arm: str
    path: str
    version: str
    demos: int
    demo_success_rate: float
    demo_transitions: int
    bc_steps: int
    success_rate: float
    success_ci95: tuple[float, float]
    mean_return: float
    eval_episodes: int
    eval_seed: int
    seconds: float


def collect_demo_episodes(task: str, n: int, noise: float, seed: int, progress: bool = False, arm=None,
                          images=()) -> list[dict]:
    """Expert rollouts in ``arm``'s twin (:class:`~vla_rl_ros.arm.Arm`; ``None``: the Panda's), one dict per
    episode: ``obs (T, d)``, the clean expert ``actions (T, a)`` at those states, ``success``, and with
    ``images`` (:class:`~vla_rl_ros.spec.ImageSpec` entries) ``frames`` ``{name: (T, 3, H, W) uint8}`` from the twin's
    camera at each state."""
    from tqdm import tqdm

    from ..arm import Arm
    from ..runtime.images import prepare
    from ..spec import Spec
    from ..twin.expert import ScriptedExpert

    env = (arm or Arm(Spec(task=task))).with_task(task).twin().env(task)
    rng = np.random.default_rng(seed)
    expert = ScriptedExpert(env.spec_)
    episodes = []
    try:
        for i in tqdm(range(n), desc=f"expert demos ({task})", disable=not progress, unit="ep"):
            obs, _ = env.reset(seed=seed + i)
            done = False
            info = {"is_success": False}
            O, A, F = [], [], {im.name: [] for im in images}
            while not done:
                for im in images:
                    w, h = (im.width, im.height) if not im.crop else (640, 480)
                    F[im.name].append(prepare(env.twin.render(w, h), im, "rgb8"))
                a = expert(obs)
                O.append(obs)
                A.append(a)
                executed = a.copy()
                if noise > 0:
                    executed[:3] = np.clip(a[:3] + rng.normal(0.0, noise, 3), -1, 1)
                obs, _, term, trunc, info = env.step(executed)
                done = term or trunc
            ep = dict(obs=np.asarray(O, np.float32), actions=np.asarray(A, np.float32),
                      success=bool(info["is_success"]), seed=seed + i)
            if images:
                ep["frames"] = {k: np.asarray(v, np.uint8) for k, v in F.items()}
            episodes.append(ep)
    finally:
        env.close()
    return episodes


def collect_dart_demos(task: str, n: int, noise: float, seed: int, progress: bool = False, arm=None):
    """:func:`collect_demo_episodes` flattened: (obs [N, d], clean expert actions [N, a], per-episode success)."""
    eps = collect_demo_episodes(task, n, noise, seed, progress, arm)
    return (np.concatenate([e["obs"] for e in eps]), np.concatenate([e["actions"] for e in eps]),
            [e["success"] for e in eps])


def ship_bc_model(task: str, out_path: str, demos: int | None = None, noise: float | None = None,
                  bc_steps: int | None = None, seed: int | None = None, eval_episodes: int = 50,
                  eval_seed: int = 10_000, progress: bool = True, arm=None,
                  params: list[str] | None = None) -> ShipResult:
    """The recipe for ``task`` on ``arm`` (:class:`~vla_rl_ros.arm.Arm`; ``None``: the Panda): demos, BC and
    the evaluation all in that arm's twin; the model carries the arm's spec. ``params``: the params files
    that declared the arm (for the model card's reproduce line)."""
    import torch

    from ..algos.bc import train_bc
    from ..algos.export import export_onnx
    from ..arm import Arm
    from ..spec import Spec
    from .evaluate import evaluate_onnx

    r = dict(RECIPES[task])
    for k, v in (("demos", demos), ("noise", noise), ("bc_steps", bc_steps), ("seed", seed)):
        if v is not None:
            r[k] = v
    t0 = time.time()
    torch.manual_seed(r["seed"])
    arm = (arm or Arm(Spec(task=task))).with_task(task)
    obs, act, succ = collect_dart_demos(task, r["demos"], r["noise"], r["seed"], progress, arm=arm)
    policy = train_bc(obs, act, steps=r["bc_steps"], seed=r["seed"], progress=progress)
    spec = arm.spec
    version = export_onnx(policy, spec, out_path, _demo_lineage("bc", r, len(obs), r["bc_steps"], arm)).version
    res = evaluate_onnx(out_path, task, episodes=eval_episodes, seed=eval_seed, progress=progress, twin=arm.twin())
    out = _shipped(out_path, version, task, arm, r, succ, len(obs), r["bc_steps"], res, eval_episodes, eval_seed, t0)
    write_model_card(out, r, params)
    return out


def _demo_lineage(algorithm: str, r: dict, transitions: int, steps: int, arm) -> dict:
    """The lineage of a model trained from the recipe's scripted-expert demonstrations."""
    return {
        "algorithm": algorithm, "parent_version": None,
        "data": f"{r['demos']} scripted-expert episodes (seeds {r['seed']}..{r['seed'] + r['demos'] - 1}, "
                f"DART noise {r['noise']}), {transitions} transitions",
        "training_steps": steps, "recipe": r, "arm": arm_name(arm),
    }


def _shipped(out_path: str, version: str, task: str, arm, r: dict, demo_successes, transitions: int, steps: int,
             res, eval_episodes: int, eval_seed: int, t0: float, **gate_extra) -> ShipResult:
    """Record the measured twin success in the model's own lineage (atomic rewrite) and say what was shipped."""
    from .lineage import update_lineage

    update_lineage(out_path, {"twin_success_at_gate": {"rate": res.success_rate, "episodes": eval_episodes,
                                                        "seed": eval_seed, **gate_extra}})
    return ShipResult(task=task, arm=arm_name(arm), path=out_path, version=version, demos=r["demos"],
                      demo_success_rate=float(np.mean(demo_successes)), demo_transitions=transitions, bc_steps=steps,
                      success_rate=res.success_rate, success_ci95=res.wilson_interval(), mean_return=res.mean_return,
                      eval_episodes=eval_episodes, eval_seed=eval_seed, seconds=time.time() - t0)


def arm_name(arm) -> str:
    """How a model card names the arm: the Franka Panda, or the arm's URDF file and joint count."""
    from ..spec import PANDA_ARM_JOINTS

    if arm.urdf_path is None and tuple(arm.spec.arm_joints) == PANDA_ARM_JOINTS:
        return "Franka Panda"
    return f"{os.path.basename(arm.urdf)} ({arm.spec.n_arm} joints, ee {arm.spec.ee_link})"


def write_model_card(res: ShipResult, recipe: dict, params: list[str] | None = None) -> str:
    from ..algos.export import sha256_file

    path = os.path.splitext(res.path)[0] + ".md"
    arm_flag = f" --params {' '.join(os.path.relpath(p) for p in params)}" if params else ""
    out_flag = f" --out {os.path.relpath(res.path)}" if params else ""
    lo, hi = res.success_ci95
    text = f"""# Model card: `{os.path.basename(res.path)}`

| | |
|---|---|
| task | `{res.task}` (PyBullet twin, {res.arm}, `ee_delta` actions at 20 Hz) |
| version | `{res.version}` |
| sha256 | `{sha256_file(res.path)}` |
| algorithm | behaviour cloning (MSE on the deterministic tanh-Gaussian actor, 2×256 MLP, obs normaliser baked in) |
| data | {res.demos} scripted-expert episodes, seeds {recipe['seed']}..{recipe['seed'] + res.demos - 1}, DART noise {recipe['noise']}; {res.demo_transitions} transitions; expert success while collecting {100 * res.demo_success_rate:.0f}% |
| training | {res.bc_steps} Adam steps, batch 256, lr 3e-4, seed {recipe['seed']} |
| **twin success** | **{100 * res.success_rate:.1f}%** over {res.eval_episodes} seeded episodes (seeds {res.eval_seed}..{res.eval_seed + res.eval_episodes - 1}; 95% Wilson CI {100 * lo:.0f}–{100 * hi:.0f}%) |
| mean return | {res.mean_return:.3f} |
| made on | {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, {platform.machine()} CPU, {os.cpu_count()} cores, {res.seconds:.0f} s |

Reproduce: `./vla-rl-ros ship --task {res.task}{arm_flag}{out_flag}` (then `./vla-rl-ros eval --model {os.path.relpath(res.path)} --task {res.task} --episodes {res.eval_episodes}{arm_flag}`).

The ONNX file carries the spec (`vla_rl_ros.spec`) and this lineage (`vla_rl_ros.lineage`) in its metadata.
{"The pick_place model is deliberately imperfect: it is the starting point the continual learner (`vla-rl-ros sim`) improves on." if res.task == "pick_place" else ""}
"""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


# The chunked model (issue 13): the pick_place recipe's demos, K actions per inference, ACT's L1 on the chunk.
CHUNK_RECIPE = dict(chunk_len=5, steps=3000, execution="receding")  # K = 5: docs/bench/chunk_bc.md
CAMERA = dict(name="front", topic="/camera/image_raw", height=84, width=84)


def ship_chunk_model(task: str, out_path: str, chunk_len: int | None = None, camera: bool = False,
                     execution: str | None = None,
                     demos: int | None = None, noise: float | None = None, steps: int | None = None,
                     seed: int | None = None, eval_episodes: int = 50, eval_seed: int = 10_000,
                     progress: bool = True, arm=None) -> ShipResult:
    """The task's BC recipe (same demos) with a chunked policy (:mod:`vla_rl_ros.algos.chunk_bc`): ``chunk_len``
    actions per inference at the spec's rate; with ``camera`` it also reads the twin camera's 84x84 frame. The
    evaluation runs the chunks as ``policy_node`` does with ``chunk_execution: execution`` (receding: a new chunk
    every K/2 steps; ensemble: ACT's temporal ensembling, a new chunk every step)."""
    import torch

    from ..algos.chunk_bc import ChunkData, train_chunk_bc
    from ..algos.export import export_onnx
    from ..arm import Arm
    from ..spec import ImageSpec, Spec
    from ..runtime.onnx_policy import load_validated
    from .evaluate import ChunkActor, evaluate_policy

    r = dict(RECIPES[task], **CHUNK_RECIPE, camera=bool(camera))
    for k, v in (("demos", demos), ("noise", noise), ("steps", steps), ("seed", seed), ("chunk_len", chunk_len),
                 ("execution", execution)):
        if v is not None:
            r[k] = v
    t0 = time.time()
    torch.manual_seed(r["seed"])
    arm = (arm or Arm(Spec(task=task))).with_task(task)
    images = (ImageSpec(**CAMERA),) if camera else ()
    spec = arm.spec.replace(chunk_len=int(r["chunk_len"]), images=images)
    arm = Arm(spec, arm.urdf_path, arm.scene, arm.home)
    eps = collect_demo_episodes(task, r["demos"], r["noise"], r["seed"], progress, arm=arm, images=images)
    data = ChunkData.from_episodes(eps, spec.chunk_len)
    net = train_chunk_bc(data, spec, steps=r["steps"], seed=r["seed"], progress=progress)
    version = export_onnx(net, spec, out_path, _demo_lineage("chunk_bc", r, len(data.obs), r["steps"], arm)).version
    pol = load_validated(out_path, None, spec)
    env = arm.twin().env(task, spec)
    try:
        res = evaluate_policy(ChunkActor(pol, env, mode=r["execution"]).act, task, episodes=eval_episodes,
                              seed=eval_seed, progress=progress, env=env)
    finally:
        env.close()
    out = _shipped(out_path, version, task, arm, r, [e["success"] for e in eps], len(data.obs), r["steps"], res,
                   eval_episodes, eval_seed, t0, chunk_execution=r["execution"])
    write_chunk_card(out, r, spec)
    return out


def write_chunk_card(res: ShipResult, recipe: dict, spec) -> str:
    from ..algos.export import sha256_file

    path = os.path.splitext(res.path)[0] + ".md"
    lo, hi = res.success_ci95
    cam = (f"the twin camera's {spec.images[0].width}x{spec.images[0].height} RGB frame (input "
           f"`{spec.images[0].input_name}`, small conv encoder) and " if spec.images else "")
    flags = (f" --chunk-len {spec.chunk_len}" + (" --camera" if spec.images else "")
             + (f" --chunk-execution {recipe['execution']}" if recipe["execution"] != "receding" else ""))
    text = f"""# Model card: `{os.path.basename(res.path)}`

| | |
|---|---|
| task | `{res.task}` (PyBullet twin, {res.arm}, `ee_delta` actions) |
| version | `{res.version}` |
| sha256 | `{sha256_file(res.path)}` |
| shape | reads {cam}the state (`obs`); outputs a chunk of **{spec.chunk_len} actions** (`action` `[1, {spec.chunk_len}, {spec.action_dim}]`) for steps 1/{spec.chunk_rate_hz:g} s apart |
| algorithm | chunked behaviour cloning (`vla_rl_ros/algos/chunk_bc.py`: ACT's masked L1 on the next {spec.chunk_len} actions; 2×256 MLP head, obs normaliser baked in) |
| data | {res.demos} scripted-expert episodes, seeds {recipe['seed']}..{recipe['seed'] + res.demos - 1}, DART noise {recipe['noise']}; {res.demo_transitions} states; expert success while collecting {100 * res.demo_success_rate:.0f}% (the same demos as `{res.task}_bc.onnx`) |
| training | {res.bc_steps} Adam steps, batch 256, lr 3e-4, seed {recipe['seed']} |
| **twin success** | **{100 * res.success_rate:.1f}%** over {res.eval_episodes} seeded episodes (seeds {res.eval_seed}..{res.eval_seed + res.eval_episodes - 1}; 95% Wilson CI {100 * lo:.0f}–{100 * hi:.0f}%), chunks run as `policy_node` runs them with `chunk_execution: {recipe['execution']}` ({"a new chunk every " + str(max(1, spec.chunk_len // 2)) + " steps" if recipe['execution'] == 'receding' else "ACT's temporal ensembling, a new chunk every step"}) |
| made on | {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, {platform.machine()} CPU, {os.cpu_count()} cores, {res.seconds:.0f} s |

Reproduce: `./vla-rl-ros ship --task {res.task}{flags}` (then `./vla-rl-ros eval --model {os.path.relpath(res.path)} --task {res.task} --episodes {res.eval_episodes}`).

On the arm it runs through the path an externally trained VLA takes (docs/VLA.md): `policy_node` sees a spec with
`chunk_len` > 1{" and a camera" if spec.images else ""}, runs the model in its inference thread and executes the chunk at control rate (set `chunk_execution:
{recipe['execution']}` on `policy_node`, as evaluated here).
"""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
