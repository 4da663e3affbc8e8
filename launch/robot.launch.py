"""On the robot: policy + recorder + learner against a real arm under ros2_control.

    ros2 launch vla_rl_ros robot.launch.py params_file:=/path/to/robot.yaml \
        joint_states:=/joint_states arm_commands:=/arm_controller/commands \
        gripper_commands:=/gripper_controller/commands run_dir:=/data/vla_rl_ros/run1 [model:=M.onnx] \
        [arm:=ARM.yaml] [respawn:=true|false] [respawn_delay:=S] [max_restarts:=N] [perception:=true]

Every robot-facing topic can be remapped from the command line. ``perception:=true`` adds
``perception_node`` (the object's pose from a camera and an ArUco marker; its section of the params file). The learner
can run on another machine (same ROS_DOMAIN_ID): start this file with
``learner:=false`` on the robot and ``learner_node`` on the workstation.
The nodes and what each gets on top of the params file come from
:func:`vla_rl_ros.graph.node_parameters`, as for ``vla-rl-ros robot``.
A node that dies is started again (``respawn``) after ``respawn_delay``, up to
``max_restarts`` times where ``launch`` counts them (Iron and later). While
``policy_node`` is down the arm holds: its position controller keeps the last
target it was sent.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vla_rl_ros.graph import node_parameters
from vla_rl_ros.supervision import RestartPolicy, launch_respawn

TOPICS = {  # launch argument -> the topic it remaps (policy_node)
    "joint_states": "/joint_states",
    "arm_commands": "/arm_controller/commands",
    "gripper_commands": "/gripper_controller/commands",
    "object_pose": "/task/object_pose",
    "goal_pose": "/task/goal_pose",
    "image": "/camera/image_raw",
}


def _nodes(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    nodes = node_parameters("robot", run_dir=arg("run_dir"), model=arg("model") or None,
                            learner=arg("learner").lower() in ("true", "1", "yes"),
                            perception=arg("perception").lower() in ("true", "1", "yes"))
    remaps = [(topic, arg(name)) for name, topic in TOPICS.items()]
    files = [arg("params_file")] + ([arg("arm")] if arg("arm") else [])  # an arm's file after: its /** wins
    respawn = _respawn(arg)
    return [Node(package="vla_rl_ros", executable=name, name=name, output="screen",
                 parameters=[*files, overrides], remappings=remaps if name == "policy_node" else [], **respawn)
            for name, overrides in nodes.items()]


def _respawn(arg) -> dict:
    """A node that dies is started again after respawn_delay, at most max_restarts times where ``launch`` can
    count them (Iron and later); ``vla-rl-ros`` also doubles the delay (vla_rl_ros/supervision.py)."""
    return launch_respawn(RestartPolicy(), enabled=arg("respawn").lower() in ("true", "1", "yes"),
                          delay_s=float(arg("respawn_delay")), max_restarts=int(arg("max_restarts")))


def generate_launch_description():
    share = get_package_share_directory("vla_rl_ros")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "robot.yaml")),
        DeclareLaunchArgument("run_dir", default_value=os.path.join(os.path.expanduser("~"), "vla_rl_ros_runs", "robot")),
        DeclareLaunchArgument("model", default_value="", description="starting ONNX model ('' = the params file's)"),
        DeclareLaunchArgument("learner", default_value="true"),
        DeclareLaunchArgument("perception", default_value="false",
                              description="start perception_node: the object's pose from the camera's ArUco "
                                          "marker (camera topics and extrinsic: the params file's perception_node)"),
        DeclareLaunchArgument("arm", default_value="",
                              description="a params file declaring another arm (its /** section: spec, urdf_path, "
                                          "scene, home), given to every node after params_file, e.g. "
                                          "config/xarm6.yaml ('' = params_file's arm)"),
        *(DeclareLaunchArgument(name, default_value=topic) for name, topic in TOPICS.items()),
        DeclareLaunchArgument("respawn", default_value="true", description="restart a node that dies"),
        DeclareLaunchArgument("respawn_delay", default_value=str(RestartPolicy().backoff_s),
                              description="seconds before a dead node is started again"),
        DeclareLaunchArgument("max_restarts", default_value=str(RestartPolicy().max_restarts),
                              description="restarts of a node before it is left down (Iron and later; Humble's "
                                          "launch restarts without a limit)"),
        OpaqueFunction(function=_nodes),
    ])
