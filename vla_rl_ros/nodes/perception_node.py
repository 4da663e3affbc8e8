"""perception_node: camera frames -> the object's pose in the base frame, from an ArUco marker on it.

A thin rclpy shell over :class:`~vla_rl_ros.perception.aruco.MarkerPoseEstimator`. It reads
``/camera/image_raw`` (``rgb8``, ``bgr8`` or ``mono8``) and ``/camera/camera_info`` (the intrinsics: ``K``
and ``D``), both with sensor-data QoS, and for each frame in which it finds one of the object's markers (on
its top face, ``marker_id``, and on its sides, ``side_marker_ids``: the top is hidden while the hand holds
it), sure enough, publishes the pose from the surest one:

* ``/task/object_pose`` (``geometry_msgs/PoseStamped``, frame ``base_link``, the image's stamp): the
  object's centre and the marker's orientation, what ``policy_node`` reads;
* ``/perception/object_pose`` (``geometry_msgs/PoseWithCovarianceStamped``): the same pose with its
  first-order position covariance (orientation: a fixed ``orientation_variance``).

When it is unsure (no marker, too small, reprojection error or predicted position error too large) it
publishes nothing: ``policy_node`` then holds once its ``pose_timeout_s`` passes, as when any pose source
goes quiet.

With ``track_max_age_s`` > 0 it bridges such gaps (:mod:`~vla_rl_ros.perception.tracking`): on a frame
without a detection it publishes the object's predicted pose, resting where it was last seen or, once the
hand has closed on it, carried by the hand (the hand's pose from the arm's joint states and the URDF), for at
most ``track_max_age_s`` after the last detection, its covariance growing with the prediction's age. For
that it reads the joint states (``topics.joint_states`` and ``topics.extra_joint_states``, merged by name as
``policy_node`` does) and ``/rl/episode`` (a new episode forgets the object). With 0 (the default) it
publishes detections only.

The camera's pose in the base frame (the extrinsic: its optical frame, x right, y down, z forward) is
``camera_xyz`` + ``camera_quat`` from the params file (``vla-rl-ros calibrate`` measures it on a cell), or,
with ``extrinsic_from_scene`` (the twin), the twin scene's camera eye and target
(:func:`~vla_rl_ros.perception.aruco.twin_extrinsic`).
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String

from ..perception.aruco import (DICTIONARIES, MarkerConfig, MarkerPoseEstimator, extrinsic_from_xyzquat,
                                twin_extrinsic)
from ..perception.tracking import ObjectTracker, TrackerConfig
from ._common import RateLimitedLog, declare, declare_arm, declare_joint_state_topics, make_matcher, run_node

RELIABLE_10 = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)

TOPICS = {
    "image": ("/camera/image_raw", "sensor_msgs/Image in (rgb8 | bgr8 | mono8; sensor-data QoS)"),
    "camera_info": ("/camera/camera_info", "sensor_msgs/CameraInfo in: K and D (sensor-data QoS)"),
    "object_pose": ("/task/object_pose", "geometry_msgs/PoseStamped out: the object, base frame"),
    "object_pose_covariance": ("/perception/object_pose",
                               "geometry_msgs/PoseWithCovarianceStamped out: the same, with its covariance"),
    "joint_states": ("/joint_states", "sensor_msgs/JointState in, with track_max_age_s > 0: the hand's pose"),
    "episode": ("/rl/episode", "std_msgs/String in, with track_max_age_s > 0: a new episode forgets the object"),
}
CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}


class PerceptionNode(Node):
    def __init__(self, **kwargs):
        super().__init__("perception_node", **kwargs)
        arm = declare_arm(self, scene=True)
        self.base_frame = arm.spec.base_link
        d = MarkerConfig()
        cfg = MarkerConfig(
            dictionary=declare(self, "marker_dictionary", d.dictionary, "cv2.aruco dictionary of the marker",
                               additional=" | ".join(DICTIONARIES)),
            marker_id=declare(self, "marker_id", d.marker_id, "id of the marker on the object's top face (-1: none)",
                              lo=-1, hi=1023),
            side_ids=tuple(self.declare_parameter(
                "side_marker_ids", Parameter.Type.INTEGER_ARRAY, ParameterDescriptor(
                    description="ids of the markers on the object's side faces +x, +y, -x, -y (upright; -1 = "
                                "none on that face); unset = none", read_only=True)).value or ()),
            marker_size=declare(self, "marker_size", d.marker_size, "m: side of the marker's black square",
                                lo=0.001, hi=2.0),
            center_offset=declare(self, "center_offset", d.center_offset, "m from the marker's centre to the "
                                  "object's, into the object along the marker's normal (a cube's half height)",
                                  lo=-1.0, hi=1.0),
            min_side_px=declare(self, "min_side_px", d.min_side_px, "px: a marker whose shorter side is shorter "
                                "is ignored", lo=1.0, hi=1000.0),
            max_reprojection_px=declare(self, "max_reprojection_px", d.max_reprojection_px,
                                        "px: RMS reprojection error above which the pose is dropped", lo=0.01, hi=100.0),
            max_position_std_m=declare(self, "max_position_std_m", d.max_position_std_m,
                                       "m: predicted position standard deviation above which the pose is dropped "
                                       "(the confidence gate)", lo=1e-5, hi=10.0),
            max_view_angle_deg=declare(self, "max_view_angle_deg", d.max_view_angle_deg,
                                       "deg: a marker seen more edge-on than this is dropped", lo=1.0, hi=90.0),
            refine_shift_frac=declare(self, "refine_shift_frac", d.refine_shift_frac,
                                      "refined corners farther than max(2 px, this x the marker's side) from the "
                                      "first pass's are dropped", lo=0.0, hi=1.0),
        )
        from_scene = declare(self, "extrinsic_from_scene", False,
                             "the twin: the camera's pose from the scene's camera eye/target (else camera_xyz/quat)")
        xyz = declare(self, "camera_xyz", [0.0, 0.0, 1.0], "m: the camera's optical frame's origin in the base frame")
        quat = declare(self, "camera_quat", [1.0, 0.0, 0.0, 0.0],
                       "the camera's optical frame's orientation in the base frame (x, y, z, w; z forward, y down)")
        self.orientation_variance = declare(self, "orientation_variance", 0.01, "rad^2 on each rotation axis, in "
                                            "the covariance topic", lo=0.0, hi=100.0)
        td = TrackerConfig()
        tracker = TrackerConfig(
            max_age_s=declare(self, "track_max_age_s", 0.0, "s: between detections, publish the object's pose "
                              "predicted from the hand (resting, or carried once grasped) for at most this long "
                              "after the last detection; 0 = detections only", lo=0.0, hi=60.0),
            held_width_m=declare(self, "track_held_width_m", td.held_width_m, "m: a gripper opening below this "
                                 "can hold the object", lo=0.0, hi=1.0),
            held_min_width_m=declare(self, "track_held_min_width_m", td.held_min_width_m, "m: and above this "
                                     "(shut on nothing below it)", lo=0.0, hi=1.0),
            held_distance_m=declare(self, "track_held_distance_m", td.held_distance_m, "m: the object's centre "
                                    "within this of the hand (the ee link) counts as in the hand", lo=0.0, hi=1.0),
            std_growth_m_per_s=declare(self, "track_std_growth_m_per_s", td.std_growth_m_per_s, "m/s: a "
                                       "prediction's position std grows by this per second of age", lo=0.0, hi=10.0),
        )
        self.executor_kind = declare(self, "executor", "single_threaded", "events | single_threaded")
        topics = {k: declare(self, f"topics.{k}", v, desc) for k, (v, desc) in TOPICS.items()}
        if len(xyz) != 3 or len(quat) != 4:
            raise ValueError(f"camera_xyz needs 3 values and camera_quat 4, got {len(xyz)} and {len(quat)}")
        T = twin_extrinsic(arm.scene) if from_scene else extrinsic_from_xyzquat(xyz, quat)
        self.config, self.T_base_camera = cfg, T
        self.estimator: MarkerPoseEstimator | None = None  # made at the first CameraInfo
        self._K = None
        self.frames = self.published = self.predicted = 0
        self._log = RateLimitedLog(self.get_logger(), period_s=10.0)
        self.tracker = ObjectTracker(tracker) if tracker.max_age_s > 0 else None
        if self.tracker is not None:
            from ..kinematics import Kinematics

            spec = arm.spec
            self.kin = Kinematics(arm.urdf, spec.base_link, spec.ee_link, spec.arm_joints)
            self.matcher = make_matcher(arm)
            for t in declare_joint_state_topics(self, topics["joint_states"]):
                self.create_subscription(JointState, t, self._on_joint_state, qos_profile_sensor_data)
            self.create_subscription(String, topics["episode"], lambda _m: self.tracker.reset(), 10)

        self.pub_pose = self.create_publisher(PoseStamped, topics["object_pose"], RELIABLE_10)
        self.pub_cov = self.create_publisher(PoseWithCovarianceStamped, topics["object_pose_covariance"], RELIABLE_10)
        self.create_subscription(CameraInfo, topics["camera_info"], self._on_info, qos_profile_sensor_data)
        self.create_subscription(Image, topics["image"], self._on_image, qos_profile_sensor_data)
        xyz_s = np.round(T[:3, 3], 4).tolist()
        self.get_logger().info(
            f"perception_node: {cfg.dictionary} id {cfg.marker_id} (top), {list(cfg.side_ids)} (sides), "
            f"{1000 * cfg.marker_size:g} mm, camera at "
            f"{xyz_s} in {self.base_frame} ({'twin scene' if from_scene else 'camera_xyz/camera_quat'}); "
            f"publishes {topics['object_pose']} when the predicted position std <= {cfg.max_position_std_m} m"
            + (f"; between detections, the pose predicted from the hand for up to {tracker.max_age_s:g} s"
               if self.tracker is not None else ""))

    def _on_info(self, msg: CameraInfo) -> None:
        K = tuple(float(v) for v in msg.k)
        if K == self._K:
            return
        try:
            if self.estimator is None:
                self.estimator = MarkerPoseEstimator(self.config, K, self.T_base_camera, list(msg.d))
            else:
                self.estimator.set_camera(K, list(msg.d))
        except ValueError as e:
            self._log(f"camera_info refused: {e}")
            return
        self._K = K

    def _on_image(self, msg: Image) -> None:
        if self.estimator is None:
            self._log("no camera_info yet: frames are ignored until the intrinsics arrive")
            return
        ch = CHANNELS.get(msg.encoding)
        if ch is None or msg.height * msg.step != len(msg.data) or msg.step < msg.width * ch:
            self._log(f"image refused: encoding {msg.encoding!r} {msg.width}x{msg.height} step {msg.step} "
                      f"with {len(msg.data)} bytes (rgb8, bgr8 or mono8 expected)")
            return
        buf = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, :msg.width * ch]
        img = buf.reshape(msg.height, msg.width, ch) if ch > 1 else buf
        if msg.encoding == "bgr8":
            img = img[:, :, ::-1]
        self.frames += 1
        est = self.estimator.estimate(np.ascontiguousarray(img))
        if self.tracker is None:
            if est is not None:
                self.published += 1
                self._publish(msg.header.stamp, est.position, est.quaternion, est.covariance)
            return
        t = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        hand = self._hand()
        if est is not None:
            self.tracker.detection(t, est.position, est.quaternion, est.position_std, hand,
                                   self.matcher.gripper_width if hand is not None else None)
            self.published += 1
            self._publish(msg.header.stamp, est.position, est.quaternion, est.covariance)
            return
        pred = self.tracker.predict(t, hand)
        if pred is not None:
            self.predicted += 1
            self._publish(msg.header.stamp, pred.position, pred.quaternion, np.eye(3) * pred.std_m ** 2)

    def _hand(self) -> np.ndarray | None:
        """The hand's pose now (None before the arm's joint states have arrived)."""
        return self.kin.fk(self.matcher.q) if self.matcher.valid else None

    def _on_joint_state(self, msg: JointState) -> None:
        err = self.matcher.update(msg.name, msg.position)
        if err is not None:
            self._log(f"rejected joint state: {err}")
            return
        if self.matcher.valid and self.tracker.needs_hand(self.matcher.gripper_width):
            self.tracker.hand(self.kin.fk(self.matcher.q), self.matcher.gripper_width)

    def _publish(self, stamp, position, quaternion, covariance) -> None:
        p = PoseStamped()
        p.header.stamp = stamp
        p.header.frame_id = self.base_frame
        p.pose.position.x, p.pose.position.y, p.pose.position.z = (float(v) for v in position)
        o = p.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in quaternion)
        self.pub_pose.publish(p)
        c = PoseWithCovarianceStamped()
        c.header = p.header
        c.pose.pose = p.pose
        cov = np.zeros((6, 6))
        cov[:3, :3] = covariance
        cov[3:, 3:] = np.eye(3) * self.orientation_variance
        c.pose.covariance = [float(v) for v in cov.ravel()]
        self.pub_cov.publish(c)


def main(args=None) -> None:
    run_node(PerceptionNode, args)


if __name__ == "__main__":
    main()
