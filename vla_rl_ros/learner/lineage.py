"""Amend the lineage metadata of an exported model in place (atomically), keeping its version."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..algos.export import write_bytes_atomic
from ..spec import LINEAGE_KEY


def update_lineage(path: str | os.PathLike[str], updates: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the model's ``vla_rl_ros.lineage`` JSON; the graph and version are unchanged."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == LINEAGE_KEY:
            lineage = json.loads(p.value)
            lineage.update(dict(updates))
            p.value = json.dumps(lineage, sort_keys=True, allow_nan=False)
            break
    else:
        raise ValueError(f"{path} has no {LINEAGE_KEY} metadata")
    write_bytes_atomic(Path(path), proto.SerializeToString())
    return lineage
