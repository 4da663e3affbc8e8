"""policy_node with a VLA-shaped model: a camera, an instruction and action chunks, inference off the control thread.

A fake arm and a fake camera in the test process; the model is built by hand (test/onnx_models.build_chunk), so
the chunk step a tick executed can be read back from its action: the gripper action of step k is
``-1 + 2k/(K-1)`` plus the instruction's index / 4.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

import onnx_models as om
from ros_helpers import last_diag, start_policy_node, steps, wait_diag, wait_step
from vla_rl_ros.spec import ImageSpec, Spec

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
K, CHUNK_HZ = 8, 20.0
SPEC = Spec(images=(ImageSpec(name="wrist", topic="/wrist/image_raw", height=24, width=32),),
            instructions=("pick the cube", "push the cube"), chunk_len=K, chunk_hz=CHUNK_HZ)
PARAMS = {"images": ["wrist"], "image": {"wrist": {"topic": "/wrist/image_raw", "height": 24, "width": 32}},
          "instructions": ["pick the cube", "push the cube"], "chunk_len": K, "chunk_hz": CHUNK_HZ,
          "exploration_std": 0.0}


class FakeCamera:
    """Publishes 64x48 rgb8 frames on /wrist/image_raw at ``rate_hz``; remembers each frame's stamp."""

    def __init__(self, probe, rate_hz: float = 15.0):
        self.node = probe.node
        self.pub = probe.node.create_publisher(Image, "/wrist/image_raw", qos_profile_sensor_data)
        self.pause = False
        self.stamps: list[float] = []
        self._t = probe.node.create_timer(1.0 / rate_hz, self._frame)

    def _frame(self):
        if self.pause:
            return
        m = Image()
        m.header.stamp = self.node.get_clock().now().to_msg()
        m.height, m.width, m.encoding, m.step = 48, 64, "rgb8", 64 * 3
        m.data = bytes(np.full(48 * 64 * 3, 128, np.uint8))
        self.pub.publish(m)
        self.stamps.append(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)


def chunk_steps(probe, dim=SPEC.obs_dim, A=SPEC.action_dim):
    return [s for _, s in steps(probe, obs_dim=dim, action_dim=A)]


def test_a_chunked_image_model_acts_from_its_chunks_and_records_which_step_and_frame(launch, probe, tmp_path):
    model = om.write_chunk(tmp_path / "chunk.onnx", SPEC, version="chunk1")
    proc, arm = start_policy_node(launch, probe, tmp_path, model, **PARAMS)
    cam = FakeCamera(probe)
    instr = probe.node.create_publisher(String, "/task/instruction", LATCHED)
    d = wait_diag(probe, lambda d: d.get("model_version") == "chunk1", "the chunk model loaded", 60)
    assert "instruction" in d["watchdog"], d["watchdog"]  # no instruction yet: hold

    instr.publish(String(data="push the cube"))
    s = wait_step(probe, lambda s: not s.hold and s.chunk_seq >= 1, "a tick acting from a chunk", 30)
    time.sleep(1.0)
    acted = [s for s in chunk_steps(probe) if not s.hold and s.chunk_seq >= 1]
    assert len(acted) >= 20
    for s in acted:
        assert 0.0 <= s.chunk_step < K, s.chunk_step
        # the executed gripper action is the ramp at this (interpolated) step, plus instruction 1 / 4
        want = min(1.0, -1.0 + 2.0 * s.chunk_step / (K - 1) + 0.25)
        assert s.action[-1] == pytest.approx(want, abs=1e-4), (s.chunk_step, s.action)
        assert any(abs(s.frame_stamp - t) < 1e-6 for t in cam.stamps), "the frame stamp is one the camera sent"
        assert s.frame_stamp <= s.cmd_stamp
    assert len({s.chunk_seq for s in acted}) >= 2, "the inference thread kept producing chunks"
    d = wait_diag(probe, lambda d: int(d["inferences"]) >= 2, "inference counters")
    assert d["instruction"] == "push the cube" and float(d["inference_p50_ms"]) > 0.0

    # an unknown instruction: hold, and say why
    instr.publish(String(data="juggle the cube"))
    d = wait_diag(probe, lambda d: "unknown instruction" in d["watchdog"], "a hold on an unknown instruction")
    probe.clear("/rl/step")
    time.sleep(0.3)
    assert all(s.hold for s in chunk_steps(probe)), "acted on an unknown instruction"

    # back to a known one, then the camera goes quiet: hold once its frames are older than image_timeout_s
    instr.publish(String(data="pick the cube"))
    wait_step(probe, lambda s: not s.hold and s.chunk_seq >= 1, "acting again", 20)
    cam.pause = True
    wait_diag(probe, lambda d: "camera_wrist stale" in d["watchdog"], "a hold on a stale camera", 10)
    assert proc.alive


def test_a_late_inference_holds_and_never_runs_a_chunk_past_its_horizon(launch, probe, tmp_path):
    # a chunk covers 200 ms; the next inference starts only once it has run out (replan_steps = K), so each
    # inference's own time (tens of ms of real matrix products) is a gap with no chunk: the loop must hold there
    spec = Spec(chunk_len=10, chunk_hz=50.0)
    model = om.write_chunk(tmp_path / "slow.onnx", spec, version="slow1", slow=12, size=512)
    proc, arm = start_policy_node(launch, probe, tmp_path, model, chunk_len=10, chunk_hz=50.0, replan_steps=10,
                                  exploration_std=0.0)
    wait_diag(probe, lambda d: int(d.get("inferences", "0")) >= 3, "a few slow inferences", 60)
    time.sleep(1.0)
    recs = chunk_steps(probe, spec.obs_dim, spec.action_dim)
    acted = [s for s in recs if not s.hold]
    held = [s for s in recs if s.hold]
    assert acted and held, "expected both chunk ticks and starved holds"
    assert all(0.0 <= s.chunk_step < 10 for s in acted), "a chunk step beyond the horizon ran"
    for s in acted:  # and each acted step is the chunk's own (the ramp), not a repeated one
        assert s.action[-1] == pytest.approx(min(1.0, -1.0 + 2.0 * s.chunk_step / 9), abs=1e-4)
    assert all(s.chunk_seq == -1 for s in held)
    d = last_diag(probe)
    assert int(d["chunk_starved_ticks"]) > 0 and float(d["inference_p50_ms"]) > 10.0, d
    assert "ran out" in d["watchdog"] or d["watchdog"] == "ok", d["watchdog"]
    # the control loop kept its rate while the model computed on its own thread
    assert float(d["achieved_rate_hz"]) > 40.0, d["achieved_rate_hz"]
    # a clean stop with an inference in flight: the thread ends before the interpreter does
    assert proc.stop() == 0 and "Fatal Python error" not in proc.log()
