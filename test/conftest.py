"""Shared fixtures: an isolated ROS 2 environment per test, node processes, an in-test probe node.

* ``ros_env``: a ``ROS_DOMAIN_ID`` reserved for this test alone (a lock file per
  id under the temp dir, so concurrent pytest runs on this machine never share
  one) and ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``; both are also set in
  this process's environment for the test's duration.
* ``launch``: ``launch("twin_node", params)`` starts ``python -m
  vla_rl_ros.nodes.twin_node --ros-args --params-file ...`` in its own process
  with that environment, capturing its log; every process is stopped at
  teardown (SIGINT, then SIGKILL) and its log printed when the test failed.
* ``probe``: an rclpy node in the test process (own context, spun in a
  background thread) with helpers to publish, collect messages and wait.
* ``params_file(path, base, common, **sections)``: a params file = a config/*.yaml's
  ``/**`` section (the arm) and node sections, merged with overrides.
"""
from __future__ import annotations

import copy
import fcntl
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(REPO, "test") not in sys.path:
    sys.path.insert(0, os.path.join(REPO, "test"))

_LOCK_DIR = os.path.join(tempfile.gettempdir(), "vla_rl_ros_domain_locks")


def reserve_domain_id() -> tuple[int, object]:
    """A ROS_DOMAIN_ID no other cooperating process holds (1..200), with its lock file handle."""
    os.makedirs(_LOCK_DIR, exist_ok=True)
    ids = list(range(1, 201))
    random.Random(os.getpid() ^ time.monotonic_ns()).shuffle(ids)
    for i in ids:
        f = open(os.path.join(_LOCK_DIR, f"{i}.lock"), "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        return i, f
    raise RuntimeError("no free ROS_DOMAIN_ID in 1..200")


@dataclass
class RosEnv:
    domain_id: int
    env: dict = field(repr=False)


@pytest.fixture
def ros_env(monkeypatch):
    domain, lock = reserve_domain_id()
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOCALHOST_ONLY="0",
               PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    try:
        yield RosEnv(domain, env)
    finally:
        lock.close()


# ----------------------------------------------------------------------------- params
def load_config(name: str) -> dict:
    with open(os.path.join(REPO, "config", name)) as f:
        return yaml.safe_load(f)


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def params_file(path, base: str | None = "sim.yaml", common: dict | None = None, **sections: dict) -> str:
    """Write a params file: the ``base`` config's ``/**`` section (the arm, for every node) merged with ``common``,
    then its sections for the named nodes, merged with ``sections``. A ``twin_node`` section gets ``gap_scale: 0.0``
    unless the test sets it: a test's twin is the gate's twin exactly (no reality gap) unless it asks for one."""
    cfg = load_config(base) if base else {}
    doc = {}
    shared = _merge(cfg.get("/**", {}).get("ros__parameters", {}), common or {})
    if shared:
        doc["/**"] = {"ros__parameters": shared}  # first: a node's own section overrides it
    for node, overrides in sections.items():
        params = cfg.get(node, {}).get("ros__parameters", {})
        if node == "twin_node":
            params = {**params, "gap_scale": 0.0}
        doc[node] = {"ros__parameters": _merge(params, overrides or {})}
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return str(path)


# ----------------------------------------------------------------------------- processes
class NodeProcess:
    """A node executable in its own process, with its log captured to a file."""

    def __init__(self, executable: str, params: str | None, env: dict, log_path: str, extra_ros_args=()):
        self.name = executable
        self.log_path = log_path
        cmd = [sys.executable, "-m", f"vla_rl_ros.nodes.{executable}", "--ros-args"]
        if params:
            cmd += ["--params-file", params]
        cmd += list(extra_ros_args)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (a clean rclpy shutdown), then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def launch(ros_env, tmp_path, request):
    procs: list[NodeProcess] = []

    def start(executable: str, params: str | None = None, extra_ros_args=()) -> NodeProcess:
        p = NodeProcess(executable, params, ros_env.env, str(tmp_path / f"{executable}_{len(procs)}.log"), extra_ros_args)
        procs.append(p)
        return p

    yield start
    codes = [(p, p.stop()) for p in procs]
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        for p, code in codes:
            print(f"\n===== {p.name} (exit {code}) log =====\n{p.log()[-6000:]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


# ----------------------------------------------------------------------------- probe node
class Probe:
    """An rclpy node in the test process. Collected messages are appended to lists under a lock."""

    def __init__(self, domain_id: int):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("test_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.msgs: dict[str, list] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if self._stop:
                    return
                raise

    def collect(self, topic: str, msg_type, qos=None, key: str | None = None, keep: int = 100000):
        """Record (receive monotonic time, msg) pairs of ``topic`` in ``self.msgs[key or topic]``."""
        from rclpy.qos import qos_profile_sensor_data

        key = key or topic
        self.msgs.setdefault(key, [])

        def cb(msg):
            with self.lock:
                lst = self.msgs[key]
                lst.append((time.monotonic(), msg))
                if len(lst) > keep:
                    del lst[: len(lst) - keep]

        return self.node.create_subscription(msg_type, topic, cb, qos if qos is not None else qos_profile_sensor_data)

    def get(self, key: str) -> list:
        with self.lock:
            return list(self.msgs.get(key, []))

    def clear(self, key: str) -> None:
        with self.lock:
            self.msgs[key] = []

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition", poll: float = 0.05):
        """Poll ``predicate()`` until it returns a truthy value; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = predicate()
            if v:
                return v
            time.sleep(poll)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")

    def publisher(self, topic: str, msg_type, qos=None):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        return self.node.create_publisher(msg_type, topic, qos if qos is not None else QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE))

    def close(self):
        self._stop = True
        self._thread.join(timeout=2.0)
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


@pytest.fixture
def probe(ros_env):
    p = Probe(ros_env.domain_id)
    yield p
    p.close()
