"""Checkpoints: plain-data only, atomic, and resuming is bit-identical to never stopping."""
import os

import numpy as np
import pytest
import torch

from vla_rl_ros.algos.checkpoint import load_checkpoint, save_checkpoint
from vla_rl_ros.algos.recap import Episode, RecapConfig, RecapTrainer
from vla_rl_ros.algos.sac import SAC, Batch, SACConfig

torch.set_num_threads(1)


def _batches(seed, n, obs_dim=4, act_dim=2, size=64):
    rng = np.random.default_rng(seed)
    return [
        Batch(
            torch.tensor(rng.normal(size=(size, obs_dim)), dtype=torch.float32),
            torch.tensor(rng.uniform(-1, 1, size=(size, act_dim)), dtype=torch.float32),
            torch.tensor(rng.normal(size=size), dtype=torch.float32),
            torch.tensor(rng.normal(size=(size, obs_dim)), dtype=torch.float32),
            torch.tensor(rng.random(size) < 0.1, dtype=torch.float32),
        )
        for _ in range(n)
    ]


def _all_tensors(sd, prefix=""):
    out = {}
    if isinstance(sd, dict):
        for k, v in sd.items():
            out.update(_all_tensors(v, f"{prefix}/{k}"))
    elif isinstance(sd, (list, tuple)):
        for i, v in enumerate(sd):
            out.update(_all_tensors(v, f"{prefix}/{i}"))
    elif isinstance(sd, torch.Tensor):
        out[prefix] = sd
    else:
        out[prefix] = sd
    return out


@pytest.mark.parametrize("cfg", [
    SACConfig(hidden=(32, 32), seed=3),
    SACConfig(hidden=(32, 32), seed=4, n_critics=4, target_subset=2, critic_layernorm=True, utd=2),
])
def test_sac_resume_is_identical_to_uninterrupted_training(tmp_path, cfg):
    batches = _batches(0, 12)
    it_a = iter(batches)
    a = SAC(4, 2, cfg)
    for _ in range(3):
        a.train_step(lambda: next(it_a))
    path = tmp_path / "ckpt" / "sac.pt"
    save_checkpoint(path, {"sac": a.state_dict(), "env_steps": 123, "note": "x"})
    for _ in range(3):
        a.train_step(lambda: next(it_a))

    state = load_checkpoint(path)
    assert state["env_steps"] == 123
    b = SAC.from_state_dict(state["sac"])
    assert b.cfg == cfg
    it_b = iter(batches[3 * cfg.utd:])
    for _ in range(3):
        b.train_step(lambda: next(it_b))

    sa, sb = _all_tensors(a.state_dict()), _all_tensors(b.state_dict())
    assert sa.keys() == sb.keys()
    for k in sa:
        if isinstance(sa[k], torch.Tensor):
            assert torch.equal(sa[k], sb[k]), k
        else:
            assert sa[k] == sb[k], k
    obs = batches[0].obs
    assert np.array_equal(a.act(obs.numpy()), b.act(obs.numpy()))  # RNG state resumed too


def test_recap_state_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    eps = [Episode(rng.normal(size=(6, 3)), rng.uniform(-1, 1, (6, 2)), bool(i % 2)) for i in range(6)]
    cfg = RecapConfig(hidden=(16,), value_steps=5, actor_steps=5, batch_size=8)
    a = RecapTrainer(3, 2, cfg)
    a.round(eps)
    save_checkpoint(tmp_path / "recap.pt", {"recap": a.state_dict()})
    b = RecapTrainer.from_state_dict(load_checkpoint(tmp_path / "recap.pt")["recap"])
    a.round(eps)
    b.round(eps)
    obs = np.concatenate([e.obs for e in eps])
    assert np.array_equal(a.act(obs), b.act(obs)) and b.rounds == 2


def test_checkpoint_refuses_non_plain_data(tmp_path):
    class Thing:
        pass

    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.ones(2)})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"state\['cfg'\]"):
        save_checkpoint(path, {"cfg": Thing()})
    with pytest.raises(TypeError):
        save_checkpoint(path, {"arr": np.zeros(3)})
    assert path.read_bytes() == before  # failed save left the old file alone
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # and no temp file behind


def test_load_is_weights_only(tmp_path):
    """A file with an arbitrary pickled object is refused by the loader."""
    path = tmp_path / "evil.pt"
    torch.save({"obj": _Evil()}, path)
    with pytest.raises(Exception):
        load_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))
