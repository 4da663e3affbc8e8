"""Loop latency: from a candidate's promotion to its first command on the arm, and missed ticks during swaps.

Graph (separate processes, own ROS_DOMAIN_ID, LOCALHOST discovery): the fast
joint-state feeder of ``bench_policy.py`` (1 kHz /joint_states + task poses) and
``policy_node`` at ``--rate`` Hz running the shipped ``models/reach_bc.onnx``.
This script plays the learner: it announces promoted models on
``/rl/policy_update`` exactly as ``learner_node`` does (JSON path + sha256 +
version, reliable/transient-local), alternating between two real exported
models (the shipped reach BC model and a second BC export), ``--swaps`` times.

Measured per swap:

* **promotion → first command**: the announcement's publish time to the
  ``cmd_stamp`` of the first ``/rl/step`` whose ``model:<version>`` label is the
  new model (the tick whose arm command the new model computed). This includes
  DDS delivery, reading + sha256 + validation (spec, shapes, a test inference,
  warm-up) in policy_node's loader thread, and the wait for the next tick.
* **missed ticks during the swap**: gaps in ``/rl/step`` tick numbers from 0.5 s
  before to 0.5 s after the swap (every tick publishes one step), and the
  node's own ``missed_ticks`` counter over the whole run.

    .venv/bin/python bench/bench_loop_latency.py            # writes docs/bench/loop_latency.md
    .venv/bin/python bench/bench_loop_latency.py --rate 500 --swaps 10 --no-write
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "test"))
sys.path.insert(0, os.path.join(REPO, "bench"))


def second_model(path: str) -> str:
    """A second real model: BC on a fresh set of reach demos (a different version and sha256)."""
    import torch

    from vla_rl_ros.algos.export import export_onnx
    from vla_rl_ros.learner.recipes import collect_dart_demos
    from vla_rl_ros.algos.bc import train_bc
    from vla_rl_ros.spec import Spec

    torch.set_num_threads(1)
    obs, act, _ = collect_dart_demos("reach", 20, 0.3, seed=500)
    pol = train_bc(obs, act, steps=300, seed=1)
    export_onnx(pol, Spec(task="reach"), path, {"algorithm": "bc-bench"})
    return path


def run(rate: float, swaps: int, work: str) -> dict:
    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray, String

    from bench_policy import start, teardown
    from conftest import reserve_domain_id
    from vla_rl_ros.algos.export import read_model_metadata, sha256_file
    from vla_rl_ros.spec import Spec
    from vla_rl_ros.stepmsg import decode

    spec = Spec(task="reach")
    models = [os.path.join(REPO, "models", "reach_bc.onnx"), second_model(os.path.join(work, "second.onnx"))]
    info = [(m, sha256_file(m), read_model_metadata(m)[2]) for m in models]
    domain, lock = reserve_domain_id()
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    params = os.path.join(work, "p.yaml")
    with open(params, "w") as f:
        yaml.safe_dump({"policy_node": {"ros__parameters": {
            "model_path": models[0], "control_rate_hz": float(rate), "task": "reach"}}}, f)
    log = open(os.path.join(work, "log.txt"), "wb")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("bench_learner", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    steps: list[tuple[float, object]] = []
    diags: list[dict] = []
    node.create_subscription(Float64MultiArray, "/rl/step",
                             lambda m: steps.append((time.time(), m)),
                             QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(DiagnosticArray, "/diagnostics",
                             lambda m: diags.extend({kv.key: kv.value for kv in st.values}
                                                    for st in m.status if st.name.startswith("policy_node")), 10)
    pub = node.create_publisher(String, "/rl/policy_update", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    procs = []

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.01)

    def decoded(lo: int = 0):
        out = []
        for t, m in steps[lo:]:
            r = decode([d.label for d in m.layout.dim], [d.size for d in m.layout.dim], m.data,
                       spec.obs_dim, spec.action_dim)
            out.append(r)
        return out

    latencies, gaps, late_before, late_after = [], [], [], []
    try:
        procs.append(start([os.path.join(REPO, "bench", "bench_policy.py"), "--feeder", "--feeder-rate", "1000"], env, log))
        procs.append(start(["-m", "vla_rl_ros.nodes.policy_node", "--ros-args", "--params-file", params], env, log))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(not r.hold for r in decoded(max(0, len(steps) - 50))):
            spin_for(0.2)
        spin_for(2.0)
        missed0 = int(diags[-1]["missed_ticks"]) if diags else 0
        for k in range(swaps):
            path, sha, version = info[(k + 1) % 2]
            n0 = len(steps)
            msg = String()
            msg.data = json.dumps({"path": path, "sha256": sha, "version": version})
            t_pub = time.time()
            pub.publish(msg)
            first = None
            end = time.monotonic() + 10
            while first is None and time.monotonic() < end:
                spin_for(0.02)
                for r in decoded(n0):
                    if r.model_version == version and not r.hold:
                        first = r
                        break
            if first is None:
                raise RuntimeError(f"swap {k}: {version} never commanded the arm; see {log.name}")
            latencies.append(first.cmd_stamp - t_pub)
            spin_for(1.0)
            window = decoded(max(0, n0 - int(rate * 1.5)))
            ticks = np.array([r.tick for r in window])
            gaps.append(int(np.sum(np.diff(ticks) - 1)))
            stamps = np.array([r.cmd_stamp for r in window])
            late = np.diff(stamps) > 1.5 / rate  # a period skipped: the tick came later than 1.5 periods
            mid = stamps[1:]
            late_before.append(int(np.sum(late & (mid >= t_pub - 1.0) & (mid < t_pub))))
            late_after.append(int(np.sum(late & (mid >= t_pub) & (mid < t_pub + 1.0))))
            spin_for(1.0)
        spin_for(1.5)
        missed1 = int(diags[-1]["missed_ticks"]) if diags else 0
        achieved = float(diags[-1]["achieved_rate_hz"]) if diags else float("nan")
    finally:
        teardown(procs, ex, node, ctx, log, lock)
    lat = np.array(latencies)
    return {"rate": rate, "swaps": swaps, "lat_ms": (lat * 1000).tolist(), "lat_p50_ms": float(np.median(lat) * 1000),
            "lat_max_ms": float(lat.max() * 1000), "step_gaps": gaps, "missed_ticks_run": missed1 - missed0,
            "late_1s_before": late_before, "late_1s_after": late_after,
            "achieved_hz": achieved}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--swaps", type=int, default=10)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    from bench_policy import machine

    work = tempfile.mkdtemp(prefix="bench_loop_")
    r = run(a.rate, a.swaps, work)
    mach = machine()
    cmd = "python bench/bench_loop_latency.py " + " ".join(sys.argv[1:])
    ok = r["lat_max_ms"] <= 1000 and sum(r["step_gaps"]) == 0 and sum(r["late_1s_after"]) <= sum(r["late_1s_before"])
    md = f"""## Loop latency: promotion → first command (`bench/bench_loop_latency.py`)

