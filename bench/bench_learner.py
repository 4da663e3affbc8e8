"""Learner throughput: gradient steps/s of our SAC update vs Stable-Baselines3 SAC.

Usage::

    .venv/bin/python bench/bench_learner.py [--steps 300] [--repeats 7] [--out docs/bench/learner.md]

Prints a markdown section and writes it to ``--out``.

Both learners get equal networks (actor and each of 2 critics a 2x256 ReLU MLP),
batch 256, the twin's observation/action sizes (from :class:`vla_rl_ros.spec.Spec`),
one torch thread, and are measured side by side in the same process, in
alternating order, ``--repeats`` times; medians and ratios are reported.

* **SB3**: ``model.train(gradient_steps=N, batch_size=256)`` on a replay buffer
  pre-filled with random transitions (the fill is not timed). This includes
  SB3's own ``ReplayBuffer.sample`` for every step, and its per-step ``.item()``
  logging calls, i.e. exactly what ``SAC.learn`` runs per gradient step.
* **ours, end to end**: ``SAC.train_step(lambda: replay.sample(256))`` where
  ``replay`` is our :class:`vla_rl_ros.buffer.Replay` tailing a durable store
  (random transitions imported with ``import_episodes``; 20 "demo" episodes on
  the demo side, the rest online; ``demo_ratio=0.5``, the RLPD path). This is
  the like-for-like comparison with SB3 (both sample their own buffer).
* **ours, compute only**: ``SAC.update(batch)`` on batches pre-sampled from the
  same Replay (so only the gradient step is timed).
* **Replay.sample(256)** alone, to say whether sampling is ever the bottleneck.
* For context (not compared with SB3): our RLPD configuration (10 LayerNorm
  critics, target min over a random 2, actor on the ensemble mean), per update.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from collect import write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

torch.set_num_threads(1)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:  # already set
    pass

from vla_rl_ros.spec import Spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- shared by the benches
def machine_info() -> dict:
    """nproc, CPU model, torch version, load: what every bench section states."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": model,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load1": os.getloadavg()[0],
    }


def machine_line(info: dict, load_end: float | None = None, load: bool = True) -> str:
    s = (f"Machine: `nproc` = {info['nproc']}, CPU {info['cpu']}, torch {info['torch']} "
         f"({info['torch_threads']} thread), Python {info['python']}; shared machine")
    if not load:
        return s + "."
    s += f", 1-min load average {info['load1']:.2f} at start"
    if load_end is not None:
        s += f", {load_end:.2f} at end"
    return s + "."


