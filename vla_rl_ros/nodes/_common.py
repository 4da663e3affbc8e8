"""Parameter declaration helpers shared by the nodes (descriptors, ranges, the spec parameters)."""
from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..arm import Arm
from ..spec import ImageSpec, Spec


def declare(node, name: str, default: Any, description: str, *, lo: float | None = None, hi: float | None = None,
            read_only: bool = True, additional: str = "", choices: tuple[str, ...] | None = None) -> Any:
    """Declare one parameter with a descriptor (and a range when ``lo``/``hi`` are given); return its value.

    Types are strict (a YAML ``500`` for a float parameter is refused): write ``500.0``. ``choices``: the
    values allowed (named in the descriptor); any other raises ValueError.
    """
    if choices is not None:
        additional = "one of: " + ", ".join(choices)
    d = ParameterDescriptor(description=description, read_only=read_only, additional_constraints=additional)
    if lo is not None and hi is not None:
        if isinstance(default, bool):
            pass
        elif isinstance(default, int):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        elif isinstance(default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    value = node.declare_parameter(name, default, d).value
    if choices is not None and value not in choices:
        raise ValueError(f"{name} {value!r}: expected one of {', '.join(choices)}")
    return value


def declare_spec_params(node, which: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Declare the spec parameters that :func:`~vla_rl_ros.spec.spec_from_params` reads (defaults from :class:`Spec`)."""
    s = Spec()
    table = {
        "task": (s.task, "task: reach | pick_place"),
        "action_mode": (s.action_mode, "action layout: ee_delta | joint_delta"),
        "joints": (list(s.arm_joints), "arm joints, in command/observation order (matched by name in /joint_states)"),
        "gripper_joints": (list(s.gripper_joints), "gripper joints; their positions sum to the gripper width"),
        "base_link": (s.base_link, "base link of the kinematic chain; frame of the task poses"),
        "ee_link": (s.ee_link, "end-effector (tool centre point) link"),
        "spec_control_hz": (float(s.control_hz), "decision rate the model was trained at (part of the spec)"),
        "max_ee_step": (float(s.max_ee_step), "m: hand displacement of a full ee_delta action"),
        "max_joint_step": (float(s.max_joint_step), "rad: joint displacement of a full joint_delta action"),
        "gripper_open": (float(s.gripper_open), "m: gripper width of a fully open action"),
        "workspace_low": ([float(v) for v in s.workspace_low], "m: lower corner of the hand's workspace box (base frame)"),
        "workspace_high": ([float(v) for v in s.workspace_high], "m: upper corner of the hand's workspace box (base frame)"),
    }
    ranges = {"spec_control_hz": (0.1, 10000.0), "max_ee_step": (1e-4, 0.5), "max_joint_step": (1e-4, 1.0),
              "gripper_open": (0.0, 0.5)}
    out = {}
    for name, (default, desc) in table.items():
        if which is not None and name not in which:
            continue
        lo, hi = ranges.get(name, (None, None))
        out[name] = declare(node, name, default, desc, lo=lo, hi=hi)
    if which is None or "gripper_joint_range" in which:  # a float array whose default is empty: typed, unset
        from rclpy.parameter import Parameter

        out["gripper_joint_range"] = node.declare_parameter(
            "gripper_joint_range", Parameter.Type.DOUBLE_ARRAY,
            ParameterDescriptor(description=GRIPPER_RANGE_DESCRIPTION, read_only=True)).value
    if which is None:
        out.update(declare_vla_params(node))
    return out


def declare_vla_params(node) -> dict[str, Any]:
    """The VLA-shaped model's spec parameters (:func:`vla_rl_ros.spec.vla_from_params`): camera inputs, the
    instruction vocabulary, the action chunk. Each camera's parameters are declared under ``image.<name>.``
    once ``images`` names it."""
    from rclpy.parameter import Parameter

    def arr(name: str, kind, desc: str):
        return node.declare_parameter(name, kind, ParameterDescriptor(description=desc, read_only=True)).value

    d = ImageSpec()
    out: dict[str, Any] = {
        "images": arr("images", Parameter.Type.STRING_ARRAY, "the model's camera inputs by name, in input order "
                      "(unset = none); each has image.<name>.topic, .height, .width, .encoding, .crop"),
        "instructions": arr("instructions", Parameter.Type.STRING_ARRAY, "the instruction vocabulary the model "
                            "declares (unset = none); /task/instruction selects one at run time"),
        "chunk_len": declare(node, "chunk_len", 1, "actions per inference (K; 1 = one action per tick)", lo=1,
                             hi=1000),
        "chunk_hz": declare(node, "chunk_hz", 0.0, "rate of a chunk's steps (Hz; 0 = spec_control_hz)", lo=0.0,
                            hi=10000.0),
    }
    for n in out["images"] or []:
        p = f"image.{n}."
        out[p + "topic"] = declare(node, p + "topic", d.topic, f"camera {n}: sensor_msgs/Image topic")
        out[p + "height"] = declare(node, p + "height", d.height, f"camera {n}: model input height (px)", lo=1, hi=4096)
        out[p + "width"] = declare(node, p + "width", d.width, f"camera {n}: model input width (px)", lo=1, hi=4096)
        out[p + "encoding"] = declare(node, p + "encoding", d.encoding, f"camera {n}: rgb8 | bgr8, as published")
        out[p + "crop"] = arr(p + "crop", Parameter.Type.INTEGER_ARRAY, f"camera {n}: [top, left, height, width] "
                              "cut from the frame before the resize (unset = the whole frame)")
    return out


GRIPPER_RANGE_DESCRIPTION = ("[open, closed]: the sum of the gripper joints' positions at the fully open width "
                             "(gripper_open) and closed (an angular gripper: the xArm's drive joint, [0.0, 0.85] rad); "
                             "unset = the sum is the width in metres (the Panda's fingers)")
URDF_DESCRIPTION = ("arm URDF: kinematics (FK/IK) and the twin's arm ('' = the Franka Panda from pybullet_data); a "
                    "relative path resolves against the share dir, then the repo root, then the cwd")
SCENE_DESCRIPTION = "twin scene (table, object, goal marker, task regions) of the twin and of the learner's gate"
HOME_DESCRIPTION = ("rad: the arm's home posture, one position per arm joint (the twin's reset posture and the IK's "
                    "rest posture, whose hand orientation ee_delta actions keep); unset = the Panda's ready posture "
                    "for the Panda, zeros for other arms")


def declare_arm(node, *, scene: bool = False) -> Arm:
    """Declare the arm's parameters and build its :class:`~vla_rl_ros.arm.Arm`: every spec parameter
    (:func:`declare_spec_params`), ``urdf_path``, ``home`` and, with ``scene``, the twin ``scene``.

    The one way a node learns the arm: policy, recorder, twin, teacher and learner all call it, so one params
    file (its ``/**`` section) declares the robot once for every node (the CLI's tools read the same section
    with :func:`vla_rl_ros.arm.read_arm`)."""
    from rclpy.parameter import Parameter

    from ..runtime.paths import resolve_path
    from ..spec import spec_from_params

    spec = spec_from_params(declare_spec_params(node))
    urdf = declare(node, "urdf_path", "", URDF_DESCRIPTION)
    home = node.declare_parameter("home", Parameter.Type.DOUBLE_ARRAY,
                                  ParameterDescriptor(description=HOME_DESCRIPTION, read_only=True)).value
    sc = declare(node, "scene", "sim/panda_table.yaml", SCENE_DESCRIPTION) if scene else None
    return Arm(spec, resolve_path(urdf) if urdf else None, sc or None, tuple(home) if home else None)


def make_executor(kind: str):
    """``events``: ``rclpy.experimental.EventsExecutor`` (C++ timers; ~30% less callback overhead, far less
    period jitter at 1 kHz on this machine); ``single_threaded``: rclpy's ``SingleThreadedExecutor``."""
    if kind == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor()
    if kind == "single_threaded":
        from rclpy.executors import SingleThreadedExecutor

        return SingleThreadedExecutor()
    raise ValueError(f"executor must be 'events' or 'single_threaded', got {kind!r}")


def spin(node, kind: str) -> None:
    """Spin ``node`` until shutdown (SIGINT/SIGTERM).

    ``spin_once`` in a loop rather than ``spin()``: rclpy 9.1's EventsExecutor.spin()
    does not return after SIGINT (it keeps a core busy).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException

    ex = make_executor(kind)
    ex.add_node(node)
    try:
        while rclpy.ok():
            try:
                ex.spin_once(timeout_sec=0.1)
            except Exception:
                # SIGINT/SIGTERM shut the context down between rclpy.ok() and the wait: rclpy then fails to
                # build its wait set (RCLError "context is not valid") instead of raising
                # ExternalShutdownException. That is a clean stop; anything else is not.
                if rclpy.ok():
                    raise
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            ex.remove_node(node)
        except Exception:
            pass
        ex.shutdown()


def run_node(factory, args=None) -> None:
    """``main()`` body shared by the nodes: init, build, spin with the node's ``executor`` parameter, clean up."""
    import gc

    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    node = None
    try:
        node = factory()
        # Everything allocated so far (rclpy, numba, onnxruntime, the node) is long-lived: move it out of the
        # collector's reach, so that a full collection in the control loop scans only what the loop made.
        gc.collect()
        gc.freeze()
        spin(node, node.executor_kind)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


class RateLimitedLog:
    """Error logging for per-message input checks: each distinct message at most once per ``period_s``,
    at most ``max_per_period`` messages per period, with a count of what was suppressed. A bad publisher at
    1 kHz cannot flood the log, and two different errors in a row are both reported."""

    def __init__(self, logger, period_s: float = 1.0, max_per_period: int = 5):
        import time

        self._clock = time.monotonic
        self._logger = logger
        self.period_s = period_s
        self.max_per_period = max_per_period
        self._window = -1e9
        self._seen: set[str] = set()
        self.suppressed = 0

    def __call__(self, msg: str) -> None:
        now = self._clock()
        if now - self._window >= self.period_s:
            self._window = now
            self._seen.clear()
        if msg in self._seen or len(self._seen) >= self.max_per_period:
            self.suppressed += 1
            return
        self._seen.add(msg)
        if self.suppressed:
            msg = f"{msg} ({self.suppressed} similar messages suppressed)"
            self.suppressed = 0
        self._logger.error(msg)


def publish_status(node, publisher, name: str, level: int, message: str, values: dict, hardware_id: str = "") -> None:
    """Publish one ``DiagnosticStatus`` (values stringified) as a stamped ``DiagnosticArray``."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    st = DiagnosticStatus()
    st.name = name
    st.hardware_id = hardware_id
    st.level = level
    st.message = message
    st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    arr = DiagnosticArray()
    arr.header.stamp = node.get_clock().now().to_msg()
    arr.status = [st]
    publisher.publish(arr)


EXTRA_JOINT_STATES_DESCRIPTION = (
    "more sensor_msgs/JointState topics, merged by name with topics.joint_states (a split driver: e.g. "
    "[/franka_gripper/joint_states] while the arm is on /joint_states); [''] = none")
STATIC_TRANSFORMS_DESCRIPTION = (
    "poses of other frames, so that task poses may arrive in them: each 'FRAME x y z qx qy qz qw' (FRAME's pose "
    "in the base frame, as static_transform_publisher takes it) or 'FRAME PARENT x y z qx qy qz qw'; [''] = none")
TF_STATIC_DESCRIPTION = "tf2_msgs/TFMessage in (reliable, transient-local): more static frames; '' = not read"


def make_matcher(arm: Arm):
    """The joint-state matcher of ``arm``: its joints, its gripper model, and its URDF's ``<mimic>`` relations
    (a driver may publish one finger joint of a parallel gripper)."""
    from ..arm import joint_mimics
    from ..runtime.inputs import JointStateMatcher

    spec = arm.spec
    return JointStateMatcher(spec.arm_joints, spec.gripper_joints, spec.gripper_width_of,
                             mimics=joint_mimics(arm.urdf) if spec.gripper_joints else None)


def declare_joint_state_topics(node, main: str) -> list[str]:
    """``main`` (the node's ``topics.joint_states``) and ``topics.extra_joint_states``, without repeats."""
    extra = declare(node, "topics.extra_joint_states", [""], EXTRA_JOINT_STATES_DESCRIPTION)
    return list(dict.fromkeys(t for t in [main, *extra] if t))


def declare_frames(node, base_frame: str, tf_static_topic: str, on_error):
    """Declare ``static_transforms`` and build the node's :class:`~vla_rl_ros.runtime.frames.FrameTable`; read
    ``tf_static_topic`` into it where tf2_msgs is installed. ``on_error(text)`` reports a refused ``/tf_static``
    transform. A malformed ``static_transforms`` entry raises ``ValueError`` (the node does not start)."""
    from ..runtime.frames import add_tf_message, frame_table

    table = frame_table(base_frame, declare(node, "static_transforms", [""], STATIC_TRANSFORMS_DESCRIPTION))
    if not tf_static_topic:
        return table
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        node.get_logger().info(f"tf2_msgs is not installed: {tf_static_topic} is not read (static_transforms only)")
        return table
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    def on_tf_static(msg) -> None:
        for err in add_tf_message(table, msg):
            on_error(f"{tf_static_topic}: {err}")

    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(TFMessage, tf_static_topic, on_tf_static, qos)
    return table
