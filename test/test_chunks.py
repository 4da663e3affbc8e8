"""Action chunks (runtime/chunks.py), the VLA spec fields and the chunked ONNX contract, without ROS."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import onnx_models as om
from vla_rl_ros.runtime.chunks import ChunkExecutor, Sample
from vla_rl_ros.runtime.images import frame_array, prepare
from vla_rl_ros.runtime.onnx_policy import ModelRejected, load_validated
from vla_rl_ros.spec import ImageSpec, Spec, SpecError, spec_from_params


def ramp(K: int, A: int = 2) -> np.ndarray:
    """Chunk step k's actions are all ``-1 + 2k/(K-1)``: the step can be read back from the action."""
    return np.repeat(np.linspace(-1.0, 1.0, K)[:, None], A, axis=1)


def test_receding_executes_the_step_of_the_tick_time_interpolated_and_skips_the_inference_latency():
    ex = ChunkExecutor(5, 10.0, 2)  # 5 steps, 0.1 s apart: covers 0.5 s from its observation
    out, info = np.zeros(2), Sample()
    assert not ex.sample(0.0, out), "no chunk yet must hold"
    ex.submit(ramp(5), t0=10.0, frame_stamp=9.99)
    # at its observation time: step 0; a quarter step later: a quarter of the way to step 1
    assert ex.sample(10.0, out, info) and out == pytest.approx([-1.0, -1.0])
    assert (info.seq, info.step, info.frame_stamp) == (1, 0.0, 9.99)
    assert ex.sample(10.025, out, info) and out == pytest.approx([-0.875, -0.875]) and info.step == pytest.approx(0.25)
    # a tick 0.23 s after the observation (the inference took that long): step 2.3, not step 0
    assert ex.sample(10.23, out, info) and out[0] == pytest.approx(-1.0 + 0.5 * 2.3) and int(info.step) == 2
    # the last step holds its value until the chunk's horizon, then nothing: no stale step is repeated
    assert ex.sample(10.45, out) and out == pytest.approx([1.0, 1.0])
    assert not ex.sample(10.5, out) and not ex.sample(11.0, out)
    # without interpolation: the step's own action
    ex2 = ChunkExecutor(5, 10.0, 2, interpolate=False)
    ex2.submit(ramp(5), t0=0.0)
    assert ex2.sample(0.19, out) and out == pytest.approx([-0.5, -0.5])


def test_receding_a_new_chunk_replaces_the_rest_of_the_old_one():
    ex = ChunkExecutor(4, 10.0, 1)
    ex.submit(np.full((4, 1), -1.0), t0=0.0)
    ex.submit(np.full((4, 1), 0.5), t0=0.2)
    out, info = np.zeros(1), Sample()
    assert ex.sample(0.25, out, info) and out[0] == 0.5 and info.seq == 2 and info.step == pytest.approx(0.5)
    assert not ex.sample(0.61, out), "the newest chunk ran out: hold, even though nothing newer came"


def test_ensemble_weighs_every_covering_chunk_as_act_does():
    m = 0.5
    ex = ChunkExecutor(4, 10.0, 1, mode="ensemble", ensemble_decay=m, interpolate=False)
    ex.submit(np.full((4, 1), 1.0), t0=0.0)
    ex.submit(np.full((4, 1), -1.0), t0=0.1)
    ex.submit(np.full((4, 1), 0.0), t0=0.2)
    out = np.zeros(1)
    # at 0.25 all three cover the tick; weights exp(-m i), i = 0 for the oldest
    w = np.exp(-m * np.arange(3))
    assert ex.sample(0.25, out) and out[0] == pytest.approx(float(w @ [1.0, -1.0, 0.0] / w.sum()))
    # at 0.35 the oldest (0.0 .. 0.4) still covers; at 0.45 only the two newer ones do
    w2 = np.exp(-m * np.arange(2))
    assert ex.sample(0.45, out) and out[0] == pytest.approx(float(w2 @ [-1.0, 0.0] / w2.sum()))
    assert not ex.sample(0.65, out)


def test_submit_clips_and_refuses_non_finite_chunks_and_clear_forgets():
    ex = ChunkExecutor(2, 10.0, 2)
    with pytest.raises(ValueError):
        ex.submit(np.array([[0.0, np.nan], [0.0, 0.0]]), t0=0.0)
    ex.submit(np.array([[3.0, -3.0], [0.0, 0.0]]), t0=0.0)
    out = np.zeros(2)
    assert ex.sample(0.0, out) and out.tolist() == [1.0, -1.0]
    ex.clear()
    assert not ex.sample(0.0, out) and math.isinf(ex.steps_done(0.0))


def vla_spec(**kw) -> Spec:
    return Spec(images=(ImageSpec(name="wrist", topic="/wrist/image_raw", height=32, width=48, crop=(0, 8, 48, 64)),),
                instructions=("pick the cube", "push the cube"), chunk_len=8, chunk_hz=40.0, **kw)


