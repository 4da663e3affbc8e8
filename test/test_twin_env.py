"""The gymnasium twin: check_env, determinism under a seed, the experts, rendering."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import vla_rl_ros.twin  # noqa: F401  (registers the ids)
from vla_rl_ros.twin.expert import ScriptedExpert, collect_demos


@pytest.mark.parametrize("env_id", ["VlaRlRos/PandaReach-v0", "VlaRlRos/PandaPickPlace-v0", "VlaRlRos/PandaReachJoint-v0"])
def test_check_env(env_id):
    env = gym.make(env_id).unwrapped
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


def _rollout(env, seed, n=15):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    rng = np.random.default_rng(seed)
    for _ in range(n):
        obs, r, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        out.append(obs)
    return np.array(out)


def test_deterministic_under_seed():
    a, b = gym.make("VlaRlRos/PandaPickPlace-v0"), gym.make("VlaRlRos/PandaPickPlace-v0")
    try:
        np.testing.assert_array_equal(_rollout(a, 5), _rollout(b, 5))
        assert not np.array_equal(_rollout(a, 5)[0], _rollout(a, 6)[0])  # seeds differ → scenes differ
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("task", ["reach", "pick_place"])
def test_scripted_expert_solves_task(task):
    from vla_rl_ros.twin.env import TwinEnv

    env = TwinEnv(task=task)
    try:
        eps = collect_demos(env, ScriptedExpert(env.spec_), 10, seed=500)
        assert np.mean([e["success"] for e in eps]) >= 0.9
        if task == "pick_place":  # really carried: the cube ends near the goal, away from where it started
            s = env.spec_
            for e in eps:
                if e["success"]:
                    o0, o1 = e["obs"][0], e["obs"][-1]
                    assert np.linalg.norm(o1[s.obs_slice("object_pos")] - o0[s.obs_slice("object_pos")]) > 0.05
    finally:
        env.close()


def test_joint_limits_respected_under_random_actions():
    env = gym.make("VlaRlRos/PandaReachJoint-v0").unwrapped
    try:
        env.reset(seed=0)
        lo, hi = env.twin.arm_lower, env.twin.arm_upper
        rng = np.random.default_rng(0)
        for _ in range(60):
            obs, *_ = env.step(rng.choice([-1.0, 1.0], size=env.action_space.shape).astype(np.float32))
            q = obs[:7]
            assert np.all(q >= lo - 0.02) and np.all(q <= hi + 0.02)
    finally:
        env.close()


def test_render_rgb_array():
    env = gym.make("VlaRlRos/PandaReach-v0", render_mode="rgb_array", render_size=(32, 32))
    try:
        env.reset(seed=0)
        img = env.render()
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.std() > 0
    finally:
        env.close()


def test_scene_file_is_the_twins_scene_and_bad_scenes_are_clear_errors(tmp_path):
    import yaml

    from vla_rl_ros.twin.core import Scene, TwinCore

    assert Scene.load() == Scene()  # sim/panda_table.yaml describes the built-in scene
    d = yaml.safe_load(open(__import__("vla_rl_ros.graph", fromlist=["x"]).repo_root() + "/sim/panda_table.yaml"))
    d["regions"]["reach_low"], d["regions"]["reach_high"] = [0.5, 0.0, 0.2], [0.5001, 0.0001, 0.2001]
    p = tmp_path / "scene.yaml"
    p.write_text(yaml.safe_dump(d))
    twin = TwinCore(scene=str(p))
    try:
        obj, goal = twin.sample_task(np.random.default_rng(0), "reach")
        np.testing.assert_allclose(goal, [0.5, 0.0, 0.2], atol=2e-4)  # goals come from the scene's region
    finally:
        twin.close()
    del d["table"]
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match="malformed"):
        Scene.load(str(p))
    with pytest.raises(FileNotFoundError):
        Scene.load(str(tmp_path / "nope.yaml"))
