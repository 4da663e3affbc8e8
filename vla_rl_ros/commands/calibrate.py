"""``vla-rl-ros calibrate``: the camera's pose in the base frame (perception_node's extrinsic), by hand-eye
calibration with a marker held by the arm (:mod:`vla_rl_ros.perception.calibrate`).

    vla-rl-ros calibrate --record cell/ --params config/robot.yaml   # Enter at each posture, q to finish
    vla-rl-ros calibrate --samples cell/samples.yaml --params config/robot.yaml --out cell/extrinsic.yaml
    vla-rl-ros calibrate --twin [--poses 20]     # the same procedure in the twin, checked against its camera

Move the arm, holding the marker rigidly (taped flat to the hand), to 15-30 postures that turn the hand
in every axis (10-30 degrees) while the camera sees the marker, and record at each one the arm's joint
positions and a camera frame (``--record``, or by other means: ``samples.yaml``, see
:func:`~vla_rl_ros.perception.calibrate.samples_from_file`).
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
    src.add_argument("--record", metavar="DIR", help="record samples from a live cell over ROS into DIR (frames + "
                                                     "DIR/samples.yaml), for --samples")
    r = p.add_argument_group("--record")
    r.add_argument("--joint-states", default="/joint_states", help="sensor_msgs/JointState topic (default /joint_states)")
    r.add_argument("--image", default="/camera/image_raw", help="sensor_msgs/Image topic")
    r.add_argument("--camera-info", default="/camera/camera_info", help="sensor_msgs/CameraInfo topic")
    r.add_argument("--marker-size", type=float, default=0.06, help="m: the hand's marker's black square (default 0.06)")
    r.add_argument("--marker-id", type=int, default=0)
    r.add_argument("--dictionary", default="DICT_4X4_50")
    r.add_argument("--every", type=float, default=0.0, metavar="S",
                   help="save a sample every S seconds (a scripted motion) instead of at each Enter")
    r.add_argument("--count", type=int, default=1000, help="stop after this many samples")
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
    if args.record:
        return record(args, arm)
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


def record(args, arm) -> int:
    """``--record DIR``: samples for ``--samples`` from a live cell: each Enter (or every ``--every`` s) saves the
    latest camera frame as DIR/NNN.png and the arm's joint positions into DIR/samples.yaml, with the intrinsics
    of the latest CameraInfo, and says whether the marker is in the frame."""
    import os
    import threading
    import time

    import cv2
    import numpy as np
    import rclpy
    import yaml
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image, JointState

    from ..perception.aruco import MarkerConfig, MarkerPoseEstimator

    joints = list(arm.spec.arm_joints)
    latest: dict = {}
    lock = threading.Lock()

    def keep(key):
        def cb(msg):
            with lock:
                latest[key] = msg
        return cb

    rclpy.init(args=None)
    node = rclpy.create_node("vla_rl_ros_calibrate")
    node.create_subscription(JointState, args.joint_states, keep("js"), qos_profile_sensor_data)
    node.create_subscription(Image, args.image, keep("img"), qos_profile_sensor_data)
    node.create_subscription(CameraInfo, args.camera_info, keep("info"), qos_profile_sensor_data)
    stop = threading.Event()
    spin = threading.Thread(target=_spin, args=(node, stop), daemon=True)
    spin.start()
    os.makedirs(args.record, exist_ok=True)
    path = os.path.join(args.record, "samples.yaml")
    doc = {"intrinsics": None, "distortion": None,
           "marker": {"dictionary": args.dictionary, "id": args.marker_id, "size": args.marker_size}, "samples": []}
    saved = 0
    try:
        print(f"[calibrate] recording into {path}: joints {joints} from {args.joint_states}, frames from {args.image}"
              + ("" if args.every else "; Enter = save a sample, q + Enter = finish"), flush=True)
        while saved < args.count:
            if args.every:
                time.sleep(args.every)
            elif input().strip().lower() == "q":
                break
            with lock:
                js, img, info = latest.get("js"), latest.get("img"), latest.get("info")
            pos = dict(zip(js.name, js.position)) if js is not None else {}
            if img is None or info is None or any(j not in pos for j in joints):
                print(f"[calibrate] not saved: waiting for {'a frame ' if img is None else ''}"
                      f"{'camera_info ' if info is None else ''}{'all arm joints' if any(j not in pos for j in joints) else ''}",
                      flush=True)
                continue
            frame = _image_bgr(img)
            if frame is None:
                print(f"[calibrate] not saved: image encoding {img.encoding!r} (rgb8, bgr8 or mono8)", flush=True)
                continue
            K = np.asarray(info.k, dtype=float).reshape(3, 3)
            doc["intrinsics"] = [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])]
            doc["distortion"] = [float(v) for v in info.d] or [0.0] * 5
            name = f"{len(doc['samples']):03d}.png"
            cv2.imwrite(os.path.join(args.record, name), frame)
            doc["samples"].append({"joints": [float(pos[j]) for j in joints], "image": name})
            with open(path + ".tmp", "w") as f:
                yaml.safe_dump(doc, f, sort_keys=False)
            os.replace(path + ".tmp", path)
            saved += 1
            est = MarkerPoseEstimator(MarkerConfig(dictionary=args.dictionary, marker_id=args.marker_id,
                                                   marker_size=args.marker_size), K, np.eye(4), doc["distortion"])
            seen = est.detect(frame[:, :, ::-1]) is not None
            print(f"[calibrate] sample {saved}: {name}, marker {'found' if seen else 'NOT found (move the arm)'}",
                  flush=True)
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        stop.set()
        spin.join(timeout=5.0)  # before the node goes: an rclpy wait in flight aborts the process otherwise
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"[calibrate] {saved} samples in {path}; then: vla-rl-ros calibrate --samples {path}"
          + (f" --params {args.params}" if args.params else ""))
    return 0


def _spin(node, stop) -> None:
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.1)
    finally:
        ex.remove_node(node)
        ex.shutdown()


def _image_bgr(msg):
    import numpy as np

    ch = {"rgb8": 3, "bgr8": 3, "mono8": 1}.get(msg.encoding)
    if ch is None or msg.height * msg.step != len(msg.data):
        return None
    a = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, :msg.width * ch]
    if ch == 1:
        return np.repeat(a[:, :, None], 3, axis=2)
    a = a.reshape(msg.height, msg.width, 3)
    return np.ascontiguousarray(a[:, :, ::-1] if msg.encoding == "rgb8" else a)
