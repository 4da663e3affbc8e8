"""Export a policy to a self-describing ONNX file, atomically.

The file has one input ``obs`` ``[batch, obs_dim]`` float32 (raw observations
in the spec's units; the normaliser is inside the graph) and one output
``action`` ``[batch, action_dim]`` float32 in ``[-1, 1]`` (a final clamp is part
of the graph), a dynamic batch dimension, opset >= 17 and no external data.

``metadata_props`` carry:

* ``vla_rl_ros.spec``: :meth:`Spec.to_json` (a node refuses a model whose spec
  differs from its own configuration);
* ``vla_rl_ros.lineage``: JSON with ``algorithm``, ``parent_version``,
  ``data_range``, ``training_steps``, ``twin_success_at_gate``, ``created``
  (UTC ISO-8601), ``weights_sha256`` and anything else the caller adds;
* ``vla_rl_ros.version``: ``<algorithm>-<UTC yyyymmddThhmmssZ>-<first 8 hex of the
  weights' sha256>``.

The export is verified before anything is written (ONNX checker, then ONNX
Runtime against PyTorch on a batch of a different size than the tracing
example, max abs diff <= ``atol``), then written to a temporary file in the
target directory, fsynced and ``os.replace``d over the target (and the directory
fsynced): readers see the old file or the new one, never a partial one, and a
failed export leaves the old file untouched.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..spec import LINEAGE_KEY, METADATA_KEY, Spec, SpecError

VERSION_KEY = "vla_rl_ros.version"
LINEAGE_FIELDS = ("algorithm", "parent_version", "data_range", "training_steps", "twin_success_at_gate", "created")
INPUT_NAME, OUTPUT_NAME = "obs", "action"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportedModel:
    path: Path
    version: str
    sha256: str  # of the written file: what a node verifies before running it
    lineage: dict[str, Any]


class _OnnxPolicy(nn.Module):
    """The exported graph: ``clamp(module(obs, ...), -1, 1)``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.module(*inputs).clamp(-1.0, 1.0)


def input_names(spec: Spec) -> list[str]:
    """The model's inputs in call order: ``obs``, then ``image_<name>`` per camera, then ``instruction``."""
    return [INPUT_NAME, *(im.input_name for im in spec.images)] + (["instruction"] if spec.instructions else [])


