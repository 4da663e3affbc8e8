"""The store and writer: layout, schema versioning, validation, resume, frames, demo import, stats."""
import json
import sqlite3

import numpy as np
import pytest

from vla_rl_ros.buffer import (SCHEMA_VERSION, BufferError, EpisodeStateError, InvalidStep, SchemaVersionError,
                               StoreLockedError, Writer, connect, create_run, create_store, import_episodes,
                               list_stores, open_run, stats)
from vla_rl_ros.rewards import make_reward
from vla_rl_ros.spec import Spec, SpecError

SPEC = Spec(task="pick_place")


def vec(v, n=SPEC.obs_dim):
    return np.full(n, v, np.float32)


def act(v=0.0):
    return np.full(SPEC.action_dim, v, np.float32)


def rows(path, sql, args=()):
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_run_layout_and_open(tmp_path):
    run = create_run(tmp_path / "runs", "panda-a", SPEC, robot_id="panda-a")
    for p in ("run.json", "buffer.sqlite", "models", "tb", "checkpoints"):
        assert (run.path / p).exists(), p
    meta = json.loads((run.path / "run.json").read_text())
    assert Spec.from_dict(meta["spec"]) == SPEC and meta["robot_id"] == "panda-a" and meta["created"] > 0
    assert meta["schema_version"] == SCHEMA_VERSION
    again = open_run(run.path)
    assert again.spec == SPEC and again.robot_id == "panda-a" and again.buffer_path == run.buffer_path
    with pytest.raises(FileExistsError):
        create_run(tmp_path / "runs", "panda-a", SPEC)
    assert create_run(tmp_path / "runs", "panda-a", SPEC, exist_ok=True).path == run.path
    with pytest.raises(SpecError, match="task"):
        create_run(tmp_path / "runs", "panda-a", SPEC.replace(task="reach"), exist_ok=True)
    create_run(tmp_path / "runs", "panda-b", SPEC, robot_id="panda-b")
    found = list_stores([tmp_path / "runs"])
    assert [p.parent.name for p in found] == ["panda-a", "panda-b"]
    # a run folder, a store file and the parent folder together: deduplicated
    assert len(list_stores([run.path, run.buffer_path, tmp_path / "runs"])) == 2
    with pytest.raises(FileNotFoundError):
        list_stores([tmp_path / "nope"])


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "buffer.sqlite"
    create_store(path, SPEC)
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}.*newer"):
        connect(path)
    with pytest.raises(SchemaVersionError):
        Writer(path)
    # not a store at all
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.close()
    with pytest.raises(BufferError, match="not a vla_rl_ros transition store"):
        connect(other)


def test_invalid_steps_are_rejected_counted_and_never_stored(tmp_path):
    path = tmp_path / "buffer.sqlite"
    w = Writer(path, spec=SPEC)
    w.begin_episode()
    w.add_step(vec(0), act(), 0.0, vec(1))
    bad_obs = vec(0)
    bad_obs[3] = np.nan
    bad_next = vec(1)
    bad_next[-1] = np.inf
    cases = [
        (dict(obs=bad_obs), "obs has non-finite values at indices \\[3\\]"),
        (dict(next_obs=bad_next), "next_obs has non-finite"),
        (dict(obs=vec(0, SPEC.obs_dim - 1)), "obs has shape"),
        (dict(action=np.zeros(SPEC.action_dim + 1)), "action has shape"),
        (dict(action=act(1.5)), "outside \\[-1, 1\\]"),
        (dict(reward=float("nan")), "reward is not finite"),
        (dict(obs="abc"), "obs is not numeric"),
    ]
    for override, msg in cases:
        kw = dict(obs=vec(0), action=act(), reward=0.0, next_obs=vec(1))
        kw.update(override)
        with pytest.raises(InvalidStep, match=msg):
            w.add_step(kw["obs"], kw["action"], kw["reward"], kw["next_obs"])
    assert w.n_rejected == len(cases)
    assert isinstance(InvalidStep("x"), ValueError)
    t = w.add_step(vec(1), act(-1.0), 1.0, vec(2))  # still accepting valid steps, t not consumed by rejects
    assert t == 1
    w.end_episode("timeout")
    w.close()
    assert rows(path, "SELECT t, reward FROM steps ORDER BY id") == [(0, 0.0), (1, 1.0)]
    assert stats(path)["totals"]["rejected_steps"] == len(cases)  # persisted in the store's meta


