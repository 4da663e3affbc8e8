"""Train a success classifier on labelled frames, and export it to ONNX (the run side is :mod:`.success`).

Read top to bottom: the config, the network, the augmentation, the training
loop, the export. A small CNN (HIL-SERL trains its success classifier on ~200
positive frames; this one is sized for a 2-core CPU): three strided
convolutions, a max-pool and two linear layers over a 96x96 crop of the camera
frame, trained with binary cross-entropy (positives weighted by
negatives/positives, so an unbalanced set still pays both classes alike),
random shifts (pad 4 and crop, as DrQ) and a small brightness/contrast jitter.
A stratified ``holdout`` share of the labelled frames is never trained on; its
accuracy at the threshold is what the metadata reports.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .success import CLASSIFIER_KEY, DEFAULT_INPUT_SIZE, DEFAULT_ROI, INPUT_NAME, OUTPUT_NAME, preprocess


@dataclass
class ClassifierConfig:
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3  # Adam, annealed to 0 along a cosine over the epochs
    weight_decay: float = 1e-4
    holdout: float = 0.2  # share of the labelled frames held out (stratified)
    threshold: float = 0.5
    shift_px: int = 4  # random shift: pad this much and crop back
    jitter: float = 0.1  # brightness and contrast, each scaled by 1 +- U(0, jitter)
    seed: int = 0
    roi: tuple = DEFAULT_ROI
    input_size: tuple = DEFAULT_INPUT_SIZE  # (W, H)


class SuccessNet(nn.Module):
    """``[B, H, W, 3]`` RGB 0-255 -> ``p_success [B]`` (:meth:`logits` before the sigmoid)."""

    def __init__(self, input_size: Sequence[int] = DEFAULT_INPUT_SIZE):
        super().__init__()
        w, h = int(input_size[0]), int(input_size[1])
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
        self.conv = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():
            n = self.conv(torch.zeros(1, 3, h, w)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, 1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.permute(0, 3, 1, 2) / 255.0 - self.mean) / self.std
        return self.head(self.conv(x)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def augment(x: torch.Tensor, shift: int, jitter: float, gen: torch.Generator) -> torch.Tensor:
    """Random shift (replicate-pad ``shift`` px, crop back at a random offset per image) and colour jitter."""
    b, h, w, _ = x.shape
    if shift > 0:
        xp = F.pad(x.permute(0, 3, 1, 2), (shift,) * 4, mode="replicate")
        ox = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        oy = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        x = torch.stack([xp[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(b)]).permute(0, 2, 3, 1)
    if jitter > 0:
        bright = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean) * bright
    return x.clamp(0.0, 255.0)


def split_holdout(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train, holdout)`` indices."""
    rng = np.random.default_rng(seed)
    train, hold = [], []
    for cls in (False, True):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        k = int(round(len(idx) * share))
        hold.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(hold, dtype=int))


