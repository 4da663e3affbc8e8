"""Turning the policy node's per-tick steps into rewarded, durable episodes (ROS-free).

Each ``/rl/step`` record is exactly what the policy acted on (obs) and what it
sent (action). Two consecutive ticks ``k`` and ``k+1`` make one transition
``(obs_k, action_k, r, obs_{k+1})``; the reward is computed here with the
configured reward function, and success is detected on ``obs_{k+1}``
(object — for ``reach`` the hand — within tolerance of the goal for
``success_hold_s`` of consecutive ticks).

Episodes end on success (terminated), timeout (truncated), estop, an
explicit reset (operator or episode manager), or ``crash``: what feeds the
episode went away. The policy node died (no step for ``input_lost_s``, see
:meth:`EpisodeRecorder.check`, or a tick count that starts over: a restarted
node), or the arm (the twin) did (the observation stamp of the steps stops
advancing for ``input_lost_s``: the policy acts on, then holds, the last state
it saw, and no tick on such a state ends the episode as a success or timeout). A recorder that
died leaves its episode open; the store closes it as ``crash`` when the next
writer opens it (:mod:`vla_rl_ros.buffer.writer`). Transitions are never invented:
a hold tick or a gap in tick numbers breaks the chain (the pending step is
dropped and counted), so only steps the policy really acted on, back to back,
become transitions.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable


from ..buffer import InvalidStep, Writer
from ..rewards import SuccessDetector
from ..spec import Spec
from ..stepmsg import StepRecord


@dataclass
class RecorderConfig:
    task: str = "reach"
    max_episode_s: float = 2.5  # timeout (seconds of control ticks)
    success_tolerance: float = 0.05
    success_hold_s: float = 0.15  # consecutive time within tolerance
    settle_s: float = 0.2  # ignore steps observed earlier than this after a reset completes
    input_lost_s: float = 1.0  # no step, or no new observation, for this long: the episode is closed as crash


@dataclass
class RecorderCounters:
    steps_received: int = 0
    transitions: int = 0
    hold_ticks: int = 0
    gaps: int = 0
    rejected: int = 0
    waiting: int = 0
    episodes: int = 0
    successes: int = 0
    crashes: int = 0  # episodes closed as crash here (the policy or the arm went away)
    last_error: str = ""


class EpisodeRecorder:
    """Pairs ticks into transitions, labels rewards, detects episode ends, writes to a :class:`Writer`.

    ``on_episode_end(summary)`` is called after an episode is closed; the ROS
    shell uses it to publish the summary and (in the twin) to request a reset,
    after which it calls :meth:`arm` with the episode's seed and the time the
    reset completed. ``on_input_lost()`` is called when the inputs are lost
    while the recorder waits, armed, for an episode to begin: the scene it was
    armed for may be gone (a restarted twin), so it is disarmed until the next
    :meth:`arm`.

    ``detector``: where episode success comes from instead of the state's geometric test (a
    :class:`~vla_rl_ros.rewards.SuccessDetector` built per episode from ``cfg``): an object with its interface
    (``reset()``, ``update(obs) -> bool``, ``config``), reset at each episode's start; the recorder's
    ``reward: classifier`` passes a :class:`~vla_rl_ros.perception.success.ClassifierSuccessDetector` fed with
    camera frames.
    """

    def __init__(self, writer: Writer, spec: Spec, reward_fn: Callable, cfg: RecorderConfig,
                 on_episode_end: Callable[[dict], None] | None = None, armed: bool = True,
                 on_input_lost: Callable[[], None] | None = None, detector=None):
        self.w = writer
        self.spec = spec
        self.reward_fn = reward_fn
        self.cfg = cfg
        self.on_episode_end = on_episode_end
        self.on_input_lost = on_input_lost
        self.counters = RecorderCounters()
        self.detector: SuccessDetector | None = None
        self._custom_detector = detector
        self._pending: StepRecord | None = None
        # may begin an episode at the next acted step; the twin's episode manager
        # starts unarmed so that no episode begins before its first reset
        self._armed = armed
        self._start_after = -math.inf
        self._seed: int | None = None
        self._ep_steps = 0
        self._held = 0  # held ticks of the open episode (they count towards its time limit)
        self._max_steps = 0
        self._estopped = False
        self._last_tick: int | None = None
        self._last_step_at: float | None = None  # receive time (monotonic) of the last step
        self._obs_stamp: float | None = None
        self._obs_since = 0.0  # cmd_stamp of the first step that carried the current obs_stamp
        self._lost = False  # the current observation has been frozen input_lost_s (reported)

    # -------------------------------------------------------------- control
    @property
    def recording(self) -> bool:
        return self.w.episode_id is not None

    def arm(self, seed: int | None = None, not_before: float | None = None) -> None:
        """Allow the next episode to begin with steps observed after ``not_before`` (+ settle)."""
        self._armed = True
        self._seed = seed
        self._start_after = (time.time() if not_before is None else not_before) + self.cfg.settle_s

    def set_estop(self, on: bool) -> dict | None:
        """Estop ends the current episode (``estop``); recording resumes after it clears."""
        summary = None
        if on and not self._estopped:
            if self.recording:
                summary = self.end("estop")
            self._estopped = True
        elif not on and self._estopped:
            self._estopped = False
            self.arm(None)
        return summary

    def end(self, reason: str, success: bool | None = None) -> dict | None:
        """Close the open episode (if any) with ``reason``."""
        self._pending = None
        if not self.recording:
            return None
        summary = self.w.end_episode(reason, success)
        summary.update(task=self.cfg.task, seed=self._seed, reward_config=self.reward_fn.config, ended_at=time.time())
        self.counters.episodes += 1
        self.counters.crashes += reason == "crash"
        self.counters.successes += int(bool(summary["success"]))
        self._armed = False
        if self.on_episode_end:
            self.on_episode_end(summary)
        return summary

    def check(self, now: float | None = None) -> dict | None:
        """Call periodically (the node: every 0.25 s). An open episode that has had no step for
        ``input_lost_s`` (``now``: monotonic seconds, as :meth:`on_step` was given) is closed as ``crash``: the
        policy node is gone. Returns its summary."""
        now = time.monotonic() if now is None else now
        lost = self.cfg.input_lost_s
        if lost > 0 and self.recording and self._last_step_at is not None and now - self._last_step_at >= lost:
            return self.end("crash", False)
        return None

    # -------------------------------------------------------------- ticks
    def on_step(self, rec: StepRecord, now: float | None = None) -> dict | None:
        """Feed one decoded step (``now``: its receive time, monotonic seconds). Returns an episode summary when
        this step ended an episode."""
        c = self.counters
        c.steps_received += 1
        restarted = self._last_tick is not None and rec.tick <= self._last_tick  # a new policy node counts from 1
        self._last_tick = rec.tick
        self._last_step_at = time.monotonic() if now is None else now
        fresh = rec.obs_stamp != self._obs_stamp
        if fresh:
            self._obs_stamp, self._obs_since, self._lost = rec.obs_stamp, rec.cmd_stamp, False
        lost = (not self._lost and self.cfg.input_lost_s > 0
                and rec.cmd_stamp - self._obs_since >= self.cfg.input_lost_s)
        if (restarted or lost) and not self._estopped:
            self._lost = self._lost or lost  # once per loss: until a new observation arrives
            if self.recording:
                return self.end("crash", False)
            if lost and self._armed:
                self._armed = False
                if self.on_input_lost:
                    self.on_input_lost()
        if rec.hold or self._estopped:
            c.hold_ticks += 1
            self._pending = None
            if self.recording and not self._estopped:
                # a held tick is time of the episode too: an arm that holds for good (a safety hold it cannot
                # leave) still reaches the time limit, and the twin's next reset, instead of an endless episode.
                # Only on a new observation, though: a hold on a state that no longer changes is an arm (a twin)
                # that went away, whose episode ends as crash after input_lost_s.
                self._held += 1
                if fresh and self._ep_steps + self._held >= self._max_steps:
                    return self.end("timeout", False)
            return None
        if not self.recording:
            if not self._armed or rec.obs_stamp < self._start_after:
                c.waiting += 1
                return None
            self._begin(rec)
            self._pending = rec
            return None
        prev = self._pending
        self._pending = rec
        if prev is None:
            return None
        if rec.tick != prev.tick + 1:
            c.gaps += 1
            return None
        return self._transition(prev, rec, fresh)

    def _begin(self, rec: StepRecord) -> None:
        rate = rec.control_rate_hz if rec.control_rate_hz > 0 else self.spec.control_hz
        self._max_steps = max(1, int(round(self.cfg.max_episode_s * rate)))
        hold_ticks = max(1, int(math.ceil(self.cfg.success_hold_s * rate - 1e-9)))
        if self._custom_detector is not None:
            self.detector = self._custom_detector
            self.detector.reset()
        else:
            self.detector = SuccessDetector(self.cfg.task, tolerance=self.cfg.success_tolerance,
                                            n_consecutive=hold_ticks, spec=self.spec)
        self._ep_steps = 0
        self._held = 0
        self.w.begin_episode(self.cfg.task, seed=self._seed, reward_config=self.reward_fn.config,
                             info={"control_rate_hz": rate, "max_steps": self._max_steps,
                                   "success": self.detector.config})

    def _transition(self, prev: StepRecord, rec: StepRecord, fresh: bool = True) -> dict | None:
        c = self.counters
        # The episode ends (success, time limit) only on a new observation: on a state that stopped changing (an
        # arm, a twin, that went away while the policy still acts on its last state) it ends as crash instead,
        # after input_lost_s. On a live arm the end comes at the next new observation.
        success = self.detector.update(rec.obs) and fresh
        r = float(self.reward_fn(prev.obs, prev.action, rec.obs, success))
        self._ep_steps += 1
        timeout = self._ep_steps + self._held >= self._max_steps and fresh
        try:
            self.w.add_step(prev.obs, prev.action, r, rec.obs, terminated=success, truncated=timeout and not success,
                            intervention=prev.intervention, model_version=prev.model_version,
                            obs_stamp=prev.obs_stamp, cmd_stamp=prev.cmd_stamp,
                            chunk=(prev.chunk_seq, prev.chunk_step, prev.frame_stamp) if prev.chunk_seq > 0 else None)
        except InvalidStep as e:
            c.rejected += 1
            c.last_error = str(e)
            self._ep_steps -= 1
            return None
        c.transitions += 1
        if success:
            return self.end("success", True)
        if timeout:
            return self.end("timeout", False)
        return None
