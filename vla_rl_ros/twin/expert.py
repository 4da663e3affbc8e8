"""Scripted experts (IK controllers in the spec's action space) for both tasks.

They read only the spec observation, so the same expert drives the gymnasium
twin and, through ``policy_node``-style observations, the ROS graph. Their
pick-and-place demonstrations are the demonstrations learners start from.
"""
from __future__ import annotations

import numpy as np

from ..spec import Spec


class ScriptedExpert:
    """Proportional controller on the hand position, with a grasp state machine for pick-and-place.

    Args:
        spec: the observation/action spec (``ee_delta`` action mode).
        gain: proportional gain on the hand error, in units of ``max_ee_step``.
        noise: std of Gaussian noise added to the action (0 = the clean expert).
        rng: generator for the noise.
    """

    def __init__(self, spec: Spec, gain: float = 1.5, noise: float = 0.0, rng: np.random.Generator | None = None,
                 hover: float = 0.06, closed_width: float = 0.055):
        if spec.action_mode != "ee_delta":
            raise ValueError("the scripted expert acts in ee_delta mode")
        self.spec = spec
        self.gain = gain
        self.noise = noise
        self.rng = rng or np.random.default_rng(0)
        self.hover = hover
        self.closed_width = closed_width
        self._ee = spec.obs_slice("ee_pos")
        self._obj = spec.obs_slice("object_pos")
        self._goal = spec.obs_slice("goal_pos")
        self._w = spec.obs_slice("gripper_width").start

    def _move(self, target: np.ndarray, ee: np.ndarray) -> np.ndarray:
        return np.clip(self.gain * (target - ee) / self.spec.max_ee_step, -1.0, 1.0)

    def holding(self, obs: np.ndarray) -> bool:
        """The gripper is partly closed (on something) with the hand at the object."""
        o = np.asarray(obs, dtype=np.float64)
        width = o[self._w]
        return bool(0.01 < width < self.closed_width and np.linalg.norm(o[self._ee] - o[self._obj]) < 0.03)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        o = np.asarray(obs, dtype=np.float64)
        ee, obj, goal, width = o[self._ee], o[self._obj], o[self._goal], o[self._w]
        a = np.zeros(self.spec.action_dim)
        if self.spec.task == "reach":
            a[:3] = self._move(goal, ee)
            a[3] = 1.0
        else:
            d_xy = np.linalg.norm(ee[:2] - obj[:2])
            if self.holding(o):
                a[:3] = self._move(goal, ee)
                a[3] = -1.0
            elif d_xy > 0.012:
                above = obj + np.array([0.0, 0.0, self.hover])
                # rise first if low and far, so the fingers don't sweep the cube away
                if ee[2] < obj[2] + self.hover * 0.5 and d_xy > 0.03:
                    above = np.array([ee[0], ee[1], obj[2] + self.hover])
                a[:3] = self._move(above, ee)
                a[3] = 1.0
            elif ee[2] - obj[2] > 0.008:
                a[:3] = self._move(obj, ee)
                # open while descending (a closed hand above the cube, after a miss, must open first); the
                # clean expert's hand is open all the way down, so its demonstrations are unchanged
                a[3] = 1.0 if (width > 0.06 or ee[2] - obj[2] > 0.03) else -1.0
            else:
                a[:3] = self._move(obj, ee) * 0.2
                a[3] = -1.0
        if self.noise > 0:
            a[:3] += self.rng.normal(0.0, self.noise, 3)
        return np.clip(a, -1.0, 1.0).astype(np.float32)


def collect_demos(env, expert, n_episodes: int, seed: int = 0, progress: bool = False):
    """Roll out ``expert`` in ``env``; returns a list of episode dicts (obs, actions, rewards, success, seed)."""
    from tqdm import tqdm

    episodes = []
    it = range(n_episodes)
    for i in tqdm(it, desc="expert demos", disable=not progress):
        ep_seed = seed + i
        obs, _ = env.reset(seed=ep_seed)
        O, A, R = [obs], [], []
        done = False
        info = {"is_success": False}
        while not done:
            act = expert(obs)
            obs, r, term, trunc, info = env.step(act)
            O.append(obs)
            A.append(act)
            R.append(r)
            done = term or trunc
        episodes.append(dict(obs=np.array(O, dtype=np.float32), actions=np.array(A, dtype=np.float32),
                             rewards=np.array(R, dtype=np.float32), success=bool(info["is_success"]),
                             terminated=bool(term), seed=ep_seed))
    return episodes
