"""``vla-rl-ros eval --model M --task T --episodes N``: seeded success rate in the gymnasium twin."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate an ONNX policy in the gymnasium twin (headless)")
    p.add_argument("--model", required=True, help="ONNX model path")
    p.add_argument("--task", choices=["reach", "pick_place"], help="task (default: the model's spec task)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=10_000, help="episode i uses seed SEED+i")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..learner.evaluate import evaluate_onnx
    from ..runtime.onnx_policy import load_validated
    from ..spec import Spec

    # Validate the model the same way policy_node does (spec, shapes, a finite test inference).
    meta_spec = _model_spec(args.model)
    task = args.task or meta_spec.task
    configured = Spec(task=task, action_mode=meta_spec.action_mode)
    load_validated(args.model, None, configured)
    res = evaluate_onnx(args.model, task, episodes=args.episodes, seed=args.seed, progress=True)
    s = res.summary()
    if args.json:
        print(json.dumps(s))
    else:
        lo, hi = s["success_ci95"]
        print(f"model      {args.model}")
        print(f"task       {task}   episodes {args.episodes}   seeds {args.seed}..{args.seed + args.episodes - 1}")
        print(f"success    {100 * s['success_rate']:.1f}%   (95% CI {100 * lo:.0f}-{100 * hi:.0f}%)")
        print(f"return     {s['mean_return']:.3f} mean   length {s['mean_length']:.1f} steps mean")
    return 0


def _model_spec(path: str):
    import onnx

    from ..spec import METADATA_KEY, Spec, SpecError

    m = onnx.load(path, load_external_data=False)
    props = {p.key: p.value for p in m.metadata_props}
    if METADATA_KEY not in props:
        raise SpecError(f"{path} carries no {METADATA_KEY} metadata: not a vla_rl_ros model")
    return Spec.from_json(props[METADATA_KEY])
