"""``vla-rl-ros eval --model M --task T --episodes N``: seeded success rate in the gymnasium twin."""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate an ONNX policy in the gymnasium twin (headless)")
    p.add_argument("--model", required=True, help="ONNX model path")
    p.add_argument("--task", choices=["reach", "pick_place"], help="task (default: the model's spec task)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=10_000, help="episode i uses seed SEED+i")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..learner.evaluate import evaluate_policy
    from ..runtime.onnx_policy import ModelRejected, load_validated

    try:
        policy = load_validated(args.model, None, None)  # the same checks policy_node runs
    except ModelRejected as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    task = args.task or policy.spec.task
    if task != policy.spec.task:
        print(f"note: the model was trained for {policy.spec.task!r}; evaluating it on {task!r}", file=sys.stderr)
    res = evaluate_policy(policy.act, task, episodes=args.episodes, seed=args.seed, progress=True, desc=f"eval {task}")
    s = res.summary()
    if args.json:
        print(json.dumps(s))
    else:
        lo, hi = s["success_ci95"]
        print(f"model      {args.model} ({policy.version})")
        print(f"task       {task}   episodes {args.episodes}   seeds {args.seed}..{args.seed + args.episodes - 1}")
        print(f"success    {100 * s['success_rate']:.1f}%   (95% CI {100 * lo:.0f}-{100 * hi:.0f}%)")
        print(f"return     {s['mean_return']:.3f} mean   length {s['mean_length']:.1f} steps mean")
    return 0
