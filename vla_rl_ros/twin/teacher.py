"""The scripted teacher's rule (ROS-free): when a watching human would take over, and what they would do.

``teacher_node`` runs it on wall-clock time against the live twin;
``bench/bench_continual.py --ablation`` runs it on env time in the gymnasium
twin. See :mod:`vla_rl_ros.nodes.teacher_node` for the why.
"""
from __future__ import annotations

import numpy as np

from ..spec import Spec
from .expert import ScriptedExpert


class Teacher:
    """Watches a fraction of the episodes; in a watched one, takes over for ``takeover_s`` on a grasp miss
    (gripper closed, hand not at the object) or a stall (``stall_s`` into the episode with nothing held).

    Args:
        spec: pick_place in ``ee_delta`` (anything else: never intervenes).
        watch_fraction: share of episodes watched (drawn per episode, seeded).
        takeover_s: length of one take-over (s, on the caller's clock).
        stall_s: stall trigger (s); 0 disables it.
        seed: seed of the per-episode watch draws.
        until_held_s: a take-over that has not got the object in hand after
            ``takeover_s`` goes on until it has, for at most this long in all (s;
            0 = exactly ``takeover_s``). A person at a spacemouse finishes the
            grasp before letting go; a take-over cut mid-grasp mostly teaches
            a failure.
        gain: the teacher's proportional gain on the hand error, in ``max_ee_step``
            units per tick (the scripted expert's is 1.5, for clean demos). A person
            steers gently; and on the live graph the teacher's action reaches the arm
            a control tick or more after the state it was computed from (its own timer,
            not the policy's tick, and DDS on a loaded machine). A proportional step
            ``x' = x - K x_late`` is stable only for ``K < 1`` with one tick of delay and
            for smaller ``K`` with more; past that the hand circles the cube, pushes
            it, and the take-over times out. Measured in the gym twin with the delay
            (``bench/bench_teacher.py``, ``docs/bench/teacher.md``), before the grasp latch
            below: gain 1.5 finished 14% of its take-over episodes one tick late; 0.5 finished
            69% one tick late but 46% two ticks late and none three ticks late; 0.25 finished
            73%, 70% and 63%. The default stays 0.5: in the live loop it taught faster (three
            30-minute runs reached 90-98% within 11-18 minutes; one run at 0.25 reached 69% in
            30 minutes, ``docs/bench/continual_summary.md``), and 0.2 approached the cube half
            as fast on the live arm (``docs/bench/teacher_live.md``). With the latch, 0.5
            finishes 81%, 79% and 23% one, two and three ticks late.
            Lower it where the teacher's action arrives later (a loaded machine).
        latch: a person does not drop what they hold: once the object is in hand, it stays "held"
            until the hand clearly opens or the object clearly leaves it
            (:class:`~vla_rl_ros.twin.expert.ScriptedExpert`'s ``latch``). Without it, a late or noisy
            object pose while lifting read as "not held", and the teacher opened the hand.
    """

    def __init__(self, spec: Spec, watch_fraction: float = 0.5, takeover_s: float = 1.0, stall_s: float = 2.5,
                 seed: int = 0, until_held_s: float = 3.0, gain: float = 0.5,
                 latch: bool = True) -> None:
        if not 0.0 <= watch_fraction <= 1.0:
            raise ValueError("watch_fraction must be in [0, 1]")
        self.supported = spec.task == "pick_place" and spec.action_mode == "ee_delta"
        self.watch_fraction = watch_fraction if self.supported else 0.0
        self.takeover_s, self.stall_s = float(takeover_s), float(stall_s)
        self.until_held_s = max(float(until_held_s), float(takeover_s))
        if not gain > 0:
            raise ValueError("gain must be > 0")
        self.expert = ScriptedExpert(spec, gain=gain, latch=latch)
        self.rng = np.random.default_rng(seed)
        self._ee, self._ob = spec.obs_slice("ee_pos"), spec.obs_slice("object_pos")
        self._w = spec.obs_slice("gripper_width").start
        self.takeovers = 0
        self.watching = False
        self.episode_start = 0.0
        self.until = -np.inf
        self.latest = -np.inf

    def new_episode(self, t: float) -> bool:
        """Start an episode at time ``t``; returns whether it is watched."""
        self.watching = bool(self.rng.random() < self.watch_fraction)
        self.episode_start = float(t)
        self.until = -np.inf
        self.latest = -np.inf
        self.expert.reset()
        return self.watching

    def trigger(self, obs: np.ndarray, t: float) -> str | None:
        """``"grasp miss"``, ``"stall"`` or None for this observation at time ``t``."""
        if self.expert.holding(obs):
            return None
        if (float(obs[self._w]) < self.expert.closed_width
                and float(np.linalg.norm(obs[self._ee] - obs[self._ob])) > 0.03):
            return "grasp miss"
        if self.stall_s > 0 and t - self.episode_start > self.stall_s:
            return "stall"
        return None

    def act(self, obs: np.ndarray, t: float) -> tuple[np.ndarray | None, str | None]:
        """The teacher's action at time ``t`` (None: the policy acts) and, when a take-over starts, why."""
        if not self.watching or t < self.episode_start:
            return None, None
        reason = None
        if t >= self.until and t < self.latest and not self.expert.holding(obs):
            return self.expert(obs), None  # finish the grasp before letting go
        if t >= self.until:
            reason = self.trigger(obs, t)
            if reason is None:
                return None, None
            self.until = t + self.takeover_s
            self.latest = t + self.until_held_s
            self.takeovers += 1
        return self.expert(obs), reason
