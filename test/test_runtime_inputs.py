"""Input validation: joint states matched by name, poses, images, human actions, commands."""
from __future__ import annotations

import array
import math

import numpy as np
import pytest

from vla_rl_ros.runtime.inputs import (JointStateMatcher, validate_action, validate_command, validate_image,
                                       validate_pose)
from vla_rl_ros.spec import PANDA_ARM_JOINTS, PANDA_GRIPPER_JOINTS

ARM = list(PANDA_ARM_JOINTS)
FINGERS = list(PANDA_GRIPPER_JOINTS)


def test_matches_by_name_ignoring_extra_joints_and_order():
    m = JointStateMatcher(ARM, FINGERS)
    names = ["extra_joint"] + FINGERS[::-1] + ARM[::-1]
    pos = array.array("d", [9.0, 0.03, 0.01] + [0.1 * (7 - i) for i in range(7)])  # arm reversed: j7..j1
    assert m.update(names, pos) is None
    np.testing.assert_allclose(m.q, [0.1 * (i + 1) for i in range(7)])
    assert m.gripper_width == pytest.approx(0.04)
    assert m.valid
    # a list (not array.array) works too, and a new name order rebuilds the index
    assert m.update(ARM + FINGERS, [float(i) for i in range(9)]) is None
    np.testing.assert_allclose(m.q, range(7))
    assert m.gripper_width == pytest.approx(15.0)


def test_missing_or_duplicated_joint_is_an_error_and_keeps_the_last_valid_state():
    m = JointStateMatcher(ARM, FINGERS)
    good = [0.5] * 9
    assert m.update(ARM + FINGERS, good) is None
    err = m.update(ARM[:6] + FINGERS, [0.0] * 8)
    assert err.startswith("missing joints ['panda_joint7']")
    np.testing.assert_allclose(m.q, 0.5)
    err = m.update(ARM + FINGERS[:1], [0.0] * 8)
    assert "missing joints ['panda_finger_joint2']" in err
    assert "appears twice" in m.update(ARM + FINGERS + ["panda_joint1"], [0.0] * 10)
    np.testing.assert_allclose(m.q, 0.5)
    assert m.update(ARM + FINGERS, good) is None  # recovers


def test_nan_and_wrong_lengths_rejected_without_touching_state():
    m = JointStateMatcher(ARM, FINGERS)
    assert m.update(ARM + FINGERS, [0.2] * 9) is None
    bad = [0.2] * 9
    bad[2] = math.nan
    assert m.update(ARM + FINGERS, bad) == "non-finite position for ['panda_joint3']"
    bad = [0.2] * 9
    bad[8] = math.inf
    assert "gripper" in m.update(ARM + FINGERS, bad)
    assert m.update(ARM + FINGERS, [0.2] * 7) == "position has 7 values for 9 names"
    assert m.update(ARM + FINGERS, []) == "position has 0 values for 9 names"
    np.testing.assert_allclose(m.q, 0.2)
    assert m.gripper_width == pytest.approx(0.4)


def test_first_message_invalid_leaves_matcher_invalid():
    m = JointStateMatcher(ARM, FINGERS)
    assert m.update(["a", "b"], [0.0, 0.0]) is not None
    assert not m.valid


def test_no_gripper_joints_gives_zero_width():
    m = JointStateMatcher(ARM, ())
    assert m.update(ARM, [0.1] * 7) is None and m.gripper_width == 0.0
    with pytest.raises(ValueError):
        JointStateMatcher(ARM + ["panda_joint1"])


def test_validate_pose():
    assert validate_pose("panda_link0", (0.5, 0, 0.1), (0, 0, 0, 1), "panda_link0") is None
    assert validate_pose("", (0.5, 0, 0.1), (0, 0, 0, 1), "panda_link0") is None
    assert "not the base frame" in validate_pose("world", (0.5, 0, 0.1), (0, 0, 0, 1), "panda_link0")
    assert "non-finite position" in validate_pose("", (math.nan, 0, 0.1), (0, 0, 0, 1), "panda_link0")
    assert "non-finite orientation" in validate_pose("", (0.5, 0, 0.1), (0, 0, math.inf, 1), "panda_link0")


def test_validate_image():
    assert validate_image("rgb8", 84, 84, 252, 84 * 252) is None
    assert validate_image("bgr8", 2, 3, 12, 24) is None  # padded rows are fine
    assert validate_image("mono8", 84, 84, 84, 84 * 84) == "unsupported image encoding 'mono8' (supported: rgb8, bgr8)"
    assert "unsupported" in validate_image("32FC1", 4, 4, 16, 64)
    assert "empty image" in validate_image("rgb8", 0, 84, 252, 0)
    assert "shorter than" in validate_image("rgb8", 2, 4, 8, 16)
    assert "buffer has 10 bytes" in validate_image("rgb8", 2, 2, 6, 10)


def test_validate_action_and_command():
    assert validate_action(array.array("d", [0.1, 0.2, 0.3, 1.0]), 4) is None
    assert validate_action([0.1, 0.2, 0.3], 4) == "action has 3 values, expected 4 (action_dim)"
    assert validate_action([0.1, math.nan, 0.3, 1.0], 4) == "action contains NaN/Inf"
    assert validate_command(array.array("d", [0.0] * 7), 7, "arm command") is None
    assert validate_command(array.array("d"), 7, "arm command") == "arm command has 0 values, expected 7"
    assert validate_command([0.0, math.inf], 2) == "command contains NaN/Inf"
