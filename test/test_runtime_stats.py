"""Latency window and rate monitor, on synthetic timestamps (no timing asserted)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vla_rl_ros.runtime.stats import LatencyWindow, RateMonitor


def test_latency_window_percentiles_and_ring():
    w = LatencyWindow(capacity=1000)
    assert w.summary().count == 0 and math.isnan(w.summary().p50)
    for x in range(1, 101):
        w.add(float(x))
    s = w.summary()
    assert s.count == 100 and s.p50 == pytest.approx(50.5) and s.p99 == pytest.approx(99.01) and s.max == 100.0
    assert s.scaled(1e3).max == 1e5
    small = LatencyWindow(capacity=10)
    for x in range(100):
        small.add(float(x))
    assert sorted(small.values()) == list(range(90, 100))
    small.clear()
    assert len(small) == 0 and small.max_total == 99.0
    with pytest.raises(ValueError):
        LatencyWindow(0)


def test_rate_monitor_counts_missed_ticks():
    r = RateMonitor(1000.0)
    t = 0.0
    for _ in range(100):
        assert r.tick(t) == 0
        t += 0.001
    assert r.missed == 0
    t += 0.002  # a gap of 3 periods: 2 missed
    assert r.tick(t) == 2
    t += 0.0016  # 1.6 periods: late, 1 missed
    assert r.tick(t) == 1
    assert r.missed == 3 and r.ticks == 102
    assert r.achieved_rate(t) == pytest.approx(102 / t, rel=1e-6)
    assert r.periods.summary().max == pytest.approx(0.003)


def test_rate_monitor_window_reset():
    r = RateMonitor(100.0)
    for k in range(50):
        r.tick(k * 0.01)
    r.reset_window(0.49)
    assert r.achieved_rate(0.49) == 0.0
    for k in range(50, 60):
        r.tick(k * 0.01)
    assert r.achieved_rate(0.59) == pytest.approx(100.0)
    assert len(r.periods) == 10
    with pytest.raises(ValueError):
        RateMonitor(0.0)
    assert np.isclose(RateMonitor(500.0).period, 0.002)


def test_rate_monitor_uses_the_timers_schedule_when_given():
    r = RateMonitor(1000.0)
    sched = [0.0, 0.001, 0.002, 0.003, 0.006, 0.007]  # the timer skipped the ticks due at 4 and 5 ms
    late = [0.0001, 0.0001, 0.0009, 0.0029, 0.0001, 0.0001]  # a tick 0.9 ms late is late, not missed
    for k, (e, d) in enumerate(zip(sched, late)):
        r.tick(e + d, expected=e, actual=e + d)
    assert r.missed == 2 and r.ticks == 6
    assert r.lateness.summary().max == pytest.approx(0.0029)


def test_rate_monitor_counts_a_gap_longer_than_outage_s_as_an_outage_not_missed_ticks():
    r = RateMonitor(1000.0, outage_s=0.1)
    stamps = [0.0, 0.001, 0.003, 0.004, 0.5, 0.501]  # one state lost (2 ms), then the input stopped for 0.5 s
    for e in stamps:
        r.tick(e + 0.0002, expected=e, actual=e + 0.0002)
    assert r.missed == 1 and r.outages == 1 and r.ticks == 6
    r2 = RateMonitor(1000.0, outage_s=0.1)  # without a schedule: from the tick times
    for t in (0.0, 0.001, 0.003, 0.3):
        r2.tick(t)
    assert r2.missed == 1 and r2.outages == 1
