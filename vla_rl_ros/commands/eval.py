"""``vla-rl-ros eval --model M [--params FILE] --task T --episodes N``: seeded success rate in the arm's twin."""
from __future__ import annotations

import json
import sys

from ._arm import add_params_argument, arm_from_args


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate an ONNX policy in the arm's gymnasium twin (headless)")
    p.add_argument("--model", required=True, help="ONNX model path")
    p.add_argument("--task", choices=["reach", "pick_place"], help="task (default: the model's spec task)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=10_000, help="episode i uses seed SEED+i")
    add_params_argument(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def twin_for_model(args, model_spec):
    """The twin to evaluate a model in: the arm of ``--params`` (the model must carry its spec, task aside),
    or without ``--params`` the Panda's, which a model for other joints is refused."""
    from ..learner.evaluate import TwinConfig
    from ..spec import PANDA_ARM_JOINTS

    if not getattr(args, "params", None):
        if tuple(model_spec.arm_joints) != PANDA_ARM_JOINTS:
            raise ValueError(f"the model is for an arm with joints {list(model_spec.arm_joints)}, not the Panda: "
                             f"name its arm with --params FILE (the params file that declares it)")
        return TwinConfig()
    arm = arm_from_args(args, model_spec.task)
    diff = arm.spec.diff(model_spec)
    if diff:
        raise ValueError(f"the model's spec differs from the arm of {' '.join(args.params)}: " + "; ".join(diff))
    return TwinConfig(urdf_path=arm.urdf_path, scene=arm.scene, home=arm.home)  # the model's spec, the arm's twin


def run(args) -> int:
    from ..learner.evaluate import evaluate_onnx
    from ..runtime.onnx_policy import ModelRejected, load_validated

    try:
        policy = load_validated(args.model, None, None)  # the same checks policy_node runs
    except ModelRejected as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    task = args.task or policy.spec.task
    if task != policy.spec.task:
        print(f"note: the model was trained for {policy.spec.task!r}; evaluating it on {task!r}", file=sys.stderr)
    twin = twin_for_model(args, policy.spec)
    res = evaluate_onnx(args.model, task, episodes=args.episodes, seed=args.seed, progress=True, twin=twin)
    s = res.summary()
    if args.json:
        print(json.dumps(s))
    else:
        lo, hi = s["success_ci95"]
        print(f"model      {args.model} ({policy.version})")
        print(f"arm        {len(policy.spec.arm_joints)} joints {', '.join(policy.spec.arm_joints)}; "
              f"URDF {twin.urdf_path or 'Franka Panda (pybullet_data)'}")
        print(f"task       {task}   episodes {args.episodes}   seeds {args.seed}..{args.seed + args.episodes - 1}")
        print(f"success    {100 * s['success_rate']:.1f}%   (95% CI {100 * lo:.0f}-{100 * hi:.0f}%)")
        print(f"return     {s['mean_return']:.3f} mean   length {s['mean_length']:.1f} steps mean")
    return 0
