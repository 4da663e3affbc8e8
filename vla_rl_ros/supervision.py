"""Supervised nodes: restart a node process that dies, with a backoff and a limit (no ROS inside).

``vla-rl-ros sim`` / ``robot`` run one :class:`Supervisor` over their node
processes; the launch files ask ``ros2 launch`` for the same with ``respawn``
(:func:`launch_respawn`). Both take their defaults from :class:`RestartPolicy`.

A node that exits is restarted after ``backoff_s``, then twice that for each
further death (at most ``backoff_max_s``), up to ``max_restarts`` times. A node
that has then stayed up ``stable_s`` starts over (count 0, delay ``backoff_s``):
the limit is for a node that keeps dying, not for a run of days. A node over
its limit stops the stack. When a node's process exits, its process group is
killed first, so that no worker it forked (an evaluator, a camera renderer)
outlives it.

What the graph does meanwhile: the arm holds while ``policy_node`` is down (the
twin, like a ros2_control position controller, keeps the last target); the
recorder closes the episode in flight as ``crash`` (its own restart closes what
its dead process left open; a policy or twin that went away is seen in the
steps); the learner resumes from its last checkpoint and announces the
incumbent again.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Callable, Protocol


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5  # per node; one more death stops the stack
    backoff_s: float = 1.0  # delay before the first restart
    backoff_max_s: float = 30.0  # the doubling stops here
    stable_s: float = 300.0  # up this long since its last restart: the node's count and delay start over

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if not 0.0 <= self.backoff_s <= self.backoff_max_s:
            raise ValueError(f"need 0 <= backoff_s <= backoff_max_s, got {self.backoff_s} and {self.backoff_max_s}")
        if self.stable_s <= 0.0:
            raise ValueError(f"stable_s must be > 0, got {self.stable_s}")

    def delay(self, n: int) -> float:
        """Seconds before the ``n``-th restart (1-based): ``backoff_s``, doubling, capped at ``backoff_max_s``."""
        return min(self.backoff_max_s, self.backoff_s * 2.0 ** max(0, n - 1))


class Process(Protocol):  # what the supervisor needs of a ``subprocess.Popen``
    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...


@dataclass
class Event:
    """One thing the supervisor did: ``exited`` (restart scheduled in ``delay_s``), ``restarted``, or
    ``gave_up`` (the node died once more than ``max_restarts`` allows)."""

    kind: str
    node: str
    restarts: int  # restarts of this node so far (counting this one, for ``restarted``)
    max_restarts: int
    code: int | None = None  # exit code (``exited``, ``gave_up``); negative: killed by that signal
    delay_s: float = 0.0
    pid: int | None = None  # the new process (``restarted``)

    def line(self) -> str:
        how = exit_text(self.code)
        if self.kind == "exited":
            return (f"{self.node} {how}; restarting it in {self.delay_s:.1f} s "
                    f"(restart {self.restarts}/{self.max_restarts})")
        if self.kind == "restarted":
            return f"restarted {self.node} ({self.restarts}/{self.max_restarts}), pid {self.pid}"
        return (f"{self.node} {how} after {self.restarts} restarts, the limit (--max-restarts "
                f"{self.max_restarts}); stopping the stack")


def exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class _Node:
    proc: Process
    started: float
    restarts: int = 0
    due: float | None = None  # when a scheduled restart happens (None: running, or given up)
    given_up: bool = False


class Supervisor:
    """Starts named node processes with ``spawn(name)`` and keeps them running under ``policy``.

    Call :meth:`poll` often (the sim's monitor loop does, every 0.2 s); it returns what happened. ``clock`` and
    ``kill_group`` are for tests (``kill_group``: the processes lead their own process groups, as
    ``start_new_session=True`` makes them)."""

    def __init__(self, spawn: Callable[[str], Process], names, policy: RestartPolicy = RestartPolicy(),
                 clock: Callable[[], float] = time.monotonic, kill_group: bool = True) -> None:
        self.spawn, self.policy, self.clock, self.kill_group = spawn, policy, clock, kill_group
        self.names = list(names)
        self.nodes: dict[str, _Node] = {}
        self.gave_up: str | None = None

    def start(self) -> dict[str, Process]:
        for name in self.names:
            self.nodes[name] = _Node(self.spawn(name), self.clock())
        return self.procs

    @property
    def procs(self) -> dict[str, Process]:
        """The current process of each node (a dead one while its restart is pending)."""
        return {name: n.proc for name, n in self.nodes.items()}

    def poll(self) -> list[Event]:
        events: list[Event] = []
        for name, n in self.nodes.items():
            now = self.clock()
            if n.given_up:
                continue
            if n.due is not None:
                if now >= n.due:
                    n.proc, n.started, n.due = self.spawn(name), now, None
                    events.append(Event("restarted", name, n.restarts, self.policy.max_restarts, pid=n.proc.pid))
                continue
            code = n.proc.poll()
            if code is None:
                continue
            self._reap(n.proc)
            if n.restarts and now - n.started >= self.policy.stable_s:
                n.restarts = 0  # it ran long enough: this death is a new story
            if n.restarts >= self.policy.max_restarts:
                self.gave_up, n.given_up = name, True
                events.append(Event("gave_up", name, n.restarts, self.policy.max_restarts, code=code))
                continue
            n.restarts += 1
            delay = self.policy.delay(n.restarts)
            n.due = now + delay
            events.append(Event("exited", name, n.restarts, self.policy.max_restarts, code=code, delay_s=delay))
        return events

    def status(self) -> str:
        """``recorder_node 1/5, twin_node 2/5``: the nodes restarted so far ('' when none)."""
        return ", ".join(f"{name} {n.restarts}/{self.policy.max_restarts}"
                         for name, n in self.nodes.items() if n.restarts)

    def _reap(self, proc: Process) -> None:
        """Kill what the dead node left in its process group (its workers would run on, orphaned)."""
        if not self.kill_group:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def launch_respawn(policy: RestartPolicy, *, enabled: bool = True, delay_s: float | None = None,
                   max_restarts: int | None = None) -> dict:
    """The ``launch_ros`` ``Node`` arguments that restart a node: ``respawn``, ``respawn_delay`` and, where
    ``launch`` has it (Iron and later; Humble restarts without a limit), ``respawn_max_retries``. ``ros2
    launch`` waits the same delay before every restart: it has no backoff."""
    if not enabled:
        return {"respawn": False}
    out = {"respawn": True, "respawn_delay": float(policy.backoff_s if delay_s is None else delay_s)}
    try:
        import inspect

        from launch.actions import ExecuteLocal

        limited = "respawn_max_retries" in inspect.signature(ExecuteLocal.__init__).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        limited = False
    if limited:
        out["respawn_max_retries"] = int(policy.max_restarts if max_restarts is None else max_restarts)
    return out
