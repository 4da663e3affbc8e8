"""Export a store to MCAP (ROS 2 ``cdr`` serialisation), readable by Foxglove, ``ros2 bag`` and ``mcap_ros2``.

Channels, all standard message types:

* ``/rl/step`` (``std_msgs/msg/Float64MultiArray``): exactly the policy node's
  per-tick message (docs/CONVENTIONS.md): dims ``obs``, ``action``, ``meta``
  (``[tick, obs_stamp_s, cmd_stamp_s, intervention, hold, control_rate_hz, chunk_seq, chunk_step,
  frame_stamp_s]``,
  ``tick`` = the step's ``t``, ``hold`` = 0, a missing stamp = NaN) and
  ``model:<version>`` (size 0); ``data`` = obs ++ action ++ meta.
* ``/rl/transition`` (``std_msgs/msg/Float64MultiArray``): the full stored
  transition: dims ``obs``, ``action``, ``next_obs``, ``info``
  (``[episode_id, t, reward, terminated, truncated, intervention]``).
* ``/rl/episode`` (``std_msgs/msg/String``): the episode row as JSON, logged at
  the episode's end.
* ``/camera/image_raw/compressed`` (``sensor_msgs/msg/CompressedImage``): stored
  frames, if any.
* ``/rl/preference`` (``std_msgs/msg/String``): when the run folder has a
  preference store (:mod:`vla_rl_ros.preferences.store`), each label as JSON
  (``uid``, ``left``/``right`` segments, ``label``, ``labeller``, ``created_at``,
  ``info``), logged at its ``created_at``; the channel (and its count) is only
  there for a run with one.

Log times are the writer's receive stamps (ns). The run's spec, robot id and
schema version are written as MCAP metadata ``vla_rl_ros.store``. A store
with segments (:mod:`.segments`) is exported whole, its segments in order, into
one file (archived segments are not: export them by their own path).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .run import Run, list_stores
from .schema import check_spec, connect, read_meta, store_spec
from .segments import series_of

_SEP = "=" * 80

MULTIARRAY_DEPS = f"""{_SEP}
MSG: std_msgs/MultiArrayLayout
MultiArrayDimension[] dim
uint32 data_offset
{_SEP}
MSG: std_msgs/MultiArrayDimension
string label
uint32 size
uint32 stride
"""

#: Concatenated ROS 2 .msg definitions (top-level type first, then dependencies).
MSGDEFS = {
    "std_msgs/msg/Float64MultiArray": "MultiArrayLayout layout\nfloat64[] data\n" + MULTIARRAY_DEPS,
    "std_msgs/msg/String": "string data\n",
    "sensor_msgs/msg/CompressedImage": f"""std_msgs/Header header
