"""The twin's camera for perception: what a frame costs to draw, and whether the marker's pose survives (issue 9:
poses from the twin's 640x480 camera fast enough for the loop; accuracy targets: position median <= 5 mm, p95 <=
15 mm, yaw median <= 3 deg).

Usage::

    nice -n 19 .venv/bin/python bench/bench_twin_camera.py [--poses 100] [--seed 0] [--process-seconds 60]
                                                           [--note TEXT] [--out docs/bench/twin_camera.md]

At ``--poses`` seeded scenes (the arm near home, each joint moved by up to +-0.3 rad, so the hand is sometimes
over the table; the gripper open; the cube resting in the object region at a random yaw) every candidate draws the
frame of the same scene through the scene's camera, one candidate after the other (so that the machine's load
falls on all alike), and the perception core (:class:`vla_rl_ros.perception.aruco.MarkerPoseEstimator`, as the
sim's perception_node runs it: the top marker, then the sides) reads the cube's pose from it with the frame's own
intrinsics. The candidates:

- ``tiny, as before``: TwinCore.render's old call (TinyRenderer, the whole scene, with a segmentation mask);
  the reference frame.
- ``tiny``: the same without the segmentation mask (TwinCore.render now; the same frame).
- ``tiny, cropped``: the whole scene through an off-centre projection onto the window of the 640x480 frame that
  the task's regions project into (the workspace: fewer pixels at the same focal length; the published image and
  its CameraInfo would change size and principal point).
- ``egl``: PyBullet's EGL renderer plugin (OpenGL; Mesa's llvmpipe on a machine without a GPU), if it loads.
- ``layered``: :class:`vla_rl_ros.twin.camera.TwinCamera` (twin_node's camera now): the table and floor drawn once
  with their depth, what moves drawn each frame and z-composited over them.
- ``layered, the arm's collision shapes``: the same with the arm drawn from its collision shapes (TwinCamera's
  ``arm_shapes="collision"``; the Panda's have ~10x fewer triangles than its visual meshes: a cheaper scene, and a
  coarser arm in the picture).

Per frame: the CPU time of the draw (``time.process_time``: the whole process, llvmpipe's threads included; the
figure a free core gives; this machine may be shared and the process niced) and its wall time; how many of its
pixels equal the reference frame's (the crop: the reference's window); and the pose's error against the truth.

``--process-seconds``: then twin_node's camera process (a spawned child, as the node runs it) with each of
twin_node's renderers (and the layered one with the arm's collision shapes), asked for frames back to back: frames
per second and request-to-frame wall time.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from collect import cpu_model, write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vla_rl_ros.nodes._camera import intrinsics  # noqa: E402
from vla_rl_ros.perception.aruco import (MarkerConfig, MarkerPoseEstimator, angle_diff, camera_matrix,  # noqa: E402
                                         twin_extrinsic)
from vla_rl_ros.twin.camera import TwinCamera  # noqa: E402
from vla_rl_ros.twin.core import TwinCore  # noqa: E402

W, H = 640, 480


def workspace_window(twin: TwinCore, margin_px: int = 8) -> tuple[int, int, int, int]:
    """``(u0, v0, w, h)``: the window of the W x H frame that the task's regions (the object's, the goals', the
    reach's; from the table up to the highest goal plus the object) project into, widened by ``margin_px`` and
    rounded out to multiples of 8 px."""
    r = twin.region
    lo = np.minimum.reduce([(*r.object_low, 0.0), r.goal_low, r.reach_low])
    hi = np.maximum.reduce([(*r.object_high, 0.0), r.goal_high, r.reach_high]) + twin.object_half
    lo[2] = 0.0
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    pc = (np.linalg.inv(twin_extrinsic(twin.scene)) @ corners.T).T
    fx, fy, cx, cy = intrinsics(W, H)
    u, v = fx * pc[:, 0] / pc[:, 2] + cx, fy * pc[:, 1] / pc[:, 2] + cy
    u0 = max(0, int(math.floor((u.min() - margin_px) / 8)) * 8)
    v0 = max(0, int(math.floor((v.min() - margin_px) / 8)) * 8)
    u1 = min(W, int(math.ceil((u.max() + margin_px) / 8)) * 8)
    v1 = min(H, int(math.ceil((v.max() + margin_px) / 8)) * 8)
    return u0, v0, u1 - u0, v1 - v0


def cropped_projection(proj, u0: int, v0: int, w: int, h: int) -> list[float]:
    """PyBullet's projection matrix (column-major) of the window ``(u0, v0, w, h)`` of the W x H frame drawn with
    ``proj``: the same focal length, the principal point moved by ``(-u0, -v0)``."""
    P = np.array(proj, dtype=float).reshape(4, 4).T  # row-major
    P[0, 0] *= W / w
    P[1, 1] *= H / h
    P[0, 2] = 1.0 - (W - 2.0 * u0) / w
    P[1, 2] = (H - 2.0 * v0) / h - 1.0
    return P.T.reshape(-1).tolist()


class Candidate:
    """A way to draw the frame of a scene: ``draw(twin) -> RGB``, its intrinsics and its window of the frame."""

    def __init__(self, name: str, draw, window=(0, 0, W, H), close=None):
        self.name, self.draw, self.window, self._close = name, draw, window, close
        u0, v0, w, h = window
        fx, fy, cx, cy = intrinsics(W, H)
        self.K = camera_matrix(fx, fy, cx - u0, cy - v0)
        self.cpu, self.wall, self.same, self.pos_err, self.yaw_err = [], [], [], [], []
        self.found = {"top": 0, "side": 0}

    def close(self):
        if self._close is not None:
            self._close()


def candidates(twin: TwinCore) -> tuple[list[Candidate], dict]:
    import pybullet as pb

    out, skipped = [], {}
    c = twin.cid

    def tiny_as_before(t):  # TwinCore.render's call before this bench: segmentation mask on
        t._place_marker()
        view, proj = t.camera_matrices(W, H)
        img = pb.getCameraImage(W, H, view, proj, renderer=pb.ER_TINY_RENDERER, physicsClientId=c)
        return np.reshape(np.asarray(img[2], dtype=np.uint8), (H, W, 4))[:, :, :3]

    out.append(Candidate("tiny, as before (segmentation mask on)", tiny_as_before))
    out.append(Candidate("tiny (TwinCore.render now: no segmentation mask)", lambda t: t.render(W, H)))
    u0, v0, w, h = win = workspace_window(twin)
    crop_proj = cropped_projection(twin.camera_matrices(W, H)[1], *win)

    def tiny_cropped(t):
        t._place_marker()
        view = t.camera_matrices(W, H)[0]
        img = pb.getCameraImage(w, h, view, crop_proj, renderer=pb.ER_TINY_RENDERER, shadow=0,
                                flags=pb.ER_NO_SEGMENTATION_MASK, physicsClientId=c)
        return np.reshape(np.asarray(img[2], dtype=np.uint8), (h, w, 4))[:, :, :3]

    out.append(Candidate(f"tiny, cropped to the workspace ({w}×{h} at ({u0}, {v0}))", tiny_cropped, window=win))
    try:
        egl = TwinCore(twin.spec, egl=True)
        out.append(Candidate("egl (EGL plugin, OpenGL)", lambda t: _mirror(egl, t).render(W, H), close=egl.close))
    except RuntimeError as e:
        skipped["egl"] = str(e)
    layered = TwinCamera(W, H, twin.spec)
    out.append(Candidate("layered (twin_node's default)", layered.render_twin, close=layered.close))
    coarse = TwinCamera(W, H, twin.spec, arm_shapes="collision")
    out.append(Candidate("layered, the arm's collision shapes (`sim --perception`)", coarse.render_twin, close=coarse.close))
    return out, skipped


def _mirror(dst: TwinCore, src: TwinCore) -> TwinCore:
    """``dst`` set to ``src``'s joints and object pose (a kinematic copy for the EGL candidate)."""
    import pybullet as pb

    st = src.state()
    for j, v in zip(dst.arm_idx + dst.finger_idx, np.concatenate([st.q, st.finger_q])):
        pb.resetJointState(dst.robot, j, float(v), 0.0, physicsClientId=dst.cid)
    pb.resetBasePositionAndOrientation(dst.cube, st.object_pos.tolist(), st.object_quat.tolist(),
                                       physicsClientId=dst.cid)
    pb.resetBasePositionAndOrientation(dst.goal_body, st.goal_pos.tolist(), [0, 0, 0, 1], physicsClientId=dst.cid)
    return dst


