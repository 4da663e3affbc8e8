"""``--params FILE [FILE ...]``: the arm the CLI's tools (eval, ship, demos, train) work on.

The tools read the arm from the same ``/**`` section every node reads (:func:`vla_rl_ros.arm.read_arm`):
spec, URDF, scene, home. Several files merge in order, later keys winning, as rcl merges
``--params-file``s (``--params config/sim.yaml config/xarm6.yaml`` is the xArm, as
``vla-rl-ros sim --arm config/xarm6.yaml``). Without ``--params``: the Franka Panda.
"""
from __future__ import annotations

PARAMS_HELP = ("params file(s) declaring the arm (their /** section: spec, urdf_path, scene, home; later files win), "
               "e.g. config/xarm6.yaml (default: the Franka Panda)")


def add_params_argument(p) -> None:
    p.add_argument("--params", nargs="+", default=None, metavar="FILE", help=PARAMS_HELP)


def arm_from_args(args, task: str | None = None):
    """The :class:`~vla_rl_ros.arm.Arm` of ``args.params`` (none: the Panda), with ``task`` when given."""
    from ..arm import read_arm

    return read_arm(getattr(args, "params", None), task)
