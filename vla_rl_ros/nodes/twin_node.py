"""twin_node: the PyBullet twin speaking the robot interface (docs: /work/shared/design/interface.md).

A thin rclpy shell over :class:`~vla_rl_ros.twin.core.TwinCore`. Physics is
stepped in real time by a timer at ``physics_rate_hz`` (it catches up when a
callback comes late, at most ``max_catchup_steps`` at once). Like a robot under
ros2_control it publishes ``/joint_states`` (arm + finger joints: positions,
velocities, efforts; sensor-data QoS) and takes position targets on
``/arm_controller/commands`` (one per configured joint, configured order) and
an opening width on ``/gripper_controller/commands``. A command with the wrong
length or a NaN is rejected with a log and the previous target is kept.

It also plays perception: ``/task/object_pose`` and ``/task/goal_pose``
(PoseStamped in the base frame), and optionally a camera (``camera_enabled``:
``/camera/image_raw`` rgb8 + ``/camera/camera_info``, rendered in a child
process, see :mod:`._camera`). ``/twin/reset`` (std_srvs/Trigger) starts a new
episode: arm home, object and goal drawn with seed ``seed + k`` for the k-th
episode (episode 0 is the one at start-up); the response message reads
``seed=<n> episode=<k> ...``. ``/clock`` is published only when
``publish_clock`` is true; stamps are then simulated time.

In ``vla-rl-ros sim`` it is the arm, and it differs from the learner's gate twin by a
reality gap (:class:`~vla_rl_ros.twin.gap.RealityGap`, the ``gap_*`` parameters,
scaled by ``gap_scale``): the object's friction, mass and size, commands applied
``gap_actuation_delay_s`` late (a FIFO, in simulated time), Gaussian noise on the
published joint positions and object/goal positions (seeded by ``seed``; the
physics state stays exact), and a moved camera. ``gap_scale`` 0 is no gap.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
import pybullet as pb
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from ..runtime.inputs import validate_command
from ..twin.camera import RENDERERS
from ..twin.core import ARM_SHAPES, TwinCore
from ..twin.gap import RealityGap, SensorNoise
from ._common import RateLimitedLog, declare, declare_arm, run_node

RELIABLE_10 = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)

TOPICS = {
    "joint_states": ("/joint_states", "sensor_msgs/JointState out (sensor-data QoS)"),
    "object_pose": ("/task/object_pose", "geometry_msgs/PoseStamped out: the cube, base frame"),
    "goal_pose": ("/task/goal_pose", "geometry_msgs/PoseStamped out: the goal, base frame"),
    "image": ("/camera/image_raw", "sensor_msgs/Image out (rgb8), when camera_enabled"),
    "camera_info": ("/camera/camera_info", "sensor_msgs/CameraInfo out, when camera_enabled"),
    "arm_command": ("/arm_controller/commands", "std_msgs/Float64MultiArray in: arm joint position targets"),
    "gripper_command": ("/gripper_controller/commands", "std_msgs/Float64MultiArray in: gripper opening (m)"),
}


class TwinNode(Node):
    def __init__(self, **kwargs):
        super().__init__("twin_node", **kwargs)
        arm = declare_arm(self, scene=True)
        self.spec = spec = arm.spec
        self.physics_rate = declare(self, "physics_rate_hz", 240.0, "physics steps per second of real time", lo=10.0, hi=2000.0)
        js_rate = declare(self, "joint_state_rate_hz", 100.0, "/joint_states rate (Hz)", lo=1.0, hi=2000.0)
        pose_rate = declare(self, "pose_rate_hz", 30.0, "/task/*_pose rate (Hz)", lo=0.1, hi=1000.0)
        self.camera_enabled = declare(self, "camera_enabled", False, "publish /camera/image_raw and /camera/camera_info")
        cam_rate = declare(self, "camera_rate_hz", 10.0, "camera frame rate (Hz), when enabled", lo=0.1, hi=60.0)
        cam_w = declare(self, "camera_width", 84, "camera image width (px)", lo=8, hi=1024)
        cam_h = declare(self, "camera_height", 84, "camera image height (px)", lo=8, hi=1024)
        cam_renderer = declare(self, "camera_renderer", "layered",
                               "layered | tiny: how the camera is drawn (vla_rl_ros/twin/camera.py); the same "
                               "frame, layered (the table and floor drawn once) takes ~1/3 of tiny's CPU time",
                               choices=RENDERERS)
        cam_arm = declare(self, "camera_arm", "visual",
                          "visual | collision: the arm's shapes the camera draws; collision is coarser and, for the "
                          "Panda, about halves a layered frame's CPU time", choices=ARM_SHAPES)
        self.publish_clock = declare(self, "publish_clock", False, "publish /clock (simulated time) and stamp with it")
        self.seed = declare(self, "seed", 0, "base seed: episode k draws its object/goal with seed + k", lo=0, hi=2**31 - 1)
        self.max_catchup = declare(self, "max_catchup_steps", 24, "max physics steps per timer callback when late",
                                   lo=1, hi=10000)
        self.executor_kind = declare(self, "executor", "events", "events | single_threaded")
        topics = {k: declare(self, f"topics.{k}", v, desc) for k, (v, desc) in TOPICS.items()}
        self.gap = gap = declare_gap(self)
        self._noise = SensorNoise(gap, self.seed)

        self.twin = TwinCore(spec, urdf_path=arm.urdf_path, time_step=1.0 / self.physics_rate, scene=arm.scene,
                             home=arm.home, object_scale=gap.object_size_scale)
        gap.apply_dynamics(self.twin)
        self._delay_ns = int(round(gap.actuation_delay_s * 1e9))
        self._pending: deque = deque()  # (due sim ns, "arm" | "gripper", value): commands not yet applied
        self.urdf_path = self.twin.urdf_path
        self.n_arm = spec.n_arm
        self.episode = 0
        self._reset_episode()
        self._step_ns = int(round(1e9 / self.physics_rate))
        self._sim_ns = 0
        self._steps = 0
        self._t0: float | None = None
        self.dropped_steps = 0
        self.rejected_commands = 0
        self._log_reject = RateLimitedLog(self.get_logger())

        # messages
        self._js = JointState()
        self._js.name = list(spec.arm_joints) + list(spec.gripper_joints)
        self._obj_msg = PoseStamped()
        self._obj_msg.header.frame_id = spec.base_link
        self._goal_msg = PoseStamped()
        self._goal_msg.header.frame_id = spec.base_link
        self._goal_msg.pose.orientation.w = 1.0

        self.pub_js = self.create_publisher(JointState, topics["joint_states"], qos_profile_sensor_data)
        self.pub_obj = self.create_publisher(PoseStamped, topics["object_pose"], RELIABLE_10)
        self.pub_goal = self.create_publisher(PoseStamped, topics["goal_pose"], RELIABLE_10)
        self.pub_clock = self.create_publisher(Clock, "/clock", RELIABLE_10) if self.publish_clock else None
        self.create_subscription(Float64MultiArray, topics["arm_command"], self._on_arm, qos_profile_sensor_data)
        self.create_subscription(Float64MultiArray, topics["gripper_command"], self._on_gripper, qos_profile_sensor_data)
        self.create_service(Trigger, "/twin/reset", self._on_reset)

        self.renderer = None
        if self.camera_enabled:
            from ._camera import Renderer, intrinsics

            self.renderer = Renderer(spec, self.urdf_path, cam_w, cam_h, scene=arm.scene, gap=gap,
                                     renderer=cam_renderer, arm_shapes=cam_arm)
            self.pub_img = self.create_publisher(Image, topics["image"], qos_profile_sensor_data)
            self.pub_info = self.create_publisher(CameraInfo, topics["camera_info"], qos_profile_sensor_data)
            fx, fy, cx, cy = intrinsics(cam_w, cam_h)
            self._info = CameraInfo(width=cam_w, height=cam_h, distortion_model="plumb_bob")
            self._info.header.frame_id = "twin_camera_optical"
            self._info.d = [0.0] * 5
            self._info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
            self._info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            self._info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
            self.create_timer(1.0 / cam_rate, self._camera)

        self.create_timer(1.0 / self.physics_rate, self._physics)
        self.create_timer(1.0 / js_rate, self._publish_joint_states)
        self.create_timer(1.0 / pose_rate, self._publish_poses)
        camera = f"on ({cam_w}x{cam_h}, {cam_renderer}, {cam_arm} arm)" if self.camera_enabled else "off"
        self.get_logger().info(
            f"twin_node: {spec.task}, {self.n_arm} arm joints, physics {self.physics_rate:g} Hz, joint states "
            f"{js_rate:g} Hz, poses {pose_rate:g} Hz, camera {camera}, seed {self.seed}, "
            f"reality gap: {gap.describe()}")

    # ------------------------------------------------------------------ time
    def _stamp(self):
        if self.publish_clock:
            return Time(sec=self._sim_ns // 1_000_000_000, nanosec=self._sim_ns % 1_000_000_000)
        return self.get_clock().now().to_msg()

    def _physics(self) -> None:
        now = time.monotonic()
        if self._t0 is None:  # real time starts at the first callback, not at construction
            self._t0 = now - 1.0 / self.physics_rate
        due = int((now - self._t0) * self.physics_rate) - self._steps
        if due <= 0:
            return
        if due > self.max_catchup:  # far behind (machine stalled): don't fast-forward the arm, drop the backlog
            drop = due - self.max_catchup
            self.dropped_steps += drop
            self._t0 += drop / self.physics_rate
            due = self.max_catchup
            self.get_logger().warning(f"physics fell behind real time; dropped {self.dropped_steps} steps so far",
                                   throttle_duration_sec=5.0)
        if self.renderer is not None and self.renderer.busy:
            self._publish_frame()
        if self._pending:
            self._apply_due()
        self.twin.step(due)
        self._steps += due
        self._sim_ns += due * self._step_ns
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=self._stamp()))

    # ------------------------------------------------------------- publishing
    def _publish_joint_states(self) -> None:
        tw = self.twin
        js = pb.getJointStates(tw.robot, tw.arm_idx + tw.finger_idx, physicsClientId=tw.cid)
        m = self._js
        m.header.stamp = self._stamp()
        m.position = self._noise.joints(s[0] for s in js)
        m.velocity = [s[1] for s in js]
        m.effort = [s[3] for s in js]
        self.pub_js.publish(m)

    def _publish_poses(self) -> None:
        tw = self.twin
        pos, quat = pb.getBasePositionAndOrientation(tw.cube, physicsClientId=tw.cid)
        stamp = self._stamp()
        o = self._obj_msg
        o.header.stamp = stamp
        o.pose.position.x, o.pose.position.y, o.pose.position.z = self._noise.position(pos)
        o.pose.orientation.x, o.pose.orientation.y, o.pose.orientation.z, o.pose.orientation.w = (float(v) for v in quat)
        g = self._goal_msg
        g.header.stamp = stamp
        g.pose.position.x, g.pose.position.y, g.pose.position.z = self._noise.position(tw.goal)
        self.pub_obj.publish(o)
        self.pub_goal.publish(g)

    def _publish_frame(self) -> None:
        """Publish the frame in flight if the camera process has finished it (a non-blocking poll; the physics
        timer calls it too, so a frame goes out as soon as it is drawn, not at the next camera tick)."""
        r = self.renderer
        done = r.poll()
        if done is not None:
            stamp, data = done
            img = Image(height=r.height, width=r.width, encoding="rgb8", is_bigendian=0, step=3 * r.width)
            img.header.stamp = stamp
            img.header.frame_id = self._info.header.frame_id
            img.data = data
            self._info.header.stamp = stamp
            self.pub_img.publish(img)
            self.pub_info.publish(self._info)

    def _camera(self) -> None:
        r = self.renderer
        self._publish_frame()
        if not r.busy:
            if not r.alive:
                self.get_logger().error("camera renderer process died; camera disabled", once=True)
                return
            st = self.twin.state()
            r.request(np.concatenate([st.q, st.finger_q]), st.object_pos, st.object_quat, st.goal_pos, self._stamp())

    # --------------------------------------------------------------- commands
    def _on_arm(self, msg: Float64MultiArray) -> None:
        err = validate_command(msg.data, self.n_arm, "arm command")
        if err is not None:
            self.rejected_commands += 1
            self._log_reject(f"{err}: rejected, keeping the previous target")
            return
        self._command("arm", np.array(msg.data, dtype=np.float64))

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        err = validate_command(msg.data, 1, "gripper command")
        if err is not None:
            self.rejected_commands += 1
            self._log_reject(f"{err}: rejected, keeping the previous target")
            return
        self._command("gripper", float(msg.data[0]))

    def _command(self, kind: str, value) -> None:
        """Apply a valid command now, or (reality gap) queue it until ``gap_actuation_delay_s`` of simulated
        time has passed."""
        if self._delay_ns <= 0:
            self._apply(kind, value)
        else:
            self._pending.append((self._sim_ns + self._delay_ns, kind, value))

    def _apply(self, kind: str, value) -> None:
        if kind == "arm":
            self._arm_target = value
            self.twin.apply_command(self._arm_target, None)
        else:
            self.twin.apply_command(self._arm_target, value)

    def _apply_due(self) -> None:
        while self._pending and self._pending[0][0] <= self._sim_ns:
            _, kind, value = self._pending.popleft()
            self._apply(kind, value)

    # ------------------------------------------------------------------ reset
    def _reset_episode(self) -> int:
        seed = self.seed + self.episode
        self.twin.reset_scene(np.random.default_rng(seed), self.spec.task)
        self._arm_target = self.twin.home.copy()
        self._pending.clear()  # a delayed command of the last episode does not reach the new one
        return seed

    def _on_reset(self, request, response):
        self.episode += 1
        seed = self._reset_episode()
        obj = self.twin.state().object_pos
        response.success = True
        response.message = (f"seed={seed} episode={self.episode} object={np.round(obj, 4).tolist()} "
                            f"goal={np.round(self.twin.goal, 4).tolist()}")
        self.get_logger().info(f"reset: {response.message}")
        return response

    def destroy_node(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
        self.twin.close()
        super().destroy_node()


def declare_gap(node) -> RealityGap:
    """The ``gap_*`` parameters (defaults: no gap; ``config/sim.yaml`` sets the sim's small default gap) and
    ``gap_scale`` (``vla-rl-ros sim --gap``), as the :class:`~vla_rl_ros.twin.gap.RealityGap` they make."""
    d = RealityGap()
    scale = declare(node, "gap_scale", 1.0, "reality gap: the gap_* below scaled (factors to this power, the rest "
                    "multiplied): 0.0 = the gate's twin exactly, 1.0 = as written, 2.0 = twice (vla-rl-ros sim --gap)",
                    lo=0.0, hi=10.0)
    gap = RealityGap(
        object_friction_scale=declare(node, "gap_object_friction_scale", d.object_friction_scale,
                                      "reality gap: x the object's lateral friction", lo=0.01, hi=100.0),
        object_mass_scale=declare(node, "gap_object_mass_scale", d.object_mass_scale,
                                  "reality gap: x the object's mass", lo=0.01, hi=100.0),
        object_size_scale=declare(node, "gap_object_size_scale", d.object_size_scale,
                                  "reality gap: x the object's size", lo=0.1, hi=10.0),
        actuation_delay_s=declare(node, "gap_actuation_delay_s", d.actuation_delay_s,
                                  "reality gap: s of simulated time before a command is applied", lo=0.0, hi=5.0),
        joint_noise_std=declare(node, "gap_joint_noise_std", d.joint_noise_std,
                                "reality gap: rad, Gaussian noise on each published joint position", lo=0.0, hi=1.0),
        pose_noise_std=declare(node, "gap_pose_noise_std", d.pose_noise_std,
                               "reality gap: m, Gaussian noise on each published object/goal position axis",
                               lo=0.0, hi=1.0),
        camera_shift_m=tuple(declare(node, "gap_camera_shift_m", list(d.camera_shift_m),
                                     "reality gap: m, [x, y, z] added to the camera's eye and target (camera on)")),
        camera_pan_rad=declare(node, "gap_camera_pan_rad", d.camera_pan_rad,
                               "reality gap: rad, the camera turned about the vertical (camera on)", lo=-3.2, hi=3.2),
    )
    return gap.scaled(scale)


def main(args=None) -> None:
    run_node(TwinNode, args)


if __name__ == "__main__":
    main()
