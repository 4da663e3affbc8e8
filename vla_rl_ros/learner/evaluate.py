"""Seeded evaluation of a policy in the gymnasium twin (headless).

Used by ``vla-rl-ros eval``, by the shipped-model recipe and by the learner's
twin gate. Episode ``i`` of an evaluation uses seed ``seed + i``, so two
policies evaluated with the same seed face exactly the same episodes (paired
comparison, see :mod:`vla_rl_ros.learner.gate`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np


@dataclass
class EvalResult:
    task: str
    episodes: int
    seed: int
    successes: list[bool] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.successes)) if self.successes else 0.0

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else 0.0

    def wilson_interval(self, z: float = 1.96) -> tuple[float, float]:
        """95% Wilson score interval of the success rate."""
        n = len(self.successes)
        if n == 0:
            return 0.0, 1.0
        p = self.success_rate
        den = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / den
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
        return max(0.0, centre - half), min(1.0, centre + half)

    def summary(self) -> dict:
        lo, hi = self.wilson_interval()
        return {
            "task": self.task, "episodes": self.episodes, "seed": self.seed,
            "success_rate": self.success_rate, "success_ci95": [lo, hi],
            "mean_return": self.mean_return, "mean_length": float(np.mean(self.lengths)) if self.lengths else 0.0,
        }

    def to_json(self) -> str:
        d = asdict(self)
        d.update(self.summary())
        return json.dumps(d)


def onnx_actor(model_path: str) -> Callable[[np.ndarray], np.ndarray]:
    """The model as ``policy_node`` would run it: loaded and validated (spec, shapes, finite test inference)."""
    from ..runtime.onnx_policy import load_validated

    return load_validated(model_path, None, None).act


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray],
    task: str,
    episodes: int = 50,
    seed: int = 10_000,
    progress: bool = False,
    env=None,
    desc: str = "eval",
) -> EvalResult:
    """Run ``episodes`` seeded episodes of ``task`` with ``policy`` (deterministic)."""
    from tqdm import tqdm

    from ..twin.env import TwinEnv

    own = env is None
    env = env or TwinEnv(task=task)
    res = EvalResult(task=task, episodes=episodes, seed=seed)
    try:
        for i in tqdm(range(episodes), desc=desc, disable=not progress, unit="ep"):
            obs, info = env.reset(seed=seed + i)
            done, ret, n = False, 0.0, 0
            while not done:
                obs, r, term, trunc, info = env.step(policy(obs))
                ret += r
                n += 1
                done = term or trunc
            res.successes.append(bool(info["is_success"]))
            res.returns.append(float(ret))
            res.lengths.append(n)
    finally:
        if own:
            env.close()
    return res


def evaluate_onnx(model_path: str, task: str, episodes: int = 50, seed: int = 10_000, progress: bool = False) -> EvalResult:
    return evaluate_policy(onnx_actor(model_path), task, episodes=episodes, seed=seed, progress=progress,
                           desc=f"eval {task}")


def _worker(model_path: str, task: str, episodes: int, seed: int, conn) -> None:  # pragma: no cover - subprocess
    try:
        res = evaluate_onnx(model_path, task, episodes, seed)
        conn.send(("ok", res.to_json()))
    except Exception as e:  # report, never hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def evaluate_onnx_in_subprocess(model_path: str, task: str, episodes: int, seed: int, timeout_s: float = 600.0) -> EvalResult:
    """Evaluate in a separate worker process (spawned), so PyBullet and ORT never share the learner's process."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_worker, args=(model_path, task, episodes, seed, child), daemon=True)
    p.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise TimeoutError(f"evaluation of {model_path} took more than {timeout_s:.0f} s")
        status, payload = parent.recv()
    finally:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    if status != "ok":
        raise RuntimeError(f"evaluation of {model_path} failed: {payload}")
    d = json.loads(payload)
    return EvalResult(task=d["task"], episodes=d["episodes"], seed=d["seed"], successes=d["successes"],
                      returns=d["returns"], lengths=d["lengths"])
