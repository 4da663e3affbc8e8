"""A learned success detector at run time: ONNX Runtime over camera frames (no torch, no ROS).

A success classifier (trained by :mod:`.success_train`, ``vla-rl-ros train-classifier``)
is one ONNX file: input ``image`` ``[batch, H, W, 3]`` float32 RGB values 0-255
(the normalisation is inside the graph), output ``p_success`` ``[batch]`` float32,
the probability that the frame shows the task done. The file's
``metadata_props`` carry ``vla_rl_ros.classifier``: JSON with the crop of the
camera frame the model looks at (``roi``: x0, y0, x1, y1 as fractions of the
frame), its ``input_size`` (W, H), the decision ``threshold``, and how it was
trained (data counts, held-out accuracy). :func:`preprocess` is the one
crop-and-resize that training and inference share.

:class:`ClassifierSuccessDetector` has the :class:`~vla_rl_ros.rewards.SuccessDetector`
interface (``update(obs) -> bool``, ``reset``, ``config``, latching) the recorder
drives every tick, but judges from frames: :meth:`~ClassifierSuccessDetector.on_frame`
classifies each new camera frame, and success is ``n_consecutive`` frames in a
row at or above the threshold.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, Sequence

import numpy as np

CLASSIFIER_KEY = "vla_rl_ros.classifier"
INPUT_NAME, OUTPUT_NAME = "image", "p_success"
DEFAULT_ROI = (0.1, 0.15, 0.9, 0.75)  # the workspace in the scene camera's frame (sim/panda_table.yaml)
DEFAULT_INPUT_SIZE = (96, 96)  # (W, H)


def preprocess(rgb: np.ndarray, roi: Sequence[float] = DEFAULT_ROI,
               size: Sequence[int] = DEFAULT_INPUT_SIZE) -> np.ndarray:
    """The model's input from one camera frame: the ``roi`` crop resized to ``size`` (W, H), uint8 (H, W, 3)."""
    import cv2

    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 frame (H, W, 3), got {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in roi)
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"roi {list(roi)} is not a crop (x0 < x1, y0 < y1, fractions of the frame)")
    crop = a[int(round(y0 * h)):max(int(round(y1 * h)), int(round(y0 * h)) + 1),
             int(round(x0 * w)):max(int(round(x1 * w)), int(round(x0 * w)) + 1)]
    return cv2.resize(crop, (int(size[0]), int(size[1])), interpolation=cv2.INTER_AREA)


def read_classifier_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``vla_rl_ros.classifier`` metadata of a classifier file (ValueError if it has none)."""
    import onnxruntime as ort

    meta = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    text = meta.custom_metadata_map.get(CLASSIFIER_KEY)
    if text is None:
        raise ValueError(f"{path}: not a success classifier (no {CLASSIFIER_KEY} metadata)")
    return json.loads(text)


def find_classifier(model: str, run_dir: str | os.PathLike[str] | None = None) -> str:
    """The classifier file: ``model`` when given (a path), else the newest ``<run_dir>/models/classifier-*.onnx``."""
    from pathlib import Path

    if model:
        if not os.path.isfile(model):
            raise FileNotFoundError(f"success classifier not found: {model}")
        return str(model)
    found = sorted((Path(run_dir or ".") / "models").glob("classifier-*.onnx"))
    if not found:
        raise FileNotFoundError(f"no success classifier in {Path(run_dir or '.') / 'models'} (vla-rl-ros "
                                "train-classifier RUN), and classifier_model is not set")
    return str(found[-1])


class SuccessClassifier:
    """An exported success classifier in ONNX Runtime (one intra-op thread by default).

    Args:
        path: the ``.onnx`` file.
        threshold: overrides the file's decision threshold (None: the file's).
        sha256: when given, the file's digest must match (a model is verified before it is run).
    """

    def __init__(self, path: str | os.PathLike[str], threshold: float | None = None, sha256: str | None = None,
                 threads: int = 1):
        import onnxruntime as ort

        path = os.fspath(path)
        with open(path, "rb") as f:
            data = f.read()
        self.sha256 = hashlib.sha256(data).hexdigest()
        if sha256:
            got = self.sha256
            if got != sha256:
                raise ValueError(f"{path}: sha256 {got} != expected {sha256}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if CLASSIFIER_KEY not in meta:
            raise ValueError(f"{path}: not a success classifier (no {CLASSIFIER_KEY} metadata)")
        self.path = path
        self.meta = json.loads(meta[CLASSIFIER_KEY])
        self.roi = tuple(self.meta.get("roi", DEFAULT_ROI))
        self.input_size = tuple(self.meta.get("input_size", DEFAULT_INPUT_SIZE))
        self.threshold = float(self.meta.get("threshold", 0.5) if threshold is None else threshold)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")

    def prepare(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Camera frames (one (H, W, 3) or a list/batch) to the model's float32 batch."""
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = [frames]
        return np.stack([preprocess(f, self.roi, self.input_size) for f in frames]).astype(np.float32)

    def predict_proba(self, frames) -> np.ndarray:
        """``p_success`` (float32, one per frame) for camera frames."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: self.prepare(frames)})[0].reshape(-1)

    def predict(self, frames) -> np.ndarray:
        return self.predict_proba(frames) >= self.threshold


class ClassifierSuccessDetector:
    """Episode success from camera frames: ``n_consecutive`` new frames in a row judged success.

    The recorder calls :meth:`update` every tick with the observation (unused here: the frames decide) as it calls
    :class:`~vla_rl_ros.rewards.SuccessDetector`'s, and :meth:`on_frame` with every new camera frame. Like that
    detector it latches until :meth:`reset`. ``max_frame_age_s``: a frame older than this (by ``clock``, monotonic
    seconds by default) when :meth:`update` runs breaks the streak: no success from a camera that stopped.
    """

    def __init__(self, classifier: SuccessClassifier, n_consecutive: int = 3, max_frame_age_s: float = 1.0,
                 clock=time.monotonic):
        if int(n_consecutive) < 1:
            raise ValueError("n_consecutive must be >= 1")
        self.classifier = classifier
        self.n_consecutive = int(n_consecutive)
        self.max_frame_age_s = float(max_frame_age_s)
        self.streak = 0
        self.succeeded = False
        self.last_p: float | None = None
        self.last_stamp: float | None = None
        self.frames = 0
        self.clock = clock

    @property
    def config(self) -> dict[str, Any]:
        c = self.classifier
        return {"source": "classifier", "model": os.path.basename(c.path), "model_version": c.meta.get("version"),
                "threshold": c.threshold, "n_consecutive": self.n_consecutive}

    def reset(self) -> None:
        self.streak = 0
        self.succeeded = False
        self.last_p = None

    def on_frame(self, rgb: np.ndarray) -> float:
        """Classify one new frame; returns its ``p_success``."""
        p = float(self.classifier.predict_proba(rgb)[0])
        self.frames += 1
        self.last_p, self.last_stamp = p, self.clock()
        self.streak = self.streak + 1 if p >= self.classifier.threshold else 0
        return p

    def update(self, obs: Any = None) -> bool:
        """This tick's verdict (``obs`` is not used: the frames decide)."""
        if (self.last_stamp is not None and self.max_frame_age_s > 0
                and self.clock() - self.last_stamp > self.max_frame_age_s):
            self.streak = 0
        if self.streak >= self.n_consecutive:
            self.succeeded = True
        return self.succeeded
