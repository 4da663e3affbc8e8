"""``vla-rl-ros calibrate``: the camera's pose in the base frame (perception_node's extrinsic), by hand-eye
calibration with a marker held by the arm (:mod:`vla_rl_ros.perception.calibrate`).

    vla-rl-ros calibrate --samples cell/samples.yaml --params config/robot.yaml --out cell/extrinsic.yaml
    vla-rl-ros calibrate --twin [--poses 20]     # the same procedure in the twin, checked against its camera

Move the arm, holding the marker rigidly (taped flat to the hand), to 15-30 postures that turn the hand
in every axis (10-30 degrees) while the camera sees the marker, and record at each one the arm's joint
positions and a camera frame (``samples.yaml``: see :func:`~vla_rl_ros.perception.calibrate.samples_from_file`).
The result is a ``perception_node`` section (``camera_xyz``, ``camera_quat``) for the robot's params file.
"""
from __future__ import annotations

import sys


def register(sub) -> None:
    from ..perception.calibrate import METHODS

    p = sub.add_parser("calibrate", help="the camera's pose in the base frame (perception_node's extrinsic) by "
                                         "hand-eye calibration with a marker held by the arm")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", metavar="FILE", help="recorded postures: joints + images (YAML; see the verb's doc)")
    src.add_argument("--twin", action="store_true", help="run the procedure in the twin and compare with its "
                                                          "camera's known pose")
    p.add_argument("--params", default=None, help="the arm's params file (URDF, joints, links: its /** section; "
                                                   "default: the Panda)")
    p.add_argument("--poses", type=int, default=20, help="--twin: postures with the marker seen (default 20)")
    p.add_argument("--seed", type=int, default=0, help="--twin: the postures' seed")
    p.add_argument("--method", choices=METHODS, default="PARK", help="cv2.calibrateHandEye's method (default PARK)")
    p.add_argument("--no-refine", action="store_true",
                   help="keep OpenCV's hand-eye solution (default: refined on the corners' reprojection error)")
    p.add_argument("--out", default=None, help="write the perception_node section here (default: print it)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..arm import read_arm
    from ..nodes._camera import intrinsics
    from ..perception.aruco import camera_matrix
    from ..perception.calibrate import (calibrate, consistency, extrinsic_yaml, hand_eye, pose_error,
                                        samples_from_file, twin_samples)

    arm = read_arm(args.params)
    truth = None
    if args.twin:
        if args.poses < 3:
            print("vla-rl-ros calibrate: error: --poses must be at least 3", file=sys.stderr)
            return 2
        size = 0.06
        samples, truth, tried = twin_samples(args.poses, seed=args.seed, marker_size=size, arm=arm)
        K, dist = camera_matrix(*intrinsics(640, 480)), None
        print(f"[calibrate] twin: marker seen at {len(samples)} of {tried} postures")
    else:
        samples, K, dist, marker = samples_from_file(args.samples, arm)
        size = float(marker["size"])
        print(f"[calibrate] {args.samples}: marker found in {len(samples)} samples")
    if len(samples) < 3:
        print(f"vla-rl-ros calibrate: error: the marker was found in {len(samples)} samples; at least 3 are "
              f"needed (15-30 with the hand turned in every axis give a good solution)", file=sys.stderr)
        return 2
    T = hand_eye(samples, args.method)
    n_sure = sum(not s.ambiguous for s in samples)
    lines = [f"hand-eye ({args.method}), {n_sure if n_sure >= 3 else len(samples)} samples with an unambiguous "
             f"marker pose: " + _describe(T, samples, truth, consistency,
                                                                               pose_error)]
    if not args.no_refine:
        T, _, rms1 = calibrate(samples, K, size, dist, args.method)
        lines.append(f"refined on all {len(samples)} samples (corner reprojection RMS {rms1:.2f} px): "
                     + _describe(T, samples, truth, consistency, pose_error))
    for line in lines:
        print(f"[calibrate] {line}")
    text = extrinsic_yaml(T, "vla-rl-ros calibrate: " + "\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"[calibrate] wrote {args.out}")
    else:
        print(text, end="")
    return 0


def _describe(T, samples, truth, consistency, pose_error) -> str:
    c = consistency(T, samples)
    s = (f"camera at {[round(float(v), 4) for v in T[:3, 3]]}; marker on the hand constant to "
         f"{1000 * c['position_rms_m']:.1f} mm / {c['rotation_rms_deg']:.2f} deg RMS")
    if truth is not None:
        dp, dr = pose_error(T, truth)
        s += f"; vs the twin camera's true pose: {1000 * dp:.1f} mm, {dr:.2f} deg"
    return s
