"""``reward: learned``: the reward a Bradley–Terry ensemble learnt from preference labels.

Config::

    {"name": "learned", "params": {"models_dir": "runs/arm/models", "version": null, "task": "reach"}}

* ``models_dir``: the run's models folder; the reward models live in its
  ``reward/`` folder with their registry (:mod:`vla_rl_ros.preferences.reward_model`).
* ``version``: a pinned version, or ``null`` for the newest one. The newest is
  resolved when the reward is built, and :meth:`LearnedReward.refresh` moves to
  a newer one; :attr:`config` always names the version in use, so the config
  stored with an episode says exactly which model rewarded it.
* ``task``, ``tolerance``: the success condition :meth:`is_success` reports
  (the tracked point within ``tolerance`` m of the goal, as the task rewards':
  a learned reward has none of its own; success and the gate stay on the true task).
* ``offset`` (1.0): the reward is ``r(s, a) - offset``, with ``r`` the
  ensemble mean in ``[-1, 1]``; ``next_obs`` and ``terminated`` are accepted,
  as by every reward, and not used. It runs in ONNX Runtime (no torch), so a
  recorder can use it.

Why a cost. Bradley–Terry fixes a reward only up to a constant: two segments
of equal length keep their order whatever is added to every tick. The
constant is harmless where episodes have a fixed length (PEBBLE's tasks), but
the twin's episodes end at success, and then it decides what the learner
does. A positive reward near the goal makes ending the episode a loss, so the
policy learns to hover beside the goal (the reward-optimality point of issue
8, ``test/test_reward_optimality.py``). With ``offset`` 1, every tick costs
(``r - 1 <= 0``), so finishing is never worse than going on, whatever the
model learnt. Measured on the twin's reach (``bench/bench_prefs.py --hindsight 0``,
seed 0, 10,000 steps, 200 oracle labels on 10-tick segments): 2% success with
the raw ``r`` (``--rm-offset 0``), 56% with ``r - 1``. ``offset: 0`` gives the raw model.

Relabelling without rewriting the store. The learner does not rewrite stored
rewards when the reward model changes: it applies the model when it samples
(:func:`vla_rl_ros.preferences.rlhf.learned_reward_sampler`), so every batch
carries the current model's reward and a new model relabels all past data at
once, at the cost of one ONNX call per batch. The stored column keeps the
recorder's reward, which the true-success gate and ``data stats`` read.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import ObsView, RewardFn


class LearnedReward(RewardFn):
    name = "learned"
    defaults = {"models_dir": "", "version": None, "task": "reach", "tolerance": 0.05, "offset": 1.0}

    def _validate_params(self) -> None:
        from .tasks import canonical_task

        if not self.params["models_dir"]:
            raise ValueError("reward 'learned' needs params.models_dir (the run's models folder)")
        canonical_task(self.params["task"])
        self._pinned = self.params["version"] is not None
        self._model = None
        self._load()

    def _load(self) -> None:
        from ..preferences.onnx_reward import OnnxRewardModel, reward_model_path

        path = reward_model_path(self.params["models_dir"], self.params["version"] if self._pinned else None)
        if self._model is None or self._model.path != path:
            self._model = OnnxRewardModel(path)
        self.version = self._model.version

    def refresh(self) -> bool:
        """Move to the newest reward model unless the version is pinned; whether it changed."""
        if self._pinned:
            return False
        old = self.version
        self._load()
        return self.version != old

    @property
    def config(self) -> dict[str, Any]:
        cfg = super().config
        cfg["params"]["version"] = self.version  # the version in use, so a stored config pins it
        return cfg

    def _reward(self, v: ObsView, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray,
                terminated: np.ndarray) -> np.ndarray:
        return np.asarray(self._model(obs, action), dtype=np.float64) - float(self.params["offset"])

    def _success(self, v: ObsView, obs: np.ndarray) -> np.ndarray:
        from .tasks import task_distance

        return task_distance(v, obs, self.params["task"]) < self.params["tolerance"]
