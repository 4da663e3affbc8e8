"""The continual learner (ROS-free): tail the durable buffer, train, gate candidates in the twin.

One :class:`ContinualLearner` owns the learning side of a run:

* **Data.** A :class:`~vla_rl_ros.buffer.Replay` tails one or more stores
  (several robots → several stores) incrementally, and holds the newest
  ``replay_capacity`` transitions of the arm's own experience in memory (FIFO,
  as SERL's and SB3's replay capacity; demonstrations and corrected episodes to
  the same figure on their own side, so they are never crowded out). The store
  keeps everything; what is dropped from memory is counted (:meth:`ContinualLearner.memory`).
* **Training.** A transition learner (:mod:`~vla_rl_ros.algos.learners`:
  ``algo="sac"``, ``"cql"`` or ``"iql"``, one protocol) over the growing buffer:
  batches with ``demo_ratio`` from the demo/intervention side (RLPD), ``utd``
  updates per step, and, for those that have it (SAC, CQL), behaviour-cloning
  initialisation of the actor from the demo side; CQL and IQL started this way
  are offline-to-online learners (they learn from everything recorded, then
  keep learning as the buffer grows).
  ``algo="rlhf"``: SAC on the learned reward with a KL anchor to the
  behaviour-cloned actor (:mod:`vla_rl_ros.preferences.rlhf`). Any transition
  learner trains on the learned reward with ``reward_source="learned"``
  (``reward_model_version`` pins one), applied when a batch is sampled; the
  gate below still promotes on the twin's true task success.
  ``algo="recap"``: Recap rounds over the growing buffer (value fit → relabel →
  advantage-conditioned actor) every ``recap_round_episodes`` new episodes; each
  round starts from fresh weights unless ``recap_warm_start``.
* **Candidates.** Every ``candidate_every_updates`` SAC updates (or each Recap
  round) the policy is exported to ONNX (spec + lineage in metadata, atomic
  write) and evaluated against the incumbent on the same fresh block of
  seeded twin episodes, in a worker process. :mod:`.gate` decides.
* **Record.** Every candidate, promoted or not, goes into the run's
  :class:`~.registry.Registry` with its evaluation.
* **Gate vs live.** After each promotion and every ``gate_vs_live_every_s``,
  the gate's predicted success of each promoted model beside its live success
  on the arm (:mod:`.gate_vs_live`): ``<run>/models/gate_vs_live.json`` and an
  event ``gate_vs_live`` (when the table changed).
* **Checkpoints.** Weights, optimisers, RNG and counters, with
  ``torch.save``/``torch.load(weights_only=True)``, atomically, every
  ``checkpoint_every_s``; a restarted learner resumes from the last one.

The ROS shell (``learner_node``) runs :meth:`ContinualLearner.run_forever` in a
thread and announces promotions to ``policy_node``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..algos.export import export_onnx, read_model_metadata, sha256_file
from ..algos.learners import TRANSITION_LEARNERS, make_learner, replay_sampler, reuse_freed_memory
from .lineage import update_lineage
from ..buffer import Replay, open_run
from .gate import make_gate
from .registry import Registry


# The continual learner's Recap settings where they differ from RecapConfig's (offline) defaults: guidance
# weight 2 (sharper towards the positive-advantage actions) and a fifth of each actor batch from the demos,
# half once the data holds a teacher's corrections. One round on the same recorded data, without and with a
# teacher: docs/bench/recap_settings.md, docs/bench/recap_settings_teacher.md (bench/bench_recap_settings.py).
CONTINUAL_RECAP: dict[str, Any] = {"h_norm": 200, "cfg_weight": 2.0, "demo_ratio": 0.2, "correction_ratio": 0.5}


REWARD_SOURCES = ("task", "learned")


@dataclass
class LearnerConfig:
    """Continual-learning settings (the learner_node parameters)."""

    algo: str = "recap"  # sac | cql | iql (transition learners, algos/learners.py) | rlhf | recap
    batch_size: int = 256
    utd: int = 2
    demo_ratio: float = 0.5
    min_transitions: int = 500  # online + demo transitions before the first update
    # Transitions of the arm's own experience held in memory for learning, the newest (FIFO); Recap's episodes
    # likewise (whole episodes, the oldest dropped first). Demonstration and intervention data has its own side of
    # the same size, and hindsight relabellings a ring hindsight_k times the size (Replay). 200,000 is HIL-SERL's
    # replay capacity; its memory: bench/replay_memory.py.
    replay_capacity: int = 200_000
    refresh_every_s: float = 1.0
    candidate_every_updates: int = 3000  # SAC
    recap_round_episodes: int = 10  # Recap: new completed episodes per round
    recap_min_episodes: int = 30
    recap_warm_start: bool = False  # False: each round trains value + actor afresh on all data (as π*0.6 does
    # from its base model each iteration); True: continue from the previous round's weights
    gate_episodes: int = 100  # the most paired episodes one gate may use (``max_pairs`` of the rule)
    gate_alpha: float = 0.05  # 0.01 over up to 200 pairs in blocks of 20 promotes fewer regressions (bench_gate.py)
    # but stalls the loop with the teacher off: 2 of 3 live runs met the target, against 4 of 4 (continual_summary.md)
    # noninferiority: the arm's policy moves whenever a candidate is not worse by gate_margin (and wins >= losses);
    # sequential (SPRT) only on a demonstrated gain | superiority (fixed N sign test). See learner/gate.py.
    gate_rule: str = "noninferiority"
    gate_margin: float = 0.05  # non-inferiority margin: promote only if not worse by this much (and wins >= losses)
    gate_block: int = 10  # paired episodes per look of a sequential rule
    gate_seed_base: int = 1_000_000
    checkpoint_every_s: float = 60.0
    gate_vs_live_every_s: float = 60.0  # the gate-vs-live table (learner/gate_vs_live.py) this often and at each
    # promotion; 0 = never
    bc_init_steps: int = 2000
    # Hindsight goal relabelling (algos/hindsight.py): each recorded episode of the arm's own that moved the
    # object at least `hindsight_min_displacement` also counts as up to `hindsight_k` successful episodes for the
    # goals it did reach (0 = off). Goals are kept only inside goal_low..goal_high (the task's goal region; None =
    # anywhere).
    hindsight_k: int = 4
    hindsight_min_displacement: float = 0.10
    goal_low: tuple[float, float, float] | None = None
    goal_high: tuple[float, float, float] | None = None
    # Settings over each algorithm's config defaults (SACConfig, CQLConfig, IQLConfig, RecapConfig). A transition
    # learner also takes batch_size, utd, demo_ratio, bc_init_steps and seed above where its config has them.
    sac_overrides: dict[str, Any] = field(default_factory=dict)
    cql_overrides: dict[str, Any] = field(default_factory=dict)
    iql_overrides: dict[str, Any] = field(default_factory=dict)
    recap_overrides: dict[str, Any] = field(default_factory=dict)  # on top of CONTINUAL_RECAP
    # The reward the transition learners train on: "task" (the recorded reward) | "learned" (a reward model
    # learnt from preference labels, <run>/models/reward/: rewards/learned.py), applied when a batch is sampled
    # (preferences/rlhf.py: learned_reward_sampler), so a newer model relabels all held data at once. Promotion
    # is unchanged: the twin gate's true task success.
    reward_source: str = "task"
    reward_model_version: str = ""  # "" = the newest reward model (moved to as new ones appear), else pinned
    # algo "rlhf" (RLHF's third stage): SAC (sac_overrides apply) on the learned reward, whatever reward_source
    # says, with rlhf_beta * KL(pi || pi_ref) in the actor loss; pi_ref is the actor after behaviour cloning on
    # the demos (bc_init_steps; the initial actor if there are none), the SFT model of RLHF.
    rlhf_beta: float = 0.1
    seed: int = 0


@dataclass
class Event:
    """What the learner tells the world (the node publishes these as JSON)."""

    kind: str  # candidate | promoted | gate_vs_live | info | error
    version: str = ""
    path: str = ""
    sha256: str = ""
    promoted: bool = False
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=str)


class ContinualLearner:
    def __init__(self, run_dir: str, cfg: LearnerConfig, extra_stores: list[str] | None = None,
                 initial_model: str | None = None, evaluate: Callable | None = None,
                 log: Callable[[str], None] = print, tb: bool = True):
        torch.set_num_threads(1)
        reuse_freed_memory()  # this process trains for hours: keep the activations' memory (algos/learners.py)
        self.cfg = cfg
        self.run = open_run(run_dir)
        self.spec = self.run.spec
        self.task = self.spec.task
        self.log = log
        self.registry = Registry(self.run.models_dir)
        # Hindsight relabellings have a ring of their own, hindsight_k times the capacity: the relabellings of
        # every held episode fit, and being derived (several per real transition) they never evict real ones.
        self.replay = Replay([self.run.buffer_path, *(extra_stores or [])], capacity=cfg.replay_capacity,
                             derived_capacity=cfg.replay_capacity * max(1, cfg.hindsight_k))
        if self.replay.archived:  # archived segments are not learned from: say so
            self.log(f"replay: {self.replay.summary()}")
        self.ckpt_path = self.run.checkpoints_dir / f"learner_{cfg.algo}.pt"
        self.run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        if evaluate is None:
            from .evaluate import PersistentEvaluator

            evaluate = PersistentEvaluator()  # one worker process for every gate, its twin kept
        self._evaluate = evaluate
        self.gate = make_gate(cfg.gate_rule, alpha=cfg.gate_alpha, max_pairs=cfg.gate_episodes,
                              block=min(cfg.gate_block, cfg.gate_episodes), margin=cfg.gate_margin)
        self.updates = 0
        self.gates = 0
        self.rounds = 0
        self.episodes_at_last_round = 0
        self._relabelled: dict[tuple[str, int], list] = {}  # (store, episode id) -> its relabellings, held episodes'
        self._episodes_evicted = 0  # the replay's count when the cache was last pruned
        self._reward_fns: dict[str, Any] = {}
        self.hindsight_transitions = 0
        self.last_ckpt = time.monotonic()
        self.last_gate_vs_live = float("-inf")  # the first step reports (a resumed run's table at once)
        self._gate_vs_live_rows: list | None = None
        self.last_refresh = 0.0
        self.algo: Any = None
        # learns from batches of transitions (else Recap rounds)
        self.transitions = cfg.algo in TRANSITION_LEARNERS or cfg.algo == "rlhf"
        if cfg.reward_source not in REWARD_SOURCES:
            raise ValueError(f"reward_source must be one of {REWARD_SOURCES}, got {cfg.reward_source!r}")
        self.reward_source = "learned" if cfg.algo == "rlhf" else cfg.reward_source
        if self.reward_source == "learned" and not self.transitions:
            raise ValueError(f"reward_source 'learned' needs a transition learner or rlhf, not {cfg.algo!r}")
        self.learned_reward: Any = None  # rewards.learned.LearnedReward, once a reward model exists
        self._waiting_for_reward_logged = False
        self._reward_checked = 0.0  # monotonic time the reward model registry was last read
        self.writer = None
        if tb:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run.tb_dir / f"learner_{cfg.algo}"))
        self._ensure_incumbent(initial_model)
        self._resume()

    # ------------------------------------------------------------ incumbent
    def _ensure_incumbent(self, initial_model: str | None) -> None:
        if self.registry.incumbent() is not None:
            return
        if not initial_model or not os.path.isfile(initial_model):
            self.log(f"no incumbent yet and no initial model ({initial_model!r}); the first candidate will face none")
            return
        spec, lineage, version = read_model_metadata(initial_model)
        dst = self.run.models_dir / f"{version}.onnx"
        if not dst.exists():
            shutil.copyfile(initial_model, dst)
        rec = {"version": version, "path": str(dst), "sha256": sha256_file(dst), "algorithm": lineage.get("algorithm"),
               "parent_version": lineage.get("parent_version"), "promoted": True, "reason": "initial model",
               "created": time.time()}
        self.registry.append(rec)
        self.registry.set_incumbent(rec)

    @property
    def incumbent(self) -> dict | None:
        return self.registry.incumbent()

    # ------------------------------------------------------------ algorithms
    def _build_algo(self) -> None:
        if self.algo is not None:
            return
        if self.cfg.algo == "rlhf":
            import dataclasses as dc

            from ..algos.sac import SACConfig
            from ..preferences.rlhf import RLHFSAC

            fields = {f.name for f in dc.fields(SACConfig)}
            kw = {k: v for k, v in dict(batch_size=self.cfg.batch_size, utd=self.cfg.utd,
                                        demo_ratio=self.cfg.demo_ratio, bc_init_steps=self.cfg.bc_init_steps,
                                        init_alpha=0.05, seed=self.cfg.seed).items() if k in fields}
            kw.update(self.cfg.sac_overrides)
            unknown = sorted(set(kw) - fields)
            if unknown:
                raise ValueError(f"rlhf (SAC) has no settings {unknown}; valid: {sorted(fields)}")
            # the reference is set to the behaviour-cloned actor in _init_transition_learner
            self.algo = RLHFSAC(self.spec.obs_dim, self.spec.action_dim, None, self.cfg.rlhf_beta, SACConfig(**kw))
        elif self.transitions:
            import dataclasses as dc
            import importlib

            mod, _, cfg_cls = TRANSITION_LEARNERS[self.cfg.algo]
            fields = {f.name for f in dc.fields(getattr(importlib.import_module(mod), cfg_cls))}
            # init_alpha 0.05: SAC's temperature after BC initialisation (SACConfig.init_alpha)
            kw = {k: v for k, v in dict(batch_size=self.cfg.batch_size, utd=self.cfg.utd,
                                        demo_ratio=self.cfg.demo_ratio, bc_init_steps=self.cfg.bc_init_steps,
                                        init_alpha=0.05, seed=self.cfg.seed).items() if k in fields}
            kw.update(getattr(self.cfg, f"{self.cfg.algo}_overrides"))
            self.algo = make_learner(self.cfg.algo, self.spec.obs_dim, self.spec.action_dim, **kw)
        elif self.cfg.algo == "recap":
            from ..algos.recap import RecapConfig, RecapTrainer

            kw = dict(CONTINUAL_RECAP, seed=self.cfg.seed)
            kw.update(self.cfg.recap_overrides)
            self.algo = RecapTrainer(self.spec.obs_dim, self.spec.action_dim, RecapConfig(**kw))
        else:
            raise ValueError(f"unknown algo {self.cfg.algo!r} ({' | '.join(TRANSITION_LEARNERS)} | rlhf | recap)")

    def _resume(self) -> None:
        if not self.ckpt_path.exists():
            return
        from ..algos.checkpoint import load_checkpoint

        state = load_checkpoint(self.ckpt_path)
        self._build_algo()
        self.algo.load_state_dict(state["algo"])
        c = state["counters"]
        self.updates, self.gates, self.rounds = int(c["updates"]), int(c["gates"]), int(c["rounds"])
        self.episodes_at_last_round = int(c["episodes_at_last_round"])
        self._initialised = True
        self.log(f"resumed from {self.ckpt_path}: {self.updates} updates, {self.gates} gates, {self.rounds} rounds")

    def checkpoint(self) -> None:
        if self.algo is None:
            return
        from ..algos.checkpoint import save_checkpoint

        save_checkpoint(self.ckpt_path, {
            "algo": self.algo.state_dict(),
            "counters": {"updates": self.updates, "gates": self.gates, "rounds": self.rounds,
                         "episodes_at_last_round": self.episodes_at_last_round},
        })
        self.last_ckpt = time.monotonic()

    # ------------------------------------------------------------ main loop
    def step(self) -> list[Event]:
        """One unit of work: refresh data, some training, maybe a candidate. Returns events."""
        now = time.monotonic()
        events: list[Event] = []
        if now - self.last_refresh >= self.cfg.refresh_every_s:
            self.replay.refresh()
            if self.transitions:
                self._hindsight_transitions()
            self.last_refresh = now
        if self.transitions:
            events += self._transition_step()
        else:
            events += self._recap_step()
        if time.monotonic() - self.last_ckpt >= self.cfg.checkpoint_every_s:
            self.checkpoint()
        every = self.cfg.gate_vs_live_every_s
        promoted = [ev for ev in events if ev.promoted]
        if every > 0 and (promoted or time.monotonic() - self.last_gate_vs_live >= every):
            events += self.gate_vs_live(replaced=promoted[-1].data.get("replaced") if promoted else None)
        return events

    def gate_vs_live(self, replaced: str | None = None) -> list[Event]:
        """The gate-vs-live table (:mod:`.gate_vs_live`) written to ``models/gate_vs_live.json``; an event when
        it changed or a model was just ``replaced`` (whose row is then final: it runs no more)."""
        from .gate_vs_live import gate_vs_live, row_line, write_gate_vs_live

        self.last_gate_vs_live = time.monotonic()
        try:
            rows = gate_vs_live(self.run.models_dir, [self.run.path])
            if rows == self._gate_vs_live_rows and replaced is None:
                return []
            write_gate_vs_live(self.run.models_dir, rows)
        except Exception as e:  # a report must never stop learning
            self.log(f"gate vs live: {type(e).__name__}: {e}")
            return []
        self._gate_vs_live_rows = rows
        row = next((r for r in rows if r["version"] == replaced), None)
        if row is not None:
            self.log(f"gate vs live, {replaced} replaced: {row_line(row)}")
        return [Event("gate_vs_live", replaced or "", reason="promotion" if replaced else "periodic",
                      data={"rows": rows, "replaced": replaced})]

    def _learned_reward(self) -> Any:
        """The learned reward (built once a reward model exists, then moved to the newest unless pinned), or None."""
        from ..rewards import make_reward

        if self.learned_reward is None:
            params = {"models_dir": str(self.run.models_dir), "version": self.cfg.reward_model_version or None,
                      "task": self.task}
            try:
                self.learned_reward = make_reward({"name": "learned", "params": params}, self.spec)
            except FileNotFoundError as e:
                if not self._waiting_for_reward_logged:
                    self.log(f"reward_source learned: waiting for a reward model ({e})")
                    self._waiting_for_reward_logged = True
                return None
            self.log(f"training on the learned reward, model {self.learned_reward.version}")
            self._reward_checked = time.monotonic()
        elif time.monotonic() - self._reward_checked >= self.cfg.refresh_every_s:  # a newer model? (its registry)
            self._reward_checked = time.monotonic()
            if self.learned_reward.refresh():
                self.log(f"learned reward now model {self.learned_reward.version}")
        return self.learned_reward

    def _transition_step(self) -> list[Event]:
        if len(self.replay) < self.cfg.min_transitions:
            time.sleep(0.2)
            return []
        reward = None
        if self.reward_source == "learned":
            reward = self._learned_reward()
            if reward is None:
                time.sleep(0.2)
                return []
        self._build_algo()
        if not getattr(self, "_initialised", False):
            self._init_transition_learner()
        cfg = self.cfg
        sample = replay_sampler(self.replay, self.algo.cfg)
        if reward is not None:
            from ..preferences.rlhf import learned_reward_sampler

            sample = learned_reward_sampler(sample, reward)
        m = None
        for _ in range(10):
            m = self.algo.train_step(sample)
            self.updates += 1
        if self.writer is not None and self.updates % 200 < 10:
            from ..algos.sac import metrics_to_floats

            for k, v in metrics_to_floats(m).items():
                self.writer.add_scalar(f"{cfg.algo}/{k}", v, self.updates)
            self.writer.add_scalar("data/transitions", len(self.replay), self.updates)
            self.writer.add_scalar("data/hindsight_transitions", self.hindsight_transitions, self.updates)
        if self.updates // cfg.candidate_every_updates > self.gates:
            extra = None
            if reward is not None:  # which reward it learnt from; the gate below still measures the true success
                extra = {"reward": {"source": "learned", "reward_model": reward.version,
                                    **({"rlhf_beta": self.algo.beta} if cfg.algo == "rlhf" else {})}}
            return [*self._candidate(self.algo.policy_module(), cfg.algo, extra)]
        return []

    def _hindsight_transitions(self) -> None:
        """Transition learners (SAC, CQL, IQL): the relabelled successes of every newly finished episode go to
        the online side of the replay (HER), their rewards recomputed by the run's own reward function."""
        if self.cfg.hindsight_k <= 0:
            return
        from ..algos.hindsight import relabelled_transitions
        from ..rewards import make_reward

        for e in self._held_episodes():
            if e.is_demo or (e.store, e.id) in self._relabelled:  # relabelled once, when new
                continue
            rel = self._hindsight(e, raw=True)
            if rel:
                key = json.dumps(e.reward_config, sort_keys=True)
                if key not in self._reward_fns:
                    try:
                        self._reward_fns[key] = make_reward(e.reward_config, self.spec)
                    except ValueError as err:  # a reward this version cannot rebuild: no relabelling for it
                        self._reward_fns[key] = None
                        self.log(f"hindsight off for episodes with reward {key}: {err}")
                fn = self._reward_fns[key]
                if fn is not None:
                    self.hindsight_transitions += self.replay.add_transitions(relabelled_transitions(rel, fn))

    def _held_episodes(self) -> list:
        """The replay's episodes (newly completed ones loaded), the relabelling cache pruned to those held."""
        eps = self.replay.episodes()
        if self.replay.episodes_evicted != self._episodes_evicted:
            held = {(e.store, e.id) for e in eps}
            self._relabelled = {k: v for k, v in self._relabelled.items() if k in held}
            self._episodes_evicted = self.replay.episodes_evicted
        return eps

    def memory(self) -> dict[str, int]:
        """What the learner holds in memory and what the capacities have dropped (the store keeps it all)."""
        r = self.replay
        return {"replay_capacity": self.cfg.replay_capacity, "transitions": len(r), "demo_transitions": r.n_demo,
                "online_transitions": r.n_online,
                "episodes_held": r.n_episodes, "episodes_evicted": r.episodes_evicted,
                "transitions_evicted": r.evicted["online_transitions"] + r.evicted["demo_transitions"],
                "relabelled_episodes_held": len(self._relabelled)}

    def _init_transition_learner(self) -> None:
        obs = self.replay.all_obs() if hasattr(self.replay, "all_obs") else None
        if obs is None:
            b = self.replay.sample(min(len(self.replay), 20_000), demo_ratio=self.cfg.demo_ratio)
            obs = b["obs"]
        self.algo.fit_obs_normalizer(obs)
        if self.cfg.bc_init_steps > 0 and self.replay.n_demo > 0 and hasattr(self.algo, "bc_pretrain"):
            def demo_pairs():
                b = self.replay.sample(self.cfg.batch_size, demo_ratio=1.0)
                return b["obs"], b["action"]

            self.algo.bc_pretrain(demo_pairs, self.cfg.bc_init_steps)
            self.log(f"{self.cfg.algo.upper()} actor initialised by behaviour cloning on {self.replay.n_demo} "
                     "demo transitions")
        if hasattr(self.algo, "set_reference"):  # RLHF: anchored to the behaviour-cloned (SFT) actor
            self.algo.set_reference(self.algo.actor)
        self._initialised = True

    def _recap_step(self) -> list[Event]:
        eps = self._held_episodes()
        n_new = self.replay.episodes_loaded - self.episodes_at_last_round  # held or already evicted
        if len(eps) < self.cfg.recap_min_episodes or n_new < self.cfg.recap_round_episodes:
            time.sleep(0.5)
            return []
        if not self.cfg.recap_warm_start:
            self.algo = None  # a fresh value function and actor, trained on everything recorded so far
        self._build_algo()
        t0 = time.time()
        # Demonstrations (and human interventions) are always on the positive side of the indicator.
        data = [{"obs": e.obs, "actions": e.actions, "success": e.success,
                 "intervention": e.intervention | bool(e.is_demo), "demo": bool(e.is_demo)} for e in eps]
        relabelled = [r for e in eps if not e.is_demo for r in self._hindsight(e)]
        metrics = self.algo.round(data + relabelled)
        metrics["hindsight_episodes"] = len(relabelled)
        self.rounds += 1
        self.episodes_at_last_round = self.replay.episodes_loaded
        if self.writer is not None:
            for k, v in (metrics or {}).items():
                try:
                    self.writer.add_scalar(f"recap/{k}", float(v), self.rounds)
                except (TypeError, ValueError):
                    pass
        evicted = (f"; {self.replay.episodes_evicted} older ones out of memory (replay_capacity "
                   f"{self.cfg.replay_capacity})" if self.replay.episodes_evicted else "")
        self.log(f"Recap round {self.rounds} on {len(eps)} episodes ({sum(e.success for e in eps)} successful"
                 f", {len(relabelled)} more relabelled in hindsight{evicted}) in {time.time() - t0:.0f}s")
        return self._candidate(self.algo.export_module(), "recap", extra={"episodes": len(eps)})

    def _hindsight(self, e: Any, raw: bool = False) -> list:
        """The relabelled successes of one recorded episode, as Recap's episode dicts (or, ``raw``, the
        :class:`~vla_rl_ros.algos.hindsight.RelabelledEpisode` list). Cached: an episode is relabelled once,
        seeded by its id, so every round sees the same ones."""
        if self.cfg.hindsight_k <= 0 or len(e) == 0:
            return []
        key = (e.store, e.id)
        if key not in self._relabelled:
            from ..algos.hindsight import hindsight_episodes

            det = e.info.get("success") or {}
            rel = hindsight_episodes(
                self.spec, np.concatenate([e.obs, e.next_obs[-1:]]), e.actions, task=self.task,
                k=self.cfg.hindsight_k, tolerance=float(det.get("tolerance", 0.05)),
                n_consecutive=int(det.get("n_consecutive", 3)),
                min_displacement=self.cfg.hindsight_min_displacement, goal_low=self.cfg.goal_low,
                goal_high=self.cfg.goal_high, rng=np.random.default_rng([self.cfg.seed, e.id]))
            self._relabelled[key] = rel
        if raw:
            return self._relabelled[key]
        return [{"obs": r.obs[:-1], "actions": r.actions, "success": True,
                 "intervention": np.zeros(len(r.actions), dtype=bool)} for r in self._relabelled[key]]

    # ------------------------------------------------------------ the gate
    def _candidate(self, module: torch.nn.Module, algo: str, extra: dict | None = None) -> list[Event]:
        self.gates += 1
        inc = self.incumbent
        lineage = {
            "algorithm": algo,
            "parent_version": inc["version"] if inc else None,
            "data_range": self._data_range(),
            "training_steps": self.updates if self.transitions else self.rounds,
            **(extra or {}),
        }
        tmp_path = self.run.models_dir / f".candidate-{self.gates}.onnx"
        version = export_onnx(module, self.spec, str(tmp_path), lineage).version
        path = self.run.models_dir / f"{version}.onnx"
        os.replace(tmp_path, path)
        seed = self.cfg.gate_seed_base + self.gates * self.cfg.gate_episodes
        n = self.cfg.gate_episodes
        results: dict[str, list] = {"cand": [], "inc": []}

        def evaluate_block(k: int, s: int) -> tuple[list[bool], list[bool]]:
            c = self._evaluate(str(path), self.task, k, s)
            i = self._evaluate(inc["path"], self.task, k, s)
            results["cand"].append(c)
            results["inc"].append(i)
            return list(c.successes), list(i.successes)

        try:
            if inc is None:
                cand = self._evaluate(str(path), self.task, n, seed)
                incr = None
            else:
                d = self.gate.run(evaluate_block, seed)
                cand, incr = _merge(results["cand"]), _merge(results["inc"])
        except Exception as e:  # a failed evaluation never promotes
            rec = {"version": version, "path": str(path), "sha256": sha256_file(path), "promoted": False,
                   "reason": f"evaluation failed: {e}", **lineage}
            self.registry.append(rec)
            return [Event("candidate", version, str(path), rec["sha256"], False, rec["reason"])]
        if incr is None:
            promote, reason = cand.success_rate > 0, f"no incumbent; candidate {100 * cand.success_rate:.0f}%"
            summary = {}
        else:
            promote, reason = d.promote, d.reason
            summary = {"wins": d.wins, "losses": d.losses, "p_value": d.p_value, "pairs": d.pairs_used,
                       "rule": d.rule}
        n = len(cand.successes)
        gate_success = {"rate": cand.success_rate, "episodes": n, "seed": seed,
                        "incumbent_rate": incr.success_rate if incr else None}
        lineage["twin_success_at_gate"] = gate_success
        # record the measured gate figure in the candidate's own lineage (atomic rewrite), then hash it
        update_lineage(path, {"twin_success_at_gate": gate_success})
        sha = sha256_file(path)
        rec = {"version": version, "path": str(path), "sha256": sha, "promoted": bool(promote), "reason": reason,
               "created": time.time(), "eval": {"candidate": cand.summary(), "incumbent": incr.summary() if incr else None,
                                                **summary}, **lineage}
        self.registry.append(rec)
        if self.writer is not None:
            self.writer.add_scalar("gate/candidate_success", cand.success_rate, self.gates)
            if incr is not None:
                self.writer.add_scalar("gate/incumbent_success", incr.success_rate, self.gates)
            self.writer.add_scalar("gate/promoted", float(promote), self.gates)
        ev = Event("promoted" if promote else "candidate", version, str(path), sha, bool(promote), reason,
                   data={"candidate_rate": cand.success_rate, "incumbent_rate": incr.success_rate if incr else None,
                         "replaced": inc["version"] if inc and promote else None})
        if promote:
            self.registry.set_incumbent(rec)
        self.log(("PROMOTED " if promote else "rejected ") + f"{version}: {reason}")
        return [ev]

    def _data_range(self) -> dict:
        return {"stores": [str(s) for s in self.replay.stores], "transitions": len(self.replay),
                "demo_transitions": self.replay.n_demo, "online_transitions": self.replay.n_online}

    def run_forever(self, stop: Callable[[], bool], on_event: Callable[[Event], None]) -> None:
        while not stop():
            try:
                for ev in self.step():
                    on_event(ev)
            except Exception as e:  # keep learning; report
                on_event(Event("error", reason=f"{type(e).__name__}: {e}"))
                time.sleep(1.0)
        self.checkpoint()

    def close(self) -> None:
        try:
            self.checkpoint()
        finally:
            if hasattr(self._evaluate, "close"):
                self._evaluate.close()
            if self.writer is not None:
                self.writer.close()
            self.replay.close()


def _merge(parts: list) -> Any:
    """One :class:`~.evaluate.EvalResult` from consecutive blocks of the same policy's seeded episodes."""
    first = parts[0]
    out = type(first)(task=first.task, episodes=sum(p.episodes for p in parts), seed=first.seed)
    for p in parts:
        out.successes += list(p.successes)
        out.returns += list(p.returns)
        out.lengths += list(p.lengths)
    return out
