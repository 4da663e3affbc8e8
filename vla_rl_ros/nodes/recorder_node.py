"""recorder_node: every tick the policy acted on → a rewarded transition in a durable store.

Thin rclpy shell over :class:`vla_rl_ros.recorder.EpisodeRecorder` and
:class:`vla_rl_ros.buffer.Writer` (SQLite/WAL, commit every ``commit_window_s``).

Subscribes ``/rl/step`` (std_msgs/Float64MultiArray, reliable, deep queue) and
``/rl/estop`` (std_msgs/Bool, reliable + transient-local). Publishes
``/rl/episode`` (std_msgs/String, JSON summary per finished episode) and
``/diagnostics``. Offers ``/rl/episode/reset`` (std_srvs/Trigger): ends the
current episode as ``reset`` and starts the next one; on a real robot this is
the operator's reset. With ``twin_reset: true`` (the sim stack) the recorder is
also the episode manager: at each episode end it calls ``/twin/reset`` and the
next episode begins once the twin has re-drawn the scene. On a robot the next
episode starts at the operator's reset, or at once with ``auto_next_episode``.

Supervised restarts (:mod:`vla_rl_ros.supervision`): the episode in flight when a
node dies is closed as ``crash``. This node's own death leaves it open, and the
store closes it when the restarted node opens it; a dead policy node (no step
for ``input_lost_s``, or a tick count that starts over) or twin (observations
that stop advancing for ``input_lost_s``) is seen in the steps
(:class:`vla_rl_ros.recorder.EpisodeRecorder`). A ``/twin/reset`` that gets no
answer in ``twin_reset_timeout_s`` (a twin that died, or is being restarted) is
asked again.

Long runs (:mod:`vla_rl_ros.buffer.segments`): with ``segment_max_mb`` or
``segment_max_s`` the store rolls over to a new segment at the first episode end
past either limit; ``vla-rl-ros data archive`` moves closed segments away.
A full disk: the writer keeps the steps in memory (up to ``max_pending_steps``;
then the oldest are dropped and counted) and retries; this node's diagnostic is
ERROR, saying so, until commits resume. The policy node does not depend on this
node and keeps the arm going.

Camera (``/camera/image_raw``, sensor-data QoS; only subscribed when used):
``save_frames`` keeps the middle and the last frame of every episode in
``<run_dir>/frames/`` with the episode's outcome as a suggested label
(:mod:`vla_rl_ros.perception.frames`; ``vla-rl-ros data label-frames`` then labels
them). ``reward: classifier`` judges success from the frames with a learned
classifier (``classifier_model``, ONNX Runtime; ``vla-rl-ros train-classifier``):
``classifier_consecutive`` frames in a row at or above the threshold end the
episode as a success, as the geometric test does otherwise, and the sparse
success reward is paid on that tick.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger

from ._common import declare, declare_arm, publish_status, run_node
from ..buffer import create_run
from ..recorder import EpisodeRecorder, RecorderConfig
from ..rewards import default_reward_name, make_reward
from ..stepmsg import StepDecodeError, decode


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder_node")
        self.executor_kind = "single_threaded"
        d = self._declare
        run_dir = d("run_dir", "runs/sim", "Run folder: <runs>/<name>; the store is <run_dir>/buffer.sqlite")
        robot_id = d("robot_id", "sim", "Robot id recorded in the store (several robots → several runs)")
        # the arm's spec, exactly as policy_node declares it: its /rl/step layout and the run's run.json follow it
        self.arm = declare_arm(self)
        self.spec = spec = self.arm.spec
        task = spec.task
        reward = d("reward", "", "Reward: reach_cost | reach_task | pick_place_task | sparse_success | pick_and_place "
                   "| reach | learned (the newest reward model learnt from preference labels in <run_dir>/models/"
                   "reward/, or reward_params_json's version; rewards/learned.py) | classifier (success judged "
                   "from camera frames by classifier_model) ('' = the task's default: reach_cost | pick_place_task)")
        reward_params = d("reward_params_json", "{}", "JSON object of reward constants overriding the defaults")
        potential = d("shaping_potential", "", "Potential for shaping F = γΦ(s') − Φ(s) ('' = none)")
        gamma = d("shaping_gamma", 0.99, "γ of the potential-based shaping")
        self.cfg = RecorderConfig(
            task=task,
            max_episode_s=d("max_episode_s", 0.0, "Episode timeout (s of control ticks); 0 = the task's default"),
            success_tolerance=d("success_tolerance", 0.05, "Object (reach: hand) to goal distance counted as success (m)"),
            success_hold_s=d("success_hold_s", 0.15, "Time within tolerance required for success (s)"),
            settle_s=d("settle_s", 0.2, "After a reset, ignore steps observed earlier than this (s)"),
            input_lost_s=declare(self, "input_lost_s", 1.0, "No step from the policy, or no new observation in its "
                                 "steps, for this long (s): the policy node or the arm (twin) went away, and the "
                                 "episode in flight is closed as crash (0 = never)", lo=0.0, hi=3600.0),
        )
        if self.cfg.max_episode_s <= 0:
            from ..twin.env import DEFAULT_MAX_STEPS

            self.cfg.max_episode_s = DEFAULT_MAX_STEPS[task] / spec.control_hz
        commit_window = d("commit_window_s", 0.1, "Durability window: a crash loses at most this much (s)")
        segment_mb = declare(self, "segment_max_mb", 0.0, "Roll the store over to a new segment at the first episode "
                             "end after the current one reaches this size (MB; 0 = one segment)", lo=0.0, hi=1e6)
        segment_s = declare(self, "segment_max_s", 0.0, "Likewise after the current segment is this old (s; 0 = no "
                            "limit)", lo=0.0, hi=1e8)
        max_pending = declare(self, "max_pending_steps", 50_000, "Full disk: steps kept in memory while commits "
                              "fail; past it the oldest are dropped and counted", lo=1, hi=100_000_000)
        self.twin_reset = d("twin_reset", False, "Sim only: call /twin/reset at each episode end (episode manager)")
        self.reset_timeout = declare(self, "twin_reset_timeout_s", 5.0, "Sim only: ask /twin/reset again when it has "
                                     "not answered in this long (s): the twin died or is being restarted",
                                     lo=0.1, hi=3600.0)
        self.auto_rearm = d("auto_next_episode", False,
                            "Robot without twin_reset: start the next episode right after one ends (after settle_s) "
                            "instead of waiting for the operator's /rl/episode/reset")
        step_topic = d("step_topic", "/rl/step", "Per-tick steps from policy_node")
        camera_topic = d("camera_topic", "/camera/image_raw", "Camera frames (sensor_msgs/Image rgb8 or bgr8), for "
                         "save_frames and reward: classifier")
        self.save_frames = d("save_frames", False, "Keep the middle and last camera frame of each episode in "
                             "<run_dir>/frames/ with the outcome as a suggested label (vla-rl-ros data label-frames)")
        clf_model = d("classifier_model", "", "reward classifier: the success classifier (.onnx; '' = the newest "
                      "<run_dir>/models/classifier-*.onnx)")
        clf_threshold = declare(self, "classifier_threshold", 0.0, "reward classifier: p_success threshold (0 = the "
                                "model's own)", lo=0.0, hi=0.999)
        clf_consecutive = declare(self, "classifier_consecutive", 3, "reward classifier: frames in a row judged "
                                  "success that end the episode as a success", lo=1, hi=1000)
        clf_age = declare(self, "classifier_max_frame_age_s", 1.0, "reward classifier: a frame older than this "
                          "breaks the success streak (a camera that stopped is no success)", lo=0.0, hi=3600.0)

        rcfg = {"name": reward or default_reward_name(task)}
        try:
            params = json.loads(reward_params or "{}")
        except json.JSONDecodeError as e:
            raise ValueError(f"reward_params_json is not valid JSON: {e}") from e
        if rcfg["name"] == "learned":  # the run's own reward models and the arm's task unless the params say
            params.setdefault("models_dir", os.path.join(os.path.abspath(run_dir), "models"))
            params.setdefault("task", task)
        if params:
            rcfg["params"] = params
        if potential:
            rcfg["shaping"] = {"potential": potential, "gamma": gamma}
        self.detector = None
        if rcfg["name"] == "classifier":
            from ..perception.success import ClassifierSuccessDetector, SuccessClassifier, find_classifier

            path = find_classifier(clf_model, run_dir)
            clf = SuccessClassifier(path, threshold=clf_threshold or None)
            self.detector = ClassifierSuccessDetector(clf, n_consecutive=clf_consecutive, max_frame_age_s=clf_age)
            rcfg["params"] = {**rcfg.get("params", {}), "model_version": str(clf.meta.get("version", "")),
                              "model_sha256": clf.sha256, "threshold": clf.threshold,
                              "n_consecutive": int(clf_consecutive)}
        self.reward_fn = make_reward(rcfg, self.spec)

        root, name = os.path.split(os.path.abspath(run_dir))
        self.run = create_run(root, name, self.spec, robot_id=robot_id, exist_ok=True)
        self.writer = self.run.writer(commit_window_s=commit_window, segment_max_bytes=int(segment_mb * 1e6),
                                      segment_max_s=segment_s, max_pending_steps=max_pending)
        self._disk_full_logged = 0.0  # monotonic time of the last full-disk log line (0 = not full)
        self.rec = EpisodeRecorder(self.writer, self.spec, self.reward_fn, self.cfg, on_episode_end=self._episode_ended,
                                   armed=not self.twin_reset, on_input_lost=self._input_lost, detector=self.detector)
        self.frame_store = None
        self._ep_frames: list = []  # (s since the episode began, rgb) of the episode in flight
        self._ep_t0 = None
        self.frames_received = 0
        if self.save_frames:
            from ..perception.frames import FrameStore

            self.frame_store = FrameStore(run_dir)
        self._last_reject_log = 0.0
        self._reset_pending = False
        self._reset_sent = 0.0  # monotonic time of the /twin/reset call in flight
        self._reset_gen = 0  # the call in flight; answers to older (abandoned) calls are ignored
        self._reset_future = None
        self._retry = None

        self.pub_episode = self.create_publisher(String, "/rl/episode", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        step_qos = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Float64MultiArray, step_topic, self._on_step, step_qos)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(Bool, "/rl/estop", self._on_estop, latched)
        self.create_service(Trigger, "/rl/episode/reset", self._on_reset_request)
        if self.save_frames or self.detector is not None:
            self.create_subscription(Image, camera_topic, self._on_image, qos_profile_sensor_data)
        self.reset_client = self.create_client(Trigger, "/twin/reset") if self.twin_reset else None
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(0.25, self._check)
        if self.writer.recovered_episodes:
            self.get_logger().warning(f"closed {len(self.writer.recovered_episodes)} episode(s) left open by a crash")
        self.get_logger().info(
            f"recording {task} ({spec.n_arm} joints, obs {spec.obs_dim}, action {spec.action_dim}) into "
            f"{self.writer.segment_path} (reward {self.reward_fn.config}, commit window {commit_window}s"
            f"{f', new segment past {segment_mb:g} MB' if segment_mb else ''}"
            f"{f', new segment past {segment_s:g} s' if segment_s else ''})")
        if self.twin_reset:
            self._request_twin_reset()

    def _declare(self, name, default, description):
        return declare(self, name, default, description)

    # -------------------------------------------------------------- callbacks
    def _on_step(self, msg: Float64MultiArray) -> None:
        labels = [dim.label for dim in msg.layout.dim]
        sizes = [dim.size for dim in msg.layout.dim]
        try:
            rec = decode(labels, sizes, msg.data, self.spec.obs_dim, self.spec.action_dim)
        except StepDecodeError as e:
            self.rec.counters.rejected += 1
            self.rec.counters.last_error = str(e)
            now = time.monotonic()
            if now - self._last_reject_log > 1.0:
                self._last_reject_log = now
                self.get_logger().error(f"rejected step ({self.rec.counters.rejected} so far): {e}")
            return
        self.rec.on_step(rec)

    def _on_image(self, msg: Image) -> None:
        rgb = image_to_rgb(msg)
        if rgb is None:
            self.get_logger().error(f"camera frame refused: encoding {msg.encoding!r} {msg.width}x{msg.height} "
                                    "(rgb8 or bgr8 expected)", throttle_duration_sec=5.0)
            return
        self.frames_received += 1
        if self.detector is not None:
            self.detector.on_frame(rgb)
        if self.frame_store is not None:
            if not self.rec.recording:
                self._ep_frames, self._ep_t0 = [], None
                return
            now = time.monotonic()
            if self._ep_t0 is None:
                self._ep_t0 = now
            if len(self._ep_frames) >= 512:  # a long episode: keep every other frame (middle and last stay close)
                self._ep_frames = self._ep_frames[::2]
            self._ep_frames.append((now - self._ep_t0, rgb))

    def _on_estop(self, msg: Bool) -> None:
        if self.rec.set_estop(bool(msg.data)) is not None:
            self.get_logger().warning("estop: episode ended")

    def _on_reset_request(self, request, response):
        self.rec.end("reset")
        if self.twin_reset:
            self._request_twin_reset()
        else:
            self.rec.arm(None)
        response.success = True
        response.message = "episode reset"
        return response

    def _check(self) -> None:
        self._check_disk()
        if self.rec.check() is not None:
            self.get_logger().warning(f"no step from the policy for {self.cfg.input_lost_s} s: episode closed as crash")
        if (self._reset_pending and self._retry is None
                and time.monotonic() - self._reset_sent >= self.reset_timeout):
            self.get_logger().warning(f"/twin/reset unanswered after {self.reset_timeout} s (the twin died or is "
                                      "restarting): asking again")
            forget = getattr(self.reset_client, "remove_pending_request", None)  # (not in every rclpy)
            if forget is not None and self._reset_future is not None:
                forget(self._reset_future)  # its answer will never come
            self._reset_pending = False
            self._request_twin_reset()

    def _check_disk(self) -> None:
        """A log line when the disk fills (then every 10 s while it stays full), and one when recording resumes."""
        w = self.writer
        now = time.monotonic()
        if w.disk_full:
            if not self._disk_full_logged or now - self._disk_full_logged >= 10.0:
                self._disk_full_logged = now
                self.get_logger().error(f"{self._disk_message()}")
        elif self._disk_full_logged:
            self._disk_full_logged = 0.0
            self.get_logger().warning(f"space is back: recording resumed ({w.dropped_steps} steps dropped in all)")

    def _disk_message(self) -> str:
        w = self.writer
        return (f"disk full: recording paused ({w.disk_full_error}); {w.pending_steps} steps wait in memory, "
                f"{w.dropped_steps} dropped; retrying until space returns in {w.segment_path.parent}")

    def _input_lost(self) -> None:
        """The arm (twin) stopped while an episode was about to begin: the scene it was reset to may be gone."""
        self.get_logger().warning(f"no new observation for {self.cfg.input_lost_s} s before the episode began")
        if self.twin_reset:
            self._request_twin_reset()
        else:  # a real arm's scene is still there: wait again for the settle time
            self.rec.arm(None)

    def _episode_ended(self, summary: dict) -> None:
        if self.frame_store is not None and self._ep_frames:
            try:
                self.frame_store.add_episode(summary.get("idx", summary.get("id", 0)), self._ep_frames,
                                             summary.get("success"), str(summary.get("end_reason", "")))
            except OSError as e:
                self.get_logger().error(f"frames of episode {summary.get('idx')} not saved: {e}")
            self._ep_frames, self._ep_t0 = [], None
        if summary.get("end_reason") == "crash":
            self.get_logger().warning(f"episode {summary.get('idx')} closed as crash (the policy or the arm went "
                                      "away)")
        msg = String()
        msg.data = json.dumps(summary, default=str)
        self.pub_episode.publish(msg)
        refresh = getattr(self.reward_fn, "refresh", None)  # reward: learned moves to a newer model between episodes
        if refresh is not None:
            try:
                if refresh():
                    self.get_logger().info(f"reward model now {self.reward_fn.config['params']['version']}")
            except Exception as e:  # keep the model in use; say why
                self.get_logger().warning(f"reward model refresh failed: {e}")
        if self.twin_reset:
            self._request_twin_reset()
        elif self.auto_rearm:
            self.rec.arm(None)

    def _request_twin_reset(self) -> None:
        if self._reset_pending or self.reset_client is None:
            return
        if not self.reset_client.service_is_ready():
            # twin not up yet: try again shortly
            self._reset_pending = True
            self._retry = self.create_timer(0.2, self._retry_reset)
            return
        self._reset_pending = True
        self._reset_sent = time.monotonic()
        self._reset_gen += 1
        gen = self._reset_gen
        fut = self._reset_future = self.reset_client.call_async(Trigger.Request())
        fut.add_done_callback(lambda f: self._reset_done(f, gen))

    def _retry_reset(self) -> None:
        self._retry.cancel()
        self.destroy_timer(self._retry)
        self._retry = None
        self._reset_pending = False
        self._request_twin_reset()

    def _reset_done(self, fut, gen: int) -> None:
        if gen != self._reset_gen:  # a call given up on (unanswered in time); a newer one is in flight
            return
        self._reset_pending = False
        try:
            res = fut.result()
        except Exception as e:  # service vanished: try again
            self.get_logger().error(f"/twin/reset failed: {e}")
            self._request_twin_reset()
            return
        m = re.search(r"seed=(\d+)", res.message or "")
        self.rec.arm(int(m.group(1)) if m else None, time.time())

    def _publish_diagnostics(self) -> None:
        c = self.rec.counters
        w = self.writer
        vals = dict(episodes=c.episodes, successes=c.successes, crashes=c.crashes, transitions=c.transitions,
                    committed=w.committed_steps,
                    rejected_steps=c.rejected, gaps=c.gaps, hold_ticks=c.hold_ticks, pending=w.pending_steps,
                    dropped_steps=w.dropped_steps, disk_full=w.disk_full, disk_full_retries=w.disk_full_retries,
                    segment=w.segment_index, store=str(w.segment_path), camera_frames=self.frames_received)
        if self.detector is not None:
            vals.update(classifier_p=-1.0 if self.detector.last_p is None else round(self.detector.last_p, 4),
                        classifier_streak=self.detector.streak)
        if w.disk_full:
            level, message = DiagnosticStatus.ERROR, self._disk_message()
        else:
            level = DiagnosticStatus.WARN if c.rejected else DiagnosticStatus.OK
            message = c.last_error or "recording"
        publish_status(self, self.pub_diag, "vla_rl_ros: recorder", level, message, vals,
                       hardware_id=w.robot_id or "sim")

    def destroy_node(self):
        self.close()
        return super().destroy_node()

    def close(self) -> None:
        self.writer.close("reset")


def image_to_rgb(msg: Image):
    """An (H, W, 3) uint8 RGB array from an rgb8/bgr8 sensor_msgs/Image, or None for any other encoding or size."""
    import numpy as np

    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if msg.encoding not in ("rgb8", "bgr8") or h <= 0 or w <= 0 or step < 3 * w or len(msg.data) < h * step:
        return None
    a = np.frombuffer(bytes(msg.data), dtype=np.uint8)[: h * step].reshape(h, step)[:, : 3 * w].reshape(h, w, 3)
    return np.ascontiguousarray(a[:, :, ::-1] if msg.encoding == "bgr8" else a)


def main(argv=None) -> int:
    run_node(RecorderNode, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
