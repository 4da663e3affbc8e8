"""``vla-rl-ros sim`` / ``vla-rl-ros robot``: the graphs of the launch files, on a machine without ``ros2 launch``.

Starts the graph of ``launch/sim.launch.py`` (twin, policy, recorder, learner;
one process per node, same executables, same ``config/sim.yaml``; with ``--arm
FILE`` that arm's params file after it, as the launch file's ``arm:=``), then prints
a line per episode, per promotion and per monitor result, and a summary line
once a minute (:func:`summary_line`), until Ctrl-C (or ``--duration``), and
stops every node cleanly. Logs of each node go to ``<run>/logs/``; the progress
plot (:func:`vla_rl_ros.learner.plot.plot_progress`) to ``<run>/success.png``;
TensorBoard to ``<run>/tb``.

The arm's twin differs from the gate's by a reality gap (``--gap``; :mod:`vla_rl_ros.twin.gap`). At each
promotion a ``[gate vs live]`` line gives the replaced model's gate prediction beside its live success, the
summary line the current model's, and the plot both (:mod:`vla_rl_ros.learner.gate_vs_live`;
``<run>/models/gate_vs_live.json``, ``vla-rl-ros data gap RUN``).

A node that dies is restarted (:mod:`vla_rl_ros.supervision`: ``--max-restarts``,
``--restart-backoff``, ``--restart-backoff-max``), and says so: a line when it dies,
one when it is back, and the summary line's ``restarts``. A node that dies once more
than ``--max-restarts`` allows stops the stack.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass

from ..graph import DEFAULT_MODEL, default_run_dir, large_frames_profile, node_parameters  # noqa: F401  (DEFAULT_MODEL: re-exported)
from ..supervision import RestartPolicy, Supervisor

SUMMARY_EVERY_S = 60.0
ARM_HELP = ("a params file declaring another arm (its /** section: spec, urdf_path, scene, home), passed to every "
            "node after the graph's params file, e.g. config/xarm6.yaml (default: the graph file's arm, the Panda)")


def summary_line(elapsed_s: float, history: list[dict], last_monitor: dict | None = None,
                 model_version: str | None = None, updates_per_s: float | str | None = None,
                 promotions: int = 0, window: int = 20, restarts: str = "",
                 gate_vs_live: list[dict] | None = None) -> str:
    """The once-a-minute line of ``vla-rl-ros sim`` (pure).

    ``history``: the episodes so far (dicts with ``success``, ``assisted``, ``n_intervention_steps``,
    ``length``); ``last_monitor``: the latest monitor record (``version``, ``success_rate``, ``success_ci95``,
    ``episodes``, or ``error``); ``model_version``: what the arm runs; ``updates_per_s``: the learner's
    gradient updates per second (``None``: no learner heard from); ``restarts``: the nodes restarted so far
    (:meth:`vla_rl_ros.supervision.Supervisor.status`), shown when there are any; ``gate_vs_live``: the learner's
    latest table (:func:`vla_rl_ros.learner.gate_vs_live.gate_vs_live`), whose row of the arm's model (else the
    newest) is shown as ``gate/live``."""
    una = [bool(e.get("success")) for e in history if not e.get("assisted")][-window:]
    live = f"{100 * sum(una) / len(una):.0f}% (last {len(una)} unassisted)" if una else "- (no unassisted episode yet)"
    if not last_monitor:
        mon = "-"
    elif last_monitor.get("success_rate") is None:
        mon = f"error ({last_monitor.get('version', '?')})"
    else:
        lo, hi = last_monitor.get("success_ci95") or (last_monitor["success_rate"],) * 2
        mon = (f"{100 * last_monitor['success_rate']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}] "
               f"of {last_monitor.get('episodes', '?')} ep ({last_monitor.get('version', '?')})")
    recent = history[-window:]
    if recent:
        n_ast = sum(bool(e.get("assisted")) for e in recent)
        ticks = sum(int(e.get("length") or 0) for e in recent)
        n_int = sum(int(e.get("n_intervention_steps") or 0) for e in recent)
        inter = (f"{100 * n_ast / len(recent):.0f}% of episodes, "
                 f"{100 * n_int / ticks if ticks else 0.0:.0f}% of ticks (last {len(recent)})")
    else:
        inter = "-"
    try:
        ups = f"{float(updates_per_s):.0f} updates/s" if updates_per_s not in (None, "") else "-"
    except (TypeError, ValueError):
        ups = "-"
    gvl = ""
    if gate_vs_live:
        row = next((r for r in gate_vs_live if r.get("version") == model_version), gate_vs_live[-1])
        pct = ["-" if v is None else f"{100 * v:.0f}%" for v in (row.get("gate_rate"), row.get("live_rate"))]
        gvl = f"  gate/live {pct[0]}/{pct[1]} ({row.get('live_episodes', 0)} ep, {row.get('version')})"
    return (f"[sim {elapsed_s / 60.0:5.1f} min] episodes {len(history)}  live success {live}  monitor {mon}  "
            f"arm model {model_version or '-'}{gvl}  interventions {inter}  learner {ups}  promotions {promotions}"
            + (f"  restarts {restarts}" if restarts else ""))


def register(sub) -> None:
    p = sub.add_parser("sim", help="run the sim stack (twin + policy + recorder + learner) and watch it learn")
    p.add_argument("--task", choices=["reach", "pick_place"], default="pick_place")
    p.add_argument("--run", default=None, help="run folder (default runs/<task>-sim)")
    p.add_argument("--model", default=None, help="starting ONNX model (default: the shipped BC model for the task)")
    p.add_argument("--params", default=None, help="params file (default config/sim.yaml)")
    p.add_argument("--arm", default=None, metavar="FILE", help=ARM_HELP)
    p.add_argument("--demos", type=int, default=None,
                   help="expert demos imported into a new run's store (default: for pick_place, exactly the demos the "
                        "starting model was cloned from, per its lineage; 0 for reach)")
    p.add_argument("--teacher", type=float, default=None, metavar="FRACTION",
                   help="pick_place: fraction of episodes the scripted teacher watches and corrects over "
                        "/rl/intervention (default: the params file's, 0.5); 0 = no teacher, the policy learns from "
                        "its own episodes only")
    p.add_argument("--gap", type=float, default=None, metavar="K",
                   help="the reality gap between the arm's twin and the gate's, scaled: 0 = identical twins, 1 = the "
                        "params file's small default gap (friction, mass, size, delay, noise), 2 = twice it "
                        "(default: 1)")
    p.add_argument("--perception", action="store_true",
                   help="the policy runs on the object pose perception_node reads from the twin camera's ArUco "
                        "marker (camera on at 640x480), not on the twin's ground truth (kept on /twin/object_pose)")
    p.add_argument("--no-learner", action="store_true", help="twin + policy + recorder only")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: keep the environment's)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM:=VALUE",
                   help="override one parameter, e.g. --set policy_node.control_rate_hz:=100")
    _supervision_args(p)
    p.set_defaults(func=run, graph="sim")

    r = sub.add_parser("robot", help="run the robot graph (policy + recorder + learner) against a real arm, "
                                     "on a machine without ros2 launch")
    r.add_argument("--run", required=True, help="run folder for the store, models, logs")
    r.add_argument("--params", default=None, help="params file (default config/robot.yaml)")
    r.add_argument("--arm", default=None, metavar="FILE", help=ARM_HELP)
    r.add_argument("--model", default=None, help="starting ONNX model (default: the params file's model_path)")
    r.add_argument("--perception", action="store_true",
                   help="also start perception_node (camera + ArUco marker -> /task/object_pose; the params file's "
                        "perception_node section: topics, marker, extrinsic)")
    r.add_argument("--no-learner", action="store_true", help="policy + recorder only (learner elsewhere)")
    r.add_argument("--duration", type=float, default=0.0)
    r.add_argument("--domain-id", type=int, default=None)
    r.add_argument("--set", action="append", default=[], metavar="NODE.PARAM:=VALUE")
    _supervision_args(r)
    r.set_defaults(func=run, graph="robot", task=None, demos=0)


def _supervision_args(p) -> None:
    d = RestartPolicy()
    p.add_argument("--max-restarts", type=int, default=d.max_restarts, metavar="N",
                   help=f"restarts of a node that dies before the stack stops (default {d.max_restarts}; a node up "
                        f"{d.stable_s:.0f} s since its last restart starts over; 0 = stop at the first death)")
    p.add_argument("--restart-backoff", type=float, default=d.backoff_s, metavar="S",
                   help=f"seconds before a dead node's first restart, doubling for each next one (default {d.backoff_s})")
    p.add_argument("--restart-backoff-max", type=float, default=d.backoff_max_s, metavar="S",
                   help=f"most seconds between restarts (default {d.backoff_max_s})")


def restart_policy(args) -> RestartPolicy:
    """The :class:`~vla_rl_ros.supervision.RestartPolicy` of the command line (``ValueError`` if invalid)."""
    return RestartPolicy(max_restarts=args.max_restarts, backoff_s=args.restart_backoff,
                         backoff_max_s=max(args.restart_backoff_max, args.restart_backoff))


def _overrides(args) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in args.set:
        if "." not in item or ":=" not in item:
            raise SystemExit(f"--set expects NODE.PARAM:=VALUE, got {item!r}")
        node, rest = item.split(".", 1)
        out.setdefault(node, []).append(rest)
    return out


@dataclass
class Plan:
    """What ``vla-rl-ros sim`` / ``robot`` will start (computed without side effects; see :func:`plan`)."""

    params: str  # the params file (absolute)
    arm: str | None  # the arm's params file, passed after ``params`` (absolute; None: the params file's arm)
    run_dir: str
    model: str | None  # the starting model (None: the params file's)
    commands: dict[str, list[str]]  # node -> its command line, in start order


def plan(args) -> Plan:
    """The params file, run folder, starting model and each node's command line for ``args``: the nodes and
    their parameters from :func:`vla_rl_ros.graph.node_parameters`, the function the launch files call."""
    from ..graph import GRAPHS, config_path
    from ..runtime.paths import resolve_path

    graph = GRAPHS[args.graph]
    params = os.path.abspath(args.params or config_path(graph.params_file))
    arm = os.path.abspath(args.arm) if getattr(args, "arm", None) else None
    if args.graph == "sim":
        run_dir = os.path.abspath(args.run or default_run_dir(args.task))
        model = os.path.abspath(args.model) if args.model else resolve_path(DEFAULT_MODEL[args.task])
    else:
        run_dir = os.path.abspath(args.run)
        model = os.path.abspath(args.model) if args.model else None
    extra = _overrides(args)
    nodes = node_parameters(args.graph, task=args.task, run_dir=run_dir, model=model,
                            teacher=getattr(args, "teacher", None), learner=not args.no_learner,
                            gap=getattr(args, "gap", None), perception=getattr(args, "perception", False))
    files = [params] + ([arm] if arm else [])
    return Plan(params, arm, run_dir, model, {name: node_command(name, files, p, extra.get(name, []))
                                              for name, p in nodes.items()})


def run(args) -> int:
    teacher = getattr(args, "teacher", None)
    if teacher is not None and not 0.0 <= teacher <= 1.0:
        print(f"error: --teacher is the fraction of episodes watched, in [0, 1]; got {teacher}", file=sys.stderr)
        return 2
    gap = getattr(args, "gap", None)
    if gap is not None and not 0.0 <= gap <= 10.0:
        print(f"error: --gap is the reality gap's scale, in [0, 10]; got {gap}", file=sys.stderr)
        return 2
    try:
        policy = restart_policy(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pl = plan(args)
    params, run_dir, model = pl.params, pl.run_dir, pl.model
    for f in (params, pl.arm):
        if f and not os.path.isfile(f):
            print(f"error: params file not found: {f}", file=sys.stderr)
            return 2
    ship = f"vla-rl-ros ship --task {args.task}" + (f" --params {os.path.relpath(pl.arm)}" if pl.arm else "")
    if args.graph == "sim":
        if not os.path.isfile(model):
            print(f"error: starting model not found: {model} (make it with `{ship}`)", file=sys.stderr)
            return 2
        err = _model_fits_arm(model, _arm(pl, args.task))
        if err:
            print(f"error: the starting model {model} does not fit the arm: {err} (make one with `{ship}`, then "
                  f"pass it with --model)", file=sys.stderr)
            return 2
        _prepare_run(run_dir, args, model, pl)
        if getattr(args, "perception", False):
            try:
                _calibrate_camera(pl, args, run_dir)
            except (RuntimeError, ValueError) as e:
                print(f"error: calibrating the twin camera: {e}", file=sys.stderr)
                return 2
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    dds_profile = large_frames_profile(env) if args.graph == "sim" else None
    if dds_profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = dds_profile
    if args.domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(args.domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    logs = os.path.join(run_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    t_start = time.time()  # the run's time zero (plot, monitor records of this session)
    print(f"[{args.graph}] run {run_dir}  task {args.task or '(params file)'}  "
          f"start model {os.path.basename(model) if model else '(params file)'}  params {params}"
          + (f"  arm {pl.arm}" if pl.arm else "")
          + ("" if args.graph != "sim" else f"  reality gap x{args.gap:g}" if getattr(args, "gap", None) is not None
             else "  reality gap: the params file's (--gap 0: none)")
          + ("  object pose: perception_node (camera + ArUco)" if getattr(args, "perception", False) else ""))
    if dds_profile:
        print(f"[sim] Fast DDS profile {dds_profile}: camera frames in one piece through shared memory (a "
              "FASTDDS_DEFAULT_PROFILES_FILE of your own is used instead)")

    def spawn(name: str) -> subprocess.Popen:
        with open(os.path.join(logs, f"{name}.log"), "ab") as log:  # appended to: a restart's log follows
            return subprocess.Popen(pl.commands[name], stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)

    sup = Supervisor(spawn, pl.commands, policy)
    for name, p in sup.start().items():
        print(f"[sim] started {name} (pid {p.pid}), log {os.path.join(logs, name + '.log')}")
    rc = 0
    try:
        rc = _monitor(args, run_dir, sup, env, t_start)
    finally:
        _stop(sup.procs)
    return rc


def node_command(name: str, params_file: str | list[str], node_params: dict, extra: list[str] = ()) -> list[str]:
    """The command line of one node process: the params file(s) (the graph's, then an arm's: later files win),
    then ``node_params`` (``-p k:=v``), then the user's ``--set`` overrides."""
    cmd = [sys.executable, "-m", f"vla_rl_ros.nodes.{name}", "--ros-args", "-r", f"__node:={name}"]
    for f in [params_file] if isinstance(params_file, str) else params_file:
        cmd += ["--params-file", f]
    for k, v in node_params.items():
        cmd += ["-p", f"{k}:={v}"]
    for kv in extra:
        cmd += ["-p", kv]
    return cmd


