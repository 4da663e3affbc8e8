"""Launch files (for ros2 launch on a robot) and the CLI (vla-rl-ros sim / robot) start the same graph: the same
nodes, each with the same params file and the same parameters on top, for each task."""
import ast
import importlib
import importlib.util
import os
import re
import sys

import pytest

from vla_rl_ros.graph import GRAPHS, repo_root

ROOT = repo_root()


def _launch_params_files(path):
    """The params files a launch file names (``os.path.join(..., "config", "X.yaml")``), read from its AST."""
    params = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "join":
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if "config" in args:
                params.update(a for a in args if a.endswith(".yaml"))
    return params


# ------------------------------------------------------------------ the launch files, evaluated without `launch`
# `launch` and `launch_ros` are not installed here: these stand-ins record what the launch file asks for (the
# arguments it declares and the Nodes it builds) so the file itself runs, as `ros2 launch` would run it.
class _Entities:
    def __init__(self, entities):
        self.entities = list(entities)


class _Argument:
    def __init__(self, name, default_value="", description=""):
        self.name, self.default_value = name, default_value


class _Opaque:
    def __init__(self, function):
        self.function = function


class _Config:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


class _Node:
    def __init__(self, **kw):
        self.kw = kw


class _SetEnv:
    def __init__(self, name, value):
        self.name, self.value = name, value


def _evaluate_launch(monkeypatch, launch_file, respawn_out: dict | None = None, env_out: dict | None = None,
                     **launch_args):
    """{node: ([params files], overrides, remappings)} as the launch file starts them with ``launch_args``;
    ``respawn_out``: filled with each node's ``respawn*`` arguments; ``env_out``: with the environment variables
    it sets."""
    import types

    import ament_index_python.packages as aip

    mods = {"launch": dict(LaunchDescription=_Entities),
            "launch.actions": dict(DeclareLaunchArgument=_Argument, OpaqueFunction=_Opaque,
                                   SetEnvironmentVariable=_SetEnv),
            "launch.substitutions": dict(LaunchConfiguration=_Config),
            "launch.conditions": dict(IfCondition=lambda c: c),
            "launch_ros": {}, "launch_ros.actions": dict(Node=_Node)}
    for name, attrs in mods.items():
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
    monkeypatch.setattr(aip, "get_package_share_directory", lambda pkg: ROOT)  # the installed share dir's layout
    spec = importlib.util.spec_from_file_location("launch_under_test", os.path.join(ROOT, "launch", launch_file))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    desc = mod.generate_launch_description()
    context = {e.name: e.default_value for e in desc.entities if isinstance(e, _Argument)}
    unknown = set(launch_args) - set(context)
    assert not unknown, f"{launch_file} declares no {unknown}"
    context.update(launch_args)
    nodes = [n for e in desc.entities if isinstance(e, _Node) for n in [e]]
    for e in desc.entities:
        if isinstance(e, _Opaque):
            nodes += e.function(context)
    if env_out is not None:
        env_out.update({e.name: e.value for e in nodes if isinstance(e, _SetEnv)})
    nodes = [n for n in nodes if isinstance(n, _Node)]
    def value(v):  # substitutions are performed when the node starts, as launch_ros does
        return v.perform(context) if isinstance(v, _Config) else v

    out = {}
    for n in nodes:
        kw = n.kw
        assert kw["package"] == "vla_rl_ros" and kw["name"] == kw["executable"]
        files = [value(p) for p in kw["parameters"] if not isinstance(p, dict)]
        merged = {}
        for r in kw["parameters"]:
            if isinstance(r, dict):
                merged.update({k: value(v) for k, v in r.items()})
        remaps = [(value(a), value(b)) for a, b in kw.get("remappings") or []]
        out[kw["executable"]] = (files, merged, remaps)
        if respawn_out is not None:
            respawn_out[kw["executable"]] = {k: v for k, v in kw.items() if k.startswith("respawn")}
    return out


