"""The camera pipeline in the twin, through the whole graph: frames rendered, published, decoded and fed to a
chunked camera model while the loop runs; frame→command latency.

Issue 13's target: frames fed to the model at >= 10 Hz while the loop runs; frame→command latency p50 and p99
reported.

It runs ``vla-rl-ros sim --task reach --no-learner`` with an arm file declaring one camera (the twin's
``/camera/image_raw``, 84x84) and chunks of ``K`` at ``--chunk-hz``, the twin's camera at ``--camera-hz``, and a
chunked model that reads the frame (``test/onnx_models.build_chunk``: a reach controller per chunk step whose
gripper channel carries the frame's brightness, so the frame is a real input), re-planning every
``--replan`` chunk steps. Then it reads the run's store, where each transition carries the chunk it executed
(``chunk_seq``) and the camera frame that chunk was computed from (``frame_stamp``):

* frames fed: distinct frame stamps among the chunks per second of recorded steps;
* frame→command: for each chunk, its first command's stamp minus its frame's stamp (the age of the image when
  the arm first acted on it), and over every tick (the age of the image behind each command).

    .venv/bin/python bench/bench_camera_loop.py                   # 60 s, writes docs/bench/camera_loop.md
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))
sys.path.insert(0, str(REPO / "bench"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--camera-hz", type=float, default=20.0)
    ap.add_argument("--chunk-len", type=int, default=8)
    ap.add_argument("--chunk-hz", type=float, default=20.0)
    ap.add_argument("--replan", type=int, default=1, help="chunk steps run before the next inference")
    ap.add_argument("--domain-id", type=int, default=None)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", default=str(REPO / "docs" / "bench" / "camera_loop.md"))
    a = ap.parse_args()

    import onnx_models as om
    from bench_continual import hold_domain
    from bench_learner import machine_info
    from conftest import reserve_domain_id
    from vla_rl_ros.arm import read_arm
    from vla_rl_ros.buffer import connect
    from vla_rl_ros.graph import config_path

    if a.domain_id is None:
        domain, lock = reserve_domain_id()
    else:
        domain, lock = a.domain_id, hold_domain(a.domain_id)
    work = Path(tempfile.mkdtemp(prefix="bench_camera_"))
    arm_file = work / "camera_arm.yaml"
    arm_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "images": ["front"], "image": {"front": {"topic": "/camera/image_raw", "height": 84, "width": 84}},
        "chunk_len": a.chunk_len, "chunk_hz": a.chunk_hz}}}))
    spec = read_arm([config_path("sim.yaml"), str(arm_file)], "reach").spec
    model = om.write_chunk(work / "chunk_cam.onnx", spec, version="bench-chunk-cam", image_gain=0.5)
    run = work / "run"
    cmd = [sys.executable, "-m", "vla_rl_ros.cli", "sim", "--task", "reach", "--run", str(run), "--arm",
           str(arm_file), "--model", model, "--no-learner", "--domain-id", str(domain), "--duration", str(a.seconds),
           "--set", "twin_node.camera_enabled:=true", "--set", f"twin_node.camera_rate_hz:={a.camera_hz}",
           "--set", f"policy_node.replan_steps:={a.replan}", "--set", "policy_node.exploration_std:=0.0"]
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    with open(work / "sim.log", "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=a.seconds + 180).returncode
    lock.close()
    con = connect(run / "buffer.sqlite", readonly=True)
    rows = np.array(con.execute("SELECT chunk_seq, frame_stamp, cmd_stamp FROM steps WHERE chunk_seq IS NOT NULL "
                                "AND frame_stamp IS NOT NULL ORDER BY cmd_stamp").fetchall(), dtype=np.float64)
    n_all = con.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    con.close()
    if len(rows) < 20:
        raise SystemExit(f"only {len(rows)} chunked steps recorded (sim rc {rc}); see {work / 'sim.log'}")
    span = rows[-1, 2] - rows[0, 2]
    frames = len(np.unique(rows[:, 1]))
    first_cmd = {}
    for seq, fst, cst in rows:
        first_cmd.setdefault(seq, (fst, cst))
    per_chunk = np.array([c - f for f, c in first_cmd.values()]) * 1e3
    per_tick = (rows[:, 2] - rows[:, 1]) * 1e3
    info = machine_info()
    fed_hz = frames / span
    text = "\n".join([
        "## The camera pipeline in the twin: frames to a chunked model to the arm (`bench/bench_camera_loop.py`)",
        "",
        "Command: `.venv/bin/python bench/bench_camera_loop.py" + "".join(" " + x for x in sys.argv[1:]) + "`. "
        f"Machine: {info.get('cpu')}, `nproc` = {info.get('nproc')}, shared.",
        "",
        f"`vla-rl-ros sim --task reach --no-learner` with one camera in the spec (the twin's `/camera/image_raw`, "
        f"84x84 rgb8, rendered at {a.camera_hz:g} Hz in the twin's renderer process), a chunked model reading it "
        f"(chunks of {a.chunk_len} at {a.chunk_hz:g} Hz, a new one every {a.replan} step(s)), policy_node at the "
        f"sim's control rate; {a.seconds:g} s. Figures from the run's store: {len(rows)} of {n_all} transitions "
        "carry a chunk and its frame.",
        "",
        "| what | figure |",
        "| --- | ---: |",
        f"| distinct frames fed to the model, per second | **{fed_hz:.1f} Hz** ({frames} frames in {span:.1f} s) |",
        f"| chunks (inferences) recorded, per second | {len(first_cmd) / span:.1f} Hz |",
        f"| frame → first command from it, p50 / p99 | {np.percentile(per_chunk, 50):.0f} / "
        f"{np.percentile(per_chunk, 99):.0f} ms |",
        f"| frame → command, every tick, p50 / p99 | {np.percentile(per_tick, 50):.0f} / "
        f"{np.percentile(per_tick, 99):.0f} ms |",
        "",
        f"Target: frames fed at ≥ 10 Hz while the loop runs: **{'met' if fed_hz >= 10 else 'missed'}** "
        f"({fed_hz:.1f} Hz).",
        "",
    ])
    print(text)
    if not a.no_write:
        from collect import write_section

        write_section(text, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
