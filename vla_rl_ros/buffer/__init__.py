"""The durable transition store and the learner-side replay (ROS-free).

Recorder side::

    run = create_run("runs", "panda-01", spec, robot_id="panda-01", exist_ok=True)
    with run.writer(commit_window_s=0.1) as w:           # resumes an existing store
        w.begin_episode("pick_place", seed=None, reward_config=reward_fn.config)
        w.add_step(obs, action, reward, next_obs, terminated=False, intervention=False, model_version="v3")
        w.end_episode("success")                          # success | timeout | estop | reset | crash

Learner side::

    replay = Replay(list_stores(["runs/"]), capacity=1_000_000)
    replay.refresh()                                      # incremental tail of every store
    batch = replay.sample(256, demo_ratio=0.5)            # dict of torch tensors
    episodes = replay.episodes()                          # whole completed episodes (Recap)

Long runs: ``run.writer(segment_max_bytes=..., segment_max_s=...)`` splits the
store into segments that every reader takes together, and
``archive_segments`` moves closed ones away (:mod:`.segments`).

See :mod:`.schema` for the on-disk format and why SQLite/WAL.
"""
from .export import export_mcap
from .replay import Episode, Replay, open_replay
from .run import Run, create_run, list_stores, open_run
from .segments import archive_segments, archived_segments, list_segments
from .schema import (END_REASONS, SCHEMA_VERSION, BufferError, SchemaVersionError, StoreLockedError, connect,
                     create_store)
from .stats import format_stats, stats
from .writer import EpisodeStateError, InvalidStep, Writer, import_episodes, is_disk_full

__all__ = [
    "export_mcap", "Episode", "Replay", "open_replay", "Run", "create_run", "list_stores", "open_run",
    "END_REASONS", "SCHEMA_VERSION", "BufferError", "SchemaVersionError", "StoreLockedError", "connect",
    "create_store", "format_stats", "stats", "EpisodeStateError", "InvalidStep", "Writer", "import_episodes",
    "is_disk_full", "archive_segments", "archived_segments", "list_segments",
]