def measure(poses: int, seed: int) -> tuple[list[Candidate], dict]:
    import cv2
    import pybullet as pb

    cv2.setNumThreads(1)
    twin = TwinCore()
    cands, skipped = candidates(twin)
    m = twin.scene.object_marker
    config = MarkerConfig(dictionary=m.dictionary, marker_id=m.id, marker_size=m.size, side_ids=m.sides)
    T = twin_extrinsic(twin.scene)
    try:
        for cand in cands:  # warm-up: the layers, EGL's first frame, textures
            cand.draw(twin)
        rng = np.random.default_rng(seed)
        r = twin.region
        for _ in range(poses):
            for j, q in zip(twin.arm_idx, twin.home + rng.uniform(-0.3, 0.3, len(twin.arm_idx))):
                pb.resetJointState(twin.robot, j, q, physicsClientId=twin.cid)
            x, y = rng.uniform(r.object_low, r.object_high)
            yaw = rng.uniform(-math.pi, math.pi)
            truth = np.array([x, y, twin.object_half])
            pb.resetBasePositionAndOrientation(twin.cube, truth.tolist(), pb.getQuaternionFromEuler([0, 0, yaw]),
                                               physicsClientId=twin.cid)
            ref = None
            for cand in cands:
                c0, t0 = time.process_time(), time.perf_counter()
                frame = np.ascontiguousarray(cand.draw(twin))
                cand.cpu.append(time.process_time() - c0)
                cand.wall.append(time.perf_counter() - t0)
                if ref is None:
                    ref = frame
                u0, v0, w, h = cand.window
                cand.same.append(float((frame == ref[v0:v0 + h, u0:u0 + w]).all(axis=2).mean()))
                p = MarkerPoseEstimator(config, cand.K, T).estimate(frame)
                if p is not None:
                    cand.found["top" if p.marker_id == config.marker_id else "side"] += 1
                    cand.pos_err.append(float(np.linalg.norm(p.position - truth)))
                    cand.yaw_err.append(math.degrees(abs(angle_diff(p.yaw, yaw))))
        return cands, skipped
    finally:
        for cand in cands:
            cand.close()
        twin.close()


