"""Sim stack: PyBullet twin + policy + recorder + learner (+ the scripted teacher), one process per node.

    ros2 launch vla_rl_ros sim.launch.py [task:=reach|pick_place] [params_file:=...]

The same graph is started by ``vla-rl-ros sim`` on machines without ``ros2 launch``
(see vla_rl_ros/graph.py; test/test_graph.py keeps both in step).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("vla_rl_ros")
    params_file = LaunchConfiguration("params_file")
    task = LaunchConfiguration("task")
    run_dir = LaunchConfiguration("run_dir")
    overrides = {"task": task}
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "sim.yaml")),
        DeclareLaunchArgument("task", default_value="reach"),
        DeclareLaunchArgument("run_dir", default_value=os.path.join(os.path.expanduser("~"), "vla_rl_ros_runs", "sim")),
        Node(package="vla_rl_ros", executable="twin_node", name="twin_node", output="screen",
             parameters=[params_file, overrides]),
        Node(package="vla_rl_ros", executable="policy_node", name="policy_node", output="screen",
             parameters=[params_file, overrides]),
        Node(package="vla_rl_ros", executable="recorder_node", name="recorder_node", output="screen",
             parameters=[params_file, overrides, {"run_dir": run_dir}]),
        Node(package="vla_rl_ros", executable="learner_node", name="learner_node", output="screen",
             parameters=[params_file, overrides, {"run_dir": run_dir}]),
        # the twin's stand-in for a human who corrects the arm over /rl/intervention (watch_fraction 0 = off)
        Node(package="vla_rl_ros", executable="teacher_node", name="teacher_node", output="screen",
             parameters=[params_file, overrides]),
    ])
