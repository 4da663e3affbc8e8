"""The one observation/action spec: layout, (de)serialisation, precise diffs."""

import numpy as np
import pytest

from vla_rl_ros.spec import Spec, SpecError, spec_from_params


def test_layout_dims_and_slices():
    s = Spec()
    assert s.obs_dim == 7 + 1 + 3 * 6 == 26
    assert s.action_dim == 4
    assert Spec(action_mode="joint_delta").action_dim == 8
    assert s.obs_slice("ee_pos") == slice(8, 11)
    o = s.build_observation(np.arange(7), 0.05, [1, 2, 3], [4, 5, 6], [7, 8, 10])
    np.testing.assert_allclose(o[s.obs_slice("ee_to_object")], [3, 3, 3])
    np.testing.assert_allclose(o[s.obs_slice("object_to_goal")], [3, 3, 4])
    np.testing.assert_allclose(o[s.obs_slice("ee_to_goal")], [6, 6, 7])
    assert o.dtype == np.float32 and o[7] == pytest.approx(0.05)


def test_json_round_trip_and_diff():
    s = Spec(task="pick_place")
    assert Spec.from_json(s.to_json()) == s
    other = s.replace(max_ee_step=0.1, task="reach")
    d = s.diff(other)
    assert any(x.startswith("max_ee_step: configured 0.05, model has 0.1") for x in d)
    assert any(x.startswith("task:") for x in d)
    assert not any(x.startswith("arm_joints") for x in d)


def test_rejects_bad_specs():
    with pytest.raises(SpecError, match="task"):
        Spec(task="juggle")
    with pytest.raises(SpecError, match="duplicates"):
        Spec(arm_joints=("a", "a"))
    with pytest.raises(SpecError, match="unknown spec fields"):
        Spec.from_dict({**Spec().to_dict(), "bogus": 1})
    with pytest.raises(SpecError, match="version"):
        Spec.from_dict({**Spec().to_dict(), "version": 99})
    with pytest.raises(SpecError, match="JSON"):
        Spec.from_json("{not json")


def test_gripper_mapping_and_params():
    s = Spec()
    assert s.gripper_target(-1) == 0.0 and s.gripper_target(1) == pytest.approx(0.08)
    assert s.gripper_target(5) == pytest.approx(0.08)
    p = spec_from_params({"task": "pick_place", "joints": list(s.arm_joints), "max_ee_step": 0.03})
    assert p.task == "pick_place" and p.max_ee_step == 0.03 and p.arm_joints == s.arm_joints
