"""policy_node: the ONNX policy on the arm, at control rate, behind a watchdog and a safety filter.

A thin rclpy shell over ROS-free cores: :mod:`~vla_rl_ros.runtime.onnx_policy`
(validated ONNX session), :mod:`~vla_rl_ros.runtime.control` (IK + safety
filter), :mod:`~vla_rl_ros.runtime.watchdog`, :mod:`~vla_rl_ros.runtime.inputs`
and :mod:`~vla_rl_ros.runtime.stats`.

Every tick it builds the spec observation from the latest
valid joint state and task poses, runs the model (or takes the human's action
while ``/rl/intervention`` is fresh), filters the result and publishes the arm
and gripper commands plus one ``/rl/step`` record (docs/CONVENTIONS.md). When
the watchdog objects (estop, stale or invalid joint states, missing/invalid
poses, an invalid camera frame, no model) the tick publishes a *hold*: the last
measured positions. Before the first valid joint state it publishes nothing.

Inputs as a real cell publishes them: the joint states may be split, the arm's
and the gripper's in separate messages, on ``topics.joint_states`` and the
``topics.extra_joint_states``, at different rates; they are merged by name
(:class:`~vla_rl_ros.runtime.inputs.JointStateMatcher`, a lone finger joint
completed through the URDF's ``<mimic>``), and each group has its own timeout
(``joint_state_timeout_s``, ``gripper_state_timeout_s``). A task pose in another
frame is moved into the base frame through ``static_transforms`` (the params
file) or ``/tf_static`` (where tf2_msgs is installed); one in a frame neither
connects is refused (:mod:`~vla_rl_ros.runtime.frames`).

Tick modes (``tick_mode``):

* ``timer`` (the default): a timer calls the tick every ``1/control_rate_hz``;
  it computes from the latest inputs. **Missed ticks** are the periods the
  timer skipped (from its scheduled call times, rclpy's ``TimerInfo``).
* ``event``: the tick runs in the joint-state callback, on each state of the
  arm's joints as it arrives (a gripper's state alone drives none), so the
  command is computed from that very state
  (read-update-write, as a ros2_control cycle). The subscription keeps one
  state, so a tick is always on the newest. ``control_rate_hz`` is the rate the
  joint states are expected at. **Missed ticks** are the joint states no
  command was computed for: consecutive states whose header stamps are k > 1
  periods apart count k - 1 (a state replaced by a newer one while a tick was
  still running, lost in transport, or never published in time), from arrival
  times when unstamped. A gap longer than ``joint_state_timeout_s`` is an input
  outage (``input_outages`` in ``/diagnostics``), not missed ticks: a timer
  (every ``min(max(joint_state_timeout_s / 4, period), 10 ms)``) then holds
  the arm. A rejected joint state runs a tick too: a hold. One executor thread
  runs every callback, so a tick always ends before the next starts. The tick
  lateness is the tick's start minus the state's stamp.

Both modes report obs->command latency (command publish time minus the joint
state's stamp) and the tick's compute time in ``/diagnostics``. Real time:
``realtime_priority`` (SCHED_FIFO) and ``cpu_affinity`` for the control thread.

Hot swap: ``/rl/policy_update`` (``std_msgs/String``, JSON ``{"path", "sha256",
"version"}``) queues a load; a background thread loads and validates the model
(:func:`~vla_rl_ros.runtime.onnx_policy.load_validated`) and installs it with
one reference assignment, which the control loop reads once per tick. Every
announcement gets replies on ``/rl/policy_update_result`` (``std_msgs/String``
JSON): ``{"event": "rejected", "accepted": false, "reason": ...}``, or
``{"event": "swapped", "accepted": true, ...}`` and then, from the first tick
whose command the new model computed, ``{"event": "first_command", "tick",
"cmd_stamp_s", ...}``.

Signed promotions (:mod:`~vla_rl_ros.signing`): with ``trusted_keys`` set, an
announcement runs only with a good signature by one of those keys, for this
node's spec, newer than the running model; with ``allowed_models_dir`` set, only
a file inside that directory. A refusal says why (``kind`` in the reply: unsigned,
bad_signature, untrusted_key, wrong_spec, replayed, outside_dir), is counted in
``/diagnostics`` (``rejected_updates``, ``rejected_updates_<kind>``), and the
incumbent keeps running. The start-up ``model_path`` is trusted by configuration
(pin it with ``model_sha256``).
"""
# No ``from __future__ import annotations`` here: rclpy passes a TimerInfo to a timer callback only when the
# parameter is annotated with the TimerInfo class itself (SingleThreadedExecutor), not a string.
import json
import math
import os
import queue
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.timer import TimerInfo
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, MultiArrayDimension, String

from ..kinematics import Kinematics
from ..runtime.chunks import ChunkExecutor
from ..runtime.chunks import Sample as ChunkSample
from ..runtime.control import Controller, SafetyLimits
from ..runtime.images import decode_into
from ..runtime.inputs import ARM, GRIPPER, validate_action, validate_image, validate_pose
from ..runtime.observe import Observer
from ..runtime.onnx_policy import ModelRejected, OnnxPolicy, load_validated, realistic_observation
from ..runtime.paths import resolve_path
from ..runtime.stats import LatencyWindow, RateMonitor
from ..runtime.watchdog import InputChannel, Watchdog
from ..signing import UpdateGuard, UpdateRejected, parse_announcement
from ..stepmsg import META_FIELDS, encode_layout
from ._common import (TF_STATIC_DESCRIPTION, RateLimitedLog, declare, declare_arm, declare_frames,
                      declare_joint_state_topics, make_matcher, publish_status, run_node)
from ._fastpub import PreserializedArray

RELIABLE_10 = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
STEP_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
LATCHED_10 = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)