def example_inputs(spec: Spec, batch: int, gen: torch.Generator, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    """Random inputs of every kind the spec declares (:func:`input_names` order), for tracing and verification."""
    xs = [torch.randn(batch, spec.obs_dim, generator=gen) * scale]
    for im in spec.images:
        xs.append(torch.randint(0, 256, (batch, 3, im.height, im.width), generator=gen, dtype=torch.uint8))
    if spec.instructions:
        idx = torch.randint(0, len(spec.instructions), (batch,), generator=gen)
        xs.append(torch.nn.functional.one_hot(idx, len(spec.instructions)).float())
    return tuple(xs)


def output_shape(spec: Spec, batch: int) -> tuple[int, ...]:
    """``(B, action_dim)``; a chunked spec's ``(B, chunk_len, action_dim)``."""
    return (batch, spec.chunk_len, spec.action_dim) if spec.chunk_len > 1 else (batch, spec.action_dim)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_sha256(module: nn.Module) -> str:
    """Hex sha256 over a module's state dict (names, dtypes, shapes and values, in key order)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def _to_proto(policy: nn.Module, example: tuple[torch.Tensor, ...], names: list[str], exporter: str):
    import onnx

    if exporter == "dynamo":
        # The dynamo exporter logs chatter (missing torchvision ops etc.) at WARNING.
        quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
        levels = [lg.level for lg in quiet]
        try:
            for lg in quiet:
                lg.setLevel(logging.ERROR)
            with warnings.catch_warnings():  # torch-internal deprecation chatter
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                batch = torch.export.Dim("batch")
                prog = torch.onnx.export(
                    policy, example, input_names=names, output_names=[OUTPUT_NAME], dynamo=True,
                    opset_version=18, dynamic_shapes=(tuple({0: batch} for _ in names),),  # forward(*inputs)
                    external_data=False, verbose=False,
                )
        finally:
            for lg, lv in zip(quiet, levels):
                lg.setLevel(lv)
        return prog.model_proto
    if exporter == "torchscript":
        buf = io.BytesIO()
        with warnings.catch_warnings():  # the legacy exporter announces its own deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                policy, example, buf, input_names=names, output_names=[OUTPUT_NAME], dynamo=False,
                opset_version=17, dynamic_axes={**{n: {0: "batch"} for n in names}, OUTPUT_NAME: {0: "batch"}},
            )
        return onnx.load_from_string(buf.getvalue())
    raise ValueError(f"unknown exporter {exporter!r}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temp file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def export_onnx(
    module: nn.Module,
    spec: Spec,
    path: str | os.PathLike[str],
    lineage: Mapping[str, Any],
    *,
    exporter: str = "dynamo",
    atol: float = 1e-5,
) -> ExportedModel:
    """Export ``module`` (raw ``obs [B, obs_dim] -> action [B, action_dim]``) to ``path``.

    A VLA-shaped spec (images, instructions, chunks: :attr:`Spec.vla_shaped`) exports
    ``module(obs, image_<name>..., instruction) -> action [B, chunk_len, action_dim]`` (the inputs of
    :func:`input_names`: images uint8 ``[B, 3, H, W]`` RGB, the instruction one-hot float32).

    Args:
        module: a deterministic policy module (e.g. :meth:`SAC.policy_module`,
            :meth:`RecapTrainer.export_module`, :func:`train_bc`'s result). It is
            deep-copied and exported in eval mode; it is not modified.
        spec: the observation/action spec the module was trained for.
        path: target file (parent directories are created).
        lineage: provenance; ``algorithm`` should be set (it prefixes the
            version), the other :data:`LINEAGE_FIELDS` default to ``None`` and
            ``created`` to now. Must be JSON-serialisable.
        exporter: ``"dynamo"`` (default, ``torch.export`` based, opset 18) or
            ``"torchscript"`` (the legacy exporter, opset 17). If the dynamo
            exporter raises, the legacy one is tried before giving up.
        atol: maximum allowed |ONNX Runtime - PyTorch| on the verification batch.

    Returns:
        :class:`ExportedModel` with the version string and the file's sha256.

    Raises:
        SpecError: the module's input/output sizes disagree with ``spec``.
        RuntimeError: export or verification failed (nothing was written).
    """
    import onnx
    import onnxruntime as ort

    path = Path(path)
    policy = _OnnxPolicy(copy.deepcopy(module)).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    names = input_names(spec)
    example = example_inputs(spec, 2, gen)
    with torch.no_grad():
        try:
            out = policy(*example)
        except Exception as e:  # wrong input size, broken module...
            raise SpecError(f"module failed on an input batch {[list(x.shape) for x in example]} from the spec: "
                            f"{e}") from e
    if tuple(out.shape) != output_shape(spec, 2):
        raise SpecError(f"module maps {[list(x.shape) for x in example]} to {tuple(out.shape)}, spec needs "
                        f"{list(output_shape(spec, 2))}")

    digest = weights_sha256(policy)
    created = _utc_now()
    lin: dict[str, Any] = {k: None for k in LINEAGE_FIELDS}
    lin.update(dict(lineage))
    lin["created"] = lin["created"] or created.isoformat().replace("+00:00", "Z")
    lin["weights_sha256"] = digest
    algo = str(lin["algorithm"] or "model")
    version = f"{algo}-{created.strftime('%Y%m%dT%H%M%SZ')}-{digest[:8]}"
    try:
        lineage_json = json.dumps(lin, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"lineage is not JSON-serialisable: {e}") from e

    try:
        proto = _to_proto(policy, example, names, exporter)
    except Exception as e:
        if exporter != "dynamo":
            raise RuntimeError(f"ONNX export failed: {e}") from e
        log.warning("dynamo ONNX export failed (%s); retrying with the TorchScript exporter", e)
        try:
            proto = _to_proto(policy, example, names, "torchscript")
        except Exception as e2:
            raise RuntimeError(f"ONNX export failed with both exporters: {e2}") from e2

    del proto.metadata_props[:]
    for k, v in ((METADATA_KEY, spec.to_json()), (LINEAGE_KEY, lineage_json), (VERSION_KEY, version)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    data = proto.SerializeToString()
    try:
        onnx.checker.check_model(proto)
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        xs = example_inputs(spec, 5, gen, scale=3.0)
        got = sess.run([OUTPUT_NAME], {n: x.numpy() for n, x in zip(names, xs)})[0]
        with torch.no_grad():
            want = policy(*xs).numpy()
        err = float(np.abs(got - want).max())
    except Exception as e:
        raise RuntimeError(f"exported model failed verification: {e}") from e
    if got.shape != want.shape or not err <= atol:
        raise RuntimeError(f"ONNX Runtime disagrees with PyTorch: max abs diff {err:.3g} > {atol:g}")

    write_bytes_atomic(path, data)
    return ExportedModel(path=path, version=version, sha256=hashlib.sha256(data).hexdigest(), lineage=lin)


def read_model_metadata(path: str | os.PathLike[str]) -> tuple[Spec, dict[str, Any], str]:
    """``(spec, lineage, version)`` from a model exported by :func:`export_onnx`.

    Uses the ``onnx`` package when installed (no graph is built), else ONNX
    Runtime (which is all a robot has). Raises :class:`SpecError` when the
    metadata is missing or malformed.
    """
    try:
        import onnx

        proto = onnx.load(os.fspath(path), load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
    except ImportError:  # pragma: no cover - robots without the onnx package
        import onnxruntime as ort

        meta = dict(ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
                    .get_modelmeta().custom_metadata_map)
    missing = [k for k in (METADATA_KEY, LINEAGE_KEY, VERSION_KEY) if k not in meta]
    if missing:
        raise SpecError(f"{path}: model metadata lacks {missing}")
    spec = Spec.from_json(meta[METADATA_KEY])
    try:
        lineage = json.loads(meta[LINEAGE_KEY])
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}: lineage metadata is not valid JSON: {e}") from e
    return spec, lineage, meta[VERSION_KEY]