Command: `{cmd.strip()}`. Machine: {mach.get('cpu', '?')}, {mach.get('nproc', os.cpu_count())} cores (shared), load average {os.getloadavg()[0]:.1f}.
policy_node at {a.rate:.0f} Hz (EventsExecutor) fed 1 kHz joint states; {r['swaps']} promotions announced on
`/rl/policy_update` exactly as learner_node does, alternating two real exported BC models.

| measure | value |
|---|---|
| promotion → first command, median | **{r['lat_p50_ms']:.1f} ms** |
| promotion → first command, max of {r['swaps']} | {r['lat_max_ms']:.1f} ms |
| all swaps (ms) | {', '.join(f'{x:.0f}' for x in r['lat_ms'])} |
| lost `/rl/step` records around each swap (tick-number gaps) | {r['step_gaps']} |
| late ticks (> 1.5 periods apart) in the 1 s **after** each swap | {r['late_1s_after']} (total {sum(r['late_1s_after'])}) |
| late ticks in the 1 s **before** each swap (baseline, same load) | {r['late_1s_before']} (total {sum(r['late_1s_before'])}) |
| policy_node `missed_ticks` over the whole run | {r['missed_ticks_run']} |
| achieved control rate (last diagnostics window) | {r['achieved_hz']:.1f} Hz |

Target ≤ 1 s, with no missed control ticks caused by the swap (no more late ticks after a swap than in the
second before it, on the same shared machine): **{'met' if ok else 'NOT met'}**.
The model is read, hashed, validated (spec, shapes, a test inference + warm-up) in policy_node's loader
thread, off the control path; the control loop picks the new model up with one reference read per tick.
"""
    print(json.dumps(r))
    if a.no_write:
        print(md)
    else:
        from collect import write_section

        write_section(md, os.path.join(REPO, "docs", "bench", "loop_latency.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
