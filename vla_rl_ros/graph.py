"""The node graphs, declared once.

``launch/sim.launch.py`` and ``launch/robot.launch.py`` (for ``ros2 launch`` on
a robot) and ``vla-rl-ros sim`` / ``vla-rl-ros robot`` (for machines without
``ros2 launch``) start the same executables with the same parameter files, and
both ask :func:`node_parameters` which nodes to start and what each gets on
top of the params file (the task, the task's model, the run folder);
``test/test_graph.py`` checks that the launch files and the CLI agree, node by
node and parameter by parameter, for each task.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

PACKAGE = "vla_rl_ros"


@dataclass(frozen=True)
class Graph:
    params_file: str  # under config/
    nodes: tuple[str, ...]  # executables, one process each


GRAPHS = {
    "sim": Graph(params_file="sim.yaml",
                 nodes=("twin_node", "perception_node", "policy_node", "recorder_node", "learner_node",
                        "teacher_node")),
    "robot": Graph(params_file="robot.yaml", nodes=("perception_node", "policy_node", "recorder_node", "learner_node")),
}

#: the sim's twin camera in perception mode: large enough for a 4.5 cm marker (15-25 px across), drawn with the
#: layered renderer and the arm's collision shapes (about 1/7 of a TinyRenderer frame's CPU time; the same poses:
#: bench/bench_twin_camera.py, bench/bench_perception_held.py)
PERCEPTION_CAMERA = {"camera_enabled": True, "camera_width": 640, "camera_height": 480, "camera_renderer": "layered",
                     "camera_arm": "collision"}
#: where the twin publishes its ground-truth object pose in perception mode (perception_node owns
#: /task/object_pose then); kept for comparison
TWIN_TRUTH_TOPIC = "/twin/object_pose"


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


def large_frames_profile(env: dict) -> str | None:
    """The Fast DDS profile that sends camera frames through shared memory in one piece
    (``config/fastdds_large_frames.xml``; why: its comment), for the sim graph's processes (``vla-rl-ros sim``
    and ``sim.launch.py``); None where the environment already names a profile or another RMW, or the file is
    missing."""
    if env.get("FASTDDS_DEFAULT_PROFILES_FILE") or env.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        return None
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        return None
    path = config_path("fastdds_large_frames.xml")
    return path if os.path.isfile(path) else None


#: the shipped starting model of each task (relative: resolved like every data path)
DEFAULT_MODEL = {"reach": "models/reach_bc.onnx", "pick_place": "models/pick_place_bc.onnx"}


def default_run_dir(task: str) -> str:
    """``runs/<task>-sim`` under the current directory (absolute)."""
    return os.path.abspath(os.path.join("runs", f"{task}-sim"))


def sim_keys(run_dir: str) -> tuple[str, str]:
    """The sim's signing key pair, one per run: ``(<run>/keys/learner.key, <run>/keys/learner.pub)``.

    ``vla-rl-ros sim`` creates it (:func:`vla_rl_ros.signing.ensure_keypair`) with the run; the learner signs
    with the private key and ``policy_node`` trusts only the public one, as on a robot."""
    keys = os.path.join(run_dir, "keys")
    return os.path.join(keys, "learner.key"), os.path.join(keys, "learner.pub")


def node_parameters(graph: str, *, task: str | None = None, run_dir: str | None = None, model: str | None = None,
                    teacher: float | None = None, learner: bool = True,
                    gap: float | None = None, perception: bool = False) -> dict[str, dict[str, Any]]:
    """The nodes of ``graph`` to start, in order, each with the parameters it gets on top of the params file.

    The one place the launch files and the CLI compute them (plain Python, no ``launch`` needed).

    * ``task`` (sim): every node gets it; ``None`` = the params file's.
    * ``model``: the starting ONNX model, for ``policy_node`` (``model_path``) and ``learner_node``
      (``initial_model``); in the sim ``None`` = the task's shipped model (:data:`DEFAULT_MODEL`), on a robot
      the params file's.
    * ``run_dir``: for ``recorder_node`` and ``learner_node``; in the sim ``None`` = :func:`default_run_dir`.
    * ``teacher`` (sim): ``teacher_node``'s ``watch_fraction`` (``None`` = the params file's); the teacher
      runs only for ``pick_place`` and not with ``teacher == 0``.
    * ``learner``: ``False`` leaves ``learner_node`` out.
    * ``gap`` (sim): ``twin_node``'s ``gap_scale``, the reality gap's preset scale (``None`` = the params file's
      gap as written; 0 = the arm's twin is the gate's exactly).
    * ``perception``: start ``perception_node`` (left out otherwise). In the sim it takes the object's pose from
      the twin's camera (on, 640x480, fast: :data:`PERCEPTION_CAMERA`) through the scene's camera pose, and the twin's
      ground truth moves to :data:`TWIN_TRUTH_TOPIC`, so ``/task/object_pose`` has one publisher: perception.
      On a robot the params file gives the camera's topics and extrinsic.
    * signing (sim): ``learner_node`` signs with the run's key (:func:`sim_keys`), and ``policy_node`` trusts only
      that key and runs only models inside ``<run>/models``, newer than any it ran (``<run>/keys/
      policy_node_replay.json``); on a robot the params file names the keys.
    """
    from .runtime.paths import resolve_path

    g = GRAPHS[graph]
    if graph == "sim":
        if task is None:
            raise ValueError("the sim graph needs a task")
        model = model or DEFAULT_MODEL[task]
        run_dir = run_dir or default_run_dir(task)
    common = {"task": task} if task else {}
    model = resolve_path(model) if model else None
    run_dir = os.path.abspath(os.path.expanduser(run_dir)) if run_dir else None
    signing: dict[str, dict[str, Any]] = {"policy_node": {}, "learner_node": {}}
    if graph == "sim":
        key, pub = sim_keys(run_dir)
        signing = {"policy_node": {"trusted_keys": [pub], "allowed_models_dir": os.path.join(run_dir, "models"),
                                   "replay_state_file": os.path.join(run_dir, "keys", "policy_node_replay.json")},
                   "learner_node": {"signing_key": key}}
    per_node: dict[str, dict[str, Any]] = {
        "policy_node": {**({"model_path": model} if model else {}), **signing["policy_node"]},
        "recorder_node": {"run_dir": run_dir} if run_dir else {},
        "learner_node": {**({"run_dir": run_dir} if run_dir else {}), **({"initial_model": model} if model else {}),
                         **signing["learner_node"]},
        "teacher_node": {"watch_fraction": float(teacher)} if teacher is not None else {},
        "twin_node": {**({"gap_scale": float(gap)} if gap is not None else {}),
                      **({**PERCEPTION_CAMERA, "topics.object_pose": TWIN_TRUTH_TOPIC}
                         if perception and graph == "sim" else {})},
        "perception_node": {"extrinsic_from_scene": True} if graph == "sim" else {},
    }
    out: dict[str, dict[str, Any]] = {}
    for name in g.nodes:
        if name == "learner_node" and not learner:
            continue
        if name == "teacher_node" and (task != "pick_place" or teacher == 0.0):
            continue
        if name == "perception_node" and not perception:
            continue
        out[name] = {**common, **per_node.get(name, {})}
    return out


def read_params_file(path: str, node: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters ``node`` gets from a params file (its ``/**`` section, then its own, as rcl merges them
    in file order), then ``overrides``: for tools that need the arm's spec without starting the node."""
    import yaml

    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    out: dict[str, Any] = {}
    for key, section in doc.items():
        if key in ("/**", node, f"/{node}", f"/**/{node}"):
            out.update(_flatten((section or {}).get("ros__parameters") or {}))
    out.update(overrides or {})
    return out


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
