"""ONNX export: parity with PyTorch, metadata round trip, dynamic batch, atomic writes."""
import json
import os
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from vla_rl_ros.algos.export import (
    INPUT_NAME,
    LINEAGE_FIELDS,
    OUTPUT_NAME,
    VERSION_KEY,
    export_onnx,
    read_model_metadata,
    sha256_file,
)
from vla_rl_ros.algos.recap import RecapConfig, RecapTrainer
from vla_rl_ros.algos.sac import SAC, SACConfig
from vla_rl_ros.spec import LINEAGE_KEY, METADATA_KEY, Spec, SpecError

torch.set_num_threads(1)

SPEC = Spec(task="pick_place")


def _sac_policy():
    sac = SAC(SPEC.obs_dim, SPEC.action_dim, SACConfig(hidden=(64, 64), seed=1))
    rng = np.random.default_rng(0)
    sac.fit_obs_normalizer(rng.normal(0.3, 0.2, size=(500, SPEC.obs_dim)))
    with torch.no_grad():  # a non-trivial actor (untrained ones are nearly constant)
        for p in sac.actor.parameters():
            p.mul_(3.0)
    return sac.policy_module()


def _session(path):
    return ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])


def _parity(module, path, batch):
    obs = np.random.default_rng(batch).normal(0.3, 0.5, size=(batch, SPEC.obs_dim)).astype(np.float32)
    got = _session(path).run([OUTPUT_NAME], {INPUT_NAME: obs})[0]
    with torch.no_grad():
        want = module(torch.from_numpy(obs)).numpy()
    assert got.shape == (batch, SPEC.action_dim) and got.dtype == np.float32
    return float(np.abs(got - want).max()), got


def test_sac_policy_export_parity_and_metadata(tmp_path):
    policy = _sac_policy()
    path = tmp_path / "models" / "sac.onnx"
    lineage = {"algorithm": "sac", "parent_version": "bc-20260101T000000Z-deadbeef", "data_range": [0, 5000],
               "training_steps": 5000, "twin_success_at_gate": 0.85}
    res = export_onnx(policy, SPEC, path, lineage)

    for batch in (1, 7, 256):  # dynamic batch dimension
        err, out = _parity(policy, path, batch)
        assert err <= 1e-5
        assert np.all(np.abs(out) <= 1.0)

    spec, lin, version = read_model_metadata(path)
    assert spec == SPEC and spec.diff(SPEC) == []
    for k, v in lineage.items():
        assert lin[k] == v
    assert set(LINEAGE_FIELDS) <= set(lin) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lin["created"])
    assert version == res.version and re.fullmatch(r"sac-\d{8}T\d{6}Z-[0-9a-f]{8}", version)
    assert version.endswith(lin["weights_sha256"][:8])
    assert res.sha256 == sha256_file(path)

    m = onnx.load(os.fspath(path))
    props = {p.key: p.value for p in m.metadata_props}
    assert Spec.from_json(props[METADATA_KEY]) == SPEC and json.loads(props[LINEAGE_KEY])["algorithm"] == "sac"
    assert props[VERSION_KEY] == version
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in m.graph.input] == [INPUT_NAME] and [o.name for o in m.graph.output] == [OUTPUT_NAME]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == SPEC.obs_dim
    assert sorted(os.listdir(path.parent)) == ["sac.onnx"]  # single file, no temp or external data left


def test_guided_recap_policy_export_with_legacy_exporter(tmp_path):
    t = RecapTrainer(SPEC.obs_dim, SPEC.action_dim, RecapConfig(hidden=(32, 32), seed=2))
    with torch.no_grad():
        for p in t.actor.parameters():
            p.mul_(3.0)
    module = t.export_module(cfg_weight=1.7)
    path = tmp_path / "recap.onnx"
    export_onnx(module, SPEC, path, {"algorithm": "recap"}, exporter="torchscript")
    err, _ = _parity(module, path, 33)
    assert err <= 1e-5
    assert read_model_metadata(path)[2].startswith("recap-")


def test_output_is_clamped_to_the_action_range(tmp_path):
    class Wild(nn.Module):  # a module that ignores the convention
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(SPEC.obs_dim, SPEC.action_dim)

        def forward(self, obs):
            return 100.0 * self.lin(obs)

    path = tmp_path / "wild.onnx"
    export_onnx(Wild(), SPEC, path, {"algorithm": "test"}, exporter="torchscript")
    out = _session(path).run(None, {INPUT_NAME: np.full((4, SPEC.obs_dim), 5.0, np.float32)})[0]
    assert out.min() >= -1.0 and out.max() <= 1.0 and np.abs(out).max() == 1.0


def test_failed_export_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "policy.onnx"
    export_onnx(_sac_policy(), SPEC, path, {"algorithm": "sac"}, exporter="torchscript")
    before = path.read_bytes()

    wrong_out = nn.Sequential(nn.Linear(SPEC.obs_dim, SPEC.action_dim + 1), nn.Tanh())
    with pytest.raises(SpecError, match="action_dim|spec needs"):
        export_onnx(wrong_out, SPEC, path, {"algorithm": "sac"})
    wrong_in = nn.Sequential(nn.Linear(SPEC.obs_dim + 3, SPEC.action_dim), nn.Tanh())
    with pytest.raises(SpecError):
        export_onnx(wrong_in, SPEC, path, {"algorithm": "sac"})

    class NotExportable(nn.Module):  # passes the eager sanity check, then breaks in every exporter
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, obs):
            self.calls += 1
            if self.calls > 1:
                raise NotImplementedError("no ONNX for this op")
            return torch.tanh(obs[:, : SPEC.action_dim])

    with pytest.raises(RuntimeError, match="export failed"):
        export_onnx(NotExportable(), SPEC, path, {"algorithm": "sac"})

    class Diverges(nn.Module):  # exports fine, but the graph computes something else
        def forward(self, obs):
            out = torch.tanh(obs[:, : SPEC.action_dim])
            return out * 0.5 if torch.onnx.is_in_onnx_export() else out

    with pytest.raises(RuntimeError, match="disagrees"):
        export_onnx(Diverges(), SPEC, path, {"algorithm": "sac"}, exporter="torchscript")
    with pytest.raises(ValueError, match="JSON"):
        export_onnx(_sac_policy(), SPEC, path, {"algorithm": "sac", "bad": object()})

    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["policy.onnx"]


def test_read_metadata_refuses_foreign_models(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(nn.Linear(3, 2), (torch.zeros(1, 3),), os.fspath(path), dynamo=False)
    with pytest.raises(SpecError, match="lacks"):
        read_model_metadata(path)
