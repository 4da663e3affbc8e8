"""The labelling page behind ``vla-rl-ros label RUN``: two recorded segments side by side, a person picks one.

What a person sees. Each segment is drawn server-side (matplotlib, Agg, no
display needed) as two views of the scene over the segment's ticks: from the
top (x–y) and from the side (x–z), with the hand's path, the cube's path and
the goal (a star where it ends), the hand and cube paths with a start marker
(circle) and an end marker (square).
Both segments are drawn on the same axes limits, so "which one got the cube
closer to the goal" is a look, not a measurement. The positions come from the
recorded observations, in the spec's layout (``ee_pos``, ``object_pos``,
``goal_pos``: :mod:`vla_rl_ros.spec`).

What it asks. The next pair is chosen by :mod:`.segments`: PEBBLE's ensemble
disagreement (:func:`~.segments.disagreement_pairs`) once the run has a reward
model (``<run>/models/reward/``), uniformly at random before. The ensemble's
members are run in ONNX Runtime (:class:`~.onnx_reward.OnnxRewardModel`), so
the page needs no torch. A pair already in the store (either order) is never
asked again, and a pair is stored at most once even if its answer is posted
twice (a double click, two tabs).

Where answers go. Each answer is one committed transaction in the run's
preference store (:class:`~.store.PreferenceStore`) before the server replies,
so a ``kill -9`` of the server loses nothing it has acknowledged
(``test/test_label_page.py``).

Routes::

    GET  /                       the page (the current query; keys ← → = e s)
    GET  /plot/<qid>/<side>.png  a segment's views (side: left | right)
    POST /label                  form {qid, label}: store it, then 303 to /
    GET  /api/query              the current query as JSON (404 when every pair has been asked)
    POST /api/label              JSON {qid, label}: store it; JSON {saved, next} (409: not the current query)
    GET  /api/labels             counts, the latest labels and the background fits (``refit_every``) as JSON

Why Flask: the issue asks for a small, well-kept framework rather than a
hand-rolled HTTP server. Flask is the smallest of the maintained ones that
does routing, form/JSON parsing and templating, its server (Werkzeug) is
already in the learner's environment (tensorboard needs it), and it adds
three small pure-Python packages (the ``label`` extra in ``setup.py``).
Werkzeug's threaded server is a development server: fine for one person on
localhost, which is why the page binds 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import getpass
import io
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .segments import EpisodeIndex, SegmentData, disagreement_pairs, random_pairs
from .store import LABELS, PreferenceStore, Segment

#: The keys the page answers to (also shown on it).
KEYS = {"ArrowLeft": "left", "ArrowRight": "right", "=": "equal", "e": "equal", "s": "skip"}


def default_labeller() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment (a bare container)
        return "unknown"


@dataclass
class Query:
    qid: str
    left: Segment
    right: Segment
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"qid": self.qid, "left": self.left.__dict__, "right": self.right.__dict__, "info": self.info}


class OnnxMemberProbs:
    """``member_probs`` (what :func:`~.segments.disagreement_pairs` needs) from a saved ONNX reward model."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.version = model.version

    def member_probs(self, pairs: list[tuple[SegmentData, SegmentData]]) -> np.ndarray:
        def ret(s: SegmentData) -> np.ndarray:
            return np.asarray(self.model.members(s.obs, s.actions), np.float64).sum(axis=0)  # (E,)

        d = np.stack([ret(a) - ret(b) for a, b in pairs], axis=1)  # (E, N)
        return 1.0 / (1.0 + np.exp(-d))