def _arm(pl: "Plan | None", task: str | None):
    """The arm the nodes are told about: the params file's ``/**`` section, then the ``--arm`` file's."""
    from ..arm import read_arm

    return read_arm([pl.params] + ([pl.arm] if pl.arm else []) if pl else None, task, node="recorder_node")


def _params_section(pl: "Plan", args, node: str) -> dict:
    """``node``'s parameters as its process will read them: its sections of the params file(s), then the
    ``--set`` overrides (rcl's order; the ``-p`` overrides of :func:`plan` are not among them)."""
    import yaml

    vals: dict = {}
    for f in [pl.params] + ([pl.arm] if pl.arm else []):
        with open(f) as fh:
            doc = yaml.safe_load(fh) or {}
        vals.update((doc.get(node) or {}).get("ros__parameters") or {})
    for item in _overrides(args).get(node, []):
        k, v = item.split(":=", 1)
        vals[k] = yaml.safe_load(v)
    return vals


def _calibrate_camera(pl: "Plan", args, run_dir: str) -> None:
    """``sim --perception`` where the reality gap moves the camera away from the pose the params file assumes
    (``twin_node``'s ``gap_camera_*``) and perception_node would take that nominal pose (``extrinsic_from_scene``):
    calibrate the moved camera by hand-eye in the arm's twin first, as a user calibrates a real cell
    (``vla-rl-ros calibrate``), and give perception_node the solved extrinsic. The answer is kept in
    ``<run>/camera_extrinsic.yaml`` with its error against the camera's real pose."""
    from pathlib import Path

    from ..algos.export import write_bytes_atomic
    from ..perception.calibrate import calibrate_twin_camera, extrinsic_yaml
    from ..perception.aruco import extrinsic_to_xyzquat
    from ..twin.gap import RealityGap

    if not _params_section(pl, args, "perception_node").get("extrinsic_from_scene", False):
        return  # the params file gives the extrinsic (camera_xyz / camera_quat)
    twin = _params_section(pl, args, "twin_node")
    scale = float(args.gap) if getattr(args, "gap", None) is not None else float(twin.get("gap_scale", 1.0))
    gap = RealityGap(camera_shift_m=tuple(twin.get("gap_camera_shift_m", (0.0, 0.0, 0.0))),
                     camera_pan_rad=float(twin.get("gap_camera_pan_rad", 0.0))).scaled(scale)
    if not (any(gap.camera_shift_m) or gap.camera_pan_rad):
        return  # the camera is where the scene says: the nominal pose is exact
    t0 = time.monotonic()
    cal = calibrate_twin_camera(_arm(pl, args.task), gap)
    (dp, dr), (np_, nr) = cal.error, cal.nominal_error
    note = (f"vla-rl-ros sim --perception: hand-eye calibration in the arm's twin ({cal.samples} postures, "
            f"reprojection {cal.reprojection_px:.2f} px RMS): {1000 * dp:.1f} mm, {dr:.2f} deg from the camera's "
            f"real pose; the scene's nominal pose is {1000 * np_:.1f} mm, {nr:.2f} deg from it")
    path = os.path.join(run_dir, "camera_extrinsic.yaml")
    write_bytes_atomic(Path(path), extrinsic_yaml(cal.extrinsic, note).encode())
    xyz, quat = extrinsic_to_xyzquat(cal.extrinsic)
    pl.commands["perception_node"] += ["-p", "extrinsic_from_scene:=false",
                                       "-p", f"camera_xyz:=[{', '.join(f'{v:.6f}' for v in xyz)}]",
                                       "-p", f"camera_quat:=[{', '.join(f'{v:.7f}' for v in quat)}]"]
    print(f"[sim] camera calibrated in {time.monotonic() - t0:.0f} s: {1000 * dp:.1f} mm, {dr:.2f} deg from its real "
          f"pose (the nominal pose: {1000 * np_:.1f} mm, {nr:.2f} deg); {path}")


