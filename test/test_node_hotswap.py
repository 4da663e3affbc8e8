"""Hot swap over /rl/policy_update: bad models are rejected while the incumbent keeps acting; a good
one takes over between two consecutive ticks; a node started without a usable model holds and
accepts one later."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

import onnx_models as om
from ros_helpers import announce, arm_commands, last_diag, results, start_policy_node, steps
from vla_rl_ros.runtime.onnx_policy import sha256_file
from vla_rl_ros.spec import Spec

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
SPEC = Spec()


def test_bad_models_rejected_incumbent_keeps_running_then_good_swap(launch, probe, tmp_path):
    v1 = om.write(tmp_path / "v1.onnx", SPEC, "reach", version="v1")
    proc, arm = start_policy_node(launch, probe, tmp_path, v1)
    probe.wait_for(lambda: any(not s.hold and s.model_version == "v1" for _, s in steps(probe)), 60, "acting with v1")
    pub = probe.publisher("/rl/policy_update", String)

    garbage = tmp_path / "corrupt.onnx"
    garbage.write_bytes(open(v1, "rb").read()[:300])
    wrong = om.write(tmp_path / "wrong.onnx", SPEC.replace(max_ee_step=0.03), "reach", version="bad-spec")
    nan = om.write(tmp_path / "nan.onnx", SPEC, "nan", version="bad-nan")
    cases = [
        ("bad-corrupt", garbage, None, "not a loadable ONNX model"),
        ("bad-spec", wrong, None, "max_ee_step: configured 0.05, model has 0.03"),
        ("bad-nan", nan, None, "non-finite action"),
        ("bad-sha", v1, "f" * 64, "sha256 mismatch"),
        ("bad-missing", tmp_path / "nope.onnx", None, "file not found"),
    ]
    for version, path, sha, reason in cases:
        n_cmd = len(arm_commands(probe))
        t0 = time.monotonic()
        r = announce(probe, pub, {"path": str(path), "sha256": sha, "version": version})
        assert r["accepted"] is False and r["event"] == "rejected" and reason in r["reason"], r
        assert r["running"] == "v1"
        # the incumbent keeps acting: commands keep flowing, steps still carry v1, no hold
        probe.wait_for(lambda: len(arm_commands(probe)) > n_cmd + 5, 10, "commands after a rejection")
        after = [s for t, s in steps(probe) if t > t0]
        assert after and all(s.model_version == "v1" and not s.hold for s in after)
    n = len(results(probe))
    pub.publish(String(data="{not json"))
    probe.wait_for(lambda: len(results(probe)) > n, 10, "a reply to invalid JSON")
    assert "invalid /rl/policy_update message" in results(probe)[-1]["reason"]
    d = probe.wait_for(lambda: last_diag(probe), 10, "diagnostics")
    assert proc.alive and d["model_version"] == "v1"

    # a good model: installed, then used from the very next tick
    v2 = om.write(tmp_path / "v2.onnx", SPEC, "mlp", version="v2")
    r = announce(probe, pub, {"path": str(v2), "sha256": sha256_file(v2), "version": "v2"})
    assert r["accepted"] is True and r["event"] == "swapped" and r["previous"] == "v1" and r["sha256"] == sha256_file(v2)
    first = probe.wait_for(lambda: next((x for x in results(probe) if x.get("event") == "first_command"
                                         and x["version"] == "v2"), None), 10, "first_command for v2")
    probe.wait_for(lambda: sum(s.model_version == "v2" for _, s in steps(probe)) > 5, 10, "steps from v2")
    seq = [s for _, s in steps(probe)]
    k = next(i for i, s in enumerate(seq) if s.model_version == "v2")
    before, after = seq[k - 1], seq[k]
    assert before.model_version == "v1" and after.tick == before.tick + 1, "a tick was lost at the swap"
    assert not before.hold and not after.hold
    assert first["tick"] == after.tick and first["cmd_stamp_s"] == pytest.approx(after.cmd_stamp, abs=1e-6)
    assert all(s.model_version == "v2" for s in seq[k:])
    ticks = [s.tick for s in seq]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), "gap in /rl/step ticks"
    probe.wait_for(lambda: last_diag(probe)["model_version"] == "v2", 10, "v2 in diagnostics")


def test_startup_without_a_usable_model_holds_then_accepts_one(launch, probe, tmp_path):
    proc, arm = start_policy_node(launch, probe, tmp_path, str(tmp_path / "missing.onnx"))
    d = probe.wait_for(lambda: (lambda d: d if d and d["watchdog"].startswith("no model") else None)(last_diag(probe)),
                       60, "diagnostics reporting the missing model")
    assert "file not found" in d["model_error"] and d["_level"] == 2 and d["model_version"] == ""
    probe.wait_for(lambda: len(arm_commands(probe)) >= 5, 20, "hold commands")
    for c in arm_commands(probe)[-5:]:
        np.testing.assert_array_equal(c, arm.positions[:7])
    holds = [s for _, s in steps(probe)]
    assert holds and all(s.hold and s.model_version == "" for s in holds)

    good = om.write(tmp_path / "late.onnx", SPEC, "reach", version="late-1")
    r = announce(probe, probe.publisher("/rl/policy_update", String), {"path": str(good), "sha256": None, "version": "late-1"})
    assert r["accepted"] and r["previous"] is None
    probe.wait_for(lambda: any(not s.hold and s.model_version == "late-1" for _, s in steps(probe)), 20,
                   "acting with the late model")
    probe.wait_for(lambda: last_diag(probe)["watchdog"] == "ok", 10, "watchdog ok")
    assert proc.alive


def test_sim_config_loads_its_relative_model_path(launch, probe, tmp_path):
    """config/sim.yaml as shipped: a relative model_path, resolved by the node (share dir, repo root, cwd)."""
    from conftest import REPO, load_config

    rel = load_config("sim.yaml")["policy_node"]["ros__parameters"]["model_path"]
    if not os.path.isfile(os.path.join(REPO, rel)):
        pytest.skip(f"{rel} is not in this checkout")
    from vla_rl_ros.runtime.onnx_policy import load_validated

    want = load_validated(os.path.join(REPO, rel), None, None).version
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    launch("policy_node", os.path.join(REPO, "config", "sim.yaml"))
    d = probe.wait_for(lambda: (lambda d: d if d and d["model_version"] else None)(last_diag(probe)), 60,
                       "the configured model in diagnostics")
    assert d["model_version"] == want and d["model_path"] == os.path.join(REPO, rel)
