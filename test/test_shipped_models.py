"""The shipped models: reach ≥ 90 % over 50 seeded twin episodes, specs and lineage inside, cards that match."""
import os
import re
import subprocess
import sys

import pytest

from vla_rl_ros.algos.export import read_model_metadata, sha256_file
from vla_rl_ros.graph import repo_root
from vla_rl_ros.spec import Spec

MODELS = os.path.join(repo_root(), "models")


def test_reach_model_succeeds_in_90_percent_via_the_cli():
    out = subprocess.run([sys.executable, "-m", "vla_rl_ros.cli", "eval", "--model", os.path.join(MODELS, "reach_bc.onnx"),
                          "--task", "reach", "--episodes", "50", "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    import json

    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["episodes"] == 50 and res["success_rate"] >= 0.9


@pytest.mark.parametrize("task", ["reach", "pick_place"])
def test_models_carry_spec_lineage_and_match_their_cards(task):
    path = os.path.join(MODELS, f"{task}_bc.onnx")
    spec, lineage, version = read_model_metadata(path)
    assert spec == Spec(task=task)
    assert lineage["algorithm"] == "bc" and lineage["training_steps"] > 0
    assert 0.0 <= lineage["twin_success_at_gate"]["rate"] <= 1.0
    card = open(os.path.join(MODELS, f"{task}_bc.md")).read()
    assert sha256_file(path) in card and version in card
    rate = float(re.search(r"\*\*([\d.]+)%\*\* over", card).group(1))
    assert rate == pytest.approx(100 * lineage["twin_success_at_gate"]["rate"], abs=0.05)


def test_eval_refuses_a_bad_model_clearly(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    out = subprocess.run([sys.executable, "-m", "vla_rl_ros.cli", "eval", "--model", str(bad), "--episodes", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "error" in out.stderr and "Traceback" not in out.stderr


def test_the_chunked_model_carries_its_chunk_spec_and_matches_its_card():
    path = os.path.join(MODELS, "pick_place_chunk_bc.onnx")
    spec, lineage, version = read_model_metadata(path)
    assert spec == Spec(task="pick_place", chunk_len=5) and spec.vla_shaped
    assert lineage["algorithm"] == "chunk_bc" and lineage["recipe"]["execution"] == "receding"
    card = open(os.path.join(MODELS, "pick_place_chunk_bc.md")).read()
    assert sha256_file(path) in card and version in card and "chunk of **5 actions**" in card
    rate = float(re.search(r"\*\*([\d.]+)%\*\* over", card).group(1))
    assert rate == pytest.approx(100 * lineage["twin_success_at_gate"]["rate"], abs=0.05)
