"""``vla-rl-ros data``: inspect and export recorded runs.

* ``data stats RUN [RUN...]``: per model version episodes, success rate,
  interventions and returns (a RUN is a run folder, a store file, or a folder
  of runs); ``--json`` prints the raw numbers.
* ``data export RUN --format mcap --out FILE``: write one run's store to MCAP
  (ROS 2 serialisation) for Foxglove / ``ros2 bag``.
"""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="inspect and export recorded runs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="data_cmd", metavar="{stats,export}")
    sub.required = True
    s = sub.add_parser("stats", help="per model version episodes, success rate, interventions, returns")
    s.add_argument("runs", nargs="+", metavar="RUN", help="run folder, buffer.sqlite, or a folder of runs")
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.set_defaults(func=run)
    e = sub.add_parser("export", help="export a run's transitions")
    e.add_argument("run", metavar="RUN", help="run folder or buffer.sqlite")
    e.add_argument("--format", choices=["mcap"], default="mcap")
    e.add_argument("--out", required=True, help="output file")
    e.add_argument("--no-frames", action="store_true", help="leave camera frames out")
    e.set_defaults(func=run)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..buffer import BufferError, export_mcap, format_stats, stats

    try:
        if args.data_cmd == "stats":
            st = stats(args.runs)
            print(json.dumps(st, indent=2) if args.json else format_stats(st))
            return 0
        if args.data_cmd == "export":
            counts = export_mcap(args.run, args.out, frames=not args.no_frames)
            print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            return 0
    except (FileNotFoundError, BufferError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    raise AssertionError(f"unknown data command {args.data_cmd!r}")


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m vla_rl_ros.commands.data``) until the CLI wires the verb."""
    parser = argparse.ArgumentParser(prog="vla-rl-ros")
    register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
