"""Malformed messages for every topic and service the nodes subscribe to or serve (seeded; no ROS spinning here).

Used by ``test/test_node_fuzz.py`` (a few hundred per topic) and ``bench/bench_fuzz.py`` (10,000 per topic).
Each generator yields ``(case, message)`` where ``message`` is a message object or ``bytes``: a serialized
(CDR) message, published raw, for what a Python message object cannot hold (invalid UTF-8, a corrupt or
truncated buffer). Every case is *invalid* for the node that reads it, so each one that arrives must be
refused (or, for bursts, handled), never crash the node nor move the arm.

Cases: wrong lengths, NaN and Inf, huge arrays, unknown, missing and duplicated joint names, stamps far in the
past or future, invalid JSON, invalid UTF-8, oversized strings, corrupt serialized buffers.
"""
from __future__ import annotations

import json
import math

import numpy as np

HUGE = 100_000  # elements in a "huge" array
BIG_STRING = 1 << 20  # characters in an oversized string
BAD_FLOATS = (math.nan, math.inf, -math.inf)
EXTREME_STAMPS = ((2**31 - 1, 999_999_999), (-(2**31), 0), (0, 2**32 - 1), (1, 0), (2**31 - 1, 2**32 - 1))


def _stamp(msg, rng) -> None:
    sec, nsec = EXTREME_STAMPS[int(rng.integers(len(EXTREME_STAMPS)))]
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nsec


