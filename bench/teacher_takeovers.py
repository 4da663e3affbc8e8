"""The live sim teacher's take-overs, read from runs' stores: how fast and how well its corrections went.

Usage::

    .venv/bin/python bench/teacher_takeovers.py RUN [RUN ...] [--first 40] [--out docs/bench/teacher_live.md]

``RUN`` is a run folder under ``runs/bench/`` (or a path) made by ``vla-rl-ros sim`` with the teacher on. For the
first ``--first`` episodes of the arm's own (demos excluded) in which the teacher took over at least one step:
their success, the share in which the cube was lifted (2 cm above its start), the tick of the first take-over,
and the ticks from it until the hand was within 1.5 cm of the cube (a correction's approach; the gym replay of
``bench/bench_teacher.py`` cannot show how the live arm tracks it). Nothing is run; the figures come from the
recorded observations.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from collect import write_section  # noqa: E402


def takeovers(store: Path, first: int) -> dict:
    from vla_rl_ros.buffer import open_run

    run = open_run(store)
    spec = run.spec
    ee, ob = spec.obs_slice("ee_pos"), spec.obs_slice("object_pos")
    c = sqlite3.connect(f"file:{run.buffer_path}?mode=ro", uri=True)
    try:
        rows = c.execute("SELECT id, success FROM episodes WHERE is_demo = 0 AND n_intervention_steps > 0 "
                         "ORDER BY id LIMIT ?", (first,)).fetchall()
        out = []
        for eid, success in rows:
            steps = c.execute("SELECT obs, action, intervention FROM steps WHERE episode_id = ? ORDER BY t",
                              (eid,)).fetchall()
            O = np.array([np.frombuffer(o, np.float32) for o, _, _ in steps])
            A = np.array([np.frombuffer(a, np.float32) for _, a, _ in steps])
            took = np.array([bool(i) for _, _, i in steps])
            t0 = int(np.argmax(took))
            z = O[:, ob][:, 2] - O[0, ob][2]
            lifted = float(z.max()) > 0.02
            near = np.linalg.norm(O[t0:, ee] - O[t0:, ob], axis=1) < 0.015
            dropped = opened = False
            if lifted and not success and z[-1] < 0.01:  # up, then back on the table, and not a success
                dropped = True
                t_up = int(np.argmax(z > 0.02))
                t_down = t_up + int(np.argmax(z[t_up:] < 0.01))
                w = slice(max(0, t_down - 6), t_down)  # the teacher commanded an open hand just before
                opened = bool((took[w] & (A[w, -1] > 0)).any())
            out.append((bool(success), lifted, t0, int(np.argmax(near)) if near.any() else -1, dropped, opened))
    finally:
        c.close()
    a = np.array(out, dtype=float).reshape(-1, 6)
    reached = a[:, 3] >= 0
    return {"n": len(a), "success": a[:, 0].mean() if len(a) else float("nan"),
            "lifted": a[:, 1].mean() if len(a) else float("nan"),
            "start": float(np.median(a[:, 2])) if len(a) else float("nan"),
            "approach": float(np.median(a[reached, 3])) if reached.any() else float("nan"),
            "never": 1 - reached.mean() if len(a) else float("nan"),
            "dropped": a[:, 4].mean() if len(a) else float("nan"),
            "opened": a[:, 5].sum() / max(1, a[:, 4].sum())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--first", type=int, default=40)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "teacher_live.md"))
    args = ap.parse_args()
    lines = ["## The live teacher's corrections, from the runs' stores (`bench/teacher_takeovers.py`)", "",
             "Command: `.venv/bin/python bench/teacher_takeovers.py " + " ".join(args.runs)
             + f" --first {args.first}`", "",
             f"The first {args.first} episodes of each run in which the sim teacher took over (1 tick = 50 ms). "
             "*Approach*: ticks from the first take-over until the hand is within 1.5 cm of the cube. *Dropped*: the cube "
             "went 2 cm up and ended back on the table in a failed episode. "
             + args.note, "",
             "| run | corrected episodes | their success | cube lifted | first take-over (tick, median) "
             "| approach (ticks, median) | hand never within 1.5 cm | lifted, then dropped (failed) "
             "| of those, the teacher opening the hand in the 6 ticks before |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in args.runs:
        path = Path(r) if Path(r).exists() else ROOT / "runs" / "bench" / r
        s = takeovers(path, args.first)
        lines.append(f"| `{path.name}` | {s['n']} | {100 * s['success']:.0f}% | {100 * s['lifted']:.0f}% | "
                     f"{s['start']:.0f} | {s['approach']:.0f} | {100 * s['never']:.0f}% | {100 * s['dropped']:.0f}% | "
                     f"{100 * s['opened']:.0f}% |")
    text = "\n".join(lines + [""])
    print(text)
    write_section(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
