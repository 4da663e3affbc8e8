"""The soak: the sim stack for hours. Does anything grow, leak or fall behind?

Usage::

    .venv/bin/python bench/bench_soak.py --duration 7200 [--teacher 0] [--seed 3]   # runs the sim stack itself
    .venv/bin/python bench/bench_soak.py --attach runs/bench/noteacher_v2_4       # samples a run in progress

Runs the README's main command (``./vla-rl-ros sim``, the real ROS graph: twin, policy, recorder, learner, and
the teacher unless ``--teacher 0``) the way ``bench/bench_continual.py`` does, or attaches to one that
``bench_continual.py`` started (its console log ``<run>.console.log`` names each node's pid, restarts included).
Every ``--interval`` seconds it samples, from outside the stack:

* the resident memory (``VmRSS`` in ``/proc``) and CPU time of each node process, and of its child processes
  (the learner's monitor and gate workers);
* the size on disk of the run's store (every ``*.sqlite*`` file of the run folder: the store, its WAL, any
  segments) and the episodes the sim has reported;
* ``policy_node``'s own control-loop counters from ``/diagnostics`` (a real rclpy subscriber on the run's
  domain): ticks, missed ticks (timer periods that never ran), achieved rate, obs→command latency p99.

Writes ``runs/.../soak.jsonl`` (every sample), ``docs/bench/soak.md`` (``--out``) and ``docs/img/soak.png``:
per process the RSS slope (MB/h, least squares over the samples after ``--warmup`` minutes), store growth per
hour, episodes per hour, missed ticks per hour (and as a share of the ticks the loop should have run).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collect import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NODES = ("twin_node", "policy_node", "recorder_node", "learner_node", "teacher_node")
_STARTED = re.compile(r"\[sim\] started (\w+) \(pid (\d+)\)")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ------------------------------------------------------------------ /proc
def node_pids(console_log: Path) -> dict[str, int]:
    """The latest pid of each node the sim started (a restarted node's new pid replaces the old one)."""
    pids: dict[str, int] = {}
    try:
        for m in _STARTED.finditer(console_log.read_text(errors="replace")):
            pids[m.group(1)] = int(m.group(2))
    except FileNotFoundError:
        pass
    return pids


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _proc(pid: int) -> tuple[float, float] | None:
    """(RSS in MB, CPU seconds) of one process, or None when it is gone."""
    try:
        statm = Path(f"/proc/{pid}/statm").read_text().split()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(statm[1]) * _PAGE / 2**20, (int(stat[11]) + int(stat[12])) / _HZ


def process_sample(pids: dict[str, int]) -> dict[str, dict]:
    """Per node: its own RSS and CPU seconds, and those of its descendants (summed)."""
    kids = _children()
    out = {}
    for name, pid in pids.items():
        own = _proc(pid)
        if own is None:
            continue
        desc, stack = [], list(kids.get(pid, []))
        while stack:
            c = stack.pop()
            desc.append(c)
            stack.extend(kids.get(c, []))
        sub = [s for s in (_proc(c) for c in desc) if s is not None]
        out[name] = {"pid": pid, "rss_mb": own[0], "cpu_s": own[1], "children": len(sub),
                     "children_rss_mb": sum(s[0] for s in sub), "children_cpu_s": sum(s[1] for s in sub)}
    return out


def store_mb(run_dir: Path) -> float:
    return sum(p.stat().st_size for p in run_dir.rglob("*.sqlite*") if p.is_file()) / 2**20


def episodes_reported(console_log: Path) -> int:
    try:
        return sum(1 for line in console_log.read_text(errors="replace").splitlines() if line.startswith("[episode"))
    except FileNotFoundError:
        return 0


# ------------------------------------------------------------------ /diagnostics
class PolicyDiagnostics:
    """Subscribes to /diagnostics on the run's domain; keeps policy_node's latest control-loop counters."""

    def __init__(self, domain_id: int):
        os.environ["ROS_DOMAIN_ID"] = str(domain_id)
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        self.rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("soak_probe", context=self.ctx)
        self.latest: dict[str, str] | None = None
        self.lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context was shut down
            pass

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if "missed_ticks" in values and "ticks" in values:
                with self.lock:
                    self.latest = {**values, "_level": str(int.from_bytes(st.level, "little")
                                                           if isinstance(st.level, bytes) else int(st.level)),
                                   "_message": st.message}

    def read(self) -> dict[str, str] | None:
        with self.lock:
            return dict(self.latest) if self.latest else None

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


class Counter:
    """A cumulative counter read across restarts of the process that keeps it (a drop means it restarted)."""

    def __init__(self):
        self.base, self.last = 0, None

    def update(self, v: int) -> int:
        if self.last is not None and v < self.last:
            self.base += self.last
        self.last = v
        return self.base + v


# ------------------------------------------------------------------ the run
def sample_loop(run_dir: Path, console_log: Path, domain_id: int, duration: float, interval: float,
                proc: subprocess.Popen | None, samples_path: Path) -> list[dict]:
    from tqdm import tqdm

    diag = PolicyDiagnostics(domain_id)
    ticks, missed = Counter(), Counter()
    samples: list[dict] = []
    t0 = time.time()
    started = _run_started(console_log) or t0
    bar = tqdm(total=int(duration), desc="soak", unit="s", initial=int(min(duration, t0 - started)))
    try:
        with open(samples_path, "a") as f:
            while True:
                now = time.time()
                d = diag.read()
                s = {"t": now - started, "wall": now, "processes": process_sample(node_pids(console_log)),
                     "store_mb": store_mb(run_dir), "episodes": episodes_reported(console_log)}
                if d is not None:
                    s["policy"] = {"ticks": ticks.update(int(d["ticks"])),
                                   "missed_ticks": missed.update(int(d["missed_ticks"])),
                                   "achieved_rate_hz": float(d["achieved_rate_hz"]),
                                   "control_rate_hz": float(d["control_rate_hz"]),
                                   "latency_p99_ms": float(d["latency_obs_to_cmd_p99_ms"]),
                                   "level": int(d["_level"]), "message": d["_message"]}
                samples.append(s)
                f.write(json.dumps(s) + "\n")
                f.flush()
                bar.n = int(min(duration, s["t"]))
                bar.set_postfix(episodes=s["episodes"], store=f"{s['store_mb']:.0f}MB")
                bar.refresh()
                done = (proc.poll() is not None) if proc is not None else (
                    not s["processes"] or "[sim] stopping" in _tail(console_log))
                if done or s["t"] >= duration + 120:
                    break
                time.sleep(interval)
    finally:
        bar.close()
        diag.close()
    return samples


def _tail(p: Path, n: int = 4096) -> str:
    try:
        with open(p, "rb") as f:
            f.seek(max(0, p.stat().st_size - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _run_started(console_log: Path) -> float | None:
    """Wall-clock start of the first node the sim started (``/proc/<pid>/stat`` starttime), or None."""
    try:
        m = _STARTED.search(console_log.read_text(errors="replace"))
        if m is None:
            return None
        start_ticks = int(Path(f"/proc/{m.group(2)}/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(x.split()[1]) for x in Path("/proc/stat").read_text().splitlines() if x.startswith("btime"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return btime + start_ticks / _HZ


def slope_per_hour(t_s: np.ndarray, y: np.ndarray) -> float:
    if len(t_s) < 3 or np.ptp(t_s) <= 0:
        return float("nan")
    return float(np.polyfit(t_s / 3600.0, y, 1)[0])


def summarise(samples: list[dict], warmup_min: float) -> dict:
    t = np.array([s["t"] for s in samples])
    late = t >= warmup_min * 60
    rows = []
    for name in NODES:
        pts = [(s["t"], s["processes"][name]) for s in samples if name in s["processes"]]
        if not pts:
            continue
        tt = np.array([p[0] for p in pts])
        rss = np.array([p[1]["rss_mb"] for p in pts])
        kid = np.array([p[1]["rss_mb"] + p[1]["children_rss_mb"] for p in pts])
        w = tt >= warmup_min * 60
        same = [p for p in pts if p[1]["pid"] == pts[-1][1]["pid"]]  # CPU seconds are per process
        cpu = (same[-1][1]["cpu_s"] - same[0][1]["cpu_s"]) / (same[-1][0] - same[0][0]) if len(same) > 1 \
            else float("nan")
        rows.append({"node": name, "pids": len({p[1]["pid"] for p in pts}),
                     "rss_first": float(rss[w][0]) if w.any() else float("nan"), "rss_last": float(rss[-1]),
                     "rss_max": float(rss.max()), "slope": slope_per_hour(tt[w], rss[w]),
                     "slope_children": slope_per_hour(tt[w], kid[w]), "children_max": float((kid - rss).max()),
                     "cpu_share": cpu})
    pol = [(s["t"], s["policy"]) for s in samples if "policy" in s]
    hours = (t[-1] - t[0]) / 3600.0 if len(t) > 1 else float("nan")
    out = {"rows": rows, "hours_sampled": hours, "t_first": float(t[0]), "t_last": float(t[-1]),
           "store_mb": samples[-1]["store_mb"], "store_slope": slope_per_hour(t[late], np.array(
               [s["store_mb"] for s in samples])[late]),
           "episodes": samples[-1]["episodes"],
           "episodes_per_hour": (samples[-1]["episodes"] - samples[0]["episodes"]) / hours if hours else float("nan")}
    if len(pol) > 1:
        (ta, a), (tb, b) = pol[0], pol[-1]
        h = (tb - ta) / 3600.0
        out.update(ticks=b["ticks"] - a["ticks"], missed=b["missed_ticks"] - a["missed_ticks"], policy_hours=h,
                   control_hz=b["control_rate_hz"], ticks_total=b["ticks"], missed_total=b["missed_ticks"],
                   lat_p99=float(np.median([p[1]["latency_p99_ms"] for p in pol])),
                   rate_med=float(np.median([p[1]["achieved_rate_hz"] for p in pol])))
        out["missed_per_hour"] = out["missed"] / h
        out["missed_share"] = out["missed"] / max(1.0, h * 3600 * out["control_hz"])
    return out


def plot(samples: list[dict], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for name in NODES:
        pts = [(s["t"] / 3600, s["processes"][name]["rss_mb"]) for s in samples if name in s["processes"]]
        if pts:
            ax[0].plot(*zip(*pts), label=name)
    ax[0].set(xlabel="hours", ylabel="RSS (MB)", title="resident memory per node")
    ax[0].legend(fontsize=8)
    h = [s["t"] / 3600 for s in samples]
    ax[1].plot(h, [s["store_mb"] for s in samples], color="C0")
    ax[1].set(xlabel="hours", ylabel="store on disk (MB)", title="store and episodes")
    a2 = ax[1].twinx()
    a2.plot(h, [s["episodes"] for s in samples], color="C1")
    a2.set_ylabel("episodes", color="C1")
    pol = [(s["t"] / 3600, s["policy"]["missed_ticks"]) for s in samples if "policy" in s]
    if pol:
        ax[2].plot(*zip(*pol), color="C3")
    ax[2].set(xlabel="hours", ylabel="missed ticks (cumulative)", title="policy_node: missed control ticks")
    fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def report(samples: list[dict], s: dict, cmd: str, out: str, run_dir: Path, warmup_min: float,
           machine: str, title: str = "") -> str:
    def f(x, fmt="{:.1f}"):
        return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)

    png = ROOT / "docs" / "img" / (Path(out).stem + ".png")
    plot(samples, png, f"soak: {run_dir.name}")
    lines = [
        f"## The soak: the sim stack for hours{title} (`bench/bench_soak.py`)", "",
        f"Command: {cmd}", "", machine, "",
        f"Run `{os.path.relpath(run_dir, ROOT)}`: sampled from {s['t_first'] / 60:.1f} to {s['t_last'] / 60:.1f} "
        f"min of the run ({s['hours_sampled']:.2f} h, {len(samples)} samples). RSS slopes are least squares over "
        f"the samples after minute {warmup_min:g}; a node restarted by the supervisor shows more than one pid.", "",
        "| node | pids | RSS after warm-up (MB) | RSS at end (MB) | RSS max (MB) | RSS slope (MB/h) | "
        "with child processes: slope (MB/h), children's max (MB) | CPU (cores; the process itself) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in s["rows"]:
        lines.append(f"| {r['node']} | {r['pids']} | {f(r['rss_first'])} | {f(r['rss_last'])} | {f(r['rss_max'])} | "
                     f"{f(r['slope'], '{:+.2f}')} | {f(r['slope_children'], '{:+.2f}')}, "
                     f"{f(r['children_max'])} | {f(r['cpu_share'], '{:.2f}')} |")
    lines += ["", "| measure | value |", "| --- | --- |",
              f"| store on disk at the end | {s['store_mb']:.1f} MB |",
              f"| store growth (after warm-up) | {f(s['store_slope'])} MB/h |",
              f"| episodes (sim's count), per hour | {s['episodes']}, {f(s['episodes_per_hour'], '{:.0f}')} |"]
    if "missed" in s:
        lines += [f"| policy ticks while sampled ({s['control_hz']:g} Hz loop) | {s['ticks']:,} "
                  f"(achieved rate, median of samples: {s['rate_med']:.1f} Hz) |",
                  f"| missed ticks while sampled, per hour | {s['missed']:,}, {s['missed_per_hour']:.0f}/h "
                  f"({100 * s['missed_share']:.3f}% of the loop's periods) |",
                  f"| missed ticks since the policy node started (all of the run) | {s['missed_total']:,} of "
                  f"{s['ticks_total']:,} ticks |",
                  f"| obs→command latency p99 (median of the node's windows) | {s['lat_p99']:.2f} ms |"]
    lines += ["", f"![RSS, store, missed ticks over the soak](../img/{png.name})", ""]
    return write_section("\n".join(lines) + "\n", out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "runs" / "bench" / "soak"), help="run folder (launch mode)")
    ap.add_argument("--attach", default=None, help="sample this run (started by bench_continual.py) instead")
    ap.add_argument("--duration", type=float, default=7200.0, help="seconds of the sim (launch) / of sampling")
    ap.add_argument("--domain-id", type=int, default=None, help="the run's ROS_DOMAIN_ID (default: read/57)")
    ap.add_argument("--teacher", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=10.0, help="minutes left out of the slopes")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "soak.md"))
    ap.add_argument("--report-only", action="store_true", help="report from the run's soak.jsonl")
    ap.add_argument("--note", default="", help="what else ran on the machine meanwhile (goes in the report)")
    ap.add_argument("--title", default="", help="suffix of the section title (e.g. ', replay_capacity 3000')")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM:=VALUE",
                    help="passed to sim (launch mode), e.g. learner_node.replay_capacity:=5000")
    args = ap.parse_args()
    from bench_continual import hold_domain, sim_command
    from bench_learner import machine_info, machine_line

    info = machine_info()
    run_dir = Path(args.attach or args.run).resolve()
    console = run_dir.parent / f"{run_dir.name}.console.log"
    samples_path = run_dir.parent / f"{run_dir.name}.soak.jsonl"
    proc = None
    if args.report_only:
        samples = [json.loads(x) for x in samples_path.read_text().splitlines() if x.strip()]
    else:
        if args.attach:
            m = re.search(r"--domain-id (\d+)", console.read_text(errors="replace")) if console.exists() else None
            domain = args.domain_id if args.domain_id is not None else (int(m.group(1)) if m else 57)
        else:
            import shutil

            domain = args.domain_id if args.domain_id is not None else 57
            lock = hold_domain(domain)  # noqa: F841 - held until the run is over
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            samples_path.unlink(missing_ok=True)
            cmd = sim_command(run_dir, args.duration, domain, args.teacher, args.seed, args.set)
            log = open(console, "w")
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        samples = sample_loop(run_dir, console, domain, args.duration, args.interval, proc, samples_path)
        if proc is not None:
            proc.wait(timeout=300)
    how = (f"`.venv/bin/python bench/bench_soak.py --attach {os.path.relpath(run_dir, ROOT)}` beside the run "
           f"(started by `bench/bench_continual.py`, see its section)" if args.attach else
           f"`.venv/bin/python bench/bench_soak.py --duration {args.duration:.0f}"
           f"{f' --teacher {args.teacher:g}' if args.teacher is not None else ''}"
           f"{f' --seed {args.seed}' if args.seed else ''}{''.join(f' --set {x}' for x in args.set)} "
           f"--run {os.path.relpath(run_dir, ROOT)}`")
    s = summarise(samples, args.warmup)
    machine = (machine_line(info, load=False) if args.report_only else machine_line(info, os.getloadavg()[0])) + \
        (f" {args.note}" if args.note else "")
    report(samples, s, how, args.out, run_dir, args.warmup, machine, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
