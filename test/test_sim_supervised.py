"""Supervised nodes in a live `vla-rl-ros sim`: kill -9 the recorder, the learner, the policy and the twin in turn.

After each kill the stack carries on by itself: the supervisor restarts the node, nothing the store had committed
is lost or changed, the episode in flight is closed as ``crash``, the learner resumes from its checkpoint with the
incumbent model kept, and new episodes are recorded. Kills are timed by events (an episode a few steps in), not
by the clock.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from vla_rl_ros.buffer import connect
from vla_rl_ros.learner.registry import Registry

from ros_helpers import stop_sim

KILLED = ("recorder_node", "learner_node", "policy_node", "twin_node")  # every node of the reach sim
MAX_RESTARTS = 2


def _dead(pid: int) -> bool:
    """Gone, or a zombie its parent (the sim's supervisor) has not reaped yet: it runs no more code."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _sim(ros_env, tmp_path, run):
    cmd = [sys.executable, "-m", "vla_rl_ros.cli", "sim", "--task", "reach", "--run", str(run),
           "--domain-id", str(ros_env.domain_id), "--max-restarts", str(MAX_RESTARTS),
           "--restart-backoff", "0.5", "--restart-backoff-max", "0.5",
           # a SAC learner that trains and checkpoints within seconds, and proposes no candidate (the incumbent
           # stays the starting model, so that "kept" is exact); no monitor evaluations to share the CPU with
           "--set", "learner_node.algo:=sac", "--set", "learner_node.min_transitions:=100",
           "--set", "learner_node.batch_size:=64", "--set", "learner_node.demo_ratio:=0.0",
           "--set", "learner_node.checkpoint_every_s:=1.0",
           "--set", "learner_node.candidate_every_updates:=1000000000", "--set", "learner_node.monitor_episodes:=0"]
    log = open(tmp_path / "sim.log", "w")
    proc = subprocess.Popen(cmd, env=ros_env.env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, log


class Store:
    """Read-only looks at the run's store while the recorder writes it."""

    def __init__(self, path):
        self.path = path

    def query(self, sql, args=()):
        if not os.path.isfile(self.path):
            return []
        con = connect(self.path, readonly=True)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def open_episode(self):
        """(id, committed steps) of the episode in flight, or None."""
        rows = self.query("SELECT e.id, COUNT(s.id) FROM episodes e LEFT JOIN steps s ON s.episode_id = e.id "
                          "WHERE e.end_reason IS NULL GROUP BY e.id")
        return rows[0] if rows else None

    def finished_after(self, ep_id):
        """Episodes after ``ep_id`` that ended by themselves (success or timeout)."""
        return self.query("SELECT id FROM episodes WHERE id > ? AND end_reason IN ('success', 'timeout')", (ep_id,))

    def end_reason(self, ep_id):
        return self.query("SELECT end_reason FROM episodes WHERE id = ?", (ep_id,))[0][0]

    def steps(self):
        """Every committed transition, by id: what must survive unchanged (the flags may change: the last step of
        an episode closed as crash is marked truncated)."""
        return {r[0]: r[1:] for r in self.query("SELECT id, episode_id, t, obs, action, reward, next_obs FROM steps")}

    def model_versions_after(self, ep_id):
        return {r[0] for r in self.query("SELECT DISTINCT model_version FROM steps WHERE episode_id > ?", (ep_id,))}


def test_the_sim_carries_on_after_kill_9_of_each_node(ros_env, tmp_path):
    run = tmp_path / "run"
    store = Store(run / "buffer.sqlite")
    ckpt = run / "checkpoints" / "learner_sac.pt"
    proc, log = _sim(ros_env, tmp_path, run)

    def text(path=tmp_path / "sim.log") -> str:
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def node_log(name):
        return text(run / "logs" / f"{name}.log")

    def wait(pred, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"sim exited while waiting for {what}:\n{text()[-3000:]}"
            v = pred()
            if v:
                return v
            time.sleep(0.05)
        pytest.fail(f"timed out after {timeout} s waiting for {what}\n{text()[-3000:]}")

    def pid(name) -> int:
        found = re.findall(rf"\[sim\] (?:started {name} \(pid (\d+)\)|restarted {name} \(\d+/\d+\), pid (\d+))",
                           text())
        return int("".join(found[-1]))

    in_flight = 0
    try:
        wait(lambda: len(store.finished_after(0)) >= 2, 240, "two episodes of the running sim")
        incumbent = wait(lambda: Registry(run / "models").incumbent(), 60, "the learner's incumbent")["version"]
        for name in KILLED:
            if name == "learner_node":
                wait(ckpt.exists, 120, "the learner's first checkpoint")
                resumed_before = node_log(name).count("resumed from")
            # kill while an episode is in flight, a few steps in (far from its end: it cannot end by itself before
            # the loss is seen)
            ep, _ = wait(lambda: (lambda e: e if e and 1 <= e[1] <= 8 else None)(store.open_episode()), 120,
                         f"an episode a few steps in, to kill {name} in")
            before = store.steps()
            old = pid(name)
            os.kill(old, signal.SIGKILL)
            wait(lambda: _dead(old), 10, f"{name} (pid {old}) gone")
            time.sleep(0.3)  # steps already on the wire reach the recorder (the supervisor waits 0.5 s to restart)
            # On a starved machine the episode may reach its goal between the look and the kill: then nothing
            # was in flight, and there is nothing to close as crash. Counted, and at least one must be in flight.
            ended_before_kill = store.end_reason(ep)
            wait(lambda: pid(name) != old, 60, f"{name} restarted")
            assert f"restarted {name} (1/{MAX_RESTARTS})" in text()

            # the stack carries on by itself: new episodes, from the restarted node's graph
            new = wait(lambda: (lambda f: f if len(f) >= 2 else None)(store.finished_after(ep)), 180,
                       f"two new episodes after {name}'s restart")
            after = store.steps()
            lost = [i for i in before if i not in after]
            changed = [i for i in before if i in after and after[i] != before[i]]
            assert not lost and not changed, f"{name}: {len(lost)} committed transitions lost, {len(changed)} changed"
            if name != "learner_node" and ended_before_kill is None:  # the learner writes no episode
                assert store.end_reason(ep) == "crash", f"{name}: episode {ep} was closed as {store.end_reason(ep)}"
                in_flight += 1
            if name == "recorder_node":
                assert "left open by a crash" in node_log(name)
            if name == "learner_node":
                log_text = wait(lambda: (lambda t: t if t.count("resumed from") > resumed_before else None)(
                    node_log(name)), 60, "the restarted learner resuming")
                updates = int(re.findall(r"resumed from \S+: (\d+) updates", log_text)[-1])
                assert updates > 0, "the learner resumed from an empty checkpoint"
            assert Registry(run / "models").incumbent()["version"] == incumbent, f"{name}: the incumbent changed"
            assert store.model_versions_after(ep) == {incumbent}, f"{name}: the arm runs another model"
        assert in_flight >= 1, "every kill came after its episode had ended: the crash close was never checked"
        con_ok = store.query("PRAGMA integrity_check")
        assert con_ok == [("ok",)]
    finally:
        stop_sim(proc, text())
        log.close()
    t = text()
    assert proc.returncode == 0, t[-3000:]
    assert "stopping the stack" not in t
    summary = re.findall(r"\[sim\] stopping; .*", t)[-1]
    assert all(f"{name} 1/{MAX_RESTARTS}" in summary for name in KILLED), summary
