"""``vla-rl-ros``: the project's command line.

Verbs live in :mod:`vla_rl_ros.commands` (one module each, exposing
``register(subparsers)``); their heavy imports happen inside ``run`` so that
``vla-rl-ros --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

VERBS = ("sim", "eval", "ship", "train", "train_classifier", "data", "demos", "label", "keygen", "calibrate")  # modules; a verb's name may differ


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vla-rl-ros",
        description="Continual RL for a robot arm over ROS 2: run the sim stack, evaluate, train, inspect data.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        try:
            mod = importlib.import_module(f"vla_rl_ros.commands.{verb}")
        except ModuleNotFoundError as e:
            if e.name == f"vla_rl_ros.commands.{verb}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError) as e:  # bad input: a clear message, not a traceback
        print(f"vla-rl-ros {args.verb}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
