"""Where relative data paths (models, URDFs) are looked up (no ROS inside).

A relative path in a parameter file (``model_path: models/reach.onnx``) is
resolved against, in order: the installed package's share dir (ament index,
when the package was installed with colcon), the source checkout's root, and
the current directory. The first existing candidate wins; when none exists the
current-directory candidate is returned, so the error names a plain path.
"""
from __future__ import annotations

import os


def candidates(path: str) -> list[str]:
    from ..graph import repo_root, share_dir

    out = []
    sd = share_dir()
    if sd:
        out.append(os.path.join(sd, path))
    out.append(os.path.join(repo_root(), path))
    out.append(os.path.abspath(path))
    return out


def resolve_path(path: str) -> str:
    """Absolute or empty paths unchanged; relative ones resolved as described above."""
    if not path or os.path.isabs(path):
        return path
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    cands = candidates(path)
    for c in cands:
        if os.path.exists(c):
            return c
    return cands[-1]
