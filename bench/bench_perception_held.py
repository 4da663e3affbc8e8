"""Perception during pick_place: how often the cube's pose is seen while it rests and while the hand holds it.

Usage::

    nice -n 19 .venv/bin/python bench/bench_perception_held.py [--episodes 10] [--every 3] [--note TEXT]
                                                               [--renderer layered|tiny]
                                                               [--arm-shapes visual|collision]
                                                               [--out docs/bench/perception_held.md]

The scripted expert (:class:`vla_rl_ros.twin.expert.ScriptedExpert`) runs ``--episodes`` seeded pick_place
episodes in the twin (seeds 0..N-1); every ``--every`` control ticks the twin camera
(:class:`vla_rl_ros.twin.camera.TwinCamera`, twin_node's ``camera_renderer`` and ``camera_arm``: ``--renderer``,
``--arm-shapes``; the arm's collision shapes are coarser occluders) renders a 640x480 frame and
the perception core reads it twice: with the top marker only, and with the top and side markers (the sim's
perception_node configuration). Frames are split by phase: the cube on the table (under 1 cm above its resting
height) or held above it. The hand hides the top marker from the grasp on: what the side markers are for.
"""
from __future__ import annotations

import argparse
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
from vla_rl_ros.perception.aruco import MarkerConfig, MarkerPoseEstimator, camera_matrix, twin_extrinsic  # noqa: E402
from vla_rl_ros.twin.camera import TwinCamera  # noqa: E402
from vla_rl_ros.twin.env import TwinEnv  # noqa: E402
from vla_rl_ros.twin.expert import ScriptedExpert  # noqa: E402

W, H = 640, 480


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--every", type=int, default=3, help="render every N control ticks")
    ap.add_argument("--note", default="")
    ap.add_argument("--renderer", default="layered", choices=("layered", "tiny"), help="twin_node's camera_renderer")
    ap.add_argument("--arm-shapes", default="visual", choices=("visual", "collision"), help="twin_node's camera_arm")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "perception_held.md"))
    args = ap.parse_args()
    import cv2

    cv2.setNumThreads(1)
    t_start, load0 = time.time(), os.getloadavg()[0]
    env = TwinEnv(task="pick_place")
    expert = ScriptedExpert(env.spec_)
    camera = TwinCamera(W, H, env.twin.spec, urdf_path=env.twin.urdf_path, renderer=args.renderer,
                        arm_shapes=args.arm_shapes)
    m = env.twin.scene.object_marker
    K, T = camera_matrix(*intrinsics(W, H)), twin_extrinsic(env.twin.scene)
    readers = {"top marker only": MarkerPoseEstimator(MarkerConfig(m.dictionary, m.id, m.size), K, T),
               "top and side markers": MarkerPoseEstimator(MarkerConfig(m.dictionary, m.id, m.size, side_ids=m.sides),
                                                           K, T)}
    stats = {(r, ph): [] for r in readers for ph in ("on the table", "held")}  # position errors, None = no pose
    successes = 0
    try:
        for seed in range(args.episodes):
            obs, _ = env.reset(seed=seed)
            done, k, info = False, 0, {}
            while not done:
                obs, _, term, trunc, info = env.step(expert(obs))
                done = term or trunc
                k += 1
                if k % args.every:
                    continue
                st = env.twin.state()
                phase = "held" if st.object_pos[2] > env.twin.object_half + 0.01 else "on the table"
                frame = camera.render_twin(env.twin)
                for name, est in readers.items():
                    p = est.estimate(frame)
                    stats[(name, phase)].append(None if p is None else float(np.linalg.norm(p.position - st.object_pos)))
            successes += bool(info.get("is_success"))
    finally:
        camera.close()
        env.close()
    rows = []
    for (name, phase), v in stats.items():
        e = 1000 * np.array([x for x in v if x is not None])
        rows.append(f"| {name} | {phase} | {len(v)} | **{100 * len(e) / max(1, len(v)):.0f}%** | "
                    + (f"{np.median(e):.1f} | {np.percentile(e, 95):.1f} |" if len(e) else "- | - |"))
    cmd = "nice -n 19 .venv/bin/python bench/bench_perception_held.py " + shlex.join(sys.argv[1:])
    camera = f"{args.renderer} renderer" + ("" if args.arm_shapes == "visual" else f", the arm's {args.arm_shapes} shapes")
    text = f"""## Perception while the hand holds the cube ({camera}) (`bench/bench_perception_held.py`)

Command: `{cmd}`

Machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, OpenCV {cv2.__version__} (1 thread), Python {platform.python_version()}; shared machine, 1-min load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end; {time.time() - t_start:.0f} s.{(' ' + args.note) if args.note else ''}

The scripted expert's pick_place in the twin, {args.episodes} seeded episodes (seeds 0..{args.episodes - 1}; it succeeded in
{successes}); every {args.every} control ticks a 640×480 frame of the twin camera (`vla_rl_ros/twin/camera.py`: renderer
`{args.renderer}`, the arm's `{args.arm_shapes}` shapes), read by the perception core with the top
marker only and with the top and side markers (ids 1–4, upright; the sim's perception_node configuration).
Phase: the cube on the table (within 1 cm of its resting height) or held above it. Position error against the
cube's true centre, over the frames with a pose.

| reader | phase | frames | with a pose | position error median (mm) | p95 (mm) |
| --- | --- | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}
"""
    write_section(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
