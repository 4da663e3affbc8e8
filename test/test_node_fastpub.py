"""The control tick's preserialized Float64MultiArray (nodes/_fastpub.py): what a subscriber receives is the
message with the values written in place, also after a layout change (a new model's label)."""
from __future__ import annotations

import numpy as np
from rclpy.serialization import deserialize_message
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from vla_rl_ros.nodes._fastpub import PreserializedArray


class Capture:
    def __init__(self):
        self.sent = []

    def publish(self, msg):
        self.sent.append(msg)


def received(cap) -> Float64MultiArray:
    m = cap.sent[-1]
    assert isinstance(m, bytes)  # the serialized path, not rclpy's conversion
    return deserialize_message(m, Float64MultiArray)


def test_values_written_in_place_reach_the_subscriber_and_survive_a_layout_change():
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=lb, size=n, stride=n) for lb, n in
                      (("obs", 3), ("action", 2), ("model:", 0))]
    msg.data = [0.0] * 5
    cap = Capture()
    out = PreserializedArray(cap, msg)
    assert out.raw and np.all(out.values == 0.0)
    out.values[:] = [1.5, -2.0, 3.25, np.pi, 1e300]
    out.publish()
    m = received(cap)
    assert list(m.data) == [1.5, -2.0, 3.25, np.pi, 1e300]
    assert [(d.label, d.size) for d in m.layout.dim] == [("obs", 3), ("action", 2), ("model:", 0)]

    msg.layout.dim[2].label = "model:a-much-longer-version-label"  # moves the data in the buffer
    out.set_layout()
    out.values[:] = [7.0, 8.0, 9.0, 10.0, 11.0]
    out.publish()
    m = received(cap)
    assert list(m.data) == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert m.layout.dim[2].label == "model:a-much-longer-version-label"


def test_a_single_value_command():
    cap = Capture()
    out = PreserializedArray(cap, Float64MultiArray(data=[0.0]))
    out.values[0] = 0.04
    out.publish()
    assert list(received(cap).data) == [0.04] and len(received(cap).layout.dim) == 0
