"""Hand-eye calibration of the camera's pose (eye-to-hand), in the twin against its known camera pose."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from vla_rl_ros.cli import main
from vla_rl_ros.perception.aruco import extrinsic_from_xyzquat, twin_extrinsic
from vla_rl_ros.perception.calibrate import (Sample, calibrate, consistency, hand_eye, pose_error, refine,
                                             solve_eye_to_hand, twin_samples)


def _random_pose(rng, scale=0.5):
    import cv2

    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rng.normal(size=3))[0]
    T[:3, 3] = rng.uniform(-scale, scale, 3)
    return T


def _inv(T):
    return np.linalg.inv(T)


@pytest.mark.parametrize("method", ["TSAI", "PARK", "HORAUD", "DANIILIDIS"])
def test_exact_poses_give_the_exact_camera(method):
    """Noise-free pairs: the camera's pose comes back exactly (the eye-to-hand inversion is the right way round)."""
    rng = np.random.default_rng(0)
    base_cam, ee_marker = _random_pose(rng, 1.0), _random_pose(rng, 0.1)
    base_ee = [_random_pose(rng) for _ in range(8)]
    cam_marker = [_inv(base_cam) @ T @ ee_marker for T in base_ee]
    T = solve_eye_to_hand(base_ee, cam_marker, method)
    dp, dr = pose_error(T, base_cam)
    assert dp < 1e-6 and dr < 1e-4
    samples = [Sample(np.zeros(7), a, b) for a, b in zip(base_ee, cam_marker)]
    assert consistency(T, samples)["position_rms_m"] < 1e-6
    wrong = base_cam.copy()
    wrong[:3, 3] += 0.01
    assert consistency(wrong, samples)["position_rms_m"] > 1e-3  # a wrong camera: the marker wanders on the hand
    with pytest.raises(ValueError):
        solve_eye_to_hand(base_ee[:2], cam_marker[:2])


def test_twin_calibration_finds_the_twin_camera(tmp_path):
    """The procedure in the twin (a marker on the hand, 10 postures, 640x480 frames): OpenCV's hand-eye solution
    within 6 cm / 1.5 deg of the scene's camera, refined on the corners within 4 mm / 0.3 deg; then the same
    frames, read back from the recording by `vla-rl-ros calibrate --samples`, give the same extrinsic."""
    samples, truth, tried = twin_samples(10, seed=1, frames_dir=str(tmp_path / "rec"))
    assert len(samples) == 10 and tried <= 40
    np.testing.assert_allclose(truth, twin_extrinsic(), atol=1e-12)
    T = hand_eye(samples)
    dp, dr = pose_error(T, truth)
    assert dp < 0.06 and dr < 1.5, (dp, dr)
    from vla_rl_ros.nodes._camera import intrinsics
    from vla_rl_ros.perception.aruco import camera_matrix

    K = camera_matrix(*intrinsics(640, 480))
    T2, rms0, rms1 = refine(T, samples, K, 0.06)
    dp2, dr2 = pose_error(T2, truth)
    assert dp2 < 0.004 and dr2 < 0.3 and rms1 < 0.3 < rms0, (dp2, dr2, rms0, rms1)
    assert pose_error(calibrate(samples, K, 0.06)[0], truth)[0] < 0.004

    out = tmp_path / "extrinsic.yaml"
    assert main(["calibrate", "--samples", str(tmp_path / "rec" / "samples.yaml"), "--out", str(out)]) == 0
    p = yaml.safe_load(out.read_text())["perception_node"]["ros__parameters"]
    assert p["extrinsic_from_scene"] is False
    dp3, dr3 = pose_error(extrinsic_from_xyzquat(p["camera_xyz"], p["camera_quat"]), truth)
    assert dp3 < 0.004 and dr3 < 0.3, (dp3, dr3)