def _cli_nodes(argv):
    """{node: ([params files], overrides)} from the command lines ``vla-rl-ros ARGV`` would run."""
    import yaml

    from vla_rl_ros.cli import build_parser
    from vla_rl_ros.commands.sim import plan

    out = {}
    for name, cmd in plan(build_parser().parse_args(argv)).commands.items():
        assert cmd[1:3] == ["-m", f"vla_rl_ros.nodes.{name}"]
        params = {}
        for flag, value in zip(cmd, cmd[1:]):
            if flag == "-p":
                k, v = value.split(":=", 1)
                params[k] = yaml.safe_load(v)  # as rcl reads a -p value
        out[name] = ([v for f, v in zip(cmd, cmd[1:]) if f == "--params-file"], params)
    return out


SIM_CASES = [  # (launch arguments, the same on the CLI)
    ({}, []),
    ({"task": "pick_place"}, ["--task", "pick_place"]),
    ({"task": "reach"}, ["--task", "reach"]),
    ({"task": "pick_place", "teacher": "0.0"}, ["--task", "pick_place", "--teacher", "0"]),
    ({"task": "pick_place", "teacher": "0.25", "learner": "false"},
     ["--task", "pick_place", "--teacher", "0.25", "--no-learner"]),
    ({"task": "reach", "model": "models/pick_place_bc.onnx", "run_dir": "runs/x"},
     ["--task", "reach", "--model", "models/pick_place_bc.onnx", "--run", "runs/x"]),
    ({"task": "reach", "arm": "config/xarm6.yaml", "model": "models/xarm6_reach_bc.onnx"},
     ["--task", "reach", "--arm", "config/xarm6.yaml", "--model", "models/xarm6_reach_bc.onnx"]),
    ({"task": "pick_place", "gap": "0"}, ["--task", "pick_place", "--gap", "0"]),
    ({"task": "reach", "gap": "2"}, ["--task", "reach", "--gap", "2"]),
    ({"task": "pick_place", "perception": "true"}, ["--task", "pick_place", "--perception"]),
    ({"task": "reach", "perception": "true", "gap": "0"}, ["--task", "reach", "--perception", "--gap", "0"]),
]


@pytest.mark.parametrize("launch_args,cli_args", SIM_CASES)
def test_sim_launch_file_and_cli_give_each_node_the_same_parameters(monkeypatch, launch_args, cli_args):
    launched = _evaluate_launch(monkeypatch, "sim.launch.py", **launch_args)
    cli = _cli_nodes(["sim", *cli_args])
    assert list(launched) == list(cli)  # the same nodes, in the same order
    for name, (files, overrides, _) in launched.items():
        assert [os.path.realpath(f) for f in files] == [os.path.realpath(f) for f in cli[name][0]], name
        assert os.path.realpath(files[0]) == os.path.join(ROOT, "config", "sim.yaml")
        assert len(files) == 1 + ("arm" in launch_args)  # an arm's file after the graph's
        assert overrides == cli[name][1], name


