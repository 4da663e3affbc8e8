"""Helpers for node tests: a fake arm (joint states + task poses from the test process), message decoding."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState

from vla_rl_ros.runtime.control import PANDA_HOME
from vla_rl_ros.spec import PANDA_ARM_JOINTS, PANDA_GRIPPER_JOINTS
from vla_rl_ros.stepmsg import decode

NAMES = list(PANDA_ARM_JOINTS) + list(PANDA_GRIPPER_JOINTS)


class FakeArm:
    """Publishes /joint_states (``rate_hz``) and the task poses (10 Hz) from the probe node.

    ``positions``, ``names``, ``pause`` (joint states) and ``pause_poses`` may be changed at any time; ``last_sent``
    is the position list of the last joint state published.
    """

    def __init__(self, probe, rate_hz: float = 100.0, reliable: bool = True, goal=(0.5, 0.15, 0.3), obj=(0.5, 0.0, 0.025)):
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
        self.node = probe.node
        self.lock = threading.Lock()
        self.pub_js = probe.node.create_publisher(JointState, "/joint_states", qos)
        self.pub_obj = probe.node.create_publisher(PoseStamped, "/task/object_pose", 10)
        self.pub_goal = probe.node.create_publisher(PoseStamped, "/task/goal_pose", 10)
        self.positions = list(PANDA_HOME) + [0.04, 0.04]
        self.names = list(NAMES)
        self.goal, self.obj = list(goal), list(obj)
        self.frame = "panda_link0"
        self.pause = False
        self.pause_poses = False
        self.last_sent = None
        self.n_sent = 0
        self._t1 = probe.node.create_timer(1.0 / rate_hz, self._js)
        self._t2 = probe.node.create_timer(0.1, self._poses)

    def _js(self):
        if self.pause:
            return
        m = JointState()
        m.header.stamp = self.node.get_clock().now().to_msg()
        with self.lock:
            m.name = list(self.names)
            m.position = [float(v) for v in self.positions]
        self.pub_js.publish(m)
        self.last_sent = list(m.position)
        self.n_sent += 1

    def _poses(self):
        if self.pause_poses:
            return
        for pub, xyz in ((self.pub_obj, self.obj), (self.pub_goal, self.goal)):
            m = PoseStamped()
            m.header.stamp = self.node.get_clock().now().to_msg()
            m.header.frame_id = self.frame
            m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in xyz)
            m.pose.orientation.w = 1.0
            pub.publish(m)

    def set(self, positions=None, names=None):
        with self.lock:
            if positions is not None:
                self.positions = list(positions)
            if names is not None:
                self.names = list(names)


def steps(probe, key="/rl/step", obs_dim=26, action_dim=4):
    """Decoded /rl/step records (receive time, StepRecord)."""
    return [(t, decode([d.label for d in m.layout.dim], [d.size for d in m.layout.dim], m.data, obs_dim, action_dim))
            for t, m in probe.get(key)]


def diag(msg) -> dict:
    st = msg.status[0]
    d = {kv.key: kv.value for kv in st.values}
    d["_level"] = int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level)
    d["_message"] = st.message
    return d


def last_diag(probe, key="/diagnostics") -> dict | None:
    msgs = probe.get(key)
    return diag(msgs[-1][1]) if msgs else None


def wait_step(probe, pred, what, timeout=20.0):
    """The first /rl/step record after now that satisfies ``pred``."""
    t0 = time.monotonic()
    return probe.wait_for(lambda: next((s for t, s in steps(probe) if t > t0 and pred(s)), None), timeout, what)


def wait_diag(probe, pred, what, timeout=20.0):
    """The latest /diagnostics values once they satisfy ``pred``."""
    return probe.wait_for(lambda: (lambda d: d if d and pred(d) else None)(last_diag(probe)), timeout, what)


def results(probe, key="/rl/policy_update_result") -> list[dict]:
    return [json.loads(m.data) for _, m in probe.get(key)]


def start_policy_node(launch, probe, tmp_path, model_path, **params):
    """A policy_node on ``model_path`` at 50 Hz (``params``: more of its parameters), with the probe collecting
    its commands, steps, diagnostics and update replies, and a :class:`FakeArm` feeding it. Returns (process, arm)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy
    from std_msgs.msg import Float64MultiArray, String

    from conftest import params_file

    reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    replies = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pf = params_file(tmp_path / "p.yaml", policy_node={
        "model_path": model_path, "control_rate_hz": 50.0, "joint_state_timeout_s": 0.5, **params})
    probe.collect("/arm_controller/commands", Float64MultiArray)
    probe.collect("/rl/step", Float64MultiArray, reliable)
    probe.collect("/diagnostics", DiagnosticArray, reliable)
    probe.collect("/rl/policy_update_result", String, replies)
    proc = launch("policy_node", pf)
    return proc, FakeArm(probe)


def announce(probe, pub, req: dict, timeout: float = 30.0) -> dict:
    """Publish one /rl/policy_update announcement ``req`` (once policy_node's subscription has matched) and
    return the node's reply to it (matched by version)."""
    from std_msgs.msg import String

    n = len(results(probe))
    probe.wait_for(lambda: pub.get_subscription_count() > 0, 30, "policy_node subscribed to /rl/policy_update")
    pub.publish(String(data=json.dumps(req)))
    return probe.wait_for(lambda: next((r for r in results(probe)[n:] if r.get("version") == req["version"]), None),
                          timeout, f"a reply for {req['version']}")


def arm_commands(probe, key="/arm_controller/commands") -> list[np.ndarray]:
    return [np.array(m.data) for _, m in probe.get(key)]


def stop_sim(proc, log_text: str) -> None:
    """Stop a ``vla-rl-ros sim`` subprocess (started with ``start_new_session=True``) as Ctrl-C would, then kill
    the process group of every node pid its log names (restarted ones too), so that nothing is left behind."""
    import os
    import re
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # the CLI stops its nodes
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    for pid in re.findall(r"pid (\d+)", log_text):
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
