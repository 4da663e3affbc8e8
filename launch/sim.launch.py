"""Sim stack: PyBullet twin + policy + recorder + learner (+ the scripted teacher), one process per node.

    ros2 launch vla_rl_ros sim.launch.py [task:=pick_place|reach] [model:=M.onnx] [run_dir:=DIR]
                                         [teacher:=FRACTION] [learner:=true|false] [params_file:=...]
                                         [arm:=ARM.yaml] [respawn:=true|false] [respawn_delay:=S]
                                         [max_restarts:=N] [gap:=K] [perception:=true|false]

The same graph as ``vla-rl-ros sim`` on machines without ``ros2 launch``: both ask
:func:`vla_rl_ros.graph.node_parameters` which nodes to start and what each gets on top of the params file
(the task, the task's shipped model unless ``model:=``, the run folder; test/test_graph.py checks they agree).
``perception:=true`` (``vla-rl-ros sim --perception``) adds ``perception_node``: the policy then runs on the
object pose the twin camera's ArUco marker gives, not on the twin's ground truth (``/twin/object_pose``).
Unlike ``vla-rl-ros sim`` it does not create the run, its signing key pair (``<run>/keys/``: the learner
signs promotions with it and policy_node trusts only it) or import demos; run ``vla-rl-ros sim`` once for that.
A node that dies is started again (``respawn``) after ``respawn_delay``, up to ``max_restarts`` times where
``launch`` counts them (Iron and later); ``vla-rl-ros sim`` also doubles the delay after each death.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vla_rl_ros.graph import large_frames_profile, node_parameters
from vla_rl_ros.supervision import RestartPolicy, launch_respawn


def _nodes(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    teacher, gap = arg("teacher"), arg("gap")
    nodes = node_parameters("sim", task=arg("task"), run_dir=arg("run_dir") or None, model=arg("model") or None,
                            teacher=float(teacher) if teacher else None,
                            learner=arg("learner").lower() in ("true", "1", "yes"),
                            gap=float(gap) if gap else None,
                            perception=arg("perception").lower() in ("true", "1", "yes"))
    files = [arg("params_file")] + ([arg("arm")] if arg("arm") else [])  # an arm's file after: its /** wins
    respawn = _respawn(arg)
    # camera frames through shared memory in one piece, as `vla-rl-ros sim` does (config/fastdds_large_frames.xml)
    profile = large_frames_profile(dict(os.environ))
    env = [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", profile)] if profile else []
    # teacher_node: the twin's stand-in for a human who corrects the arm over /rl/intervention
    return env + [Node(package="vla_rl_ros", executable=name, name=name, output="screen",
                 parameters=[*files, overrides], **respawn)
            for name, overrides in nodes.items()]


def _respawn(arg) -> dict:
    """A node that dies is started again after respawn_delay, at most max_restarts times where ``launch`` can
    count them (Iron and later); ``vla-rl-ros`` also doubles the delay (vla_rl_ros/supervision.py)."""
    return launch_respawn(RestartPolicy(), enabled=arg("respawn").lower() in ("true", "1", "yes"),
                          delay_s=float(arg("respawn_delay")), max_restarts=int(arg("max_restarts")))


def generate_launch_description():
    share = get_package_share_directory("vla_rl_ros")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "sim.yaml")),
        DeclareLaunchArgument("task", default_value="pick_place", description="reach | pick_place"),
        DeclareLaunchArgument("model", default_value="", description="starting ONNX model ('' = the task's shipped one)"),
        DeclareLaunchArgument("run_dir", default_value="", description="run folder ('' = runs/<task>-sim)"),
        DeclareLaunchArgument("teacher", default_value="",
                              description="pick_place: fraction of episodes the scripted teacher watches "
                                          "('' = the params file's; 0 = no teacher)"),
        DeclareLaunchArgument("learner", default_value="true"),
        DeclareLaunchArgument("perception", default_value="false",
                              description="start perception_node: the object's pose from the twin camera's "
                                          "ArUco marker (the camera on at 640x480; the twin's ground truth moves "
                                          "to /twin/object_pose)"),
        DeclareLaunchArgument("gap", default_value="",
                              description="the reality gap between the arm's twin and the gate's, scaled ('' = the "
                                          "params file's as written; 0 = identical twins; 2 = twice)"),
        DeclareLaunchArgument("arm", default_value="",
                              description="a params file declaring another arm (its /** section: spec, urdf_path, "
                                          "scene, home), given to every node after params_file, e.g. "
                                          "config/xarm6.yaml ('' = params_file's arm)"),
        DeclareLaunchArgument("respawn", default_value="true", description="restart a node that dies"),
        DeclareLaunchArgument("respawn_delay", default_value=str(RestartPolicy().backoff_s),
                              description="seconds before a dead node is started again"),
        DeclareLaunchArgument("max_restarts", default_value=str(RestartPolicy().max_restarts),
                              description="restarts of a node before it is left down (Iron and later; Humble's "
                                          "launch restarts without a limit)"),
        OpaqueFunction(function=_nodes),
    ])
