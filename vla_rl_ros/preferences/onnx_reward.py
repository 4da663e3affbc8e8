"""Run a saved reward model with ONNX Runtime only (no torch): what the recorder and the learner's relabelling use.

See :mod:`.reward_model` for what the model is and how it is saved.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

REWARD_DIR = "reward"
VERSION_KEY = "vla_rl_ros.version"  # as vla_rl_ros.algos.export (which imports torch)


def reward_model_path(models_dir: str | Path, version: str | None = None) -> Path:
    """The ONNX file of ``version``, or of the newest registered reward model when ``version`` is None."""
    from ..learner.registry import read_jsonl

    d = Path(models_dir) / REWARD_DIR
    recs = [r for r in read_jsonl(d / "registry.jsonl") if (d / r["path"]).is_file()]
    if version is not None:
        recs = [r for r in recs if r["version"] == version]
    if not recs:
        raise FileNotFoundError(f"no reward model{' ' + version if version else ''} in {d}")
    return d / recs[-1]["path"]


class OnnxRewardModel:
    """A saved reward model run by ONNX Runtime (no torch needed: what the recorder uses).

    ``model(obs, action)`` gives the ensemble mean ``(N,)`` (float64) for batches,
    a float for one transition; :meth:`members` the per-member rewards.
    """

    def __init__(self, path: str | Path) -> None:
        import json

        import onnxruntime as ort

        from ..spec import LINEAGE_KEY, METADATA_KEY, Spec, SpecError

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        meta = self._sess.get_modelmeta().custom_metadata_map
        missing = [k for k in (METADATA_KEY, LINEAGE_KEY, VERSION_KEY) if k not in meta]
        if missing or [i.name for i in self._sess.get_inputs()] != ["obs", "action"]:
            raise SpecError(f"{path} is not a vla_rl_ros reward model (metadata lacks {missing} or inputs differ)")
        self.spec = Spec.from_json(meta[METADATA_KEY])
        self.lineage = json.loads(meta[LINEAGE_KEY])
        self.version = meta[VERSION_KEY]

    def _run(self, obs: Any, action: Any) -> tuple[np.ndarray, np.ndarray, bool]:
        o = np.asarray(obs, np.float32)
        a = np.asarray(action, np.float32)
        single = o.ndim == 1
        mean, members = self._sess.run(None, {"obs": o.reshape(-1, o.shape[-1]), "action": a.reshape(-1, a.shape[-1])})
        return mean, members, single

    def __call__(self, obs: Any, action: Any) -> float | np.ndarray:
        mean, _, single = self._run(obs, action)
        return float(mean[0]) if single else mean.astype(np.float64)

    def members(self, obs: Any, action: Any) -> np.ndarray:
        return self._run(obs, action)[1]
