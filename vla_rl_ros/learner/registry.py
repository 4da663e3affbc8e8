"""The models registry of a run: every candidate, promoted or not, with its evaluation.

Layout inside the run folder::

    models/
        <version>.onnx          every exported candidate (written atomically)
        registry.jsonl          one JSON record per candidate, append-only, fsync'd
        incumbent.json          the model the arm runs now (replaced atomically)

A record: ``version, path, sha256, algorithm, parent_version, created, training_steps,
data_range, eval {candidate, incumbent, seeds}, promoted, reason``.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (``[]`` if it does not exist). A torn line (a crash mid-append) is
    skipped, never the records around it."""
    out: list[dict[str, Any]] = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return out


class Registry:
    def __init__(self, models_dir: str | Path):
        self.dir = Path(models_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "registry.jsonl"
        self.incumbent_path = self.dir / "incumbent.json"

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def append(self, record: dict[str, Any]) -> None:
        record = {"logged_at": time.time(), **record}
        line = json.dumps(record, default=str) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def incumbent(self) -> dict[str, Any] | None:
        try:
            with open(self.incumbent_path) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def set_incumbent(self, record: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".incumbent.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.incumbent_path)