class LabelSession:
    """The page's state, free of the web framework: the run, its episodes, the store, the current query.

    Args:
        run: a run folder (its store segments, ``preferences.sqlite`` and ``models/``).
        labeller: who answers (stored with each label).
        segment_len: ticks per segment (episodes shorter than that are never shown).
        seed: the query sampler's seed.
        n_candidates: disagreement sampling's candidates per query (PEBBLE's 10).
        reload_s: how often, at most, to reload the run's episodes (the recorder may still be writing).
        refit_every: with N > 0, fit a new reward model on all the run's trainable labels, in a background
            thread, each time N more have come in since the last fit (the first at N): the learner
            (``reward: learned``, ``algo: rlhf``) and this page's disagreement queries pick up the newest,
            so the person labelling never has to run ``--fit``. 0: never (``label RUN --fit`` by hand).
        refit_steps: Adam steps of each such fit.
    """

    def __init__(self, run: str | Path, labeller: str | None = None, *, segment_len: int = 25, seed: int = 0,
                 n_candidates: int = 10, reload_s: float = 30.0, refit_every: int = 0,
                 refit_steps: int = 1000) -> None:
        from ..buffer import open_run

        self.run = open_run(run)
        self.spec = self.run.spec
        self.labeller = labeller or default_labeller()
        self.segment_len = int(segment_len)
        if self.segment_len < 1:
            raise ValueError("segment_len must be >= 1")
        self.n_candidates = int(n_candidates)
        self.reload_s = float(reload_s)
        self.rng = np.random.default_rng(seed)
        self.store = PreferenceStore(self.run.path)
        self._lock = threading.RLock()
        self._plots: dict[tuple[str, str], bytes] = {}
        self._model: OnnxMemberProbs | None = None
        self._index: EpisodeIndex | None = None
        self._loaded_at = 0.0
        self.current: Query | None = None
        self.refit_every, self.refit_steps, self._seed = int(refit_every), int(refit_steps), int(seed)
        if self.refit_every < 0 or self.refit_steps < 1:
            raise ValueError("refit_every must be >= 0 and refit_steps >= 1")
        self.fits: list[dict[str, Any]] = []  # every background fit: version, labels, agreement (or error), seconds
        self._fit_thread: threading.Thread | None = None
        # trainable labels the last fit started from: a run that already has a reward model counts its labels as
        # fitted (it was fit on them, or on fewer), so reopening the page does not refit at the first answer
        self._fitted_at = len(self.store.labels(trainable=True)) if self._reward_model() is not None else 0
        self._load_index(force=True)

    # ----------------------------------------------------------------- data
    def _load_index(self, force: bool = False) -> EpisodeIndex:
        if force or self._index is None or time.monotonic() - self._loaded_at > self.reload_s:
            self._index = EpisodeIndex.from_paths([self.run.path])
            self._loaded_at = time.monotonic()
            if not any(len(e) >= self.segment_len for e in self._index.episodes.values()):
                raise ValueError(f"{self.run.path}: no completed episode has {self.segment_len} ticks or more "
                                 f"({len(self._index)} completed episodes); try a smaller --segment-len")
        return self._index

    def _reward_model(self) -> OnnxMemberProbs | None:
        """The newest reward model of the run, if there is one (checked at every query: a learner may add one)."""
        from .onnx_reward import OnnxRewardModel, reward_model_path

        try:
            path = reward_model_path(self.run.models_dir)
        except FileNotFoundError:
            return None
        if self._model is None or self._model.model.path != path:
            self._model = OnnxMemberProbs(OnnxRewardModel(path))
        return self._model

    # -------------------------------------------------------------- queries
    def query(self) -> Query | None:
        """The current query (a new one if none is pending); ``None`` when every pair has been asked."""
        with self._lock:
            if self.current is None:
                try:
                    self.current = self._next_query()
                except ValueError:  # random_pairs found no pair not yet asked
                    return None
            return self.current

    def _next_query(self) -> Query:
        index = self._load_index()
        exclude = self.store.asked()
        model = self._reward_model()
        if model is not None:
            pairs, var = disagreement_pairs(index, model, 1, self.segment_len, self.rng,
                                            n_candidates=self.n_candidates, exclude=exclude)
            info = {"selection": "disagreement", "reward_model": model.version, "variance": float(var[0])}
        else:
            pairs = random_pairs(index, 1, self.segment_len, self.rng, exclude)
            info = {"selection": "random"}
        (left, right), = pairs
        return Query(uuid.uuid4().hex[:12], left, right, info)

    def answer(self, qid: str, label: str) -> Any:
        """Store ``label`` for query ``qid`` (committed when this returns) and move on to a new query.

        Raises:
            ValueError: unknown label.
            KeyError: ``qid`` is not the current query (already answered, or from an old page).
        """
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        with self._lock:
            q = self.current
            if q is None or q.qid != qid:
                raise KeyError(f"query {qid!r} is not the current one (already answered?)")
            pref = self.store.add(q.left, q.right, label, self.labeller,
                                  info={**q.info, "source": "label_page", "qid": q.qid})
            self.current = None
            self._plots = {k: v for k, v in self._plots.items() if k[0] != qid}
            self._maybe_refit()
            return pref

    # ------------------------------------------------------------- refitting
    def _maybe_refit(self) -> None:
        """Start a background fit once ``refit_every`` trainable labels have come in since the last one."""
        if self.refit_every <= 0 or (self._fit_thread is not None and self._fit_thread.is_alive()):
            return
        n = len(self.store.labels(trainable=True))
        if n - self._fitted_at < self.refit_every:
            return
        self._fitted_at = n
        self._fit_thread = threading.Thread(target=self._refit, args=(n,), name="reward-refit", daemon=True)
        self._fit_thread.start()

    def _refit(self, n: int) -> None:
        from .reward_model import RewardTrainConfig, fit_run_reward_model

        t0 = time.monotonic()
        try:
            saved, acc = fit_run_reward_model(self.run.path, RewardTrainConfig(steps=self.refit_steps,
                                                                               seed=self._seed + len(self.fits)))
            rec = {"version": saved.version, "labels": saved.lineage["data_range"]["n_labels"],
                   "agreement": float(acc)}
        except Exception as e:  # noqa: BLE001 - reported on the page and the API; labelling goes on
            rec = {"error": f"{type(e).__name__}: {e}", "labels": n}
        rec["seconds"] = round(time.monotonic() - t0, 2)
        with self._lock:
            self.fits.append(rec)

    def fit_line(self) -> str:
        """What the page says about the background fits."""
        if self.refit_every <= 0:
            return "Reward model: fit by hand (label RUN --fit)."
        with self._lock:
            last = self.fits[-1] if self.fits else None
        busy = self._fit_thread is not None and self._fit_thread.is_alive()
        txt = f"Reward model: refit every {self.refit_every} labels"
        if last is not None:
            txt += (f"; the last fit failed: {last['error']}" if "error" in last else
                    f"; newest {last['version']}, fit on {last['labels']} labels "
                    f"({100 * last['agreement']:.0f}% agreement with them)")
        return txt + ("; fitting now." if busy else ".")

    def wait_for_fit(self, timeout: float | None = None) -> None:
        """Block until a background fit in progress (if any) has finished."""
        t = self._fit_thread
        if t is not None:
            t.join(timeout)

    # ---------------------------------------------------------------- plots
    def positions(self, seg: Segment) -> dict[str, np.ndarray]:
        """``{hand, cube, goal}``: ``(L + 1, 3)`` positions over the segment (its last tick's next_obs included)."""
        d = self._load_index().data(seg)
        obs = np.concatenate([d.obs, d.next_obs[-1:]], axis=0)
        return {name: obs[:, self.spec.obs_slice(key)].astype(np.float64)
                for name, key in (("hand", "ee_pos"), ("cube", "object_pos"), ("goal", "goal_pos"))}

    def plot_png(self, qid: str, side: str) -> bytes:
        with self._lock:
            q = self.current
            if q is None or q.qid != qid or side not in ("left", "right"):
                raise KeyError(f"no segment {side!r} in query {qid!r}")
            key = (qid, side)
            if key not in self._plots:
                pl, pr = self.positions(q.left), self.positions(q.right)
                self._plots[key] = render_segment(pl if side == "left" else pr, limits=_limits([pl, pr]),
                                                  title=_title(q.left if side == "left" else q.right))
            return self._plots[key]

    def latest(self, n: int = 10) -> dict[str, Any]:
        labels = self.store.labels()
        with self._lock:
            fits = list(self.fits)
        return {"counts": self.store.counts(), "total": len(labels),
                "latest": [p.to_json() for p in labels[-n:][::-1]], "refit_every": self.refit_every,
                "fits": fits, "fitting": self._fit_thread is not None and self._fit_thread.is_alive()}

    def close(self) -> None:
        self.store.close()


