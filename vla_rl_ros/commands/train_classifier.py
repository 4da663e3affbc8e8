"""``vla-rl-ros train-classifier``: a success classifier from a run's labelled frames.

    vla-rl-ros data label-frames runs/pick_place-sim --accept-suggested      # or interactively, or --from labels.csv
    vla-rl-ros train-classifier runs/pick_place-sim

Trains :class:`~vla_rl_ros.perception.success_train.SuccessNet` on the frames
labelled in ``RUN/frames/labels.jsonl`` (the crop ``--roi`` of each frame,
resized to ``--size``), holds out a stratified ``--holdout`` share and reports
its accuracy, precision and recall, exports ONNX (checked against torch on the
held-out frames) and versions it into the run: ``RUN/models/classifier-<UTC
time>.onnx`` and a ``.json`` beside it (sha256, threshold, held-out figures,
positives/negatives, input size, crop). The recorder uses it with
``reward: classifier`` and ``classifier_model``.
"""
from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    from ..perception.success import DEFAULT_INPUT_SIZE, DEFAULT_ROI

    p = sub.add_parser("train-classifier", help="train a success classifier on a run's labelled frames (ONNX, "
                       "versioned into the run)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="run folder whose frames/ are labelled (vla-rl-ros data label-frames)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--holdout", type=float, default=0.2, help="share of each class held out (default 0.2)")
    p.add_argument("--threshold", type=float, default=0.5, help="decision threshold on p_success (default 0.5)")
    p.add_argument("--roi", type=float, nargs=4, default=list(DEFAULT_ROI), metavar=("X0", "Y0", "X1", "Y1"),
                   help="the crop of the frame the model sees, fractions (default: the twin camera's workspace)")
    p.add_argument("--size", type=int, nargs=2, default=list(DEFAULT_INPUT_SIZE), metavar=("W", "H"),
                   help="the model's input size (default 96 96)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..perception.frames import FrameStore
    from ..perception.success_train import ClassifierConfig, prepare_frames, train_classifier, version_into_run

    torch.set_num_threads(max(1, args.threads))
    store = FrameStore(args.run)
    items = store.labelled()
    if not items:
        raise FileNotFoundError(f"{store.dir}: no labelled frames (vla-rl-ros data label-frames {args.run})")
    labels = np.array([v for _, v in items], dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError(f"need both classes: {int(labels.sum())} success, {int((~labels).sum())} not")
    cfg = ClassifierConfig(epochs=args.epochs, holdout=args.holdout, threshold=args.threshold, seed=args.seed,
                           roi=tuple(args.roi), input_size=tuple(args.size))
    x = prepare_frames([store.load(p) for p, _ in items], cfg)
    print(f"training on {len(items)} labelled frames ({int(labels.sum())} success, {int((~labels).sum())} not), "
          f"{args.holdout:.0%} held out")
    trained = train_classifier(x, labels, cfg)
    ho = trained.holdout
    if ho:
        print(f"held out ({ho['n']} frames): accuracy {ho['accuracy']:.3f}, precision {ho['precision']:.3f}, "
              f"recall {ho['recall']:.3f}")
    meta = version_into_run(trained, args.run, check_inputs=x[: min(len(x), 32)],
                            extra={"frames": str(store.dir)})
    print(f"wrote {meta['path']} (sha256 {meta['sha256'][:12]}..., ONNX vs torch max abs diff "
          f"{meta['parity_max_abs_diff']:.2g})")
    print(json.dumps({k: meta[k] for k in ("version", "threshold", "n_positive", "n_negative", "input_size")}))
    return 0
