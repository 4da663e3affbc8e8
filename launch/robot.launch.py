"""On the robot: policy + recorder + learner against a real arm under ros2_control.

    ros2 launch vla_rl_ros robot.launch.py params_file:=/path/to/robot.yaml \
        joint_states:=/joint_states arm_commands:=/arm_controller/commands \
        gripper_commands:=/gripper_controller/commands run_dir:=/data/vla_rl_ros/run1

Every robot-facing topic can be remapped from the command line. The learner
can run on another machine (same ROS_DOMAIN_ID): start this file with
``learner:=false`` on the robot and ``learner_node`` on the workstation.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("vla_rl_ros")
    params_file = LaunchConfiguration("params_file")
    run_dir = LaunchConfiguration("run_dir")
    remaps = [
        ("/joint_states", LaunchConfiguration("joint_states")),
        ("/arm_controller/commands", LaunchConfiguration("arm_commands")),
        ("/gripper_controller/commands", LaunchConfiguration("gripper_commands")),
        ("/task/object_pose", LaunchConfiguration("object_pose")),
        ("/task/goal_pose", LaunchConfiguration("goal_pose")),
        ("/camera/image_raw", LaunchConfiguration("image")),
    ]
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "robot.yaml")),
        DeclareLaunchArgument("run_dir", default_value=os.path.join(os.path.expanduser("~"), "vla_rl_ros_runs", "robot")),
        DeclareLaunchArgument("learner", default_value="true"),
        DeclareLaunchArgument("joint_states", default_value="/joint_states"),
        DeclareLaunchArgument("arm_commands", default_value="/arm_controller/commands"),
        DeclareLaunchArgument("gripper_commands", default_value="/gripper_controller/commands"),
        DeclareLaunchArgument("object_pose", default_value="/task/object_pose"),
        DeclareLaunchArgument("goal_pose", default_value="/task/goal_pose"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw"),
        Node(package="vla_rl_ros", executable="policy_node", name="policy_node", output="screen",
             parameters=[params_file], remappings=remaps),
        Node(package="vla_rl_ros", executable="recorder_node", name="recorder_node", output="screen",
             parameters=[params_file, {"run_dir": run_dir}]),
        Node(package="vla_rl_ros", executable="learner_node", name="learner_node", output="screen",
             parameters=[params_file, {"run_dir": run_dir}], condition=IfCondition(LaunchConfiguration("learner"))),
    ])
