"""The per-tick step record that ``policy_node`` publishes on ``/rl/step`` (ROS-free codec).

Carried as ``std_msgs/Float64MultiArray`` (a standard type; no message
generation needed)::

    layout.dim[0]  label "obs"            size obs_dim
    layout.dim[1]  label "action"         size action_dim
    layout.dim[2]  label "meta"           size 6: tick, obs_stamp_s, cmd_stamp_s, intervention, hold, control_rate_hz
    layout.dim[3]  label "model:<version>" size 0
    data = obs ++ action ++ meta

``encode`` / ``decode`` work on (labels, sizes, data) so they are testable
without ROS; the nodes copy those into and out of the message.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

META_FIELDS = ("tick", "obs_stamp", "cmd_stamp", "intervention", "hold", "control_rate_hz")
MODEL_PREFIX = "model:"


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


def encode_layout(obs_dim: int, action_dim: int, model_version: str) -> tuple[list[str], list[int]]:
    return ["obs", "action", "meta", MODEL_PREFIX + model_version], [obs_dim, action_dim, len(META_FIELDS), 0]


def decode(labels: list[str], sizes: list[int], data, obs_dim: int, action_dim: int) -> StepRecord:
    """Validate and unpack one step; raises :class:`StepDecodeError` with a precise reason."""
    if len(labels) < 3 or labels[0] != "obs" or labels[1] != "action" or labels[2] != "meta":
        raise StepDecodeError(f"layout labels {labels[:4]} are not [obs, action, meta, model:...]")
    if sizes[0] != obs_dim or sizes[1] != action_dim:
        raise StepDecodeError(f"step has obs {sizes[0]} / action {sizes[1]}, configured {obs_dim} / {action_dim}")
    if sizes[2] != len(META_FIELDS):
        raise StepDecodeError(f"step meta has {sizes[2]} fields, expected {len(META_FIELDS)}")
    arr = np.asarray(data, dtype=np.float64)
    n = obs_dim + action_dim + len(META_FIELDS)
    if arr.shape != (n,):
        raise StepDecodeError(f"step data has {arr.size} values, layout says {n}")
    if not math.isfinite(float(arr.sum())):
        raise StepDecodeError("step contains NaN/Inf")
    version = ""
    if len(labels) > 3 and labels[3].startswith(MODEL_PREFIX):
        version = labels[3][len(MODEL_PREFIX):]
    m = arr[obs_dim + action_dim:]
    return StepRecord(
        obs=arr[:obs_dim].astype(np.float32), action=arr[obs_dim:obs_dim + action_dim].astype(np.float32),
        tick=int(m[0]), obs_stamp=float(m[1]), cmd_stamp=float(m[2]), intervention=bool(m[3] > 0.5),
        hold=bool(m[4] > 0.5), control_rate_hz=float(m[5]), model_version=version,
    )
