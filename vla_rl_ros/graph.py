"""The node graphs, declared once.

``launch/sim.launch.py`` and ``launch/robot.launch.py`` (for ``ros2 launch`` on
a robot) and ``vla-rl-ros sim`` (for machines without ``ros2 launch``) start
the same executables with the same parameter files; ``test/test_graph.py``
checks that the launch files and this table agree.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

PACKAGE = "vla_rl_ros"


@dataclass(frozen=True)
class Graph:
    params_file: str  # under config/
    nodes: tuple[str, ...]  # executables, one process each


GRAPHS = {
    "sim": Graph(params_file="sim.yaml",
                 nodes=("twin_node", "policy_node", "recorder_node", "learner_node", "teacher_node")),
    "robot": Graph(params_file="robot.yaml", nodes=("policy_node", "recorder_node", "learner_node")),
}


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def share_dir() -> str | None:
    """The installed package's share dir (colcon install), or None when running from a source checkout."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return get_package_share_directory(PACKAGE)
    except (PackageNotFoundError, ValueError, LookupError, OSError):
        # OSError: ament_index raises it when AMENT_PREFIX_PATH is unset (a source checkout, no colcon)
        return None


def config_path(name: str) -> str:
    from .runtime.paths import resolve_path

    return resolve_path(os.path.join("config", name))
