"""ament_python package vla_rl_ros (also pip-installable: ``pip install -e .[ros]``)."""
from glob import glob

from setuptools import find_packages, setup

package_name = "vla_rl_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{package_name}/models", glob("models/*.onnx") + glob("models/*.md")),
        (f"share/{package_name}/sim", glob("sim/*")),
    ],
    package_data={package_name: ["py.typed"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "pyyaml",
        "onnxruntime",
        "pybullet==3.2.7",
        "gymnasium>=1.0",
        "numba",
        "tqdm",
        "cryptography",  # Ed25519 signatures of promoted models (vla_rl_ros/signing.py)
    ],
    extras_require={
        # The learner side (not needed by policy_node on the robot).
        "learn": [
            "torch==2.13.0",
            "onnx",
            "onnxscript",
            "tensorboard",
            "matplotlib",
            "safetensors",
            "mcap",
            "mcap-ros2-support",
            "opencv-python-headless",
        ],
        # perception_node (camera + ArUco marker -> object pose); the twin's marker texture is drawn with it too.
        "perception": ["opencv-python-headless"],
        # ROS 2 Kilted from PyPI wheels, for machines without a system ROS 2.
        # Never install this extra on a robot: it would shadow the system rclpy.
        "ros": [
            "ros-rclpy[fastrtps]",
            "ros-std-msgs",
            "ros-sensor-msgs",
            "ros-geometry-msgs",
            "ros-std-srvs",
            "ros-diagnostic-msgs",
            "ros-rosgraph-msgs",
            "ros-trajectory-msgs",
            "ros-lifecycle-msgs",
        ],
        # The labelling page (vla-rl-ros label): Flask, see vla_rl_ros/preferences/labelpage.py for why.
        "label": ["flask>=3"],
        # selenium drives Debian's chromium + chromium-driver in test/test_label_page.py (apt, not pip).
        "test": ["pytest", "pytest-timeout", "hypothesis", "selenium>=4.10", "flask>=3"],
        # References for bench/ (d3rlpy pins gymnasium==1.0.0: install it with --no-deps, see docs/BENCHMARKS.md).
        "bench": ["stable-baselines3"],
    },
    zip_safe=True,
    maintainer="vla_rl_ros maintainers",
    maintainer_email="maintainers@vla-rl-ros.invalid",
    description="Continual RL for a robot arm over ROS 2: ONNX policy node, durable buffer, SAC/Recap learner, PyBullet twin.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "vla-rl-ros = vla_rl_ros.cli:main",
            "twin_node = vla_rl_ros.nodes.twin_node:main",
            "policy_node = vla_rl_ros.nodes.policy_node:main",
            "recorder_node = vla_rl_ros.nodes.recorder_node:main",
            "learner_node = vla_rl_ros.nodes.learner_node:main",
            "teacher_node = vla_rl_ros.nodes.teacher_node:main",
            "perception_node = vla_rl_ros.nodes.perception_node:main",
        ],
    },
)
