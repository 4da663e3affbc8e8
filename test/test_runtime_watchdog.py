"""Watchdog core: when the arm must hold, and why (synthetic clocks, no timing)."""
from __future__ import annotations

import pytest

from vla_rl_ros.runtime.watchdog import ERROR, NEVER, OK, STALE, InputChannel, Watchdog


def make():
    js = InputChannel("joint_states", timeout_s=0.1)
    goal = InputChannel("goal_pose", timeout_s=1.0)
    img = InputChannel("image", required=False)
    interv = InputChannel("intervention", required=False, error_ttl_s=0.2)
    return Watchdog([js, goal, img, interv]), js, goal, img, interv


def test_required_inputs_must_arrive_and_stay_fresh():
    wd, js, goal, img, interv = make()
    assert wd.check(0.0) == "waiting for joint_states"
    js.accept(0.0)
    assert wd.check(0.01) == "waiting for goal_pose"
    goal.accept(0.0)
    assert wd.check(0.05) == ""
    assert js.state(0.1) == OK and js.state(0.1001) == STALE
    assert wd.check(0.35) == "joint_states stale (350 ms > 100 ms)"
    js.accept(0.4)
    assert wd.check(0.45) == ""
    js.accept(1.45)
    assert wd.check(1.5) == "goal_pose stale (1500 ms > 1000 ms)"


def test_estop_has_priority_and_releases():
    wd, js, goal, *_ = make()
    js.accept(0.0)
    goal.accept(0.0)
    wd.set_estop(True)
    assert wd.check(0.01) == "estop engaged"
    assert wd.check(5.0) == "estop engaged"  # before staleness
    wd.set_estop(False)
    assert wd.check(0.01) == ""


def test_rejected_message_holds_until_next_valid_one_and_is_counted():
    wd, js, goal, *_ = make()
    js.accept(0.0)
    goal.accept(0.0)
    js.reject(0.01, "non-finite position for ['panda_joint3']")
    assert js.state(0.02) == ERROR
    assert wd.check(0.02) == "joint_states: non-finite position for ['panda_joint3']"
    assert wd.check(30.0).startswith("joint_states: non-finite")  # no TTL: stands until a valid message
    js.accept(0.03)
    assert wd.check(0.04) == ""
    assert js.n_rejected == 1 and js.n_ok == 2 and wd.n_rejected == 1
    assert js.last_error.startswith("non-finite") and wd.last_errors() == {"joint_states": js.last_error}


def test_optional_channels_only_hold_on_errors():
    wd, js, goal, img, interv = make()
    js.accept(0.0)
    goal.accept(0.0)
    assert img.state(0.0) == OK and img.state(100.0) == OK  # never received, never stale: fine
    img.reject(0.01, "unsupported image encoding 'mono8'")
    assert wd.check(0.02) == "image: unsupported image encoding 'mono8'"
    img.accept(0.03)
    assert wd.check(0.04) == ""
    # an invalid human action holds only while it would have been fresh
    interv.reject(0.05, "action has 3 values, expected 4 (action_dim)")
    assert wd.check(0.06).startswith("intervention:")
    js.accept(0.29)
    assert wd.check(0.3) == ""


def test_fresh_requires_a_recent_valid_message():
    ch = InputChannel("intervention", required=False, error_ttl_s=0.2)
    assert not ch.fresh(0.0, 0.2)
    ch.accept(1.0)
    assert ch.fresh(1.1, 0.2) and not ch.fresh(1.3, 0.2)
    ch.reject(1.15, "bad")
    assert not ch.fresh(1.16, 0.2)


def test_states_and_descriptions():
    ch = InputChannel("joint_states", timeout_s=0.1)
    assert ch.state(0.0) == NEVER and ch.describe(0.0) == "waiting for joint_states"
    ch.accept(0.0)
    assert ch.describe(0.05) == "joint_states: ok"
    with pytest.raises(ValueError):
        Watchdog([InputChannel("a"), InputChannel("a")])