def _title(seg: Segment) -> str:
    return f"episode {seg.episode}, ticks {seg.t0}–{seg.t1 - 1}"


def _limits(pos: list[dict[str, np.ndarray]], pad: float = 0.05) -> np.ndarray:
    """``(3, 2)`` axis limits covering every path of both segments (so both are drawn at the same scale)."""
    pts = np.concatenate([p for d in pos for p in d.values()], axis=0)
    lo, hi = pts.min(axis=0) - pad, pts.max(axis=0) + pad
    span = float((hi - lo).max())
    mid = (lo + hi) / 2
    return np.stack([mid - span / 2, mid + span / 2], axis=1)  # square views: equal scale on every axis


_STYLE = {"hand": dict(color="tab:blue", lw=2), "cube": dict(color="tab:orange", lw=2),
          "goal": dict(color="tab:green", lw=1, ls="--")}
_RENDER_LOCK = threading.Lock()  # matplotlib's font cache and text layout are not thread-safe


def render_segment(pos: dict[str, np.ndarray], limits: np.ndarray, title: str = "") -> bytes:
    """A PNG of the top (x–y) and side (x–z) views of the hand, cube and goal paths, start ○ and end □ marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with _RENDER_LOCK:
        fig = Figure(figsize=(7.0, 3.6), dpi=90)
        FigureCanvasAgg(fig)
        for k, (ax_i, name) in enumerate(((1, "top (x–y)"), (2, "side (x–z)"))):
            ax = fig.add_subplot(1, 2, k + 1)
            for what, p in pos.items():
                st = _STYLE[what]
                ax.plot(p[:, 0], p[:, ax_i], label=what, **st)
                if what == "goal":  # a star where the goal ends up (it rarely moves within a segment)
                    ax.plot(p[-1, 0], p[-1, ax_i], "*", color=st["color"], ms=16, mfc="none", mew=1.5)
                    continue
                ax.plot(p[0, 0], p[0, ax_i], "o", color=st["color"], ms=8, mfc="white", mew=2)
                ax.plot(p[-1, 0], p[-1, ax_i], "s", color=st["color"], ms=8)
            ax.set_xlim(*limits[0])
            ax.set_ylim(*limits[ax_i])
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlabel("x (m)")
            ax.set_ylabel(("y" if ax_i == 1 else "z") + " (m)")
            ax.set_title(name, fontsize=10)
            ax.grid(alpha=0.3)
        fig.axes[0].legend(loc="best", fontsize=8)
        if title:
            fig.suptitle(title + "   (○ start, □ end)", fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return buf.getvalue()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>label {{ run }}</title>
<style>
 body { font-family: sans-serif; margin: 1em; }
 .pair { display: flex; gap: 1em; flex-wrap: wrap; }
 .seg { border: 1px solid #ccc; padding: .5em; }
 .seg img { max-width: 100%; }
 button { font-size: 1.1em; padding: .4em 1.2em; margin: .3em; }
 .meta { color: #666; font-size: .9em; }
</style></head>
{% if q is none %}<body data-qid="">
<h2>Nothing left to ask: every pair of {{ seg_len }}-tick segments of run {{ run }} has been labelled.</h2>
<p class="meta">Labels: {% for k, v in counts.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}.
 Reload when the run has recorded more episodes.</p></body></html>
{% else %}<body data-qid="{{ q.qid }}">
<h2>Which segment does the task better? <span class="meta">run {{ run }}, labeller {{ labeller }}</span></h2>
<div class="pair">
 <div class="seg" id="left"><h3>left</h3>
  <img alt="left segment" src="/plot/{{ q.qid }}/left.png">
  <div class="meta">{{ title(q.left) }}</div></div>
 <div class="seg" id="right"><h3>right</h3>
  <img alt="right segment" src="/plot/{{ q.qid }}/right.png">
  <div class="meta">{{ title(q.right) }}</div></div>
</div>
<form id="answer" method="post" action="/label">
 <input type="hidden" name="qid" value="{{ q.qid }}">
 <button id="btn-left" name="label" value="left">← left</button>
 <button id="btn-equal" name="label" value="equal">= equal (e)</button>
 <button id="btn-right" name="label" value="right">right →</button>
 <button id="btn-skip" name="label" value="skip">skip (s)</button>
</form>
<p class="meta">Keys: ← left, → right, = or e equal, s skip (cannot tell). Query chosen by {{ q.info.selection }}.
 Labels so far: {% for k, v in counts.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}.</p>
<p class="meta" id="reward-model">{{ fit_line }}</p>
<script>
const KEYS = {{ keys | tojson }};
let sent = false;
document.addEventListener("keydown", (ev) => {
  const label = KEYS[ev.key];
  if (!label || sent || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  ev.preventDefault();
  sent = true;
  document.getElementById("btn-" + label).click();
});
document.getElementById("answer").addEventListener("submit", () => { sent = true; });
</script>
</body></html>{% endif %}
"""