string format
uint8[] data
{_SEP}
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
{_SEP}
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
""",
}


def _ns(stamp: float | None) -> int:
    return int(round((stamp or 0.0) * 1e9))


def _layout(dims: list[tuple[str, int]]) -> dict[str, Any]:
    return {"dim": [{"label": l, "size": n, "stride": n} for l, n in dims], "data_offset": 0}


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def export_mcap(run: Any, out_path: str | Path, *, frames: bool = True) -> dict[str, int]:
    """Write one store (a run folder, :class:`Run` or store path; all its segments) to ``out_path``.

    Returns message counts.
    """
    from mcap_ros2.writer import Writer as McapWriter

    src = run.path if isinstance(run, Run) else run
    stores = list_stores([src])
    if len({series_of(p)[0].resolve() for p in stores}) != 1:
        raise ValueError(f"{src}: expected exactly one store, found {len(stores)} in several series")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"/rl/step": 0, "/rl/transition": 0, "/rl/episode": 0, "/camera/image_raw/compressed": 0}
    with open(out_path, "wb") as f:
        w = McapWriter(f)
        sch = {k: w.register_msgdef(k, v) for k, v in MSGDEFS.items()}
        spec = None
        for path in stores:
            con = connect(path, readonly=True)
            try:
                if spec is None:
                    spec = store_spec(con)
                    meta = read_meta(con)
                    w.add_metadata("vla_rl_ros.store", {"spec": meta["spec"], "robot_id": meta.get("robot_id", ""),
                                                        "store_id": meta.get("series_id", meta.get("store_id", "")),
                                                        "schema_version": meta["schema_version"]})
                else:
                    check_spec(spec, store_spec(con), path)
                con.execute("BEGIN")  # one consistent snapshot even while a writer appends
                _export_store(con, spec, w, sch, counts, frames)
                con.execute("COMMIT")
            finally:
                con.close()
        _export_preferences(series_of(stores[0])[0].parent, w, sch, counts)
        w.finish()
    return counts


def _export_store(con: Any, spec: Any, w: Any, sch: dict[str, int], counts: dict[str, int], frames: bool) -> None:
    """Write one store's (segment's) episodes, steps and frames."""
    import numpy as np

    od, ad = spec.obs_dim, spec.action_dim
    episodes = con.execute("SELECT id, idx, task, seed, model_versions, success, episode_return, length, "
                           "n_intervention_steps, reward_config, is_demo, started_at, ended_at, end_reason, "
                           "info FROM episodes ORDER BY id").fetchall()
    cols = ("id", "idx", "task", "seed", "model_versions", "success", "episode_return", "length",
            "n_intervention_steps", "reward_config", "is_demo", "started_at", "ended_at", "end_reason", "info")
    for ep in episodes:
        e = dict(zip(cols, ep))
        for k in ("model_versions", "reward_config", "info"):
            e[k] = json.loads(e[k]) if e[k] else None
        e["success"] = None if e["success"] is None else bool(e["success"])
        e["is_demo"] = bool(e["is_demo"])
        seq = 0
        chunk_cols = ("chunk_seq, chunk_step, frame_stamp" if "chunk_seq" in {
            r[1] for r in con.execute("PRAGMA table_info(steps)")} else "NULL, NULL, NULL")  # a store from before
        for (t, obs, act, rew, nobs, term, trunc, interv, mv, obs_st, cmd_st, recv, c_seq, c_step, f_st) in \
                con.execute("SELECT t, obs, action, reward, next_obs, terminated, truncated, intervention, "
                            f"model_version, obs_stamp, cmd_stamp, recv_stamp, {chunk_cols} FROM steps "
                            "WHERE episode_id = ? ORDER BY t", (e["id"],)):
            o = np.frombuffer(obs, np.float32).astype(np.float64)
            a = np.frombuffer(act, np.float32).astype(np.float64)
            o2 = np.frombuffer(nobs, np.float32).astype(np.float64)
            log = _ns(recv)
            step_meta = [float(t), _nan(obs_st), _nan(cmd_st), float(interv), 0.0, float(spec.control_hz),
                         -1.0 if c_seq is None else float(c_seq), -1.0 if c_step is None else float(c_step),
                         0.0 if f_st is None else float(f_st)]
            w.write_message("/rl/step", sch["std_msgs/msg/Float64MultiArray"], {
                "layout": _layout([("obs", od), ("action", ad), ("meta", len(step_meta)), (f"model:{mv}", 0)]),
                "data": o.tolist() + a.tolist() + step_meta}, log_time=log, sequence=seq)
            w.write_message("/rl/transition", sch["std_msgs/msg/Float64MultiArray"], {
                "layout": _layout([("obs", od), ("action", ad), ("next_obs", od), ("info", 6)]),
                "data": o.tolist() + a.tolist() + o2.tolist()
                + [float(e["id"]), float(t), float(rew), float(term), float(trunc), float(interv)]},
                log_time=log, sequence=seq)
            seq += 1
        counts["/rl/step"] += seq
        counts["/rl/transition"] += seq
        if frames:
            for (t, camera, fmt, data, stamp) in con.execute(
                    "SELECT t, camera, format, data, stamp FROM frames WHERE episode_id = ? ORDER BY t",
                    (e["id"],)):
                st = _ns(stamp)
                w.write_message("/camera/image_raw/compressed", sch["sensor_msgs/msg/CompressedImage"], {
                    "header": {"stamp": {"sec": st // 10**9, "nanosec": st % 10**9}, "frame_id": camera},
                    "format": fmt, "data": bytes(data)}, log_time=st)
                counts["/camera/image_raw/compressed"] += 1
        w.write_message("/rl/episode", sch["std_msgs/msg/String"],
                        {"data": json.dumps(e, sort_keys=True)},
                        log_time=_ns(e["ended_at"] or e["started_at"]))
        counts["/rl/episode"] += 1


def _export_preferences(run_dir: Path, w: Any, sch: dict[str, int], counts: dict[str, int]) -> None:
    """The run's preference labels, if it has any store of them, on ``/rl/preference``."""
    from ..preferences.store import PREFS_FILE, iter_label_dicts

    if not (run_dir / PREFS_FILE).is_file():
        return
    counts["/rl/preference"] = 0
    for seq, d in enumerate(iter_label_dicts(run_dir / PREFS_FILE)):
        w.write_message("/rl/preference", sch["std_msgs/msg/String"], {"data": json.dumps(d, sort_keys=True)},
                        log_time=_ns(d["created_at"]), sequence=seq)
        counts["/rl/preference"] += 1
