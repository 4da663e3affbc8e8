"""`data export` carries a run's preference labels on /rl/preference."""
import argparse
import json

import numpy as np

from vla_rl_ros.buffer import create_run, export_mcap
from vla_rl_ros.commands import data as data_cmd
from vla_rl_ros.preferences.store import PreferenceStore, Segment
from vla_rl_ros.spec import Spec

SPEC = Spec(task="reach")


def _run(tmp_path):
    run = create_run(tmp_path / "runs", "arm", SPEC)
    with run.writer() as w:
        for ep in range(2):
            w.begin_episode(reward_config={"name": "reach"}, seed=ep)
            for t in range(3):
                o = np.full(SPEC.obs_dim, t, np.float32)
                w.add_step(o, np.zeros(SPEC.action_dim, np.float32), 0.0, o + 1, model_version="v")
            w.end_episode("timeout")
    return run


def _read(path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = {}
    with open(path, "rb") as f:
        for _, channel, message, msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            out.setdefault(channel.topic, []).append((message.log_time, msg))
    return out


def test_export_has_preferences(tmp_path):
    run = _run(tmp_path)
    counts = export_mcap(run, tmp_path / "none.mcap")
    assert "/rl/preference" not in counts  # a run without labels: the channel is absent
    a, b = Segment("s", "arm", 1, 0, 3), Segment("s", "arm", 2, 1, 3)
    with PreferenceStore(run.path) as s:
        p1 = s.add(a, b, "right", "alice", created_at=1000.5)
        p2 = s.add(b, a, "skip", "bob", info={"why": "occluded"}, created_at=1001.0)
    counts = export_mcap(run, tmp_path / "x.mcap")
    assert counts["/rl/preference"] == 2 and counts["/rl/step"] == 6
    msgs = _read(tmp_path / "x.mcap")["/rl/preference"]
    got = [json.loads(m.data) for _, m in msgs]
    assert [g["uid"] for g in got] == [p1.uid, p2.uid]
    assert got[0]["left"] == {"store": "s", "run": "arm", "episode": 1, "t0": 0, "t1": 3} and got[0]["label"] == "right"
    assert got[1]["info"] == {"why": "occluded"} and got[1]["labeller"] == "bob"
    assert [t for t, _ in msgs] == [1000_500_000_000, 1001_000_000_000]
    # and through the CLI verb
    parser = argparse.ArgumentParser()
    data_cmd.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["data", "export", str(run.path), "--out", str(tmp_path / "y.mcap")])
    assert args.func(args) == 0
    assert len(_read(tmp_path / "y.mcap")["/rl/preference"]) == 2
