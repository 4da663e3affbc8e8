"""The ONNX policy: a latency-tuned ONNX Runtime session, and the checks a model passes before it runs.

:func:`load_validated` is the only way a model reaches the control loop. It runs
*off* the control path (at start-up and in ``policy_node``'s loader thread) and
rejects, with a :class:`ModelRejected` that says why:

* a file that is missing, empty, truncated or not ONNX;
* a file whose SHA-256 differs from the one announced;
* a model without ``vla_rl_ros.spec`` metadata, or whose spec differs from the
  configured one (the message lists every differing field, :meth:`Spec.diff`);
* inputs/outputs that do not match ``obs_dim`` / ``action_dim``;
* a model whose test inference on a realistic observation fails or is not finite.

The bytes that were hashed are the bytes the session is built from (no second
read of the file), so what was verified is what runs.

:class:`OnnxPolicy` is tuned for batch-1 latency: one intra-op and one inter-op
thread (the control loop owns the other core), sequential execution, all graph
optimisations, no spinning worker threads, and a preallocated input. With
ONNX Runtime 1.32 on this machine plain ``InferenceSession.run`` with a
preallocated feed measured ~18 µs p50 for a 2x256 MLP, against ~53 µs for
``run_with_iobinding`` and ~60-75 µs for ``run_with_ort_values`` (their Python
overhead dominates at this size), so ``run`` is used.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..spec import LINEAGE_KEY, METADATA_KEY, Spec, SpecError

VERSION_KEY = "vla_rl_ros.version"
"""``metadata_props`` key of the model's version string."""

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ModelRejected(Exception):
    """A model failed validation. ``reason`` says why in one line; ``differences`` lists spec mismatches."""

    def __init__(self, path: str, reason: str, differences: list[str] | None = None):
        self.path = path
        self.reason = reason
        self.differences = list(differences or [])
        super().__init__(f"model {path!r} rejected: {reason}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def session_options():
    """ORT session options for single-sample latency on a shared 2-core machine."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: validation reports problems itself
    return so


def available_providers(wanted) -> list[str]:
    """``wanted`` execution providers that this ONNX Runtime has, in order, then ``CPUExecutionProvider``."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    out = [p for p in wanted if p in have and p != "CPUExecutionProvider"]
    return out + ["CPUExecutionProvider"]


def realistic_observation(spec: Spec, kin=None) -> np.ndarray:
    """An in-distribution observation for the test inference: arm at home, object on the table, goal above it.

    With a :class:`~vla_rl_ros.kinematics.Kinematics` the hand position is the
    FK of the home posture; without one it is a nominal point inside the workspace.
    """
    from ..arm import default_home

    q = default_home(spec)
    lo = np.asarray(spec.workspace_low, dtype=np.float64)
    hi = np.asarray(spec.workspace_high, dtype=np.float64)
    mid = 0.5 * (lo + hi)
    if kin is not None:
        q = np.clip(q, kin.lower, kin.upper)
        ee = kin.fk_pos(q)
    else:
        ee = np.array([mid[0], mid[1], lo[2] + 0.75 * (hi[2] - lo[2])])
    obj = np.array([mid[0], mid[1], lo[2] + 0.025])
    goal = np.array([mid[0], mid[1] + 0.1, lo[2] + 0.15])
    return spec.build_observation(q, spec.gripper_open, ee, obj, goal)


@dataclass
class ModelInfo:
    path: str
    sha256: str
    version: str
    spec: Spec
    lineage: Any = None
    metadata: dict[str, str] = field(default_factory=dict)
    size_bytes: int = 0
    load_s: float = 0.0  # wall time of load + validation
    probe_action: np.ndarray | None = None


class OnnxPolicy:
    """A validated model, ready to act. ``act`` is allocation-light and safe to call every control tick.

    Not thread-safe: one caller (the control loop) at a time. Hand a policy to
    the loop by assigning one reference; never mutate a policy that is running.
    """

    chunked = False

    def __init__(self, session, info: ModelInfo, input_name: str, output_name: str, input_rank: int):
        self.session = session
        self.info = info
        self.spec = info.spec
        self.version = info.version
        self.sha256 = info.sha256
        self._input_name = input_name
        self._output_names = [output_name]
        shape = (1, self.spec.obs_dim) if input_rank == 2 else (self.spec.obs_dim,)
        self._x = np.zeros(shape, dtype=np.float32)
        self._x_row = self._x.reshape(-1)
        self._feed = {input_name: self._x}
        self._n_act = self.spec.action_dim
        # The session's C-level run where this ORT has one: InferenceSession.run checks the feed's names and
        # ownership on every call (~10 µs in Python at batch 1), and the feed here is fixed: its one input,
        # checked by load_validated's test inference through the public run.
        sess = getattr(session, "_sess", None)
        self._run = sess.run if sess is not None and callable(getattr(sess, "run", None)) else session.run

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Action for one observation: a float32 ``(action_dim,)`` array owned by the caller."""
        self._x_row[:] = obs
        y = self._run(self._output_names, self._feed, None)[0]
        return y.reshape(-1)[: self._n_act]

    __call__ = act

    def __repr__(self) -> str:
        return f"OnnxPolicy(version={self.version!r}, sha256={self.sha256[:12]}, path={self.info.path!r})"


class ChunkPolicy:
    """A validated VLA-shaped model (:attr:`Spec.vla_shaped`): state, camera images and an instruction in, a chunk
    of ``chunk_len`` actions out. Slow by design (tens to hundreds of ms): ``policy_node`` calls it from its
    inference thread, never from the control tick.

    Inputs (by name): ``obs`` float32 ``(1, obs_dim)``; ``image_<name>`` uint8 ``(1, 3, H, W)`` RGB for each of
    the spec's images; ``instruction`` float32 one-hot ``(1, len(instructions))`` when the spec has a vocabulary.
    Output ``action``: ``(1, K, action_dim)`` or ``(1, K * action_dim)``.
    """

    chunked = True

    def __init__(self, session, info: ModelInfo, output_name: str):
        self.session = session
        self.info = info
        self.spec = spec = info.spec
        self.version = info.version
        self.sha256 = info.sha256
        self._out = [output_name]
        self._obs = np.zeros((1, spec.obs_dim), dtype=np.float32)
        self._feed: dict[str, np.ndarray] = {"obs": self._obs}
        for im in spec.images:
            self._feed[im.input_name] = np.zeros((1, 3, im.height, im.width), dtype=np.uint8)
        self._instr = None
        if spec.instructions:
            self._instr = self._feed["instruction"] = np.zeros((1, len(spec.instructions)), dtype=np.float32)
        self.chunk_len, self.action_dim = spec.chunk_len, spec.action_dim

    def image_input(self, name: str) -> np.ndarray:
        """The preallocated ``(3, H, W)`` uint8 input of camera ``name``: the caller writes the frame into it."""
        return self._feed["image_" + name][0]

    def act_chunk(self, obs: np.ndarray, instruction: int = -1) -> np.ndarray:
        """The chunk for one observation (images already written with :meth:`image_input`): float32 ``(K, A)``."""
        self._obs[0] = obs
        if self._instr is not None:
            self._instr[:] = 0.0
            if instruction >= 0:
                self._instr[0, instruction] = 1.0
        y = self.session.run(self._out, self._feed)[0]
        return np.asarray(y, dtype=np.float32).reshape(self.chunk_len, self.action_dim)

    def __repr__(self) -> str:
        return f"ChunkPolicy(version={self.version!r}, K={self.chunk_len}, sha256={self.sha256[:12]})"


def _validate_chunk_policy(sess, info: ModelInfo, probe_obs, kinematics, warmup: int, t0: float) -> ChunkPolicy:
    """The input/output contract of a VLA-shaped model (:class:`ChunkPolicy`), then a test inference."""
    import time

    spec, path = info.spec, info.path
    want = {"obs": ("tensor(float)", [spec.obs_dim])}
    for im in spec.images:
        want[im.input_name] = ("tensor(uint8)", [3, im.height, im.width])
    if spec.instructions:
        want["instruction"] = ("tensor(float)", [len(spec.instructions)])
    ins = {i.name: i for i in sess.get_inputs()}
    if set(ins) != set(want):
        raise ModelRejected(path, f"model inputs {sorted(ins)} differ from the spec's {sorted(want)}")
    for name, (typ, tail) in want.items():
        i = ins[name]
        shape = list(i.shape)
        if i.type != typ:
            raise ModelRejected(path, f"input {name!r} has type {i.type}, expected {typ}")
        if len(shape) != 1 + len(tail) or any(_dim(a) not in (None, b) for a, b in zip(shape[1:], tail)) \
                or _dim(shape[0]) not in (None, 1):
            raise ModelRejected(path, f"input {name!r} has shape {shape}, expected [1, {', '.join(map(str, tail))}]")
    outs = {o.name: o for o in sess.get_outputs()}
    if "action" not in outs:
        raise ModelRejected(path, f"model has no output named 'action' (outputs: {sorted(outs)})")
    if outs["action"].type != "tensor(float)":
        raise ModelRejected(path, f"output 'action' has type {outs['action'].type}, expected tensor(float)")
    policy = ChunkPolicy(sess, info, "action")
    obs = realistic_observation(spec, kinematics) if probe_obs is None else np.asarray(probe_obs, np.float32).reshape(-1)
    rng = np.random.default_rng(0)
    for im in spec.images:  # a textured probe frame: a model that fails on real pixels fails here
        policy.image_input(im.name)[:] = rng.integers(0, 256, (3, im.height, im.width), dtype=np.uint8)
    try:
        y = np.asarray(sess.run(["action"], policy._feed | {"obs": obs.astype(np.float32).reshape(1, -1)})[0])
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ModelRejected(path, f"test inference failed: {msg}") from e
    if y.size != spec.chunk_len * spec.action_dim:
        raise ModelRejected(path, f"test inference returned shape {list(y.shape)}, expected {spec.chunk_len} x "
                                  f"{spec.action_dim} values (chunk_len x action_dim)")
    if not np.all(np.isfinite(y)):
        raise ModelRejected(path, "test inference on a realistic observation gave a non-finite action chunk")
    for _ in range(min(max(0, int(warmup)), 3)):  # a slow model: a few runs warm it
        policy.act_chunk(obs, 0 if spec.instructions else -1)
    info.probe_action = y.reshape(spec.chunk_len, spec.action_dim)[0].astype(np.float32)
    info.load_s = time.perf_counter() - t0
    return policy


def _dim(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def load_validated(
    path: str,
    expected_sha256: str | None,
    configured_spec: Spec | None,
    *,
    expected_version: str | None = None,
    probe_obs: np.ndarray | None = None,
    kinematics=None,
    warmup: int = 20,
    providers: tuple[str, ...] | list[str] = ("CPUExecutionProvider",),
) -> "OnnxPolicy | ChunkPolicy":
    """Load ``path`` and run every check; return a ready :class:`OnnxPolicy` (a VLA-shaped spec:
    :class:`ChunkPolicy`) or raise :class:`ModelRejected`.

    Args:
        path: the ``.onnx`` file.
        expected_sha256: hex digest the file must have (``None``/``""``: not checked).
        configured_spec: the spec the caller runs with; the model's spec must be equal
            (``None`` accepts the model's own spec, for offline tools).
        expected_version: if given and the model carries ``vla_rl_ros.version``, they must agree.
        probe_obs: observation for the test inference (default :func:`realistic_observation`).
        kinematics: used by the default probe for the hand position.
        warmup: inferences run after the probe so that the first control tick is not the slow first run.
        providers: ONNX Runtime execution providers in order of preference (``CUDAExecutionProvider``,
            ``TensorrtExecutionProvider`` where the robot has them); those this ORT build lacks are skipped
            (:func:`available_providers`), and the CPU is always the last resort.
    """
    import time

    t0 = time.perf_counter()
    path = os.fspath(path)
    if not path:
        raise ModelRejected(path, "no model path given")
    if not os.path.isfile(path):
        raise ModelRejected(path, "file not found" if not os.path.exists(path) else "not a regular file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelRejected(path, f"cannot read file: {e}") from e
    if not data:
        raise ModelRejected(path, "file is empty")
    digest = sha256_bytes(data)
    if expected_sha256:
        want = expected_sha256.strip().lower()
        if not _SHA256_RE.match(want):
            raise ModelRejected(path, f"announced sha256 {expected_sha256!r} is not a 64-digit hex digest")
        if want != digest:
            raise ModelRejected(path, f"sha256 mismatch: expected {want}, file has {digest}")

    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(data, session_options(), providers=available_providers(providers))
    except Exception as e:  # ORT raises InvalidProtobuf, Fail, InvalidGraph, ... for broken files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelRejected(path, f"not a loadable ONNX model (corrupt or truncated?): {first[:300]}") from e

    meta = dict(sess.get_modelmeta().custom_metadata_map)
    if METADATA_KEY not in meta:
        raise ModelRejected(path, f"model carries no {METADATA_KEY!r} metadata (not exported by vla_rl_ros?)")
    try:
        mspec = Spec.from_json(meta[METADATA_KEY])
    except (SpecError, TypeError, ValueError) as e:
        raise ModelRejected(path, f"{METADATA_KEY} metadata is invalid: {e}") from e
    if configured_spec is not None and mspec != configured_spec:
        diffs = configured_spec.diff(mspec) or ["(specs compare unequal but serialise identically)"]
        raise ModelRejected(path, "model spec differs from the configured spec: " + "; ".join(diffs), diffs)
    spec = mspec

    meta_version = meta.get(VERSION_KEY, "").strip()
    if expected_version and meta_version and meta_version != expected_version:
        raise ModelRejected(path, f"announced version {expected_version!r} but the model's metadata says {meta_version!r}")
    version = meta_version or (expected_version or "") or digest[:12]
    lineage: Any = None
    if LINEAGE_KEY in meta:
        try:
            lineage = json.loads(meta[LINEAGE_KEY])
        except json.JSONDecodeError:
            lineage = meta[LINEAGE_KEY]

    info = ModelInfo(path=path, sha256=digest, version=version, spec=spec, lineage=lineage, metadata=meta,
                     size_bytes=len(data))
    if spec.vla_shaped:
        return _validate_chunk_policy(sess, info, probe_obs, kinematics, warmup, t0)

    ins, outs = sess.get_inputs(), sess.get_outputs()
    if len(ins) != 1:
        raise ModelRejected(path, f"model has {len(ins)} inputs {[i.name for i in ins]}, expected exactly 1 (the observation)")
    if not outs:
        raise ModelRejected(path, "model has no outputs")
    inp, out = ins[0], outs[0]
    if inp.type != "tensor(float)":
        raise ModelRejected(path, f"input {inp.name!r} has type {inp.type}, expected tensor(float)")
    if out.type != "tensor(float)":
        raise ModelRejected(path, f"output {out.name!r} has type {out.type}, expected tensor(float)")
    ishape = list(inp.shape)
    if len(ishape) not in (1, 2):
        raise ModelRejected(path, f"input {inp.name!r} has shape {ishape}, expected [batch, {spec.obs_dim}]")
    if _dim(ishape[-1]) != spec.obs_dim:
        raise ModelRejected(path, f"input {inp.name!r} has shape {ishape}, expected [batch, {spec.obs_dim}] (obs_dim)")
    if len(ishape) == 2 and _dim(ishape[0]) not in (None, 1):
        raise ModelRejected(path, f"input {inp.name!r} has a fixed batch of {ishape[0]}, expected 1 or dynamic")
    oshape = list(out.shape)
    if len(oshape) not in (1, 2) or (_dim(oshape[-1]) is not None and oshape[-1] != spec.action_dim):
        raise ModelRejected(path, f"output {out.name!r} has shape {oshape}, expected [batch, {spec.action_dim}] (action_dim)")

    policy = OnnxPolicy(sess, info, inp.name, out.name, len(ishape))

    obs = realistic_observation(spec, kinematics) if probe_obs is None else np.asarray(probe_obs, dtype=np.float32).reshape(-1)
    if obs.shape != (spec.obs_dim,):
        raise ValueError(f"probe observation has shape {obs.shape}, expected ({spec.obs_dim},)")
    try:
        y = np.asarray(sess.run([out.name], {inp.name: obs.astype(np.float32).reshape(policy._x.shape)})[0])
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ModelRejected(path, f"test inference failed: {msg}") from e
    if y.size != spec.action_dim:
        raise ModelRejected(path, f"test inference returned shape {list(y.shape)}, expected {spec.action_dim} values (action_dim)")
    if not np.all(np.isfinite(y)):
        raise ModelRejected(path, f"test inference on a realistic observation gave a non-finite action {y.reshape(-1).tolist()}")
    for _ in range(max(0, int(warmup))):
        policy.act(obs)
    info.probe_action = y.reshape(-1).astype(np.float32)
    info.load_s = time.perf_counter() - t0
    return policy
