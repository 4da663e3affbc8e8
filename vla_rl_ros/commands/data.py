"""``vla-rl-ros data``: inspect and export recorded runs.

* ``data stats RUN [RUN...]``: per model version episodes, success rate,
  interventions and returns (a RUN is a run folder, a store file, or a folder
  of runs); ``--json`` prints the raw numbers.
* ``data export RUN --format mcap --out FILE``: write one run's store to MCAP
  (ROS 2 serialisation) for Foxglove / ``ros2 bag``; the run's preference
  labels, if any, ride along on ``/rl/preference``.
* ``data archive RUN [--keep N] [--to DIR] [--dry-run]``: move a run's closed
  store segments (all but the newest, which the recorder appends to, and the
  ``N`` newest closed ones) into ``RUN/archive/`` and record them in
  ``RUN/archive.json``. Nothing is deleted.
* ``data gap RUN``: for each promoted model, the gate's predicted success in
  the twin beside its live success on the arm (unassisted episodes), so you
  see how far the twin can be trusted (:mod:`vla_rl_ros.learner.gate_vs_live`);
  ``--json`` prints the rows.
* ``data labels RUN [-n N] [--json]``: the run's preference labels: counts per
  answer and per labeller, and the ``N`` latest (``vla-rl-ros label``).
* ``data label-frames RUN``: label the camera frames the recorder saved
  (``save_frames``, in ``RUN/frames/``) as success or not, for the success
  classifier (``vla-rl-ros train-classifier``): one frame at a time (its path
  and the episode's recorded outcome as a suggestion; y/n/s(kip)/q(uit)),
  ``--accept-suggested`` to take every suggestion, or ``--from CSV``
  (columns ``file,label``). ``--list`` prints the unlabelled frames.

A run's store may be split into segments (the recorder's ``segment_max_mb`` /
``segment_max_s``); every command reads all of a run's segments together.
"""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="inspect and export recorded runs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="data_cmd", metavar="{stats,export,archive,gap,labels,label-frames}")
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
    a = sub.add_parser("archive", help="move a run's closed store segments to an archive folder (nothing deleted)")
    a.add_argument("run", metavar="RUN", help="run folder or buffer.sqlite")
    a.add_argument("--keep", type=int, default=0, help="closed segments to leave in place, newest first (default 0; "
                   "the open segment always stays)")
    a.add_argument("--to", default=None, metavar="DIR", help="archive folder (default RUN/archive)")
    a.add_argument("--dry-run", action="store_true", help="say what would move, move nothing")
    a.set_defaults(func=run)
    g = sub.add_parser("gap", help="per promoted model: the gate's predicted success beside the live one")
    g.add_argument("run", metavar="RUN", help="run folder (its models/ registry and its store)")
    g.add_argument("--json", action="store_true", help="print the rows as JSON")
    g.set_defaults(func=run)
    lb = sub.add_parser("labels", help="a run's preference labels: counts and the latest")
    lb.add_argument("run", metavar="RUN", help="run folder or preferences.sqlite")
    lb.add_argument("-n", type=int, default=10, help="how many of the latest labels (default 10)")
    lb.add_argument("--json", action="store_true", help="print counts and labels as JSON")
    lb.set_defaults(func=run)
    la = sub.add_parser("label-frames", help="label a run's saved camera frames as success or not (for the classifier)")
    la.add_argument("run", metavar="RUN", help="run folder (its frames/ folder)")
    how = la.add_mutually_exclusive_group()
    how.add_argument("--accept-suggested", action="store_true",
                     help="label every unlabelled frame with its episode's recorded outcome")
    how.add_argument("--from", dest="from_csv", metavar="CSV", help="labels from a CSV with columns file,label")
    how.add_argument("--list", action="store_true", help="list the unlabelled frames and the labels so far")
    la.set_defaults(func=run)
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
        if args.data_cmd == "archive":
            return _archive(args)
        if args.data_cmd == "gap":
            return _gap(args)
        if args.data_cmd == "labels":
            return print_labels(args.run, args.n, as_json=args.json)
        if args.data_cmd == "label-frames":
            return _label(args)
    except (FileNotFoundError, FileExistsError, BufferError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    raise AssertionError(f"unknown data command {args.data_cmd!r}")


def _archive(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..buffer.run import STORE_FILE
    from ..buffer.segments import archive_segments, describe_archived, list_segments

    base = Path(args.run)
    base = base / STORE_FILE if base.is_dir() else base
    if not list_segments(base):
        raise FileNotFoundError(f"{args.run}: no store (run folder or buffer.sqlite) there")
    if args.keep < 0:
        raise ValueError("--keep must be >= 0")
    moved = archive_segments(base, keep=args.keep, dest=args.to, dry_run=args.dry_run)
    if not moved:
        print(f"{base}: no closed segment to archive ({len(list_segments(base))} segment(s), the newest is open)")
    else:
        print(("would move: " if args.dry_run else "") + describe_archived(moved))
    return 0


def _gap(args: argparse.Namespace) -> int:
    from ..buffer import open_run
    from ..learner.gate_vs_live import format_table, gate_vs_live

    run = open_run(args.run)
    rows = gate_vs_live(run.models_dir, [run.path])
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0


def print_labels(run: str, n: int = 10, *, as_json: bool = False) -> int:
    """Counts per answer and per labeller, and the ``n`` latest labels, of a run's preference store."""
    import time
    from collections import Counter

    from ..preferences.store import PreferenceStore, prefs_path

    path = prefs_path(run)
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no preference labels ({path} does not exist; label with vla-rl-ros label)")
    with PreferenceStore(path, readonly=True) as s:
        labels = s.labels()
        counts = s.counts()
    by_labeller = dict(Counter(p.labeller for p in labels))
    latest = labels[-n:][::-1] if n > 0 else []
    if as_json:
        print(json.dumps({"path": str(path), "total": len(labels), "counts": counts, "labellers": by_labeller,
                          "latest": [p.to_json() for p in latest]}, indent=1))
        return 0
    print(f"{path}: {len(labels)} labels (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")")
    if by_labeller:
        print("labellers: " + ", ".join(f"{k} {v}" for k, v in sorted(by_labeller.items())))
    if latest:
        print(f"latest {len(latest)}:")
    for p in latest:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.created_at))
        seg = lambda g: f"{g.run}/ep{g.episode}[{g.t0}:{g.t1}]"  # noqa: E731
        print(f"  #{p.id:<5} {when}  {p.label:<5}  {seg(p.left)} vs {seg(p.right)}  by {p.labeller}"
              + (f"  ({p.info['selection']})" if "selection" in p.info else ""))
    return 0


