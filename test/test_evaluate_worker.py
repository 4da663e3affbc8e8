"""The gate's persistent evaluation worker: the same results as a fresh process, one process across calls,
errors reported without killing it, and a dead worker replaced."""
import os

import pytest

from vla_rl_ros.learner.evaluate import PersistentEvaluator, evaluate_onnx
from vla_rl_ros.runtime.paths import resolve_path

MODEL = resolve_path("models/reach_bc.onnx")


@pytest.fixture
def worker():
    ev = PersistentEvaluator(timeout_s=300)
    yield ev
    ev.close()


def test_same_results_as_in_process_and_one_process_across_calls(worker):
    a = worker(MODEL, "reach", 3, 1_000_000)
    pid = worker._proc.pid
    b = worker(MODEL, "reach", 3, 1_000_000)
    assert worker._proc.pid == pid  # no new process for the second call
    ref = evaluate_onnx(MODEL, "reach", 3, 1_000_000)
    assert a.successes == b.successes == ref.successes
    assert a.lengths == ref.lengths and a.returns == pytest.approx(ref.returns)


def test_an_error_is_reported_and_the_worker_keeps_serving(worker, tmp_path):
    bad = tmp_path / "not_a_model.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="not_a_model.onnx"):
        worker(str(bad), "reach", 1, 0)
    pid = worker._proc.pid
    assert worker(MODEL, "reach", 1, 0).episodes == 1 and worker._proc.pid == pid


def test_a_dead_worker_is_replaced(worker):
    worker(MODEL, "reach", 1, 0)
    old = worker._proc.pid
    os.kill(old, 9)
    worker._proc.join(5)
    assert worker(MODEL, "reach", 1, 0).episodes == 1 and worker._proc.pid != old


def test_ctrl_c_is_left_to_the_parent(worker):
    """Ctrl-C at the terminal reaches the worker too; it keeps serving (the learner shuts it down by closing the
    pipe) instead of dying with a KeyboardInterrupt traceback in the user's log."""
    import signal

    worker(MODEL, "reach", 1, 0)
    pid = worker._proc.pid
    os.kill(pid, signal.SIGINT)
    worker._proc.join(1)
    assert worker._proc.is_alive()
    assert worker(MODEL, "reach", 1, 0).episodes == 1 and worker._proc.pid == pid
    proc = worker._proc
    worker.close()
    assert not proc.is_alive() and proc.exitcode == 0
