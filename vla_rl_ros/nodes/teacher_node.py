"""teacher_node: the twin's stand-in for the human who corrects the arm (sim graph only).

HIL-SERL and π*0.6's Recap learn from two kinds of experience: the policy's own
episodes and a person's corrections, taken over teleop when the arm goes wrong.
On a robot that person publishes ``/rl/intervention`` (a joystick or a
spacemouse node). In the twin, this node plays that person with the scripted
IK expert (:class:`~vla_rl_ros.twin.expert.ScriptedExpert`):

* it **watches** a fraction of the episodes (``watch_fraction``, drawn per
  episode with a seeded RNG); the other episodes run unassisted, so the success
  of those is an unbiased measure of the policy itself;
* in a watched episode it **takes over** when the arm goes wrong, for
  ``takeover_s`` seconds, publishing the expert's action on ``/rl/intervention``
  at ``rate_hz`` (``policy_node`` uses it while it is fresh and flags the steps
  as interventions, which Recap always labels positive):

  - *grasp miss*: the gripper is closed but the hand is not at the object;
  - *stall*: the episode is older than ``stall_s`` and nothing is held;

* it knows episode boundaries from ``/rl/episode`` (the recorder's summaries)
  and stays silent for ``quiet_after_episode_s`` after each, while the twin
  resets.

It computes the observation exactly as ``policy_node`` does (same FK, same
spec layout) from the freshest joint state and task poses, so its actions are
never a tick stale; it reads split joint states and poses in other frames as
``policy_node`` does (``topics.extra_joint_states``, ``static_transforms``). ``watch_fraction: 0.0`` turns it off.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from ..kinematics import Kinematics
from ..runtime.inputs import validate_pose
from ._common import (TF_STATIC_DESCRIPTION, RateLimitedLog, declare, declare_arm, declare_frames,
                      declare_joint_state_topics, make_matcher, run_node)


class TeacherNode(Node):
    def __init__(self, **kwargs):
        super().__init__("teacher_node", **kwargs)
        arm = declare_arm(self)
        self.spec = spec = arm.spec
        watch_fraction = declare(self, "watch_fraction", 0.5,
                                 "fraction of episodes the teacher watches (0 = never intervenes)", lo=0.0, hi=1.0)
        takeover_s = declare(self, "takeover_s", 1.0, "s: length of one take-over", lo=0.05, hi=60.0)
        until_held_s = declare(self, "until_held_s", 3.0, "s: a take-over without the object in hand after "
                               "takeover_s goes on until it is held, for at most this long (0 = off)", lo=0.0, hi=60.0)
        stall_s = declare(self, "stall_s", 2.5, "s: take over when nothing is held this long into an episode "
                          "(0 = never)", lo=0.0, hi=3600.0)
        self.quiet_s = declare(self, "quiet_after_episode_s", 0.5, "s: silent after each episode end (twin reset)",
                               lo=0.0, hi=60.0)
        rate = declare(self, "rate_hz", 50.0, "publish rate of /rl/intervention while taking over", lo=1.0, hi=1000.0)
        seed = declare(self, "seed", 0, "RNG seed of the per-episode watch draws", lo=0, hi=2**31 - 1)
        gain = declare(self, "gain", 0.5, "proportional gain on the hand error (max_ee_step units per tick); "
                       "lower (0.25) keeps a take-over stable when its action is 2-3 ticks late (twin/teacher.py)", lo=0.05, hi=5.0)
        self.executor_kind = declare(self, "executor", "single_threaded", "events | single_threaded",
                                     additional="one of: events, single_threaded")
        from ..twin.teacher import Teacher

        self.teacher = Teacher(spec, watch_fraction, takeover_s, stall_s, seed, until_held_s=until_held_s, gain=gain)
        if not self.teacher.supported:
            self.get_logger().warning(f"the scripted teacher handles pick_place in ee_delta; task {spec.task!r} "
                                      f"({spec.action_mode}): it will not intervene")
        self.kin = Kinematics(arm.urdf, spec.base_link, spec.ee_link, spec.arm_joints)
        self.matcher = make_matcher(arm)  # split joint states merged by name, as policy_node does
        self._obj = np.zeros(3)
        self._goal = np.zeros(3)
        self._have = {"object": False, "goal": False}
        self._obs = np.zeros(spec.obs_dim, dtype=np.float32)
        self._log_reject = RateLimitedLog(self.get_logger())
        self.episodes = 0
        self.teacher.new_episode(time.monotonic() + self.quiet_s)

        self.pub = self.create_publisher(Float64MultiArray, "/rl/intervention", qos_profile_sensor_data)
        self._msg = Float64MultiArray()
        js_topic = declare(self, "topics.joint_states", "/joint_states", "sensor_msgs/JointState in")
        for t in declare_joint_state_topics(self, js_topic):
            self.create_subscription(JointState, t, self._on_joint_state, qos_profile_sensor_data)
        self.frames = declare_frames(self, spec.base_link, declare(self, "topics.tf_static", "/tf_static",
                                                                   TF_STATIC_DESCRIPTION),
                                     lambda e: self._log_reject(f"rejected transform: {e}"))
        self.create_subscription(PoseStamped, "/task/object_pose", lambda m: self._on_pose(m, "object", self._obj),
                                 qos_profile_sensor_data)
        self.create_subscription(PoseStamped, "/task/goal_pose", lambda m: self._on_pose(m, "goal", self._goal),
                                 qos_profile_sensor_data)
        self.create_subscription(String, "/rl/episode", self._on_episode, 10)
        self.create_timer(1.0 / rate, self._tick)
        self.get_logger().info(f"scripted teacher: watches {100 * self.teacher.watch_fraction:.0f}% of episodes, "
                               f"takes over for {takeover_s}s on a grasp miss or after {stall_s}s without a grasp")

    # ---------------------------------------------------------------- inputs
    def _on_joint_state(self, msg: JointState) -> None:
        err = self.matcher.update(msg.name, msg.position)
        if err is not None:
            self._log_reject(f"rejected joint state: {err}")

    def _on_pose(self, msg: PoseStamped, which: str, out: np.ndarray) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        err, pos, ori = self.frames.to_base(msg.header.frame_id, (p.x, p.y, p.z), (o.x, o.y, o.z, o.w))
        if err is None:
            err = validate_pose("", pos, ori, self.spec.base_link)
        if err is not None:
            self._log_reject(f"rejected {which} pose: {err}")
            return
        out[:] = pos
        self._have[which] = True

    def _on_episode(self, msg: String) -> None:
        try:
            json.loads(msg.data)
        except (ValueError, RecursionError):
            return
        self.episodes += 1
        self.teacher.new_episode(time.monotonic() + self.quiet_s)

    # ---------------------------------------------------------------- decide
    def _tick(self) -> None:
        now = time.monotonic()
        if not self.teacher.watching or not self.matcher.valid or not all(self._have.values()):
            return
        q = self.matcher.q
        self.spec.build_observation(q, self.matcher.gripper_width, self.kin.fk_pos(q), self._obj, self._goal,
                                    out=self._obs)
        action, reason = self.teacher.act(self._obs, now)
        if action is None:
            return
        if reason is not None:
            self.get_logger().info(f"episode {self.episodes}: taking over ({reason}), "
                                   f"{self.teacher.takeovers} take-overs so far")
        self._msg.data = [float(v) for v in action]
        self.pub.publish(self._msg)


def main(argv=None) -> int:
    run_node(TeacherNode, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
