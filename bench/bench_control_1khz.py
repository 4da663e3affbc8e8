"""policy_node at 1 kHz beside a learner: timer and event-driven ticks, with and without SCHED_FIFO.

Issue 11, item 5. The targets, with SCHED_FIFO and the learner saturating the other core: at most 0.1% missed
ticks; tick compute p50 at most 100 µs; obs→command p99 at most 1 ms in the event-driven mode. The same
figures are measured without SCHED_FIFO.

Each cell (tick mode × scheduling) starts, in separate processes with their own ROS_DOMAIN_ID (LOCALHOST
discovery), twin-free:

* a **joint-state feeder** (this script with ``--feeder``): /joint_states at ``--rate`` Hz (sensor-data QoS,
  stamped at publish time: the stamp is the "obs" time) and the task poses at 10 Hz. It plays the arm's
  ros2_control: in the SCHED_FIFO cells it runs SCHED_FIFO one priority above policy_node (as
  ``controller_manager`` at 50 above policy_node's 40 in config/robot.yaml). It counts the periods its own
  timer skipped and prints them when stopped: in event mode those are ticks the node could not make;
* **the learner** (this script with ``--hog``): a torch training loop (a 2x256 MLP on random batches of 256,
  Adam, one thread), pinned to ``--hog-cpu``, saturating that core;
* ``policy_node`` at ``--rate`` Hz running a 2x256 MLP policy (``test/onnx_models.py`` "mlp": the inference
  cost of a SAC actor), EventsExecutor, ``tick_mode`` timer or event, its control thread pinned to
  ``--node-cpu`` (``cpu_affinity``) and, in the SCHED_FIFO cells, ``realtime_priority`` ``--realtime-priority``.

The figures are policy_node's own /diagnostics (1 s windows; the first ``--warmup`` acting windows are
discarded): missed ticks (timer mode: periods the timer skipped, from its scheduled call times; event mode:
joint states no command was computed for, from the gaps in their stamps: policy_node's ``_safe_tick``
comment), achieved rate, tick compute (tick start → all three messages published) and obs→command latency
(command publish time − joint-state stamp: DDS transport, and in timer mode the wait for the next tick).
Percentiles are per 1 s window: the table gives the median window and the worst. The floor is bare ONNX
Runtime inference of the same model in this process, same run, and ``tick_parts`` times the tick's parts
(ROS-free, in the tick's order) in this process, to show where a tick's time goes.

    .venv/bin/python bench/bench_control_1khz.py                        # 4 cells x 30 s, writes docs/bench/control_1khz.md
    .venv/bin/python bench/bench_control_1khz.py --seconds 5 --no-fifo --no-write   # a quick check
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "test"))
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.path.insert(0, REPO)

TARGET_MISSED_PCT = 0.1
TARGET_COMPUTE_P50_US = 100.0
TARGET_LAT_P99_MS = 1.0


# ----------------------------------------------------------------------------- helper processes
from bench_policy import feeder  # noqa: E402 - the one joint-state feeder of the policy benches


def hog(cpu: int) -> None:
    """The learner's compute: a small MLP trained on random data, one thread, on ``cpu``, forever."""
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 4))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x, y = torch.randn(256, 30), torch.randn(256, 4)
    try:
        while True:
            loss = ((net(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    except KeyboardInterrupt:
        pass


# ----------------------------------------------------------------------------- the tick's parts
def tick_parts(model: str, n: int = 5000) -> dict[str, float]:
    """Median µs of each part of policy_node's tick, ROS-free, in the tick's order (so each part meets the caches
    the previous one left, as in the node), in this process: hand FK + observation (``runtime.observe``), watchdog
    check, ONNX inference, action clip, action mapping + safety filter (``Controller.step``), the /rl/step record's fill.
    The node adds its three publishes and the Python between the parts; the bench's "tick compute" is all of it."""
    from vla_rl_ros.arm import Arm
    from vla_rl_ros.kinematics import Kinematics
    from vla_rl_ros.runtime.control import Controller, SafetyLimits
    from vla_rl_ros.runtime.observe import Observer
    from vla_rl_ros.runtime.onnx_policy import load_validated
    from vla_rl_ros.runtime.watchdog import InputChannel, Watchdog
    from vla_rl_ros.spec import Spec

    spec = Spec()
    arm = Arm(spec)
    kin = Kinematics(arm.urdf, spec.base_link, spec.ee_link, spec.arm_joints)
    ctl = Controller(spec, kin, SafetyLimits(), ik_iters=3, home=arm.home)
    ctl.warm_up()
    observe = Observer(spec, kin)
    pol = load_validated(model, None, spec)
    chans = [InputChannel(c, 1e9) for c in ("joint_states", "object_pose", "goal_pose")]
    wd = Watchdog(chans)
    for c in chans:
        c.accept(time.monotonic())
    q = ctl.mapper.rest.copy()
    obj, goal = np.array([0.5, 0.0, 0.025]), np.array([0.5, 0.15, 0.3])
    obs = np.zeros(spec.obs_dim, dtype=np.float32)
    action = np.zeros(spec.action_dim)
    step = np.zeros(spec.obs_dim + spec.action_dim + 6)
    names = ["FK + observation", "watchdog", "ONNX inference", "action clip", "map + safety filter",
             "step record fill"]
    t = np.empty((n, len(names)))
    pc = time.perf_counter
    for i in range(n + 500):
        t1 = pc()
        ee = observe(q, 0.08, obj, goal, obs)
        t2 = pc()
        wd.check(time.monotonic())
        t3 = pc()
        y = pol.act(obs)
        t4 = pc()
        action[:] = y
        np.minimum(np.maximum(action, -1.0, out=action), 1.0, out=action)
        t5 = pc()
        cmd = ctl.step(action, q, 0.08, ee)
        t6 = pc()
        step[: spec.obs_dim] = obs
        step[spec.obs_dim: spec.obs_dim + spec.action_dim] = action
        step[-6:-1] = (i, 1.0, 2.0, 0.0, 0.0)
        t7 = pc()
        if i >= 500:
            t[i - 500] = (t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6)
        if cmd.hold:
            ctl.reset()
    med = np.median(t, axis=0) * 1e6
    out = {k: float(v) for k, v in zip(names, med)}
    out["sum of parts"] = float(med.sum())
    return out


# ----------------------------------------------------------------------------- one cell
def measure_cell(script: str, name: str, work: str, node_params: dict, *, rate: float, rt: int, hog_cpu: int,
                 node_cpu: int, seconds: int, warmup: int, snapshot, startup_s: float = 90.0):
    """One cell of a policy_node bench, in processes of their own on a reserved ROS_DOMAIN_ID (LOCALHOST): the
    learner's stand-in (``script --hog``) pinned to ``hog_cpu``, the joint-state feeder (``script --feeder``, one
    SCHED_FIFO priority above ``rt``), and policy_node with ``node_params`` (its control thread on ``node_cpu``).
    It runs until ``warmup + seconds + 1`` acting /diagnostics windows; ``snapshot(pid)`` (policy_node's pid) is
    taken once ``warmup + 1`` have passed and again at the end. Returns (the windows, first snapshot, last one)."""
    import yaml

    from bench_policy import diagnostics_probe, start, teardown
    from conftest import reserve_domain_id

    domain, lock = reserve_domain_id()
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    params = os.path.join(work, f"p_{name}.yaml")
    node_params = {"model_path": "", "control_rate_hz": float(rate), "joint_state_timeout_s": 0.1,
                   "executor": "events", "realtime_priority": rt, **node_params}
    if node_cpu >= 0:
        node_params["cpu_affinity"] = [node_cpu]
    with open(params, "w") as f:
        yaml.safe_dump({"policy_node": {"ros__parameters": node_params}}, f)
    logs = {k: open(os.path.join(work, f"{k}_{name}.txt"), "wb") for k in ("node", "feeder", "hog")}
    ctx, node, ex, diags = diagnostics_probe(domain)
    procs = []
    s0 = s1 = None
    try:
        procs.append(start([script, "--hog", "--hog-cpu", str(hog_cpu)], env, logs["hog"]))
        procs.append(start([script, "--feeder", "--rate", str(rate), "--feeder-rt", str(rt + 1 if rt else 0)], env,
                           logs["feeder"]))
        pn = start(["-m", "vla_rl_ros.nodes.policy_node", "--ros-args", "--params-file", params], env, logs["node"])
        procs.append(pn)
        deadline = time.monotonic() + startup_s + seconds + warmup
        while time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.2)
            n_ok = sum(d.get("watchdog") == "ok" for d in diags)
            if s0 is None and n_ok >= warmup + 1:
                s0 = snapshot(pn.pid)
            if n_ok >= warmup + seconds + 1:
                break
        s1 = snapshot(pn.pid)
    finally:  # SIGINT, newest first: the feeder prints its count as it stops
        teardown(procs, ex, node, ctx, logs["hog"], lock)
        for f in logs.values():
            f.close()
    return diags, s0, s1


def run_cell(mode: str, rt: int, rate: float, model: str, seconds: int, warmup: int, node_cpu: int, hog_cpu: int,
             work: str) -> dict:
    name = f"{mode}_{'fifo' if rt else 'normal'}"
    diags, cpu_t0, cpu_t1 = measure_cell(
        os.path.abspath(__file__), name, work, {"model_path": model, "tick_mode": mode}, rate=rate, rt=rt,
        hog_cpu=hog_cpu, node_cpu=node_cpu, seconds=seconds, warmup=warmup,
        snapshot=lambda pid: (time.monotonic(), cpu_times(node_cpu)))
    load_end = os.getloadavg()[0]
    acting = [d for d in diags if d.get("watchdog") == "ok"][warmup:]
    if len(acting) < 2:
        raise RuntimeError(f"policy_node never acted in cell {name}; see {work}/node_{name}.txt")
    node_log = open(os.path.join(work, f"node_{name}.txt"), errors="replace").read()
    feeder_log = open(os.path.join(work, f"feeder_{name}.txt"), errors="replace").read()
    fifo = "off"
    if rt:
        fifo = "on" if "scheduled SCHED_FIFO" in node_log else "refused"
    m = re.findall(r"feeder: published (\d+) skipped (\d+)", feeder_log)
    feeder_pub, feeder_skip = (int(m[-1][0]), int(m[-1][1])) if m else (-1, -1)

    def col(k):
        return np.array([float(d[k]) for d in acting])

    missed, ticks = col("missed_ticks"), col("ticks")
    n_missed, n_ticks = int(missed[-1] - missed[0]), int(ticks[-1] - ticks[0])
    return {
        "mode": mode, "rt": rt, "fifo": fifo, "rate": rate, "windows": len(acting) - 1,
        "achieved_hz": float(np.median(col("achieved_rate_hz"))),
        "missed": n_missed, "ticks": n_ticks, "missed_pct": 100.0 * n_missed / max(1, n_missed + n_ticks),
        "compute_p50_us": float(np.median(col("tick_compute_p50_us"))),
        "compute_p99_us": float(np.median(col("tick_compute_p99_us"))),
        "compute_p50_us_worst": float(np.max(col("tick_compute_p50_us"))),
        "lat_p50_ms": float(np.median(col("latency_obs_to_cmd_p50_ms"))),
        "lat_p99_ms": float(np.median(col("latency_obs_to_cmd_p99_ms"))),
        "lat_p99_ms_worst": float(np.max(col("latency_obs_to_cmd_p99_ms"))),
        "lat_max_ms": float(np.max(col("latency_obs_to_cmd_max_ms"))),
        "late_p99_ms": float(np.median(col("tick_lateness_p99_ms"))),
        "outages": int(col("input_outages")[-1]) if "input_outages" in acting[-1] else 0,
        "feeder_published": feeder_pub, "feeder_skipped": feeder_skip, "load_end": load_end,
        # what else had the control thread's CPU over the measured windows (ms per s, from /proc/stat)
        **({f"cpu_{k}_ms_per_s": (cpu_t1[1][k] - cpu_t0[1][k]) / (cpu_t1[0] - cpu_t0[0])
            for k in ("steal", "irq", "softirq")} if cpu_t0 is not None and cpu_t1[0] > cpu_t0[0] else {}),
    }


def cpu_times(cpu: int) -> dict[str, float]:
    """Milliseconds one CPU (all CPUs for -1) spent stolen by the hypervisor, in hard and in soft interrupts
    (/proc/stat; USER_HZ ticks): time a SCHED_FIFO thread on it cannot run."""
    key = "cpu" if cpu < 0 else f"cpu{cpu}"
    tick_ms = 1000.0 / os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == key:
                v = [float(x) for x in parts[1:]]
                return {"irq": v[5] * tick_ms, "softirq": v[6] * tick_ms, "steal": v[7] * tick_ms}
    return {"irq": 0.0, "softirq": 0.0, "steal": 0.0}


def helper_role(a) -> bool:
    """In a helper process of a policy_node bench (``--feeder``, ``--hog``), play that role until stopped and
    return True; else (the bench itself) return False. ``--hog-cpu`` -1 becomes the last CPU."""
    if a.hog_cpu < 0:
        a.hog_cpu = max(os.sched_getaffinity(0))
    if a.feeder:
        feeder(a.rate, a.feeder_rt)
        return True
    if a.hog:
        hog(a.hog_cpu)
        return True
    return False


# ----------------------------------------------------------------------------- report
def verdicts(r: dict) -> dict[str, bool | None]:
    return {"missed": r["missed_pct"] <= TARGET_MISSED_PCT,
            "compute": r["compute_p50_us"] <= TARGET_COMPUTE_P50_US,
            "latency": r["lat_p99_ms"] <= TARGET_LAT_P99_MS if r["mode"] == "event" else None}


def sched_label(r: dict) -> str:
    if not r["rt"]:
        return "normal"
    return f"SCHED_FIFO {r['rt']}" + (" (refused: normal)" if r["fifo"] == "refused" else "")


def markdown(res: list[dict], floor: dict, parts: dict, info: dict, load_end: float, cmd: str, a) -> str:
    from bench_learner import machine_line

    def mark(v):
        return "—" if v is None else ("met" if v else "**missed**")

    lines = [
        "## policy_node at 1 kHz: timer and event-driven ticks beside a learner (`bench/bench_control_1khz.py`)",
        "",
        f"Command: {cmd}. {machine_line(info, load_end)}",
        "",
        f"Each cell: a joint-state feeder at {a.rate:g} Hz (stamped at publish; SCHED_FIFO one above policy_node "
        f"in the SCHED_FIFO cells, as the arm's controller_manager), a learner (torch 2x256 MLP training, one "
        f"thread) pinned to CPU {a.hog_cpu}, and policy_node at {a.rate:g} Hz (2x256 MLP policy, EventsExecutor, "
        f"control thread pinned to CPU {a.node_cpu}); {a.seconds} one-second /diagnostics windows after "
        f"{a.warmup} of warm-up. Percentiles: the median 1 s window (worst window in brackets). Missed ticks: "
        "timer mode, periods the timer skipped; event mode, joint states no command was computed for (gaps in "
        "their stamps). The feeder's own skipped periods are listed: in event mode they are states never sent.",
        "",
        f"Floor, bare ONNX Runtime inference of the same model in the bench process: p50 {floor['p50_us']:.1f} µs, "
        f"p99 {floor['p99_us']:.1f} µs.",
        "",
        "| tick mode | scheduling | achieved Hz | missed ticks | tick compute p50 µs | p99 µs | obs→cmd p50 ms "
        "| obs→cmd p99 ms | obs→cmd max ms | feeder skipped | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res:
        lines.append(
            f"| {r['mode']} | {sched_label(r)} | {r['achieved_hz']:.1f} "
            f"| {r['missed']} of {r['missed'] + r['ticks']} ({r['missed_pct']:.2f}%) "
            f"| {r['compute_p50_us']:.0f} ({r['compute_p50_us_worst']:.0f}) | {r['compute_p99_us']:.0f} "
            f"| {r['lat_p50_ms']:.3f} | {r['lat_p99_ms']:.3f} ({r['lat_p99_ms_worst']:.3f}) | {r['lat_max_ms']:.2f} "
            f"| {r['feeder_skipped']} of {r['feeder_published'] + r['feeder_skipped']} | {r['load_end']:.2f} |")
    lines += [
        "",
        f"Targets: missed ticks ≤ {TARGET_MISSED_PCT:g}%, tick compute p50 ≤ {TARGET_COMPUTE_P50_US:g} µs, "
        f"obs→command p99 ≤ {TARGET_LAT_P99_MS:g} ms (event mode). They are set for the SCHED_FIFO cells; the "
        "normal-scheduling cells are measured against the same figures.",
        "",
        "| tick mode | scheduling | missed ≤ 0.1% | compute p50 ≤ 100 µs | obs→cmd p99 ≤ 1 ms |",
        "|---|---|---|---|---|",
    ]
    for r in res:
        v = verdicts(r)
        lines.append(f"| {r['mode']} | {sched_label(r)} | {mark(v['missed'])} ({r['missed_pct']:.2f}%) "
                     f"| {mark(v['compute'])} ({r['compute_p50_us']:.0f} µs) "
                     f"| {mark(v['latency'])}" + (f" ({r['lat_p99_ms']:.3f} ms)" if v["latency"] is not None else "")
                     + " |")
    misses = []
    for r in res:
        v = verdicts(r)
        where = f"{r['mode']}, {sched_label(r)}"
        if v["missed"] is False:
            why = []
            if r["mode"] == "event" and r["feeder_skipped"] > 0:
                why.append(f"the feeder itself skipped {r['feeder_skipped']} periods (states never sent)")
            if r["rt"] and r["fifo"] == "refused":
                why.append("SCHED_FIFO was refused")
            misses.append(f"* {where}: {r['missed_pct']:.2f}% missed ticks ({r['missed']})"
                          + (f"; {'; '.join(why)}" if why else "") + ".")
        if v["compute"] is False:
            misses.append(f"* {where}: tick compute p50 {r['compute_p50_us']:.0f} µs "
                          f"({r['compute_p50_us'] / floor['p50_us']:.1f}x the ORT floor).")
        if v["latency"] is False:
            misses.append(f"* {where}: obs→command p99 {r['lat_p99_ms']:.3f} ms.")
    lines += ["", "Misses, with their figures:" if misses else "Every target met.", ""] + misses
    lines += ["", "Where a tick's time goes: its parts, ROS-free, in the tick's order, in the bench process "
              "(`tick_parts`: median µs; the node adds three publishes of preserialized messages and the Python "
              "between the parts):", "",
              "| " + " | ".join(parts) + " |", "|" + "---|" * len(parts),
              "| " + " | ".join(f"{v:.1f}" for v in parts.values()) + " |"]
    lines += ["", "Why the misses (read from the figures above):", ""] + reasons(res, floor, parts)
    return "\n".join(lines).rstrip() + "\n"


def held_off(r: dict) -> str:
    """What else had the control thread's CPU in that cell (measured), or that it was not measured."""
    if "cpu_steal_ms_per_s" not in r:
        return "; what held it off was not measured in this run"
    return (f"; on its CPU the hypervisor stole {r['cpu_steal_ms_per_s']:.1f} ms a second (time the virtual CPU did "
            f"not run at all) and interrupts took {r['cpu_irq_ms_per_s'] + r['cpu_softirq_ms_per_s']:.1f} ms a "
            "second, both above any SCHED_FIFO priority")


def reasons(res: list[dict], floor: dict, parts: dict) -> list[str]:
    """The misses' causes as far as this bench's own figures show them (nothing here is measured anew)."""
    out = []
    total = parts.get("sum of parts", sum(v for k, v in parts.items() if k != "sum of parts"))
    slow = [r for r in res if verdicts(r)["compute"] is False]
    if slow:
        best = min(slow, key=lambda r: r["compute_p50_us"])
        big = sorted(((v, k) for k, v in parts.items() if k != "sum of parts"), reverse=True)[:2]
        over = best["compute_p50_us"] - total + floor["p50_us"]  # the node's own overhead + bare inference
        out.append(
            f"* Tick compute: the tick's parts, timed without ROS, sum to {total:.0f} µs ({big[0][1]} "
            f"{big[0][0]:.0f}, {big[1][1]} {big[1][0]:.0f}; the ONNX Runtime floor alone is {floor['p50_us']:.0f}); "
            f"the best cell's p50 is {best['compute_p50_us']:.0f} µs, so {best['compute_p50_us'] - total:.0f} µs "
            "go to what the node adds around them: three rclpy publishes (each a Python call into rcl, even with "
            "preserialized bytes) and the Python glue between the parts. "
            + (f"That overhead plus the ONNX Runtime floor is {over:.0f} µs, leaving {TARGET_COMPUTE_P50_US - over:.0f} "
               f"µs of the {TARGET_COMPUTE_P50_US:g} µs for IK, the safety filter and the observation, which take "
               if over < TARGET_COMPUTE_P50_US else
               f"That overhead plus the ONNX Runtime floor is already {over:.0f} µs, over the "
               f"{TARGET_COMPUTE_P50_US:g} µs before IK, the safety filter and the observation, which take ")
            + f"{total - sum(v for k, v in parts.items() if 'ONNX' in k):.0f} µs together (with the clip, the "
            "watchdog and the step record): the target needs the tick out of Python (a C++ node, or a publish path "
            "without rclpy's per-call overhead).")
    for r in res:
        v = verdicts(r)
        if v["missed"] is False and r["rt"] and r["mode"] == "event":
            own = r["missed"] - (r["feeder_skipped"] if r["feeder_skipped"] <= r["missed"] else 0)
            total_n = r["missed"] + r["ticks"]
            out.append(
                f"* Missed ticks, event mode with SCHED_FIFO: {r['feeder_skipped']} of the {r['missed']} are "
                "states the feeder (the stand-in for the controller's broadcaster, on the same 2 cores) never "
                f"sent; the node's own share is {own} ({100 * own / max(total_n, 1):.2f}%"
                + (f", within the {TARGET_MISSED_PCT:g}% target)" if 100 * own / max(total_n, 1) <= TARGET_MISSED_PCT
                   else ")")
                + ". With the tick's p99 at "
                f"{r['compute_p99_us']:.0f} µs against a {1e6 / r['rate']:.0f} "
                "µs period, a state is missed only when the control thread is held off its CPU" + held_off(r) + ".")
        elif v["missed"] is False and r["rt"]:
            out.append(
                f"* Missed ticks, timer mode with SCHED_FIFO: {r['missed_pct']:.2f}% ({r['missed']} periods the timer "
                f"skipped), with the tick's p99 at {r['compute_p99_us']:.0f} µs against a {1e6 / r['rate']:.0f} µs "
                "period: a period is skipped only when the control thread is held off its CPU past a whole period"
                + held_off(r) + ".")
        elif v["missed"] is False and not r["rt"]:
            out.append(f"* Missed ticks, {r['mode']} mode without SCHED_FIFO: {r['missed_pct']:.2f}%: under normal "
                       "scheduling the control thread competes at equal priority with everything else on its core "
                       "(DDS's threads, the feeder); the SCHED_FIFO cells are the configuration the target is set for.")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="control rate = joint-state rate (Hz)")
    ap.add_argument("--seconds", type=int, default=30, help="measured 1 s windows per cell")
    ap.add_argument("--warmup", type=int, default=3, help="acting windows discarded at the start of a cell")
    ap.add_argument("--modes", default="timer,event", help="tick modes to run")
    ap.add_argument("--realtime-priority", type=int, default=40,
                    help="policy_node's SCHED_FIFO priority in the SCHED_FIFO cells (the feeder runs one above)")
    ap.add_argument("--no-fifo", action="store_true", help="skip the SCHED_FIFO cells (not permitted here)")
    ap.add_argument("--node-cpu", type=int, default=0, help="CPU of policy_node's control thread (-1: any)")
    ap.add_argument("--hog-cpu", type=int, default=-1, help="CPU of the learner (default: the last one)")
    ap.add_argument("--no-write", action="store_true", help="print the markdown instead of writing it")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "bench", "control_1khz.md"))
    ap.add_argument("--feeder", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--feeder-rt", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--hog", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--render", action="store_true",
                    help="re-write the section from the figures the last run saved beside --out (measures nothing)")
    a = ap.parse_args()
    if a.render:
        with open(os.path.splitext(a.out)[0] + ".json") as f:
            saved = json.load(f)
        for k, v in saved["args"].items():
            setattr(a, k, v)
        md = markdown(saved["res"], saved["floor"], saved["parts"], saved["info"], saved["load_end"], saved["cmd"], a)
        if a.no_write:
            print(md)
        else:
            from collect import write_section

            write_section(md, a.out)
        return 0
    if helper_role(a):
        return 0

    import onnx_models as om
    from bench_learner import machine_info
    from bench_policy import ort_floor
    from vla_rl_ros.spec import Spec

    cmd = "`.venv/bin/python bench/bench_control_1khz.py" + "".join(" " + x for x in sys.argv[1:]) + "`"
    info = machine_info()
    work = tempfile.mkdtemp(prefix="bench_1khz_")
    model = om.write(os.path.join(work, "mlp.onnx"), Spec(), "mlp", version="bench-mlp")
    floor = ort_floor(model)
    print(f"ORT floor: {json.dumps(floor)}; logs in {work}", flush=True)
    parts = tick_parts(model)
    print(f"tick parts (µs): {json.dumps(parts)}", flush=True)
    cells = [(m, rt) for rt in ([a.realtime_priority] if not a.no_fifo else []) + [0]
             for m in a.modes.split(",")]
    res = []
    for mode, rt in cells:
        r = run_cell(mode, rt, a.rate, model, a.seconds, a.warmup, a.node_cpu, a.hog_cpu, work)
        print(json.dumps(r), flush=True)
        res.append(r)
    load_end = os.getloadavg()[0]
    raw = os.path.splitext(a.out)[0] + ".json"  # the measured figures: --render re-writes the section from them
    if not a.no_write:
        with open(raw + ".tmp", "w") as f:
            json.dump({"res": res, "floor": floor, "parts": parts, "info": info, "load_end": load_end, "cmd": cmd,
                       "args": {k: getattr(a, k) for k in ("rate", "seconds", "warmup", "node_cpu", "hog_cpu")}},
                      f, indent=1)
        os.replace(raw + ".tmp", raw)
    md = markdown(res, floor, parts, info, load_end, cmd, a)
    if a.no_write:
        print(md)
    else:
        from collect import write_section

        write_section(md, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
