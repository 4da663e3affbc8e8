"""Store segments and their archive: how a run that records for days stays manageable.

A long run's store is split into *segments*, as ``ros2 bag record
--max-bag-size/--max-bag-duration`` splits a bag: the writer rolls over to a
new segment when the current one passes ``segment_max_mb`` or
``segment_max_s``, and only at an episode boundary, so an episode is never
split. Each segment is a complete store (same schema, its own ``meta``) named
in order beside the first::

    buffer.sqlite              segment 0 (the store of a run without segments)
    buffer.seg000001.sqlite    segment 1
    buffer.seg000002.sqlite    ...

A store path names its whole *series*: the writer resumes the newest segment,
and :class:`~.replay.Replay`, ``stats`` and ``export`` read every segment, in
order, as one store. Episode ids (and ``idx``) continue across segments: a new
segment records ``episode_id_base``/``episode_idx_base`` in its ``meta``, so ids
stay unique in the series even when a segment is still empty.

Archiving (``vla-rl-ros data archive``) moves closed segments (every one but
the newest, which the writer appends to) into ``<run>/archive/`` and records
each move in ``<run>/archive.json``. Readers then read what remains and report
what was archived. Nothing is ever deleted: archived segments are complete
stores, readable by any SQLite tool or by pointing a reader at them.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..runtime.onnx_policy import sha256_file

MANIFEST = "archive.json"
ARCHIVE_DIR = "archive"
_SEG = re.compile(r"^(?P<stem>.+)\.seg(?P<k>\d{6})(?P<suffix>\.[^.]+)?$")


def segment_path(base: str | Path, index: int) -> Path:
    """The file of segment ``index`` of the series whose first segment is ``base``."""
    base = Path(base)
    if index == 0:
        return base
    return base.with_name(f"{base.stem}.seg{index:06d}{base.suffix}")


def series_of(path: str | Path) -> tuple[Path, int]:
    """``(base, index)`` of a segment file (a plain store is segment 0 of its own series)."""
    path = Path(path)
    m = _SEG.match(path.name)
    if m is None:
        return path, 0
    return path.with_name(m["stem"] + (m["suffix"] or "")), int(m["k"])


def list_segments(base: str | Path) -> list[Path]:
    """Existing segments of the series ``base``, oldest first (archived ones are not there any more)."""
    base, _ = series_of(base)
    found = [(0, base)] if base.is_file() else []
    if base.parent.is_dir():
        for p in base.parent.glob(f"{_glob_escape(base.stem)}.seg*{_glob_escape(base.suffix)}"):
            b, k = series_of(p)
            if k and b == base and p.is_file():
                found.append((k, p))
    return [p for _, p in sorted(found)]


def _glob_escape(s: str) -> str:
    """``s`` matched literally by ``Path.glob`` (a store named ``run[1].sqlite``)."""
    return re.sub(r"([*?\[])", r"[\1]", s)


# ------------------------------------------------------------------ archive
def read_manifest(run_dir: str | Path) -> list[dict[str, Any]]:
    """The archive records of a run folder (``[]`` when nothing was archived)."""
    p = Path(run_dir) / MANIFEST
    if not p.is_file():
        return []
    return list(json.loads(p.read_text()).get("archived", []))


def archived_segments(base: str | Path) -> list[dict[str, Any]]:
    """Archive records of one series."""
    base, _ = series_of(base)
    return [r for r in read_manifest(base.parent) if r.get("series") == base.name]


def _describe(path: Path) -> dict[str, Any]:
    """What a closed segment holds, for the manifest (read before it moves)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        n_eps, first, last = con.execute("SELECT COUNT(*), MIN(id), MAX(id) FROM episodes").fetchone()
        n_steps = con.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
        store_id = con.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]
    finally:
        con.close()
    return {"episodes": int(n_eps), "first_episode": first, "last_episode": last, "steps": int(n_steps),
            "store_id": store_id}


def _move(src: Path, dst: Path, sha256: str | None) -> None:
    """Rename ``src`` to ``dst``; across filesystems copy, fsync, check the digest, and only then unlink ``src``."""
    try:
        os.rename(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    shutil.copy2(src, dst)
    with open(dst, "rb") as f:
        os.fsync(f.fileno())
    if sha256 is not None and sha256_file(dst) != sha256:
        raise OSError(f"{dst}: the copy's digest differs from {src}'s; {src} is left in place")
    src.unlink()


def archive_segments(base: str | Path, *, keep: int = 0, dest: str | Path | None = None,
                     dry_run: bool = False) -> list[dict[str, Any]]:
    """Move the closed segments of the series ``base`` into ``dest`` (default ``<run>/archive``).

    The newest segment is never moved (the writer appends to it, or will when
    it reopens), nor the ``keep`` newest closed ones, nor a segment whose WAL
    still holds frames (a writer that is closing it). Each segment is moved
    (a rename within one filesystem, else copied, verified, and only then
    removed at its old place), then recorded in ``<run>/archive.json``: a crash in between
    leaves the segment in the archive folder, never lost. Returns the records
    of the segments moved (or that would be, with ``dry_run``).
    """
    from .run import _write_json_atomic

    base, _ = series_of(base)
    run_dir = base.parent
    dest = Path(dest) if dest is not None else run_dir / ARCHIVE_DIR
    segs = list_segments(base)
    closed = segs[:-1]
    candidates = closed[:max(0, len(closed) - max(0, int(keep)))]
    done: list[dict[str, Any]] = []
    for seg in candidates:
        wal = Path(str(seg) + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            continue  # still being closed by its writer: next time
        rec = {"series": base.name, "segment": seg.name, "index": series_of(seg)[1], "bytes": seg.stat().st_size,
               **_describe(seg), "sha256": sha256_file(seg), "archived_at": time.time(),
               "moved_to": os.path.relpath(dest / seg.name, run_dir)}  # relative: the run folder may move
        if not dry_run:
            dest.mkdir(parents=True, exist_ok=True)
            target = dest / seg.name
            if target.exists():
                raise FileExistsError(f"{target} already exists: not overwriting it")
            _move(seg, target, rec["sha256"])
            for side in ("-wal", "-shm"):  # empty (the segment is closed); they go along rather than stay behind
                p = Path(str(seg) + side)
                if p.exists():
                    _move(p, dest / p.name, None)
            manifest = {"archived": read_manifest(run_dir) + [rec]}
            _write_json_atomic(run_dir / MANIFEST, manifest)
        done.append(rec)
    return done


def describe_archived(records: list[dict[str, Any]]) -> str:
    """One line saying what was archived (``""`` when nothing was)."""
    if not records:
        return ""
    eps = sum(r.get("episodes", 0) for r in records)
    steps = sum(r.get("steps", 0) for r in records)
    where = sorted({str(Path(r["moved_to"]).parent) for r in records})
    return (f"archived: {len(records)} segment(s) ({', '.join(r['segment'] for r in records)}; {eps} episodes, "
            f"{steps} steps) in {', '.join(where)} (relative to the run folder)")
