"""Camera frames into a model's image input (ROS-free apart from the message's fields).

:func:`decode_into` turns one ``sensor_msgs/Image`` (rgb8 or bgr8, any row
step, validated by the node's callback) into the model's ``(3, H, W)`` uint8 RGB
input as :class:`~vla_rl_ros.spec.ImageSpec` declares it: crop, resize (area
interpolation, as a camera's downscale), colour order, channels first. It runs in
``policy_node``'s inference thread, not in the control tick.
"""
from __future__ import annotations

import numpy as np


def frame_array(data, height: int, width: int, step: int) -> np.ndarray:
    """The ``(height, width, 3)`` uint8 view of an 8-bit 3-channel frame's buffer (no copy)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    return buf.reshape(height, step)[:, : width * 3].reshape(height, width, 3)


def prepare(frame: np.ndarray, im, encoding: str, out: np.ndarray | None = None) -> np.ndarray:
    """``frame`` (H0, W0, 3) in ``encoding`` -> the model input ``(3, im.height, im.width)`` RGB uint8."""
    import cv2

    if im.crop:
        top, left, h, w = im.crop
        frame = frame[top: top + h, left: left + w]
    if frame.shape[0] != im.height or frame.shape[1] != im.width:
        frame = cv2.resize(frame, (im.width, im.height), interpolation=cv2.INTER_AREA)
    if encoding == "bgr8":
        frame = frame[:, :, ::-1]
    if out is None:
        out = np.empty((3, im.height, im.width), dtype=np.uint8)
    out[:] = frame.transpose(2, 0, 1)
    return out


def decode_into(msg, im, out: np.ndarray) -> np.ndarray:
    """A ``sensor_msgs/Image`` into the model input ``out`` (``(3, H, W)`` uint8), per :class:`ImageSpec` ``im``."""
    return prepare(frame_array(msg.data, msg.height, msg.width, msg.step), im, msg.encoding, out)
