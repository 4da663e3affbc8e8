"""A full disk under the live graph (twin + policy + recorder, the run folder on a small tmpfs): the recorder's
diagnostic goes ERROR saying so, the policy keeps commanding the arm, and recording resumes when space returns,
with an intact store. And the live recorder's segments (segment_max_s), read back together by Replay."""
from __future__ import annotations

import os
import sqlite3

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray

from conftest import REPO, params_file
from disk import fill, small_tmpfs
from ros_helpers import diag

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
REACH_MODEL = os.path.join(REPO, "models", "reach_bc.onnx")
ERROR = int.from_bytes(DiagnosticStatus.ERROR, "little") if isinstance(DiagnosticStatus.ERROR, bytes) else 2


def _recorder(probe, pred=lambda d: True):
    """The newest recorder diagnostic, if it satisfies ``pred``."""
    out = [diag(m) for _, m in probe.get("/diagnostics") if m.status and m.status[0].name.endswith("recorder")]
    return out[-1] if out and pred(out[-1]) else None


def test_a_full_disk_pauses_recording_with_an_error_and_the_policy_keeps_going(launch, probe, tmp_path):
    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    probe.collect("/arm_controller/commands", Float64MultiArray)
    with small_tmpfs(tmp_path / "fs", "6m") as fs:
        run_dir = fs / "run"
        params = params_file(tmp_path / "sim.yaml", twin_node={"seed": 11, "task": "reach"},
                             policy_node={"model_path": REACH_MODEL, "task": "reach"},
                             recorder_node={"run_dir": str(run_dir), "task": "reach", "twin_reset": True,
                                            "max_pending_steps": 100_000})
        launch("twin_node", params)
        launch("policy_node", params)
        recorder = launch("recorder_node", params)
        ok = probe.wait_for(lambda: _recorder(probe, lambda d: int(d["committed"]) > 20), 120, "steps committed")
        assert ok["_level"] == 0 and ok["disk_full"] == "False"

        filler = fill(fs)
        err = probe.wait_for(lambda: _recorder(probe, lambda d: d["_level"] == ERROR), 120,
                             "the recorder's ERROR diagnostic")
        assert err["disk_full"] == "True" and "disk full" in err["_message"]
        assert "full" in err["_message"] and "retrying until space returns" in err["_message"]
        committed_when_full = int(err["committed"])
        # the policy node does not depend on the recorder: it goes on commanding the arm
        n = len(probe.get("/arm_controller/commands"))
        probe.wait_for(lambda: len(probe.get("/arm_controller/commands")) >= n + 40, 30, "commands while full")
        pending = probe.wait_for(lambda: _recorder(probe, lambda d: int(d["pending"]) > 0 and d["_level"] == ERROR),
                                 30, "steps waiting in memory")
        assert int(pending["dropped_steps"]) == 0  # far from the cap
        assert recorder.alive

        filler.unlink()  # space returns
        back = probe.wait_for(lambda: _recorder(probe, lambda d: d["_level"] != ERROR
                                                and int(d["committed"]) > committed_when_full + 20), 60,
                              "recording resumed")
        assert back["disk_full"] == "False" and back["dropped_steps"] == "0"
        assert "recording resumed" in recorder.log() and "disk full" in recorder.log()
        assert recorder.stop() == 0
        store = run_dir / "buffer.sqlite"
        con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            n_steps = con.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
            assert n_steps >= int(back["committed"]) > committed_when_full
            assert con.execute("SELECT COUNT(*) FROM episodes WHERE ended_at IS NULL").fetchone()[0] == 0
        finally:
            con.close()


def test_the_recorder_rolls_over_to_new_segments_that_replay_reads_together(launch, probe, tmp_path):
    from std_msgs.msg import String

    from vla_rl_ros.buffer import Replay, list_segments

    probe.collect("/diagnostics", DiagnosticArray, RELIABLE)
    probe.collect("/rl/episode", String, RELIABLE)
    run_dir = tmp_path / "run"
    params = params_file(tmp_path / "sim.yaml", twin_node={"seed": 11, "task": "reach"},
                         policy_node={"model_path": REACH_MODEL, "task": "reach"},
                         recorder_node={"run_dir": str(run_dir), "task": "reach", "twin_reset": True,
                                        "segment_max_s": 1.0})
    launch("twin_node", params)
    launch("policy_node", params)
    recorder = launch("recorder_node", params)
    probe.wait_for(lambda: _recorder(probe, lambda d: int(d["segment"]) >= 2), 120, "a third segment")
    assert recorder.stop() == 0
    segments = list_segments(run_dir / "buffer.sqlite")
    assert len(segments) >= 3
    with Replay([run_dir]) as replay:
        replay.refresh()
        episodes = replay.episodes()
        assert [e.id for e in episodes] == list(range(1, len(episodes) + 1))  # whole, in order, across segments
        assert len({e.store for e in episodes}) >= 2
        assert sum(len(e) for e in episodes) == len(replay)
