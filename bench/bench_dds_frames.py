"""Camera frames over ROS 2 (Fast DDS) between two processes: Fast DDS's defaults against the sim's profile.

Usage::

    .venv/bin/python bench/bench_dds_frames.py [--trials 3] [--seconds 15] [--size 640x480] [--load 2]
                                               [--out docs/bench/dds_frames.md]

One process publishes ``sensor_msgs/Image`` RGB frames of ``--size`` at 10 Hz with ``qos_profile_sensor_data``
(best effort, as camera drivers and twin_node publish); another subscribes with the same QoS, as
perception_node does. Each frame carries its sequence number, so the subscriber counts exactly which frames
arrived, from the first one it received (after discovery) to the last one published. ``--load N`` runs N busy
processes beside them (the sim graph keeps both cores busy; the loss comes with the load).

Two configurations, alternated trial by trial:

* ``default``: Fast DDS's built-in transports (shared memory with its 512 KB segment, and UDPv4);
* ``profile``: ``config/fastdds_large_frames.xml`` (what ``vla-rl-ros sim`` sets): the same transports with a
  16 MB shared-memory segment.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from collect import cpu_model, write_section  # noqa: E402

CHILD = r"""
import sys, time
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
role, w, h, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rclpy.init()
n = rclpy.create_node("bench_dds_frames_" + role)
if role == "pub":
    pub = n.create_publisher(Image, "/bench/image_raw", qos_profile_sensor_data)
    data = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8).tobytes()
    k = [0]
    def tick():
        m = Image()
        m.height, m.width, m.encoding, m.step = h, w, "rgb8", 3 * w
        m.data = data
        m.header.frame_id = str(k[0])
        m.header.stamp = n.get_clock().now().to_msg()
        pub.publish(m)
        k[0] += 1
    n.create_timer(0.1, tick)
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        rclpy.spin_once(n, timeout_sec=0.02)
    print("published", k[0], flush=True)
else:
    got = []
    n.create_subscription(Image, "/bench/image_raw", lambda m: got.append(int(m.header.frame_id)),
                          qos_profile_sensor_data)
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        rclpy.spin_once(n, timeout_sec=0.02)
    print("received", " ".join(map(str, got)), flush=True)
"""


def _busy(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def trial(config: str, w: int, h: int, seconds: float, domain: int) -> dict:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    for var in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS"):
        env.pop(var, None)
    if config == "profile":
        from vla_rl_ros.graph import large_frames_profile

        env["FASTDDS_DEFAULT_PROFILES_FILE"] = large_frames_profile({})
    py = [sys.executable, "-c", CHILD]
    sub = subprocess.Popen(py + ["sub", str(w), str(h), str(seconds + 4)], stdout=subprocess.PIPE, text=True, env=env)
    time.sleep(1.0)
    pub = subprocess.run(py + ["pub", str(w), str(h), str(seconds)], capture_output=True, text=True, env=env,
                         timeout=seconds + 60)
    out, _ = sub.communicate(timeout=seconds + 60)
    published = int(pub.stdout.split()[-1])
    got = [int(v) for v in out.split()[1:]]
    first = min(got) if got else published
    expected = max(published - first, 1)
    return {"config": config, "published": published, "first": first, "received": len(got),
            "share": len(set(got)) / expected}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--load", type=int, default=2, help="busy processes beside the pair (0: none)")
    ap.add_argument("--domain-id", type=int, default=61)
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "dds_frames.md"))
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    stop = mp.Event()
    busy = [mp.Process(target=_busy, args=(stop,), daemon=True) for _ in range(args.load)]
    for p in busy:
        p.start()
    load0 = os.getloadavg()[0]
    results: list[dict] = []
    try:
        for t in range(args.trials):
            for config in ("default", "profile"):
                r = trial(config, w, h, args.seconds, args.domain_id)
                results.append(r)
                print(f"trial {t} {config}: {r['received']} of the {r['published'] - r['first']} frames published "
                      f"after the first one received ({100 * r['share']:.0f}%)", flush=True)
    finally:
        stop.set()
        for p in busy:
            p.join(timeout=5)
    load1 = os.getloadavg()[0]
    by = {c: [r for r in results if r["config"] == c] for c in ("default", "profile")}
    med = {c: statistics.median(r["share"] for r in rs) for c, rs in by.items()}
    mb = w * h * 3 / 1e6
    lines = [
        "## Camera frames between two ROS 2 processes: Fast DDS's defaults against the sim's profile "
        "(`bench/bench_dds_frames.py`)",
        "",
        f"Command: `.venv/bin/python bench/bench_dds_frames.py --trials {args.trials} --seconds {args.seconds:g} "
        f"--size {w}x{h} --load {args.load}`",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, Python {platform.python_version()}; shared machine, "
        f"1-min load average {load0:.2f} at start, {load1:.2f} at end; {args.load} busy process(es) beside the pair.",
        "",
        f"{w}×{h} RGB frames ({mb:.2f} MB) at 10 Hz, `qos_profile_sensor_data` on both sides (best effort, as "
        "twin_node and camera drivers publish and perception_node subscribes). Share: frames received of those "
        "published from the first one received (after discovery) to the end.",
        "",
        "| configuration | frames received, median share | per trial |",
        "| --- | ---: | --- |",
        f"| Fast DDS defaults (shared memory, 512 KB segment; UDPv4) | **{100 * med['default']:.0f}%** | "
        + ", ".join(f"{100 * r['share']:.0f}%" for r in by["default"]) + " |",
        f"| `config/fastdds_large_frames.xml` (16 MB segment), what `vla-rl-ros sim` sets | "
        f"**{100 * med['profile']:.0f}%** | " + ", ".join(f"{100 * r['share']:.0f}%" for r in by["profile"]) + " |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
