"""Gymnasium face of the twin: fast training and evaluation without ROS.

The env runs exactly the robot's pipeline each step: spec observation (FK on
the URDF model), the policy's action through :class:`~vla_rl_ros.runtime.control.Controller`
(IK + safety filter), position targets to the simulated motors, then
``substeps`` physics steps (``1 / spec.control_hz`` seconds of sim time).

Registered ids (importing :mod:`vla_rl_ros.twin` registers them)::

    gym.make("VlaRlRos/PandaReach-v0")
    gym.make("VlaRlRos/PandaPickPlace-v0")
    gym.make("VlaRlRos/PandaReachJoint-v0")   # joint-delta action mode
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..kinematics import Kinematics
from ..rewards import DEFAULT_REWARD as _DEFAULT_REWARD_NAME
from ..rewards import SuccessDetector, make_reward
from ..runtime.control import Controller, SafetyLimits
from ..spec import Spec
from .core import TwinCore

DEFAULT_MAX_STEPS = {"reach": 50, "pick_place": 120}
#: ``reach_cost`` / ``pick_place_task`` (optimum: finish; see vla_rl_ros/rewards/finishing.py)
DEFAULT_REWARD = {task: {"name": name} for task, name in _DEFAULT_REWARD_NAME.items()}


class TwinEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str = "reach",
        action_mode: str = "ee_delta",
        spec: Spec | None = None,
        urdf_path: str | None = None,
        max_episode_steps: int | None = None,
        reward: dict | str | None = None,
        success_tolerance: float = 0.05,
        success_ticks: int = 3,
        terminate_on_success: bool = True,
        render_mode: str | None = None,
        render_size: tuple[int, int] = (224, 224),
        ik_iters: int = 3,
        scene: str | None = None,
        home=None,
    ):
        super().__init__()
        self.spec_ = spec or Spec(task=task, action_mode=action_mode)
        s = self.spec_
        self.task = s.task
        self.twin = TwinCore(s, urdf_path=urdf_path, scene=scene, home=home)
        self.kin = Kinematics(self.twin.urdf_path, s.base_link, s.ee_link, s.arm_joints)
        self.controller = Controller(s, self.kin, SafetyLimits(), ik_iters=ik_iters, home=self.twin.home)
        self.substeps = max(1, int(round(1.0 / (s.control_hz * self.twin.time_step))))
        self.max_episode_steps = int(max_episode_steps or DEFAULT_MAX_STEPS[s.task])
        self.reward_fn = make_reward(reward or DEFAULT_REWARD[s.task], s)
        self.success = SuccessDetector(s.task, tolerance=success_tolerance, n_consecutive=success_ticks, spec=s)
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.render_size = render_size
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(s.obs_dim,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(s.action_dim,), dtype=np.float32)
        self._obs = np.zeros(s.obs_dim, dtype=np.float32)
        self._t = 0
        self.last_command = None

    # -------------------------------------------------------------- helpers
    def _observe(self) -> np.ndarray:
        st = self.twin.state()
        ee = self.kin.fk_pos(st.q)
        self._state = st
        return self.spec_.build_observation(st.q, st.gripper_width, ee, st.object_pos, st.goal_pos)

    # -------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.twin.reset_scene(self.np_random, self.task)
        self.twin.step(self.substeps)  # let the scene settle
        self.controller.reset()
        self.success.reset()
        self._t = 0
        self._obs = self._observe()
        return self._obs.copy(), {"is_success": False, "distance": self.success.distance(self._obs)}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        st = self._state
        cmd = self.controller.step(a, st.q, st.gripper_width, ee_meas=self._obs[self.spec_.obs_slice("ee_pos")])
        self.last_command = cmd
        self.twin.apply_command(cmd.arm, cmd.gripper)
        self.twin.step(self.substeps)
        prev = self._obs
        self._obs = self._observe()
        self._t += 1
        succeeded = self.success.update(self._obs)
        terminated = bool(succeeded and self.terminate_on_success)
        # the reward sees the same `terminated` the step returns (terminal success: bonus, zero potential)
        reward = float(self.reward_fn(prev, a.astype(np.float32), self._obs, terminated))
        truncated = bool(self._t >= self.max_episode_steps and not terminated)
        info = {"is_success": bool(succeeded), "distance": self.success.distance(self._obs), "hold": cmd.hold, "safety": cmd.reason}
        return self._obs.copy(), reward, terminated, truncated, info

    def render(self):
        if self.render_mode == "rgb_array":
            return self.twin.render(*self.render_size)
        return None

    def close(self):
        self.twin.close()


def register_envs() -> None:
    ids = {
        "VlaRlRos/PandaReach-v0": dict(task="reach"),
        "VlaRlRos/PandaPickPlace-v0": dict(task="pick_place"),
        "VlaRlRos/PandaReachJoint-v0": dict(task="reach", action_mode="joint_delta"),
    }
    for env_id, kw in ids.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="vla_rl_ros.twin.env:TwinEnv", kwargs=kw)


TASK_ENV_IDS = {"reach": "VlaRlRos/PandaReach-v0", "pick_place": "VlaRlRos/PandaPickPlace-v0"}