TOPICS = {
    "joint_states": ("/joint_states", "sensor_msgs/JointState in (sensor-data QoS: best-effort and reliable publishers; "
                     "more topics: topics.extra_joint_states)"),
    "object_pose": ("/task/object_pose", "geometry_msgs/PoseStamped in: the manipulated object, base frame or a "
                    "frame static_transforms (or /tf_static) connects to it"),
    "goal_pose": ("/task/goal_pose", "geometry_msgs/PoseStamped in: the goal, base frame or a connected frame"),
    "tf_static": ("/tf_static", TF_STATIC_DESCRIPTION),
    "image": ("/camera/image_raw", "sensor_msgs/Image in, validated only (rgb8/bgr8); '' disables"),
    "instruction": ("/task/instruction", "std_msgs/String in (reliable, transient-local): the instruction, one of "
                    "the model's vocabulary (spec instructions); an unknown one holds the arm"),
    "intervention": ("/rl/intervention", "std_msgs/Float64MultiArray in: a human's action in the policy's action layout"),
    "estop": ("/rl/estop", "std_msgs/Bool in (reliable, transient-local): true holds the arm"),
    "policy_update": ("/rl/policy_update", "std_msgs/String in: JSON {path, sha256, version} announcing a model"),
    "policy_update_result": ("/rl/policy_update_result", "std_msgs/String out: JSON reply to each announcement"),
    "arm_command": ("/arm_controller/commands", "std_msgs/Float64MultiArray out: joint position targets"),
    "gripper_command": ("/gripper_controller/commands", "std_msgs/Float64MultiArray out: gripper opening (m)"),
    "step": ("/rl/step", "std_msgs/Float64MultiArray out: per-tick step record (docs/CONVENTIONS.md)"),
    "diagnostics": ("/diagnostics", "diagnostic_msgs/DiagnosticArray out"),
}


