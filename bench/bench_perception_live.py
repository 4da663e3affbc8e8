"""The perception loop on the live graph: which camera frames reach perception, and which of them give a pose.

Usage::

    .venv/bin/python bench/bench_perception_live.py [--seconds 120] [--gap 0] [--domain-id 58] [--note TEXT]
                                                    [--set NODE.PARAM:=VALUE] [--out docs/bench/perception_live.md]

Runs ``vla-rl-ros sim --task pick_place --perception --no-learner --teacher 0`` (the shipped BC model acting on
the poses perception_node reads from the twin camera's ArUco markers) for ``--seconds``, and listens beside it,
as perception_node does (sensor-data QoS):

* ``/camera/image_raw``: frames received per second (twin_node asks for ``camera_rate_hz`` a second) and their
  age on arrival (receive time minus the frame's stamp, which is when twin_node asked for it);
* ``/task/object_pose``: poses published per second by perception_node, their age on arrival, and their
  position error against the twin's ground truth (``/twin/object_pose``, the newest before the frame's stamp);
* every received frame, read again here by the same perception core with the sim's configuration
  (:meth:`~vla_rl_ros.perception.aruco.MarkerPoseEstimator.estimate_why`): the share that gives a pose, and why
  the others give none;
* from the run: episodes, successes, and the policy's holds on a stale object pose (``logs/policy_node.log``).

Nothing here changes the graph: it is the README's ``--perception`` command with a listener on the same domain.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from collect import cpu_model, write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_continual import hold_domain  # noqa: E402


def stamp_s(msg) -> float:
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


class Listener:
    """Frames, poses and the twin's truth from the sim's domain, in a thread of this process."""

    def __init__(self, keep_every: int = 2):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image

        rclpy.init()
        self.node = n = rclpy.create_node("bench_perception_live")
        self.keep_every = keep_every
        self.frames: list[tuple[float, float]] = []  # (receive time, stamp)
        self.kept: list[tuple[float, np.ndarray]] = []  # every keep_every-th frame: (stamp, RGB)
        self.poses: list[tuple[float, float, np.ndarray]] = []  # (receive time, stamp, position)
        self.truth: list[tuple[float, np.ndarray]] = []  # (stamp, position)
        self.K = None
        n.create_subscription(Image, "/camera/image_raw", self._on_image, qos_profile_sensor_data)
        n.create_subscription(CameraInfo, "/camera/camera_info", self._on_info, qos_profile_sensor_data)
        n.create_subscription(PoseStamped, "/task/object_pose", self._on_pose, 10)
        n.create_subscription(PoseStamped, "/twin/object_pose", self._on_truth, 10)
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        import rclpy

        while not self._stop:
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def _on_image(self, m) -> None:
        self.frames.append((time.time(), stamp_s(m)))
        if len(self.frames) % self.keep_every == 0 and m.encoding == "rgb8":
            self.kept.append((stamp_s(m), np.frombuffer(m.data, np.uint8).reshape(m.height, m.width, 3).copy()))

    def _on_info(self, m) -> None:
        self.K = tuple(float(v) for v in m.k)

    def _on_pose(self, m) -> None:
        p = m.pose.position
        self.poses.append((time.time(), stamp_s(m), np.array([p.x, p.y, p.z])))

    def _on_truth(self, m) -> None:
        p = m.pose.position
        self.truth.append((stamp_s(m), np.array([p.x, p.y, p.z])))

    def close(self) -> None:
        import rclpy

        self._stop = True
        self._thread.join(timeout=2.0)
        self.node.destroy_node()
        rclpy.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--gap", type=float, default=None, help="sim --gap (default: the params file's, 1)")
    ap.add_argument("--domain-id", type=int, default=58)
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM:=VALUE", help="passed to sim")
    ap.add_argument("--run", default=str(ROOT / "runs" / "bench" / "perception_live"))
    ap.add_argument("--note", default="")
    ap.add_argument("--save-frames", default=None, metavar="DIR",
                    help="also write up to 8 re-read frames of each outcome there (PNG, named by outcome)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "perception_live.md"))
    args = ap.parse_args()
    import shutil

    import cv2
    import yaml

    from vla_rl_ros.perception.aruco import MarkerConfig, MarkerPoseEstimator, extrinsic_from_xyzquat, twin_extrinsic

    cv2.setNumThreads(1)
    lock = hold_domain(args.domain_id)  # noqa: F841 - held until the run is over
    run = Path(args.run).resolve()
    if run.exists():
        shutil.rmtree(run)
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    cmd = [str(ROOT / "vla-rl-ros"), "sim", "--task", "pick_place", "--perception", "--no-learner", "--teacher", "0",
           "--duration", f"{args.seconds:g}", "--run", str(run), "--domain-id", str(args.domain_id)]
    if args.gap is not None:
        cmd += ["--gap", f"{args.gap:g}"]
    for item in args.set:
        cmd += ["--set", item]
    t_start, load0 = time.time(), os.getloadavg()[0]
    listener = Listener()
    run.parent.mkdir(parents=True, exist_ok=True)
    with open(str(run) + ".console.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=args.seconds + 120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
    listener.close()
    console = Path(str(run) + ".console.log").read_text()
    m = re.search(r"stopping; (\d+) episodes, (\d+) successes", console)
    episodes, successes = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    policy_log = run / "logs" / "policy_node.log"
    holds = policy_log.read_text().count("holding: object_pose stale") if policy_log.exists() else 0

    # the frames received, read again by the perception core with the sim's perception_node configuration
    with open(ROOT / "config" / "sim.yaml") as f:
        pc = yaml.safe_load(f)["perception_node"]["ros__parameters"]
    config = MarkerConfig(dictionary=pc["marker_dictionary"], marker_id=pc["marker_id"],
                          side_ids=tuple(pc["side_marker_ids"]), marker_size=pc["marker_size"],
                          center_offset=pc["center_offset"], min_side_px=pc["min_side_px"],
                          max_reprojection_px=pc["max_reprojection_px"], max_position_std_m=pc["max_position_std_m"],
                          max_view_angle_deg=pc["max_view_angle_deg"], refine_shift_frac=pc["refine_shift_frac"])
    t_truth = np.array([s for s, _ in listener.truth])

    def truth_at(stamp: float):
        i = np.searchsorted(t_truth, stamp) - 1
        return listener.truth[i][1] if i >= 0 else None

    def reread(cfg: MarkerConfig, save: str | None = None) -> tuple[collections.Counter, np.ndarray]:
        """Outcomes of the kept frames read by the perception core with ``cfg``, and the poses' errors (mm)."""
        why, errs = collections.Counter(), []
        if listener.K is None or not listener.kept:
            return why, np.zeros(0)
        est = MarkerPoseEstimator(cfg, listener.K, extrinsic)
        for stamp, frame in listener.kept:
            pose, reason = est.estimate_why(frame)
            outcome = "a pose" if pose is not None else reason
            why[outcome] += 1
            truth = truth_at(stamp)
            if pose is not None and truth is not None:
                errs.append(1000 * float(np.linalg.norm(pose.position - truth)))
            if save and why[outcome] <= 8:
                os.makedirs(save, exist_ok=True)
                name = f"{outcome.replace(' ', '_')}_{why[outcome]}.png"
                cv2.imwrite(os.path.join(save, name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        return why, np.array(errs)

    # the extrinsic perception_node used: the run's calibration where sim made one, else the scene's nominal pose
    cal = run / "camera_extrinsic.yaml"
    if cal.exists():
        p = yaml.safe_load(cal.read_text())["perception_node"]["ros__parameters"]
        extrinsic = extrinsic_from_xyzquat(p["camera_xyz"], p["camera_quat"])
    else:
        extrinsic = twin_extrinsic(None)
    why, reread_err = reread(config, args.save_frames)
    why_2px, reread_err_2px = reread(dataclasses.replace(config, refine_shift_frac=0.0))
    n_kept = sum(why.values())

    span = max(1e-9, (listener.frames[-1][0] - listener.frames[0][0]) if len(listener.frames) > 1 else 1e-9)
    frame_age = 1000 * np.array([r - s for r, s in listener.frames]) if listener.frames else np.zeros(0)
    pose_age = 1000 * np.array([r - s for r, s, _ in listener.poses]) if listener.poses else np.zeros(0)
    errors = np.array([1000 * float(np.linalg.norm(p - t)) for _, s, p in listener.poses
                       for t in [truth_at(s)] if t is not None])

    def q(a: np.ndarray, pct: float) -> str:
        return f"{np.percentile(a, pct):.0f}" if len(a) else "-"

    def outcomes(w: collections.Counter) -> str:
        n = sum(w.values())
        return ", ".join(f"{k}: {100 * v / n:.0f}%" for k, v in w.most_common()) if n else "-"

    reasons, reasons_2px = outcomes(why), outcomes(why_2px)
    sim_cmd = shlex.join(["./vla-rl-ros"] + cmd[1:]).replace(str(ROOT) + "/", "")
    text = f"""## The perception loop on the live graph (`bench/bench_perception_live.py`)

Command: `.venv/bin/python bench/bench_perception_live.py {shlex.join(sys.argv[1:])}`

Machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, OpenCV {cv2.__version__}, Python {platform.python_version()}; shared machine, 1-min load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end; {time.time() - t_start:.0f} s.{(' ' + args.note) if args.note else ''}

The sim ran `{sim_cmd}` (the shipped BC model acting on perceived poses; the twin camera at 640×480, twin_node's
`camera_rate_hz` {pc_rate()} Hz) with a listener on its domain (sensor-data QoS, as perception_node). Ages are
receive time minus the stamp (the frame's: when twin_node asked for it). Errors: perception_node's pose against
the twin's ground truth just before the frame's stamp. The perception core re-read every other received frame
here with the sim's perception_node configuration.

| what | figure |
| --- | --- |
| episodes (successes) | {episodes} ({successes}) |
| policy holds on a stale object pose | {holds} |
| camera frames received | {len(listener.frames)}: **{len(listener.frames) / span:.1f} per s**; age median {q(frame_age, 50)} ms, p95 {q(frame_age, 95)} ms |
| poses from perception_node received | {len(listener.poses)}: **{len(listener.poses) / span:.1f} per s**; age median {q(pose_age, 50)} ms, p95 {q(pose_age, 95)} ms |
| their position error | median {q(errors, 50)} mm, p95 {q(errors, 95)} mm |
| received frames re-read by the perception core | {n_kept}: {reasons}; the poses' error median {q(reread_err, 50)} mm, p95 {q(reread_err, 95)} mm |
| the same frames, refined corners kept only within 2 px of the first pass's (before `refine_shift_frac`) | {reasons_2px}; error median {q(reread_err_2px, 50)} mm, p95 {q(reread_err_2px, 95)} mm |
"""
    write_section(text, args.out)
    return 0


def pc_rate() -> str:
    import yaml

    with open(ROOT / "config" / "sim.yaml") as f:
        return f"{yaml.safe_load(f)['twin_node']['ros__parameters']['camera_rate_hz']:g}"


if __name__ == "__main__":
    sys.exit(main())