def _model_fits_arm(model: str, arm) -> str:
    """'' when ``model`` carries ``arm``'s spec (what policy_node will check), else what differs."""
    from ..runtime.onnx_policy import ModelRejected, load_validated

    try:
        load_validated(model, None, arm.spec)
    except ModelRejected as e:
        return str(e)
    return ""


def _prepare_run(run_dir: str, args, model: str, pl: "Plan | None" = None) -> None:
    """Create the run with the arm's spec (the recorder's, from the params files) and, for a new pick_place run,
    import the scripted expert's demos (flagged demo), in the arm's twin."""
    from ..buffer import connect, create_run, list_segments

    root, name = os.path.split(run_dir)
    arm = _arm(pl, args.task)
    run = create_run(root, name, arm.spec, robot_id="sim", exist_ok=True)
    _ensure_sim_keys(run_dir)
    n_demos, demo_seed = args.demos, 0
    if n_demos is None:
        n_demos, demo_seed = _model_demos(model) if args.task == "pick_place" else (0, 0)
    if n_demos <= 0:
        return
    have = 0
    for segment in list_segments(run.buffer_path):  # (a long run's store may be in segments)
        con = connect(segment, readonly=True)
        try:
            have += con.execute("SELECT COUNT(*) FROM episodes WHERE is_demo = 1").fetchone()[0]
        finally:
            con.close()
    if have > 0:
        return
    from .demos import collect_and_import

    print(f"[sim] importing {n_demos} scripted-expert demos (seeds {demo_seed}..{demo_seed + n_demos - 1}) "
          f"into {run.buffer_path}")
    collect_and_import(run, args.task, n_demos, seed=demo_seed, progress=True, arm=arm)


