"""A second arm for the tests: the UFACTORY xArm6 with its gripper, from pybullet_data.

Six joints (the Panda has seven), other joint and link names, another URDF: whatever quietly assumes the
Panda fails with it. Its gripper is angular (two finger joints in rad), so "width" is only a number here; the
tests use it to follow the spec through the nodes and tools, not to grasp.
"""
from __future__ import annotations

import os

import pybullet_data

from vla_rl_ros.spec import Spec

XARM6_URDF = os.path.join(pybullet_data.getDataPath(), "xarm", "xarm6_with_gripper.urdf")
XARM6_JOINTS = tuple(f"joint{i}" for i in range(1, 7))
XARM6_GRIPPER = ("left_finger_joint", "right_finger_joint")


def xarm6_spec(task: str = "reach", action_mode: str = "ee_delta") -> Spec:
    return Spec(task=task, action_mode=action_mode, arm_joints=XARM6_JOINTS, gripper_joints=XARM6_GRIPPER,
                base_link="link_base", ee_link="xarm_gripper_base_link")


def xarm6_params(task: str = "reach", action_mode: str = "ee_delta") -> dict:
    """The params file's ``/**`` section (the arm, for every node) for the xArm6."""
    return {"task": task, "action_mode": action_mode, "joints": list(XARM6_JOINTS),
            "gripper_joints": list(XARM6_GRIPPER), "base_link": "link_base", "ee_link": "xarm_gripper_base_link",
            "urdf_path": XARM6_URDF}
