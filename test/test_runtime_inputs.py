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


# ------------------------------------------------------------------ split joint states, mimic joints
def test_split_joint_states_merge_by_group_and_keep_each_from_its_last_message():
    from vla_rl_ros.runtime.inputs import ARM as ARM_BIT, GRIPPER

    m = JointStateMatcher(ARM, FINGERS)
    assert m.update(ARM, [0.1] * 7) is None and m.carried == ARM_BIT
    assert not m.valid  # the gripper not seen yet
    assert m.update(FINGERS, [0.01, 0.02]) is None and m.carried == GRIPPER
    assert m.valid and m.gripper_width == pytest.approx(0.03)
    np.testing.assert_allclose(m.q, 0.1)
    assert m.update(ARM + ["other"], [0.2] * 8) is None  # the arm alone: the gripper keeps its last width
    np.testing.assert_allclose(m.q, 0.2)
    assert m.gripper_width == pytest.approx(0.03)
    # a refused gripper message changes neither group, and is charged to the gripper
    assert "gripper" in m.update(FINGERS, [math.nan, 0.0]) and m.carried == GRIPPER
    assert m.gripper_width == pytest.approx(0.03)
    # half an arm, or nothing configured at all, is refused
    assert m.update(ARM[:3], [0.0] * 3).startswith("missing joints")
    assert m.update(["wheel"], [0.0]).startswith("missing joints")
    np.testing.assert_allclose(m.q, 0.2)


def test_one_finger_joint_gives_the_width_through_the_urdf_mimic():
    from vla_rl_ros.arm import joint_mimics
    from vla_rl_ros.kinematics import default_panda_urdf

    mimics = joint_mimics(default_panda_urdf())
    assert mimics[FINGERS[1]] == (FINGERS[0], 1.0, 0.0)  # the Panda's finger 2 <mimic>s finger 1
    m = JointStateMatcher(ARM, FINGERS, mimics=mimics)
    assert m.update(ARM, [0.0] * 7) is None
    assert m.update(FINGERS[:1], [0.03]) is None and m.gripper_width == pytest.approx(0.06)
    assert m.update(FINGERS[1:], [0.02]) is None and m.gripper_width == pytest.approx(0.04)  # the mimic alone too
    # without the mimic a lone finger is refused, and says what to do
    m = JointStateMatcher(ARM, FINGERS)
    assert "<mimic>" in m.update(FINGERS[:1], [0.03])


def test_mimic_chains_with_multipliers_and_offsets():
    # b = 2a + 0.1, c = -b + 0.5: from a alone, a + b + c = a + (2a + 0.1) + (-2a + 0.4) = a + 0.5
    mimics = {"b": ("a", 2.0, 0.1), "c": ("b", -1.0, 0.5)}
    m = JointStateMatcher(["j"], ["a", "b", "c"], mimics=mimics)
    assert m.update(["j", "a"], [0.0, 0.3]) is None and m.gripper_width == pytest.approx(0.8)
    assert m.update(["c"], [0.4 - 2 * 0.3]) is None and m.gripper_width == pytest.approx(0.8)  # from c alone
    with pytest.raises(ValueError, match="loop"):
        JointStateMatcher(["j"], ["a", "b"], mimics={"a": ("b", 1.0, 0.0), "b": ("a", 1.0, 0.0)})


def test_alternating_publishers_do_not_rebuild_the_index():
    m = JointStateMatcher(ARM, FINGERS)
    arm_names, grip_names = list(ARM), list(FINGERS)
    for i in range(5):
        assert m.update(arm_names, [0.1 * i] * 7) is None
        assert m.update(grip_names, [0.01, 0.01]) is None
    assert len(m._plans) == 2


# ------------------------------------------------------------------ poses in other frames
def _rot_z(deg):
    a = math.radians(deg) / 2
    return (0.0, 0.0, math.sin(a), math.cos(a))