@pytest.mark.parametrize("task", ["reach", "pick_place"])
def test_perception_owns_the_object_pose_in_the_sim(monkeypatch, task):
    """--perception: the twin's camera on at 640x480, its ground truth moved aside, so that perception_node is
    the only publisher of /task/object_pose (the topic policy_node and teacher_node read)."""
    import yaml

    from vla_rl_ros.graph import TWIN_TRUTH_TOPIC

    nodes = _evaluate_launch(monkeypatch, "sim.launch.py", task=task, perception="true")
    twin, perception = nodes["twin_node"][1], nodes["perception_node"][1]
    assert twin["camera_enabled"] is True and (twin["camera_width"], twin["camera_height"]) == (640, 480)
    assert (twin["camera_renderer"], twin["camera_arm"]) == ("layered", "collision")  # ~1/7 of TinyRenderer's time
    assert twin["topics.object_pose"] == TWIN_TRUTH_TOPIC != "/task/object_pose"
    assert perception["extrinsic_from_scene"] is True
    cfg = yaml.safe_load(open(os.path.join(ROOT, "config", "sim.yaml")))["perception_node"]["ros__parameters"]
    assert cfg["topics"]["object_pose"] == "/task/object_pose"
    scene = yaml.safe_load(open(os.path.join(ROOT, "sim", "panda_table.yaml")))
    marker = scene["object"]["marker"]  # the perception node looks for the marker the twin draws
    assert (cfg["marker_dictionary"], cfg["marker_id"], cfg["marker_size"]) == (marker["dictionary"], marker["id"],
                                                                               marker["size"])
    assert cfg["side_marker_ids"] == marker["sides"]
    assert cfg["center_offset"] == scene["object"]["half_height"]
    plain = _evaluate_launch(monkeypatch, "sim.launch.py", task=task)
    assert "topics.object_pose" not in plain["twin_node"][1] and "camera_enabled" not in plain["twin_node"][1]


