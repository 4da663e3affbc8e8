"""The continual learner drives IQL and CQL through the same transition-learner path as SAC: from a run's
recorded data to a gated candidate in the twin, checkpointed and resumed as the same algorithm."""
from __future__ import annotations

import pytest
import torch

from vla_rl_ros.algos.cql import CQL
from vla_rl_ros.algos.export import export_onnx, read_model_metadata
from vla_rl_ros.algos.iql import IQL
from vla_rl_ros.buffer import create_run
from vla_rl_ros.commands.demos import collect_and_import
from vla_rl_ros.learner.continual import ContinualLearner, LearnerConfig
from vla_rl_ros.spec import Spec

from test_learner import Still  # the never-moving incumbent

SPEC = Spec(task="reach")


@pytest.fixture()
def run(tmp_path):
    r = create_run(tmp_path, "run", SPEC, robot_id="test")
    collect_and_import(r, "reach", 12, seed=0)
    still = tmp_path / "still.onnx"
    export_onnx(Still(), SPEC, still, {"algorithm": "still"})
    return r, str(still)


def _learner(r, still, algo, **overrides):
    cfg = LearnerConfig(algo=algo, gate_episodes=10, gate_block=10, checkpoint_every_s=1e9, min_transitions=100,
                        candidate_every_updates=1000, batch_size=64, bc_init_steps=0, hindsight_k=0,
                        **{f"{algo}_overrides": dict(hidden=(64, 64), **overrides)})
    return ContinualLearner(str(r.path), cfg, initial_model=still, log=lambda m: None, tb=False)


def test_iql_learns_offline_from_the_run_then_its_candidate_is_gated_and_resumed(run):
    r, still = run
    L = _learner(r, still, "iql", lr=1e-3)
    try:
        gated = []  # (a promotion's step also reports gate vs live: learner/gate_vs_live.py)
        while not gated:
            gated = [e for e in L.step() if e.kind in ("candidate", "promoted")]
        assert isinstance(L.algo, IQL) and L.updates == 1000
        [ev] = gated
        assert ev.promoted, ev.reason  # IQL on 12 expert reach episodes beats standing still
        _, lineage, version = read_model_metadata(ev.path)
        assert lineage["algorithm"] == "iql" and lineage["training_steps"] == 1000 and version.startswith("iql-")
        L.checkpoint()
        sd_actor = {k: v.clone() for k, v in L.algo.actor.state_dict().items()}
    finally:
        L.close()
    L2 = _learner(r, still, "iql", lr=1e-3)
    try:
        assert isinstance(L2.algo, IQL) and L2.updates == 1000 and L2.gates == 1
        assert all(torch.equal(sd_actor[k], v) for k, v in L2.algo.actor.state_dict().items())
    finally:
        L2.close()


def test_cql_is_built_from_its_overrides_and_trains_on_the_buffer(run):
    r, still = run
    L = _learner(r, still, "cql", cql_n_actions=2, cql_lagrange=True)
    try:
        L.replay.refresh()
        L._build_algo()
        assert isinstance(L.algo, CQL) and L.algo.cfg.cql_lagrange and L.algo.cfg.batch_size == 64
        assert L.algo.cfg.init_alpha == 0.05  # the learner's SAC temperature after BC init applies to CQL too
        L._transition_step()
        assert L.updates == 10 and L.algo.num_critic_updates == 10 * L.algo.cfg.utd == 20  # utd 2
    finally:
        L.close()


def test_unknown_algorithm_settings_are_refused(run):
    r, still = run
    L = _learner(r, still, "iql", expectle=0.9)
    try:
        with pytest.raises(ValueError, match="no settings"):
            L._build_algo()
    finally:
        L.close()


@pytest.mark.parametrize("algo,params,want", [
    ("iql", {"iql_expectile": 0.9, "iql_beta": 10.0, "iql_max_weight": 50.0, "gamma": 0.98},
     {"expectile": 0.9, "beta": 10.0, "max_weight": 50.0, "gamma": 0.98}),
    ("cql", {"cql_alpha": 1.0, "cql_n_actions": 4, "cql_lagrange": True, "cql_target_gap": 2.0, "gamma": 0.97},
     {"cql_alpha": 1.0, "cql_n_actions": 4, "cql_lagrange": True, "cql_target_gap": 2.0, "gamma": 0.97}),
])
def test_learner_node_parameters_reach_the_iql_and_cql_learners(ros_env, run, tmp_path, algo, params, want):
    """``learner_node``'s iql_*/cql_* parameters (from a params file, as on a robot) reach the algorithm the
    continual learner builds, and the discount reaches it too."""
    import rclpy
    import yaml

    from vla_rl_ros.nodes.learner_node import LearnerNode

    r, still = run
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"learner_node": {"ros__parameters": {
        "run_dir": str(r.path), "initial_model": still, "task": "reach", "algo": algo, "monitor_episodes": 0,
        "min_transitions": 100000, **params}}}))
    rclpy.init(args=["node", "--ros-args", "--params-file", str(f)])
    try:
        node = LearnerNode()
        try:
            node.learner._build_algo()
            cfg = node.learner.algo.cfg
            assert type(node.learner.algo) is {"iql": IQL, "cql": CQL}[algo]
            assert {k: getattr(cfg, k) for k in want} == want
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown()
