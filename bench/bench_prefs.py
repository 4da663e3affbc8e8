"""Learning from preferences in the twin: RLHF (PEBBLE-style) vs the true reward, the 10%-mistake labeller, DPO, BC.

Issue 12's targets. From a *weak start* (a policy behaviour-cloned, ``nll``,
from a few noisy scripted-expert episodes: the reference ``pi_ref``), each arm
runs the same learner for the same number of environment steps and is then
evaluated on seeded twin episodes by the *true* task success:

* ``true``:    :class:`~vla_rl_ros.preferences.rlhf.RLHFSAC` on the task's true reward;
* ``rlhf``:    the same learner on the learned reward (``reward: learned`` semantics: the reward model is
  applied when a batch is sampled), labels from the oracle, asked in rounds as the run goes (PEBBLE: the
  first round random, later ones by ensemble disagreement), the reward model refit after each round;
* ``rlhf_mistake``: the same with the 10%-mistake labeller;
* ``dpo``:     DPO from ``pi_ref`` on the ``rlhf`` arm's labels (the same labels), no environment steps of its own;
* ``bc``:      ``pi_ref`` itself.

Everything is real: episodes go through the durable writer into a run's store, labels into its
``preferences.sqlite``, the reward models into its ``models/reward/`` registry. Per arm and seed the
bench records success, wall-clock and the parameters held in memory (the seed's Q6 table).

Per seed (one process each, so two seeds can share the 2 cores; about 10 minutes a seed on reach), then the
report::

    .venv/bin/python bench/bench_prefs.py --task reach --seeds 0 --out runs/bench/prefs_reach/seed_0.json --workdir runs/bench/prefs_reach/s0
    .venv/bin/python bench/bench_prefs.py --report runs/bench/prefs_reach/seed_*.json --out docs/bench/prefs_reach.md
    .venv/bin/python bench/bench_prefs.py --task pick_place --seeds 0 --steps 30000 --labels 500 ...

Smoke (seconds; checks the plumbing, the numbers mean nothing)::

    nice python bench/bench_prefs.py --tiny
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bench_sample_efficiency import demo_transitions  # noqa: E402
from vla_rl_ros.algos.bc import train_bc  # noqa: E402
from vla_rl_ros.algos.dpo import DPO, DPOConfig  # noqa: E402
from vla_rl_ros.algos.online import ReplayBuffer, sample_mixed, twin_hindsight  # noqa: E402
from vla_rl_ros.algos.sac import SACConfig  # noqa: E402
from vla_rl_ros.buffer import create_run  # noqa: E402
from vla_rl_ros.learner.evaluate import evaluate_policy  # noqa: E402
from vla_rl_ros.preferences.oracle import Oracle  # noqa: E402
from vla_rl_ros.preferences.reward_model import (RewardTrainConfig, data_range, labelled_pairs,  # noqa: E402
                                                 save_reward_model, train_reward_model)
from vla_rl_ros.preferences.rlhf import RLHFSAC  # noqa: E402
from vla_rl_ros.preferences.segments import EpisodeIndex, disagreement_pairs, random_pairs  # noqa: E402
from vla_rl_ros.preferences.store import PreferenceStore  # noqa: E402
from vla_rl_ros.rewards import default_reward_name, make_reward  # noqa: E402
from vla_rl_ros.rewards.learned import LearnedReward  # noqa: E402
from vla_rl_ros.twin import TwinEnv  # noqa: E402
from vla_rl_ros.twin.expert import ScriptedExpert, collect_demos  # noqa: E402


def n_params(*modules) -> int:
    return int(sum(p.numel() for m in modules for p in m.parameters()))


def weak_demos(task: str, episodes: int, noise: float, seed: int) -> list[dict]:
    """A few noisy scripted-expert episodes (seeds 50000 + 100 seed ..): what the weak start is cloned from."""
    env = TwinEnv(task=task)
    try:
        return collect_demos(env, ScriptedExpert(env.spec_, noise=noise, rng=np.random.default_rng(seed)),
                             episodes, seed=50_000 + 100 * seed)
    finally:
        env.close()


def weak_start(task: str, episodes: int, noise: float, steps: int, seed: int, loss: str = "nll",
               demos: list[dict] | None = None):
    """The weak reference ``pi_ref``: the Gaussian actor of :func:`weak_bc`."""
    return weak_bc(task, episodes, noise, steps, seed, loss, demos).actor


def weak_bc(task: str, episodes: int, noise: float, steps: int, seed: int, loss: str = "nll",
            demos: list[dict] | None = None):
    """Behaviour cloning on a few noisy scripted-expert episodes (:func:`weak_demos`, or ``demos``): the
    deterministic policy (exportable to ONNX)."""
    demos = demos if demos is not None else weak_demos(task, episodes, noise, seed)
    obs = np.concatenate([d["obs"][:-1] for d in demos])
    act = np.concatenate([d["actions"] for d in demos])
    return train_bc(obs, act, hidden=(256, 256), steps=steps, loss=loss, seed=seed)


def policy_fn(actor):
    def act(o):
        with torch.no_grad():
            return actor.deterministic(torch.as_tensor(o, dtype=torch.float32)[None])[0].numpy()
    return act


def run_learner(arm: str, task: str, ref, args, seed: int, root: Path, demos: dict | None = None) -> dict:
    """``true`` / ``rlhf`` / ``rlhf_mistake``: the same online learner, ``args.steps`` env steps. With ``demos``
    (transitions) and ``--demo-ratio``, that share of every batch comes from them (RLPD), and ``--bc-weight``
    adds a BC term on those rows to the actor loss (TD3+BC), as the continual learner's pick_place recipe."""
    env = TwinEnv(task=task)
    spec = env.spec_
    run = create_run(root, f"{arm}-s{seed}", spec)
    true_fn = make_reward(default_reward_name(task), spec)
    sac = RLHFSAC(spec.obs_dim, spec.action_dim, ref, beta=args.beta,
                  config=SACConfig(hidden=(256, 256), batch_size=args.batch_size, seed=seed,
                                    init_alpha=args.init_alpha, utd=args.utd, bc_weight=args.bc_weight,
                                    critic_layernorm=args.critic_layernorm,
                                    actor_warmup_updates=args.actor_warmup))
    demo_buf = ReplayBuffer.from_arrays(demos) if demos is not None and args.demo_ratio > 0 else None
    n_demo = int(round(args.batch_size * args.demo_ratio)) if demo_buf is not None else 0
    # HER as `train --algo sac` uses it (algos/online.py: twin_hindsight): each finished episode also counts as up
    # to K successes for goals it reached; the learned arms replace every sampled reward by the reward model's, so
    # they never see the true reward on these either (the relabelled goal is in the observation the model reads)
    her = twin_hindsight(env, k=args.hindsight, seed=seed) if args.hindsight > 0 else None
    buf = ReplayBuffer((args.hindsight + 1) * args.steps + 1, spec.obs_dim, spec.action_dim)
    learned = arm != "true"
    oracle = Oracle(mistake=0.1 if arm == "rlhf_mistake" else 0.0, seed=seed)
    rounds = max(1, args.label_rounds)
    per_round = max(1, args.labels // rounds)
    round_every = max(1, args.steps // rounds)
    model, rng, t_start = None, np.random.default_rng(seed), time.perf_counter()
    gen = np.random.default_rng(seed + 1)
    store = PreferenceStore(run.path)
    n_labels = 0
    with run.writer(synchronous="NORMAL") as w:
        obs, _ = env.reset(seed=seed * 1000)
        ep_obs, ep_act = [obs], []
        w.begin_episode(task, seed=seed * 1000, reward_config=true_fn.config)
        ep = 0
        for step in range(args.steps):
            a = sac.act(obs) if step >= args.learning_starts else policy_fn(sac.actor)(obs) + gen.normal(0, 0.3, spec.action_dim)
            a = np.clip(a, -1, 1).astype(np.float32)
            nxt, r, term, trunc, info = env.step(a)
            w.add_step(obs, a, float(r), nxt, terminated=bool(term), model_version=arm)
            buf.add(obs, a, float(r), nxt, bool(term))
            obs = nxt
            ep_obs.append(nxt)
            ep_act.append(a)
            if term or trunc:
                w.end_episode("success" if info.get("is_success") else "timeout")
                if her is not None:
                    buf.add_columns(her(np.asarray(ep_obs), np.asarray(ep_act)))
                ep += 1
                obs, _ = env.reset(seed=seed * 1000 + ep)
                ep_obs, ep_act = [obs], []
                w.begin_episode(task, seed=seed * 1000 + ep, reward_config=true_fn.config)
            if learned and (step + 1) % round_every == 0 and n_labels < args.labels:
                w.flush()
                index = EpisodeIndex.from_paths([run.path])
                try:
                    if model is None:
                        pairs = random_pairs(index, per_round, args.segment, rng, store.asked(), args.query_recent)
                    else:
                        pairs, _ = disagreement_pairs(index, model, per_round, args.segment, rng, exclude=store.asked(),
                                                      recent=args.query_recent)
                except ValueError:
                    pairs = []
                for left, right in pairs:
                    label, info_l = oracle.label(index.data(left), index.data(right))
                    store.add(left, right, label, oracle.name, info=info_l)
                    n_labels += 1
                if pairs:
                    batch, used = labelled_pairs(store.labels(trainable=True), index)
                    model, _ = train_reward_model(batch, RewardTrainConfig(steps=args.rm_steps, seed=seed,
                                                                          use_action=not args.rm_obs_only), model=model)
                    save_reward_model(model, run.models_dir, spec, {"data_range": data_range(used, store.meta()),
                                                                    "training_steps": args.rm_steps})
            # a learned arm never sees the true reward: it waits for its first reward model
            if step >= args.learning_starts and buf.size >= args.batch_size and (model is not None or not learned):
                def sample():
                    b = sample_mixed(buf, demo_buf, args.batch_size, n_demo, gen)
                    if learned and model is not None:  # the learned reward, applied at sampling time
                        with torch.no_grad():
                            b = b._replace(reward=args.rm_scale * (model.reward(b.obs, b.action) - args.rm_offset))
                    return b
                sac.train_step(sample)
        w.end_episode("timeout")
    store.close()
    env.close()
    wall = time.perf_counter() - t_start
    res = evaluate_policy(policy_fn(sac.actor), task, episodes=args.eval_episodes, seed=10_000 + 100 * seed)
    held = [sac.actor, sac.critic, sac.critic_target, sac.reference] + ([model] if model is not None else [])
    return {"arm": arm, "seed": seed, "success": float(np.mean(res.successes)), "labels": n_labels,
            "env_steps": args.steps, "wall_s": wall, "params_in_memory": n_params(*held), "run": str(run.path)}


def run_dpo(task: str, ref, args, seed: int, labels_run: Path) -> dict:
    t0 = time.perf_counter()
    index = EpisodeIndex.from_paths([labels_run])
    with PreferenceStore(labels_run, readonly=True) as s:
        batch, used = labelled_pairs(s.labels(trainable=True), index)
    dpo = DPO(ref, DPOConfig(beta=args.dpo_beta, steps=args.dpo_steps, seed=seed))
    dpo.fit(batch)
    wall = time.perf_counter() - t0
    res = evaluate_policy(policy_fn(dpo.actor), task, episodes=args.eval_episodes, seed=10_000 + 100 * seed)
    return {"arm": "dpo", "seed": seed, "success": float(np.mean(res.successes)), "labels": len(used),
            "env_steps": 0, "wall_s": wall, "params_in_memory": n_params(dpo.actor, dpo.reference)}


ARM_NAMES = {"bc": "BC (the reference, pi_ref)", "true": "the learner (SAC, beta KL to pi_ref) on the true reward",
             "rlhf": "RLHF: the same on the learned reward, oracle labels",
             "rlhf_mistake": "RLHF, the 10%-mistake labeller", "dpo": "DPO on the RLHF arm's labels"}
TARGET = {"reach": (200, 0.90), "pick_place": (500, 0.80)}  # issue 12: labels at most, share of true's success


BINS = (0.0, 0.05, 0.1, 0.2, 0.4, 10.0)  # distance of the tracked point to the goal (m)


def reward_model_check(run: str | Path, task: str, spec) -> dict | None:
    """The run's newest reward model against the true reward on the run's own steps: the correlation on the
    non-terminal steps, and the mean learned reward and the share of steps per distance-to-goal bin."""
    from vla_rl_ros.preferences.reward_model import load_reward_model
    from vla_rl_ros.rewards.core import ObsView
    from vla_rl_ros.rewards.tasks import task_distance

    run = Path(run)
    if not (run / "models" / "reward").is_dir():
        return None
    model = load_reward_model(run / "models")
    eps = list(EpisodeIndex.from_paths([run]).episodes.values())
    obs, act, nxt, term = (np.concatenate([getattr(e, k) for e in eps])
                           for k in ("obs", "actions", "next_obs", "terminated"))
    true = np.asarray(make_reward(default_reward_name(task), spec)(obs, act, nxt, term))
    with torch.no_grad():
        learned = model.reward(torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(act, dtype=torch.float32)).numpy()
    d = task_distance(ObsView(spec), obs, task)
    nt = ~term.astype(bool)
    bins = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        m = nt & (d >= lo) & (d < hi)
        bins.append((float(m.mean()), float(learned[m].mean()) if m.any() else float("nan")))
    return {"corr": float(np.corrcoef(true[nt], learned[nt])[0, 1]), "bins": bins, "steps": int(len(d))}


def report(paths: list[str], out: str, command: str) -> str:
    """``docs/bench/prefs_<task>.md`` from the per-seed JSON results of one setting."""
    import platform

    from collect import cpu_model, write_section

    runs = [json.loads(Path(q).read_text()) for q in paths]
    a = runs[0]["args"]
    task = a["task"]
    rows = [r for run in runs for r in run["rows"]]
    seeds = sorted({r["seed"] for r in rows})
    arms = [k for k in ARM_NAMES if any(r["arm"] == k for r in rows)]
    cell = {(r["arm"], r["seed"]): r for r in rows}
    med = {k: float(np.median([cell[k, s]["success"] for s in seeds if (k, s) in cell])) for k in arms}
    title = ", without hindsight" if not a.get("hindsight", 0) else ""
    lines = [f"## Learning from preferences: RLHF and DPO against the true reward, {task}{title} (`bench/bench_prefs.py`)", "",
             f"Command: `{command}`; then `.venv/bin/python bench/bench_prefs.py --report "
             f"{' '.join(paths)} --out {out}`", "",
             f"Machine: `nproc` = {os.cpu_count()}, CPU {cpu_model()}, torch {torch.__version__} (1 thread), "
             f"Python {platform.python_version()}; shared machine.", "",
             f"Setting: from a weak start (BC, `{a.get('bc_loss', 'nll')}`, on {a['demo_episodes']} scripted-expert episodes with action "
             f"noise {a['demo_noise']}), each learner arm runs {a['steps']:,} env steps of SAC "
             f"(init alpha {a['init_alpha']}, KL weight beta {a['beta']} toward the reference, UTD {a['utd']}, "
             f"hindsight {a.get('hindsight', 0)} goals per episode"
             + (f"; {a['demo_ratio']:g} of every batch from the weak start's demos, a BC term of weight "
                f"{a.get('bc_weight', 0):g} on them" if a.get("demo_ratio") else "")
             + ("; LayerNorm critics" if a.get("critic_layernorm") else "")
             + (f"; {a['actor_warmup']} critic-only updates first" if a.get("actor_warmup") else "")
             + "). "
             f"The RLHF arms never see the true reward: up to {a['labels']} labels from a synthetic labeller on "
             f"{a['segment']}-tick segments of their own episodes, asked in {a['label_rounds']} rounds (the first "
             f"random, then PEBBLE's ensemble disagreement), the reward model refit after each round "
             f"({a['rm_steps']} steps) and applied when a batch is sampled, as a cost: "
             f"{a['rm_scale']:g} x (r - {a['rm_offset']:g}). DPO: {a['dpo_steps']} steps, beta {a['dpo_beta']}, "
             f"on the RLHF arm's labels. Success: the true task's, deterministic policy, "
             f"{a['eval_episodes']} seeded twin episodes per seed.", "",
             "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | median | labels | env steps | wall clock, "
             "median (s) | parameters in memory |",
             "| --- | " + " | ".join("---:" for _ in seeds) + " | ---: | ---: | ---: | ---: | ---: |"]
    for k in arms:
        rs = [cell[k, s] for s in seeds if (k, s) in cell]
        lines.append(f"| {ARM_NAMES[k]} | " + " | ".join(
            f"{cell[k, s]['success']:.0%}" if (k, s) in cell else "—" for s in seeds)
            + f" | **{med[k]:.0%}** | {max(r['labels'] for r in rs)} | {rs[0]['env_steps']:,} | "
            f"{np.median([r['wall_s'] for r in rs]):.0f} | {rs[0]['params_in_memory']:,} |")
    lines.append("")
    n_max, share = TARGET[task]
    if "true" in med and "rlhf" in med:
        ratio = [cell["rlhf", s]["success"] / cell["true", s]["success"]
                 for s in seeds if ("rlhf", s) in cell and ("true", s) in cell and cell["true", s]["success"] > 0]
        r_med = med["rlhf"] / med["true"] if med["true"] > 0 else float("nan")
        # the comparison means something only where the learner improves on its start with the true reward: a
        # learner that collapses below the reference on the true reward makes any ratio to it meaningless
        measurable = med["true"] > 0 and ("bc" not in med or med["true"] > med["bc"])
        met = bool(r_med >= share) and a["labels"] <= n_max and len(seeds) >= 3 and measurable
        head = (f"Issue 12's target ({task}): with at most {n_max} labels, RLHF reaches at least {share:.0%} of "
                f"the success the same learner reaches on the true reward at equal env steps, 3 seeds. ")
        if measurable:
            lines.append(head + f"Median RLHF {med['rlhf']:.0%} against {med['true']:.0%}: **{r_med:.0%}** of it "
                         "(per seed: " + ", ".join(f"{x:.0%}" for x in ratio) + f"), {len(seeds)} seed(s): "
                         f"**{'met' if met else 'missed'}**.")
        else:
            lines.append(head + f"**Not measurable here, so missed**: the learner on the true reward itself ends at "
                         f"{med['true']:.0%} (median), below the reference it started from "
                         f"({med.get('bc', float('nan')):.0%}); RLHF {med['rlhf']:.0%}.")
    if "rlhf_mistake" in med and "rlhf" in med:
        lines.append(f"The 10%-mistake labeller: median {med['rlhf_mistake']:.0%} against the oracle's "
                     f"{med['rlhf']:.0%}.")
    checked = [(k, s_) for k in ("rlhf", "rlhf_mistake") for s_ in seeds
               if (k, s_) in cell and cell[k, s_].get("run") and Path(cell[k, s_]["run"]).is_dir()]
    spec = None
    if checked:
        env = TwinEnv(task=task)  # the spec the runs were recorded with (the bench's twin), built once
        spec = env.spec_
        env.close()
    checks = [(k, s_, reward_model_check(cell[k, s_]["run"], task, spec)) for k, s_ in checked]
    checks = [c for c in checks if c[2] is not None]
    if checks:
        lines += ["", "The last reward model of each RLHF run against the true reward, on the run's own steps: the "
                  "correlation with the true per-tick reward (non-terminal steps), and per distance of the tracked "
                  "point to the goal, the share of the run's steps there and the mean learned reward (in [-1, 1], "
                  "before the offset).", "",
                  "| run | seed | correlation | " + " | ".join(f"{lo * 100:g}–{hi * 100:g} cm" if hi < 10 else
                                                           f"≥ {lo * 100:g} cm" for lo, hi in zip(BINS[:-1], BINS[1:]))
                  + " |", "| --- | ---: | ---: | " + " | ".join("---:" for _ in BINS[:-1]) + " |"]
        for k, s_, c in checks:
            lines.append(f"| {k} | {s_} | {c['corr']:.2f} | " + " | ".join(
                f"{share:.0%}: {r:+.2f}" if share > 0 else "—" for share, r in c["bins"]) + " |")
    lines.append("")
    lines.append("Wall clock is the arm's own time (learning and labelling, not its evaluation); seeds that ran "
                 "side by side on the 2 cores share them, so read it as a ratio between arms of one seed.")
    return write_section("\n".join(lines) + "\n", out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="reach", choices=["reach", "pick_place"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=10_000, help="env steps per learner arm")
    p.add_argument("--labels", type=int, default=200)
    p.add_argument("--label-rounds", type=int, default=10)
    p.add_argument("--segment", type=int, default=10, help="segment length in ticks (without hindsight, reach, seed 0: 56%% at 10, 18%% at 25)")
    p.add_argument("--rm-steps", type=int, default=300, help="reward-model steps per round")
    p.add_argument("--beta", type=float, default=0.0,
                   help="KL weight toward the (weak) reference, all learner arms (true arm, reach, seed 0, without "
                        "hindsight, 10,000 steps: 100%% at 0, 52%% at 0.01; 5,000 steps: 84%% at 0, 12%% at 0.05)")
    p.add_argument("--init-alpha", type=float, default=0.05, help="SAC's initial temperature (all learner arms)")
    p.add_argument("--rm-offset", type=float, default=LearnedReward.defaults["offset"],
                   help="the learned reward is scale * (r - offset): reward: learned's cost form (rewards/learned.py)")
    p.add_argument("--rm-scale", type=float, default=1.0)
    p.add_argument("--hindsight", type=int, default=4, metavar="K",
                   help="HER on every learner arm: up to K relabelled goals per episode (train --algo sac's 4; "
                        "0: none, reach RLHF 56, 12, 10%% on seeds 0-2, docs/bench/prefs_reach_noher.md)")
    p.add_argument("--query-recent", type=int, default=None, metavar="N",
                   help="query segments of the newest N episodes only (QPA's policy-aligned queries; default: all)")
    p.add_argument("--rm-obs-only", action="store_true", help="reward model r(s), not r(s, a)")
    p.add_argument("--utd", type=int, default=1, help="SAC critic updates per env step (all learner arms)")
    p.add_argument("--dpo-beta", type=float, default=0.1)
    p.add_argument("--dpo-steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--learning-starts", type=int, default=500)
    p.add_argument("--demo-episodes", type=int, default=5)
    p.add_argument("--demo-noise", type=float, default=0.6, help="noise of the scripted expert: the weak start")
    p.add_argument("--bc-steps", type=int, default=2000)
    p.add_argument("--bc-loss", default="nll", choices=["nll", "mse"], help="the reference's BC loss (algos/bc.py)")
    p.add_argument("--demo-ratio", type=float, default=0.0,
                   help="share of every learner arm's batch from the weak start's demos (RLPD; 0 = none)")
    p.add_argument("--bc-weight", type=float, default=0.0,
                   help="TD3+BC-style BC term on the demo rows in the actor loss (SACConfig.bc_weight; 0 = none)")
    p.add_argument("--critic-layernorm", action="store_true", help="LayerNorm in the critics (RLPD)")
    p.add_argument("--actor-warmup", type=int, default=0, help="critic-only updates before the actor moves")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--arms", nargs="+", default=["bc", "true", "rlhf", "rlhf_mistake", "dpo"])
    p.add_argument("--out", default=None, help="JSON results file")
    p.add_argument("--workdir", default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--tiny", action="store_true", help="smoke settings: seconds, meaningless numbers")
    p.add_argument("--report", nargs="+", default=None, metavar="JSON",
                   help="write the markdown section (--out, .md) from these per-seed --out results, and stop")
    p.add_argument("--command", default=None, help="--report: the command that produced the results")
    args = p.parse_args(argv)
    if args.report:
        if not args.out or not args.out.endswith(".md"):
            p.error("--report needs --out docs/bench/NAME.md")
        report(args.report, args.out, args.command or "(see the JSON files' args)")
        return 0
    if args.tiny:
        args.seeds, args.steps, args.labels, args.label_rounds, args.segment = [0], 120, 6, 2, 10
        args.rm_steps, args.dpo_steps, args.batch_size, args.learning_starts = 20, 20, 32, 40
        args.demo_episodes, args.bc_steps, args.eval_episodes = 1, 50, 2
    torch.set_num_threads(1)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_prefs_"))
    rows = []
    for seed in args.seeds:
        demos = weak_demos(args.task, args.demo_episodes, args.demo_noise, seed)
        ref = weak_start(args.task, args.demo_episodes, args.demo_noise, args.bc_steps, seed, args.bc_loss, demos)
        for arm in args.arms:
            if arm == "bc":
                t0 = time.perf_counter()
                res = evaluate_policy(policy_fn(ref), args.task, episodes=args.eval_episodes, seed=10_000 + 100 * seed)
                row = {"arm": "bc", "seed": seed, "success": float(np.mean(res.successes)), "labels": 0,
                       "env_steps": 0, "wall_s": time.perf_counter() - t0, "params_in_memory": n_params(ref)}
            elif arm == "dpo":
                src = root / f"rlhf-s{seed}"
                if not (src / "preferences.sqlite").is_file():
                    print("dpo needs the rlhf arm's labels: run it first (--arms ... rlhf dpo)", file=sys.stderr)
                    continue
                row = run_dpo(args.task, ref, args, seed, src)
            else:
                row = run_learner(arm, args.task, ref, args, seed, root, demo_transitions(demos))
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:  # after every arm, so a long run that is cut off keeps what it measured
                Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "partial": True}, indent=1))
    summary = {}
    for arm in args.arms:
        s = [r["success"] for r in rows if r["arm"] == arm]
        if s:
            summary[arm] = {"success_mean": float(np.mean(s)), "seeds": len(s)}
    if "true" in summary and "rlhf" in summary and summary["true"]["success_mean"] > 0:
        summary["rlhf_over_true"] = summary["rlhf"]["success_mean"] / summary["true"]["success_mean"]
    out = {"args": vars(args), "rows": rows, "summary": summary}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
