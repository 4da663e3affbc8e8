"""Success rate against environment steps, with promoted versions marked (PNG)."""
from __future__ import annotations

import os
import tempfile

import numpy as np


def plot_progress(episodes: list[dict], promotions: list[dict], out_path: str, window: int = 20,
                  title: str = "success rate") -> str:
    """``episodes``: dicts with ``env_steps`` (cumulative, at episode end), ``success`` and optionally
    ``assisted`` (a teacher/human intervened); ``promotions``: dicts with ``env_steps`` and ``version``.

    The success rates (rolling, and per model version) are over the *unassisted* episodes only, so they
    measure the policy itself; assisted episodes are drawn as grey marks. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    assisted = [e for e in episodes if e.get("assisted")]
    if assisted:
        ax.scatter([e["env_steps"] for e in assisted], [100.0 * bool(e["success"]) for e in assisted], s=10,
                   marker="x", color="0.55", alpha=0.5, label="assisted episode (teacher intervened; not counted)")
    episodes = [e for e in episodes if not e.get("assisted")]
    if episodes:
        x = np.array([e["env_steps"] for e in episodes], dtype=float)
        s = np.array([float(bool(e["success"])) for e in episodes])
        k = np.ones(min(window, len(s)))
        roll = np.convolve(s, k, mode="full")[: len(s)] / np.minimum(np.arange(1, len(s) + 1), len(k))
        ax.plot(x, 100 * roll, color="tab:blue", lw=2, label=f"success rate (last {len(k)} unassisted episodes)")
        ax.scatter(x, 100 * s, s=6, color="tab:blue", alpha=0.25, label="episode outcome")
        # each model version's own success rate over the episodes it ran (a flat segment)
        versions = [",".join(e.get("model_versions") or []) for e in episodes]
        start = 0
        for i in range(1, len(versions) + 1):
            if i == len(versions) or versions[i] != versions[start]:
                seg = s[start:i]
                if len(seg) >= 3 and "," not in versions[start]:
                    x0 = x[start - 1] if start else 0.0  # the version took over after the previous episode
                    ax.hlines(100 * seg.mean(), x0, x[i - 1],
                              color="tab:orange", lw=2.5, alpha=0.8,
                              label="success rate of each model version" if start == 0 else None)
                    ax.text(x[i - 1], 100 * seg.mean() + 2, f"{100 * seg.mean():.0f}% ({len(seg)} ep)",
                            color="tab:orange", fontsize=8, ha="right")
                start = i
    for i, p in enumerate(promotions):
        ax.axvline(p["env_steps"], color="tab:green", ls="--", lw=1)
        ax.text(p["env_steps"], 102, f"v{i + 1}", color="tab:green", fontsize=8, ha="center")
    # the gate's own measurement of each promoted model (twin, seeded episodes, deterministic policy), and of the
    # starting model at the first gate
    gates = [(p["env_steps"], (p.get("data") or {}).get("candidate_rate")) for p in promotions]
    if promotions:
        gates.insert(0, (0.0, (promotions[0].get("data") or {}).get("incumbent_rate")))
    gx, gy = [x for x, r in gates if r is not None], [100 * r for _, r in gates if r is not None]
    if gx:
        ax.plot(gx, gy, "D-", color="tab:green", ms=6, lw=1, alpha=0.8,
                label="promoted model at the twin gate (seeded episodes, no noise)")
    ax.set_ylim(-3, 108)
    ax.set_xlabel("environment steps (policy ticks recorded)")
    ax.set_ylabel("success rate (%)")
    ax.set_title(title + (f"  ({len(promotions)} promotions, dashed)" if promotions else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".png.tmp")
    os.close(fd)
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, out_path)
    return out_path