def test_sim_perception_calibrates_the_camera_the_gap_moved(tmp_path):
    """`sim --perception` under a reality gap that moves the camera (the params file's 1 cm and 0.6 deg): the
    moved camera is calibrated by hand-eye in the arm's twin, and perception_node gets the solved extrinsic
    (within 4 mm and 0.3 deg of the moved camera's real pose, against 17 mm for the nominal one), not the scene's
    nominal pose. Without a camera gap, or with an extrinsic the user gives, nothing is calibrated."""
    from vla_rl_ros.cli import build_parser
    from vla_rl_ros.commands.sim import _calibrate_camera, plan
    from vla_rl_ros.twin.gap import RealityGap

    def perception_args(*extra):
        args = build_parser().parse_args(["sim", "--task", "pick_place", "--perception", "--run",
                                          str(tmp_path / "run"), *extra])
        pl = plan(args)
        before = list(pl.commands["perception_node"])
        (tmp_path / "run").mkdir(exist_ok=True)
        _calibrate_camera(pl, args, str(tmp_path / "run"))
        cmd = pl.commands["perception_node"]
        assert cmd[:len(before)] == before
        return {k: yaml.safe_load(v) for k, v in (a.split(":=", 1) for f, a in zip(cmd, cmd[1:])
                                                   if f == "-p" and (f, a) not in zip(before, before[1:]))}

    got = perception_args()
    assert got["extrinsic_from_scene"] is False
    moved = RealityGap(camera_shift_m=(0.01, -0.01, 0.01), camera_pan_rad=0.01)  # config/sim.yaml's twin_node gap
    from vla_rl_ros.perception.aruco import extrinsic_from_look_at
    from vla_rl_ros.twin.core import Scene

    sc = Scene.load(None)
    truth = extrinsic_from_look_at(*moved.camera(sc.camera_eye, sc.camera_target))
    dp, dr = pose_error(extrinsic_from_xyzquat(got["camera_xyz"], got["camera_quat"]), truth)
    assert dp < 0.004 and dr < 0.3, (dp, dr)
    assert pose_error(twin_extrinsic(), truth)[0] > 0.015  # what the nominal pose would have been off by
    saved = yaml.safe_load((tmp_path / "run" / "camera_extrinsic.yaml").read_text())["perception_node"]
    assert saved["ros__parameters"]["camera_xyz"] == pytest.approx(got["camera_xyz"], abs=1e-5)
    assert perception_args("--gap", "0") == {}  # the camera where the scene says: its nominal pose is exact
    assert perception_args("--set", "perception_node.extrinsic_from_scene:=false") == {}  # the user's extrinsic


def test_record_saves_frames_joints_and_intrinsics_from_a_live_camera(launch, probe, ros_env, tmp_path):
    """`calibrate --record DIR --every S`: from twin_node's 640x480 camera and joint states, a samples.yaml that
    `--samples` reads (the arm's joints in the spec's order, the CameraInfo's intrinsics, one PNG per sample)."""
    import subprocess
    import sys

    import cv2
    from sensor_msgs.msg import Image

    from conftest import REPO, params_file
    from vla_rl_ros.nodes._camera import intrinsics
    from vla_rl_ros.runtime.control import PANDA_HOME

    probe.collect("/camera/image_raw", Image)
    launch("twin_node", params_file(tmp_path / "p.yaml", twin_node={
        "camera_enabled": True, "camera_width": 640, "camera_height": 480, "camera_rate_hz": 5.0, "seed": 3}))
    probe.wait_for(lambda: probe.get("/camera/image_raw"), 90, "camera frames")
    out = tmp_path / "rec"
    res = subprocess.run([sys.executable, "-m", "vla_rl_ros.cli", "calibrate", "--record", str(out), "--every", "0.5",
                          "--count", "3"], env=ros_env.env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = yaml.safe_load((out / "samples.yaml").read_text())
    assert len(doc["samples"]) == 3
    np.testing.assert_allclose(doc["intrinsics"], intrinsics(640, 480))
    for s in doc["samples"]:
        np.testing.assert_allclose(s["joints"], PANDA_HOME, atol=0.05)
        assert cv2.imread(str(out / s["image"])).shape == (480, 640, 3)
    assert "marker found" in res.stdout  # the cube's marker (DICT_4X4_50 id 0) is in view at seed 3
