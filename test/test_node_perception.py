"""perception_node against twin_node's camera (640x480), both in their own processes, real rclpy and cv2."""
from __future__ import annotations

import math

import numpy as np
import yaml
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from conftest import REPO, params_file

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
CAMERA = {"camera_enabled": True, "camera_width": 640, "camera_height": 480, "camera_rate_hz": 5.0,
          "seed": 3, "topics": {"object_pose": "/twin/object_pose"}}  # the twin's ground truth, aside


def _start(launch, probe, tmp_path, common=None):
    probe.collect("/twin/object_pose", PoseStamped, RELIABLE)
    probe.collect("/task/object_pose", PoseStamped, RELIABLE)
    probe.collect("/perception/object_pose", PoseWithCovarianceStamped, RELIABLE)
    probe.collect("/camera/image_raw", Image)
    p = params_file(tmp_path / "p.yaml", common=common, twin_node=CAMERA,
                    perception_node={"extrinsic_from_scene": True})
    launch("twin_node", p)
    return launch("perception_node", p)


def test_perceived_pose_matches_the_twins_ground_truth(launch, probe, tmp_path):
    _start(launch, probe, tmp_path)
    probe.wait_for(lambda: len(probe.get("/task/object_pose")) >= 3, 120, "3 perceived object poses")
    truth = probe.get("/twin/object_pose")[-1][1].pose
    for _, m in probe.get("/task/object_pose"):
        assert m.header.frame_id == "panda_link0"
        err = np.linalg.norm([m.pose.position.x - truth.position.x, m.pose.position.y - truth.position.y,
                              m.pose.position.z - truth.position.z])
        assert err < 0.01, err
        q, t = m.pose.orientation, truth.orientation
        yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y ** 2 + q.z ** 2))
        yaw_t = math.atan2(2 * (t.w * t.z + t.x * t.y), 1 - 2 * (t.y ** 2 + t.z ** 2))
        assert abs((yaw - yaw_t + math.pi) % (2 * math.pi) - math.pi) < math.radians(3)
    cov = probe.wait_for(lambda: probe.get("/perception/object_pose"), 10, "the covariance topic")[-1][1]
    c = np.array(cov.pose.covariance).reshape(6, 6)
    assert np.all(np.linalg.eigvalsh(c[:3, :3]) > 0) and np.sqrt(np.linalg.eigvalsh(c[:3, :3]).max()) < 0.02


def test_no_pose_without_a_marker(launch, probe, tmp_path):
    """The same twin with a cube that carries no marker: frames arrive, no pose is published."""
    with open(f"{REPO}/sim/panda_table.yaml") as f:
        scene = yaml.safe_load(f)
    del scene["object"]["marker"]
    (tmp_path / "scene.yaml").write_text(yaml.safe_dump(scene))
    node = _start(launch, probe, tmp_path, common={"scene": str(tmp_path / "scene.yaml")})
    probe.wait_for(lambda: "perception_node:" in node.log(), 60, "perception_node up")
    n0 = len(probe.get("/camera/image_raw"))
    probe.wait_for(lambda: len(probe.get("/camera/image_raw")) >= n0 + 8, 120, "8 more camera frames")
    assert probe.get("/twin/object_pose"), "the twin runs"
    assert probe.get("/task/object_pose") == [] and probe.get("/perception/object_pose") == []
