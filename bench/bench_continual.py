"""The continual loop end to end: does `vla-rl-ros sim` make pick_place better while it runs?

Usage::

    .venv/bin/python bench/bench_continual.py [--duration 960]          # runs the sim stack, then reports
    .venv/bin/python bench/bench_continual.py --run runs/pick_place-sim --report-only
    .venv/bin/python bench/bench_continual.py --ablation        # the same loop, gym-only, three variants

Runs the README's main command (``./vla-rl-ros sim --task pick_place``, the
real ROS graph: twin, policy, recorder, learner and the scripted teacher) in a
fresh run folder for ``--duration`` seconds, then reads back what happened from
the run itself (nothing from the console):

* the store: every live episode, its model version and whether the teacher
  intervened; the success of *unassisted* episodes per model version (the
  policy's own success, with the sim's exploration noise);
* the registry: every candidate with its twin-gate result;
* an evaluation of the starting model and of every promoted model on the same
  100 seeded twin episodes (deterministic, no noise, no teacher), through ONNX
  Runtime.

Writes ``docs/bench/continual.md`` (``--out``) and copies the run's plot to
``docs/img/continual.png`` (named after ``--out``).

``--ablation`` replays the same loop without ROS, in the gymnasium twin, to
say what each ingredient does (``docs/bench/continual_ablation.md``): rounds of
20 episodes of the incumbent (with the same :class:`~vla_rl_ros.twin.teacher.Teacher`
rule on env time, and the same exploration noise), a Recap round with the sim's
settings on everything so far (the starting model's 10 demos included), and the
learner's twin gate (30 paired seeded episodes, sign test at 0.05). Variants:
teacher + noise (the sim's configuration), no teacher, no noise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collect import write_section  # noqa: E402
from continual_summary import dropped  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EVAL_SEED = 10_000


def sim_command(run_dir: Path, duration: float, domain_id: int, teacher: float | None = None,
                seed: int = 0, sets: list[str] | None = None, perception: bool = False, task: str = "pick_place",
                extra: list[str] | None = None) -> list[str]:
    """The README's main command for one run; ``seed`` k moves the twin's episodes (100000 + 10000 k), the
    learner's and the teacher's seeds, so runs differ only by their seeds. ``perception``: ``sim --perception``
    (the object's pose from the twin camera's ArUco markers, not the twin's ground truth). ``extra``: more
    ``sim`` arguments (``--model M``, ``--demos N``)."""
    cmd = [str(ROOT / "vla-rl-ros"), "sim", "--task", task, "--run", str(run_dir),
           "--duration", str(duration), "--domain-id", str(domain_id)] + list(extra or [])
    if teacher is not None:
        cmd += ["--teacher", str(teacher)]
    if perception:
        cmd += ["--perception"]
    if seed:
        cmd += ["--set", f"twin_node.seed:={100_000 + 10_000 * seed}", "--set", f"learner_node.seed:={seed}",
                "--set", f"teacher_node.seed:={seed}"]
    for item in sets or []:
        cmd += ["--set", item]
    return cmd


def hold_domain(domain_id: int):
    """Reserve ``domain_id`` the way the test harness does (``test/conftest.py``: an exclusive ``flock`` on
    ``<tmp>/vla_rl_ros_domain_locks/<id>.lock``), so that no test started meanwhile on this machine puts its
    nodes on the run's DDS domain. Returns the open lock file (the reservation lasts while it is open)."""
    import fcntl
    import tempfile

    d = Path(tempfile.gettempdir()) / "vla_rl_ros_domain_locks"
    d.mkdir(parents=True, exist_ok=True)
    f = open(d / f"{domain_id}.lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise SystemExit(f"ROS_DOMAIN_ID {domain_id} is held by a test or another run on this machine; "
                         "pass another --domain-id") from None
    return f


def run_sim(run_dir: Path, duration: float, domain_id: int, teacher: float | None = None, seed: int = 0,
            stop_at: float | None = None, sets: list[str] | None = None, perception: bool = False,
            task: str = "pick_place", extra: list[str] | None = None) -> float:
    """Run the sim stack; with ``stop_at``, stop it (SIGINT, as Ctrl-C) as soon as the learner's own monitor
    (models/monitor.jsonl: a promoted model on the fixed seeded block) reads at least ``stop_at``."""
    import signal

    from vla_rl_ros.learner.monitor import read_monitor

    lock = hold_domain(domain_id)  # noqa: F841 - held until the run is over
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = sim_command(run_dir, duration, domain_id, teacher, seed, sets, perception, task, extra)
    t0 = time.time()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.console.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(5.0)
            mon = run_dir / "models" / "monitor.jsonl"
            if stop_at is not None and mon.exists():
                hits = [r for r in read_monitor(mon) if r.get("reason") != "incumbent at start"
                        and (r.get("success_rate") or 0.0) >= stop_at]
                if hits:
                    print(f"monitor reads {100 * hits[0]['success_rate']:.0f}% >= {100 * stop_at:.0f}% "
                          f"after {(time.time() - t0) / 60:.1f} min: stopping the run", flush=True)
                    proc.send_signal(signal.SIGINT)
                    proc.wait(timeout=120)
                    break
        if proc.returncode not in (0, -signal.SIGINT, 130):
            raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.time() - t0


def paired_drop(parent: list[int], child: list[int]) -> tuple[int, int, float]:
    """Seeds the child lost and won against its parent (same seeded episodes) and the exact one-sided sign-test
    p-value P(wins <= won | wins + losses discordant pairs, each a fair coin): McNemar's exact test of "the child
    is no worse"."""
    from math import comb

    lost = sum(1 for a, b in zip(parent, child) if a and not b)
    won = sum(1 for a, b in zip(parent, child) if b and not a)
    n = lost + won
    return lost, won, sum(comb(n, i) for i in range(won + 1)) / 2 ** n if n else 1.0


def gap_sentence(run_dir: Path) -> str:
    """How the arm's twin differed from the gate's in this run, from the line `vla-rl-ros sim` printed at start."""
    log = run_dir.parent / f"{run_dir.name}.console.log"
    m = re.search(r"reality gap(?: x([\d.]+)|: the params file's)", log.read_text(errors="replace")) if log.exists() else None
    if m is None:  # made before the sim had a reality gap (issue 9)
        return "No reality gap: the arm's twin and the gate's were identical."
    if m.group(1) is not None and float(m.group(1)) == 0.0:
        return "No reality gap (`--gap 0`): the arm's twin and the gate's were identical."
    scale = "the params file's" if m.group(1) is None else f"x{m.group(1)}"
    return (f"Reality gap on ({scale}, README \"The reality gap\"): the arm's twin, which the policy acts in, differs "
            "from the twin of the learner's gate, its monitor and this offline evaluation.")


def report(run_dir: Path, episodes_eval: int, cmd: str, out: str, title: str = "", note: str = "",
           recheck: bool = True) -> str:
    from vla_rl_ros.buffer import Replay
    from vla_rl_ros.learner.evaluate import evaluate_onnx

    from bench_learner import machine_info, machine_line

    info = machine_info()
    with Replay([run_dir / "buffer.sqlite"]) as replay:
        eps = [e for e in replay.episodes() if not e.is_demo]
        n_demo = sum(1 for e in replay.episodes() if e.is_demo)
    reg = [json.loads(line) for line in (run_dir / "models" / "registry.jsonl").read_text().splitlines() if line]
    initial = reg[0]
    t_start = json.loads((run_dir / "run.json").read_text())["created"]
    from vla_rl_ros.learner.monitor import read_monitor

    monitor = {r["version"]: r for r in read_monitor(run_dir / "models") if r.get("success_rate") is not None}
    promoted = [r for r in reg[1:] if r.get("promoted")]
    candidates = [r for r in reg[1:]]
    versions = [initial["version"]] + [r["version"] for r in promoted]

    # live episodes per model version (an episode that straddled a swap counts for neither)
    rows = []
    cache_file = run_dir / "offline_eval.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    steps = np.cumsum([len(e) for e in eps])
    for i, v in enumerate(versions):
        mine = [(k, e) for k, e in enumerate(eps) if e.model_versions == [v]]
        un = [e for _, e in mine if not e.intervention.any()]
        first = mine[0][0] if mine else None
        key = f"{v}/{episodes_eval}/{EVAL_SEED}"
        if key not in cache or (recheck and "successes" not in cache[key]):  # deterministic (seeded): reused
            res = evaluate_onnx(str(run_dir / "models" / f"{v}.onnx"), "pick_place", episodes=episodes_eval,
                                seed=EVAL_SEED)
            cache[key] = {"success_rate": res.success_rate, "ci95": list(res.wilson_interval()),
                          "successes": [int(x) for x in res.successes]}  # per seed: the paired test below
            cache_file.with_suffix(".tmp").write_text(json.dumps(cache, indent=1))
            os.replace(cache_file.with_suffix(".tmp"), cache_file)
        res_rate, (lo, hi) = cache[key]["success_rate"], cache[key]["ci95"]
        gate = None if i == 0 else promoted[i - 1]["eval"]
        rows.append({
            "version": v, "label": "start (shipped BC)" if i == 0 else f"v{i}",
            "first_episode": (first + 1) if first is not None else None,
            "env_steps_before": int(steps[first - 1]) if first else 0,
            "minutes": None if i == 0 else (promoted[i - 1]["created"] - t_start) / 60.0,
            "live_eps": len(mine), "unassisted": len(un), "unassisted_success": float(np.mean([e.success for e in un])) if un else None,
            "assisted": len(mine) - len(un),
            "gate": None if gate is None else (gate["candidate"]["success_rate"], gate["incumbent"]["success_rate"],
                                               gate.get("wins"), gate.get("losses"), gate.get("p_value"),
                                               gate.get("pairs", gate["candidate"].get("episodes"))),
            "eval": res_rate, "eval_ci": (lo, hi), "successes": cache[key].get("successes"),
            "monitor": (monitor.get(v) or {}).get("success_rate"),
            "monitor_at_min": None if v not in monitor else (monitor[v]["finished"] - t_start) / 60.0,
            "assisted_share": (len(mine) - len(un)) / len(mine) if mine else None,
        })
        print(rows[-1], flush=True)
    iv_steps = sum(int(e.intervention.sum()) for e in eps)
    n_steps = sum(len(e) for e in eps)

    def pct(x):
        return "—" if x is None else f"{100 * x:.0f}%"

    def rate(x):  # the 200-episode rates, exactly: 159/200 is 79.5%, not "80%" (a target reads them)
        return f"{100 * x:.1f}".removesuffix(".0") + "%"

    lines = [
        f"## The continual loop, end to end{title} (`bench/bench_continual.py`)",
        "",
        f"Command: {cmd}",
        "",
        machine_line(info, load=False) + " The sim stack (5 ROS 2 processes) and the learner share the 2 cores."
        + (f" {note}" if note else ""),
        "",
        f"Run `{os.path.relpath(run_dir, ROOT)}`: the README's main command, `./vla-rl-ros sim` (pick_place; starting "
        f"model `models/pick_place_bc.onnx`; the store starts with exactly its {n_demo} demos). "
        f"{len(eps)} live episodes, {n_steps:,} policy ticks, {len(candidates)} Recap candidates, "
        f"{len(promoted)} promoted. "
        + (f"The scripted teacher watched half of the episodes and corrected the arm in "
           f"{sum(1 for e in eps if e.intervention.any())} of them ({100 * iv_steps / max(n_steps, 1):.0f}% of the "
           f"ticks); {pct(float(np.mean([e.success for e in eps if e.intervention.any()])))} of the episodes it "
           "corrected ended in success (the gym replay of the teacher with a late action: `docs/bench/teacher.md`)"
           if iv_steps else "No one corrected the arm (no intervention in any episode)")
        + "; the policy acted with exploration noise (std 0.3) throughout. " + gap_sentence(run_dir),
        "",
        f"Offline evaluation: the same {episodes_eval} seeded twin episodes (seeds {EVAL_SEED}..{EVAL_SEED + episodes_eval - 1}), "
        "deterministic policy, no noise, no teacher, ONNX Runtime.",
        "",
        "| model | promoted after (wall clock: live episode, policy ticks) | live episodes (unassisted; share assisted) | "
        "live success, unassisted (with noise) | twin gate: candidate vs incumbent (paired episodes) | "
        "learner's monitor (50 fixed episodes; known at) | offline success, 95% CI | vs its parent |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    regressions = 0
    for k, r in enumerate(rows):
        g = "—" if r["gate"] is None else (f"{pct(r['gate'][0])} vs {pct(r['gate'][1])} on {r['gate'][5]}, "
                                           f"{r['gate'][2]} wins / {r['gate'][3]} losses")
        frm = ("start" if k == 0 else
               f"{r['minutes']:.1f} min: episode {r['first_episode'] or '—'} ({r['env_steps_before']:,} steps)")
        mon = "—" if r["monitor"] is None else f"{pct(r['monitor'])} ({r['monitor_at_min']:.1f} min)"
        # to the half point the 200 episodes resolve (-5.5 is not shown as -5)
        delta = "—" if k == 0 else f"{round(100 * (r['eval'] - rows[k - 1]['eval']), 1):+g} pts"
        if k and r["eval"] < rows[k - 1]["eval"] and r["successes"] and rows[k - 1]["successes"]:  # a drop: noise?
            lost, won, p_worse = paired_drop(rows[k - 1]["successes"], r["successes"])
            delta += f" ({lost} lost / {won} won, p {p_worse:.2f})"
        regressions += int(k > 0 and dropped(100 * rows[k - 1]["eval"], 100 * r["eval"]))
        share = "—" if r["assisted_share"] is None else f"{100 * r['assisted_share']:.0f}%"
        lines.append(f"| {r['label']} `{r['version']}` | {frm} | {r['live_eps']} ({r['unassisted']}; {share}) | "
                     f"{pct(r['unassisted_success'])} | {g} | {mon} | **{rate(r['eval'])}** "
                     f"({100 * r['eval_ci'][0]:.0f}–{100 * r['eval_ci'][1]:.0f}%) | {delta} |")
    gain = rows[-1]["eval"] - rows[0]["eval"]
    lines += [
        "",
        f"Offline success went {' → '.join(rate(r['eval']) for r in rows)} ({100 * gain:+.0f} points from the "
        f"starting model to the last promoted one); promotions more than 5 points below their parent on these "
        f"{episodes_eval} episodes: **{regressions}**. A drop shows the seeds its model lost and won against its "
        "parent on these episodes and the exact one-sided sign-test p-value of a drop at least that large if the "
        "two models were equally good (McNemar): a small p is a real regression, a large one is within what "
        f"{episodes_eval} deterministic episodes can tell apart.",
        "",
        f"![success rate while the sim stack learns](../img/{Path(out).stem}.png)",
        "",
        "What each ingredient does: `bench/bench_continual.py --ablation` (next section).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(text, out)
    png = run_dir / "success.png"
    if png.exists():
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, ROOT / "docs" / "img" / f"{Path(out).stem}.png")
    return text


def ablation_variant(name: str, watch: float, noise: float, rounds: int, per_round: int, seed: int = 0,
                     hindsight_k: int | None = None) -> dict:
    import torch

    from vla_rl_ros.learner.continual import LearnerConfig
    from vla_rl_ros.learner.evaluate import evaluate_policy, onnx_actor
    from vla_rl_ros.learner.gate import make_gate
    from vla_rl_ros.learner.gymloop import run_gym_loop
    from vla_rl_ros.twin.env import TwinEnv
    from vla_rl_ros.twin.expert import ScriptedExpert, collect_demos
    from vla_rl_ros.twin.teacher import Teacher

    torch.set_num_threads(1)
    lc = LearnerConfig()  # the learner's gate and hindsight settings
    gate = make_gate(lc.gate_rule, alpha=lc.gate_alpha, max_pairs=lc.gate_episodes, block=lc.gate_block,
                     margin=lc.gate_margin)
    env = TwinEnv(task="pick_place")
    start = onnx_actor(str(ROOT / "models" / "pick_place_bc.onnx"))
    res = run_gym_loop(env, start, collect_demos(env, ScriptedExpert(env.spec_), 10, seed=0),  # the model's own demos
                       rounds=rounds, per_round=per_round, noise=noise,
                       teacher=Teacher(env.spec_, watch_fraction=watch, seed=seed) if watch > 0 else None,
                       hindsight_k=lc.hindsight_k if hindsight_k is None else hindsight_k, gate=gate, seed=seed,
                       log=lambda row: print(name, row, flush=True))
    out = {"name": name, "rounds": res.rounds}
    out["start_eval"] = evaluate_policy(start, "pick_place", 100, EVAL_SEED, env=env).success_rate
    out["final_eval"] = evaluate_policy(res.final, "pick_place", 100, EVAL_SEED, env=env).success_rate
    env.close()
    return out


def ablation(rounds: int, per_round: int, out: str) -> None:
    from bench_learner import machine_info, machine_line

    info = machine_info()
    variants = [  # (name, teacher's watch fraction, exploration noise, hindsight_k)
        ("no teacher, noise 0.3, hindsight 4 (`sim --teacher 0`)", 0.0, 0.3, 4),
        ("no teacher, noise 0.3, no hindsight", 0.0, 0.3, 0),
        ("teacher 50%, noise 0.3, hindsight 4 (`sim`)", 0.5, 0.3, 4),
        ("teacher 50%, noise 0.3, no hindsight", 0.5, 0.3, 0),
    ]
    t0 = time.time()
    res = [ablation_variant(n, w, s, rounds, per_round, hindsight_k=k) for n, w, s, k in variants]
    lines = [
        "## The continual loop without ROS: what each ingredient does (`bench/bench_continual.py --ablation`)",
        "",
        f"Command: `.venv/bin/python bench/bench_continual.py --ablation --rounds {rounds} --per-round {per_round}`",
        "",
        machine_line(info, load=False) + f" {time.time() - t0:.0f} s in all.",
        "",
        f"Each variant: {rounds} rounds of {per_round} gym-twin episodes of the incumbent (starting from "
        "`models/pick_place_bc.onnx`, its 10 demos in the data), a fresh Recap round on all the data and, with "
        "hindsight, up to 4 relabelled successes per own episode (`vla_rl_ros/learner/gymloop.py`, the learner's "
        "settings), and the learner's gate (its rule and settings: SPRT, up to 60 paired seeded episodes in blocks "
        "of 10). Offline success of the start and "
        f"final incumbent on {100} seeded episodes (seeds {EVAL_SEED}..).",
        "",
        "| variant | candidate at the gate, per round (promoted *) | start → final incumbent, offline |",
        "| --- | --- | ---: |",
    ]
    for r in res:
        per = ", ".join(f"{100 * x['candidate']:.0f}%{'*' if x['promoted'] else ''}" for x in r["rounds"])
        lines.append(f"| {r['name']} | {per} | {100 * r['start_eval']:.0f}% → **{100 * r['final_eval']:.0f}%** |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    write_section(text, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "bench" / "continual"), help="run folder")
    ap.add_argument("--duration", type=float, default=960.0, help="seconds of `vla-rl-ros sim`")
    ap.add_argument("--domain-id", type=int, default=57)
    ap.add_argument("--report-only", action="store_true", help="report on an existing run (no sim)")
    ap.add_argument("--episodes", type=int, default=100, help="seeded evaluation episodes per model")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "continual.md"))
    ap.add_argument("--title", default="", help="suffix of the section title (e.g. ', run 2')")
    ap.add_argument("--how", default=None, help="report-only: how the run was made (for the Command line)")
    ap.add_argument("--note", default="", help="what else ran on the machine meanwhile (goes in the report)")
    ap.add_argument("--no-recheck", action="store_true",
                    help="report-only: do not re-evaluate models cached without per-episode outcomes (no paired "
                         "test on their drops)")
    ap.add_argument("--ablation", action="store_true", help="gym-only replays of the loop (three variants)")
    ap.add_argument("--teacher", type=float, default=None, help="sim --teacher (default: the params file's, 0.5)")
    ap.add_argument("--seed", type=int, default=0, help="run seed (twin episodes, learner, teacher)")
    ap.add_argument("--stop-at", type=float, default=None, help="stop once the learner's monitor reads this success")
    ap.add_argument("--perception", action="store_true", help="sim --perception: the object's pose from the camera")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM:=VALUE", help="passed to sim")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=20)
    args = ap.parse_args()
    if args.ablation:
        ablation(args.rounds, args.per_round, str(ROOT / "docs" / "bench" / "continual_ablation.md"))
        return 0
    run_dir = Path(args.run).resolve()
    if args.report_only:
        how = args.how or f"./vla-rl-ros sim --duration {args.duration:.0f}"
        cmd = (f"`{how}`, then "
               f"`.venv/bin/python bench/bench_continual.py --run {os.path.relpath(run_dir, ROOT)} --report-only`")
    else:
        run_sim(run_dir, args.duration, args.domain_id, args.teacher, args.seed, args.stop_at, args.set,
                args.perception)
        extra = "".join([f" --teacher {args.teacher:g}" if args.teacher is not None else "",
                         " --perception" if args.perception else "",
                         f" --seed {args.seed}" if args.seed else "",
                         f" --stop-at {args.stop_at:g}" if args.stop_at is not None else "",
                         "".join(f" --set {x}" for x in args.set)])
        cmd = (f"`.venv/bin/python bench/bench_continual.py --duration {args.duration:.0f}{extra} "
               f"--run {os.path.relpath(run_dir, ROOT)}`")
    report(run_dir, args.episodes, cmd, args.out, args.title, args.note, recheck=not args.no_recheck)
    return 0


if __name__ == "__main__":
    sys.exit(main())
