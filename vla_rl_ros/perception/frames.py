"""A run's camera frames and their success labels, on disk (no ROS, no torch).

Layout, in ``<run>/frames/``::

    ep000012_middle.png   ep000012_last.png     RGB frames (PNG, cv2.imwrite)
    frames.jsonl          one line per frame: file, episode, t (s since the episode's first frame), tag,
                          suggested (the episode's recorded outcome: True for success), end_reason
    labels.jsonl          one line per label given: file, label (true/false), by (person | suggested |
                          csv), at (unix time); the last line for a file wins

The recorder (``save_frames``) writes frames and index lines; ``vla-rl-ros data
label RUN`` writes labels; ``vla-rl-ros train-classifier RUN`` reads the
labelled ones. The suggestion is only a suggestion: an episode that timed out
with the cube on the goal, or a success whose middle frame shows the cube
still on its way, are exactly what a person corrects. Appends are one
``write`` of a whole line, so a crash loses at most the line in flight.
"""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

FRAMES_DIR = "frames"
INDEX_FILE = "frames.jsonl"
LABELS_FILE = "labels.jsonl"


def _append(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    with open(path, "a") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a crash
                continue
    return out


def pick_frames(stamps: Sequence[float]) -> dict[str, int]:
    """Which of an episode's frames to keep: ``{"middle": i, "last": j}``, two different frames (one frame: only
    ``last``; two: the first and the last)."""
    n = len(stamps)
    if n == 0:
        return {}
    if n == 1:
        return {"last": 0}
    return {"middle": (n - 1) // 2, "last": n - 1}


class FrameStore:
    """``<run>/frames``: add an episode's frames, read the index, give and read labels."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.dir = Path(run_dir) / FRAMES_DIR

    # ------------------------------------------------------------ writing
    def add_episode(self, episode: int, frames: Sequence[tuple[float, np.ndarray]], success: bool | None,
                    end_reason: str = "") -> list[dict]:
        """Save the middle and last of an episode's ``(t, rgb)`` frames; returns their index rows."""
        import cv2

        picks = pick_frames([t for t, _ in frames])
        rows = []
        self.dir.mkdir(parents=True, exist_ok=True)
        for tag, i in picks.items():
            t, rgb = frames[i]
            name = f"ep{int(episode):06d}_{tag}.png"
            if not cv2.imwrite(str(self.dir / name), cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {self.dir / name}")
            rows.append({"file": name, "episode": int(episode), "t": round(float(t), 3), "tag": tag,
                         "suggested": None if success is None else bool(success), "end_reason": end_reason})
        _append(self.dir / INDEX_FILE, rows)
        return rows

    def label(self, file: str, value: bool, by: str = "person") -> None:
        _append(self.dir / LABELS_FILE, [{"file": file, "label": bool(value), "by": by, "at": round(time.time(), 3)}])

    # ------------------------------------------------------------ reading
    def index(self) -> list[dict]:
        return _read(self.dir / INDEX_FILE)

    def labels(self) -> dict[str, bool]:
        """``{file: label}``, the last label given for each file."""
        return {r["file"]: bool(r["label"]) for r in _read(self.dir / LABELS_FILE) if "file" in r and "label" in r}

    def unlabelled(self) -> list[dict]:
        done = self.labels()
        return [r for r in self.index() if r["file"] not in done]

    def labelled(self) -> list[tuple[Path, bool]]:
        """``(png path, label)`` of every labelled frame whose file exists."""
        return [(self.dir / f, v) for f, v in sorted(self.labels().items()) if (self.dir / f).is_file()]

    def load(self, path: Path) -> np.ndarray:
        import cv2

        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"could not read {path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    # ------------------------------------------------------------ labelling
    def accept_suggested(self) -> int:
        """Label every unlabelled frame with its suggestion (frames without one stay unlabelled); returns how many."""
        n = 0
        for r in self.unlabelled():
            if r.get("suggested") is not None:
                self.label(r["file"], bool(r["suggested"]), by="suggested")
                n += 1
        return n

    def from_csv(self, path: str | os.PathLike[str]) -> int:
        """Labels from a CSV with columns ``file,label`` (label: 1/0, true/false, y/n, success/failure)."""
        known = {r["file"] for r in self.index()}
        n = 0
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                name = os.path.basename((row.get("file") or "").strip())
                if name not in known:
                    raise ValueError(f"{path}: {name!r} is not a frame of this run")
                self.label(name, parse_label(row.get("label", "")), by="csv")
                n += 1
        return n


def parse_label(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "y", "yes", "success", "positive"):
        return True
    if t in ("0", "false", "n", "no", "failure", "negative"):
        return False
    raise ValueError(f"not a label: {text!r} (1/0, true/false, y/n, success/failure)")
