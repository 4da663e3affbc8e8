"""Seeded evaluation of a policy in the gymnasium twin (headless).

Used by ``vla-rl-ros eval``, by the shipped-model recipe and by the learner's
twin gate. Episode ``i`` of an evaluation uses seed ``seed + i``, so two
policies evaluated with the same seed face exactly the same episodes (paired
comparison, see :mod:`vla_rl_ros.learner.gate`).

The twin is the arm's: built from a spec (joints, links, action layout, scales),
a URDF and a scene (:class:`TwinConfig`). An ONNX model is evaluated in the twin
of the spec it is given (the run's, for the gate and the monitor; the model then
must carry exactly that spec) or, when none is given, of the spec the model
itself carries, with ``task`` as the task. Without a URDF the twin's arm is the
Panda from pybullet_data.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from ..spec import Spec


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


@dataclass(frozen=True)
class TwinConfig:
    """The twin an evaluation runs in: the arm's spec (``None``: the evaluated model's own), its URDF
    (``None``: the Panda from pybullet_data), the scene (``None``: ``sim/panda_table.yaml``) and the home
    posture (``None``: the arm's default, vla_rl_ros/arm.py). Picklable, so it travels to the evaluation
    worker processes. :meth:`vla_rl_ros.arm.Arm.twin` makes one from a params file's arm."""

    spec: "Spec | None" = None
    urdf_path: str | None = None
    scene: str | None = None
    home: tuple[float, ...] | None = None

    def env(self, task: str, spec: "Spec | None" = None):
        """A :class:`~vla_rl_ros.twin.env.TwinEnv` for ``task`` (``spec``, when given, overrides this spec)."""
        from ..twin.env import TwinEnv

        s = spec or self.spec
        if s is None:
            return TwinEnv(task=task, urdf_path=self.urdf_path, scene=self.scene, home=self.home)
        return TwinEnv(spec=s if s.task == task else s.replace(task=task), urdf_path=self.urdf_path,
                       scene=self.scene, home=self.home)


def onnx_actor(model_path: str, spec: "Spec | None" = None) -> Callable[[np.ndarray], np.ndarray]:
    """The model as ``policy_node`` would run it: loaded and validated (spec, shapes, finite test inference).
    With ``spec`` the model must carry exactly that spec (else :class:`~vla_rl_ros.runtime.onnx_policy.ModelRejected`
    lists what differs)."""
    return _load(model_path, spec).act


class ChunkActor:
    """A VLA-shaped model (:class:`~vla_rl_ros.runtime.onnx_policy.ChunkPolicy`) in the gym twin, executed as
    ``policy_node`` executes it: its chunks through a :class:`~vla_rl_ros.runtime.chunks.ChunkExecutor` on the
    twin's clock (one env step = ``1 / control_hz``), a new inference once the newest chunk has run
    ``replan_steps`` steps, each from the step's observation and the twin camera's frame, after ``latency_s``
    of simulated inference time. ``instruction``: the vocabulary index given to the model."""

    def __init__(self, policy, env=None, *, mode: str = "receding", replan_steps: int = 0, latency_s: float = 0.0,
                 instruction: int = 0, render_size: tuple[int, int] = (640, 480)):
        from ..runtime.chunks import ChunkExecutor

        self.policy, self.env, self.spec = policy, env, policy.spec
        s = self.spec
        self.chunks = ChunkExecutor(s.chunk_len, s.chunk_rate_hz, s.action_dim, mode=mode)
        self.replan = replan_steps or (1 if mode == "ensemble" else max(1, s.chunk_len // 2))
        self.latency, self.instruction, self.render_size = float(latency_s), int(instruction), render_size
        self.dt = 1.0 / s.control_hz
        self._out = np.zeros(s.action_dim)
        self.reset()

    def reset(self) -> None:
        self.chunks.clear()
        self._t = 0.0
        self._pending = None  # (ready at, chunk, obs stamp)

    def _frames(self) -> None:
        from ..runtime.images import prepare

        for im in self.spec.images:
            if self.env is None:
                raise ValueError("a model with camera inputs needs the twin env to render its frames")
            w, h = (im.width, im.height) if not im.crop else self.render_size
            frame = self.env.unwrapped.twin.render(w, h)
            prepare(frame, im, "rgb8", self.policy.image_input(im.name))

    def act(self, obs: np.ndarray) -> np.ndarray:
        t = self._t
        if self._pending is not None and t >= self._pending[0]:
            self.chunks.submit(self._pending[1], self._pending[2])
            self._pending = None
        if self._pending is None and self.chunks.steps_done(t) >= self.replan:
            self._frames()
            chunk = self.policy.act_chunk(obs, self.instruction if self.spec.instructions else -1)
            if self.latency <= 0.0:
                self.chunks.submit(chunk, t)
            else:
                self._pending = (t + self.latency, chunk, t)
        if not self.chunks.sample(t, self._out):  # starved (only with latency): the arm holds, as on the robot
            self._out[:] = 0.0
        self._t = t + self.dt
        return self._out.astype(np.float32)

    __call__ = act


def _load(model_path: str, spec: "Spec | None"):
    from ..runtime.onnx_policy import load_validated

    return load_validated(model_path, None, spec)


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray],
    task: str,
    episodes: int = 50,
    seed: int = 10_000,
    progress: bool = False,
    env=None,
    desc: str = "eval",
    twin: TwinConfig | None = None,
) -> EvalResult:
    """Run ``episodes`` seeded episodes of ``task`` with ``policy`` (deterministic), in ``env`` or else in a
    twin built from ``twin`` (default: the Panda's)."""
    from tqdm import tqdm

    own = env is None
    env = env or (twin or TwinConfig()).env(task)
    res = EvalResult(task=task, episodes=episodes, seed=seed)
    reset = getattr(policy, "reset", None) or getattr(getattr(policy, "__self__", None), "reset", None)
    try:
        for i in tqdm(range(episodes), desc=desc, disable=not progress, unit="ep"):
            obs, info = env.reset(seed=seed + i)
            if reset is not None:  # a chunked actor starts each episode without a chunk
                reset()
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


def evaluate_onnx(model_path: str, task: str, episodes: int = 50, seed: int = 10_000, progress: bool = False,
                  twin: TwinConfig | None = None) -> EvalResult:
    """The model in the twin of ``twin.spec`` (the model must carry it) or, without one, of the model's own
    spec; ``twin`` also names the URDF and scene."""
    twin = twin or TwinConfig()
    policy = _load(model_path, twin.spec)
    env = twin.env(task, twin.spec or policy.spec)
    actor = ChunkActor(policy, env).act if policy.chunked else policy.act
    try:
        return evaluate_policy(actor, task, episodes=episodes, seed=seed, progress=progress, env=env,
                               desc=f"eval {task}")
    finally:
        env.close()


def _leave_ctrl_c_to_parent() -> None:  # pragma: no cover - subprocess
    """Ctrl-C in a terminal reaches the whole process group. An evaluation worker ignores it: its parent (the
    learner) shuts down and closes the pipe, and the worker ends on that, with no traceback."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker(model_path: str, task: str, episodes: int, seed: int, conn,
            twin: TwinConfig | None = None) -> None:  # pragma: no cover - subprocess
    _leave_ctrl_c_to_parent()
    try:
        res = evaluate_onnx(model_path, task, episodes, seed, twin=twin)
        conn.send(("ok", res.to_json()))
    except Exception as e:  # report, never hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def evaluate_onnx_in_subprocess(model_path: str, task: str, episodes: int, seed: int, timeout_s: float = 600.0,
                                twin: TwinConfig | None = None) -> EvalResult:
    """Evaluate in a separate worker process (spawned), so PyBullet and ORT never share the learner's process.
    ``twin``: as :func:`evaluate_onnx` (the learner's gate passes the run's spec and the arm's URDF and scene)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_worker, args=(model_path, task, episodes, seed, child, twin), daemon=True)
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


def _serve(conn, twin: TwinConfig | None) -> None:  # pragma: no cover - subprocess
    """The persistent worker's loop: one twin per (task, spec), kept; one model load per request."""
    _leave_ctrl_c_to_parent()
    envs: dict = {}
    try:
        while True:
            try:
                req = conn.recv()
            except EOFError:
                return
            if req is None:
                return
            model_path, task, episodes, seed = req
            try:
                t = twin or TwinConfig()
                policy = _load(model_path, t.spec)
                s = t.spec or policy.spec
                key = (task, s.to_json())
                if key not in envs:
                    envs[key] = t.env(task, s)
                actor = ChunkActor(policy, envs[key]).act if policy.chunked else policy.act
                res = evaluate_policy(actor, task, episodes=episodes, seed=seed, env=envs[key])
                conn.send(("ok", res.to_json()))
            except Exception as e:  # report, keep serving
                conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        for env in envs.values():
            env.close()


class PersistentEvaluator:
    """:func:`evaluate_onnx_in_subprocess` without a process spawn and a twin build per call: one worker process
    (spawned on first use, restarted if it dies or times out) keeps its twin between evaluations. The gate calls
    it twice per block of paired episodes, so this saves a process start, the imports and a PyBullet scene per call.

    Call it as ``evaluate_onnx_in_subprocess(model_path, task, episodes, seed)``. Not thread-safe: one caller."""

    def __init__(self, twin: TwinConfig | None = None, timeout_s: float = 600.0):
        self.twin = twin
        self.timeout_s = float(timeout_s)
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_serve, args=(child, self.twin), daemon=True)
        self._proc.start()
        child.close()

    def __call__(self, model_path: str, task: str, episodes: int, seed: int) -> EvalResult:
        if self._proc is None or not self._proc.is_alive():
            self.close()
            self._start()
        try:
            self._conn.send((str(model_path), task, int(episodes), int(seed)))
            if not self._conn.poll(self.timeout_s):
                raise TimeoutError(f"evaluation of {model_path} took more than {self.timeout_s:.0f} s")
            status, payload = self._conn.recv()
        except (TimeoutError, EOFError, OSError, BrokenPipeError) as e:
            self.close()  # a stuck or dead worker is replaced on the next call
            raise RuntimeError(f"evaluation of {model_path} failed: {type(e).__name__}: {e}") from e
        if status != "ok":
            raise RuntimeError(f"evaluation of {model_path} failed: {payload}")
        d = json.loads(payload)
        return EvalResult(task=d["task"], episodes=d["episodes"], seed=d["seed"], successes=d["successes"],
                          returns=d["returns"], lengths=d["lengths"])

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()
            self._proc = None

    def __del__(self):  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass
