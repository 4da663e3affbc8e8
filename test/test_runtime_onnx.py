"""OnnxPolicy and load_validated: every way a model can be wrong is rejected, with a reason."""
from __future__ import annotations

import hashlib
import io
import json
import warnings

import numpy as np
import onnx
import pytest

import onnx_models as om
from vla_rl_ros.kinematics import Kinematics, default_panda_urdf
from vla_rl_ros.runtime.onnx_policy import (VERSION_KEY, ModelRejected, OnnxPolicy, load_validated, realistic_observation,
                                            sha256_file)
from vla_rl_ros.spec import METADATA_KEY, Spec

SPEC = Spec()


@pytest.fixture(scope="module")
def kin():
    return Kinematics(default_panda_urdf(), SPEC.base_link, SPEC.ee_link, SPEC.arm_joints)


def rejected(path, sha=None, spec=SPEC, **kw) -> ModelRejected:
    with pytest.raises(ModelRejected) as ei:
        load_validated(str(path), sha, spec, **kw)
    return ei.value


def test_good_model_loads_and_acts_like_the_controller_it_encodes(tmp_path, kin):
    p = om.write(tmp_path / "reach.onnx", SPEC, "reach", version="r7", gain=1.5)
    pol = load_validated(p, sha256_file(p), SPEC, kinematics=kin)
    assert isinstance(pol, OnnxPolicy)
    assert pol.version == "r7" and pol.sha256 == sha256_file(p) and pol.spec == SPEC
    assert pol.info.lineage == {"kind": "reach", "parent": None}
    assert np.all(np.isfinite(pol.info.probe_action))
    obs = realistic_observation(SPEC, kin)
    e2g = obs[SPEC.obs_slice("ee_to_goal")].astype(np.float64)
    want = np.clip(1.5 * e2g / SPEC.max_ee_step, -1, 1)
    got = pol.act(obs)
    assert got.shape == (SPEC.action_dim,) and got.dtype == np.float32
    np.testing.assert_allclose(got[:3], want, atol=1e-5)
    assert got[3] == pytest.approx(1.0)
    # the preallocated input is reused: a second observation gives a different, correct answer
    obs2 = obs.copy()
    obs2[SPEC.obs_slice("ee_to_goal")] = [0.01, -0.02, 0.0]
    np.testing.assert_allclose(pol.act(obs2)[:3], [0.3, -0.6, 0.0], atol=1e-5)


def test_session_is_tuned_for_single_sample_latency(tmp_path):
    pol = load_validated(om.write(tmp_path / "m.onnx", SPEC), None, SPEC)
    so = pol.session.get_session_options()
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert so.execution_mode.name == "ORT_SEQUENTIAL"
    assert so.graph_optimization_level.name == "ORT_ENABLE_ALL"


def test_realistic_observation_uses_fk_of_home(kin):
    obs = realistic_observation(SPEC, kin)
    from vla_rl_ros.runtime.control import PANDA_HOME

    np.testing.assert_allclose(obs[SPEC.obs_slice("ee_pos")], kin.fk_pos(PANDA_HOME), atol=1e-6)
    assert np.all(np.isfinite(obs)) and obs.shape == (SPEC.obs_dim,)


