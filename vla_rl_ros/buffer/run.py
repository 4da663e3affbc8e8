"""Run folders: where a recorder's store, the learner's models and logs live.

Layout (``root`` is usually ``runs/``)::

    <root>/<run_name>/
        run.json          spec (JSON), created time, robot id, schema version
        buffer.sqlite     the transition store (+ -wal, -shm while open)
        buffer.seg000001.sqlite ...   its later segments, if the recorder rolls over (see .segments)
        archive/, archive.json        segments moved by ``vla-rl-ros data archive``, and the record of it
        models/           exported ONNX candidates and the registry (learner)
        tb/               TensorBoard logs (learner)
        checkpoints/      training checkpoints (learner)

Several robots record into distinct runs (one store each, one writer each); a
learner reads several together with ``Replay(list_stores([...]))``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..spec import Spec
from .schema import SCHEMA_VERSION, check_spec, connect, create_store, store_spec
from .segments import ARCHIVE_DIR, MANIFEST, list_segments, series_of

RUN_FILE = "run.json"
STORE_FILE = "buffer.sqlite"
SUBDIRS = ("models", "tb", "checkpoints")


@dataclass(frozen=True)
class Run:
    path: Path
    name: str
    spec: Spec
    robot_id: str
    created: float

    @property
    def buffer_path(self) -> Path:
        return self.path / STORE_FILE

    @property
    def segments(self) -> list[Path]:
        """The store's segments, oldest first (one, ``buffer_path``, unless the recorder rolls over)."""
        return list_segments(self.buffer_path)

    @property
    def models_dir(self) -> Path:
        return self.path / "models"

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def writer(self, **kw: Any):
        """A :class:`~vla_rl_ros.buffer.writer.Writer` on this run's store."""
        from .writer import Writer

        return Writer(self.buffer_path, spec=self.spec, **kw)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def create_run(root: str | Path, name: str, spec: Spec, robot_id: str = "", *, exist_ok: bool = False) -> Run:
    """Create ``root/name`` with its ``run.json``, an empty store and the subfolders.

    With ``exist_ok`` an existing run is opened instead (its spec must equal ``spec``).
    """
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid run name {name!r}")
    path = Path(root) / name
    if (path / RUN_FILE).exists():
        if not exist_ok:
            raise FileExistsError(f"run {path} already exists")
        run = open_run(path)
        check_spec(spec, run.spec, path)
        return run
    path.mkdir(parents=True, exist_ok=True)
    for sub in SUBDIRS:
        (path / sub).mkdir(exist_ok=True)
    if not (path / STORE_FILE).exists():
        create_store(path / STORE_FILE, spec, robot_id)
    created = time.time()
    _write_json_atomic(path / RUN_FILE, {"name": name, "spec": spec.to_dict(), "created": created,
                                         "robot_id": robot_id, "schema_version": SCHEMA_VERSION})
    return Run(path=path, name=name, spec=spec, robot_id=robot_id, created=created)


def open_run(path: str | Path) -> Run:
    """Open a run folder (or its ``run.json``/``buffer.sqlite``); checks the store agrees with ``run.json``."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    rf = path / RUN_FILE
    if not rf.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no {RUN_FILE})")
    d = json.loads(rf.read_text())
    spec = Spec.from_dict(d["spec"])
    segments = list_segments(path / STORE_FILE)
    newest = segments[-1] if segments else path / STORE_FILE  # (the first may be archived)
    con = connect(newest, readonly=True)
    try:
        check_spec(spec, store_spec(con), newest)
    finally:
        con.close()
    return Run(path=path, name=d.get("name", path.name), spec=spec, robot_id=d.get("robot_id", ""),
               created=float(d.get("created", 0.0)))


def _archived_here(store: Path) -> bool:
    """Is ``store`` in a run's archive folder (it was archived, and is read by naming that folder)?"""
    return store.parent.name == ARCHIVE_DIR and (store.parent.parent / MANIFEST).is_file()


def list_stores(paths: Iterable[str | Path]) -> list[Path]:
    """Resolve run folders, store files or folders of runs into store paths (deduplicated, in order).

    * a store file stands for its series: every segment of it in its folder,
      oldest first (just the file for a store without segments; see :mod:`.segments`);
    * a run folder gives its ``buffer.sqlite`` series;
    * any other folder gives every series below it (sorted), leaving out the
      segments a run archived (``<run>/archive/`` beside its ``archive.json``).
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        p = Path(p)
        if p.is_file():
            found = list_segments(p)
        elif list_segments(p / STORE_FILE):
            found = list_segments(p / STORE_FILE)
        elif p.is_dir():
            bases = {series_of(f)[0] for pattern in (STORE_FILE, f"{Path(STORE_FILE).stem}.seg*.sqlite")
                     for f in p.rglob(pattern) if not _archived_here(f)}
            found = [seg for b in sorted(bases) for seg in list_segments(b)]
        else:
            raise FileNotFoundError(f"{p}: no such store or run folder")
        for f in found:
            r = f.resolve()
            if r not in seen:
                seen.add(r)
                out.append(f)
    return out
