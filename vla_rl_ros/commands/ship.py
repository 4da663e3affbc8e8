"""``vla-rl-ros ship --task T [--params FILE]``: reproduce a shipped model (expert demos → BC → ONNX → twin
evaluation → model card), for the Panda or for the arm a params file declares."""
from __future__ import annotations

import os

from ._arm import add_params_argument, arm_from_args


def register(sub) -> None:
    p = sub.add_parser("ship", help="reproduce the shipped BC model for a task and arm (and its model card)")
    p.add_argument("--task", choices=["reach", "pick_place"], required=True)
    add_params_argument(p)
    p.add_argument("--out", default=None,
                   help="output ONNX path (default models/<task>_bc.onnx; with --params, "
                        "models/<last params file's name>_<task>_bc.onnx)")
    p.add_argument("--demos", type=int, default=None, help="override the recipe's number of expert episodes")
    p.add_argument("--noise", type=float, default=None, help="override the recipe's DART noise")
    p.add_argument("--bc-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--chunk-len", type=int, default=None, metavar="K",
                   help="ship the chunked model instead (K actions per inference, ACT-style BC on the same demos; "
                        "default models/<task>_chunk_bc.onnx)")
    p.add_argument("--camera", action="store_true", help="with --chunk-len: the model also reads the twin camera")
    p.add_argument("--chunk-execution", choices=["receding", "ensemble"], default=None,
                   help="with --chunk-len: how the evaluation runs the chunks (policy_node's chunk_execution)")
    p.set_defaults(func=run)


def default_out(args) -> str:
    from ..graph import repo_root

    name = f"{args.task}_{'chunk' + ('_cam' if args.camera else '') + '_' if args.chunk_len else ''}bc.onnx"
    if args.params:  # never overwrite the Panda's shipped model with another arm's
        name = f"{os.path.splitext(os.path.basename(args.params[-1]))[0]}_{name}"
    return os.path.join(repo_root(), "models", name)


def run(args) -> int:
    import torch

    from ..learner.recipes import ship_bc_model, ship_chunk_model

    torch.set_num_threads(1)
    arm = arm_from_args(args, args.task)
    out = os.path.abspath(args.out or default_out(args))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if args.camera and not args.chunk_len:
        print("error: --camera is for the chunked model: add --chunk-len K")
        return 2
    if args.chunk_len:
        res = ship_chunk_model(args.task, out, chunk_len=args.chunk_len, camera=args.camera,
                               execution=args.chunk_execution, demos=args.demos,
                               noise=args.noise, steps=args.bc_steps, seed=args.seed,
                               eval_episodes=args.eval_episodes, arm=arm)
    else:
        res = ship_bc_model(args.task, out, demos=args.demos, noise=args.noise, bc_steps=args.bc_steps,
                            seed=args.seed, eval_episodes=args.eval_episodes, arm=arm, params=args.params)
    lo, hi = res.success_ci95
    print(f"wrote {res.path} ({res.version}) for {res.arm}")
    print(f"twin success {100 * res.success_rate:.1f}% over {res.eval_episodes} seeded episodes "
          f"(95% CI {100 * lo:.0f}-{100 * hi:.0f}%), mean return {res.mean_return:.3f}")
    print(f"model card {os.path.splitext(res.path)[0]}.md")
    return 0