def corrupt(msg, rng) -> bytes:
    """``msg`` serialized, then truncated, or with random bytes overwritten (lengths included)."""
    from rclpy.serialization import serialize_message

    b = bytearray(serialize_message(msg))
    kind = int(rng.integers(3))
    if kind == 0 and len(b) > 5:
        return bytes(b[: int(rng.integers(4, len(b)))])
    if kind == 1:
        for _ in range(max(1, len(b) // 8)):
            b[int(rng.integers(4, max(5, len(b))))] = int(rng.integers(256))
        return bytes(b)
    b[4:8] = (0xFFFFFFF0).to_bytes(4, "little")  # the first length field: "4 GB follow"
    return bytes(b)


def raw_string(data: bytes) -> bytes:
    """A serialized std_msgs/String whose bytes are ``data`` (not necessarily UTF-8)."""
    n = len(data) + 1
    return b"\x00\x01\x00\x00" + n.to_bytes(4, "little") + data + b"\x00"


# ------------------------------------------------------------------ sensor_msgs/JointState
def joint_states(n: int, arm: list[str], gripper: list[str], home: list[float], seed: int = 0):
    from sensor_msgs.msg import JointState

    rng = np.random.default_rng(seed)
    names = list(arm) + list(gripper)
    base = list(home) + [0.04] * len(gripper)
    for i in range(n):
        m = JointState()
        nm, pos = list(names), [float(v) for v in base]  # plain lists: rclpy turns position into an array
        case = ("wrong_length", "nan_inf", "huge", "unknown_names", "duplicate_names", "missing_joint",
                "extreme_stamp_and_nan", "oversized_name", "empty", "corrupt")[i % 10]
        if case == "wrong_length":
            k = int(rng.integers(0, len(names) * 2))
            pos = [float(v) for v in rng.normal(size=k if k != len(names) else k + 1)]
        elif case == "nan_inf":
            pos[int(rng.integers(len(arm)))] = BAD_FLOATS[i % 3]
        elif case == "huge":
            pos = [0.0] * HUGE
        elif case == "unknown_names":
            nm = [f"joint_{rng.integers(1 << 30)}" for _ in names]
        elif case == "duplicate_names":
            j = int(rng.integers(len(names)))
            nm, pos = names + [names[j]], pos + [1.0]
        elif case == "missing_joint":
            j = int(rng.integers(len(names)))
            nm, pos = names[:j] + names[j + 1:], pos[:j] + pos[j + 1:]
        elif case == "extreme_stamp_and_nan":
            _stamp(m, rng)
            pos[int(rng.integers(len(arm)))] = math.nan
        elif case == "oversized_name":
            nm = names[:-1] + ["j" * BIG_STRING]
        elif case == "empty":
            nm, pos = [], []
        else:
            pos[0] = math.nan
        m.name, m.position = nm, pos
        yield case, (corrupt(m, rng) if case == "corrupt" else m)


# ------------------------------------------------------------------ geometry_msgs/PoseStamped
def poses(n: int, base_frame: str, seed: int = 0):
    from geometry_msgs.msg import PoseStamped

    rng = np.random.default_rng(seed)
    for i in range(n):
        m = PoseStamped()
        m.header.frame_id = base_frame
        m.pose.position.x, m.pose.position.y, m.pose.position.z = 0.5, 0.0, 0.1
        m.pose.orientation.w = 1.0
        case = ("nan_position", "inf_orientation", "wrong_frame", "oversized_frame", "extreme_stamp_and_inf",
                "corrupt")[i % 6]
        if case == "nan_position":
            setattr(m.pose.position, "xyz"[i % 3], BAD_FLOATS[i % 3])
        elif case == "inf_orientation":
            setattr(m.pose.orientation, "xyzw"[i % 4], BAD_FLOATS[(i + 1) % 3])
        elif case == "wrong_frame":
            m.header.frame_id = ("world", "map", base_frame + "_", "/" + base_frame, "\u00fc")[i % 5]
        elif case == "oversized_frame":
            m.header.frame_id = "f" * BIG_STRING
        elif case == "extreme_stamp_and_inf":
            _stamp(m, rng)
            m.pose.position.z = math.inf
        else:
            m.pose.position.x = math.nan
            yield case, corrupt(m, rng)
            continue
        yield case, m


# ------------------------------------------------------------------ sensor_msgs/Image
def images(n: int, seed: int = 0):
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        m = Image()
        m.height, m.width, m.encoding, m.step = 8, 8, "rgb8", 24
        m.data = bytes(8 * 24)
        case = ("bad_encoding", "short_buffer", "short_step", "zero_size", "huge_header", "oversized_encoding",
                "corrupt")[i % 7]
        if case == "bad_encoding":
            m.encoding = ("mono8", "16UC1", "", "RGB8", "yuv422")[i % 5]
        elif case == "short_buffer":
            m.data = bytes(int(rng.integers(0, 8 * 24)))
        elif case == "short_step":
            m.step = int(rng.integers(0, 24))
            m.data = bytes(m.step * 8)
        elif case == "zero_size":
            m.height = 0
        elif case == "huge_header":
            m.height, m.width, m.step = 2**32 - 1, 2**31, 2**32 - 1
        elif case == "oversized_encoding":
            m.encoding = "e" * BIG_STRING
        else:
            m.encoding = "mono8"
            yield case, corrupt(m, rng)
            continue
        yield case, m


# ------------------------------------------------------------------ std_msgs/Float64MultiArray
def float_arrays(n: int, size: int, seed: int = 0, valid_value: float = 0.0):
    """Arrays that must have ``size`` finite values (an intervention, a command): wrong lengths, NaN/Inf,
    huge arrays, corrupt buffers."""
    from std_msgs.msg import Float64MultiArray

    rng = np.random.default_rng(seed)
    for i in range(n):
        m = Float64MultiArray()
        m.data = [float(valid_value)] * size
        case = ("wrong_length", "nan_inf", "huge", "empty", "corrupt")[i % 5]
        if case == "wrong_length":
            k = int(rng.integers(0, size * 3))
            m.data = [float(valid_value)] * (k if k != size else k + 1)
        elif case == "nan_inf":
            m.data[int(rng.integers(size))] = BAD_FLOATS[i % 3]
        elif case == "huge":
            m.data = [float(valid_value)] * HUGE
        elif case == "empty":
            m.data = []
        else:
            m.data = [math.nan] * size
            yield case, corrupt(m, rng)
            continue
        yield case, m


def steps(n: int, obs_dim: int, action_dim: int, seed: int = 0):
    """Malformed /rl/step records: wrong layouts, sizes, NaN/Inf, out-of-range meta, huge arrays."""
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    from vla_rl_ros.stepmsg import META_FIELDS, encode_layout

    rng = np.random.default_rng(seed)
    n_all = obs_dim + action_dim + len(META_FIELDS)
    for i in range(n):
        labels, sizes = encode_layout(obs_dim, action_dim, "fuzz")
        data = [0.1] * n_all
        data[obs_dim + action_dim:] = [float(i + 1), 1e9, 1e9, 0.0, 0.0, 20.0]
        case = ("wrong_labels", "wrong_sizes", "wrong_length", "nan_inf", "huge", "bad_tick", "bad_flags",
                "bad_rate", "float32_overflow", "oversized_label", "corrupt")[i % 11]
        if case == "wrong_labels":
            labels = [["action", "obs", "meta"], ["obs"], [], ["obs", "action", "meta2", "model:x"]][i % 4]
            sizes = (sizes + [0, 0, 0, 0])[: len(labels)]
        elif case == "wrong_sizes":
            sizes = [obs_dim + 1, action_dim, len(META_FIELDS), 0]
        elif case == "wrong_length":
            data = data[: int(rng.integers(0, n_all))]
        elif case == "nan_inf":
            data[int(rng.integers(n_all))] = BAD_FLOATS[i % 3]
        elif case == "huge":
            data = [0.0] * HUGE
        elif case == "bad_tick":
            data[obs_dim + action_dim] = (-1.0, 2.5, 1e300, 2.0**60)[i % 4]
        elif case == "bad_flags":
            data[obs_dim + action_dim + 3 + i % 2] = (0.5, -1.0, 7.0)[i % 3]
        elif case == "bad_rate":
            data[-1] = (-20.0, 1e308, 2e6)[i % 3]
        elif case == "float32_overflow":
            data[int(rng.integers(obs_dim + action_dim))] = 1e300
        elif case == "oversized_label":
            labels[3] = "model:" + "v" * BIG_STRING
            data[0] = math.nan
        m = Float64MultiArray()
        m.layout.dim = [MultiArrayDimension(label=lb, size=int(sz), stride=int(sz)) for lb, sz in zip(labels, sizes)]
        m.data = data
        if case == "corrupt":
            m.data[0] = math.nan
            yield case, corrupt(m, rng)
            continue
        yield case, m


# ------------------------------------------------------------------ std_msgs/String (JSON)
def json_strings(n: int, seed: int = 0, valid_path: str = "/nonexistent/model.onnx"):
    """Strings that are not a valid announcement (or episode) JSON object: invalid JSON, other JSON types,
    wrong field types, deep nesting, oversized strings, invalid UTF-8 (raw), corrupt buffers. Announcements
    that do parse name a file that does not exist, inside no allowed directory."""
    from std_msgs.msg import String

    rng = np.random.default_rng(seed)
    for i in range(n):
        case = ("invalid_json", "json_list", "json_scalar", "missing_path", "wrong_types", "deep_nesting",
                "oversized", "invalid_utf8", "nul_in_path", "corrupt", "bad_signature")[i % 11]
        s = None
        if case == "invalid_json":
            s = ("{not json", "", "{\"path\": ", "\ufeff{}", "NaN", "{'path': 'x'}")[i % 6]
        elif case == "json_list":
            s = json.dumps([valid_path, "ab" * 32, "v"])
        elif case == "json_scalar":
            s = ("1", "null", "true", "\"path\"", "1e999")[i % 5]
        elif case == "missing_path":
            s = json.dumps({"sha256": "ab" * 32, "version": f"fuzz-{i}"})
        elif case == "wrong_types":
            s = json.dumps([{"path": 5}, {"path": valid_path, "version": 3}, {"path": valid_path, "sha256": [1]},
                            {"path": ""}, {"path": {"a": 1}}][i % 5])
        elif case == "deep_nesting":
            s = "[" * 100_000 + "]" * 100_000
        elif case == "oversized":
            s = json.dumps({"path": "p" * BIG_STRING, "version": f"fuzz-{i}"})
        elif case == "invalid_utf8":
            yield case, raw_string(b'{"path": "\xff\xfe\xfd", "version": "\xc3\x28"}')
            continue
        elif case == "nul_in_path":
            s = json.dumps({"path": "/tmp/a\u0000b.onnx", "version": f"fuzz-{i}"})
        elif case == "bad_signature":
            s = json.dumps({"path": valid_path, "sha256": "ab" * 32, "version": f"fuzz-{i}",
                            "signature": {"format": "vla_rl_ros.promotion/1", "key_id": "0" * 16, "seq": 1,
                                          "spec_sha256": "0" * 64, "sig": "AAAA"}})
        else:
            yield case, corrupt(String(data=json.dumps({"path": valid_path})), rng)
            continue
        yield case, String(data=s)
