"""vla_rl_ros: continual RL for a robot arm over ROS 2."""
__version__ = "0.1.0"