def test_missing_empty_truncated_garbage_files(tmp_path):
    assert "file not found" in rejected(tmp_path / "nope.onnx").reason
    assert "not a regular file" in rejected(tmp_path).reason
    assert "no model path" in rejected("").reason
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert "empty" in rejected(empty).reason
    good = om.build(SPEC).SerializeToString()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(good[: len(good) // 2])
    assert "not a loadable ONNX model" in rejected(trunc).reason
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "not a loadable ONNX model" in rejected(garbage).reason


def test_sha256_is_checked_against_the_bytes_loaded(tmp_path):
    p = om.write(tmp_path / "m.onnx", SPEC)
    digest = hashlib.sha256(open(p, "rb").read()).hexdigest()
    assert load_validated(p, digest.upper(), SPEC).sha256 == digest  # case-insensitive
    e = rejected(p, "0" * 64)
    assert "sha256 mismatch" in e.reason and digest in e.reason
    assert "not a 64-digit hex digest" in rejected(p, "abc").reason


def test_spec_metadata_required_and_parsed(tmp_path):
    p = om.write(tmp_path / "nometa.onnx", SPEC, metadata={METADATA_KEY: None})
    assert "carries no 'vla_rl_ros.spec'" in rejected(p).reason
    p = om.write(tmp_path / "badjson.onnx", SPEC, metadata={METADATA_KEY: "{not json"})
    assert "metadata is invalid" in rejected(p).reason
    d = json.loads(SPEC.to_json())
    d["version"] = 99
    p = om.write(tmp_path / "future.onnx", SPEC, metadata={METADATA_KEY: json.dumps(d)})
    assert "not supported" in rejected(p).reason


def test_wrong_spec_lists_exactly_what_differs(tmp_path):
    other = SPEC.replace(max_ee_step=0.03, control_hz=10.0)
    p = om.write(tmp_path / "other.onnx", other)
    e = rejected(p)
    assert e.differences == SPEC.diff(other)
    assert len(e.differences) == 2
    assert "max_ee_step: configured 0.05, model has 0.03" in e.reason
    assert "control_hz: configured 20.0, model has 10.0" in e.reason
    # a spec that changes the layout lists the derived sizes too
    six = SPEC.replace(arm_joints=SPEC.arm_joints[:6])
    e = rejected(om.write(tmp_path / "six.onnx", six))
    assert any(d.startswith("arm_joints:") for d in e.differences)
    assert any(d.startswith("obs_dim:") for d in e.differences)
    # without a configured spec (offline tools) the model's own spec is taken
    assert load_validated(p, None, None).spec == other


def test_wrong_shapes_rejected(tmp_path):
    six = SPEC.replace(arm_joints=SPEC.arm_joints[:6])  # obs_dim 25, but the metadata claims the configured spec
    e = rejected(om.write(tmp_path / "narrow.onnx", six, meta_spec=SPEC))
    assert f"expected [batch, {SPEC.obs_dim}]" in e.reason
    e = rejected(om.write(tmp_path / "wide.onnx", SPEC, "wide"))
    assert "action_dim" in e.reason and "output" in e.reason
    e = rejected(om.write(tmp_path / "batch4.onnx", SPEC, batch=4))
    assert "fixed batch of 4" in e.reason
    assert load_validated(om.write(tmp_path / "batch1.onnx", SPEC, batch=1), None, SPEC).act(
        realistic_observation(SPEC)).shape == (SPEC.action_dim,)


def test_nan_model_rejected(tmp_path):
    e = rejected(om.write(tmp_path / "nan.onnx", SPEC, "nan"))
    assert "non-finite action" in e.reason


def test_version_from_metadata_announcement_or_digest(tmp_path):
    p = om.write(tmp_path / "v.onnx", SPEC, version="v3")
    assert load_validated(p, None, SPEC, expected_version="v3").version == "v3"
    assert "metadata says 'v3'" in rejected(p, expected_version="v4").reason
    q = om.write(tmp_path / "nov.onnx", SPEC, metadata={VERSION_KEY: None})
    assert load_validated(q, None, SPEC, expected_version="cand-9").version == "cand-9"
    assert load_validated(q, None, SPEC).version == sha256_file(q)[:12]


def test_two_inputs_rejected(tmp_path):
    m = om.build(SPEC)
    m.graph.input.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, [1, 2]))
    p = tmp_path / "two.onnx"
    p.write_bytes(m.SerializeToString())
    assert "expected exactly 1" in rejected(p).reason


def test_torch_exported_model_validates(tmp_path):
    """A model from the project's exporter (vla_rl_ros.algos.export) or, without it, torch's legacy exporter."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(SPEC.obs_dim, 64), torch.nn.ReLU(), torch.nn.Linear(64, SPEC.action_dim),
                              torch.nn.Tanh())
    p = tmp_path / "torch.onnx"
    try:
        from vla_rl_ros.algos.export import export_onnx
    except ImportError:
        export_onnx = None
    if export_onnx is not None:
        exported = export_onnx(net, SPEC, p, {"algorithm": "test"}, exporter="torchscript")
        pol = load_validated(str(p), exported.sha256, SPEC, expected_version=exported.version)
        assert pol.version == exported.version and pol.info.lineage["algorithm"] == "test"
    else:
        f = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated
            torch.onnx.export(net, (torch.zeros(1, SPEC.obs_dim),), f, dynamo=False, input_names=["obs"],
                              output_names=["action"], dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}})
        m = onnx.load_from_string(f.getvalue())
        onnx.helper.set_model_props(m, {METADATA_KEY: SPEC.to_json(), VERSION_KEY: "torch-1"})
        p.write_bytes(m.SerializeToString())
        pol = load_validated(str(p), None, SPEC)
    obs = realistic_observation(SPEC)
    with torch.no_grad():
        ref = net(torch.as_tensor(obs)[None]).numpy()[0]
    np.testing.assert_allclose(pol.act(obs), ref, atol=1e-5)
