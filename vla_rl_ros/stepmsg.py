"""The per-tick step record that ``policy_node`` publishes on ``/rl/step`` (ROS-free codec).

Carried as ``std_msgs/Float64MultiArray`` (a standard type; no message
generation needed)::

    layout.dim[0]  label "obs"            size obs_dim
    layout.dim[1]  label "action"         size action_dim
    layout.dim[2]  label "meta"           size 9: tick, obs_stamp_s, cmd_stamp_s, intervention, hold, control_rate_hz,
                                          chunk_seq, chunk_step, frame_stamp_s
    layout.dim[3]  label "model:<version>" size 0
    data = obs ++ action ++ meta

``chunk_seq``/``chunk_step``: which inference's chunk (from 1) and which step of it
(fractional: interpolated) the tick executed, -1 when the tick ran no chunk (a
per-tick model, a hold, a human's action); ``frame_stamp_s``: the newest camera
frame that chunk was computed from (0: none). A record of the first six fields
alone (a publisher from before chunks) is read with those three at -1, -1, 0.

``encode`` / ``decode`` work on (labels, sizes, data) so they are testable
without ROS; the nodes copy those into and out of the message.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

META_FIELDS = ("tick", "obs_stamp", "cmd_stamp", "intervention", "hold", "control_rate_hz", "chunk_seq", "chunk_step",
               "frame_stamp")
LEGACY_META = 6  # a step record from before action chunks: the first six fields
MODEL_PREFIX = "model:"


F32_MAX = float(np.finfo(np.float32).max)
MAX_TICK = float(2**53)  # a tick is a whole number a float64 holds exactly
MAX_RATE_HZ = 1e6  # control_rate_hz: 0 (unknown: the spec's rate) up to this


class StepDecodeError(ValueError):
    pass


@dataclass
class StepRecord:
    obs: np.ndarray
    action: np.ndarray
    tick: int
    obs_stamp: float
    cmd_stamp: float
    intervention: bool
    hold: bool
    control_rate_hz: float
    model_version: str
    chunk_seq: int = -1
    chunk_step: float = -1.0
    frame_stamp: float = 0.0


def encode_layout(obs_dim: int, action_dim: int, model_version: str) -> tuple[list[str], list[int]]:
    return ["obs", "action", "meta", MODEL_PREFIX + model_version], [obs_dim, action_dim, len(META_FIELDS), 0]


def decode(labels: list[str], sizes: list[int], data, obs_dim: int, action_dim: int) -> StepRecord:
    """Validate and unpack one step; raises :class:`StepDecodeError` with a precise reason.

    Valid: the layout above, finite values, obs and action within float32 range (as they are stored), the
    tick a whole number in [0, 2^53], the flags 0 or 1, control_rate_hz in [0, 1e6] (0: unknown)."""
    if len(labels) < 3 or labels[0] != "obs" or labels[1] != "action" or labels[2] != "meta":
        raise StepDecodeError(f"layout labels {labels[:4]} are not [obs, action, meta, model:...]")
    if sizes[0] != obs_dim or sizes[1] != action_dim:
        raise StepDecodeError(f"step has obs {sizes[0]} / action {sizes[1]}, configured {obs_dim} / {action_dim}")
    if sizes[2] not in (len(META_FIELDS), LEGACY_META):
        raise StepDecodeError(f"step meta has {sizes[2]} fields, expected {len(META_FIELDS)}")
    arr = np.asarray(data, dtype=np.float64)
    n = obs_dim + action_dim + sizes[2]
    if arr.shape != (n,):
        raise StepDecodeError(f"step data has {arr.size} values, layout says {n}")
    if not np.isfinite(arr).all():
        raise StepDecodeError("step contains NaN/Inf")
    if np.abs(arr[:obs_dim + action_dim]).max(initial=0.0) > F32_MAX:
        raise StepDecodeError("step obs/action exceed the float32 range they are stored in")
    m = arr[obs_dim + action_dim:]
    tick, flags, rate = m[0], m[3:5], m[5]
    if not (0.0 <= tick <= MAX_TICK and tick == math.floor(tick)):
        raise StepDecodeError(f"step tick {tick!r} is not a whole number in [0, 2^53]")
    if not np.all((flags == 0.0) | (flags == 1.0)):
        raise StepDecodeError(f"step intervention/hold flags {flags.tolist()} are not 0 or 1")
    if not 0.0 <= rate <= MAX_RATE_HZ:
        raise StepDecodeError(f"step control_rate_hz {rate!r} is outside [0, {MAX_RATE_HZ:g}]")
    seq, cstep, fstamp = (m[6], m[7], m[8]) if m.size > LEGACY_META else (-1.0, -1.0, 0.0)
    if not (-1.0 <= seq <= MAX_TICK and seq == math.floor(seq)):
        raise StepDecodeError(f"step chunk_seq {seq!r} is not a whole number >= -1")
    if not -1.0 <= cstep <= 1e6 or fstamp < 0.0:
        raise StepDecodeError(f"step chunk_step {cstep!r} / frame_stamp {fstamp!r} out of range")
    version = ""
    if len(labels) > 3 and labels[3].startswith(MODEL_PREFIX):
        version = labels[3][len(MODEL_PREFIX):]
    return StepRecord(
        obs=arr[:obs_dim].astype(np.float32), action=arr[obs_dim:obs_dim + action_dim].astype(np.float32),
        tick=int(m[0]), obs_stamp=float(m[1]), cmd_stamp=float(m[2]), intervention=bool(m[3] > 0.5),
        hold=bool(m[4] > 0.5), control_rate_hz=float(m[5]), model_version=version,
        chunk_seq=int(seq), chunk_step=float(cstep), frame_stamp=float(fstamp),
    )