def test_episode_state_errors_and_single_writer(tmp_path):
    path = tmp_path / "buffer.sqlite"
    w = Writer(path, spec=SPEC)
    with pytest.raises(EpisodeStateError):
        w.add_step(vec(0), act(), 0.0, vec(1))
    w.begin_episode()
    with pytest.raises(EpisodeStateError):
        w.begin_episode()
    w.add_step(vec(0), act(), 0.0, vec(1), terminated=True)
    with pytest.raises(EpisodeStateError, match="terminated"):
        w.add_step(vec(1), act(), 0.0, vec(2))
    with pytest.raises(ValueError, match="end reason"):
        w.end_episode("bored")
    with pytest.raises(StoreLockedError):
        Writer(path)
    w.end_episode("success")
    w.close()
    with pytest.raises(BufferError, match="closed"):
        w.begin_episode()
    with pytest.raises(SpecError, match="action_mode"):
        Writer(path, spec=SPEC.replace(action_mode="joint_delta"))
    Writer(path).close()  # the lock was released


def test_episode_rows_and_reopen_resumes(tmp_path):
    path = tmp_path / "buffer.sqlite"
    rcfg = make_reward({"name": "pick_and_place"}, SPEC).config
    with Writer(path, spec=SPEC, robot_id="r1") as w:
        e0 = w.begin_episode("pick_place", seed=7, reward_config=rcfg)
        for t in range(5):
            w.add_step(vec(t), act(), 0.5, vec(t + 1), intervention=t in (1, 2), model_version="v1" if t < 3 else "v2")
        summary = w.end_episode("timeout")
        assert summary["return"] == 2.5 and summary["model_versions"] == ["v1", "v2"]
    ep = rows(path, "SELECT id, idx, task, seed, model_versions, success, episode_return, length, "
                    "n_intervention_steps, reward_config, is_demo, end_reason, ended_at >= started_at FROM episodes")
    assert ep == [(e0, 0, "pick_place", 7, '["v1","v2"]', 0, 2.5, 5, 2, json.dumps(rcfg, sort_keys=True,
                                                                                      separators=(",", ":")),
                   0, "timeout", 1)]
    # the cut episode's last step is marked truncated, not terminated
    assert rows(path, "SELECT t, terminated, truncated FROM steps WHERE t >= 3 ORDER BY t") == [(3, 0, 0), (4, 0, 1)]
    obs_blob, = rows(path, "SELECT obs FROM steps WHERE t = 2")[0]
    np.testing.assert_array_equal(np.frombuffer(obs_blob, np.float32), vec(2))
    # reopen: appends, run-local index continues
    with Writer(path, spec=SPEC) as w:
        assert w.recovered_episodes == []
        e1 = w.begin_episode()
        w.add_step(vec(0), act(), 1.0, vec(1), terminated=True)
        w.end_episode("success")
    assert rows(path, "SELECT id, idx, success, end_reason FROM episodes ORDER BY id") == [
        (e0, 0, 0, "timeout"), (e1, 1, 1, "success")]
    assert rows(path, "SELECT COUNT(*) FROM writer_sessions WHERE closed_at IS NOT NULL") == [(2,)]


