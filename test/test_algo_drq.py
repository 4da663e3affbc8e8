"""Pixel SAC with DrQ (algos/drq.py): the augmentation, one update, the exported image policy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_rl_ros.algos.drq import DrQConfig, FrameReplay, PixelSAC, pixel_spec, proprio_index, random_shift
from vla_rl_ros.spec import Spec

SPEC = pixel_spec(Spec(task="reach"), size=32)


def test_random_shift_crops_each_sample_of_the_replicate_padded_frame():
    g = torch.Generator().manual_seed(0)
    img = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    out = random_shift(img, 2, g)
    assert out.shape == img.shape
    padded = torch.nn.functional.pad(img, (2, 2, 2, 2), mode="replicate")
    for b in range(2):  # each sample is exactly one 6x6 window of its padded frame
        hits = [(y, x) for y in range(5) for x in range(5) if torch.equal(padded[b, :, y:y + 6, x:x + 6], out[b])]
        assert len(hits) == 1
    assert torch.equal(random_shift(img, 0), img)


def test_the_proprioception_is_joints_gripper_and_hand_not_object_or_goal():
    idx = proprio_index(SPEC).tolist()
    assert idx == list(range(SPEC.n_arm + 4))
    assert SPEC.obs_slice("object_pos").start not in idx and SPEC.obs_slice("goal_pos").start not in idx


def batch(n: int, rng) -> dict:
    rb = FrameReplay(n, SPEC.obs_dim, SPEC.action_dim, (3, 32, 32))
    for _ in range(n):
        rb.add(rng.integers(0, 256, (3, 32, 32), dtype=np.uint8), rng.normal(size=SPEC.obs_dim),
               rng.uniform(-1, 1, SPEC.action_dim), rng.normal(), rng.integers(0, 256, (3, 32, 32), dtype=np.uint8),
               rng.normal(size=SPEC.obs_dim), rng.random() < 0.1)
    return rb.sample(64, rng)


def test_an_update_trains_the_encoder_through_the_critic_only_and_the_targets_follow():
    agent = PixelSAC(SPEC, DrQConfig(hidden=(64, 64), batch_size=64), seed=0)
    rng = np.random.default_rng(0)
    b = batch(128, rng)
    enc0 = [p.detach().clone() for p in agent.encoder.parameters()]
    targ0 = [p.detach().clone() for p in agent.encoder_targ.parameters()]
    actor_before = [p.detach().clone() for p in agent.actor.parameters()]
    losses = [agent.update(b)["critic_loss"] for _ in range(30)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert any(not torch.equal(a, p) for a, p in zip(enc0, agent.encoder.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(targ0, agent.encoder_targ.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(actor_before, agent.actor.parameters()))
    # the actor's loss leaves the critic's weights alone: one actor step with the critic frozen in place
    crit = [p.detach().clone() for p in agent.critic.parameters()]
    for p in agent.critic.parameters():
        p.grad = None
    h = torch.randn(8, 50 + len(agent.idx))
    a, logp = agent.actor(h)
    (logp - agent.critic(h, a).min(0).values).mean().backward(inputs=list(agent.actor.parameters()))
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(torch.equal(x, p) for x, p in zip(crit, agent.critic.parameters()))


def test_the_exported_pixel_policy_runs_as_the_node_runs_it_and_matches_torch(tmp_path):
    from vla_rl_ros.algos.export import export_onnx
    from vla_rl_ros.runtime.onnx_policy import load_validated

    agent = PixelSAC(SPEC, DrQConfig(hidden=(64, 64)), seed=1)
    agent.proprio_norm.fit(np.random.default_rng(0).normal(size=(100, len(agent.idx))))
    path = export_onnx(agent.policy_module(), SPEC, tmp_path / "pix.onnx", {"algorithm": "drq_sac"}).path
    pol = load_validated(str(path), None, SPEC)
    assert pol.chunked and pol.chunk_len == 1
    rng = np.random.default_rng(2)
    for _ in range(3):
        obs = rng.normal(size=SPEC.obs_dim).astype(np.float32)
        img = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
        pol.image_input("front")[:] = img
        np.testing.assert_allclose(pol.act_chunk(obs)[0], agent.act(obs, img, deterministic=True), atol=1e-5)
    with pytest.raises(ValueError):
        PixelSAC(Spec(task="reach"))
