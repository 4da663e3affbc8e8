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
        latch: once the object is in hand, keep treating it as held until the hand is clearly open or the
            object has clearly left it (the fingers 90% open, or the hand more than 5 cm from it),
            instead of judging each observation afresh. A carried cube rides about 2.5 cm from the hand point;
            on a live cell its pose comes late (the twin's 30 Hz poses against 100 Hz joint states) and noisy,
            so while the hand lifts, the fresh test (within 3 cm) fails now and then, and each failure made the
            expert open its hand and drop the cube. Likewise a grasp, once the hand closes at the object,
            goes on closing while the hand stays within 2.5 cm of it sideways and 2 cm above (a late or noisy
            reading no longer reopens it halfway); fingers that have stopped closing at the object count as
            holding it even wider than ``closed_width`` (a cube turned across the fingers stops them at up to
            7.1 cm); and a descent onto the object, once aligned, goes on while the
            hand stays within 2.5 cm of it sideways (not back up to the hover point for a few mm of noise).
            Off by default, so the demonstrations (noise-free, from the
            gym twin) stay exactly as the shipped models saw them; the sim teacher uses it.
    """

    def __init__(self, spec: Spec, gain: float = 1.5, noise: float = 0.0, rng: np.random.Generator | None = None,
                 hover: float = 0.06, closed_width: float = 0.055, latch: bool = False):
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
        self.latch = latch
        self._held = False
        self._closing = self._descending = False
        self._last_width = np.inf
        self.gripper_stop = 0.9 * spec.gripper_open  # narrower than this with the hand closing: on something

    def reset(self) -> None:
        """Forget the latched grasp (a new episode)."""
        self._held = False
        self._closing = self._descending = False
        self._last_width = np.inf

    def _move(self, target: np.ndarray, ee: np.ndarray) -> np.ndarray:
        return np.clip(self.gain * (target - ee) / self.spec.max_ee_step, -1.0, 1.0)

    def holding(self, obs: np.ndarray) -> bool:
        """The gripper is partly closed (on something) with the hand at the object (with ``latch``: or it was,
        and neither has clearly changed since)."""
        o = np.asarray(obs, dtype=np.float64)
        width = o[self._w]
        d = float(np.linalg.norm(o[self._ee] - o[self._obj]))
        if self.latch and self._held:
            self._held = bool(0.01 < width < self.gripper_stop and d < 0.05)
        else:
            self._held = bool(0.01 < width < self.closed_width and d < 0.03)
            if self.latch and not self._held and self._closing:
                # fingers closing at the object have stopped on it: a cube turned across the fingers stops them
                # wider than closed_width (5 cm square: up to 7.1 cm across its diagonal)
                self._held = bool(0.01 < width < self.gripper_stop and d < 0.03 and self._last_width - width < 5e-4)
        return self._held

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
                self._closing = self._descending = False
            elif self.latch and self._closing and d_xy < 0.025 and ee[2] - obj[2] < 0.02 and width > 0.01:
                a[:3] = self._move(obj, ee) * 0.2  # committed to this grasp: go on closing
                a[3] = -1.0
            elif d_xy > (0.025 if self.latch and self._descending else 0.012):
                above = obj + np.array([0.0, 0.0, self.hover])
                # rise first if low and far, so the fingers don't sweep the cube away
                if ee[2] < obj[2] + self.hover * 0.5 and d_xy > 0.03:
                    above = np.array([ee[0], ee[1], obj[2] + self.hover])
                a[:3] = self._move(above, ee)
                a[3] = 1.0
            elif ee[2] - obj[2] > 0.008:
                self._descending = True
                a[:3] = self._move(obj, ee)
                # open while descending (a closed hand above the cube, after a miss, must open first); the
                # clean expert's hand is open all the way down, so its demonstrations are unchanged
                a[3] = 1.0 if (width > 0.06 or ee[2] - obj[2] > 0.03) else -1.0
            else:
                a[:3] = self._move(obj, ee) * 0.2
                a[3] = -1.0
                self._closing = True
            if a[3] > 0:
                self._closing = False
            self._last_width = float(width)
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