PROCESS_CONFIGS = (("tiny", "visual"), ("layered", "visual"), ("layered", "collision"))  # twin_node's choices


def camera_processes(seconds: float, slice_s: float = 10.0) -> list[dict]:
    """twin_node's camera process (:class:`vla_rl_ros.nodes._camera.Renderer`, a spawned child rendering 640x480
    through :class:`TwinCamera`), one per :data:`PROCESS_CONFIGS`, each asked for a frame as soon as its last one
    arrived, for ``seconds`` in all (after a warm-up frame), in turns of ``slice_s`` (so that the machine's load
    falls on all alike): frames per second, and the wall time from request to frame (a pose's age at the camera,
    before perception)."""
    from vla_rl_ros.nodes._camera import Renderer

    twin = TwinCore()
    st = twin.state()
    req = (np.concatenate([st.q, st.finger_q]), st.object_pos, st.object_quat, st.goal_pos, None)
    cams = [Renderer(twin.spec, twin.urdf_path, W, H, renderer=r, arm_shapes=a) for r, a in PROCESS_CONFIGS]

    def frame(cam) -> float:
        t0 = time.perf_counter()
        cam.request(*req)
        while cam.poll() is None:
            if not cam.alive:
                raise RuntimeError("the camera process died")
            time.sleep(0.002)
        return time.perf_counter() - t0

    try:
        for cam in cams:  # the first frame warms the child up (its scene, the layers)
            frame(cam)
        out = [dict(latency=[], seconds=0.0) for _ in cams]
        turns = max(1, round(seconds / slice_s))
        for _ in range(turns):
            for cam, o in zip(cams, out):
                start = time.perf_counter()
                while time.perf_counter() < start + seconds / turns:
                    o["latency"].append(frame(cam))
                o["seconds"] += time.perf_counter() - start
        return [dict(frames=len(o["latency"]), hz=len(o["latency"]) / o["seconds"], latency=np.array(o["latency"]))
                for o in out]
    finally:
        for cam in cams:
            cam.close()
        twin.close()