def test_the_vla_spec_round_trips_and_a_state_specs_json_is_unchanged():
    s = vla_spec()
    assert Spec.from_json(s.to_json()) == s and s.vla_shaped and s.chunk_rate_hz == 40.0
    d = json.loads(Spec().to_json())
    assert not {"images", "instructions", "chunk_len", "chunk_hz"} & set(d) and d["image"] is None
    assert Spec.from_json(Spec().to_json()) == Spec() and not Spec().vla_shaped
    # the legacy single camera field reads as one image
    legacy = dict(d, image={"height": 84, "width": 84, "encoding": "bgr8"})
    assert Spec.from_dict(legacy).images == (ImageSpec(encoding="bgr8"),)
    diffs = Spec().diff(s)
    assert any(x.startswith("chunk_len: configured 1, model has 8") for x in diffs)
    assert s.instruction_index(" push the cube ") == 1 and s.instruction_index("push") == -1


@pytest.mark.parametrize("bad", [
    {"chunk_len": 0}, {"chunk_len": 2.5}, {"chunk_hz": -1.0}, {"instructions": ["a", "a"]}, {"instructions": [""]},
    {"images": [{"name": "a b"}]}, {"images": [{"name": "a"}, {"name": "a"}]}, {"images": [{"crop": [0, 0, 0, 5]}]},
    {"images": [{"encoding": "mono8"}]}, {"images": [{"height": 84.5}]}, {"images": [{"colour": 1}]},
    {"images": {"name": "a"}},
])
def test_malformed_vla_fields_are_refused_with_a_reason(bad):
    with pytest.raises(SpecError):
        Spec.from_dict({**json.loads(Spec().to_json()), **bad})


def test_vla_fields_from_flat_parameters():
    s = spec_from_params({"images": ["wrist"], "image.wrist.topic": "/wrist/image_raw", "image.wrist.height": 32,
                          "image.wrist.width": 48, "image.wrist.crop": [0, 8, 48, 64],
                          "instructions": ["pick the cube", "push the cube"], "chunk_len": 8, "chunk_hz": 40.0})
    assert s == vla_spec()


def test_a_chunked_image_model_loads_and_its_chunk_and_inputs_reach_it(tmp_path):
    s = vla_spec()
    pol = load_validated(om.write_chunk(tmp_path / "c.onnx", s, image_gain=1.0), None, s)
    assert pol.chunked and pol.chunk_len == 8
    obs = np.zeros(s.obs_dim, np.float32)
    pol.image_input("wrist")[:] = 255  # a white frame adds 1.0 to the gripper ramp
    y = pol.act_chunk(obs, instruction=1)
    assert y.shape == (8, s.action_dim)
    expect = np.clip(np.linspace(-1.0, 1.0, 8) + 0.25 + 1.0, -1, 1)
    np.testing.assert_allclose(y[:, -1], expect, atol=1e-6)
    pol.image_input("wrist")[:] = 0
    np.testing.assert_allclose(pol.act_chunk(obs, instruction=0)[:, -1], np.linspace(-1.0, 1.0, 8), atol=1e-6)


def test_a_model_whose_inputs_differ_from_the_vla_spec_is_refused(tmp_path):
    s = vla_spec()
    other = Spec(chunk_len=8, chunk_hz=40.0)  # the same chunk, no camera, no instruction: other inputs
    bad = om.write_chunk(tmp_path / "b.onnx", other)
    with pytest.raises(ModelRejected, match="spec differs"):
        load_validated(bad, None, s)
    # metadata that claims the camera, a graph without it
    import onnx

    m = om.build_chunk(other)
    onnx.helper.set_model_props(m, {"vla_rl_ros.spec": s.to_json()})
    p = tmp_path / "lie.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ModelRejected, match="inputs"):
        load_validated(str(p), None, s)


def test_frames_are_cropped_resized_and_turned_rgb_channels_first():
    im = ImageSpec(name="c", height=2, width=2, encoding="bgr8", crop=(1, 2, 4, 4))
    h, w = 6, 8
    frame = np.zeros((h, w, 3), np.uint8)
    frame[1:3, 2:4] = (10, 20, 30)  # the crop's top-left quarter, in BGR
    step = w * 3 + 4  # rows padded, as some drivers publish
    buf = np.zeros((h, step), np.uint8)
    buf[:, : w * 3] = frame.reshape(h, w * 3)
    arr = frame_array(buf.tobytes(), h, w, step)
    x = prepare(arr, im, "bgr8")
    assert x.shape == (3, 2, 2) and x.dtype == np.uint8
    assert x[:, 0, 0].tolist() == [30, 20, 10] and x[:, 1, 1].tolist() == [0, 0, 0]


