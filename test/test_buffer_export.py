"""MCAP export read back with mcap.reader + mcap_ros2.decoder, and the `data` CLI verb."""
import argparse
import json
import math

import numpy as np
import pytest

from vla_rl_ros.buffer import create_run, export_mcap
from vla_rl_ros.commands import data as data_cmd
from vla_rl_ros.spec import Spec

SPEC = Spec(task="pick_place")


@pytest.fixture
def run(tmp_path):
    run = create_run(tmp_path / "runs", "arm", SPEC, robot_id="arm-1")
    rng = np.random.default_rng(0)
    steps = []
    with run.writer(frame_format="png") as w:
        for ep in range(2):
            w.begin_episode(reward_config={"name": "reach"}, seed=ep)
            for t in range(4):
                o, o2 = rng.normal(size=(2, SPEC.obs_dim)).astype(np.float32)
                a = rng.uniform(-1, 1, SPEC.action_dim).astype(np.float32)
                stamp = None if t == 0 else 1000.0 + t
                w.add_step(o, a, float(t) - 0.5, o2, model_version=f"v{ep}", intervention=t == 2,
                           obs_stamp=stamp, cmd_stamp=stamp and stamp + 0.01, terminated=ep == 0 and t == 3)
                steps.append((ep, t, o, a, o2, float(t) - 0.5, stamp, t == 2))
            img = rng.integers(0, 255, (8, 12, 3), dtype=np.uint8)
            w.add_frame(img)
            w.end_episode("success" if ep == 0 else "timeout")
    return run, steps, img


def read_mcap(path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        meta = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
        for schema, channel, message, msg in reader.iter_decoded_messages(log_time_order=False):
            out.setdefault(channel.topic, []).append((schema.name, message, msg))
    return out, meta


def test_mcap_round_trip(run, tmp_path):
    import cv2

    run, steps, last_img = run
    out = tmp_path / "out.mcap"
    counts = export_mcap(run, out)
    assert counts == {"/rl/step": 8, "/rl/transition": 8, "/rl/episode": 2, "/camera/image_raw/compressed": 2}
    msgs, meta = read_mcap(out)
    assert json.loads(meta["vla_rl_ros.store"]["spec"]) == SPEC.to_dict()
    assert meta["vla_rl_ros.store"]["robot_id"] == "arm-1"
    od, ad = SPEC.obs_dim, SPEC.action_dim

    assert len(msgs["/rl/step"]) == 8
    for (schema, message, msg), (ep, t, o, a, o2, r, stamp, interv) in zip(msgs["/rl/step"], steps):
        assert schema == "std_msgs/msg/Float64MultiArray"
        dims = [(d.label, d.size) for d in msg.layout.dim]
        assert dims == [("obs", od), ("action", ad), ("meta", 9), (f"model:v{ep}", 0)]
        data = np.array(msg.data)
        np.testing.assert_array_equal(data[:od], o)
        np.testing.assert_array_equal(data[od:od + ad], a)
        tick, obs_st, cmd_st, intervention, hold, rate, c_seq, c_step, f_st = data[od + ad:]
        assert (c_seq, c_step, f_st) == (-1.0, -1.0, 0.0)  # a per-tick model's steps: no chunk
        assert (tick, intervention, hold, rate) == (t, float(interv), 0.0, SPEC.control_hz)
        if stamp is None:
            assert math.isnan(obs_st) and math.isnan(cmd_st)
        else:
            assert obs_st == stamp and cmd_st == pytest.approx(stamp + 0.01)

    for (_, message, msg), (ep, t, o, a, o2, r, stamp, interv) in zip(msgs["/rl/transition"], steps):
        assert [d.label for d in msg.layout.dim] == ["obs", "action", "next_obs", "info"]
        data = np.array(msg.data)
        np.testing.assert_array_equal(data[od + ad:2 * od + ad], o2)
        eid, tt, rew, term, trunc, iv = data[2 * od + ad:]
        assert (eid, tt, rew, iv) == (ep + 1, t, r, float(interv))
        assert (term, trunc) == ((1.0, 0.0) if (ep, t) == (0, 3) else (0.0, 1.0) if t == 3 else (0.0, 0.0))

    eps = [json.loads(m[2].data) for m in msgs["/rl/episode"]]
    assert [(e["seed"], e["success"], e["end_reason"], e["length"], e["model_versions"]) for e in eps] == [
        (0, True, "success", 4, ["v0"]), (1, False, "timeout", 4, ["v1"])]
    assert eps[0]["reward_config"] == {"name": "reach"} and eps[0]["episode_return"] == pytest.approx(4.0)

    schema, message, img_msg = msgs["/camera/image_raw/compressed"][-1]
    assert schema == "sensor_msgs/msg/CompressedImage" and img_msg.format == "png"
    assert img_msg.header.stamp.sec > 0
    decoded = cv2.imdecode(np.frombuffer(bytes(img_msg.data), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded[..., ::-1], last_img)

    counts = export_mcap(run.buffer_path, tmp_path / "noframes.mcap", frames=False)
    assert counts["/camera/image_raw/compressed"] == 0


def _cli(argv):
    parser = argparse.ArgumentParser()
    data_cmd.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_data_cli(run, tmp_path, capsys):
    run, _, _ = run
    assert _cli(["data", "stats", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "| v0 | 1 | 1/1 (100%)" in out and "| v1 | 1 | 0/1 (0%)" in out
    assert _cli(["data", "stats", "--json", str(run.path.parent)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["totals"]["steps"] == 8 and st["totals"]["frames"] == 2
    out_file = tmp_path / "x.mcap"
    assert _cli(["data", "export", str(run.path), "--format", "mcap", "--out", str(out_file)]) == 0
    assert out_file.stat().st_size > 0 and "/rl/step 8" in capsys.readouterr().out
    assert _cli(["data", "stats", str(tmp_path / "missing")]) == 1
    assert "no such store" in capsys.readouterr().err
