"""The run's progress plot (``success.png``): success and interventions against minutes and environment steps.

Four panels, two columns (left: wall-clock minutes since the start of the run, right: environment steps):

* top: the live success rate of the *unassisted* episodes (rolling; the policy itself, exploring with noise),
  the monitor's success of each model the arm ran (:mod:`.monitor`: the same fixed block of seeded twin
  episodes for every model, no noise; a marker with its 95 % interval where the result became known, a
  dotted level from the model's promotion until then and a solid one after), the gate's figure of each
  promoted candidate, each promotion (vertical dashed lines), and beside the gate's figure the promoted model's
  live success on the arm (:mod:`.gate_vs_live`: its unassisted episodes; a dotted line joins the two: how far the
  twin can be trusted);
* bottom: the intervention rate (rolling): the fraction of episodes a teacher/human took over in, and the
  fraction of ticks under intervention.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

C_LIVE, C_MON, C_PROMO, C_INT, C_TICK = "tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange"
C_GVL = "tab:brown"


def _rolling(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each index (fewer at the start)."""
    k = np.ones(max(1, min(window, len(values))))
    return np.convolve(values, k, mode="full")[: len(values)] / np.minimum(np.arange(1, len(values) + 1), len(k))


def make_figure(episodes: list[dict], promotions: list[dict], monitor: list[dict] | None = None,
                window: int = 20, title: str = "success rate", t0: float | None = None,
                gate_vs_live: list[dict] | None = None):
    """The figure (matplotlib, Agg); see :func:`plot_progress` for the inputs. Returns the ``Figure``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monitor = [m for m in (monitor or []) if m.get("version")]
    live_of = {r["version"]: r for r in (gate_vs_live or []) if r.get("version") and r.get("live_rate") is not None}
    times = [e["t"] for e in episodes if e.get("t") is not None]
    times += [p["t"] for p in promotions if p.get("t") is not None]
    times += [m[k] for m in monitor for k in ("queued", "finished") if m.get(k) is not None]
    has_t = bool(times)
    if t0 is None:
        t0 = min(times) if times else 0.0
    ep_t = np.array([float(e.get("t", np.nan)) for e in episodes], dtype=float)
    ep_x = np.array([float(e["env_steps"]) for e in episodes], dtype=float)

    def to_min(t):
        return (float(t) - t0) / 60.0

    def to_steps(t):
        """Environment steps reached at wall time ``t`` (interpolated between episode ends)."""
        ok = ~np.isnan(ep_t)
        if not ok.any():
            return 0.0
        return float(np.interp(float(t), np.concatenate([[t0], ep_t[ok]]), np.concatenate([[0.0], ep_x[ok]])))

    fig, axes = plt.subplots(2, 2, figsize=(14, 7.5), dpi=100, sharex="col",
                             gridspec_kw={"height_ratios": [3, 1.4]})
    (a_tm, a_ts), (b_tm, b_ts) = axes
    # x of everything, per column: minutes (left), environment steps (right)
    cols = [(a_tm, b_tm, "minutes since the start of the run", "t"), (a_ts, b_ts, "environment steps (policy ticks recorded)",
                                                                      "env_steps")]
    una = [e for e in episodes if not e.get("assisted")]
    s = np.array([float(bool(e["success"])) for e in una])
    roll = _rolling(s, window) if len(s) else s
    n_int = np.array([float(e.get("n_intervention_steps") or 0) for e in episodes])
    length = np.array([float(e.get("length") or 0) for e in episodes])
    assisted = np.array([float(bool(e.get("assisted"))) for e in episodes])
    w = max(1, min(window, len(episodes)))
    k = np.ones(w)
    tick_frac = (np.convolve(n_int, k, mode="full")[: len(n_int)]
                 / np.maximum(np.convolve(length, k, mode="full")[: len(length)], 1.0)) if len(episodes) else n_int
    ep_frac = _rolling(assisted, window) if len(episodes) else assisted

    # each monitored model: from its promotion (or the start, for the model the run started with) to the next one
    promo_by_version = {p.get("version"): p for p in promotions}
    end_t = max(times) if times else 0.0
    end_x = float(ep_x.max()) if len(ep_x) else 0.0
    end_x = max([end_x] + [float(p["env_steps"]) for p in promotions])
    mons = []
    for m in monitor:
        p = promo_by_version.get(m["version"])
        start_t = p.get("t") if p else None
        start_t = t0 if start_t is None else float(start_t)
        start_x = float(p["env_steps"]) if p else 0.0
        mons.append((m, start_t, start_x))
    mons.sort(key=lambda z: (z[2], z[1]))

    for top, bottom, xlabel, key in cols:
        minutes = key == "t"
        if minutes and not has_t:
            top.text(0.5, 0.5, "no wall-clock times recorded", transform=top.transAxes, ha="center", color="0.4")
        else:
            xs_una = np.array([to_min(e["t"]) if minutes else e["env_steps"] for e in una], dtype=float)
            xs_all = np.array([to_min(e["t"]) if minutes else e["env_steps"] for e in episodes], dtype=float)
            if len(s):
                top.plot(xs_una, 100 * roll, color=C_LIVE, lw=2,
                         label=f"live success, unassisted episodes (last {min(window, len(s))}, with exploration noise)")
                top.scatter(xs_una, 100 * s, s=6, color=C_LIVE, alpha=0.25, label="unassisted episode outcome")
            if len(episodes):
                bottom.plot(xs_all, 100 * ep_frac, color=C_INT, lw=1.8,
                            label=f"episodes with an intervention (last {w})")
                bottom.plot(xs_all, 100 * tick_frac, color=C_TICK, lw=1.5, ls="-.",
                            label=f"ticks under intervention (last {w} episodes)")
            # monitor: level from the model's start to the next model's start; marker + CI when known
            labelled = False
            for i, (m, st, sx) in enumerate(mons):
                if m.get("success_rate") is None:
                    continue
                nxt = mons[i + 1] if i + 1 < len(mons) else None
                x0 = to_min(st) if minutes else sx
                x1 = (to_min(nxt[1]) if minutes else nxt[2]) if nxt else (to_min(end_t) if minutes else end_x)
                known = m.get("finished")
                xk = (to_min(known) if minutes else to_steps(known)) if known is not None else x0
                xk = max(xk, x0)
                y = 100 * m["success_rate"]
                top.hlines(y, x0, max(x0, min(xk, x1)), color=C_MON, lw=1.5, ls=":", alpha=0.8)
                if xk < x1:
                    top.hlines(y, xk, x1, color=C_MON, lw=2.5, alpha=0.9)
                ci = m.get("success_ci95") or [m["success_rate"], m["success_rate"]]
                top.errorbar([xk], [y], yerr=[[y - 100 * ci[0]], [100 * ci[1] - y]], fmt="o", color=C_MON,
                             ms=6, capsize=3, lw=1.2,
                             label=None if labelled else f"monitor: the model's success on the same "
                             f"{m.get('episodes', 'N')} seeded twin episodes (95% CI; no noise; "
                             f"dotted until known)")
                labelled = True
                top.text(xk, y + 2.5, f"{y:.0f}%", color=C_MON, fontsize=8, ha="left", va="bottom")
            # promotions (and the gate's own figure for each promoted candidate, beside its live success)
            gvl_labelled = False
            for i, p in enumerate(promotions):
                if minutes and p.get("t") is None:
                    continue
                x = to_min(p["t"]) if minutes else p["env_steps"]
                for ax in (top, bottom):
                    ax.axvline(x, color=C_PROMO, ls="--", lw=1, label="promotion (v1, v2, ...)" if i == 0 else None)
                top.text(x, 103, f"v{i + 1}", color=C_PROMO, fontsize=8, ha="center")
                rate = (p.get("data") or {}).get("candidate_rate")
                if rate is not None:
                    top.scatter([x], [100 * rate], marker="D", s=28, facecolors="none", edgecolors=C_PROMO, zorder=3,
                                label="gate's figure for the promoted model (its winning seeds)" if i == 0 else None)
                row = live_of.get(p.get("version"))
                if row is not None:
                    y = 100 * row["live_rate"]
                    if rate is not None:
                        top.vlines(x, min(y, 100 * rate), max(y, 100 * rate), color=C_GVL, lw=1, ls=":")
                    top.scatter([x], [y], marker="s", s=24, color=C_GVL, zorder=3,
                                label=None if gvl_labelled else "the promoted model's live success on the arm "
                                "(unassisted episodes; dotted: the gap to the gate's figure)")
                    top.text(x, y - 2.5, f"{y:.0f}% of {row['live_episodes']}", color=C_GVL, fontsize=7, ha="left",
                             va="top")
                    gvl_labelled = True
        top.set_ylim(-3, 108)
        top.set_ylabel("success rate (%)")
        top.set_title("against wall-clock minutes" if minutes else "against environment steps", fontsize=10)
        top.grid(alpha=0.3)
        bottom.set_ylim(-3, 103)
        bottom.set_ylabel("intervention (%)")
        bottom.set_xlabel(xlabel)
        bottom.grid(alpha=0.3)
        top.set_xlim(left=0)
    # one legend for the four panels, below them (the panels share their series)
    handles, labels = [], []
    for ax in (a_ts, b_ts, a_tm, b_tm):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, framealpha=0.9)
    last = next((m for m in reversed(mons) if m[0].get("success_rate") is not None), None)
    sub = f"{len(episodes)} episodes, {len(promotions)} promotions"
    if last is not None:
        sub += f", monitor {100 * last[0]['success_rate']:.0f}% ({last[0]['version']})"
    fig.suptitle(f"{title}  ({sub})", fontsize=12)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    return fig


def plot_progress(episodes: list[dict], promotions: list[dict], out_path: str, window: int = 20,
                  title: str = "success rate", monitor: list[dict] | None = None, t0: float | None = None,
                  gate_vs_live: list[dict] | None = None) -> str:
    """Write the progress figure to ``out_path`` (PNG, atomically: a temp file, then ``os.replace``).

    ``episodes``: dicts with ``env_steps`` (cumulative, at episode end), ``success``, optionally ``assisted``
    (a teacher/human intervened), ``n_intervention_steps``, ``length`` and ``t`` (wall time of the episode's
    end, s); ``promotions``: dicts with ``env_steps``, ``version``, optionally ``t`` and ``data.candidate_rate``
    (the gate's figure); ``monitor``: :mod:`.monitor` records (``version``, ``success_rate``, ``success_ci95``,
    ``episodes``, ``finished``); a record whose version is not among ``promotions`` is the model the run
    started with. ``t0``: wall time of the start of the run (default: the earliest time given).
    ``gate_vs_live``: :func:`.gate_vs_live.gate_vs_live` rows; each promoted model's live success is drawn at its
    promotion, beside the gate's figure.

    Success rates are over the *unassisted* episodes only, so they measure the policy itself."""
    import matplotlib.pyplot as plt

    fig = make_figure(episodes, promotions, monitor, window=window, title=title, t0=t0, gate_vs_live=gate_vs_live)
    d = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".png.tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the plot is for anyone to open
        os.replace(tmp, out_path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return out_path