def _label(args: argparse.Namespace, ask=input) -> int:
    from pathlib import Path

    from ..perception.frames import FrameStore

    if not Path(args.run).is_dir():
        raise FileNotFoundError(f"{args.run}: no such run folder")
    store = FrameStore(args.run)
    index = store.index()
    if not index:
        raise FileNotFoundError(f"{store.dir}: no frames (record with the recorder's save_frames and the camera on)")
    if args.accept_suggested:
        n = store.accept_suggested()
        print(f"labelled {n} frame(s) with their episodes' outcomes; {len(store.unlabelled())} left unlabelled")
    elif args.from_csv:
        print(f"labelled {store.from_csv(args.from_csv)} frame(s) from {args.from_csv}")
    elif args.list:
        for r in store.unlabelled():
            print(f"{store.dir / r['file']}  episode {r['episode']} {r['tag']} t={r['t']}s  suggested "
                  f"{_yn(r.get('suggested'))} ({r.get('end_reason', '')})")
    else:
        todo = store.unlabelled()
        print(f"{len(todo)} unlabelled frame(s) in {store.dir}: y = success, n = not, s = skip, q = quit")
        for r in todo:
            prompt = (f"{store.dir / r['file']}  (episode {r['episode']} {r['tag']}, suggested "
                      f"{_yn(r.get('suggested'))}) [y/n/s/q]: ")
            while True:
                try:
                    a = ask(prompt).strip().lower()
                except EOFError:
                    a = "q"
                if a in ("y", "n", "s", "q", ""):
                    break
            if a == "q":
                break
            if a in ("y", "n"):
                store.label(r["file"], a == "y", by="person")
    labels = store.labels()
    pos = sum(labels.values())
    print(f"{len(labels)} labelled ({pos} success, {len(labels) - pos} not) of {len(index)} frames")
    return 0


def _yn(v) -> str:
    return "?" if v is None else ("success" if v else "failure")


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m vla_rl_ros.commands.data``) until the CLI wires the verb."""
    parser = argparse.ArgumentParser(prog="vla-rl-ros")
    register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
