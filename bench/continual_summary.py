"""Issue 8's two live targets across every reported run of ``bench/bench_continual.py``.

Usage::

    .venv/bin/python bench/continual_summary.py

Reads the sections that ``bench_continual.py`` wrote (``docs/bench/continual_<mode>_<version>_<run>.md``: each
model the arm ran, when it was promoted, and its success on the same 200 seeded offline episodes) and writes
``docs/bench/continual_summary.md``: per run, the first minute at which the arm's model reached the target, its
success at the end, the promotions, and each promotion more than 5 points below its parent. Nothing is
measured here; every figure comes from the named section, which names the command that made it.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collect import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (file stem, mode, target %, minutes allowed, how the run differs from today's defaults)
NO_GAP = "no reality gap (made before it existed: today's `--gap 0`)"
NO_LATCH = "the sim teacher without its grasp latch (before 9184653)"
STRICT = ("`--set learner_node.gate_alpha:=0.01 --set learner_node.gate_episodes:=200 --set "
          "learner_node.gate_block:=20`: the gate at α 0.01 over up to 200 paired episodes in blocks of 20 "
          "(default α 0.05, up to 100 in blocks of 10)")
RUNS = [
    ("continual_noteacher_gap_0", "teacher off", 80, 45, ""),
    ("continual_noteacher_gap_1", "teacher off", 80, 45,
     "— (`--stop-at 0.94`: the bench would have stopped it had the learner's monitor read ≥ 94%; it never did)"),
    ("continual_noteacher_gap_2", "teacher off", 80, 45, ""),
    ("continual_noteacher_gap_3", "teacher off", 80, 45,
     "— (today's code, the Fast DDS profile included; the fresh-clone check, its session at nice 19, ran beside "
     "it in its first 19 minutes)"),
    ("continual_noteacher_strict_10", "teacher off, the stricter gate", 80, 45, STRICT + "; `--stop-at 0.85`"),
    ("continual_noteacher_strict_11", "teacher off, the stricter gate", 80, 45, STRICT + "; `--stop-at 0.85`"),
    ("continual_noteacher_strict_12", "teacher off, the stricter gate", 80, 45, STRICT + "; `--stop-at 0.85`"),
    ("continual_teacher_latch_4", "teacher on", 90, 30, ""),
    ("continual_teacher_latch_5", "teacher on", 90, 30, ""),
    ("continual_teacher_latch_6", "teacher on", 90, 30,
     "— (`--stop-at 0.96`: stopped at 15.6 minutes, when the learner's monitor read 96%; the test suite ran at "
     "nice 19 beside it from minute 8.5)"),
    ("continual_teacher_latch_7", "teacher on", 90, 30,
     "— (`--stop-at 0.96`: stopped at 27.1 minutes, when the learner's monitor read 98%)"),
    ("continual_teacher_latch_8", "teacher on", 90, 30, ""),
    ("continual_teacher_latch_9", "teacher on", 90, 30, ""),
    ("continual_teacher_strict_10", "teacher on, the stricter gate", 90, 30, STRICT),
    ("continual_teacher_strict_11", "teacher on, the stricter gate", 90, 30, STRICT),
    ("continual_teacher_strict_12", "teacher on, the stricter gate", 90, 30,
     STRICT + "; the fresh-clone check (the whole test suite, its session at nice 19) ran beside it throughout"),
    ("continual_teacher_percep_0", "teacher on, `--perception`", 90, 30,
     "`--perception`: the policy and the teacher act on the object pose perception_node reads from the twin "
     "camera's markers (the camera calibrated by sim, hand-eye), not on the twin's ground truth; stopped at 19.5 "
     "min: its learner had failed every round from minute 18.5 on an episode without a step (fixed since)"),
    ("continual_teacher_percep_1", "teacher on, `--perception`", 90, 30,
     "`--perception` (as run 1); a 25-minute run, made after the empty-episode fix"),
    ("continual_teacher_gap_0", "teacher on, before the grasp latch", 90, 30,
     NO_LATCH + "; the tests and a benchmark of the session that made it shared the machine in its first 16 minutes"),
    ("continual_teacher_gap_1", "teacher on, before the grasp latch", 90, 30, NO_LATCH),
    ("continual_teacher_gapq_3", "teacher on, before the grasp latch", 90, 30, NO_LATCH),
    ("continual_noteacher_v2_1", "teacher off, no reality gap", 80, 45, NO_GAP),
    ("continual_noteacher_v2_2", "teacher off, no reality gap", 80, 45, NO_GAP),
    ("continual_noteacher_v2_3", "teacher off, no reality gap", 80, 45, NO_GAP),
    ("continual_noteacher_v2_4", "teacher off, no reality gap", 80, 45,
     NO_GAP + "; ran 2 hours: the soak, `bench/bench_soak.py`"),
    ("continual_teacher_v3_1", "teacher on, no reality gap", 90, 30, NO_GAP + "; " + NO_LATCH),
    ("continual_teacher_v3_2", "teacher on, no reality gap", 90, 30, NO_GAP + "; " + NO_LATCH),
    ("continual_teacher_v3_3", "teacher on, no reality gap", 90, 30, NO_GAP + "; " + NO_LATCH),
    ("continual_teacher_v4_1", "teacher on, gain 0.25, no reality gap", 90, 30,
     NO_GAP + "; " + NO_LATCH + "; teacher gain 0.25 (default 0.5)"),
]
CELL = re.compile(r"\*\*([\d.]+)%\*\* \((\d+)–(\d+)%\)")


def exact_rate(shown: str, lo: int, hi: int, n: int) -> float:
    """The success rate (%) behind a cell that shows it rounded (``**80%** (73–85%)``): the one count of n
    episodes whose rounded rate and rounded Wilson interval read the same. 159/200 (79.5%) shows as 80%, and
    only its interval, 73–85% against 160/200's 74–85%, tells the two apart."""
    if "." in shown:
        return float(shown)
    from vla_rl_ros.learner.evaluate import EvalResult

    fits = []
    for k in range(n + 1):
        w_lo, w_hi = EvalResult(task="pick_place", episodes=n, seed=0,
                                successes=[True] * k + [False] * (n - k)).wilson_interval()
        if f"{100 * k / n:.0f}" == shown and (f"{100 * w_lo:.0f}", f"{100 * w_hi:.0f}") == (str(lo), str(hi)):
            fits.append(100 * k / n)
    if not fits:
        raise ValueError(f"{shown}% ({lo}–{hi}%) of {n} episodes: no count fits")
    return min(fits)  # where two fit (33.5% and 34% both read 34% (28–41%)), the lower: a target is not over-read


