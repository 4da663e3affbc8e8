"""Relative data paths: share dir (when installed), then the repo root, then the cwd."""
from __future__ import annotations

import os

from vla_rl_ros.graph import repo_root
from vla_rl_ros.runtime.paths import candidates, resolve_path


def test_resolution_order_and_fallback(tmp_path, monkeypatch):
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)  # a source checkout without colcon
    monkeypatch.chdir(tmp_path)
    assert resolve_path("") == "" and resolve_path("/abs/x.onnx") == "/abs/x.onnx"
    assert resolve_path("config/sim.yaml") == os.path.join(repo_root(), "config", "sim.yaml")
    (tmp_path / "only_here.onnx").write_bytes(b"x")
    assert resolve_path("only_here.onnx") == str(tmp_path / "only_here.onnx")
    assert resolve_path("nowhere/m.onnx") == str(tmp_path / "nowhere" / "m.onnx")  # error names a plain path
    assert candidates("m.onnx")[-2:] == [os.path.join(repo_root(), "m.onnx"), str(tmp_path / "m.onnx")]