def cmd_line() -> str:
    return "`.venv/bin/python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]) + "`"


# ----------------------------------------------------------------------------- setup
def make_replay(tmp: Path, spec: Spec, n_online: int, n_demo_eps: int = 20, ep_len: int = 120):
    """A durable run filled with random transitions, read back through our Replay."""
    from vla_rl_ros.buffer import Replay, create_run, import_episodes

    rng = np.random.default_rng(0)

    def episodes(n_eps: int):
        for _ in range(n_eps):
            yield {"obs": rng.normal(size=(ep_len + 1, spec.obs_dim)).astype(np.float32),
                   "actions": rng.uniform(-1, 1, (ep_len, spec.action_dim)).astype(np.float32),
                   "rewards": rng.normal(size=ep_len).astype(np.float32), "terminated": bool(rng.random() < 0.3),
                   "success": False}

    run = create_run(tmp, "bench", spec)
    import_episodes(run.buffer_path, episodes(n_demo_eps), is_demo=True, spec=spec)
    import_episodes(run.buffer_path, episodes(max(1, n_online // ep_len)), is_demo=False, spec=spec)
    replay = Replay([run.buffer_path], capacity=n_online + 10_000, seed=0)
    replay.refresh()
    return replay


def make_sb3(spec: Spec, buffer_size: int):
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import configure

    class _Spaces(gym.Env):
        """Only the spaces matter: SB3's train() never touches the env."""

        observation_space = gym.spaces.Box(-np.inf, np.inf, (spec.obs_dim,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (spec.action_dim,), np.float32)

        def reset(self, *, seed=None, options=None):
            return np.zeros(spec.obs_dim, np.float32), {}

        def step(self, a):
            return np.zeros(spec.obs_dim, np.float32), 0.0, False, False, {}

    # SB3 defaults for SAC already are net_arch [256, 256] for actor and critics, 2 critics,
    # lr 3e-4, tau 0.005, gamma 0.99, ent_coef "auto"; we set only the batch and buffer size.
    model = SB3SAC("MlpPolicy", _Spaces(), batch_size=256, buffer_size=buffer_size, device="cpu", seed=0,
                   policy_kwargs=dict(net_arch=[256, 256], n_critics=2), verbose=0)
    model.set_logger(configure(None, []))
    rb = model.replay_buffer
    rng = np.random.default_rng(0)
    n = buffer_size
    rb.observations[:n] = rng.normal(size=rb.observations[:n].shape).astype(np.float32)
    rb.next_observations[:n] = rng.normal(size=rb.next_observations[:n].shape).astype(np.float32)
    rb.actions[:n] = rng.uniform(-1, 1, rb.actions[:n].shape).astype(np.float32)
    rb.rewards[:n] = rng.normal(size=rb.rewards[:n].shape).astype(np.float32)
    rb.dones[:n] = (rng.random(rb.dones[:n].shape) < 0.01).astype(np.float32)
    rb.pos, rb.full = 0, True
    return model


def mlp_forward_flops(sizes: list[int], batch: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one forward pass of an MLP with layer sizes ``sizes``."""
    return 2.0 * batch * sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))


def sac_update_flops(obs_dim: int, act_dim: int, hidden: tuple[int, ...], n_critics: int, batch: int,
                     sb3: bool) -> float:
    """Matmul FLOPs of one SAC gradient step (backward with weight gradients = 2x forward).

    Critics: Q(s,a) forward + backward (3), target Q(s',a') forward (1), Q(s, a~) forward (1) and its
    backward to the action only (1): 6 critic-forwards. SB3's actor loss also computes the critic
    *weight* gradients of Q(s, a~) and then throws them away (+1). Actor: forward on s' and on s,
    backward on s (2): 4 actor-forwards, the same for both.
    """
    fc = n_critics * mlp_forward_flops([obs_dim + act_dim, *hidden, 1], batch)
    fa = mlp_forward_flops([obs_dim, *hidden, 2 * act_dim], batch)
    return (7 if sb3 else 6) * fc + 4 * fa


def matmul_gflops(hidden: int = 256, batch: int = 256, n_critics: int = 2, reps: int = 200, blocks: int = 1) -> float:
    """Single-thread GFLOP/s of the dominant kernel (the stacked critics' hidden layer), best of ``blocks``."""
    w = torch.randn(n_critics, hidden, hidden)
    h = torch.randn(n_critics, hidden, batch)
    b = torch.randn(n_critics, hidden, 1)
    for _ in range(20):
        torch.baddbmm(b, w, h)
    best = 0.0
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.baddbmm(b, w, h)
        best = max(best, 2.0 * n_critics * hidden * hidden * batch * reps / (time.perf_counter() - t0) / 1e9)
    return best


def roofline_text(ceiling: float, sb3_rate: float, flop_ratio: float, efficiency: float) -> str:
    """The roofline conclusion, worded by what was measured."""
    head = (f"At 100% of that kernel speed our update would run at ~{ceiling:.0f} steps/s, "
            f"~{ceiling / sb3_rate:.1f}x the SB3 median measured here (SB3 does {flop_ratio:.2f}x our FLOPs). ")
    if ceiling / sb3_rate < 2.0:
        return head + ("So 2x over SB3 with the same networks, batch and float32 precision is out of reach on this "
                       "CPU: it would need fewer FLOPs than SAC needs. The levers left are precision, more "
                       "threads/cores, or a GPU.")
    return head + (f"Ours reaches {100 * efficiency:.0f}% of that speed; the profile below says where the rest "
                   "goes.")


def layernorm_stats_cost(reps: int = 200) -> dict[str, float]:
    """µs per call of the LayerNorm statistics as our ensemble critic computes them vs a two-pass mean."""
    h = torch.randn(2, 256, 256)

    def var_mean():
        return torch.var_mean(h, dim=1, keepdim=True, correction=0)

    def two_pass():
        m = h.mean(1, keepdim=True)
        return (h - m).pow(2).mean(1, keepdim=True), m

    out = {}
    for name, fn in (("var_mean", var_mean), ("two_pass", two_pass)):
        for _ in range(10):
            fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out[name] = (time.perf_counter() - t0) / reps * 1e6
    out["max_diff"] = float((var_mean()[0] - two_pass()[0]).abs().max())
    return out


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_update(update, n: int = 30) -> dict[str, float]:
    """Share of self CPU time per op class in ``n`` calls of ``update()`` (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            update()
    rows = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in rows) or 1.0
    mm = sum(t for k, t in rows if k in MATMUL_OPS)
    opt = sum(t for k, t in rows if "adam" in k.lower() or "Optimizer" in k)
    top = sorted(((t, k) for k, t in rows if k not in MATMUL_OPS and "adam" not in k.lower()
                  and "Optimizer" not in k), reverse=True)[:4]
    return {"matmul": mm / total, "optimizer": opt / total, "other": 1 - (mm + opt) / total,
            "var_mean": sum(t for k, t in rows if k == "aten::var_mean") / total,
            "top": ", ".join(f"`{k}` {100 * t / total:.0f}%" for t, k in top)}


def ln_text(cost: float, prof: dict, stats: dict) -> str:
    """What the LayerNorm measurements say, worded by what the profile found."""
    head = (f"LayerNorm critics cost {cost:.1f}x the plain update. Profile of the LayerNorm update: matmuls "
            f"{100 * prof['matmul']:.0f}%, largest others: {prof['top']}. ")
    cmp = (f"on one [2, 256, 256] activation `torch.var_mean(h, dim=1)` takes {stats['var_mean']:.0f} µs and the "
           f"two-pass `m = h.mean(1); ((h - m) ** 2).mean(1)` {stats['two_pass']:.0f} µs "
           f"({stats['var_mean'] / stats['two_pass']:.0f}x, max abs difference {stats['max_diff']:.1e}; forward only).")
    if prof["var_mean"] > 0.05:
        return head + (f"`aten::var_mean` alone is {100 * prof['var_mean']:.0f}% of the update "
                       "(`networks.EnsembleCritic._act`). " + cmp[0].upper() + cmp[1:])
    return head + "The critic computes the statistics in two passes rather than with `torch.var_mean`: " + cmp


def timed(fn, n: int) -> float:
    """Calls per second of ``fn`` run ``n`` times (``fn(n)`` does the loop)."""
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="gradient steps per timed block")
    ap.add_argument("--repeats", type=int, default=7, help="timed blocks per learner (median reported)")
    ap.add_argument("--buffer", type=int, default=50_000, help="transitions in each replay buffer")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "learner.md"))
    args = ap.parse_args()

    from vla_rl_ros.algos.sac import SAC, SACConfig, as_batch

    info = machine_info()
    spec = Spec(task="pick_place")
    B, N = 256, args.steps
    with tempfile.TemporaryDirectory() as tmp:
        replay = make_replay(Path(tmp), spec, args.buffer)
        sb3 = make_sb3(spec, args.buffer)
        ours = SAC(spec.obs_dim, spec.action_dim, SACConfig(batch_size=B, hidden=(256, 256), n_critics=2, seed=0))
        ln = SAC(spec.obs_dim, spec.action_dim, SACConfig(batch_size=B, hidden=(256, 256), n_critics=2,
                                                          critic_layernorm=True, seed=0))
        rlpd = SAC(spec.obs_dim, spec.action_dim, SACConfig(batch_size=B, hidden=(256, 256), n_critics=10,
                                                            critic_layernorm=True, target_subset=2, actor_q="mean",
                                                            seed=0))
        pre = [as_batch(replay.sample(B, demo_ratio=0.5)) for _ in range(64)]

        def sb3_train(n):
            sb3.train(gradient_steps=n, batch_size=B)

        def ours_replay(n):
            sample = lambda: replay.sample(B, demo_ratio=0.5)  # noqa: E731
            for _ in range(n):
                ours.train_step(sample)

        def ours_pre(n):
            for i in range(n):
                ours.update(pre[i % len(pre)])

        def ln_pre(n):
            for i in range(n):
                ln.update(pre[i % len(pre)])

        def rlpd_pre(n):
            for i in range(n):
                rlpd.update(pre[i % len(pre)])

        def sample_only(n):
            for _ in range(n):
                replay.sample(B, demo_ratio=0.5)

        def sb3_sample_only(n):
            for _ in range(n):
                sb3.replay_buffer.sample(B)

        cases = {"sb3": sb3_train, "ours_replay": ours_replay, "ours_pre": ours_pre, "ln_pre": ln_pre,
                 "rlpd_pre": rlpd_pre}
        for fn in cases.values():  # warm-up (allocator, fused-Adam state, lazy inits)
            fn(20)
        res: dict[str, list[float]] = {k: [] for k in list(cases) + ["sample", "sb3_sample", "kernel"]}
        names = list(cases)
        for r in range(args.repeats):
            order = names if r % 2 == 0 else names[::-1]  # alternate the order: fair under drifting load
            for k in order:  # the LayerNorm context cases are slower: time shorter blocks
                res[k].append(timed(cases[k], max(10, N // {"rlpd_pre": 5, "ln_pre": 2}.get(k, 1))))
            res["sample"].append(timed(sample_only, 10 * N))
            res["sb3_sample"].append(timed(sb3_sample_only, 10 * N))
            res["kernel"].append(matmul_gflops())
        prof = profile_update(lambda: ours.update(pre[0]))
        prof_ln = profile_update(lambda: ln.update(pre[0]))
        ln_stats = layernorm_stats_cost()
        replay.close()

    med = {k: statistics.median(v) for k, v in res.items()}
    f_ours = sac_update_flops(spec.obs_dim, spec.action_dim, (256, 256), 2, B, sb3=False)
    f_sb3 = sac_update_flops(spec.obs_dim, spec.action_dim, (256, 256), 2, B, sb3=True)
    peak = med["kernel"]
    ceiling = peak * 1e9 / f_ours  # our updates/s if every FLOP ran at the kernel's best speed
    # paired per-repeat ratios (the same block of time for both), then their median
    ratio_replay = statistics.median(o / s for o, s in zip(res["ours_replay"], res["sb3"]))
    ratio_pre = statistics.median(o / s for o, s in zip(res["ours_pre"], res["sb3"]))
    sample_share = med["ours_pre"] / med["sample"]  # sample time / update time
    load_end = os.getloadavg()[0]

    def runs(k):
        return ", ".join(f"{x:,.0f}" for x in res[k])

    target = 2.0
    lines = [
        "## Learner throughput (`bench/bench_learner.py`)",
        "",
        f"Command: {cmd_line()}",
        "",
        machine_line(info, load_end),
        "",
        f"Compared: one SAC gradient step (critics, actor, temperature, Polyak), batch {B}, obs {spec.obs_dim} / "
        f"action {spec.action_dim}, actor and 2 critics each 2x256 ReLU MLPs, lr 3e-4, 1 torch thread; "
        f"{args.repeats} timed blocks of {N} steps per learner, interleaved in alternating order; "
        f"buffers of {args.buffer:,} random transitions (fill not timed). Stable-Baselines3 "
        f"{__import__('stable_baselines3').__version__} `SAC` with its defaults (only `batch_size=256`, "
        f"`buffer_size`, `device='cpu'` set); ours `vla_rl_ros.algos.sac.SAC` with `SACConfig()` defaults.",
        "",
        "| learner | what is timed | gradient steps/s, median | runs | vs SB3 (median of paired ratios) |",
        "| --- | --- | ---: | --- | ---: |",
        f"| SB3 SAC | `model.train(gradient_steps={N}, batch_size={B})` (samples its ReplayBuffer) | "
        f"{med['sb3']:,.0f} | {runs('sb3')} | 1.00x |",
        f"| **ours, end to end** | `SAC.train_step(lambda: replay.sample({B}, demo_ratio=0.5))` on our durable-store "
        f"`Replay` | **{med['ours_replay']:,.0f}** | {runs('ours_replay')} | **{ratio_replay:.2f}x** |",
        f"| ours, compute only | `SAC.update(batch)` on pre-sampled batches | {med['ours_pre']:,.0f} | "
        f"{runs('ours_pre')} | {ratio_pre:.2f}x |",
        f"| ours, 2 critics + LayerNorm (context) | `SAC.update`, `critic_layernorm=True` | {med['ln_pre']:,.0f} | "
        f"{runs('ln_pre')} | {med['ln_pre'] / med['sb3']:.2f}x |",
        f"| ours, RLPD config (context) | `SAC.update`, 10 LayerNorm critics, target min of random 2, "
        f"actor on ensemble mean | {med['rlpd_pre']:,.0f} | {runs('rlpd_pre')} | "
        f"{med['rlpd_pre'] / med['sb3']:.2f}x (5x the critics) |",
        "",
        "Sampling:",
        "",
        "| sampler | batches/s, median | time per batch | as a share of one of our updates |",
        "| --- | ---: | ---: | ---: |",
        f"| our `Replay.sample({B}, demo_ratio=0.5)` (numpy gather + torch.from_numpy) | {med['sample']:,.0f} | "
        f"{1e6 / med['sample']:.0f} µs | {100 * sample_share:.1f}% |",
        f"| SB3 `ReplayBuffer.sample({B})` (for reference) | {med['sb3_sample']:,.0f} | "
        f"{1e6 / med['sb3_sample']:.0f} µs | {100 * med['ours_pre'] / med['sb3_sample']:.1f}% |",
        "",
        f"Target: ours ≥ {target:.0f}x SB3 at equal networks: "
        + (f"**met** ({ratio_replay:.2f}x end to end, {ratio_pre:.2f}x compute only)." if ratio_replay >= target else
           f"**not met** end to end ({ratio_replay:.2f}x; compute only {ratio_pre:.2f}x)."),
        "",
        "A roofline, measured in the same run (kernel speed: median over the repeats, interleaved with the "
        "timed blocks):",
        "",
        "| | ours | SB3 |",
        "| --- | ---: | ---: |",
        f"| matmul FLOPs per gradient step (analytic, see `sac_update_flops`) | {f_ours / 1e6:.0f} M | "
        f"{f_sb3 / 1e6:.0f} M |",
        f"| achieved GFLOP/s (FLOPs x median steps/s; compute-only for ours) | {f_ours * med['ours_pre'] / 1e9:.1f} | "
        f"{f_sb3 * med['sb3'] / 1e9:.1f} |",
        f"| share of the single-thread `baddbmm` speed ({peak:.1f} GFLOP/s, the critics' hidden layer) | "
        f"{100 * f_ours * med['ours_pre'] / 1e9 / peak:.0f}% | {100 * f_sb3 * med['sb3'] / 1e9 / peak:.0f}% |",
        "",
        roofline_text(ceiling, med["sb3"], f_sb3 / f_ours, f_ours * med["ours_pre"] / 1e9 / peak),
        "",
        f"Profile of our `SAC.update` (torch.profiler, 30 updates, self CPU time): matmul kernels "
        f"(`mm/addmm/bmm/baddbmm`) {100 * prof['matmul']:.0f}%, optimiser {100 * prof['optimizer']:.0f}%, "
        f"everything else {100 * prof['other']:.0f}% (largest: {prof['top']}).",
        "",
        ln_text(med["ours_pre"] / med["ln_pre"], prof_ln, ln_stats),
        "",
        f"Sampling from our Replay costs ~{100 * sample_share:.1f}% of an update, so the learner is compute-bound; "
        f"sampling would only become the bottleneck at ~{med['sample'] / med['ours_pre']:.0f}x faster updates. "
        "Where the speed comes from (see `algos/sac.py`): both critics are one stacked ensemble "
        "(batched matmuls, no Python loop), one fused Adam step over all parameters, the actor loss "
        "back-propagates through detached critic weights (SB3 computes and discards critic weight gradients), "
        "one `_foreach_lerp_` Polyak update, and no per-step `.item()` calls (SB3 makes four per step).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