def create_app(session: LabelSession) -> Any:
    """The Flask app over ``session``."""
    from flask import Flask, Response, abort, jsonify, redirect, render_template_string, request

    app = Flask(__name__)

    @app.get("/")
    def page() -> Any:
        q = session.query()
        return render_template_string(PAGE, q=q, run=session.run.name, labeller=session.labeller, title=_title,
                                      fit_line=session.fit_line(),
                                      keys=KEYS, counts=session.store.counts(), seg_len=session.segment_len)

    @app.get("/plot/<qid>/<side>.png")
    def plot(qid: str, side: str) -> Any:
        try:
            png = session.plot_png(qid, side)
        except KeyError:
            abort(404)
        return Response(png, mimetype="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/label")
    def label_form() -> Any:
        try:
            session.answer(request.form.get("qid", ""), request.form.get("label", ""))
        except ValueError as e:
            return Response(str(e), status=400)
        except KeyError:
            pass  # an old page's answer (a double click): show the current query
        return redirect("/", code=303)

    def query_json() -> Any:
        q = session.query()
        return None if q is None else q.to_json()

    @app.get("/api/query")
    def api_query() -> Any:
        q = query_json()
        return jsonify(q) if q is not None else (jsonify(error="every pair has been asked"), 404)

    @app.post("/api/label")
    def api_label() -> Any:
        body = request.get_json(silent=True) or {}
        try:
            pref = session.answer(str(body.get("qid", "")), str(body.get("label", "")))
        except ValueError as e:
            return jsonify(error=str(e)), 400
        except KeyError as e:
            return jsonify(error=str(e.args[0])), 409
        return jsonify(saved=pref.to_json(), next=query_json())

    @app.get("/api/labels")
    def api_labels() -> Any:
        return jsonify(session.latest(int(request.args.get("n", 10))))

    return app


def make_server(session: LabelSession, host: str = "127.0.0.1", port: int = 0) -> Any:
    """A threaded Werkzeug server for the page (port 0: a free one; ``server.server_port`` says which)."""
    from werkzeug.serving import make_server as _make

    return _make(host, port, create_app(session), threaded=True)
