"""Property-based tests (Hypothesis) of the cores' input validators: whatever arrives, each returns a verdict
(or raises only its own documented error), the verdict is exactly the documented rule, and a refused input
leaves no trace (the matcher keeps its last valid state; the store gets no invalid row). No ROS here; the
nodes are fuzzed over DDS in test_node_fuzz.py."""
from __future__ import annotations

import array
import json
import math
import os
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_rl_ros.runtime.inputs import (MAX_JOINT_ABS, MAX_POSITION_M, JointStateMatcher, validate_action,
                                       validate_command, validate_image, validate_pose)
from vla_rl_ros.spec import PANDA_ARM_JOINTS, PANDA_GRIPPER_JOINTS, Spec, SpecError
from vla_rl_ros.stepmsg import META_FIELDS, StepDecodeError, decode, encode_layout

SPEC = Spec(task="reach")
ARM, GRIP = list(PANDA_ARM_JOINTS), list(PANDA_GRIPPER_JOINTS)
# derandomize: the same examples on every run and machine (a failure reproduces; CI never flakes)
FAST = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# floats as they arrive over DDS: anything a float64 can hold, NaN and infinities included
any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
nasty_float = st.one_of(any_float, st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 0.0, 1e39,
                                                    -1e39, 100.5, 1000.5]))
names = st.lists(st.one_of(st.sampled_from(ARM + GRIP),
                           st.sampled_from(["", "panda_joint8", "panda_joint1 ", "ü", "x" * 300]),
                           st.text(max_size=12)), max_size=14)


def _finite(xs) -> bool:
    return all(math.isfinite(x) for x in xs)


# ------------------------------------------------------------------ joint states
# names biased towards the shapes real drivers send: the arm alone, the gripper alone, one finger joint
group_names = st.one_of(names, st.sampled_from([ARM, GRIP, ARM + GRIP, GRIP[:1], GRIP[1:], ARM + GRIP[:1], ARM[:6]]),
                        st.permutations(ARM + GRIP + ["other_joint"]))
MIMICS = {GRIP[1]: (GRIP[0], 1.0, 0.0)}  # the Panda URDF: finger 2 <mimic>s finger 1


