"""``vla-rl-ros label RUN``: the page's logic, labels surviving ``kill -9`` of the server, and a real headless browser.

The browser test drives Debian's Chromium through its chromedriver with selenium
(``apt-get install chromium chromium-driver``; ``.ci/run`` installs both). It is
skipped, saying so, only where those two binaries are absent.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import pytest
from prefs_fixtures import SPEC, make_reach_run

from vla_rl_ros.preferences.labelpage import LabelSession, create_app, make_server, render_segment
from vla_rl_ros.preferences.store import PreferenceStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_reach_run(tmp_path_factory.mktemp("runs"), n_episodes=8, ep_len=20, seed=5).path


def fresh_run(tmp_path, **kw):
    return make_reach_run(tmp_path, **kw).path


def test_page_labels_plots_and_never_reasks(tmp_path):
    # 3 episodes of 10 ticks and 10-tick segments: exactly 3 pairs exist
    run = fresh_run(tmp_path, n_episodes=3, ep_len=10, seed=1)
    s = LabelSession(run, "tester", segment_len=10, seed=0)
    c = create_app(s).test_client()
    page = c.get("/")
    assert page.status_code == 200 and b"btn-left" in page.data
    q = s.current
    png = c.get(f"/plot/{q.qid}/left.png")
    assert png.status_code == 200 and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert c.get(f"/plot/{q.qid}/middle.png").status_code == 404
    seen = set()
    for label in ("left", "equal", "right"):
        q = s.query()
        pair = frozenset([q.left, q.right])
        assert pair not in seen and q.info["selection"] == "random"
        seen.add(pair)
        r = c.post("/label", data={"qid": q.qid, "label": label})
        assert r.status_code == 303
        assert c.post("/label", data={"qid": q.qid, "label": label}).status_code == 303  # a double click: ignored
    assert c.get("/api/query").status_code == 404  # every pair asked
    assert b"Nothing left to ask" in c.get("/").data
    assert c.post("/api/label", json={"qid": "nope", "label": "left"}).status_code == 409
    got = s.store.labels()
    assert [p.label for p in got] == ["left", "equal", "right"] and {p.labeller for p in got} == {"tester"}
    assert len({frozenset([p.left, p.right]) for p in got}) == 3
    assert all(p.info["source"] == "label_page" for p in got)
    # a fresh session on the same run (a restarted server) asks nothing already asked
    s2 = LabelSession(run, "tester", segment_len=10, seed=7)
    assert s2.query() is None
    s.close(), s2.close()


def test_bad_label_refused(run_dir):
    s = LabelSession(run_dir, "tester", segment_len=10)
    c = create_app(s).test_client()
    q = c.get("/api/query").get_json()
    r = c.post("/api/label", json={"qid": q["qid"], "label": "both"})
    assert r.status_code == 400 and s.store.count() == 0 and s.current.qid == q["qid"]
    s.close()


def test_disagreement_once_a_reward_model_exists(tmp_path):
    import torch

    from vla_rl_ros.buffer import open_run
    from vla_rl_ros.preferences.reward_model import RewardEnsemble, save_reward_model

    torch.manual_seed(0)
    run = fresh_run(tmp_path, n_episodes=6, ep_len=20, seed=2)
    saved = save_reward_model(RewardEnsemble(SPEC.obs_dim, SPEC.action_dim), open_run(run).models_dir, SPEC, {})
    s = LabelSession(run, "tester", segment_len=10, n_candidates=5)
    q = s.query()
    assert q.info["selection"] == "disagreement" and q.info["reward_model"] == saved.version
    assert q.info["variance"] >= 0
    s.close()


def test_render_draws_both_views():
    p = {k: np.linspace([0.3, -0.1, 0.1], [0.5, 0.1, 0.3], 11) for k in ("hand", "cube", "goal")}
    png = render_segment(p, np.array([[0.2, 0.6], [-0.2, 0.2], [0.0, 0.4]]), "episode 1")
    assert png[:4] == b"\x89PNG" and len(png) > 5000


def _start_server(run, labeller, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "vla_rl_ros.cli", "label", str(run), "--labeller", labeller,
                             "--segment-len", "10", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)  # binds localhost by default, prints the URL
    if not m:
        proc.kill()
        raise AssertionError(f"no URL from the server: {line!r} {proc.stderr.read()}")
    return proc, f"http://127.0.0.1:{m.group(1)}"


def _http(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.parametrize("seed", [0, 1])
def test_labels_survive_kill9_of_the_server(tmp_path, seed):
    import random

    run = fresh_run(tmp_path, n_episodes=8, ep_len=20, seed=seed)
    proc, url = _start_server(run, "kill-test", "--seed", str(seed))
    acked = []  # (uid, left, right, label) of every label the server acknowledged
    try:
        want = random.Random(seed).randint(5, 15)  # seeded kill point, in acknowledged labels
        q = _http(url + "/api/query")
        for i in range(want):
            label = ("left", "right", "equal", "skip")[i % 4]
            r = _http(url + "/api/label", {"qid": q["qid"], "label": label})
            acked.append((r["saved"]["uid"], q["left"], q["right"], label))
            q = r["next"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (run / "preferences.sqlite-wal").exists()  # killed with its WAL open
    with PreferenceStore(run) as s:
        assert s.integrity_check() == "ok"
        got = s.labels()
    assert [p.uid for p in got] == [a[0] for a in acked]
    for p, (_, left, right, label) in zip(got, acked):
        assert p.left.__dict__ == left and p.right.__dict__ == right
        assert p.label == label and p.labeller == "kill-test"
    # restarted, it carries on and does not ask an asked pair again
    proc, url = _start_server(run, "kill-test", "--seed", str(seed))
    try:
        q = _http(url + "/api/query")
        asked = {frozenset([json.dumps(a[1], sort_keys=True), json.dumps(a[2], sort_keys=True)]) for a in acked}
        assert frozenset([json.dumps(q["left"], sort_keys=True), json.dumps(q["right"], sort_keys=True)]) not in asked
        assert _http(url + "/api/labels?n=3")["total"] == len(acked)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_label_list_cli(capsys, tmp_path):
    from vla_rl_ros.cli import main

    run = fresh_run(tmp_path, n_episodes=3, ep_len=10, seed=1)
    s = LabelSession(run, "lister", segment_len=10)
    for label in ("left", "skip"):
        s.answer(s.query().qid, label)
    s.close()
    assert main(["data", "labels", str(run), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 labels (left 1, right 0, equal 0, skip 1)" in out and "lister 2" in out and "latest 1:" in out
    assert main(["label", str(run), "--list", "-n", "1"]) == 0
    assert "latest 1:" in capsys.readouterr().out
    assert main(["data", "labels", str(run), "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["total"] == 2 and [p["label"] for p in j["latest"]] == ["skip", "left"]


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and shutil.which(CHROMEDRIVER)),
                    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                           "apt-get install chromium chromium-driver")
def test_real_browser_click_and_key(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    run = fresh_run(tmp_path, n_episodes=8, ep_len=20, seed=3)
    session = LabelSession(run, "browser-test", segment_len=10, seed=0)
    server = make_server(session)  # 127.0.0.1, a free port
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--user-data-dir={tmp_path / 'chrome'}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        wait = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))
        driver.get(f"http://127.0.0.1:{server.server_port}/")
        shown = []
        # both plots loaded as real images
        wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
                                 for i in d.find_elements(By.TAG_NAME, "img")))
        assert len(driver.find_elements(By.TAG_NAME, "img")) == 2

        def qid():
            return driver.find_element(By.TAG_NAME, "body").get_attribute("data-qid")

        for how, label in (("click", "left"), (Keys.ARROW_RIGHT, "right"), ("e", "equal"), ("s", "skip")):
            q0 = qid()
            assert q0 == session.current.qid
            shown.append((session.current.left, session.current.right, label))
            if how == "click":
                driver.find_element(By.ID, "btn-left").click()
            else:
                driver.find_element(By.TAG_NAME, "body").send_keys(how)
            wait.until(lambda d: qid() and qid() != q0)
        got = session.store.labels()
        assert [(p.left, p.right, p.label) for p in got] == shown
        assert {p.labeller for p in got} == {"browser-test"}
    finally:
        driver.quit()
        server.shutdown()
        t.join(10)
        session.close()
    with PreferenceStore(run, readonly=True) as s:  # and they are in the file, not only in the session
        assert s.count() == 4


def test_fit_makes_the_runs_reward_model_and_queries_turn_to_disagreement(tmp_path, capsys):
    from vla_rl_ros.cli import main
    from vla_rl_ros.preferences.onnx_reward import OnnxRewardModel, reward_model_path

    run = fresh_run(tmp_path, n_episodes=8, ep_len=20, seed=4)
    assert main(["label", str(run), "--fit"]) == 2  # no labels yet: a clear error, not a traceback
    s = LabelSession(run, "fitter", segment_len=10, seed=0)
    for i in range(12):
        q = s.query()
        assert q.info["selection"] == "random"
        s.answer(q.qid, ("left", "right", "equal", "skip")[i % 4])
    s.close()
    capsys.readouterr()
    assert main(["label", str(run), "--fit", "--steps", "30"]) == 0
    assert "9 labels" in capsys.readouterr().out  # skip is never trained on
    m = OnnxRewardModel(reward_model_path(run / "models"))
    dr = m.lineage["data_range"]
    assert dr["n_labels"] == 9 and dr["labellers"] == ["fitter"] and m.lineage["training_steps"] == 30
    s = LabelSession(run, "fitter", segment_len=10, seed=1, n_candidates=4)
    q = s.query()
    assert q.info["selection"] == "disagreement" and q.info["reward_model"] == m.version
    s.close()


def test_the_page_refits_the_reward_model_in_the_background_as_labels_come_in(tmp_path):
    """refit_every 4: the 4th and 8th trainable answers each start a fit on all the labels so far (skip is not
    counted); the page and /api/labels say so; queries turn to disagreement on the newest model; a reopened session
    on a run whose labels are already fitted does not refit at its first answer."""
    from vla_rl_ros.preferences.onnx_reward import OnnxRewardModel, reward_model_path

    run = fresh_run(tmp_path, n_episodes=8, ep_len=20, seed=6)
    s = LabelSession(run, "fitter", segment_len=10, seed=0, refit_every=4, refit_steps=20)
    c = create_app(s).test_client()
    assert b"refit every 4 labels" in c.get("/").data
    answers = ["left", "right", "skip", "equal", "left"]  # the 5th answer is the 4th trainable one
    for a in answers:
        q = s.query()
        assert q.info["selection"] == "random"
        assert c.post("/api/label", json={"qid": q.qid, "label": a}).status_code == 200
    s.wait_for_fit(60)
    fits = c.get("/api/labels").get_json()["fits"]
    assert len(fits) == 1 and fits[0]["labels"] == 4 and "error" not in fits[0], fits
    first = OnnxRewardModel(reward_model_path(run / "models"))
    assert first.version == fits[0]["version"] and first.lineage["data_range"]["n_labels"] == 4
    assert f"newest {first.version}, fit on 4 labels".encode() in c.get("/").data
    for i, a in enumerate(["left", "right", "left", "right"]):
        q = s.query()  # the first was chosen when the 5th answer came back, before its fit had finished
        assert q.info["selection"] == ("random" if i == 0 else "disagreement")
        s.answer(q.qid, a)
    s.wait_for_fit(60)
    assert [f["labels"] for f in s.fits] == [4, 8]
    newest = OnnxRewardModel(reward_model_path(run / "models"))
    assert newest.lineage["parent_version"] == first.version and newest.lineage["data_range"]["n_labels"] == 8
    s.close()
    s2 = LabelSession(run, "fitter", segment_len=10, seed=1, refit_every=4, refit_steps=20)
    q = s2.query()
    s2.answer(q.qid, "left")
    s2.wait_for_fit(60)
    assert s2.fits == []
    with pytest.raises(ValueError, match="refit_every"):
        LabelSession(run, "fitter", segment_len=10, refit_every=-1)
    s2.close()
