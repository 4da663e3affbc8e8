"""The arm learning from a person's answers, live: `vla-rl-ros sim` with `algo: rlhf` and the labelling page.

Usage::

    .venv/bin/python bench/bench_prefs_live.py [--seed 0] [--duration 1200] [--labels 200] [--label-every 3]
                                               [--run runs/bench/prefs_live_0] [--out docs/bench/prefs_live.md]
    .venv/bin/python bench/bench_prefs_live.py --run runs/bench/prefs_live_0 --report-only --out ...

What a user would do, with a synthetic person in the user's chair:

1. a weak starting model for the twin's reach (behaviour cloning, ``nll``, on 5 scripted-expert episodes with
   action noise 0.6: the weak start of ``bench/bench_prefs.py``), exported to ONNX with the reach spec;
2. ``./vla-rl-ros sim --task reach --model WEAK --demos 0 --set learner_node.algo:=rlhf`` (the real ROS graph:
   twin, policy, recorder, learner), the learner on the reward model learnt from the run's labels (it waits
   for the first one), its candidates promoted by the twin gate on the task's *true* success;
3. the labelling page of ``vla-rl-ros label RUN`` (:class:`~vla_rl_ros.preferences.labelpage.LabelSession`
   behind Werkzeug on 127.0.0.1, the reward model refit in the background every ``--refit-every`` labels),
   and a person answering it over HTTP (``GET /api/query``, ``POST /api/label``, what the page's buttons post)
   one pair every ``--label-every`` seconds, up to ``--labels``. The person is B-Pref's oracle
   (:class:`~vla_rl_ros.preferences.oracle.Oracle`: the segment with the higher true task return), reading the
   two segments from the run's store as a person reads the plots;
4. afterwards, every promoted model and the starting one on the same 100 seeded twin episodes (deterministic,
   ONNX Runtime): the true success the arm's policy reached, against the labels given by then.

Writes ``docs/bench/prefs_live.md`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from collect import cpu_model, write_section  # noqa: E402

EVAL_SEED = 10_000


def make_weak_model(path: Path, seed: int, demos: int = 5, noise: float = 0.6, steps: int = 2000) -> dict:
    import torch

    from bench_prefs import weak_bc
    from vla_rl_ros.algos.export import export_onnx
    from vla_rl_ros.spec import Spec

    torch.set_num_threads(1)
    policy = weak_bc("reach", demos, noise, steps, seed, loss="nll")
    exp = export_onnx(policy, Spec(task="reach"), path, {
        "algorithm": "bc", "recipe": {"demos": demos, "noise": noise, "steps": steps, "loss": "nll", "seed": seed,
                                      "made_by": "bench/bench_prefs_live.py: a deliberately weak reach start"}})
    return {"path": str(path), "version": exp.version}


class Person(threading.Thread):
    """The labelling page on the run (started once the run has an episode long enough to show) and an oracle
    answering it over HTTP, one pair every ``every`` seconds, up to ``n`` labels."""

    def __init__(self, run: Path, n: int, every: float, segment: int, refit_every: int, refit_steps: int,
                 seed: int, stop: threading.Event):
        super().__init__(name="person", daemon=True)
        self.run_dir, self.n, self.every, self.segment = run, n, every, segment
        self.refit_every, self.refit_steps, self.seed, self.stop = refit_every, refit_steps, seed, stop
        self.log: list[dict] = []  # per label: wall time, label, the query's selection
        self.session = None
        self.error: str | None = None

    def _start_page(self):
        from vla_rl_ros.preferences.labelpage import LabelSession, make_server

        while not self.stop.is_set():
            if (self.run_dir / "run.json").exists():
                try:
                    self.session = LabelSession(self.run_dir, "oracle", segment_len=self.segment, seed=self.seed,
                                                refit_every=self.refit_every, refit_steps=self.refit_steps,
                                                reload_s=5.0)
                    break
                except (ValueError, FileNotFoundError, OSError):
                    pass  # no episode long enough yet, or the store not there yet
            time.sleep(2.0)
        if self.session is None:
            return None
        server = make_server(self.session, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def run(self) -> None:  # noqa: D401 - the thread body
        from vla_rl_ros.preferences.oracle import Oracle
        from vla_rl_ros.preferences.segments import EpisodeIndex
        from vla_rl_ros.preferences.store import Segment

        try:
            server = self._start_page()
            if server is None:
                return
            url = f"http://127.0.0.1:{server.server_port}"
            oracle = Oracle(seed=self.seed)
            index = EpisodeIndex.from_paths([self.run_dir])
            t_next = time.monotonic()
            while not self.stop.is_set() and len(self.log) < self.n:
                time.sleep(max(0.0, t_next - time.monotonic()))
                t_next = time.monotonic() + self.every
                try:
                    with urllib.request.urlopen(f"{url}/api/query", timeout=30) as r:
                        q = json.loads(r.read())
                except urllib.error.HTTPError:  # 404: every pair asked; wait for more episodes
                    continue
                left, right = Segment(**q["left"]), Segment(**q["right"])
                try:
                    dl, dr = index.data(left), index.data(right)
                except KeyError:  # an episode newer than this index: read the store again
                    index = EpisodeIndex.from_paths([self.run_dir])
                    dl, dr = index.data(left), index.data(right)
                label, _ = oracle.label(dl, dr)
                req = urllib.request.Request(f"{url}/api/label", data=json.dumps({"qid": q["qid"], "label": label})
                                             .encode(), headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
                self.log.append({"t": time.time(), "label": label, "selection": q["info"]["selection"]})
            self.session.wait_for_fit(600)
            server.shutdown()
        except Exception as e:  # noqa: BLE001 - reported; the sim run goes on
            self.error = f"{type(e).__name__}: {e}"


def report(run: Path, weak: dict, args, person_log: list[dict], fits: list[dict], person_error: str | None,
           command: str) -> str:
    from vla_rl_ros.algos.export import read_model_metadata
    from vla_rl_ros.buffer import Replay
    from vla_rl_ros.learner.evaluate import evaluate_onnx

    reg = [json.loads(x) for x in (run / "models" / "registry.jsonl").read_text().splitlines() if x]
    t0 = json.loads((run / "run.json").read_text())["created"]
    with Replay([run / "buffer.sqlite"]) as rp:
        eps = [e for e in rp.episodes() if not e.is_demo]
    promoted = [r for r in reg[1:] if r.get("promoted")]
    label_times = [p["t"] for p in person_log]
    cache_file = run / "offline_eval.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    rows = []
    for i, r in enumerate([reg[0]] + promoted):
        v = r["version"]
        key = f"{v}/{args.episodes}/{EVAL_SEED}"
        if key not in cache:
            res = evaluate_onnx(str(run / "models" / f"{v}.onnx"), "reach", episodes=args.episodes, seed=EVAL_SEED)
            cache[key] = {"success_rate": res.success_rate, "ci95": list(res.wilson_interval())}
            cache_file.write_text(json.dumps(cache, indent=1))
        _, lineage, _ = read_model_metadata(run / "models" / f"{v}.onnx")
        rm = (lineage.get("reward") or {}).get("reward_model")
        t = None if i == 0 else r["created"]
        gate = None if i == 0 else r["eval"]
        rows.append({"label": "start (weak BC)" if i == 0 else f"v{i}", "version": v,
                     "minutes": None if t is None else (t - t0) / 60.0,
                     "labels": None if t is None else sum(1 for x in label_times if x <= t),
                     "reward_model": rm, "gate": gate, **cache[key]})
    fmt = lambda x: "—" if x is None else x  # noqa: E731
    answer_counts = ", ".join(f"{k} {sum(1 for p in person_log if p['label'] == k)}" for k in ("left", "right", "equal"))
    lines = [
        "## Learning from a person's answers, live: `sim` with `algo: rlhf` and the labelling page "
        "(`bench/bench_prefs_live.py`)", "",
        f"Command: `{command}`", "",
        f"Machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, Python {platform.python_version()}; shared machine. "
        "The sim stack (4 ROS 2 processes: twin, policy, recorder, learner), the labelling page and its background "
        "fits share the 2 cores." + (f" {args.note}" if args.note else ""), "",
        f"Run `{run.relative_to(ROOT) if run.is_relative_to(ROOT) else run}`: `./vla-rl-ros sim --task reach --model "
        f"WEAK --demos 0 --set learner_node.algo:=rlhf --set learner_node.rlhf_beta:={args.beta:g}`, "
        f"{args.duration / 60:.0f} minutes at most (stopped once the learner's monitor read ≥ {100 * args.stop_at:.0f}%). "
        f"WEAK: behaviour cloning (`nll`) on 5 scripted-expert episodes with action noise 0.6 (offline: the first row). The person: the "
        f"labelling page on the run (`LabelSession`, served by Werkzeug on 127.0.0.1, reward model refit every "
        f"{args.refit_every} labels, {args.refit_steps} Adam steps), answered over HTTP by B-Pref's oracle (the "
        f"segment with the higher true task return; {args.segment}-tick segments), one pair every "
        f"{args.label_every:g} s, up to {args.labels}. The learner never sees the true reward: every batch's reward "
        f"is the newest reward model's, `r - 1`; the gate promotes on the twin's true success. "
        f"{len(eps)} live episodes, {sum(len(e) for e in eps):,} policy ticks, {len(reg) - 1} candidates, "
        f"{len(promoted)} promoted; {len(person_log)} labels "
        f"({answer_counts}; "
        f"{sum(1 for p in person_log if p['selection'] == 'disagreement')} chosen by ensemble disagreement), "
        f"{sum(1 for f in fits if 'version' in f)} reward models fit in the background"
        + (f" ({sum(1 for f in fits if 'error' in f)} fits failed: {fits[-1].get('error')})"
           if any('error' in f for f in fits) else "") + "."
        + (f" The person stopped on an error: {person_error}." if person_error else ""), "",
        f"Offline evaluation: the same {args.episodes} seeded twin episodes (seeds {EVAL_SEED}..), deterministic "
        "policy, true task success, ONNX Runtime.", "",
        "| model | promoted after (minutes) | labels given by then | reward model it learnt from | twin gate: "
        "candidate vs incumbent | offline success, 95% CI |",
        "| --- | ---: | ---: | --- | --- | ---: |"]
    for r in rows:
        g = r["gate"]
        gate = "—" if g is None else (f"{100 * g['candidate']['success_rate']:.0f}% vs "
                                      f"{100 * g['incumbent']['success_rate']:.0f}% on "
                                      f"{g.get('pairs', g['candidate'].get('episodes'))} pairs")
        lo, hi = r["ci95"]
        minutes = "—" if r["minutes"] is None else f"{r['minutes']:.1f}"
        rm = "—" if not r["reward_model"] else f"`{r['reward_model']}`"
        lines.append(f"| {r['label']} `{r['version']}` | {minutes} | {fmt(r['labels'])} | {rm} | {gate} | "
                     f"**{100 * r['success_rate']:.0f}%** ({100 * lo:.0f}–{100 * hi:.0f}%) |")
    path = " → ".join(f"{100 * r['success_rate']:.0f}%" for r in rows)
    lines += ["", f"Offline success went {path}, the learner trained on the learned reward only."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=1200.0, help="seconds of sim at most")
    ap.add_argument("--stop-at", type=float, default=0.9, help="stop once the learner's monitor reads this")
    ap.add_argument("--labels", type=int, default=200)
    ap.add_argument("--label-every", type=float, default=3.0, help="seconds between the person's answers")
    ap.add_argument("--segment", type=int, default=10, help="ticks per segment")
    ap.add_argument("--refit-every", type=int, default=20)
    ap.add_argument("--refit-steps", type=int, default=300)
    ap.add_argument("--beta", type=float, default=0.0, help="learner_node.rlhf_beta")
    ap.add_argument("--episodes", type=int, default=100, help="offline evaluation episodes per model")
    ap.add_argument("--domain-id", type=int, default=59)
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM:=VALUE", help="passed to sim")
    ap.add_argument("--run", default=str(ROOT / "runs" / "bench" / "prefs_live_0"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "prefs_live.md"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    run = Path(args.run).resolve()
    side = run.parent / f"{run.name}.bench.json"
    command = ".venv/bin/python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    if not args.report_only:
        from bench_continual import run_sim

        weak = make_weak_model(run.parent / f"{run.name}_weak_reach.onnx", args.seed)
        stop = threading.Event()
        person = Person(run, args.labels, args.label_every, args.segment, args.refit_every, args.refit_steps,
                        args.seed, stop)
        person.start()
        try:
            run_sim(run, args.duration, args.domain_id, teacher=0.0, seed=args.seed, stop_at=args.stop_at,
                    sets=[f"learner_node.algo:=rlhf", f"learner_node.rlhf_beta:={args.beta}", *args.set],
                    task="reach", extra=["--model", weak["path"], "--demos", "0"])
        finally:
            stop.set()
            person.join(timeout=700)
        fits = list(person.session.fits) if person.session is not None else []
        side.write_text(json.dumps({"weak": weak, "person_log": person.log, "fits": fits, "error": person.error,
                                    "command": command}, indent=1))
    saved = json.loads(side.read_text())
    text = report(run, saved["weak"], args, saved["person_log"], saved["fits"], saved["error"], saved["command"])
    print(text)
    write_section(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
