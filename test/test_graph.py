"""Launch files (for ros2 launch on a robot) and the CLI (vla-rl-ros sim) start the same graph."""
import ast
import importlib
import os
import re

import pytest

from vla_rl_ros.graph import GRAPHS, repo_root

ROOT = repo_root()


def _launch_nodes(path):
    """(executables, params files) named in a launch file, read from its AST (no launch package needed)."""
    tree = ast.parse(open(path).read())
    exes, params = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Node":
            kw = {k.arg: k.value for k in node.keywords}
            assert isinstance(kw["package"], ast.Constant) and kw["package"].value == "vla_rl_ros"
            exes.append(kw["executable"].value)
            assert kw["name"].value == kw["executable"].value
            assert "parameters" in kw, f"{path}: {kw['executable'].value} gets no parameters"
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "join":
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if "config" in args:
                params.update(a for a in args if a.endswith(".yaml"))
    return exes, params


@pytest.mark.parametrize("graph,launch", [("sim", "sim.launch.py"), ("robot", "robot.launch.py")])
def test_launch_file_and_cli_name_the_same_graph(graph, launch):
    exes, params = _launch_nodes(os.path.join(ROOT, "launch", launch))
    g = GRAPHS[graph]
    assert exes == list(g.nodes)
    assert params == {g.params_file}
    assert os.path.isfile(os.path.join(ROOT, "config", g.params_file))


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
    assert "GRAPHS[args.graph]" in src and "graph.nodes" in src and "graph.params_file" in src
