"""The PyBullet twin: :class:`TwinCore` (scene, arm, tasks) and its gymnasium face :class:`TwinEnv`."""
from .core import TwinCore, TwinState
from .env import TASK_ENV_IDS, TwinEnv, register_envs

register_envs()

__all__ = ["TwinCore", "TwinState", "TwinEnv", "register_envs", "TASK_ENV_IDS"]