def test_the_recorder_stores_each_transitions_chunk_step_and_frame_and_old_stores_gain_the_columns(tmp_path):
    import sqlite3

    from vla_rl_ros.buffer import Writer, connect, create_store
    from vla_rl_ros.recorder import EpisodeRecorder, RecorderConfig
    from vla_rl_ros.rewards import make_reward
    from vla_rl_ros.stepmsg import StepRecord

    spec = Spec(task="reach")
    path = tmp_path / "buffer.sqlite"
    create_store(path, spec)
    con = sqlite3.connect(path)  # a store made before the chunk columns existed
    for c in ("chunk_seq", "chunk_step", "frame_stamp"):
        con.execute(f"ALTER TABLE steps DROP COLUMN {c}")
    con.close()
    w = Writer(path, spec=spec, commit_window_s=0.05)
    rec = EpisodeRecorder(w, spec, make_reward({"name": "reach"}, spec),
                          RecorderConfig(task="reach", max_episode_s=100.0, settle_s=0.0))
    rec.arm(seed=1, not_before=0.0)
    obs = np.zeros(spec.obs_dim, np.float32)
    obs[spec.obs_slice("goal_pos")] = obs[spec.obs_slice("ee_to_goal")] = 0.3  # far from the goal: no success
    for k in range(6):
        chunked = k < 4  # then a per-tick model's steps (no chunk)
        rec.on_step(StepRecord(obs=obs, action=np.zeros(spec.action_dim, np.float32), tick=k + 1,
                               obs_stamp=1e9 + k, cmd_stamp=1e9 + k, intervention=False, hold=False,
                               control_rate_hz=20.0, model_version="c1", chunk_seq=3 if chunked else -1,
                               chunk_step=0.5 * k if chunked else -1.0, frame_stamp=1e9 - 0.05 if chunked else 0.0))
    w.flush()
    rows = connect(path, readonly=True).execute("SELECT t, chunk_seq, chunk_step, frame_stamp FROM steps ORDER BY t"
                                                ).fetchall()
    w.close()
    assert rows[:3] == [(0, 3, 0.0, 1e9 - 0.05), (1, 3, 0.5, 1e9 - 0.05), (2, 3, 1.0, 1e9 - 0.05)]
    assert len(rows) == 5, (rows, rec.counters)
    assert rows[3][:2] == (3, 3) and rows[4] == (4, None, None, None), rows


def test_chunk_targets_are_the_next_k_actions_masked_past_the_end():
    from vla_rl_ros.algos.chunk_bc import chunk_targets

    a = np.arange(8, dtype=np.float32).reshape(4, 2)
    y, m = chunk_targets(a, 3)
    assert y.shape == (4, 3, 2) and m.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert y[1].tolist() == [[2, 3], [4, 5], [6, 7]] and y[3].tolist() == [[6, 7]] * 3


def test_an_exported_image_chunk_policy_matches_torch_through_the_node_path(tmp_path):
    import torch

    from vla_rl_ros.algos.chunk_bc import ChunkPolicyNet
    from vla_rl_ros.algos.export import export_onnx

    s = vla_spec()
    torch.manual_seed(0)
    net = ChunkPolicyNet(s, hidden=(64,)).eval()
    path = export_onnx(net, s, tmp_path / "img.onnx", {"algorithm": "chunk_bc"}).path
    pol = load_validated(str(path), None, s)  # the policy_node's loader: contract, probe, spec
    rng = np.random.default_rng(1)
    for instr in (0, 1):
        obs = rng.normal(size=s.obs_dim).astype(np.float32)
        img = rng.integers(0, 256, (3, 32, 48), dtype=np.uint8)
        pol.image_input("wrist")[:] = img
        got = pol.act_chunk(obs, instr)
        with torch.no_grad():
            want = net(torch.as_tensor(obs)[None], torch.as_tensor(img)[None],
                       torch.nn.functional.one_hot(torch.tensor([instr]), 2).float())[0].numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.shape == (8, s.action_dim)


def test_chunked_bc_from_the_scripted_expert_reaches_when_its_chunks_run_as_the_node_runs_them(tmp_path):
    from vla_rl_ros.arm import Arm
    from vla_rl_ros.learner.evaluate import evaluate_onnx
    from vla_rl_ros.learner.recipes import ship_chunk_model

    res = ship_chunk_model("reach", str(tmp_path / "reach_chunk.onnx"), chunk_len=4, demos=30, noise=0.3, steps=600,
                           eval_episodes=10, progress=False, arm=Arm(Spec(task="reach")))
    assert res.success_rate >= 0.7, res
    assert (tmp_path / "reach_chunk.md").read_text().count("chunk of **4 actions**") == 1
    # the same file through the evaluator's loader: the spec says chunks, so the evaluator executes chunks
    again = evaluate_onnx(res.path, "reach", episodes=10)
    assert again.success_rate == res.success_rate
