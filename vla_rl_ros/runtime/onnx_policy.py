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
) -> OnnxPolicy:
    """Load ``path`` and run every check; return a ready :class:`OnnxPolicy` or raise :class:`ModelRejected`.

    Args:
        path: the ``.onnx`` file.
        expected_sha256: hex digest the file must have (``None``/``""``: not checked).
        configured_spec: the spec the caller runs with; the model's spec must be equal
            (``None`` accepts the model's own spec, for offline tools).
        expected_version: if given and the model carries ``vla_rl_ros.version``, they must agree.
        probe_obs: observation for the test inference (default :func:`realistic_observation`).
        kinematics: used by the default probe for the hand position.
        warmup: inferences run after the probe so that the first control tick is not the slow first run.
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
        sess = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
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

    info = ModelInfo(path=path, sha256=digest, version=version, spec=spec, lineage=lineage, metadata=meta, size_bytes=len(data))
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
