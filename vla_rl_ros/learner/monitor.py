"""The promotion monitor (ROS-free): every model the arm runs, measured on ONE fixed block of seeded twin episodes.

The gate compares a candidate with the incumbent on a *fresh* block of seeds each time, and only the winners
are promoted, so the gate's figure of a promoted model is biased upwards (it won on those seeds). The monitor
gives the curve a user can trust: the initial incumbent and every promoted model are evaluated, one after the
other, on the *same* episodes (seed ``seed + i`` for episode ``i``; default seeds 20_000.., disjoint from the
demos' 0.., the ``eval`` default 10_000.., the sim's twin 100_000.. and the gate's 1_000_000..), with the
deterministic policy, exactly as ``vla-rl-ros eval`` would.

It never blocks learning or the gate: a daemon thread takes model versions from a queue and evaluates them one
at a time in a spawned worker process at low priority (``os.nice``), so the evaluation only gets the CPU the
learner, the gate and the ROS processes leave. Each result is appended as one JSON line to
``<run>/models/monitor.jsonl`` (a single ``write`` in append mode, then ``fsync``; readers skip a torn last
line)::

    {"version", "path", "task", "episodes", "seed", "success_rate", "successes", "success_ci95": [lo, hi],
     "mean_return", "reason", "queued", "started", "finished", "wall_s", "cached", "error"}

Times are wall-clock seconds (``time.time()``). A model that cannot be evaluated (missing file, bad model, a
crashed or timed-out worker) gives a record with ``error`` set and ``success_rate`` ``None``, never an
exception in the caller. A version already measured with the same task, episodes and seed (a restarted
learner re-submitting its incumbent) is not evaluated again: its result is re-recorded with ``cached: true``.
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .evaluate import EvalResult, TwinConfig
from .registry import read_jsonl

MONITOR_SEED = 20_000
MONITOR_FILE = "monitor.jsonl"


def _worker(model_path: str, task: str, episodes: int, seed: int, niceness: int, conn,
            twin: TwinConfig | None = None) -> None:  # pragma: no cover
    """Subprocess entry: lower our priority, then the evaluation worker the gate uses."""
    try:
        os.nice(niceness)
    except (OSError, AttributeError):
        pass
    from .evaluate import _worker as eval_worker

    eval_worker(model_path, task, episodes, seed, conn, twin)


def evaluate_niced(model_path: str, task: str, episodes: int, seed: int, niceness: int = 10,
                   timeout_s: float = 3600.0, cancel: threading.Event | None = None,
                   twin: TwinConfig | None = None) -> EvalResult:
    """:func:`~.evaluate.evaluate_onnx` in a spawned worker process running at ``os.nice(niceness)``, in the twin
    ``twin`` describes (the run's spec, the arm's URDF and scene; default: the model's spec, the Panda).

    Raises ``RuntimeError`` (failed evaluation), ``TimeoutError``, or ``InterruptedError`` when ``cancel`` is
    set (the worker is killed)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    # the policy runs single-threaded ONNX Runtime (runtime.onnx_policy), the twin is PyBullet DIRECT
    p = ctx.Process(target=_worker, args=(model_path, task, episodes, seed, niceness, child, twin), daemon=True)
    p.start()
    child.close()
    deadline = time.monotonic() + timeout_s
    try:
        while not parent.poll(0.5):
            if cancel is not None and cancel.is_set():
                raise InterruptedError("monitor stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(f"evaluation of {model_path} took more than {timeout_s:.0f} s")
            if not p.is_alive() and not parent.poll(0.1):
                raise RuntimeError(f"evaluation worker died (exit code {p.exitcode})")
        status, payload = parent.recv()
    finally:
        p.join(timeout=2)
        if p.is_alive():
            p.kill()
            p.join(timeout=2)
        parent.close()
    if status != "ok":
        raise RuntimeError(f"evaluation of {model_path} failed: {payload}")
    d = json.loads(payload)
    return EvalResult(task=d["task"], episodes=d["episodes"], seed=d["seed"], successes=d["successes"],
                      returns=d["returns"], lengths=d["lengths"])


def read_monitor(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``monitor.jsonl`` (a file or the models folder holding it); a torn line is skipped."""
    p = Path(path)
    return read_jsonl(p / MONITOR_FILE if p.is_dir() else p)


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single ``write`` (O_APPEND) and ``fsync`` it. After a torn last line (a crash
    mid-write) the record starts on a new line, so only the torn one is lost."""
    data = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class PromotionMonitor:
    """Queue of model versions, evaluated one at a time on the same seeded block; results to ``monitor.jsonl``.

    ``submit()`` returns at once. ``start()`` runs the queue in a daemon thread; ``run_pending()`` runs it in
    the caller's thread (tests). ``on_result(record)`` is called from that thread after each record is written.
    ``evaluate(model_path, task, episodes, seed) -> EvalResult`` replaces the niced worker process (tests).
    ``twin``: the twin the models are measured in (:class:`~.evaluate.TwinConfig`: the run's spec, the arm's
    URDF and scene); default: each model's own spec on the Panda."""

    def __init__(self, models_dir: str | Path, task: str, episodes: int = 50, seed: int = MONITOR_SEED, *,
                 on_result: Callable[[dict], None] | None = None, evaluate: Callable | None = None,
                 niceness: int = 10, timeout_s: float = 3600.0, log: Callable[[str], None] = print,
                 twin: TwinConfig | None = None):
        if episodes <= 0:
            raise ValueError(f"episodes must be positive, got {episodes}")
        self.dir = Path(models_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / MONITOR_FILE
        self.task, self.episodes, self.seed = task, int(episodes), int(seed)
        self.on_result = on_result
        self.niceness, self.timeout_s = int(niceness), float(timeout_s)
        self.log = log
        self._evaluate = evaluate
        self.twin = twin
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.busy: str | None = None  # the version being evaluated now
        self.done = 0
        self.last: dict | None = None

    # ------------------------------------------------------------ API
    def submit(self, version: str, path: str, reason: str = "promoted", queued: float | None = None) -> None:
        self._queue.put({"version": version, "path": str(path), "reason": reason,
                         "queued": time.time() if queued is None else float(queued)})

    @property
    def pending(self) -> int:
        return self._queue.qsize() + (1 if self.busy else 0)

    def records(self) -> list[dict[str, Any]]:
        return read_monitor(self.path)

    def start(self) -> "PromotionMonitor":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="promotion-monitor", daemon=True)
            self._thread.start()
        return self

    def run_pending(self) -> list[dict[str, Any]]:
        """Evaluate everything queued, in this thread; return the new records."""
        out = []
        while not self._stop.is_set():
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            out.append(self._process(item))
        return out

    def close(self, timeout: float = 5.0) -> None:
        """Stop: a running evaluation is cancelled (its worker killed); nothing is recorded for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    # ------------------------------------------------------------ internals
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._process(item)

    def _cached(self, version: str) -> dict | None:
        for r in reversed(self.records()):
            if (r.get("version") == version and r.get("error") is None and r.get("success_rate") is not None
                    and r.get("task") == self.task and r.get("episodes") == self.episodes
                    and r.get("seed") == self.seed):
                return r
        return None

    def _process(self, item: dict) -> dict | None:
        version, path = item["version"], item["path"]
        self.busy = version
        started = time.time()
        rec: dict[str, Any] = {"version": version, "path": path, "task": self.task, "episodes": self.episodes,
                               "seed": self.seed, "success_rate": None, "successes": None, "success_ci95": None,
                               "mean_return": None, "reason": item.get("reason", ""), "queued": item["queued"],
                               "started": started, "cached": False, "error": None}
        try:
            prev = self._cached(version)
            if prev is not None:
                rec.update({k: prev[k] for k in ("success_rate", "successes", "success_ci95", "mean_return")},
                           cached=True)
            else:
                if self._evaluate is not None:
                    res = self._evaluate(path, self.task, self.episodes, self.seed)
                else:
                    if not os.path.isfile(path):
                        raise FileNotFoundError(f"model not found: {path}")
                    res = evaluate_niced(path, self.task, self.episodes, self.seed, niceness=self.niceness,
                                         timeout_s=self.timeout_s, cancel=self._stop, twin=self.twin)
                lo, hi = res.wilson_interval()
                rec.update(success_rate=res.success_rate, successes=int(sum(res.successes)),
                           success_ci95=[lo, hi], mean_return=res.mean_return)
        except InterruptedError:
            self.busy = None
            return None  # stopping: no record for an evaluation that did not finish
        except Exception as e:  # a bad model or a failed worker: an error record, never a crash
            rec["error"] = f"{type(e).__name__}: {e}"
        rec["finished"] = time.time()
        rec["wall_s"] = rec["finished"] - started
        try:
            append_record(self.path, rec)
        except OSError as e:
            self.log(f"monitor: could not write {self.path}: {e}")
        self.busy = None
        self.done += 1
        self.last = rec
        if rec["error"]:
            self.log(f"monitor: {version} could not be evaluated: {rec['error']}")
        else:
            lo, hi = rec["success_ci95"]
            self.log(f"monitor: {version} succeeds in {100 * rec['success_rate']:.0f}% "
                     f"[{100 * lo:.0f}-{100 * hi:.0f}] of {self.episodes} fixed twin episodes "
                     f"(seeds {self.seed}..{self.seed + self.episodes - 1}){' (cached)' if rec['cached'] else ''}")
        if self.on_result is not None:
            try:
                self.on_result(rec)
            except Exception as e:
                self.log(f"monitor: on_result failed: {type(e).__name__}: {e}")
        return rec