def scores(pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, precision and recall of boolean predictions."""
    pred, labels = np.asarray(pred, bool), np.asarray(labels, bool)
    tp = int((pred & labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    return {"accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"), "n": int(len(labels)),
            "false_positives": fp, "false_negatives": fn}


@torch.no_grad()
def predict(net: SuccessNet, x: np.ndarray, batch: int = 256) -> np.ndarray:
    net.eval()
    return np.concatenate([net(torch.as_tensor(x[i:i + batch], dtype=torch.float32)).numpy()
                           for i in range(0, len(x), batch)]) if len(x) else np.zeros(0, np.float32)


@dataclass
class TrainedClassifier:
    net: SuccessNet
    config: ClassifierConfig
    n_positive: int
    n_negative: int
    holdout: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0


def train_classifier(inputs: np.ndarray, labels: Sequence[bool], cfg: ClassifierConfig | None = None,
                     log=None) -> TrainedClassifier:
    """Train on preprocessed inputs (``[N, H, W, 3]`` uint8, :func:`~.success.preprocess`'d) and their labels.

    ``cfg.holdout`` of each class is kept out of training and scored at the end (``holdout`` 0: no split).
    """
    cfg = cfg or ClassifierConfig()
    x = np.asarray(inputs)
    y = np.asarray(labels, dtype=bool)
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"inputs {x.shape} and {len(y)} labels do not match")
    if y.all() or not y.any():
        raise ValueError(f"both classes are needed: {int(y.sum())} positives, {int((~y).sum())} negatives")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    tr, ho = split_holdout(y, cfg.holdout, cfg.seed) if cfg.holdout > 0 else (np.arange(len(y)), np.zeros(0, int))
    net = SuccessNet(cfg.input_size)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    xt = torch.as_tensor(x[tr], dtype=torch.float32)
    yt = torch.as_tensor(y[tr], dtype=torch.float32)
    n_pos = int(y[tr].sum())
    pos_weight = torch.tensor((len(tr) - n_pos) / max(n_pos, 1))
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        net.train()
        perm = torch.randperm(len(tr), generator=gen)
        total = 0.0
        for i in range(0, len(tr), cfg.batch_size):
            b = perm[i:i + cfg.batch_size]
            loss = F.binary_cross_entropy_with_logits(net.logits(augment(xt[b], cfg.shift_px, cfg.jitter, gen)),
                                                      yt[b], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        sched.step()
        if log:
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / len(tr):.4f}")
    out = TrainedClassifier(net.eval(), cfg, n_positive=n_pos, n_negative=len(tr) - n_pos,
                            train_seconds=time.perf_counter() - t0)
    if len(ho):
        out.holdout = scores(predict(net, x[ho]) >= cfg.threshold, y[ho])
    return out


def prepare_frames(frames: Sequence[np.ndarray], cfg: ClassifierConfig | None = None) -> np.ndarray:
    cfg = cfg or ClassifierConfig()
    return np.stack([preprocess(f, cfg.roi, cfg.input_size) for f in frames])


# ---------------------------------------------------------------- export
def _export_proto(net: nn.Module, example: torch.Tensor):
    """Opset 18 through ``torch.export`` as the policies (vla_rl_ros/algos/export.py); the TorchScript exporter
    (opset 17) if that fails."""
    import io
    import logging
    import warnings

    import onnx

    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                prog = torch.onnx.export(net, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                         dynamo=True, opset_version=18, external_data=False, verbose=False,
                                         dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
                return prog.model_proto
            except Exception:
                buf = io.BytesIO()
                torch.onnx.export(net, (example,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamo=False, opset_version=17,
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
                return onnx.load_from_string(buf.getvalue())
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)


def export_classifier(trained: TrainedClassifier, path: str | os.PathLike[str], extra: dict[str, Any] | None = None,
                      check_inputs: np.ndarray | None = None, atol: float = 1e-4) -> dict[str, Any]:
    """Export to ``path`` (atomically) with its metadata, after checking ONNX Runtime against torch.

    ``check_inputs``: preprocessed frames to compare on (default: random images); the max abs difference of
    ``p_success`` must be <= ``atol``. Returns the metadata (also embedded in the file), with ``sha256`` of the
    written file and ``parity_max_abs_diff``.
    """
    import onnx
    import onnxruntime as ort

    from ..algos.export import write_bytes_atomic

    cfg = trained.config
    net = trained.net.eval()
    w, h = cfg.input_size
    example = torch.zeros(2, int(h), int(w), 3)
    proto = _export_proto(net, example)
    digest = hashlib.sha256(b"".join(v.detach().numpy().tobytes() for _, v in sorted(net.state_dict().items())))
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    meta = {
        "version": f"classifier-{created.strftime('%Y%m%dT%H%M%SZ')}-{digest.hexdigest()[:8]}",
        "created": created.isoformat().replace("+00:00", "Z"),
        "task": "pick_place", "roi": list(cfg.roi), "input_size": [int(w), int(h)],
        "threshold": cfg.threshold, "n_positive": trained.n_positive, "n_negative": trained.n_negative,
        "holdout": trained.holdout, "config": {k: (list(v) if isinstance(v, tuple) else v)
                                               for k, v in asdict(cfg).items()},
        **(extra or {}),
    }
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = CLASSIFIER_KEY, json.dumps(meta, sort_keys=True)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    if check_inputs is None:
        check_inputs = np.random.default_rng(0).integers(0, 256, (5, int(h), int(w), 3)).astype(np.uint8)
    xs = np.asarray(check_inputs, dtype=np.float32)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: xs})[0].reshape(-1)
    want = predict(net, xs)
    err = float(np.abs(got - want).max())
    if not err <= atol:
        raise RuntimeError(f"ONNX Runtime disagrees with torch: max abs diff {err:.3g} > {atol:g}")
    path = Path(path)
    write_bytes_atomic(path, data)
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    meta["parity_max_abs_diff"] = err
    meta["file"] = path.name
    return meta


def version_into_run(trained: TrainedClassifier, run_dir: str | os.PathLike[str], check_inputs=None,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``<run>/models/classifier-<UTC timestamp>.onnx`` and its ``.json`` metadata beside it; returns the metadata."""
    from ..algos.export import write_bytes_atomic

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    models = Path(run_dir) / "models"
    path = models / f"classifier-{stamp}.onnx"
    meta = export_classifier(trained, path, extra=extra, check_inputs=check_inputs)
    write_bytes_atomic(path.with_suffix(".json"), (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    return {**meta, "path": str(path)}