def test_frames_are_encoded_and_stored(tmp_path):
    import cv2

    path = tmp_path / "buffer.sqlite"
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with Writer(path, spec=SPEC, frame_format="png") as w:
        w.begin_episode()
        w.add_step(vec(0), act(), 0.0, vec(1), frame=img)
        w.add_step(vec(1), act(), 0.0, vec(2))
        w.add_frame(b"\xff\xd8fakejpeg", fmt="jpg", camera="wrist")
        with pytest.raises(InvalidStep):
            w.add_frame(np.zeros((4, 4), np.float32))
        w.end_episode("timeout")
    (t0, cam0, fmt0, data0), (t1, cam1, fmt1, data1) = rows(
        path, "SELECT t, camera, format, data FROM frames ORDER BY t")
    assert (t0, cam0, fmt0, t1, cam1, fmt1) == (0, "camera", "png", 1, "wrist", "jpeg")
    decoded = cv2.imdecode(np.frombuffer(data0, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded[..., ::-1], img)  # rgb8 in, BGR on disk per OpenCV, lossless PNG
    assert data1 == b"\xff\xd8fakejpeg"


def test_import_demo_episodes(tmp_path):
    path = tmp_path / "buffer.sqlite"
    create_store(path, SPEC)
    fn = make_reward({"name": "reach"}, SPEC)
    T = 6
    demo = {"obs": np.stack([vec(i * 0.01) for i in range(T + 1)]), "actions": np.zeros((T, SPEC.action_dim)),
            "success": True, "terminated": True, "seed": 3, "task": "pick_place"}
    ids = import_episodes(path, [demo, dict(demo, success=False, terminated=False, seed=4)], reward_fn=fn)
    assert len(ids) == 2
    eps = rows(path, "SELECT is_demo, success, end_reason, seed, length, model_versions, reward_config "
                     "FROM episodes ORDER BY id")
    assert [e[:6] for e in eps] == [(1, 1, "success", 3, T, '["expert"]'), (1, 0, "timeout", 4, T, '["expert"]')]
    assert json.loads(eps[0][6]) == fn.config
    got = rows(path, "SELECT reward, terminated, truncated FROM steps WHERE episode_id = ? ORDER BY t", (ids[0],))
    expected = fn(demo["obs"][:-1], demo["actions"], demo["obs"][1:])
    np.testing.assert_allclose([g[0] for g in got], expected, atol=1e-9)
    assert got[-1][1:] == (1, 0)
    assert rows(path, "SELECT terminated, truncated FROM steps WHERE episode_id = ? AND t = ?", (ids[1], T - 1)) \
        == [(0, 1)]
    bad = dict(demo, obs=demo["obs"][:-2])
    with pytest.raises(InvalidStep, match="T\\+1"):
        import_episodes(path, [bad], reward_fn=fn)


def test_stats_per_model_version(tmp_path):
    run = create_run(tmp_path, "r", SPEC, robot_id="arm")
    with run.writer() as w:
        for i, (model, ok, n_int) in enumerate([("v1", False, 2), ("v1", True, 0), ("v2", True, 1)]):
            w.begin_episode()
            for t in range(4):
                w.add_step(vec(t), act(), float(i), vec(t + 1), intervention=t < n_int, model_version=model)
            w.end_episode("success" if ok else "timeout")
        w.begin_episode()  # still open when stats runs: counted as open only
        w.add_step(vec(0), act(), 0.0, vec(1), model_version="v2")
        w.flush()
        st = stats(run)
        by = {r["model"]: r for r in st["by_model"]}
        assert by["v1"]["episodes"] == 2 and by["v1"]["successes"] == 1 and by["v1"]["success_rate"] == 0.5
        assert by["v1"]["mean_return"] == pytest.approx(2.0) and by["v1"]["intervention_steps"] == 2
        assert by["v2"]["episodes"] == 1 and by["v2"]["mean_return"] == pytest.approx(8.0)
        assert by["v2"]["intervention_rate"] == pytest.approx(0.25)
        assert st["totals"] == {"episodes": 4, "open_episodes": 1, "steps": 13, "frames": 0, "rejected_steps": 0,
                                "dropped_steps": 0}
        assert st["end_reasons"] == {"success": 2, "timeout": 1}


def test_episode_ended_in_a_later_commit_than_its_steps(tmp_path):
    """The end of an episode whose begin and steps were committed earlier updates, never overwrites."""
    path = tmp_path / "buffer.sqlite"
    with Writer(path, spec=SPEC) as w:
        eid = w.begin_episode("reach", seed=11, reward_config={"name": "reach"}, info={"operator": "a"})
        for t in range(3):
            w.add_step(vec(t), act(), 1.0, vec(t + 1), model_version="v7")
        w.flush()
        assert rows(path, "SELECT end_reason, length FROM episodes") == [(None, 0)]
        w.end_episode("estop", info={"note": "button"})
        w.flush()
        (task, seed, rcfg, started, ended, reason, length, ret, models, info), = rows(
            path, "SELECT task, seed, reward_config, started_at, ended_at, end_reason, length, episode_return, "
                  "model_versions, info FROM episodes WHERE id = ?", (eid,))
        assert (task, seed, json.loads(rcfg), reason, length, ret, json.loads(models)) == (
            "reach", 11, {"name": "reach"}, "estop", 3, 3.0, ["v7"])
        assert 0 < started <= ended and json.loads(info) == {"note": "button"}
        assert rows(path, "SELECT t, truncated FROM steps ORDER BY t") == [(0, 0), (1, 0), (2, 1)]