def test_sim_graph_sends_camera_frames_through_shared_memory_unless_told_otherwise(monkeypatch):
    """The launch file and the CLI give the sim graph the same Fast DDS profile (a 16 MB shared-memory segment:
    a 640x480 frame in one piece), and neither overrides a profile or an RMW the user chose."""
    import xml.etree.ElementTree as ET

    from vla_rl_ros.graph import large_frames_profile

    for var in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION"):
        monkeypatch.delenv(var, raising=False)
    env: dict = {}
    _evaluate_launch(monkeypatch, "sim.launch.py", env_out=env, task="pick_place", perception="true")
    profile = large_frames_profile({})
    assert env == {"FASTDDS_DEFAULT_PROFILES_FILE": profile}
    assert os.path.realpath(profile) == os.path.join(ROOT, "config", "fastdds_large_frames.xml")
    ns = {"f": "http://www.eprosima.com"}
    root = ET.parse(profile).getroot()
    shm = [t for t in root.iterfind(".//f:transport_descriptor", ns) if t.findtext("f:type", namespaces=ns) == "SHM"]
    assert len(shm) == 1 and int(shm[0].findtext("f:segment_size", namespaces=ns)) >= 4 * 640 * 480 * 3
    assert {t.text for t in root.iterfind(".//f:userTransports/f:transport_id", ns)} == {
        t.findtext("f:transport_id", namespaces=ns) for t in root.iterfind(".//f:transport_descriptor", ns)}
    assert large_frames_profile({"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}) is None
    assert large_frames_profile({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) is None
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/mine.xml")
    env.clear()
    _evaluate_launch(monkeypatch, "sim.launch.py", env_out=env, task="pick_place")
    assert env == {}


@pytest.mark.parametrize("task", ["reach", "pick_place"])
def test_each_task_gets_its_model_and_task_everywhere(monkeypatch, task):
    """The issue's regression: task:=pick_place started the policy with the reach model, which it refuses."""
    from vla_rl_ros.algos.export import read_model_metadata

    launched = _evaluate_launch(monkeypatch, "sim.launch.py", task=task)
    for name, (_, overrides, _) in launched.items():
        assert overrides["task"] == task, name
    for node, key in (("policy_node", "model_path"), ("learner_node", "initial_model")):
        model = launched[node][1][key]
        assert os.path.isfile(model) and read_model_metadata(model)[0].task == task
    assert ("teacher_node" in launched) == (task == "pick_place")


@pytest.mark.parametrize("launch_args,cli_args", [
    ({"run_dir": "/data/r1"}, ["robot", "--run", "/data/r1"]),
    ({"run_dir": "/data/r1", "model": "/m/a.onnx", "learner": "false"},
     ["robot", "--run", "/data/r1", "--model", "/m/a.onnx", "--no-learner"]),
    ({"run_dir": "/data/r1", "arm": "config/xarm6.yaml"}, ["robot", "--run", "/data/r1", "--arm", "config/xarm6.yaml"]),
    ({"run_dir": "/data/r1", "perception": "true"}, ["robot", "--run", "/data/r1", "--perception"]),
])
def test_robot_launch_file_and_cli_give_each_node_the_same_parameters(monkeypatch, launch_args, cli_args):
    launched = _evaluate_launch(monkeypatch, "robot.launch.py", **launch_args)
    cli = _cli_nodes(cli_args)
    assert list(launched) == list(cli)
    for name, (files, overrides, remaps) in launched.items():
        assert [os.path.basename(f) for f in files] == [os.path.basename(f) for f in cli[name][0]]
        assert os.path.basename(files[0]) == "robot.yaml"
        assert overrides == cli[name][1], name
        assert bool(remaps) == (name == "policy_node")
    remaps = dict(launched["policy_node"][2])
    assert remaps["/joint_states"] == "/joint_states" and remaps["/arm_controller/commands"] == "/arm_controller/commands"


@pytest.mark.parametrize("graph,launch", [("sim", "sim.launch.py"), ("robot", "robot.launch.py")])
def test_launch_file_and_cli_name_the_same_graph(monkeypatch, graph, launch):
    g = GRAPHS[graph]
    assert _launch_params_files(os.path.join(ROOT, "launch", launch)) == {g.params_file}
    assert os.path.isfile(os.path.join(ROOT, "config", g.params_file))
    args = {"task": "pick_place"} if graph == "sim" else {}
    assert list(_evaluate_launch(monkeypatch, launch, perception="true", **args)) == list(g.nodes)  # all on: all
    assert "perception_node" not in _evaluate_launch(monkeypatch, launch, **args)  # off unless asked


@pytest.mark.parametrize("graph,launch", [("sim", "sim.launch.py"), ("robot", "robot.launch.py")])
def test_launch_files_and_cli_restart_every_node_with_the_same_defaults(monkeypatch, graph, launch):
    from vla_rl_ros.cli import build_parser
    from vla_rl_ros.commands.sim import restart_policy
    from vla_rl_ros.supervision import RestartPolicy

    d = RestartPolicy()
    args = {"task": "pick_place", "perception": "true"} if graph == "sim" else {"perception": "true"}
    respawn: dict = {}
    _evaluate_launch(monkeypatch, launch, respawn_out=respawn, **args)
    assert list(respawn) == list(GRAPHS[graph].nodes)
    for name, kw in respawn.items():  # (respawn_max_retries only where `launch` has it: not here)
        assert kw["respawn"] is True and kw["respawn_delay"] == d.backoff_s, name
    respawn.clear()
    _evaluate_launch(monkeypatch, launch, respawn_out=respawn, respawn="false", **args)
    assert all(kw == {"respawn": False} for kw in respawn.values())
    respawn.clear()
    _evaluate_launch(monkeypatch, launch, respawn_out=respawn, respawn_delay="2.5", **args)
    assert {kw["respawn_delay"] for kw in respawn.values()} == {2.5}

    argv = [graph] + (["--run", "x"] if graph == "robot" else [])
    assert restart_policy(build_parser().parse_args(argv)) == d  # the CLI's defaults are the same
    p = restart_policy(build_parser().parse_args(argv + ["--max-restarts", "2", "--restart-backoff", "0.5",
                                                         "--restart-backoff-max", "4"]))
    assert (p.max_restarts, p.backoff_s, p.backoff_max_s) == (2, 0.5, 4.0)


def test_params_files_read_like_rcl():
    """Every node gets the ``/**`` section (the arm, last in the file) on top of its own section."""
    from vla_rl_ros.graph import read_params_file
    from vla_rl_ros.spec import Spec, spec_from_params

    path = os.path.join(ROOT, "config", "sim.yaml")
    assert spec_from_params(read_params_file(path, "recorder_node")) == Spec(task="reach")
    assert read_params_file(path, "teacher_node")["task"] == "reach"
    assert read_params_file(path, "policy_node")["safety.max_joint_step"] == 0.25
    assert spec_from_params(read_params_file(path, "policy_node", {"task": "pick_place"})) == Spec(task="pick_place")


def test_every_executable_is_installed_and_has_main():
    setup = open(os.path.join(ROOT, "setup.py")).read()
    for name in {n for g in GRAPHS.values() for n in g.nodes}:
        assert re.search(rf'"{name} = vla_rl_ros\.nodes\.{name}:main"', setup), name
        assert callable(importlib.import_module(f"vla_rl_ros.nodes.{name}").main)


def test_params_files_have_a_section_per_node():
    import yaml

    for g in GRAPHS.values():
        data = yaml.safe_load(open(os.path.join(ROOT, "config", g.params_file)))
        for n in g.nodes:
            assert "ros__parameters" in data.get(n, {}), f"{g.params_file} has no {n}.ros__parameters"


def test_cli_starts_the_graph_tables_nodes():
    from vla_rl_ros.cli import build_parser

    parser = build_parser()
    for graph in GRAPHS:
        argv = [graph] + (["--run", "x"] if graph == "robot" else [])
        assert parser.parse_args(argv).graph == graph  # `vla-rl-ros sim` / `robot` run GRAPHS[graph]
    src = open(os.path.join(ROOT, "vla_rl_ros", "commands", "sim.py")).read()
    assert "GRAPHS[args.graph]" in src and "node_parameters(" in src and "graph.params_file" in src
    for launch in ("sim.launch.py", "robot.launch.py"):  # both sides ask the same function
        assert "node_parameters(" in open(os.path.join(ROOT, "launch", launch)).read()


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_params_files_keep_the_arm_section_last_and_unrepeated(graph):
    """rcl takes a parameter from the last section naming the node, and ``-p`` / a launch file's dict join
    ``/**``: the arm's section must come last, with no node section repeating its keys, or a node's own
    section would silently beat the command line (``run_dir`` from the file instead of the CLI's)."""
    import yaml

    doc = yaml.safe_load(open(os.path.join(ROOT, "config", GRAPHS[graph].params_file)))
    assert list(doc)[-1] == "/**"
    arm = set(doc["/**"]["ros__parameters"])
    for node, section in doc.items():
        if node != "/**":
            assert not arm & set(section["ros__parameters"]), (node, arm & set(section["ros__parameters"]))


@pytest.mark.parametrize("argv", [
    ["sim", "--task", "pick_place", "--run", "runs/x", "--teacher", "0.25",
     "--set", "learner_node.seed:=3", "--set", "twin_node.seed:=120000"],
    ["sim", "--task", "reach", "--no-learner"],
    ["sim", "--task", "reach", "--gap", "0"],
    ["robot", "--run", "runs/r", "--model", "models/reach_bc.onnx"],
])
def test_each_node_gets_the_cli_parameters_through_rcl(ros_env, argv):
    """What a node really reads (rclpy parsing the node's own command line) is what the CLI meant to give it:
    the per-node parameters of :func:`node_parameters` and the user's ``--set``, over the params file."""
    import rclpy
    import yaml

    from vla_rl_ros.cli import build_parser
    from vla_rl_ros.commands.sim import plan

    pl = plan(build_parser().parse_args(argv))
    for name, cmd in pl.commands.items():
        wanted = {}
        for flag, value in zip(cmd, cmd[1:]):
            if flag == "-p":
                k, v = value.split(":=", 1)
                wanted[k] = yaml.safe_load(v)
        assert wanted, name
        ctx = rclpy.Context()
        rclpy.init(args=["node", *cmd[cmd.index("--ros-args"):]], context=ctx)
        try:
            node = rclpy.create_node(name, context=ctx, automatically_declare_parameters_from_overrides=True)
            got = {k: node.get_parameter(k).value for k in wanted}
            node.destroy_node()
        finally:
            rclpy.shutdown(context=ctx)
        assert got == wanted, name