def row(c: Candidate, poses: int, ref_cpu: float) -> str:
    cpu = np.median(c.cpu)
    e, y = 1000 * np.array(c.pos_err), np.array(c.yaw_err)
    acc = (f"**{np.median(e):.1f}** | **{np.percentile(e, 95):.1f}** | **{np.median(y):.2f}**" if len(e)
           else "- | - | -")
    u0, v0, w, h = c.window
    return (f"| {c.name} | {w}×{h} | **{1000 * cpu:.0f}** | **{1 / cpu:.0f} Hz** | {ref_cpu / cpu:.1f}× | "
            f"{1000 * np.median(c.wall):.0f} | {100 * np.mean(c.same):.2f}% | "
            f"{100 * sum(c.found.values()) / poses:.0f}% (top {c.found['top']}, side {c.found['side']}) | {acc} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--poses", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--process-seconds", type=float, default=60.0,
                    help="how long twin_node's camera process runs back to back, per renderer (0: skip)")
    ap.add_argument("--note", default="", help="a sentence for the section (e.g. what else ran on the machine)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "twin_camera.md"))
    args = ap.parse_args()
    import cv2
    import pybullet as pb

    t_start, load0 = time.time(), os.getloadavg()[0]
    cands, skipped = measure(args.poses, args.seed)
    ref_cpu = float(np.median(cands[0].cpu))
    rows = [row(c, args.poses, ref_cpu) for c in cands]
    print("\n".join(rows), flush=True)
    proc_rows = []
    procs = camera_processes(args.process_seconds) if args.process_seconds > 0 else []
    for (renderer, arm), m in zip(PROCESS_CONFIGS, procs):
        lat = 1000 * m["latency"]
        proc_rows.append(f"| {renderer} | {arm} | {m['frames']} | **{m['hz']:.1f} Hz** | **{np.median(lat):.0f}** | "
                         f"{np.percentile(lat, 95):.0f} |")
        print(proc_rows[-1], flush=True)
    proc_text = "" if not proc_rows else f"""
twin_node's camera process (`vla_rl_ros/nodes/_camera.py`: a spawned child that renders 640×480 frames through
`TwinCamera`), asked for the next frame as soon as the last one arrived, {args.process_seconds:g} s per renderer in turns of
10 s, the arm at home: the frames it delivers per second of wall time on this machine, and each frame's age when it arrives
(request to frame, wall). twin_node asks at most `camera_rate_hz` (10 Hz in config/sim.yaml) and publishes at its
next camera tick.

| `camera_renderer` | `camera_arm` | frames | frames per second | request to frame, median (ms) | p95 (ms) |
| --- | --- | ---: | ---: | ---: | ---: |
{chr(10).join(proc_rows)}
"""
    cmd = "nice -n 19 .venv/bin/python bench/bench_twin_camera.py " + shlex.join(sys.argv[1:])
    egl_text = "" if "egl" in skipped else """

EGL: PyBullet's plugin shades with its own lights and draws shadows whatever `shadow` says (hence hardly a pixel
equal), and it draws none of the marker plates (it warns "issue extracting mesh from COLLADA/STL file" for each:
a mesh given by its vertices): no marker, no pose."""
    skipped_text = "".join(f" Not measured: {k} ({v})." for k, v in skipped.items())
    text = f"""## The twin's camera: TinyRenderer, EGL, a cropped frame and the layered renderer (`bench/bench_twin_camera.py`)

Command: `{cmd}`

Machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, PyBullet API {pb.getAPIVersion()}, OpenCV {cv2.__version__} (1 thread), Python {platform.python_version()}; shared machine, 1-min load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end; {time.time() - t_start:.0f} s.{(' ' + args.note) if args.note else ''}{skipped_text}

At {args.poses} seeded scenes (the arm near home, each joint moved by up to ±0.3 rad; the cube resting in the object
region at a random yaw) each candidate draws the frame of the scene's camera (640×480 unless cropped), and the
perception core (`vla_rl_ros/perception/aruco.py`, the sim's perception_node configuration: the top marker, then
the side ones) reads the cube's pose from it with the frame's own intrinsics. Draw time: the median per frame of
the process's CPU time (llvmpipe's threads included for EGL; on a shared machine it too rises with the load, if
far less than wall time: compare the rows of one run) and of wall time. "Same pixels": the share of the frame's pixels equal to the first row's (the cropped frame:
to that window of it). Errors are against the true pose, over the frames with a pose.{egl_text}

| candidate | frame | draw, CPU (ms) | rate on one core | vs first row | draw, wall (ms) | same pixels | detected | position error median (mm) | p95 (mm) | yaw error median (°) |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}
{proc_text}"""
    write_section(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