def read_run(path: Path) -> dict | None:
    """Minutes, offline success and change from the parent (points, from the unrounded rates) of each model in
    one bench_continual section (None: no such file)."""
    if not path.exists():
        return None
    text = path.read_text()
    n = int(re.search(r"the same (\d+) seeded twin episodes", text).group(1))
    models = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 8 or not re.match(r"^(start|v\d+) ", cells[0]):
            continue
        when = re.match(r"([\d.]+) min", cells[1])
        shown, lo, hi = CELL.search(cells[-2]).groups()
        rate = exact_rate(shown, int(lo), int(hi), n)
        models.append((float(when.group(1)) if when else 0.0, rate))
    cmd = re.search(r"^Command: `([^`]*)`", text, re.M)
    seed = re.search(r"--seed (\d+)", cmd.group(1)) if cmd else None
    return {"models": models, "command": cmd.group(1) if cmd else "?", "seed": int(seed.group(1)) if seed else 0}


def dropped(parent_pct: float, child_pct: float, points: float = 5.0) -> bool:
    """The never-worse test: the child more than ``points`` below its parent (rates in percent), with a tolerance
    so that an exact 5-point drop (90 - 85 is not exact in floats) never counts by rounding luck."""
    return parent_pct - child_pct > points + 1e-9


