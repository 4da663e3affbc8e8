"""A robot's URDF as PyBullet can load it: ``package://`` mesh URIs resolved (no ROS inside).

A URDF made by xacro names its meshes ``package://<pkg>/meshes/...``. ROS resolves
``<pkg>`` through the ament index; PyBullet only looks beside the URDF file and a
few folders above it, so a description whose meshes live elsewhere fails to load.
:func:`pybullet_urdf` finds each package and, when any URI needs it, writes a copy
of the URDF with absolute mesh paths (cached by content digest) for PyBullet to
load. The kinematics (:mod:`vla_rl_ros.kinematics`) keep reading the original:
meshes do not change a joint.

A package ``<pkg>`` is looked up, in order, in: the folders of
``VLA_RL_ROS_PACKAGE_PATH`` and ``ROS_PACKAGE_PATH`` (``<dir>/<pkg>``), the ament
index (an installed ``<pkg>`` description package), the URDF's folder and those
above it, and ``pybullet_data`` and its sub-folders (where the xArm's
``xarm_description`` and ``xarm_gripper`` ship).
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile

_URI = re.compile(r"package://([^/\"'<>\s]+)/")


def package_dirs(pkg: str, urdf_path: str) -> list[str]:
    """Where ``package://<pkg>/`` may point, in the order described in the module docstring."""
    import pybullet_data

    out: list[str] = []
    for var in ("VLA_RL_ROS_PACKAGE_PATH", "ROS_PACKAGE_PATH"):
        out += [os.path.join(d, pkg) for d in os.environ.get(var, "").split(os.pathsep) if d]
    try:
        from ament_index_python.packages import get_package_share_directory

        out.append(get_package_share_directory(pkg))
    except Exception:  # not installed, or no ament index here
        pass
    d = os.path.dirname(os.path.abspath(urdf_path))
    while True:
        out.append(os.path.join(d, pkg))
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    data = pybullet_data.getDataPath()
    out.append(os.path.join(data, pkg))
    out += [os.path.join(data, sub, pkg) for sub in sorted(os.listdir(data))
            if os.path.isdir(os.path.join(data, sub))]
    return out


def find_package(pkg: str, urdf_path: str) -> str | None:
    """The first existing folder for ``package://<pkg>/`` (``None``: not found)."""
    return next((d for d in package_dirs(pkg, urdf_path) if os.path.isdir(d)), None)


def _pybullet_finds(pkg: str, urdf_path: str) -> bool:
    """PyBullet's own search: ``<pkg>`` beside the URDF or in one of the five folders above it."""
    d = os.path.dirname(os.path.abspath(urdf_path))
    for _ in range(6):
        if os.path.isdir(os.path.join(d, pkg)):
            return True
        d = os.path.dirname(d)
    return False


def pybullet_urdf(urdf_path: str, cache_dir: str | None = None) -> str:
    """``urdf_path`` itself when PyBullet finds every ``package://`` URI it names (the Panda and the xArm of
    pybullet_data); else a cached copy whose URIs are absolute paths. Raises :class:`FileNotFoundError` naming
    a package that is nowhere to be found."""
    with open(urdf_path, encoding="utf-8") as f:
        text = f.read()
    pkgs = sorted(p for p in set(_URI.findall(text)) if not _pybullet_finds(p, urdf_path))
    if not pkgs:
        return urdf_path
    found = {p: find_package(p, urdf_path) for p in pkgs}
    missing = [p for p, d in found.items() if d is None]
    if missing:
        raise FileNotFoundError(
            f"URDF {urdf_path} names meshes in package(s) {missing}, which were not found (looked in "
            f"VLA_RL_ROS_PACKAGE_PATH, ROS_PACKAGE_PATH, the ament index, the URDF's folders, pybullet_data)")
    resolved = _URI.sub(lambda m: found[m.group(1)].replace(os.sep, "/") + "/" if m.group(1) in found else m.group(0),
                        text)
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:16]
    cache = cache_dir or os.path.join(tempfile.gettempdir(), f"vla_rl_ros-urdf-{os.getuid()}")
    os.makedirs(cache, exist_ok=True)
    out = os.path.join(cache, f"{os.path.splitext(os.path.basename(urdf_path))[0]}-{digest}.urdf")
    if not os.path.isfile(out):
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(resolved)
        os.replace(tmp, out)  # atomic: concurrent twins (gate workers, nodes) may write the same copy
    return out