def _ensure_sim_keys(run_dir: str) -> None:
    """The run's signing key pair (:func:`vla_rl_ros.graph.sim_keys`), made on first use: the learner signs its
    promotions and policy_node runs only what this key signed, as on a robot, with no step for the user."""
    from ..graph import sim_keys
    from ..signing import ensure_keypair

    key, pub = sim_keys(run_dir)
    kid = ensure_keypair(key, pub)
    print(f"[sim] promotions signed with the run's key {kid} ({key}); policy_node trusts {pub}")


def _model_demos(model: str) -> tuple[int, int]:
    """(number, first seed) of the expert demos the starting model was cloned from (its lineage's recipe), so
    that the learner starts from exactly the data the model saw and any gain comes from experience."""
    from ..algos.export import read_model_metadata

    try:
        recipe = read_model_metadata(model)[1].get("recipe") or {}
        return int(recipe.get("demos", 10)), int(recipe.get("seed", 0))
    except Exception:  # a model without a recipe (not one of ours): the shipped recipe's figures
        return 10, 0


def _monitor(args, run_dir: str, sup: Supervisor, env, t_start: float | None = None) -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from std_msgs.msg import String

    from ..learner.monitor import read_monitor
    from ..learner.plot import plot_progress

    t_start = time.time() if t_start is None else t_start
    os.environ.update({k: v for k, v in env.items() if k.startswith("ROS_")})
    rclpy.init(args=[])
    node = Node("vla_rl_ros_sim_monitor")
    recent: deque[bool] = deque(maxlen=20)  # unassisted episodes only: the policy's own success
    history: list[dict] = []
    promotions: list[dict] = []
    env_steps = [0]
    policy_diag: dict[str, str] = {}
    learner_diag: dict[str, str] = {}
    last_monitor: dict = {}
    gate_live: list[dict] = []  # the learner's latest gate-vs-live table

    def on_episode(msg: String) -> None:
        try:
            ep = json.loads(msg.data)
        except json.JSONDecodeError:
            return
        ep["assisted"] = int(ep.get("n_intervention_steps") or 0) > 0
        if not ep["assisted"]:
            recent.append(bool(ep.get("success")))
        env_steps[0] += int(ep.get("length", 0))
        ep["env_steps"] = env_steps[0]
        ep["t"] = time.time()
        history.append(ep)
        models = ",".join(ep.get("model_versions") or []) or "-"
        rate = f"{100 * sum(recent) / len(recent):5.1f}%" if recent else "   - "
        tag = f"assisted ({ep['n_intervention_steps']} steps)" if ep["assisted"] else "unassisted"
        print(f"[episode {len(history):4d}] {'SUCCESS' if ep.get('success') else 'fail   '} {ep.get('end_reason', ''):8s} "
              f"len {ep.get('length', 0):4d}  return {ep.get('return', 0.0):8.2f}  {tag:22s} "
              f"success(last {len(recent)} unassisted) {rate}  model {models}", flush=True)
        if len(history) % 10 == 0:
            _plot()

    def on_learner_event(msg: String) -> None:
        try:
            ev = json.loads(msg.data)
        except json.JSONDecodeError:
            return
        kind = ev.get("kind")
        if kind == "monitor":
            rec = ev.get("data") or {}
            last_monitor.clear()
            last_monitor.update(rec)
            if rec.get("success_rate") is None:
                print(f"[monitor] {rec.get('version')}: could not be evaluated: {rec.get('error')}", flush=True)
            else:
                lo, hi = rec.get("success_ci95") or (0.0, 1.0)
                print(f"[monitor] {rec.get('version')}: {100 * rec['success_rate']:.0f}% "
                      f"[{100 * lo:.0f}-{100 * hi:.0f}] of the {rec.get('episodes')} fixed seeded twin episodes "
                      f"(seeds {rec.get('seed')}..{int(rec.get('seed') or 0) + int(rec.get('episodes') or 0) - 1}; "
                      f"{rec.get('reason', '')}{', cached' if rec.get('cached') else ''})", flush=True)
            _plot()
            return
        if kind == "error":
            print(f"[learner] error: {ev.get('reason', '')}", flush=True)
            return
        if kind == "gate_vs_live":
            from ..learner.gate_vs_live import row_line

            data = ev.get("data") or {}
            gate_live[:] = data.get("rows") or []
            row = next((r for r in gate_live if r.get("version") == data.get("replaced")), None)
            if row is not None:
                print(f"[gate vs live] replaced {row_line(row)}", flush=True)
            return
        if kind not in ("candidate", "promoted"):
            return
        ev["env_steps"] = env_steps[0]
        ev["t"] = time.time()
        if ev.get("promoted"):
            promotions.append(ev)
        print(f"[learner] {'PROMOTED' if ev.get('promoted') else 'rejected'} {ev.get('version')}: "
              f"{ev.get('reason', '')}", flush=True)

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if "policy" in st.name or "control loop" in st.name:
                policy_diag.clear()
                policy_diag.update({kv.key: kv.value for kv in st.values})
                policy_diag["_message"] = st.message
            elif st.name.endswith("learner"):
                learner_diag.clear()
                learner_diag.update({kv.key: kv.value for kv in st.values})

    def _plot() -> None:
        try:
            # this session's monitor records (a resumed run's file also holds earlier sessions')
            mon = [r for r in read_monitor(os.path.join(run_dir, "models"))
                   if float(r.get("queued") or 0.0) >= t_start - 1.0]
            plot_progress(history, promotions, os.path.join(run_dir, "success.png"),
                          title=f"{args.task or args.graph}: success rate", monitor=mon, t0=t_start,
                          gate_vs_live=gate_live)
        except Exception as e:  # plotting must never stop the stack
            print(f"[sim] plot failed: {e}", flush=True)

    node.create_subscription(String, "/rl/episode", on_episode, 100)
    node.create_subscription(String, "/rl/learner/events", on_learner_event, 100)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    t0 = time.monotonic()
    last_status = t0
    rc = 0
    stop = {"flag": False}

    def handler(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        while not stop["flag"]:
            rclpy.spin_once(node, timeout_sec=0.2)
            now = time.monotonic()
            for ev in sup.poll():
                log = "" if ev.kind == "restarted" else f"; see {run_dir}/logs/{ev.node}.log"
                print(f"[sim] {ev.line()}{log}", flush=True)
                if ev.kind == "gave_up":
                    rc = 1
                    stop["flag"] = True
            if now - last_status >= SUMMARY_EVERY_S:
                last_status = now
                model = policy_diag.get("model_version") or (
                    ",".join(history[-1].get("model_versions") or []) if history else None)
                print(summary_line(time.time() - t_start, history, last_monitor or None, model,
                                   learner_diag.get("updates_per_s"), len(promotions), restarts=sup.status(),
                                   gate_vs_live=gate_live), flush=True)
            if args.duration and now - t0 >= args.duration:
                break
    finally:
        _plot()
        node.destroy_node()
        rclpy.shutdown()
    restarts = sup.status()
    print(f"[sim] stopping; {len(history)} episodes, {sum(bool(e.get('success')) for e in history)} successes, "
          f"{len(promotions)} promotions{', restarts ' + restarts if restarts else ''}. "
          f"Plot: {run_dir}/success.png", flush=True)
    return rc


def _stop(procs) -> None:
    for p in procs.values():
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 20.0
    for name, p in procs.items():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"[sim] {name} did not stop in time; killing", flush=True)
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
