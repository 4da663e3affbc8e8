"""``vla-rl-ros label RUN``: compare recorded segments in a browser; ``--fit`` fits a reward model on the answers.

Serves a local page (:mod:`vla_rl_ros.preferences.labelpage`) that shows two
segments of the run's episodes side by side (top and side views of the hand,
cube and goal paths) and stores your answer in ``RUN/preferences.sqlite``:

    ← left    → right    = or e  equal    s  skip (cannot tell: never asked again, never trained on)

It binds 127.0.0.1 (this machine only) unless ``--host`` says otherwise;
``--port 0`` (the default) picks a free port. The URL is printed on start.
The next pair is the one a reward model's ensemble disagrees on most once the
run has one (``RUN/models/reward/``), a random one before.

While it serves, each time ``--refit-every`` (20) more labels have come in it
fits a new reward model on all of them in the background, so a learner on
``reward: learned`` or ``algo: rlhf`` learns from your answers as you give
them (``--refit-every 0``: only by hand, ``--fit``).

``label RUN --list`` prints the counts and the latest labels instead (as
``data labels RUN``). ``label RUN --fit [--steps N]`` fits a Bradley–Terry
reward ensemble on all of the run's labels (skip left out) and saves it as the
run's newest reward model (``RUN/models/reward/``): what ``reward: learned``,
a learner with ``reward_source: learned`` or ``algo: rlhf``, and this page's
disagreement queries use from then on.
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("label", help="label preferences between recorded segments in a browser",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one, printed)")
    p.add_argument("--labeller", default=None, help="who is labelling (default: the OS user)")
    p.add_argument("--segment-len", type=int, default=25, help="ticks per segment (default 25)")
    p.add_argument("--seed", type=int, default=0, help="query sampler's seed")
    p.add_argument("--list", action="store_true", help="print label counts and the latest labels, then exit")
    p.add_argument("-n", type=int, default=10, help="with --list: how many of the latest labels (default 10)")
    p.add_argument("--fit", action="store_true", help="fit a reward model on the run's labels, save it, then exit")
    p.add_argument("--steps", type=int, default=1000, help="Adam steps of a fit (--fit, --refit-every; default 1000)")
    p.add_argument("--refit-every", type=int, default=20, metavar="N",
                   help="while serving, fit a new reward model in the background each time N more labels have "
                        "come in (default 20; 0: never, fit with --fit)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.list:
        from .data import print_labels

        return print_labels(args.run, args.n)
    if args.fit:
        import torch

        from ..preferences.reward_model import RewardTrainConfig, fit_run_reward_model

        torch.set_num_threads(1)
        saved, acc = fit_run_reward_model(args.run, RewardTrainConfig(steps=args.steps, seed=args.seed))
        dr = saved.lineage["data_range"]
        print(f"reward model {saved.version}: {dr['n_labels']} labels ({dr['labels']}), agrees with "
              f"{100 * acc:.0f}% of the strict ones it was fit on; saved to {saved.path}")
        return 0
    try:
        import flask  # noqa: F401
    except ModuleNotFoundError:
        print("vla-rl-ros label needs Flask: pip install -e '.[label]' (the ./vla-rl-ros launcher installs it)",
              file=sys.stderr)
        return 1
    from ..preferences.labelpage import LabelSession, make_server

    if args.refit_every > 0:
        import torch

        torch.set_num_threads(1)  # the fits run beside the server (and, on a robot, beside the learner)
    session = LabelSession(args.run, args.labeller, segment_len=args.segment_len, seed=args.seed,
                           refit_every=args.refit_every, refit_steps=args.steps)
    server = make_server(session, args.host, args.port)
    host = args.host if ":" not in args.host else f"[{args.host}]"
    print(f"labelling {session.run.path} as {session.labeller!r}: http://{host}:{server.server_port}/ "
          f"(keys: ← left, → right, = or e equal, s skip; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        session.close()
    return 0
