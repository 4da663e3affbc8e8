"""ONNX policies built by hand (onnx.helper) for tests and benchmarks.

* ``reach``: a proportional reach controller, ``a = clip(gain * ee_to_goal / max_ee_step, -1, 1)``,
  gripper open: one MatMul + Add + Clip, so it is exactly predictable.
* ``mlp``: the reach controller plus a 2x256 tanh MLP with small output weights (the
  inference cost of a real SAC actor, still reaching).
* ``nan``: ``(x @ 0) / 0``: NaN for every input.
* ``wide``: outputs ``action_dim + 1`` values (a wrong shape).

Each model carries the spec (``vla_rl_ros.spec``) and version metadata. When
the colleagues' ``vla_rl_ros.algos.export.export_onnx`` is importable the
torch-exported case in the tests uses it too.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vla_rl_ros.runtime.onnx_policy import VERSION_KEY
from vla_rl_ros.spec import LINEAGE_KEY, METADATA_KEY, Spec


def build(spec: Spec, kind: str = "reach", version: str = "v1", gain: float = 1.5, hidden: int = 256,
          meta_spec: Spec | None = None, metadata: dict | None = None, seed: int = 0,
          batch: str | int = "batch") -> onnx.ModelProto:
    D, A = spec.obs_dim, spec.action_dim
    A_out = A + 1 if kind == "wide" else A
    W = np.zeros((D, A_out), np.float32)
    b = np.zeros(A_out, np.float32)
    if kind in ("reach", "mlp", "wide"):
        sl = spec.obs_slice("ee_to_goal")
        for k in range(3):
            W[sl.start + k, k] = gain / spec.max_ee_step
        b[A - 1] = 1.0
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.array(-1.0, np.float32), "lo"), numpy_helper.from_array(np.array(1.0, np.float32), "hi")]
    nodes = [helper.make_node("MatMul", ["obs", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["lin"])]
    if kind == "nan":
        inits.append(numpy_helper.from_array(np.zeros(A_out, np.float32), "zero"))
        nodes.append(helper.make_node("Div", ["lin", "zero"], ["action"]))
    elif kind == "mlp":
        rng = np.random.default_rng(seed)
        for name, shape in (("W1", (D, hidden)), ("W2", (hidden, hidden)), ("W3", (hidden, A))):
            inits.append(numpy_helper.from_array((rng.normal(size=shape) / np.sqrt(shape[0])).astype(np.float32), name))
        for name, n in (("b1", hidden), ("b2", hidden), ("b3", A)):
            inits.append(numpy_helper.from_array(np.zeros(n, np.float32), name))
        inits.append(numpy_helper.from_array(np.array(0.01, np.float32), "small"))
        nodes += [
            helper.make_node("Gemm", ["obs", "W1", "b1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
            helper.make_node("Gemm", ["r1", "W2", "b2"], ["h2"]), helper.make_node("Relu", ["h2"], ["r2"]),
            helper.make_node("Gemm", ["r2", "W3", "b3"], ["h3"]), helper.make_node("Tanh", ["h3"], ["t3"]),
            helper.make_node("Mul", ["t3", "small"], ["res"]), helper.make_node("Add", ["lin", "res"], ["sum"]),
            helper.make_node("Clip", ["sum", "lo", "hi"], ["action"]),
        ]
    else:
        nodes.append(helper.make_node("Clip", ["lin", "lo", "hi"], ["action"]))
    graph = helper.make_graph(
        nodes, f"{kind}_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [batch, D])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [batch, A_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vla_rl_ros.test")
    model.ir_version = 8
    props = {METADATA_KEY: (meta_spec or spec).to_json(), VERSION_KEY: version,
             LINEAGE_KEY: json.dumps({"kind": kind, "parent": None})}
    if metadata is not None:
        props = {k: v for k, v in {**props, **metadata}.items() if v is not None}
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def write(path, spec: Spec, kind: str = "reach", version: str = "v1", **kw) -> str:
    """Write atomically (like the learner does) and return the path."""
    import os

    path = str(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(build(spec, kind, version, **kw).SerializeToString())
    os.replace(tmp, path)
    return path


def build_chunk(spec: Spec, version: str = "c1", gain: float = 1.5, slow: int = 0, size: int = 384,
                image_gain: float = 0.0) -> onnx.ModelProto:
    """A VLA-shaped model for ``spec`` (images, instruction, ``chunk_len`` K): inputs ``obs``, ``image_<name>``
    (uint8), ``instruction``; output ``action`` ``[1, K, A]``.

    Every chunk step moves the hand like the ``reach`` controller; the gripper action of step k is the ramp
    ``-1 + 2k / (K - 1)`` (plus the instruction's index / 4 when there is a vocabulary; plus ``image_gain`` times
    the first image's mean brightness in [0, 1]), so the step a tick executed can be read back from the action.
    ``slow``: that many ``size`` x ``size`` matrix products that depend on the input (no constant folding):
    real compute, tens of ms each at 384.
    """
    D, A, K = spec.obs_dim, spec.action_dim, spec.chunk_len
    W = np.zeros((D, A), np.float32)
    sl = spec.obs_slice("ee_to_goal")
    for k in range(3):
        W[sl.start + k, k] = gain / spec.max_ee_step
    ramp = np.zeros((1, K, A), np.float32)
    ramp[0, :, A - 1] = np.linspace(-1.0, 1.0, K) if K > 1 else 1.0
    mask = np.ones((1, 1, A), np.float32)
    mask[0, 0, A - 1] = 0.0  # the gripper comes from the ramp alone
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(ramp, "ramp"),
             numpy_helper.from_array(mask, "mask"), numpy_helper.from_array(np.array([1, 1, A], np.int64), "shape3"),
             numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(1.0, np.float32), "hi")]
    inputs = [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, D])]
    nodes = [helper.make_node("MatMul", ["obs", "W"], ["xw"]), helper.make_node("Reshape", ["xw", "shape3"], ["xw3"]),
             helper.make_node("Mul", ["xw3", "mask"], ["move"]), helper.make_node("Add", ["move", "ramp"], ["out0"])]
    last = "out0"
    grip = np.zeros((1, 1, A), np.float32)
    grip[0, 0, A - 1] = 1.0
    inits.append(numpy_helper.from_array(grip, "grip"))
    for i, im in enumerate(spec.images):
        inputs.append(helper.make_tensor_value_info(im.input_name, TensorProto.UINT8, [1, 3, im.height, im.width]))
        nodes += [helper.make_node("Cast", [im.input_name], [f"imf{i}"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceMean", [f"imf{i}"], [f"imm{i}"], keepdims=0)]
        if i == 0 and image_gain:
            inits.append(numpy_helper.from_array(np.array(image_gain / 255.0, np.float32), "igain"))
            nodes += [helper.make_node("Mul", [f"imm{i}", "igain"], ["imv"]),
                      helper.make_node("Mul", ["grip", "imv"], ["imvg"]),
                      helper.make_node("Add", [last, "imvg"], ["out_im"])]
            last = "out_im"
    if spec.instructions:
        n = len(spec.instructions)
        inputs.append(helper.make_tensor_value_info("instruction", TensorProto.FLOAT, [1, n]))
        inits.append(numpy_helper.from_array((np.arange(n, dtype=np.float32) / 4.0).reshape(n, 1), "iw"))
        nodes += [helper.make_node("MatMul", ["instruction", "iw"], ["iv"]),
                  helper.make_node("Mul", ["grip", "iv"], ["ivg"]), helper.make_node("Add", [last, "ivg"], ["out_in"])]
        last = "out_in"
    if slow:
        rng = np.random.default_rng(0)
        inits += [numpy_helper.from_array((rng.normal(size=(size, size)) / np.sqrt(size)).astype(np.float32), "C"),
                  numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
        nodes += [helper.make_node("ReduceSum", ["obs"], ["osum"], keepdims=0),
                  helper.make_node("Mul", ["osum", "zero"], ["oz"]), helper.make_node("Add", ["C", "oz"], ["M0"])]
        for j in range(slow):
            nodes.append(helper.make_node("MatMul", [f"M{j}", "C"], [f"M{j + 1}"]))
        nodes += [helper.make_node("ReduceSum", [f"M{slow}"], ["msum"], keepdims=0),
                  helper.make_node("Mul", ["msum", "zero"], ["mz"]), helper.make_node("Add", [last, "mz"], ["out_slow"])]
        last = "out_slow"
    nodes.append(helper.make_node("Clip", [last, "lo", "hi"], ["action"]))
    graph = helper.make_graph(nodes, "chunk_policy", inputs,
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, K, A])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vla_rl_ros.test")
    model.ir_version = 8
    helper.set_model_props(model, {METADATA_KEY: spec.to_json(), VERSION_KEY: version,
                                   LINEAGE_KEY: json.dumps({"kind": "chunk", "slow": slow})})
    onnx.checker.check_model(model)
    return model


def write_chunk(path, spec: Spec, version: str = "c1", **kw) -> str:
    import os

    path = str(path)
    with open(path + ".tmp", "wb") as f:
        f.write(build_chunk(spec, version, **kw).SerializeToString())
    os.replace(path + ".tmp", path)
    return path