def _matrix(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_quaternion_composition_matches_rotation_matrices():
    from vla_rl_ros.runtime.frames import compose, invert, make_transform, quat_mul, quat_rotate

    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = rng.normal(size=4), rng.normal(size=4)
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
        v = rng.normal(size=3)
        np.testing.assert_allclose(_matrix(quat_mul(a, b)), _matrix(a) @ _matrix(b), atol=1e-12)
        np.testing.assert_allclose(quat_rotate(a, v), _matrix(a) @ v, atol=1e-12)
        ta, tb = make_transform(rng.normal(size=3), a), make_transform(rng.normal(size=3), b)
        t, q = compose(ta, tb)  # a point of C: into B, then into A
        np.testing.assert_allclose(np.add(quat_rotate(q, v), t),
                                   _matrix(a) @ (_matrix(b) @ v + tb[0]) + ta[0], atol=1e-12)
        ti, qi = compose(ta, invert(ta))
        np.testing.assert_allclose(ti, 0.0, atol=1e-12)
        np.testing.assert_allclose(np.abs(qi[3]), 1.0, atol=1e-12)


def test_pose_in_a_configured_frame_is_moved_into_the_base_frame():
    from vla_rl_ros.runtime.frames import frame_table, make_transform

    # world: 0.1 m behind the base and turned 90 degrees about z (its x is the base's y)
    table = frame_table("panda_link0", ["world -0.1 0.0 0.0 0.0 0.0 0.7071067811865476 0.7071067811865476", ""])
    err, p, q = table.to_base("world", (0.2, -0.5, 0.1), (0.0, 0.0, 0.0, 1.0))
    assert err is None
    np.testing.assert_allclose(p, (0.4, 0.2, 0.1), atol=1e-12)
    np.testing.assert_allclose(q, _rot_z(90), atol=1e-12)
    assert table.to_base("panda_link0", (1.0, 2.0, 3.0), (0, 0, 0, 1))[1] == (1.0, 2.0, 3.0)
    assert table.to_base("", (1.0, 2.0, 3.0), (0, 0, 0, 1))[0] is None
    err, p, _ = table.to_base("camera", (0, 0, 0), (0, 0, 0, 1))
    assert "'camera' is not the base frame 'panda_link0'" in err and "'world'" in err
    # a chain: the camera in the world (9-field entry), the base itself as a child of another frame (tf2 order)
    table = frame_table("panda_link0", ["world -0.1 0 0 0 0 0.7071067811865476 0.7071067811865476",
                                        "camera world 0 0 1.0 0 0 0 1"])
    np.testing.assert_allclose(table.to_base("camera", (0.2, -0.5, -0.9), (0, 0, 0, 1))[1], (0.4, 0.2, 0.1), atol=1e-12)
    up = FrameTable_with_base_as_child()
    np.testing.assert_allclose(up.to_base("map", (1.5, 0.0, 0.0), (0, 0, 0, 1))[1], (0.5, 0.0, 0.0), atol=1e-12)
    assert make_transform((0, 0, 0), (0, 0, 0, 2.0))[1] == (0.0, 0.0, 0.0, 1.0)  # normalised


def FrameTable_with_base_as_child():
    from vla_rl_ros.runtime.frames import FrameTable, make_transform

    t = FrameTable("panda_link0")
    assert t.add("map", "panda_link0", make_transform((1.0, 0.0, 0.0), (0, 0, 0, 1))) is None  # /tf_static order
    return t


def test_static_transform_entries_are_checked_and_the_params_file_wins_over_tf_static():
    from vla_rl_ros.runtime.frames import frame_table, make_transform

    for bad in ("world 1 2 3", "world 0 0 0 0 0 0 0", "world 0 0 nan 0 0 0 1", "world 0 0 x 0 0 0 1",
                "world world 0 0 0 0 0 0 1"):
        with pytest.raises(ValueError, match="static transform"):
            frame_table("panda_link0", [bad])
    table = frame_table("panda_link0", ["world 0 0 0.5 0 0 0 1"])
    assert "fixed by static_transforms" in table.add("odom", "world", make_transform((9, 9, 9), (0, 0, 0, 1)))
    assert table.add("panda_link0", "world", make_transform((9, 9, 9), (0, 0, 0, 1))) is None  # same edge: kept
    np.testing.assert_allclose(table.to_base("world", (0, 0, 0), (0, 0, 0, 1))[1], (0, 0, 0.5))


def test_tf_static_messages_add_frames_and_bad_ones_are_reported():
    """/tf_static as tf2_msgs/TFMessage carries it (tf2_msgs is not on PyPI: a message of the same shape)."""
    from types import SimpleNamespace as NS

    from vla_rl_ros.runtime.frames import add_tf_message, frame_table

    def tr(parent, child, xyz, q):
        return NS(header=NS(frame_id=parent), child_frame_id=child,
                  transform=NS(translation=NS(x=xyz[0], y=xyz[1], z=xyz[2]),
                               rotation=NS(x=q[0], y=q[1], z=q[2], w=q[3])))

    table = frame_table("panda_link0", ["world 0 0 0.5 0 0 0 1"])
    errors = add_tf_message(table, NS(transforms=[
        tr("world", "camera", (0.0, 0.0, 1.0), (1.0, 0.0, 0.0, 0.0)),  # looking down: z flipped
        tr("world", "bad", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)),
        tr("odom", "world", (5.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))]))
    assert len(errors) == 2 and "zero quaternion" in errors[0] and "fixed by static_transforms" in errors[1]
    err, p, _ = table.to_base("camera", (0.1, 0.2, 0.8), (0, 0, 0, 1))
    assert err is None
    np.testing.assert_allclose(p, (0.1, -0.2, 0.7), atol=1e-12)  # camera (0.1, 0.2, 0.8) -> world (0.1, -0.2, 0.2)
    assert table.to_base("bad", (0, 0, 0), (0, 0, 0, 1))[0] is not None