def _expected(nm, pos, mimics):
    """The documented rule: (ok, arm positions or None, gripper joint sum or None)."""
    lookup, dup = {}, False
    for i, n in enumerate(nm):
        dup = dup or n in lookup
        lookup.setdefault(n, i)
    if dup:
        return False, None, None
    arm = [j for j in ARM if j in lookup]
    grip = [j for j in GRIP if j in lookup]
    if (not arm and not grip) or 0 < len(arm) < len(ARM):
        return False, None, None
    if grip and len(grip) < len(GRIP) and not mimics:
        return False, None, None
    if len(pos) != len(nm):
        return False, None, None
    if not all(math.isfinite(pos[lookup[j]]) and abs(pos[lookup[j]]) <= MAX_JOINT_ABS for j in arm + grip):
        return False, None, None
    q = [pos[lookup[j]] for j in ARM] if arm else None
    # the only mimic here is finger 2 = finger 1: a lone finger counts twice
    g = (sum(pos[lookup[j]] for j in grip) * (len(GRIP) // len(grip))) if grip else None
    return True, q, g


@FAST
@given(msgs=st.lists(st.tuples(group_names, st.lists(nasty_float, max_size=14), st.booleans(), st.booleans()),
                     min_size=1, max_size=8),
       mimic=st.booleans())
def test_joint_state_matcher_accepts_exactly_the_documented_messages_and_keeps_the_last_valid_state(msgs, mimic):
    """Each group (arm, gripper) is taken whole from any message that carries it, and kept until the next:
    the merge of split joint states (arm and gripper on two topics) by the documented rule."""
    m = JointStateMatcher(ARM, GRIP, SPEC.gripper_width_of, mimics=MIMICS if mimic else None)
    q, g = None, None  # the arm positions and gripper sum of the last messages that carried each group
    for nm, pos, as_array, fit in msgs:
        if fit:  # as many positions as names, so that good messages occur
            pos = (pos + [0.1 * i for i in range(len(nm))])[:len(nm)]
        position = array.array("d", pos) if as_array else pos  # rclpy hands over array('d'); tests use lists
        err = m.update(nm, position)
        ok, q1, g1 = _expected(nm, pos, mimic)
        assert (err is None) == ok, (nm, pos, err)
        assert err is None or (isinstance(err, str) and err)
        if ok:
            q, g = q1 if q1 is not None else q, g1 if g1 is not None else g
        assert m.valid == (q is not None and g is not None)
        if q is not None:  # a refused message changes nothing
            assert m.q.tolist() == q
        if g is not None:
            assert m.gripper_width == SPEC.gripper_width_of(g)


_KIN = []


@settings(FAST, max_examples=200)
@given(q=st.lists(nasty_float, min_size=9, max_size=9), obj=st.lists(nasty_float, min_size=3, max_size=3),
       goal=st.lists(nasty_float, min_size=3, max_size=3))
def test_inputs_the_validators_accept_make_a_finite_observation(q, obj, goal):
    """What the matcher and the pose check let through builds a finite float32 observation (policy_node acts
    on it and publishes it in /rl/step): a finite float64 like 1e300 must not become Inf on the way."""
    from vla_rl_ros.kinematics import Kinematics, default_panda_urdf

    if not _KIN:
        _KIN.append(Kinematics(default_panda_urdf(), SPEC.base_link, SPEC.ee_link, SPEC.arm_joints))
    m = JointStateMatcher(ARM, GRIP, SPEC.gripper_width_of)
    if m.update(ARM + GRIP, q) is not None:
        return
    if validate_pose("", obj, (0, 0, 0, 1), SPEC.base_link) or validate_pose("", goal, (0, 0, 0, 1), SPEC.base_link):
        return
    obs = SPEC.build_observation(m.q, m.gripper_width, _KIN[0].fk_pos(m.q), np.asarray(obj), np.asarray(goal))
    assert obs.dtype == np.float32 and np.all(np.isfinite(obs)), obs


# ------------------------------------------------------------------ poses, images, actions, commands
@FAST
@given(frame=st.one_of(st.sampled_from(["", "panda_link0", "world", "panda_link0/"]), st.text(max_size=20)),
       p=st.lists(nasty_float, min_size=3, max_size=3), o=st.lists(nasty_float, min_size=4, max_size=4))
def test_validate_pose(frame, p, o):
    err = validate_pose(frame, p, o, "panda_link0")
    near = all(abs(x) <= MAX_POSITION_M for x in p)
    assert (err is None) == (frame in ("", "panda_link0") and _finite(p) and _finite(o) and near), err


ints = st.one_of(st.integers(-2**40, 2**40), st.sampled_from([0, 1, -1, 2**32 - 1, 2**31]))


@FAST
@given(enc=st.one_of(st.sampled_from(["rgb8", "bgr8", "mono8", "RGB8", "16UC1", ""]), st.text(max_size=10)),
       h=ints, w=ints, step=ints, n=ints)
def test_validate_image(enc, h, w, step, n):
    err = validate_image(enc, h, w, step, n)
    assert (err is None) == (enc in ("rgb8", "bgr8") and h > 0 and w > 0 and step >= 3 * w and n == step * h), err


@FAST
@given(values=st.lists(nasty_float, max_size=12), n=st.integers(1, 9), as_array=st.booleans())
def test_validate_action_and_command(values, n, as_array):
    v = array.array("d", values) if as_array else values
    want = len(values) == n and _finite(values)
    assert (validate_action(v, n) is None) == want
    assert (validate_command(v, n, "arm command") is None) == want


# ------------------------------------------------------------------ steps (the recorder's input)
N_STEP = SPEC.obs_dim + SPEC.action_dim + len(META_FIELDS)


step_labels = st.one_of(st.just(encode_layout(SPEC.obs_dim, SPEC.action_dim, "m1")[0]),
                        st.lists(st.sampled_from(["obs", "action", "meta", "model:x", "", "model:" + "v" * 500]),
                                 max_size=6))
step_sizes = st.one_of(st.just(encode_layout(SPEC.obs_dim, SPEC.action_dim, "m1")[1]),
                       st.lists(st.integers(0, 2**32 - 1), max_size=6))
finite = st.floats(allow_nan=False, allow_infinity=False)
step_data = st.one_of(st.lists(nasty_float, min_size=N_STEP, max_size=N_STEP),
                      st.lists(nasty_float, max_size=N_STEP + 3),
                      st.lists(finite, min_size=N_STEP, max_size=N_STEP))  # decodable but for the meta's values


@FAST
@given(labels=step_labels | st.just(encode_layout(SPEC.obs_dim, SPEC.action_dim, "m1")[0]),
       sizes=step_sizes | st.just(encode_layout(SPEC.obs_dim, SPEC.action_dim, "m1")[1]), data=step_data)
def test_step_decode_raises_only_its_own_error_and_returns_only_plausible_steps(labels, sizes, data):
    sizes = sizes[: len(labels)] + [0] * (len(labels) - len(sizes))  # one dim = one label + one size, as on the wire
    try:
        r = decode(labels, sizes, data, SPEC.obs_dim, SPEC.action_dim)
    except StepDecodeError as e:
        assert str(e)
        return
    assert r.obs.shape == (SPEC.obs_dim,) and r.action.shape == (SPEC.action_dim,)
    assert np.all(np.isfinite(data))
    assert isinstance(r.tick, int) and r.tick >= 0
    assert math.isfinite(r.obs_stamp) and math.isfinite(r.cmd_stamp)
    assert math.isfinite(r.control_rate_hz) and 0.0 <= r.control_rate_hz <= 1e6


meta = st.tuples(st.one_of(st.integers(0, 10**6).map(float), nasty_float),  # tick
                 st.one_of(st.floats(1e9, 2e9), nasty_float), st.one_of(st.floats(1e9, 2e9), nasty_float),  # stamps
                 st.sampled_from([0.0, 1.0, 0.5, -3.0, 7.0]), st.sampled_from([0.0, 1.0, 0.5, 2.0]),
                 st.one_of(st.just(20.0), nasty_float))  # intervention, hold, control_rate_hz
obs_vals = st.one_of(st.floats(-2.0, 2.0, width=32), nasty_float)


@settings(FAST, max_examples=25)
@given(steps=st.lists(st.tuples(st.lists(obs_vals, min_size=SPEC.obs_dim, max_size=SPEC.obs_dim),
                                st.lists(st.one_of(st.floats(-1, 1), nasty_float), min_size=SPEC.action_dim,
                                         max_size=SPEC.action_dim),
                                meta, st.booleans()), min_size=2, max_size=40))
def test_recorder_never_raises_and_stores_only_valid_rows(steps):
    """Decoded steps, good and malformed, into the real recorder and SQLite store: nothing raises, and every
    stored row is finite with its action in [-1, 1]."""
    from vla_rl_ros.buffer import Writer, connect
    from vla_rl_ros.recorder import EpisodeRecorder, RecorderConfig
    from vla_rl_ros.rewards import make_reward

    labels, sizes = encode_layout(SPEC.obs_dim, SPEC.action_dim, "m1")
    with tempfile.TemporaryDirectory() as d:
        w = Writer(os.path.join(d, "buffer.sqlite"), spec=SPEC, commit_window_s=0.05)
        try:
            rec = EpisodeRecorder(w, SPEC, make_reward({"name": "reach"}, SPEC),
                                  RecorderConfig(task="reach", max_episode_s=6.0, success_hold_s=0.15, settle_s=0.0))
            rec.arm(seed=1, not_before=0.0)
            tick = 0
            for obs, act, m, consecutive in steps:
                tick += 1 if consecutive else 3
                m = list(m)
                if m[0] == 0.0:
                    m[0] = float(tick)
                try:
                    r = decode(labels, sizes, list(obs) + list(act) + m, SPEC.obs_dim, SPEC.action_dim)
                except StepDecodeError:
                    rec.counters.rejected += 1
                    continue
                rec.on_step(r)
            rec.end("reset")
            w.flush()
        finally:
            w.close()
        con = connect(os.path.join(d, "buffer.sqlite"), readonly=True)
        try:
            rows = con.execute("SELECT obs, action, reward, next_obs, obs_stamp, cmd_stamp FROM steps").fetchall()
        finally:
            con.close()
    for obs, act, reward, nxt, s1, s2 in rows:
        o, a, n = (np.frombuffer(b, np.float32) for b in (obs, act, nxt))
        assert o.shape == n.shape == (SPEC.obs_dim,) and a.shape == (SPEC.action_dim,)
        assert np.all(np.isfinite(o)) and np.all(np.isfinite(n)) and np.all(np.abs(a) <= 1.0)
        assert math.isfinite(reward) and all(s is None or math.isfinite(s) for s in (s1, s2))


# ------------------------------------------------------------------ model announcements and specs
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)
announcement_keys = st.sampled_from(["path", "sha256", "version", "signature", "source", "x"])
signature_keys = st.sampled_from(["format", "key_id", "seq", "spec_sha256", "sig"])


@FAST
@given(text=st.one_of(st.text(max_size=200), json_values.map(json.dumps),
                      st.dictionaries(announcement_keys, json_values, max_size=5).map(json.dumps)))
def test_parse_announcement_raises_only_value_error(text):
    from vla_rl_ros.signing import parse_announcement

    try:
        req = parse_announcement(text)
    except ValueError as e:
        assert str(e)
        return
    assert isinstance(req["path"], str) and req["path"]
    assert all(req.get(k) is None or isinstance(req[k], str) for k in ("sha256", "version"))


@settings(FAST, max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_update_guard_refuses_anything_but_the_signed_announcement(data, tmp_path_factory):
    """Any change to a signed announcement is refused with an UpdateRejected (never another exception), and
    nothing but the announcement as signed is admitted."""
    from vla_rl_ros.signing import Signer, UpdateGuard, UpdateRejected, generate_keypair, public_key_path

    d = tmp_path_factory.mktemp("k")
    key = str(d / "a.key")
    generate_keypair(key)
    good = Signer(key).announcement(str(d / "m.onnx"), "ab" * 32, "v1", SPEC, seq=10)
    req = json.loads(json.dumps(good))
    for _ in range(data.draw(st.integers(0, 3))):
        where = data.draw(st.sampled_from(["top", "signature"]))
        if where == "signature" and isinstance(req.get("signature"), dict):
            req["signature"][data.draw(signature_keys)] = data.draw(json_values)
        else:
            req[data.draw(announcement_keys)] = data.draw(json_values)
    g = UpdateGuard([public_key_path(key)], "", SPEC)
    try:
        seq = g.check(req, str(d / "m.onnx"))
    except UpdateRejected as e:
        assert e.reason and e.kind in g.counts and g.n_rejected == 1
        return
    assert seq == 10
    assert {k: req[k] for k in ("sha256", "version")} == {k: good[k] for k in ("sha256", "version")}
    assert {k: req["signature"][k] for k in ("seq", "spec_sha256", "sig")} == \
        {k: good["signature"][k] for k in ("seq", "spec_sha256", "sig")}


@FAST
@given(doc=st.one_of(st.text(max_size=100), json_values.map(json.dumps),
                     st.dictionaries(st.sampled_from(list(SPEC.to_dict()) + ["x"]), json_values,
                                     max_size=8).map(json.dumps),
                     st.builds(lambda k, v: json.dumps({**SPEC.to_dict(), k: v}),
                               st.sampled_from(list(SPEC.to_dict())), json_values)))
def test_spec_from_model_metadata_raises_only_what_the_loader_reports(doc):
    """A model's spec metadata is read with Spec.from_json; load_validated turns SpecError/TypeError/ValueError
    into a clear rejection, so nothing else may come out of it."""
    try:
        s = Spec.from_json(doc)
    except (SpecError, TypeError, ValueError):
        return
    assert Spec.from_json(s.to_json()) == s
