"""Recorded reach episodes for the preference tests: a point hand in the spec's observation layout, written
into a real run's store by the real writer (no physics: fast, and the task's true reward applies as recorded)."""
import numpy as np

from vla_rl_ros.buffer import create_run
from vla_rl_ros.rewards import make_reward
from vla_rl_ros.spec import Spec

SPEC = Spec(task="reach")
STEP_M = 0.03  # metres per tick at full action


def obs_of(spec, ee, goal, grip=0.08):
    o = np.zeros(spec.obs_dim, np.float32)
    o[spec.obs_slice("gripper_width")] = grip
    o[spec.obs_slice("ee_pos")] = ee
    o[spec.obs_slice("object_pos")] = goal
    o[spec.obs_slice("goal_pos")] = goal
    o[spec.obs_slice("ee_to_object")] = goal - ee
    o[spec.obs_slice("ee_to_goal")] = goal - ee
    return o


def reach_episode(rng, skill, ep_len, spec=SPEC):
    """(obs, actions, next_obs): a hand that heads for the goal with probability-weight ``skill``, else wanders."""
    goal = rng.uniform([0.3, -0.3, 0.05], [0.7, 0.3, 0.4])
    ee = rng.uniform([0.3, -0.3, 0.05], [0.7, 0.3, 0.4])
    O, A, O2 = [], [], []
    for _ in range(ep_len):
        d = goal - ee
        to_goal = d / max(np.linalg.norm(d), 1e-6) * min(1.0, np.linalg.norm(d) / STEP_M)
        a = np.clip(skill * to_goal + (1 - skill) * rng.normal(0, 0.7, 3), -1, 1)
        act = np.concatenate([a, [0.0]]).astype(np.float32)
        o = obs_of(spec, ee, goal)
        ee = ee + STEP_M * a
        O.append(o), A.append(act), O2.append(obs_of(spec, ee, goal))
    return np.array(O), np.array(A), np.array(O2)


def make_reach_run(root, name="arm", n_episodes=40, ep_len=30, seed=0, spec=SPEC):
    run = create_run(root, name, spec)
    rng = np.random.default_rng(seed)
    fn = make_reward("reach_cost", spec)
    with run.writer(synchronous="NORMAL") as w:
        for ep in range(n_episodes):
            O, A, O2 = reach_episode(rng, rng.uniform(0, 1), ep_len, spec)
            w.begin_episode("reach", seed=ep, reward_config=fn.config)
            for o, a, o2 in zip(O, A, O2):
                w.add_step(o, a, float(fn(o, a, o2)), o2, model_version="scripted")
            w.end_episode("timeout")
    return run
