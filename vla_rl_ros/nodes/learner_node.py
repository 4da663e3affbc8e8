"""learner_node: continual SAC / Recap from the durable buffer, gated by the twin.

Its own process (never the control loop's). A worker thread runs
:class:`vla_rl_ros.learner.ContinualLearner`; this shell only turns its events
into messages:

* ``/rl/policy_update`` (std_msgs/String, JSON ``{"path", "sha256", "version"}``):
  a promoted model, for ``policy_node`` to verify and hot-swap. Reliable,
  transient-local (a policy node that starts later still gets the incumbent). With ``signing_key`` set, it
  also carries an Ed25519 ``signature`` over the digest, version and spec (:mod:`vla_rl_ros.signing`), which a
  ``policy_node`` with ``trusted_keys`` requires.
* ``/rl/learner/events`` (std_msgs/String, JSON): every candidate with its gate result, and (kind
  ``monitor``) each monitor result: the success of the initial incumbent and of every promoted model on the
  same fixed block of ``monitor_episodes`` seeded twin episodes (:mod:`vla_rl_ros.learner.monitor`; in a
  niced worker process, one at a time, never in the way of learning or the gate), also appended to
  ``<run>/models/monitor.jsonl``; the record is the event's ``data``. Kind ``gate_vs_live``: after each
  promotion and once a minute, each promoted model's gate prediction beside its live success on the arm
  (:mod:`vla_rl_ros.learner.gate_vs_live`; ``data.rows``, also ``<run>/models/gate_vs_live.json``).
* ``/diagnostics``: updates (SAC), gradient_updates (SAC updates, or Recap's value + actor steps of the
  completed rounds) and updates_per_s (over the last minute), candidates, promotions, incumbent, replay size,
  what the learner holds in memory and what ``replay_capacity`` (also reported) has dropped from it (``episodes_held``,
  ``episodes_evicted``, ``transitions_evicted``, ``relabelled_episodes_held``; the store keeps everything),
  monitor (pending, last result).

Subscribes ``/rl/policy_update_result`` to log when the arm took the model.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from ._common import declare, declare_arm, publish_status, run_node
from ..buffer import open_run
from ..learner.continual import CONTINUAL_RECAP, ContinualLearner, Event, LearnerConfig
from ..learner.evaluate import PersistentEvaluator, TwinConfig
from ..learner.monitor import MONITOR_SEED, PromotionMonitor
from ..runtime.paths import resolve_path
from ..signing import Signer, SigningError
from ..twin.core import Scene


class LearnerNode(Node):
    def __init__(self) -> None:
        super().__init__("learner_node")
        self.executor_kind = "single_threaded"
        d = self._declare
        run_dir = d("run_dir", "runs/sim", "Run folder whose store this learner tails (and where models/tb/checkpoints go)")
        extra = d("extra_stores", [""], "More stores or run folders to learn from (several robots)")
        initial = d("initial_model", "", "ONNX model the arm starts with (the first incumbent)")
        signing_key = d("signing_key", "", "Ed25519 private key (PEM) that signs every announced model ('' = "
                        "unsigned; a policy_node with trusted_keys refuses unsigned models)")
        arm = declare_arm(self, scene=True)
        # hindsight relabels only to goals the task draws (the twin scene's region)
        goal_low, goal_high = Scene.load(arm.scene).region.goals(arm.spec.task)
        LC = LearnerConfig()  # the defaults
        gamma = declare(self, "gamma", 0.99, "Discount of the transition learners (sac, cql, iql, rlhf)", lo=0.5,
                        hi=0.9999)
        cfg = LearnerConfig(
            algo=d("algo", "recap", "sac (online, RLPD sampling) | cql | iql (offline-to-online over the growing "
                   "buffer, same sampling) | rlhf (SAC on the learned reward, KL-anchored to the behaviour-cloned "
                   "actor with weight rlhf_beta) | recap (advantage-conditioned rounds)"),
            reward_source=d("reward_source", LC.reward_source, "Reward a transition learner trains on: task (the "
                            "recorded one) | learned (the reward model learnt from preference labels in "
                            "<run_dir>/models/reward/, applied when batches are sampled; rlhf always uses it). "
                            "Promotion stays on the twin's true task success"),
            reward_model_version=d("reward_model_version", LC.reward_model_version, "Learned reward: a pinned "
                                   "reward model version ('' = the newest, followed as new ones are saved)"),
            rlhf_beta=declare(self, "rlhf_beta", LC.rlhf_beta, "rlhf: weight of KL(pi || pi_ref) in the actor loss "
                              "(0 = plain SAC on the learned reward)", lo=0.0, hi=1000.0),
            batch_size=d("batch_size", 256, "Gradient batch size"),
            utd=d("utd", 2, "SAC critic updates per actor update (update-to-data ratio)"),
            demo_ratio=d("demo_ratio", 0.5, "Fraction of each batch from demos + interventions (RLPD)"),
            min_transitions=d("min_transitions", 500, "Transitions needed before the first SAC update"),
            replay_capacity=declare(self, "replay_capacity", LC.replay_capacity, "Transitions of the arm's own "
                                    "experience held in memory for learning, the newest (FIFO; Recap: whole "
                                    "episodes, the oldest dropped first). Demonstrations and corrected episodes "
                                    "have their own side of this size. The store keeps everything",
                                    lo=1_000, hi=100_000_000),
            candidate_every_updates=d("candidate_every_updates", 3000, "SAC: export + gate a candidate every K updates"),
            recap_round_episodes=d("recap_round_episodes", LC.recap_round_episodes, "Recap: new episodes per round"),
            recap_min_episodes=d("recap_min_episodes", 30, "Recap: episodes needed before the first round"),
            recap_warm_start=d("recap_warm_start", False, "Recap: continue from the last round's weights "
                                                          "(false: train each round afresh on all data)"),
            gate_episodes=d("gate_episodes", LC.gate_episodes, "Most paired seeded twin episodes one gate may use"),
            gate_alpha=d("gate_alpha", LC.gate_alpha, "Error rate of the gate's rule (see learner/gate.py)"),
            gate_rule=d("gate_rule", LC.gate_rule, "sequential (SPRT on the discordant pairs, stops early) | "
                        "noninferiority (not worse by gate_margin, wins >= losses) | superiority (fixed-N sign test)"),
            gate_margin=d("gate_margin", LC.gate_margin, "Non-inferiority margin (success-rate points / 100)"),
            gate_block=d("gate_block", LC.gate_block, "Paired episodes per look of a sequential rule"),
            checkpoint_every_s=d("checkpoint_every_s", 60.0, "Checkpoint period (s)"),
            bc_init_steps=d("bc_init_steps", 2000, "SAC: behaviour-cloning steps on demos before RL"),
            seed=d("seed", 0, "Seed of the learner"),
            hindsight_k=d("hindsight_k", 4, "Hindsight goal relabelling: each episode of the arm's own that moved "
                          "the object also counts as up to this many successes for goals it reached (0 = off)"),
            hindsight_min_displacement=d("hindsight_min_displacement", 0.10, "Hindsight: least xy distance (m) "
                                         "from the start of a goal it may use (the task's least object-goal distance)"),
            goal_low=goal_low, goal_high=goal_high,
            sac_overrides={
                "n_critics": d("n_critics", 2, "SAC critic ensemble size (clipped double-Q over the ensemble)"),
                "critic_layernorm": d("critic_layernorm", False, "SAC: LayerNorm in the critics (RLPD)"),
                "gamma": gamma,
                "bc_weight": d("sac_bc_weight", 0.0, "SAC: weight of the BC term on demo/intervention rows of the "
                               "actor loss (TD3+BC-style; 0 = pure SAC)"),
                "actor_warmup_updates": d("sac_actor_warmup_updates", 0, "SAC: critic-only updates after BC "
                                          "initialisation before the actor moves"),
            },
            cql_overrides={
                "gamma": gamma,
                "cql_alpha": declare(self, "cql_alpha", 5.0, "cql: weight of the conservative gap (the paper's 5.0)",
                                     lo=0.0, hi=1e4),
                "cql_n_actions": declare(self, "cql_n_actions", 10, "cql: sampled actions per state and proposal "
                                         "in the log-sum-exp", lo=1, hi=1000),
                "cql_lagrange": d("cql_lagrange", False, "cql: learn the gap's multiplier by dual ascent against "
                                  "cql_target_gap"),
                "cql_target_gap": declare(self, "cql_target_gap", 10.0, "cql (lagrange): threshold on "
                                          "cql_alpha x gap", lo=0.0, hi=1e6),
            },
            iql_overrides={
                "gamma": gamma,
                "expectile": declare(self, "iql_expectile", 0.7, "iql: expectile of the value's loss (0.5 = the "
                                     "mean; higher leans to the best actions in the data)", lo=0.5, hi=0.999),
                "beta": declare(self, "iql_beta", 3.0, "iql: inverse temperature of the advantage weights",
                                lo=0.0, hi=1000.0),
                "max_weight": declare(self, "iql_max_weight", 100.0, "iql: clip on exp(beta x advantage)",
                                      lo=1.0, hi=1e6),
            },
            recap_overrides={
                "value_steps": d("recap_value_steps", 2000, "Recap: value-function gradient steps per round"),
                "actor_steps": d("recap_actor_steps", 2000, "Recap: actor gradient steps per round"),
                "h_norm": d("recap_h_norm", CONTINUAL_RECAP["h_norm"], "Recap: steps that map to a value of -1 (≥ the longest episode)"),
                "positive_fraction": d("recap_positive_fraction", 0.3, "Recap: top fraction of advantages labelled positive"),
                "indicator_dropout": d("recap_indicator_dropout", 0.3, "Recap: indicator dropout (for CFG)"),
                "cfg_weight": d("recap_cfg_weight", CONTINUAL_RECAP["cfg_weight"], "Recap: classifier-free guidance weight at inference"),
                "corrections": d("recap_corrections", "outcome", "Recap: 'outcome' (a correction is positive "
                                 "without question only if its episode succeeded) | 'always'"),
                "demo_ratio": d("recap_demo_ratio", CONTINUAL_RECAP["demo_ratio"], "Recap: share of each actor batch drawn from intervention "
                                "and demo steps (0 = uniform over all steps)"),
                "correction_ratio": d("recap_correction_ratio", CONTINUAL_RECAP["correction_ratio"], "Recap: that share "
                                      "once the data holds corrections (intervention steps outside the demos)"),
            },
        )
        monitor_episodes = declare(self, "monitor_episodes", 50, "Monitor: seeded twin episodes each promoted model "
                                   "(and the initial incumbent) is measured on, the same block for every model, in "
                                   "a low-priority worker process (0 = off)", lo=0, hi=100_000)
        monitor_seed = declare(self, "monitor_seed", MONITOR_SEED, "Monitor: episode i uses seed monitor_seed + i "
                               "(disjoint from the gate's 1000000.. and the sim twin's 100000..)", lo=0, hi=2**31 - 1)
        self.pub_update = self.create_publisher(
            String, "/rl/policy_update",
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.pub_events = self.create_publisher(String, "/rl/learner/events", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(String, "/rl/policy_update_result", self._on_result, 10)
        # The gate and the monitor evaluate in the arm's twin: the run's spec (what its store was recorded with,
        # run.json), this node's URDF, scene and home (the params file's, as the twin node's).
        run_spec = open_run(run_dir).spec
        if arm.spec != run_spec:
            self.get_logger().warning("the spec parameters differ from the run's (run.json), which the gate uses: "
                                      + "; ".join(run_spec.diff(arm.spec)))
        self.twin = TwinConfig(spec=run_spec, urdf_path=arm.urdf_path, scene=arm.scene, home=arm.home)
        self.learner = ContinualLearner(run_dir, cfg, extra_stores=[s for s in extra if s],
                                        initial_model=resolve_path(initial) if initial else None,
                                        evaluate=PersistentEvaluator(twin=self.twin),
                                        log=self.get_logger().info)
        self.n_candidates = 0
        self.n_promoted = 0
        self.last_error = ""
        self.signer: Signer | None = None
        if signing_key:
            try:
                self.signer = Signer(resolve_path(signing_key))
                self.get_logger().info(f"signing announcements with key {self.signer.key_id}")
            except SigningError as e:
                self.last_error = f"signing_key: {e}; announcing unsigned models"
                self.get_logger().error(self.last_error)
        self._promoted_at: dict[str, float] = {}
        self._updates_hist: deque[tuple[float, int]] = deque()
        self._stop = threading.Event()
        inc = self.learner.incumbent
        self.monitor: PromotionMonitor | None = None
        if monitor_episodes > 0:
            self.monitor = PromotionMonitor(self.learner.run.models_dir, self.learner.task, monitor_episodes,
                                            monitor_seed, on_result=self._on_monitor, log=self.get_logger().info,
                                            twin=self.twin)
            self.monitor.start()
            if inc:
                self.monitor.submit(inc["version"], inc["path"], reason="incumbent at start")
        if inc:
            self._announce(inc["path"], inc["sha256"], inc["version"])
        self.thread: threading.Thread | None = None
        if run_spec.vla_shaped:  # said plainly, once, and in /diagnostics: the arm runs its model, nothing learns
            self.last_error = ("the run's spec is VLA-shaped (cameras, an instruction vocabulary or action chunks): "
                               "the continual learner does not train such models yet; the arm runs its starting "
                               "model and the monitor measures it, but no candidates are made")
            self.get_logger().error(self.last_error)
        else:
            self.thread = threading.Thread(target=self.learner.run_forever,
                                           args=(self._stop.is_set, self._on_event), name="learner", daemon=True)
            self.thread.start()
        self.create_timer(2.0, self._publish_diagnostics)
        self.get_logger().info(f"learning ({cfg.algo}) from {run_dir}; incumbent {inc['version'] if inc else None}")

    def _declare(self, name, default, description):
        return declare(self, name, default, description)

    def _announce(self, path: str, sha: str, version: str) -> None:
        msg = String()
        req = {"path": path, "sha256": sha, "version": version}
        if self.signer is not None:
            try:  # sign the spec the file carries (what policy_node will load), else the run's
                from ..algos.export import read_model_metadata

                spec = read_model_metadata(path)[0]
            except Exception:
                spec = self.twin.spec
            req["signature"] = self.signer.sign(sha, version, spec)
        msg.data = json.dumps(req)
        self._promoted_at[version] = time.time()
        self.pub_update.publish(msg)

    def _on_event(self, ev: Event) -> None:  # learner thread
        if ev.kind == "error":
            self.last_error = ev.reason
            self.get_logger().error(f"learner: {ev.reason}")
        if ev.kind in ("candidate", "promoted"):
            self.n_candidates += 1
        if ev.promoted:
            self.n_promoted += 1
            self._announce(ev.path, ev.sha256, ev.version)
            if self.monitor is not None:
                self.monitor.submit(ev.version, ev.path, reason="promoted")
        msg = String()
        msg.data = ev.to_json()
        self.pub_events.publish(msg)

    def _on_monitor(self, rec: dict) -> None:  # monitor thread
        ev = Event("monitor", rec["version"], rec["path"], reason=rec.get("error") or rec.get("reason", ""), data=rec)
        msg = String()
        msg.data = ev.to_json()
        self.pub_events.publish(msg)

    def gradient_updates(self) -> int:
        """SAC: its updates; Recap: the value + actor gradient steps of the rounds completed so far."""
        L = self.learner
        if L.cfg.algo == "recap":
            o = L.cfg.recap_overrides
            return L.rounds * (int(o.get("value_steps", 2000)) + int(o.get("actor_steps", 2000)))
        return L.updates

    def _on_result(self, msg: String) -> None:
        try:
            r = json.loads(msg.data)
        except (ValueError, RecursionError):  # not JSON (a stray publisher): nothing to log
            return
        if not isinstance(r, dict):
            return
        v = r.get("version") if isinstance(r.get("version"), str) else ""
        t = self._promoted_at.get(v)
        lat = f" {time.time() - t:.3f}s after announcement" if t else ""
        if r.get("accepted"):
            self.get_logger().info(f"policy_node runs {v}{lat}")
        else:
            self.get_logger().error(f"policy_node rejected {v}: {r.get('reason')}")

    def _publish_diagnostics(self) -> None:
        L = self.learner
        inc = L.incumbent
        now, g = time.monotonic(), self.gradient_updates()
        self._updates_hist.append((now, g))
        while len(self._updates_hist) > 2 and now - self._updates_hist[1][0] >= 60.0:
            self._updates_hist.popleft()
        t_a, g_a = self._updates_hist[0]
        rate = (g - g_a) / (now - t_a) if now > t_a else 0.0
        vals = dict(algo=L.cfg.algo, updates=L.updates, gradient_updates=g, updates_per_s=f"{rate:.1f}",
                    rounds=L.rounds, candidates=self.n_candidates,
                    promotions=self.n_promoted, incumbent=inc["version"] if inc else "",
                    **L.memory())
        if self.monitor is not None:
            last = self.monitor.last
            vals.update(monitor_pending=self.monitor.pending,
                        monitor_last_version=last["version"] if last else "",
                        monitor_last_success="" if not last or last.get("success_rate") is None
                        else f"{last['success_rate']:.3f}")
        publish_status(self, self.pub_diag, "vla_rl_ros: learner",
                       DiagnosticStatus.WARN if self.last_error else DiagnosticStatus.OK,
                       self.last_error or f"{L.cfg.algo} learning", vals)

    def destroy_node(self):
        self.close()
        return super().destroy_node()

    def close(self) -> None:
        self._stop.set()
        if self.monitor is not None:
            self.monitor.close(timeout=5.0)  # a running evaluation is cancelled, its worker killed
        if self.thread is not None:
            self.thread.join(timeout=5.0)
        if self.thread is not None and self.thread.is_alive():
            # A Recap round or a gate evaluation is in progress: don't hold up shutdown for it. Nothing durable
            # is lost (the store is the recorder's; the last checkpoint and the registry stay as they are).
            self.get_logger().warn("learner busy (training round or gate in progress); exiting without waiting, "
                                   "resuming from the last checkpoint next time")
            return
        self.learner.close()


def main(argv=None) -> int:
    run_node(LearnerNode, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