def summarise(run: dict, target: int, minutes: float) -> dict:
    models = run["models"]
    reached = next(((t, s) for t, s in models if s >= target), None)
    # from the exact rates: 94.5% -> 89% is 5.5 points (a section written before 2026-12-07 shows it as -5)
    drops = [(t, models[i - 1][1], s, round(s - models[i - 1][1], 1)) for i, (t, s) in enumerate(models)
             if i and dropped(models[i - 1][1], s)]
    return {"reached": reached, "met": reached is not None and reached[0] <= minutes, "end": models[-1],
            "promotions": len(models) - 1, "drops": drops, "start": models[0][1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "continual_summary.md"))
    args = ap.parse_args()
    lines = [
        "## Issue 8's live targets, every reported run (`bench/continual_summary.py`)",
        "",
        "Command: `.venv/bin/python bench/continual_summary.py` (reads the `bench/bench_continual.py` sections below; "
        "each names its command and machine). Success is the arm's model on the same 200 seeded offline twin "
        "episodes (exact: a rate the section shows rounded is recovered from its Wilson interval, so 79.5% is not read as 80%); minutes are wall clock of `./vla-rl-ros sim` at the promotion.",
        "",
        "Today's default `vla-rl-ros sim` has a small reality gap (README, \"The reality gap\"): the arm's twin, "
        "which the policy acts in, differs from the twin of the gate, the monitor and the offline evaluation. "
        "Runs made before the gap existed had identical twins (today's `--gap 0`) and are tallied apart.",
        "",
        "| mode (target) | section | seed | differs from today's defaults | start | reached the target | met | end of run "
        "| promotions | more than 5 points below its parent |",
        "| --- | --- | ---: | --- | ---: | --- | --- | --- | ---: | --- |",
    ]
    tally: dict[str, list[bool]] = {}
    all_drops = 0
    n_prom = 0
    for stem, mode, target, minutes, differs in RUNS:
        run = read_run(ROOT / "docs" / "bench" / f"{stem}.md")
        if run is None or not run["models"]:
            continue
        s = summarise(run, target, minutes)
        tally.setdefault(f"{mode} (≥ {target}% within {minutes} min)", []).append(s["met"])
        all_drops += len(s["drops"])
        n_prom += s["promotions"]
        reached = (f"{s['reached'][1]:g}% at {s['reached'][0]:.1f} min" if s["reached"] else
                   f"never (best {max(m[1] for m in run['models']):g}%)")
        drops = ", ".join(f"{a:g}% → {b:g}% ({d:+g} pts) at {t:.1f} min" for t, a, b, d in s["drops"]) or "none"
        lines.append(f"| {mode} (≥ {target}% in {minutes} min) | `{stem}` | {run['seed']} | {differs or '—'} | "
                     f"{s['start']:g}% | {reached} | {'**yes**' if s['met'] else '**no**'} | {s['end'][1]:g}% at "
                     f"{s['end'][0]:.1f} min | {s['promotions']} | {drops} |")
    lines.append("")
    for k, v in tally.items():
        lines.append(f"* {k}: met in **{sum(v)} of {len(v)}** runs" + (" (issue 8 asks for 3)." if len(v) < 3 else "."))
    lines.append(f"* Promotions more than 5 points below their parent on the 200 episodes: **{all_drops}** of "
                 f"{n_prom} (issue 8's target is 0).")
    lines += [
        "",
        "Why the never-worse target is missed: the gate's non-inferiority rule promotes a candidate 5 points worse "
        "at most 5% of the time (`docs/bench/gate.md`), and a run gates 23 to 173 candidates, so a few worse ones "
        "pass. Three of the drops are in runs whose per-episode outcomes are kept. Two are real regressions: run 4 "
        "of the gap-free set (its model lost 23 of the 200 seeds its parent won and won 11 the parent lost, "
        "McNemar p 0.03; its gate had seen 3 wins and 0 losses in 40 pairs) and the teacher-on run with seed 1, "
        "before the latch (42 lost, 22 won, p 0.01; its gate had seen 85% against 77% on 60 pairs). The third, "
        "the teacher-on run with seed 8 (83% → 77%: 30 lost, 18 won, p 0.06; its gate had seen 81% against 74% "
        "on 100 pairs), is not significant on the 200 episodes. The other two runs' models are "
        "gone, so their drops cannot be split into regression and evaluation noise. `bench/bench_gate.py` measures "
        "the stricter rule that would cut such promotions (α 0.01 over up to 200 pairs: a 6-point regression "
        "promoted 0.3% of the time instead of 2.3%, for twice the paired episodes per gate). Run live with the "
        "teacher on (the three \"stricter gate\" runs above, seeds 10–12), it met the 90%-in-30-minutes target in "
        "3 of 3 runs (at 18.7, 9.5 and 14.1 minutes; today's gate: 5 of 6), but did not remove the drops: one of "
        "its 14 promotions fell 5.5 points on the 200 episodes (94.5% → 89%: 19 seeds lost, 8 won, p 0.03), after "
        "its gate had seen the candidate at 92% against 88% on 160 pairs (17 wins, 9 losses), and the learner's "
        "monitor read 90% against 88% on its own 50 episodes. Three independent seed sets disagree by more than "
        "the margin: with models near 90%, the 200-episode evaluation afterwards is itself a noisy judge of a "
        "5-point drop. Today's gate (1 drop in the latch runs' 44 promotions) stays the default: the stricter one "
        "showed no fewer drops per promotion in these runs, and it has not been run with the teacher off.",
        "",
        "Teacher on, with the reality gap, before the sim teacher's grasp latch: 85% at 25.6 minutes (seed 0, tests "
        "and a benchmark beside it), 90% at 27.5 minutes (seed 1) and 83% at 29.6 minutes (seed 3, a quiet "
        "machine). Their corrected episodes succeeded 30–49% of the time, and the runs' stores show why "
        "(`docs/bench/teacher_live.md`): 23–27% of them lifted the cube and then dropped it, the teacher having "
        "opened the hand just before in 77–85% of those drops. Its scripted hand judged \"holding\" afresh on "
        "each observation, and on the live graph the cube's pose is late (30 Hz poses, 100 Hz joint states) and "
        "noisy (the gap's 2 mm), so while lifting the test flickered to \"not held\". With the latch "
        "(`ScriptedExpert(latch=True)`, 9184653) a held cube stays held; the gym replay with a late, noisy pose "
        "(`docs/bench/teacher_lag.md`) finishes 76% and 64% of take-overs one and two ticks late, against 25% "
        "and 33% without. The runs above marked \"teacher on\" have it.",
    ]
    lines.append("")
    text = "\n".join(lines)
    print(text)
    write_section(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
