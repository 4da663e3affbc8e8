"""A second arm end to end: the xArm6 of config/xarm6.yaml (6 joints, other joint and link names, its own URDF,
home and gripper) through the twin, the scripted expert, the CLI's tools (ship -> eval, demos, train) and the
sim graph with the learner, every one of them told about the arm by the same params file."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pybullet as pb
import pytest

from vla_rl_ros.arm import Arm, read_arm
from vla_rl_ros.cli import main
from vla_rl_ros.graph import repo_root
from vla_rl_ros.kinematics import default_panda_urdf
from vla_rl_ros.spec import PANDA_ARM_JOINTS, Spec

from ros_helpers import stop_sim
from vla_rl_ros.twin.expert import ScriptedExpert, collect_demos
from vla_rl_ros.twin.urdf import pybullet_urdf

XARM = os.path.join(repo_root(), "config", "xarm6.yaml")
SIM = os.path.join(repo_root(), "config", "sim.yaml")
SHIPPED = os.path.join(repo_root(), "models", "xarm6_reach_bc.onnx")


@pytest.fixture(scope="module")
def arm() -> Arm:
    return read_arm(XARM, "reach")


@pytest.fixture(scope="module")
def env(arm):
    e = arm.twin().env("reach")
    yield e
    e.close()


# ------------------------------------------------------------------------------------------------ the params file
def test_the_params_file_declares_the_whole_arm(arm):
    s = arm.spec
    assert s.arm_joints == tuple(f"joint{i}" for i in range(1, 7)) and s.n_arm == 6
    assert (s.base_link, s.ee_link, s.gripper_joints) == ("link_base", "link_tcp", ("drive_joint",))
    assert (s.gripper_open, s.gripper_joint_range) == (0.085, (0.0, 0.85))
    assert s.obs_dim == 25 and s.action_dim == 4  # the Panda's: 26, 4
    assert os.path.isfile(arm.urdf_path) and arm.urdf_path.endswith("sim/xarm6_with_gripper_tcp.urdf")
    assert arm.home == (0.0, -0.26, -1.27, 0.0, 1.53, 0.0)
    # after the sim graph's file (as `sim --arm` passes it), its /** section is the arm, whole
    assert read_arm([SIM, XARM], "reach") == arm
    panda = read_arm(SIM, "reach")
    assert panda.spec == Spec(task="reach") and panda.urdf_path is None and panda.home is None


def test_a_home_must_fit_the_arm():
    with pytest.raises(ValueError, match="6 finite joint positions"):
        Arm(read_arm(XARM).spec, home=(0.0,) * 7)


# ------------------------------------------------------------------------------------------------------ the twin
def test_the_twin_is_built_from_the_arms_urdf_at_its_home(arm, env):
    tw = env.twin
    assert [pb.getJointInfo(tw.robot, i, physicsClientId=tw.cid)[1].decode() for i in tw.arm_idx] == list(arm.spec.arm_joints)
    env.reset(seed=0)
    st = tw.state()
    np.testing.assert_allclose(st.q, arm.home, atol=0.02)
    # PyBullet's TCP link and the URDF kinematics (FK) agree: the observation's hand is where the twin's hand is
    np.testing.assert_allclose(st.ee_pos, env.kin.fk_pos(st.q), atol=1e-4)
    assert 0.3 < st.ee_pos[2] < 0.4 and 0.35 < st.ee_pos[0] < 0.45  # above the table, in front of the arm
    # the meshes come from pybullet_data's xarm_description: the links collide (the arm cannot pass the table)
    shapes = pb.getCollisionShapeData(tw.robot, tw.arm_idx[-1], physicsClientId=tw.cid)
    assert shapes and "pybullet_data/xarm/xarm_description/meshes/" in shapes[0][4].decode()


def test_the_grippers_width_model_and_linkage(env):
    """A width command (m) becomes the drive joint's angle through the spec's gripper model, the five linkage
    joints follow it, and the observed width is the distance between the finger pads."""
    tw = env.twin
    env.reset(seed=1)
    links = {pb.getJointInfo(tw.robot, i, physicsClientId=tw.cid)[12].decode(): i
             for i in range(pb.getNumJoints(tw.robot, physicsClientId=tw.cid))}
    mimics = [j for j, _, _, _ in tw.gripper_mimics]
    assert len(mimics) == 5  # the xArm gripper: 1 drive joint + 5 <mimic> joints
    assert tw.state().gripper_width == pytest.approx(0.085, abs=0.003)  # reset: open
    for width in (0.02, 0.085, 0.05):
        tw.apply_command(tw.home, width)
        tw.step(240)
        angle = 0.85 * (1 - width / 0.085)
        q = [s[0] for s in pb.getJointStates(tw.robot, tw.finger_idx + mimics, physicsClientId=tw.cid)]
        np.testing.assert_allclose(q, angle, atol=0.03)
        assert tw.state().gripper_width == pytest.approx(width, abs=0.003)
        pb.performCollisionDetection(physicsClientId=tw.cid)
        pads = pb.getClosestPoints(tw.robot, tw.robot, 0.3, links["left_finger"], links["right_finger"],
                                   physicsClientId=tw.cid)
        assert min(c[8] for c in pads) == pytest.approx(width, abs=0.005)


def test_gripper_models():
    from vla_rl_ros.runtime.inputs import JointStateMatcher
    from vla_rl_ros.spec import SpecError

    panda, xarm = Spec(), read_arm(XARM).spec
    assert panda.gripper_width_of(0.06) == 0.06 and panda.gripper_joint_sum(0.06) == 0.06  # fingers: sum = width
    assert xarm.gripper_width_of(0.0) == 0.085 and xarm.gripper_width_of(0.85) == 0.0
    assert xarm.gripper_joint_sum(xarm.gripper_width_of(0.3)) == pytest.approx(0.3)
    m = JointStateMatcher(xarm.arm_joints, xarm.gripper_joints, xarm.gripper_width_of)
    assert m.update([*xarm.arm_joints, "drive_joint", "left_finger_joint"], [0.0] * 6 + [0.425, 0.425]) is None
    assert m.gripper_width == pytest.approx(0.0425)  # the mimic joint in the message is not summed
    with pytest.raises(SpecError, match="gripper_joint_range"):
        Spec(gripper_joint_range=(0.5, 0.5))
    # a model exported before the field existed carries no gripper_joint_range: it is the default
    assert Spec.from_dict({k: v for k, v in panda.to_dict().items() if k != "gripper_joint_range"}) == panda


def test_urdf_mesh_packages_are_resolved_for_pybullet(tmp_path, arm):
    copy = pybullet_urdf(arm.urdf_path, cache_dir=str(tmp_path))
    assert copy != arm.urdf_path and "package://" not in open(copy).read()
    assert pybullet_urdf(default_panda_urdf()) == default_panda_urdf()  # PyBullet finds the Panda's itself
    bad = tmp_path / "bad.urdf"
    bad.write_text('<robot name="r"><link name="a"><visual><geometry>'
                   '<mesh filename="package://no_such_description/m.stl"/></geometry></visual></link></robot>')
    with pytest.raises(FileNotFoundError, match="no_such_description"):
        pybullet_urdf(str(bad), cache_dir=str(tmp_path))


def test_the_scripted_expert_reaches_with_the_second_arm(env):
    eps = collect_demos(env, ScriptedExpert(env.spec_), 10, seed=0)
    assert all(e["success"] for e in eps), [e["seed"] for e in eps if not e["success"]]
    assert all(e["obs"].shape[1] == 25 for e in eps)


def test_the_scripted_expert_picks_and_places_with_the_second_arm(arm):
    """The Panda's pick-and-place expert, unchanged, on the xArm: it reads widths in metres, which the xArm's
    gripper model gives (seeds 0..2 here; over seeds 0..49 it succeeds in 88%, bench/bench_second_arm.py)."""
    env = arm.with_task("pick_place").twin().env("pick_place")
    try:
        eps = collect_demos(env, ScriptedExpert(env.spec_), 3, seed=0)
    finally:
        env.close()
    s = env.spec_
    for e in eps:
        assert e["success"], e["seed"]
        assert e["obs"][:, s.obs_slice("object_pos")][:, 2].max() > 0.08  # the cube was lifted


# ------------------------------------------------------------------------------------------------- the CLI's tools
def test_ship_then_eval_on_the_second_arm(tmp_path, capsys, arm):
    from vla_rl_ros.algos.export import read_model_metadata
    from vla_rl_ros.runtime.onnx_policy import load_validated

    out = str(tmp_path / "xarm_reach.onnx")
    assert main(["ship", "--task", "reach", "--params", XARM, "--out", out, "--demos", "30", "--bc-steps", "800",
                 "--seed", "0", "--eval-episodes", "10"]) == 0
    assert load_validated(out, None, arm.spec).spec == arm.spec  # the model carries the arm's spec
    shipped = read_model_metadata(out)[1]["twin_success_at_gate"]
    assert "xarm6_with_gripper_tcp.urdf (6 joints" in open(out[:-5] + ".md").read()
    capsys.readouterr()
    assert main(["eval", "--model", out, "--params", XARM, "--episodes", "10", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the same seeded episodes in the same twin (the arm's) as ship's own evaluation: the same result
    assert res["success_rate"] == shipped["rate"] and res["seed"] == shipped["seed"] == 10_000
    assert res["success_rate"] >= 0.8
    # without the arm, eval refuses the model instead of running it on the Panda
    assert main(["eval", "--model", out, "--episodes", "1"]) == 2
    assert "--params" in capsys.readouterr().err


def test_demos_and_train_take_the_arm(tmp_path, arm):
    from vla_rl_ros.algos.export import read_model_metadata
    from vla_rl_ros.buffer import Replay, list_stores, open_run

    run = tmp_path / "xarm-demos"
    assert main(["demos", "--task", "reach", "--params", XARM, "--run", str(run), "--episodes", "4"]) == 0
    assert open_run(run).spec == arm.spec  # run.json: the arm's spec
    replay = Replay(list_stores([str(run)]))
    try:
        replay.refresh()
        eps = replay.episodes()
    finally:
        replay.close()
    assert len(eps) == 4 and all(e.is_demo and e.success and e.obs.shape[1] == 25 for e in eps)
    out = str(tmp_path / "bc.onnx")
    assert main(["train", "--algo", "bc", "--data", str(run), "--steps", "100", "--out", out,
                 "--params", XARM, "--eval-episodes", "2"]) == 0
    meta = read_model_metadata(out)[1]
    assert meta["twin_success_at_gate"]["episodes"] == 2  # evaluated, in the arm's twin
    # online on the twin env of the arm: the registered env id, the arm's spec
    out2 = str(tmp_path / "sac.onnx")
    assert main(["train", "--algo", "sac", "--env", "VlaRlRos/PandaReach-v0", "--params", XARM, "--steps", "60",
                 "--out", out2, "--eval-episodes", "1", "--hindsight", "0"]) == 0
    from vla_rl_ros.runtime.onnx_policy import load_validated

    assert load_validated(out2, None, arm.spec).spec.arm_joints == arm.spec.arm_joints != PANDA_ARM_JOINTS


def test_sim_refuses_a_starting_model_of_another_arm(tmp_path, capsys):
    """`sim --arm` with the Panda's default model: a clear error naming the fix, before any node starts."""
    assert main(["sim", "--task", "reach", "--arm", XARM, "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "does not fit the arm" in err and "arm_joints" in err and "ship --task reach --params" in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------- the sim graph (ROS)
def test_sim_arm_file_reaches_every_node_through_rcl(ros_env, arm):
    """What each node of `sim --arm config/xarm6.yaml` reads (rclpy parsing its own command line): the xArm's
    section over config/sim.yaml's, and the CLI's own parameters (task, model, run) still over both."""
    import rclpy

    from vla_rl_ros.cli import build_parser
    from vla_rl_ros.commands.sim import plan

    pl = plan(build_parser().parse_args(["sim", "--task", "reach", "--arm", XARM, "--model", SHIPPED]))
    assert set(pl.commands) == {"twin_node", "policy_node", "recorder_node", "learner_node"}
    for name, cmd in pl.commands.items():
        ctx = rclpy.Context()
        rclpy.init(args=["node", *cmd[cmd.index("--ros-args"):]], context=ctx)
        try:
            node = rclpy.create_node(name, context=ctx, automatically_declare_parameters_from_overrides=True)
            got = {k: node.get_parameter(k).value for k in ("joints", "ee_link", "urdf_path", "home", "task")}
            model = node.get_parameter("model_path").value if name == "policy_node" else None
            node.destroy_node()
        finally:
            rclpy.shutdown(context=ctx)
        assert got == {"joints": list(arm.spec.arm_joints), "ee_link": "link_tcp",
                       "urdf_path": "sim/xarm6_with_gripper_tcp.urdf", "home": list(arm.home), "task": "reach"}, name
        assert name != "policy_node" or model == SHIPPED


def test_the_sim_graph_runs_with_the_learner_on_the_second_arm(ros_env, tmp_path, arm):
    """`vla-rl-ros sim --arm config/xarm6.yaml`: twin, policy, recorder and learner on the xArm; its episodes
    succeed, and the learner's monitor measures the arm's model in the arm's twin (the same result as
    evaluating it here in the twin of config/xarm6.yaml)."""
    from vla_rl_ros.learner.evaluate import evaluate_onnx
    from vla_rl_ros.learner.monitor import read_monitor

    run = tmp_path / "xarm-sim"
    cmd = [sys.executable, "-m", "vla_rl_ros.cli", "sim", "--task", "reach", "--arm", XARM, "--model", SHIPPED,
           "--run", str(run), "--domain-id", str(ros_env.domain_id), "--set", "learner_node.monitor_episodes:=4",
           "--set", "policy_node.exploration_std:=0.0"]
    log = open(tmp_path / "sim.log", "w")
    proc = subprocess.Popen(cmd, env=ros_env.env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def text() -> str:
        with open(tmp_path / "sim.log") as f:
            return f.read()

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            t = text()
            if len(re.findall(r"\] SUCCESS", t)) >= 3 and "[monitor]" in t:
                break
            time.sleep(0.5)
        t = text()
        assert proc.poll() is None, f"sim exited early:\n{t[-3000:]}"
        assert len(re.findall(r"\] SUCCESS", t)) >= 3, t[-3000:]
        assert "[monitor]" in t, t[-3000:]
    finally:
        stop_sim(proc, text())
        log.close()
    t = text()
    assert "exited with code" not in t, t[-3000:]
    assert json.load(open(run / "run.json"))["spec"]["arm_joints"] == list(arm.spec.arm_joints)
    rec = next(r for r in read_monitor(run / "models") if r.get("success_rate") is not None)
    ref = evaluate_onnx(SHIPPED, "reach", rec["episodes"], rec["seed"], twin=arm.twin())
    assert rec["success_rate"] == ref.success_rate and rec["mean_return"] == pytest.approx(ref.mean_return)