def _name_os_thread(name: str) -> None:
    """The calling thread's name as the OS shows it (Linux prctl PR_SET_NAME, 15 bytes); silently not elsewhere."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("policy_node", **kwargs)
        log = self.get_logger()
        arm = declare_arm(self)
        self.spec = spec = arm.spec
        self.model_path = declare(self, "model_path", "", "ONNX model run at start-up ('' = none; wait for /rl/policy_update)")
        self.model_sha256 = declare(self, "model_sha256", "", "expected SHA-256 of model_path ('' = not checked)")
        self.rate_hz = declare(self, "control_rate_hz", 500.0, "control loop rate (Hz)", lo=1.0, hi=2000.0)
        js_timeout = declare(self, "joint_state_timeout_s", 0.1, "hold when the last valid state of the arm's joints "
                             "is older (s)", lo=0.001, hi=10.0)
        grip_timeout = declare(self, "gripper_state_timeout_s", 0.5, "hold when the last valid state of the gripper's "
                               "joints is older (s): a gripper driver of its own publishes at ~30 Hz", lo=0.001, hi=10.0)
        self.interv_timeout = declare(self, "intervention_timeout_s", 0.2,
                                      "a human action replaces the policy's while younger than this (s)", lo=0.001, hi=10.0)
        pose_timeout = declare(self, "pose_timeout_s", 1.0, "hold when a task pose is older (s); 0 = poses never go stale",
                               lo=0.0, hi=3600.0)
        ik_iters = declare(self, "ik_iters", 3, "DLS IK iterations per tick (ee_delta)", lo=1, hi=50)
        d = SafetyLimits()
        limits = SafetyLimits(
            joint_margin=declare(self, "safety.joint_margin", d.joint_margin, "rad kept away from URDF limits", lo=0.0, hi=0.5),
            max_joint_step=declare(self, "safety.max_joint_step", d.max_joint_step,
                                   "rad: max change of a joint target per tick", lo=1e-4, hi=3.0),
            max_tracking_error=declare(self, "safety.max_tracking_error", d.max_tracking_error,
                                       "rad: max distance of a target from the measured position", lo=1e-4, hi=3.0),
            workspace_tolerance=declare(self, "safety.workspace_tolerance", d.workspace_tolerance,
                                        "m: FK of a target may leave the workspace box by this much", lo=0.0, hi=1.0),
            max_gripper_step=declare(self, "safety.max_gripper_step", d.max_gripper_step,
                                     "m: max change of the gripper target per tick", lo=1e-5, hi=1.0),
        )
        self._diag_period = diag_period = declare(self, "diagnostics_period_s", 1.0, "period of /diagnostics (s)",
                                                  lo=0.05, hi=60.0)
        self.executor_kind = declare(self, "executor", "events",
                                     "events (rclpy.experimental.EventsExecutor) | single_threaded",
                                     additional="one of: events, single_threaded")
        self.realtime_priority = declare(
            self, "realtime_priority", 0, "SCHED_FIFO priority of the control thread (1-98; 0 = normal scheduling). "
            "Needs CAP_SYS_NICE or an rtprio limit; refused -> warning, normal scheduling", lo=0, hi=98)
        self.cpu_affinity = list(self.declare_parameter(
            "cpu_affinity", Parameter.Type.INTEGER_ARRAY, ParameterDescriptor(
                description="CPUs the control thread may run on, e.g. [1] (unset = any; refused -> warning)",
                read_only=True)).value or [])
        self.rt_middleware = declare(
            self, "realtime_middleware_threads", True, "realtime_priority and cpu_affinity also for the middleware's "
            "threads (DDS reception), which deliver the joint states to the control thread; false = the control "
            "thread alone")
        self.tick_mode = declare(
            self, "tick_mode", "timer", "timer: a tick every 1/control_rate_hz | event: a tick on each joint state "
            "(read-update-write, as ros2_control; control_rate_hz is then the joint states' expected rate)",
            choices=("timer", "event"))
        self.explore_std = declare(
            self, "exploration_std", 0.0, "std of Gaussian noise added to the model's action (action units, before "
            "the safety filter; the noisy action is what is sent and recorded). 0 = the deterministic policy. "
            "Advantage-based learning (Recap) needs some: a deterministic policy takes one action per state, so "
            "there is nothing to rank", lo=0.0, hi=1.0)
        self._explore_rng = np.random.default_rng(declare(self, "exploration_seed", 0, "seed of the exploration noise",
                                                          lo=0, hi=2**31 - 1))
        topics = {k: declare(self, f"topics.{k}", v, desc) for k, (v, desc) in TOPICS.items()}
        trusted = declare(self, "trusted_keys", [""], "Ed25519 public keys (PEM files) whose signatures an announced "
                          "model must carry ([''] = announcements need no signature; set it on a robot: "
                          "vla-rl-ros keygen)")
        allowed_dir = declare(self, "allowed_models_dir", "", "announced models must lie inside this directory "
                              "(symlinks resolved; '' = anywhere)")
        self.providers = list(self.declare_parameter(
            "execution_providers", ["CPUExecutionProvider"], ParameterDescriptor(
                description="ONNX Runtime execution providers in order of preference, e.g. "
                "[TensorrtExecutionProvider, CUDAExecutionProvider] on a robot with a GPU; those this ORT lacks "
                "are skipped, the CPU is the last resort", read_only=True)).value)
        # ---- VLA-shaped models (spec images / instructions / chunk_len > 1): inference off the control thread
        self.chunk_mode = declare(self, "chunk_execution", "receding", "receding: the newest chunk alone | "
                                  "ensemble: ACT's temporal ensembling of every chunk covering the tick",
                                  additional="one of: receding, ensemble")
        self.chunk_interpolate = declare(self, "chunk_interpolate", True, "interpolate linearly between a chunk's "
                                         "steps (a 50 Hz chunk at a 500 Hz loop without stairs)")
        self.ensemble_decay = declare(self, "ensemble_decay", 0.01, "ensemble: weight exp(-m i), i = 0 for the "
                                      "oldest chunk (ACT's m)", lo=0.0, hi=10.0)
        replan = declare(self, "replan_steps", 0, "chunk steps executed before the next inference starts "
                         "(0 = half the chunk for receding, every step for ensemble); earlier when the model's "
                         "measured latency would let the chunk run out first", lo=0, hi=1000)
        self.image_timeout = declare(self, "image_timeout_s", 0.5, "hold when a camera the model reads has no "
                                     "valid frame this recent (s)", lo=0.001, hi=60.0)
        self.inference_affinity = list(self.declare_parameter(
            "inference_cpu_affinity", Parameter.Type.INTEGER_ARRAY, ParameterDescriptor(
                description="CPUs the inference thread may run on, e.g. the control thread's own [1] on a 2-core "
                "machine whose other core the learner saturates (SCHED_FIFO ticks preempt it there); unset = any",
                read_only=True)).value or [])
        self.inference_nice = declare(self, "inference_nice", 5, "added to the process's nice value for the "
                                      "inference thread (it yields the CPU to the control thread)", lo=0, hi=19)
        replay_state = declare(self, "replay_state_file", "", "JSON file keeping the seq of the newest signed model "
                               "run, so that a restarted node still refuses older promotions ('' = in memory only)")

        self.kin = Kinematics(arm.urdf, spec.base_link, spec.ee_link, spec.arm_joints)
        self.controller = Controller(spec, self.kin, limits, ik_iters=ik_iters, home=arm.home)
        self.controller.warm_up()  # compiled kernels ready before the first tick
        self.observe = Observer(spec, self.kin)  # FK + observation in one compiled call
        self.limits = limits
        self.use_sim_time = bool(self.get_parameter("use_sim_time").value)

        # ------------------------------------------------------------- state
        n, A = spec.n_arm, spec.action_dim
        self.matcher = make_matcher(arm)  # arm and gripper merged by name, from one topic or several
        self.ch_js = InputChannel("joint_states", js_timeout)  # the arm's joints
        self.ch_grip = InputChannel("gripper_states", grip_timeout, required=bool(spec.gripper_joints))
        self.ch_obj = InputChannel("object_pose", pose_timeout)
        self.ch_goal = InputChannel("goal_pose", pose_timeout)
        self.ch_img = InputChannel("image", 0.0, required=False)
        self.ch_interv = InputChannel("intervention", 0.0, required=False, error_ttl_s=self.interv_timeout)
        self.ch_instr = InputChannel("instruction", 0.0, required=bool(spec.instructions))
        self.ch_cams = {im.name: InputChannel(f"camera_{im.name}", self.image_timeout) for im in spec.images}
        self.watchdog = Watchdog([self.ch_js, self.ch_grip, self.ch_obj, self.ch_goal, self.ch_img, self.ch_interv,
                                  self.ch_instr, *self.ch_cams.values()])
        # chunked execution: the inference thread submits, the tick samples (runtime/chunks.py)
        self.chunks = ChunkExecutor(spec.chunk_len, spec.chunk_rate_hz, A, mode=self.chunk_mode,
                                    interpolate=self.chunk_interpolate, ensemble_decay=self.ensemble_decay) \
            if spec.vla_shaped else None
        self.replan_steps = replan or (1 if self.chunk_mode == "ensemble" else max(1, spec.chunk_len // 2))
        self._chunk_info = ChunkSample()
        self._instr_idx = -1
        self._frames: dict[str, tuple] = {}  # camera name -> (Image msg, stamp s), replaced whole by its callback
        self._snap = np.zeros(spec.obs_dim, dtype=np.float32)  # the observation the inference thread reads
        self._snap_t = 0.0  # its stamp (s); 0 = none yet
        self._snap_lock = threading.Lock()
        self.chunk_starved_ticks = 0
        self.inferences = 0
        self.inferences_skipped = 0
        self.infer_time = LatencyWindow()  # one chunk inference (s)
        self.infer_age = LatencyWindow()  # observation stamp -> chunk ready (s)
        self.deadline_overruns = 0  # ticks whose compute took longer than the control period
        self._skip_reason = ""
        self._latency_ema = 0.0  # observation -> chunk ready (s), smoothed: when the next inference must start
        self._period = 1.0 / self.rate_hz
        self._js_stamp_ns = 0
        self._obj = np.zeros(3)
        self._goal = np.zeros(3)
        self._obs = np.zeros(spec.obs_dim, dtype=np.float32)
        self._action = np.zeros(A)
        self._interv = np.zeros(A)
        self._hold_action = np.zeros(A)
        self._policy: OnnxPolicy | None = None  # written by the loader thread, read once per tick
        self._label_policy: OnnxPolicy | None = None
        self._acted_policy: OnnxPolicy | None = None
        self.model_error = "no model configured (model_path is empty)" if not self.model_path else "loading"
        self.update_guard = UpdateGuard([resolve_path(k) for k in trusted if k], resolve_path(allowed_dir), spec,
                                        state_path=resolve_path(replay_state))
        self.rejected_updates = 0  # every refused announcement (signature, directory, invalid message, bad model)
        for err in self.update_guard.config_errors:
            log.error(f"signed updates: {err}")
        self.last_error = ""
        self.tick = 0
        self.hold_ticks = 0
        self.intervention_ticks = 0
        self.inference_errors = 0
        self.callback_errors = 0
        self._log_reject = RateLimitedLog(self.get_logger())
        self.hold_reason = "waiting for joint_states"
        self._missed_at_diag = 0
        self._holding = True
        self.event_mode = self.tick_mode == "event"
        # event mode: a gap in the joint states longer than their timeout is an input outage (the watchdog
        # holds), not missed ticks
        self.rate = RateMonitor(self.rate_hz, outage_s=js_timeout if self.event_mode else float("inf"))
        self.js_timeout = js_timeout
        self._last_event_tick = -math.inf  # monotonic time of the last tick a joint state drove (event mode)
        self.latency = LatencyWindow()  # obs stamp -> command publish (s)
        self.compute = LatencyWindow()  # tick start -> command publish (s)

        # ------------------------------------------------------- interfaces, messages
        # The three per-tick messages are serialized once; a tick writes their values in place and publishes the
        # bytes (_fastpub.py): no per-tick message allocation or conversion.
        self.pub_arm = self.create_publisher(Float64MultiArray, topics["arm_command"], RELIABLE_10)
        self.pub_grip = self.create_publisher(Float64MultiArray, topics["gripper_command"], RELIABLE_10)
        self.pub_step = self.create_publisher(Float64MultiArray, topics["step"], STEP_QOS)
        self._arm_out = PreserializedArray(self.pub_arm, Float64MultiArray(data=[0.0] * n))
        self._arm_np = self._arm_out.values
        self._grip_out = PreserializedArray(self.pub_grip, Float64MultiArray(data=[0.0]))
        self._grip_np = self._grip_out.values
        labels, sizes = encode_layout(spec.obs_dim, A, "")
        step_msg = Float64MultiArray()
        step_msg.layout.dim = [MultiArrayDimension(label=lb, size=sz, stride=sz) for lb, sz in zip(labels, sizes)]
        step_msg.data = [0.0] * (spec.obs_dim + A + len(META_FIELDS))
        self._model_dim = step_msg.layout.dim[3]
        self._step_out = PreserializedArray(self.pub_step, step_msg)
        self._step_views()
        self.pub_diag = self.create_publisher(DiagnosticArray, topics["diagnostics"], RELIABLE_10)
        self.pub_result = self.create_publisher(String, topics["policy_update_result"], LATCHED_10)
        sensor, sub, g = qos_profile_sensor_data, self.create_subscription, self._guard
        # event mode computes on the newest state, as a ros2_control read does: a queue of one, so a late tick
        # never works through older states (those it skipped count as missed ticks, from their stamps)
        js_qos = sensor if not self.event_mode else QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1, reliability=sensor.reliability, durability=sensor.durability)
        self.joint_state_topics = declare_joint_state_topics(self, topics["joint_states"])
        for t in self.joint_state_topics:  # one callback: the matcher merges the groups by name
            sub(JointState, t, g(self._on_joint_state), js_qos)
        self.frames = declare_frames(self, spec.base_link, topics["tf_static"],
                                     lambda e: self._log_reject(f"rejected transform: {e}"))
        sub(PoseStamped, topics["object_pose"], g(self._on_object_pose), sensor)
        sub(PoseStamped, topics["goal_pose"], g(self._on_goal_pose), sensor)
        if topics["image"] and topics["image"] not in {im.topic for im in spec.images}:
            sub(Image, topics["image"], g(self._on_image), sensor)
        for im in spec.images:  # the model's cameras: validated here, decoded by the inference thread
            sub(Image, im.topic, g(self._camera_callback(im)), sensor)
        if spec.instructions:
            sub(String, topics["instruction"], g(self._on_instruction), LATCHED)
        sub(Float64MultiArray, topics["intervention"], g(self._on_intervention), sensor)
        sub(Bool, topics["estop"], g(self._on_estop), LATCHED)
        sub(String, topics["policy_update"], g(self._on_policy_update), RELIABLE_10)

        # ---------------------------------------------- loader / notifier thread
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="policy_loader", daemon=True)
        self._worker.start()
        self._infer_stop = threading.Event()
        self._infer_thread = None
        if self.chunks is not None:  # started before the control thread's scheduling is raised: it keeps its own
            self._infer_thread = threading.Thread(target=self._infer_loop, name="policy_inference", daemon=True)
            self._infer_thread.start()
        if self.model_path:
            self._tasks.put(("load", {"path": self.model_path, "sha256": self.model_sha256, "version": None,
                                      "source": "model_path"}))

        if self.cpu_affinity:
            self._set_affinity(self.cpu_affinity)
        if self.realtime_priority > 0:
            self._set_realtime(self.realtime_priority)
        self._diag_timer = self.create_timer(diag_period, self._guard(self._publish_diagnostics))
        if self.event_mode:
            # the joint states drive the ticks; this timer only holds the arm once they go stale (at most
            # 10 ms after, and every 10 ms while they stay away)
            self.hold_period = min(max(js_timeout / 4.0, 1.0 / self.rate_hz), 0.01)
            self._tick_timer = self.create_timer(self.hold_period, self._watchdog_tick)
        else:
            self._tick_timer = self.create_timer(1.0 / self.rate_hz, self._safe_tick)
        log.info(f"policy_node: {spec.task}/{spec.action_mode}, {n} joints, obs {spec.obs_dim}, action {A}, "
                 f"{self.rate_hz:g} Hz, tick_mode {self.tick_mode} ({self.executor_kind} executor), "
                 f"joint_state_timeout {js_timeout:g} s")

    def _step_views(self) -> None:
        """Views of the /rl/step record's obs, action and meta (again after a layout change: a new buffer)."""
        step = self._step_out.values
        o, A = self.spec.obs_dim, self.spec.action_dim
        self._step_obs = step[:o]
        self._step_act = step[o: o + A]
        self._step_meta = step[o + A:]
        self._step_meta[5] = self.rate_hz
        self._step_meta[6] = self._step_meta[7] = -1.0

    def _other_threads(self) -> list[int]:
        """With ``realtime_middleware_threads``: the process's threads other than the calling one and the
        loader. In the node's own process (``main``) those are the middleware's (DDS reception, events), started
        by ``rclpy.init``, which deliver the joint states. Threads the executor thread creates later inherit its
        settings; the loader's (model loading, ONNX Runtime sessions) keep normal scheduling."""
        if not self.rt_middleware:
            return []
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            return []
        mine = {threading.get_native_id(), self._worker.native_id}
        if self._infer_thread is not None:
            mine.add(self._infer_thread.native_id)
        return [t for t in tids if t not in mine]

    def _apply(self, setting: str, what: str, fn) -> None:
        """``fn(tid)`` for this (executor) thread, then for the middleware's threads; a refusal warns, never
        raises."""
        try:
            fn(0)
        except (OSError, AttributeError, ValueError) as e:
            self.get_logger().warning(f"{setting} refused ({e}); the control thread runs without it (not permitted? "
                                      "CAP_SYS_NICE, or an rtprio limit for SCHED_FIFO)")
            return
        done = 0
        for tid in self._other_threads():
            try:
                fn(tid)
                done += 1
            except (OSError, ValueError):  # a thread that ended meanwhile, or not permitted
                pass
        extra = f" (and {done} middleware threads)" if done else ""
        self.get_logger().info(f"control thread{extra}: {what}")

    def _set_affinity(self, cpus: list[int]) -> None:
        """Pin the executor thread (and the threads it creates later), and the middleware's, to ``cpus``."""
        self._apply(f"cpu_affinity {cpus}", f"pinned to CPUs {sorted(set(cpus))}",
                    lambda tid: os.sched_setaffinity(tid, cpus))

    def _set_realtime(self, prio: int) -> None:
        """SCHED_FIFO for the executor thread (and the threads it creates later), and the middleware's."""
        self._apply(f"realtime_priority {prio}", f"scheduled SCHED_FIFO priority {prio}",
                    lambda tid: os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(prio)))

    # ================================================================= clock
    def _now_ns(self) -> int:
        if self.use_sim_time:
            return self.get_clock().now().nanoseconds
        return time.time_ns()

    # ============================================================ callbacks
    def _guard(self, fn):
        """Wrap a callback: an unexpected exception is logged and reported, never fatal to the node."""
        name = fn.__name__

        def report(e: Exception) -> None:
            self.callback_errors += 1
            self.last_error = f"{name}: {type(e).__name__}: {e}"
            self.get_logger().error(f"{name} failed: {type(e).__name__}: {e}", throttle_duration_sec=1.0)

        # explicit arities: rclpy inspects a callback's signature (a timer callback taking an
        # argument is given a TimerInfo)
        def on_message(msg):
            try:
                fn(msg)
            except Exception as e:
                report(e)

        def on_timer():
            try:
                fn()
            except Exception as e:
                report(e)

        return on_timer if fn.__code__.co_argcount == 1 else on_message

    def _reject(self, ch: InputChannel, now: float, err: str) -> None:
        ch.reject(now, err)
        self.last_error = f"{ch.name}: {err}"
        self._log_reject(f"rejected {ch.name}: {err}")

    def _on_joint_state(self, msg: JointState) -> None:
        now = time.monotonic()
        m = self.matcher
        err = m.update(msg.name, msg.position)
        carried = m.carried  # the groups the message carried: each has its own watchdog channel
        if err is not None:
            if carried == GRIPPER:  # the gripper's error: the next arm state's tick holds
                self._reject(self.ch_grip, now, err)
                return
            self._reject(self.ch_js, now, err)
            if self.event_mode:  # a bad state holds the arm at once (the last valid measurement)
                self._last_event_tick = now
                self._guarded_tick()
            return
        if carried & GRIPPER:
            self.ch_grip.accept(now)
            if not carried & ARM:  # a gripper state alone drives no tick (event mode ticks on the arm's states)
                return
        self.ch_js.accept(now)
        st = _stamp_ns(msg.header.stamp)
        self._js_stamp_ns = st if st > 0 else self._now_ns()
        if self.event_mode:  # read-update-write: this state's command, now
            self._last_event_tick = now
            if st > 0:
                self.rate.tick(now, st * 1e-9, self._now_ns() * 1e-9)
            else:
                self.rate.tick(now)
            self._guarded_tick()

    def _pose(self, msg: PoseStamped, ch: InputChannel, out: np.ndarray) -> None:
        now = time.monotonic()
        p, o = msg.pose.position, msg.pose.orientation
        err, pos, ori = self.frames.to_base(msg.header.frame_id, (p.x, p.y, p.z), (o.x, o.y, o.z, o.w))
        if err is None:
            err = validate_pose("", pos, ori, self.spec.base_link)
        if err is not None:
            self._reject(ch, now, err)
            return
        out[0], out[1], out[2] = pos
        ch.accept(now)

    def _on_object_pose(self, msg: PoseStamped) -> None:
        self._pose(msg, self.ch_obj, self._obj)

    def _on_goal_pose(self, msg: PoseStamped) -> None:
        self._pose(msg, self.ch_goal, self._goal)

    def _on_image(self, msg: Image) -> None:
        now = time.monotonic()
        err = validate_image(msg.encoding, msg.height, msg.width, msg.step, len(msg.data))
        if err is not None:
            self._reject(self.ch_img, now, err)
        else:
            self.ch_img.accept(now)

    def _camera_callback(self, im):
        ch = self.ch_cams[im.name]

        def on_camera(msg: Image, _unused=None) -> None:  # two parameters: _guard wraps it as a subscription
            now = time.monotonic()
            err = validate_image(msg.encoding, msg.height, msg.width, msg.step, len(msg.data))
            if err is None and msg.encoding != im.encoding:
                err = f"encoding {msg.encoding!r}, the spec declares {im.encoding!r}"
            if err is None and im.crop:
                top, left, h, w = im.crop
                if top + h > msg.height or left + w > msg.width:
                    err = f"crop {list(im.crop)} does not fit a {msg.width}x{msg.height} frame"
            if err is not None:
                self._reject(ch, now, err)
                return
            st = _stamp_ns(msg.header.stamp)
            self._frames[im.name] = (msg, st * 1e-9 if st > 0 else self._now_ns() * 1e-9)
            ch.accept(now)

        on_camera.__name__ = f"_on_camera_{im.name}"
        return on_camera

    def _on_instruction(self, msg: String) -> None:
        now = time.monotonic()
        i = self.spec.instruction_index(msg.data)
        if i < 0:
            self._instr_idx = -1
            self._reject(self.ch_instr, now, f"unknown instruction {msg.data[:80]!r} (the model knows: "
                         f"{', '.join(repr(x) for x in self.spec.instructions)})")
            return
        if i != self._instr_idx and self.chunks is not None:
            self.chunks.clear()  # the old instruction's chunks must not run on
        self._instr_idx = i
        self.ch_instr.accept(now)
        self.get_logger().info(f"instruction: {self.spec.instructions[i]!r}")

    def _on_intervention(self, msg: Float64MultiArray) -> None:
        now = time.monotonic()
        err = validate_action(msg.data, self.spec.action_dim)
        if err is not None:
            self._reject(self.ch_interv, now, err)
            return
        np.clip(np.frombuffer(msg.data, dtype=np.float64), -1.0, 1.0, out=self._interv)
        self.ch_interv.accept(now)

    def _on_estop(self, msg: Bool) -> None:
        engaged = bool(msg.data)
        if engaged and not self.watchdog.estop:
            self.get_logger().warning("estop engaged: holding")
        elif not engaged and self.watchdog.estop:
            self.get_logger().info("estop released")
        self.watchdog.set_estop(engaged)

    def _on_policy_update(self, msg: String) -> None:
        try:
            req = parse_announcement(msg.data)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            reason = f"invalid /rl/policy_update message: {e}"
            self.get_logger().error(reason)
            self.last_error = reason
            self.rejected_updates += 1
            self._reply({"event": "rejected", "version": None, "accepted": False, "reason": reason, "kind": "invalid"})
            return
        req["source"] = "policy_update"
        self.get_logger().info(f"model announced: version {req.get('version')!r} at {req['path']}")
        self._tasks.put(("load", req))

    # ============================================================ control tick
    # tick modes and how each counts missed ticks: the module docstring
    def _safe_tick(self, info: TimerInfo = None) -> None:
        if info is None:
            self.rate.tick(time.monotonic())
        else:
            self.rate.tick(time.monotonic(), info.expected_call_time.nanoseconds * 1e-9,
                           info.actual_call_time.nanoseconds * 1e-9)
        self._guarded_tick()

    def _watchdog_tick(self) -> None:
        """Event mode: hold the arm once joint states have stopped driving ticks for joint_state_timeout_s."""
        if time.monotonic() - self._last_event_tick >= self.js_timeout:
            self._guarded_tick()

    def _guarded_tick(self) -> None:
        try:
            self._tick()
        except Exception as e:  # a bug must not take the arm's command stream down: report, try to hold
            self.callback_errors += 1
            self.last_error = f"control tick: {type(e).__name__}: {e}"
            self.get_logger().error(f"control tick failed: {type(e).__name__}: {e}", throttle_duration_sec=1.0)
            try:
                if self.matcher.valid:
                    cmd = self.controller.safety.hold(self.matcher.q, self.matcher.gripper_width, "tick error")
                    self._arm_np[:] = cmd.arm
                    self._grip_np[0] = cmd.gripper
                    self._arm_out.publish()
                    self._grip_out.publish()
            except Exception:
                pass

    def _tick(self) -> None:
        t0 = time.perf_counter()
        now = time.monotonic()
        self.tick += 1
        m = self.matcher
        if not m.valid:  # never a valid joint state: nothing to hold, publish nothing
            return
        spec = self.spec
        policy = self._policy  # the one read of the model reference this tick
        if policy is not self._label_policy:
            self._label_policy = policy
            self._model_dim.label = "model:" + (policy.version if policy is not None else "")
            self._step_out.set_layout()  # the label's length moves the data: a new buffer (once per model)
            self._step_views()
        q = m.q
        grip = m.gripper_width
        have_obs = self.ch_obj.last_ok is not None and self.ch_goal.last_ok is not None
        if have_obs:  # = spec.build_observation(q, grip, fk_pos(q), obj, goal), in one compiled call
            ee = self.observe(q, grip, self._obj, self._goal, self._obs)
        else:
            ee = self.kin.fk_pos(q)
        reason = self.watchdog.check(now)
        intervention = False
        action = self._action
        chunk = self._chunk_info
        chunk.seq = -1
        if self.chunks is not None:
            if reason:  # a watchdog hold (estop, stale inputs): no chunk from before it runs after it
                self.chunks.clear()
            elif have_obs:  # the inference thread's input: this tick's observation and its stamp
                with self._snap_lock:
                    self._snap[:] = self._obs
                    self._snap_t = self._js_stamp_ns * 1e-9
        if not reason:
            if self.ch_interv.fresh(now, self.interv_timeout):
                action = self._interv
                intervention = True
            elif policy is None:
                reason = "no model: " + self.model_error
            elif policy.chunked:  # the current chunk at this tick's time (runtime/chunks.py); inference runs elsewhere
                if self.chunks.sample(self._now_ns() * 1e-9, action, chunk):
                    self._explore(action)
                else:
                    chunk.seq = -1
                    self.chunk_starved_ticks += 1
                    reason = self._starved_reason()
            else:
                try:
                    action[:] = policy.act(self._obs)  # float32 -> float64, then clipped in float64 (cheaper)
                    np.minimum(np.maximum(action, -1.0, out=action), 1.0, out=action)
                    self._explore(action)
                except Exception as e:  # a model that validated but fails at run time: hold, count, report
                    self.inference_errors += 1
                    reason = f"inference failed: {e}"
                    self.last_error = reason
        if not reason:
            last = self.controller.safety.last_cmd
            if last is not None and float(np.abs(q - last).max()) > self.limits.max_tracking_error:
                self.controller.reset()  # the arm moved away from our last command (reset, external motion)
            cmd = self.controller.step(action, q, grip, ee)
            if cmd.hold:
                reason = "safety: " + cmd.reason
        else:
            cmd = self.controller.safety.hold(q, grip, reason)
        self._arm_np[:] = cmd.arm
        self._grip_np[0] = cmd.gripper
        self._arm_out.publish()
        self._grip_out.publish()
        cmd_ns = self._now_ns()
        hold = bool(reason)
        if have_obs:
            if hold:
                ha = self._hold_action
                ha[-1] = min(1.0, max(-1.0, 2.0 * grip / spec.gripper_open - 1.0))
                action = ha
            self._step_obs[:] = self._obs
            self._step_act[:] = action
            meta = self._step_meta
            meta[0] = self.tick
            meta[1] = self._js_stamp_ns * 1e-9
            meta[2] = cmd_ns * 1e-9
            meta[3] = 1.0 if intervention else 0.0
            meta[4] = 1.0 if hold else 0.0
            if chunk.seq >= 0 and not hold and not intervention:  # which chunk step ran, from which frame
                meta[6], meta[7], meta[8] = chunk.seq, chunk.step, chunk.frame_stamp
            else:
                meta[6], meta[7], meta[8] = -1.0, -1.0, 0.0
            self._step_out.publish()
        self.latency.add((cmd_ns - self._js_stamp_ns) * 1e-9)
        dt = time.perf_counter() - t0
        self.compute.add(dt)
        if dt > self._period:
            self.deadline_overruns += 1
        if hold:
            self.hold_ticks += 1
            self.hold_reason = reason
        elif intervention:
            self.intervention_ticks += 1
        elif policy is not self._acted_policy:
            self._acted_policy = policy
            self._tasks.put(("first_command", (policy, self.tick, cmd_ns)))
        if hold != self._holding:
            self._holding = hold
            self._tasks.put(("transition", reason))

    def _explore(self, action: np.ndarray) -> None:
        if self.explore_std > 0.0:
            action += self._explore_rng.normal(0.0, self.explore_std, action.shape)
            np.minimum(np.maximum(action, -1.0, out=action), 1.0, out=action)

    def _starved_reason(self) -> str:
        c = self.chunks.newest()
        why = f" ({self._skip_reason})" if self._skip_reason else ""
        if c is None:
            return "no action chunk yet: waiting for the first inference" + why
        return (f"action chunk {c.seq} ran out ({self.chunks.K} steps at {self.chunks.hz:g} Hz) before the next "
                "inference" + why)

    # ================================================== inference (VLA-shaped models)
    def _infer_loop(self) -> None:
        """The inference thread: a chunk whenever the newest has run ``replan_steps`` steps, from the newest
        observation and camera frames, never on the control thread. ONNX Runtime releases the GIL while it
        computes, so the control ticks go on during a 100 ms inference."""
        try:  # relative to the process's own nice value: a niced node's inference must not outrank its ticks
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.inference_nice))
        except (OSError, AttributeError):
            pass
        _name_os_thread("vla_inference")  # visible in top -H and /proc/<pid>/task/*/comm
        if self.inference_affinity:
            try:
                os.sched_setaffinity(0, self.inference_affinity)
            except (OSError, ValueError) as e:
                self.get_logger().warning(f"inference_cpu_affinity {self.inference_affinity} refused ({e})")
        while not self._infer_stop.is_set():
            try:
                wait = self._infer_once()
            except Exception as e:  # a failing model: count, report, hold (no chunk), try again
                self.inference_errors += 1
                self._skip_reason = f"inference failed: {type(e).__name__}: {e}"
                self.last_error = self._skip_reason
                wait = 0.05
            if wait > 0.0:
                self._infer_stop.wait(wait)

    def _infer_once(self) -> float:
        """One inference if one is due; returns how long to wait before the next look (s)."""
        pol = self._policy
        if pol is None or not pol.chunked:
            return 0.02
        now = self._now_ns() * 1e-9
        # the next inference starts after replan_steps of the newest chunk, or earlier when the model's measured
        # latency (observation -> chunk ready) would otherwise let the chunk run out before the next one arrives
        lead = 1.5 * self._latency_ema * self.chunks.hz + 1.0
        due = min(float(self.replan_steps), self.chunks.K - lead) - self.chunks.steps_done(now)
        if due > 0.0:
            return min(due / self.chunks.hz, 0.02)
        with self._snap_lock:
            t_obs = self._snap_t
            obs = self._snap.copy()
        if t_obs <= 0.0 or now - t_obs > self.js_timeout:
            return self._skip("no fresh observation (the control loop is holding)")
        if self.spec.instructions and self._instr_idx < 0:
            return self._skip("no instruction")
        frame_stamp = 0.0
        for im in self.spec.images:
            got = self._frames.get(im.name)
            if got is None or now - got[1] > self.image_timeout:
                return self._skip(f"camera {im.name}: no frame within image_timeout_s")
            msg, stamp = got
            decode_into(msg, im, pol.image_input(im.name))
            frame_stamp = max(frame_stamp, stamp)
        instr = self._instr_idx
        t = time.perf_counter()
        actions = pol.act_chunk(obs, instr)
        self.infer_time.add(time.perf_counter() - t)
        if pol is not self._policy or instr != self._instr_idx:  # a new model or instruction meanwhile: not this
            return 0.0
        self.chunks.submit(actions, t_obs, frame_stamp)
        self.inferences += 1
        age = self._now_ns() * 1e-9 - t_obs
        self.infer_age.add(age)
        self._latency_ema = age if self._latency_ema == 0.0 else 0.8 * self._latency_ema + 0.2 * age
        self._skip_reason = ""
        return 0.0

    def _skip(self, why: str) -> float:
        self.inferences_skipped += 1
        self._skip_reason = why
        return 0.01

    # =================================================== loader / notifier
    def _work(self) -> None:
        try:  # be the first to yield the CPU: loading must not delay ticks
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (OSError, AttributeError):
            pass
        while True:
            kind, arg = self._tasks.get()
            try:
                if kind == "stop":
                    return
                if kind == "load":
                    self._load(arg)
                elif kind == "first_command":
                    pol, tick, cmd_ns = arg
                    self.get_logger().info(f"model {pol.version} computed its first command at tick {tick} "
                                           f"(cmd stamp {cmd_ns * 1e-9:.6f})")
                    self._reply({"event": "first_command", "version": pol.version, "accepted": True, "reason": "",
                                 "sha256": pol.sha256, "tick": tick, "cmd_stamp_s": cmd_ns * 1e-9})
                elif kind == "transition":
                    if self.chunks is not None:  # a slow model's starved ticks come and go: at most once a second
                        if arg:
                            self.get_logger().warning(f"holding: {arg}", throttle_duration_sec=1.0)
                        else:
                            self.get_logger().info("acting (hold released)", throttle_duration_sec=1.0)
                    elif arg:
                        self.get_logger().warning(f"holding: {arg}")
                    else:
                        self.get_logger().info("acting (hold released)")
            except Exception as e:  # never let the worker die
                self.get_logger().error(f"policy worker: {type(e).__name__}: {e}")

    def _probe_obs(self) -> np.ndarray:
        if self.matcher.valid and self.ch_obj.last_ok is not None and self.ch_goal.last_ok is not None:
            o = self._obs.copy()
            if np.all(np.isfinite(o)):
                return o
        return realistic_observation(self.spec, self.kin)

    def _load(self, req: dict) -> None:
        path = req["path"]
        version = req.get("version") or None
        kind, seq = "model", -1
        try:
            path = resolve_path(path)
            if req.get("source") == "policy_update":
                seq = self.update_guard.check(req, path)
            pol = load_validated(path, req.get("sha256") or None, self.spec, expected_version=version,
                                 probe_obs=self._probe_obs(), kinematics=self.kin, providers=self.providers)
        except UpdateRejected as e:
            reason, kind = e.reason, e.kind
        except ModelRejected as e:
            reason = e.reason
        except Exception as e:  # an unexpected failure is a rejection too, never a crash
            reason = f"unexpected {type(e).__name__}: {e}"
        else:
            old = self._policy
            if self.chunks is not None:
                self.chunks.clear()  # no chunk of the old model runs under the new one
            self._policy = pol  # the swap: one reference assignment, picked up by the next tick
            self.update_guard.installed(seq, pol.sha256)
            self.model_error = ""
            self.get_logger().info(
                f"model {pol.version} installed from {path} (sha256 {pol.sha256[:12]}, validated in "
                f"{pol.info.load_s * 1e3:.0f} ms)" + (f", replacing {old.version}" if old is not None else ""))
            self._reply({"event": "swapped", "version": pol.version, "accepted": True, "reason": "", "path": path,
                         "sha256": pol.sha256, "previous": old.version if old is not None else None,
                         "load_s": pol.info.load_s, "swap_stamp_s": self._now_ns() * 1e-9})
            return
        self.last_error = f"model rejected: {reason}"
        self.rejected_updates += 1
        if self._policy is None:
            self.model_error = f"{path}: {reason}"
        keep = f"; keeping {self._policy.version}" if self._policy is not None else "; no model is running"
        self.get_logger().error(f"model {version or path} rejected: {reason}{keep}")
        self._reply({"event": "rejected", "version": version, "accepted": False, "reason": reason, "kind": kind,
                     "path": path,
                     "sha256": req.get("sha256"), "running": self._policy.version if self._policy else None})

    def _reply(self, d: dict) -> None:
        self.pub_result.publish(String(data=json.dumps(d)))

    # ============================================================ diagnostics
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        lat = self.latency.summary()
        comp = self.compute.summary()
        per = self.rate.periods.summary()
        late = self.rate.lateness.summary()
        achieved = self.rate.achieved_rate(now)
        if not self.matcher.valid:  # the loop has nothing to act on or hold at yet
            reason = self.watchdog.check(now) or "waiting for joint_states"
        else:  # what the last tick did (watchdog, model and safety-filter holds alike)
            reason = self.hold_reason if self._holding else ""
        missed_window = self.rate.missed - self._missed_at_diag
        self._missed_at_diag = self.rate.missed
        pol = self._policy
        if not reason:
            level = DiagnosticStatus.OK
            message = f"acting with model {pol.version if pol else '(intervention)'} at {achieved:.0f} Hz"
            if missed_window > 0.01 * self.rate_hz * self._diag_period:
                level = DiagnosticStatus.WARN
                message += f", {missed_window} missed ticks"
        else:
            level = DiagnosticStatus.WARN if reason == "estop engaged" else DiagnosticStatus.ERROR
            message = f"hold: {reason}"

        def f(x: float, k: float = 1.0, fmt: str = "{:.3f}") -> str:
            return "nan" if not math.isfinite(x) else fmt.format(x * k)

        values = {
            "control_rate_hz": f"{self.rate_hz:g}",
            "tick_mode": self.tick_mode,
            "achieved_rate_hz": f(achieved, fmt="{:.1f}"),
            "latency_obs_to_cmd_p50_ms": f(lat.p50, 1e3), "latency_obs_to_cmd_p99_ms": f(lat.p99, 1e3),
            "latency_obs_to_cmd_max_ms": f(lat.max, 1e3),
            "tick_compute_p50_us": f(comp.p50, 1e6, "{:.1f}"), "tick_compute_p99_us": f(comp.p99, 1e6, "{:.1f}"),
            "tick_compute_max_us": f(comp.max, 1e6, "{:.1f}"),
            "period_p99_ms": f(per.p99, 1e3), "period_max_ms": f(per.max, 1e3),
            "tick_lateness_p99_ms": f(late.p99, 1e3), "tick_lateness_max_ms": f(late.max, 1e3),
            "missed_ticks": str(self.rate.missed), "missed_ticks_window": str(missed_window),
            "input_outages": str(self.rate.outages),
            "ticks": str(self.tick), "hold_ticks": str(self.hold_ticks),
            "intervention_ticks": str(self.intervention_ticks),
            "watchdog": "ok" if not reason else reason,
            "estop": str(self.watchdog.estop).lower(),
            "model_version": pol.version if pol else "",
            "model_sha256": pol.sha256 if pol else "",
            "model_path": pol.info.path if pol else "",
            "model_error": self.model_error,
            "rejected_inputs": str(self.watchdog.n_rejected),
            **{f"rejected_{c.name}": str(c.n_rejected) for c in self.watchdog.channels},
            "rejected_updates": str(self.rejected_updates),
            **{f"rejected_updates_{k}": str(n) for k, n in self.update_guard.counts.items()},
            "signatures_required": str(self.update_guard.required).lower(),
            "inference_errors": str(self.inference_errors),
            "deadline_overruns": str(self.deadline_overruns),
            **self._chunk_diagnostics(f),
            "callback_errors": str(self.callback_errors),
            "last_error": self.last_error,
        }
        publish_status(self, self.pub_diag, f"{self.get_name()}: control loop", level, message, values,
                       hardware_id=self.spec.base_link)
        self.rate.reset_window(now)
        self.latency.clear()
        self.compute.clear()

    def _chunk_diagnostics(self, f) -> dict:
        if self.chunks is None:
            return {}
        it, age = self.infer_time.summary(), self.infer_age.summary()
        self.infer_time.clear()
        self.infer_age.clear()
        c = self.chunks.newest()
        return {"chunk_len": str(self.spec.chunk_len), "chunk_hz": f"{self.chunks.hz:g}",
                "chunk_execution": self.chunk_mode, "replan_steps": str(self.replan_steps),
                "inferences": str(self.inferences), "inferences_skipped": str(self.inferences_skipped),
                "inference_skip_reason": self._skip_reason,
                "chunk_starved_ticks": str(self.chunk_starved_ticks), "chunk_seq": str(c.seq if c else -1),
                "inference_p50_ms": f(it.p50, 1e3), "inference_p99_ms": f(it.p99, 1e3),
                "obs_to_chunk_p50_ms": f(age.p50, 1e3), "obs_to_chunk_p99_ms": f(age.p99, 1e3),
                "instruction": self.spec.instructions[self._instr_idx] if self._instr_idx >= 0 else ""}

    def destroy_node(self) -> None:
        self._infer_stop.set()
        if self._infer_thread is not None:  # an inference in flight ends before the interpreter does
            self._infer_thread.join(timeout=5.0)
        self._tasks.put(("stop", None))
        super().destroy_node()


def main(args=None) -> None:
    run_node(PolicyNode, args)


if __name__ == "__main__":
    main()
