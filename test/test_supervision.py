"""The supervisor of vla-rl-ros sim (ROS-free): backoff, limit, start-over, the status, orphans reaped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vla_rl_ros.supervision import Event, RestartPolicy, Supervisor, exit_text, launch_respawn


class FakeProc:
    _next_pid = 1000

    def __init__(self):
        FakeProc._next_pid += 1
        self.pid = FakeProc._next_pid
        self.returncode = None

    def poll(self):
        return self.returncode

    def die(self, code=-9):
        self.returncode = code


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _sup(policy=RestartPolicy(), names=("twin_node", "recorder_node")):
    clock = Clock()
    spawned: list[tuple[str, FakeProc]] = []

    def spawn(name):
        p = FakeProc()
        spawned.append((name, p))
        return p

    sup = Supervisor(spawn, names, policy, clock=clock, kill_group=False)
    sup.start()
    return sup, clock, spawned


def test_backoff_doubles_up_to_its_cap():
    p = RestartPolicy(max_restarts=8, backoff_s=1.0, backoff_max_s=30.0)
    assert [p.delay(n) for n in range(1, 9)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert RestartPolicy(backoff_s=0.0).delay(3) == 0.0
    for bad in (dict(max_restarts=-1), dict(backoff_s=2.0, backoff_max_s=1.0), dict(backoff_s=-1.0),
                dict(stable_s=0.0)):
        with pytest.raises(ValueError):
            RestartPolicy(**bad)


def test_a_dead_node_is_restarted_after_the_backoff_and_the_status_says_so():
    sup, clock, spawned = _sup()
    assert [n for n, _ in spawned] == ["twin_node", "recorder_node"] and sup.status() == ""
    assert sup.poll() == []
    rec = sup.procs["recorder_node"]
    rec.die(-9)
    ev = sup.poll()
    assert ev == [Event("exited", "recorder_node", 1, 5, code=-9, delay_s=1.0)]
    assert ev[0].line() == "recorder_node was killed by SIGKILL; restarting it in 1.0 s (restart 1/5)"
    clock.t = 0.9
    assert sup.poll() == [] and sup.procs["recorder_node"] is rec  # not before its delay
    clock.t = 1.0
    ev = sup.poll()
    new = sup.procs["recorder_node"]
    assert new is not rec and ev == [Event("restarted", "recorder_node", 1, 5, pid=new.pid)]
    assert ev[0].line() == f"restarted recorder_node (1/5), pid {new.pid}"
    assert sup.status() == "recorder_node 1/5"
    assert sup.procs["twin_node"] is spawned[0][1]  # the others untouched


def test_over_its_limit_a_node_stops_the_stack_with_a_clear_message():
    sup, clock, _ = _sup(RestartPolicy(max_restarts=3, backoff_s=1.0, backoff_max_s=3.0))
    delays = []
    for _ in range(3):
        sup.procs["twin_node"].die(1)
        (ev,) = sup.poll()
        assert ev.kind == "exited"
        delays.append(ev.delay_s)
        clock.t += ev.delay_s + 1.0  # dies again soon after each restart
        assert [e.kind for e in sup.poll()] == ["restarted"]
    assert delays == [1.0, 2.0, 3.0] and sup.status() == "twin_node 3/3"
    sup.procs["twin_node"].die(1)
    (ev,) = sup.poll()
    assert ev.kind == "gave_up" and sup.gave_up == "twin_node"
    assert ev.line() == ("twin_node exited with code 1 after 3 restarts, the limit (--max-restarts 3); "
                         "stopping the stack")
    assert sup.poll() == []  # said once


def test_a_node_that_stayed_up_starts_over():
    sup, clock, _ = _sup(RestartPolicy(max_restarts=2, backoff_s=1.0, stable_s=60.0))
    for _ in range(2):
        sup.procs["recorder_node"].die()
        clock.t += sup.poll()[0].delay_s
        sup.poll()
    assert sup.status() == "recorder_node 2/2"
    clock.t += 60.0  # up a minute since its last restart
    sup.procs["recorder_node"].die()
    (ev,) = sup.poll()
    assert ev.kind == "exited" and ev.restarts == 1 and ev.delay_s == 1.0


def test_zero_restarts_is_todays_behaviour():
    sup, _, _ = _sup(RestartPolicy(max_restarts=0))
    sup.procs["twin_node"].die(2)
    assert [e.kind for e in sup.poll()] == ["gave_up"]


def test_exit_text():
    assert exit_text(-int(signal.SIGKILL)) == "was killed by SIGKILL"
    assert exit_text(0) == "exited with code 0"


def test_the_dead_nodes_workers_are_killed_with_it(tmp_path):
    """A node's forked workers (its process group) do not outlive it: the supervisor kills the group."""
    pidfile = tmp_path / "worker.pid"
    code = (f"import os, subprocess, sys; w = subprocess.Popen(['sleep', '60']); "
            f"open({str(pidfile)!r}, 'w').write(str(w.pid)); sys.exit(3)")
    procs = []

    def spawn(name):
        procs.append(subprocess.Popen([sys.executable, "-c", code], start_new_session=True))
        return procs[-1]

    sup = Supervisor(spawn, ["learner_node"], RestartPolicy(backoff_s=60.0, backoff_max_s=60.0))
    sup.start()
    procs[0].wait(30)
    worker = int(pidfile.read_text())
    (ev,) = sup.poll()
    assert ev.kind == "exited" and ev.code == 3
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        if open(f"/proc/{worker}/stat").read().split(")")[1].split()[0] == "Z":  # killed, not yet reaped by init
            break
        time.sleep(0.05)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the dead node's worker is still running")


def test_launch_respawn_arguments():
    p = RestartPolicy(max_restarts=4, backoff_s=2.0)
    kw = launch_respawn(p)
    assert kw["respawn"] is True and kw["respawn_delay"] == 2.0
    assert kw.get("respawn_max_retries", 4) == 4  # only where `launch` has it (Iron and later)
    assert launch_respawn(p, enabled=False) == {"respawn": False}
    assert launch_respawn(p, delay_s=0.5)["respawn_delay"] == 0.5


def test_the_summary_line_names_the_restarted_nodes():
    from vla_rl_ros.commands.sim import summary_line

    assert "restarts" not in summary_line(60.0, [], None, None, None, 0, restarts="")
    line = summary_line(60.0, [], None, None, None, 0, restarts="recorder_node 1/5, twin_node 2/5")
    assert line.endswith("promotions 0  restarts recorder_node 1/5, twin_node 2/5")
