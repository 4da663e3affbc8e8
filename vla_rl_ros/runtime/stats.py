"""Control-loop statistics (no ROS inside): latency percentiles, achieved rate, missed ticks.

Both classes are written for a hot loop: :meth:`LatencyWindow.add` and
:meth:`RateMonitor.tick` only write into preallocated arrays; percentiles are
computed when a report is made (``policy_node`` does it at ~1 Hz).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Summary:
    count: int
    p50: float
    p99: float
    max: float

    def scaled(self, k: float) -> "Summary":
        return Summary(self.count, self.p50 * k, self.p99 * k, self.max * k)


class LatencyWindow:
    """The last ``capacity`` samples in a ring; :meth:`summary` gives p50/p99/max over them.

    ``max_total`` is the maximum since construction (it survives :meth:`clear`).
    """

    def __init__(self, capacity: int = 8192):
        if capacity <= 0:
            raise ValueError("capacity must be > 0")
        self._buf = np.zeros(int(capacity), dtype=np.float64)
        self._cap = int(capacity)
        self._i = 0
        self._n = 0
        self.max_total = 0.0

    def add(self, x: float) -> None:
        self._buf[self._i] = x
        self._i += 1
        if self._i == self._cap:
            self._i = 0
        if self._n < self._cap:
            self._n += 1
        if x > self.max_total:
            self.max_total = x

    def __len__(self) -> int:
        return self._n

    def clear(self) -> None:
        self._i = 0
        self._n = 0

    def values(self) -> np.ndarray:
        return self._buf[: self._n].copy()

    def summary(self) -> Summary:
        if self._n == 0:
            return Summary(0, float("nan"), float("nan"), float("nan"))
        v = self._buf[: self._n]
        p50, p99 = np.percentile(v, [50.0, 99.0])
        return Summary(self._n, float(p50), float(p99), float(v.max()))


class RateMonitor:
    """Tick periods, lateness and missed ticks of a loop that should run at ``rate_hz``.

    With the timer's *scheduled* time of each tick (``expected``, e.g. rclpy's
    ``TimerInfo.expected_call_time``), missed ticks are exact: a periodic timer
    that falls more than a period behind skips the periods it missed, so the
    scheduled times jump by ``k`` periods and ``k - 1`` ticks were missed;
    ``actual - expected`` is recorded in :attr:`lateness`. Without it, a tick
    more than ``late_factor`` periods after the previous one counts
    ``round(dt / period) - 1`` (at least 1) missed ticks.

    ``outage_s``: a gap longer than this is an input outage, not missed ticks
    (an event-driven loop, which ticks on each input, does not tick while its
    input is down; a watchdog holds the arm meanwhile). Outages are counted in
    :attr:`outages`. Default: no limit, every gap is missed ticks.
    """

    def __init__(self, rate_hz: float, late_factor: float = 1.5, capacity: int = 8192,
                 outage_s: float = float("inf")):
        if not rate_hz > 0:
            raise ValueError("rate_hz must be > 0")
        self.rate_hz = float(rate_hz)
        self.period = 1.0 / self.rate_hz
        self.late_threshold = late_factor * self.period
        self.outage_s = float(outage_s)
        self.outages = 0
        self.periods = LatencyWindow(capacity)
        self.lateness = LatencyWindow(capacity)
        self.ticks = 0
        self.missed = 0
        self._last: float | None = None
        self._last_expected: float | None = None
        self._win_start: float | None = None
        self._win_ticks = 0

    def tick(self, now: float, expected: float | None = None, actual: float | None = None) -> int:
        """Record a tick at ``now`` (seconds, monotonic); returns the ticks missed just before it.

        ``expected``/``actual``: the timer's scheduled and actual call times (seconds, the timer's clock).
        """
        missed = 0
        last = self._last
        if expected is not None:
            if actual is not None:
                self.lateness.add(actual - expected)
            le = self._last_expected
            if le is not None:
                gap = expected - le
                k = int(round(gap * self.rate_hz))
                if k > 1:
                    if gap > self.outage_s:
                        self.outages += 1
                    else:
                        missed = k - 1
                        self.missed += missed
            self._last_expected = expected
        if last is not None:
            dt = now - last
            self.periods.add(dt)
            if expected is None and dt > self.late_threshold:
                if dt > self.outage_s:
                    self.outages += 1
                else:
                    missed = int(round(dt * self.rate_hz)) - 1
                    if missed < 1:
                        missed = 1
                    self.missed += missed
        else:
            self._win_start = now
        self._last = now
        self.ticks += 1
        self._win_ticks += 1
        return missed

    def achieved_rate(self, now: float) -> float:
        """Ticks per second since the window was last reset (0 before the first tick)."""
        if self._win_start is None or now <= self._win_start:
            return 0.0
        return self._win_ticks / (now - self._win_start)

    def reset_window(self, now: float) -> None:
        self._win_start = now
        self._win_ticks = 0
        self.periods.clear()
        self.lateness.clear()
