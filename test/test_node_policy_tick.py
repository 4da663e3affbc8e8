"""policy_node's tick modes, live: ``event`` computes one command per joint state, from that state, and holds when
joint states stop; ``timer`` ticks on its own clock. Behaviour, not timing (bench/bench_control_1khz.py times them).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

import onnx_models as om
from conftest import params_file
from ros_helpers import NAMES, FakeArm, arm_commands, last_diag, steps
from vla_rl_ros.runtime.control import PANDA_HOME
from vla_rl_ros.spec import Spec

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def start(launch, probe, tmp_path, **params):
    model = om.write(tmp_path / "reach.onnx", Spec(), "reach", version="r1")
    pf = params_file(tmp_path / "p.yaml", policy_node={
        "model_path": model, "control_rate_hz": 50.0, "joint_state_timeout_s": 0.5, **params})
    probe.collect("/arm_controller/commands", Float64MultiArray, RELIABLE)
    probe.collect("/rl/step", Float64MultiArray, RELIABLE)
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    proc = launch("policy_node", pf)
    probe.wait_for(lambda: last_diag(probe) is not None and last_diag(probe)["model_version"] == "r1", 60,
                   "policy_node running r1")
    arm = FakeArm(probe)  # task poses at 10 Hz; the test publishes the joint states itself
    arm.pause = True
    return proc, arm


def joint_state(positions, stamp_ns: int) -> JointState:
    m = JointState()
    m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    m.name = list(NAMES)
    m.position = [float(v) for v in positions]
    return m


def test_event_mode_one_command_per_joint_state_from_that_state_and_a_hold_when_they_stop(launch, probe, tmp_path):
    proc, _ = start(launch, probe, tmp_path, tick_mode="event", cpu_affinity=[0])
    pub = probe.publisher("/joint_states", JointState, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    probe.wait_for(lambda: pub.get_subscription_count() > 0, 30, "policy_node subscribed to /joint_states")
    home = list(PANDA_HOME) + [0.04, 0.04]

    # one joint state at a time until the node acts on it (poses arrived, model loaded)
    def acted_on(stamp_ns):
        return next((s for _, s in steps(probe) if abs(s.obs_stamp - stamp_ns * 1e-9) < 1e-7 and not s.hold), None)

    deadline = time.monotonic() + 30
    acted = False
    while not acted:
        assert time.monotonic() < deadline, "policy_node never acted on a joint state"
        st = time.time_ns()
        pub.publish(joint_state(home, st))
        t_wait = time.monotonic() + 0.3
        while not acted and time.monotonic() < t_wait:
            time.sleep(0.02)
            acted = acted_on(st) is not None
    time.sleep(0.1)
    probe.clear("/rl/step")
    probe.clear("/arm_controller/commands")

    n = 40
    sent = []
    for i in range(n):
        pos = list(home)
        pos[0] += 0.002 * i  # each state differs: its step must carry exactly it
        pos[3] -= 0.001 * i
        st = time.time_ns()
        pub.publish(joint_state(pos, st))
        sent.append((st, pos))
        time.sleep(0.02)  # 50 Hz, the node's control_rate_hz
    t_last = time.monotonic()
    probe.wait_for(lambda: len(steps(probe)) >= n, 20, f"{n} steps")
    time.sleep(0.1)  # well before the hold (joint_state_timeout_s 0.5): nothing else may come
    rec = [s for _, s in steps(probe)]
    assert len(rec) == n, f"{len(rec)} steps for {n} joint states"
    assert len(arm_commands(probe)) == n
    for (st, pos), s in zip(sent, rec):  # in order, one each, computed from that very state
        assert s.obs_stamp == pytest.approx(st * 1e-9, abs=1e-7)
        assert not s.hold and s.model_version == "r1"
        np.testing.assert_allclose(s.obs[:7], pos[:7], atol=1e-6)
        assert s.obs[7] == pytest.approx(pos[7] + pos[8], abs=1e-6)
        assert s.cmd_stamp >= s.obs_stamp
    assert [s.tick for s in rec] == list(range(rec[0].tick, rec[0].tick + n))

    # joint states stop: the watchdog timer holds at the last measured positions
    s = probe.wait_for(lambda: next((s for _, s in steps(probe)[n:] if s.hold), None), 5, "a hold tick")
    assert time.monotonic() - t_last >= 0.45  # not before joint_state_timeout_s
    assert s.obs_stamp == pytest.approx(sent[-1][0] * 1e-9, abs=1e-7)
    probe.clear("/arm_controller/commands")
    probe.wait_for(lambda: len(arm_commands(probe)) >= 3, 5, "repeated holds")
    for c in arm_commands(probe)[-3:]:
        np.testing.assert_array_equal(c, sent[-1][1][:7])
    d = probe.wait_for(lambda: (lambda d: d if d and "stale" in d["watchdog"] else None)(last_diag(probe)), 10,
                       "stale in diagnostics")
    assert d["tick_mode"] == "event" and d["_message"].startswith("hold: joint_states stale")
    assert int(d["input_outages"]) == 0  # no state came after the gap yet
    missed0 = int(d["missed_ticks"])

    # joint states resume: acting again, one command each; the gap is an outage, not missed ticks
    for i in range(5):
        pub.publish(joint_state(home, time.time_ns()))
        time.sleep(0.02)
    probe.wait_for(lambda: any(not s.hold for _, s in steps(probe)[n:]), 10, "acting after joint states resumed")
    d = probe.wait_for(lambda: (lambda d: d if d and int(d["input_outages"]) >= 1 else None)(last_diag(probe)), 10,
                       "the outage counted")
    assert int(d["missed_ticks"]) - missed0 < 25  # the 0.5+ s gap (25+ periods) is not missed ticks
    assert "tick_mode event" in proc.log() and "pinned to CPUs [0]" in proc.log()
    assert proc.alive


def test_timer_mode_ticks_on_its_clock_between_joint_states(launch, probe, tmp_path):
    proc, arm = start(launch, probe, tmp_path)  # tick_mode: timer, the default
    pub = probe.publisher("/joint_states", JointState, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    probe.wait_for(lambda: pub.get_subscription_count() > 0, 30, "policy_node subscribed to /joint_states")
    home = list(PANDA_HOME) + [0.04, 0.04]
    t_end = time.monotonic() + 30
    while not any(not s.hold for _, s in steps(probe)):
        pub.publish(joint_state(home, time.time_ns()))
        time.sleep(0.1)
        assert time.monotonic() < t_end, "policy_node never acted"
    probe.clear("/rl/step")
    stamps = []
    for _ in range(10):  # 10 Hz joint states, a 50 Hz loop
        st = time.time_ns()
        pub.publish(joint_state(home, st))
        stamps.append(st)
        time.sleep(0.1)
    rec = [s for _, s in steps(probe) if not s.hold]
    assert len(rec) > 2 * len(stamps)  # several ticks per joint state: the timer drives the loop
    per_state = {}
    for s in rec:
        per_state[round(s.obs_stamp, 6)] = per_state.get(round(s.obs_stamp, 6), 0) + 1
    assert max(per_state.values()) >= 2
    assert last_diag(probe)["tick_mode"] == "timer"
    assert "tick_mode timer" in proc.log()
