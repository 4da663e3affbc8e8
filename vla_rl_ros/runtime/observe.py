"""The control tick's observation in one compiled call (no ROS inside): the hand's FK and the spec's layout.

:class:`Observer` gives exactly what ``kin.fk_pos(q)`` followed by
:meth:`Spec.build_observation <vla_rl_ros.spec.Spec.build_observation>` give (the
same float64 arithmetic, cast to float32 on store; ``test/test_kinematics_control.py``
checks the identity), in one call instead of a dozen small numpy operations:
``policy_node`` builds one observation per tick, up to 1 kHz.
"""
from __future__ import annotations

import numpy as np

from ..kinematics import Kinematics, _chain_jit, njit
from ..spec import Spec


@njit(cache=True)
def _observe_jit(q, grip, obj, goal, out, seg_R, seg_t, seg_axis, prismatic, tail_R, tail_t):
    _, _, _, p = _chain_jit(q, seg_R, seg_t, seg_axis, prismatic, tail_R, tail_t)
    n = q.shape[0]
    for i in range(n):
        out[i] = q[i]
    out[n] = grip
    for k in range(3):
        out[n + 1 + k] = p[k]
        out[n + 4 + k] = obj[k]
        out[n + 7 + k] = goal[k]
        out[n + 10 + k] = obj[k] - p[k]
        out[n + 13 + k] = goal[k] - obj[k]
        out[n + 16 + k] = goal[k] - p[k]
    return p


class Observer:
    """``observer(q, grip, obj, goal, out) -> ee``: fills ``out`` (float32, ``spec.obs_dim``) with the
    observation and returns the hand position (FK of ``q``)."""

    LAYOUT = ("joint_pos", "gripper_width", "ee_pos", "object_pos", "goal_pos", "ee_to_object", "object_to_goal",
              "ee_to_goal")

    def __init__(self, spec: Spec, kin: Kinematics):
        names = tuple(name for name, _ in spec.obs_segments)
        if names != self.LAYOUT or spec.obs_dim != spec.n_arm + 19:  # the kernel writes this layout
            raise ValueError(f"Observer writes the layout {self.LAYOUT}; the spec has {names}")
        self._chain = kin.chain_arrays
        # compile (or load from numba's cache) now, not in the first tick
        self(np.zeros(spec.n_arm), 0.0, np.zeros(3), np.zeros(3), np.zeros(spec.obs_dim, dtype=np.float32))

    def __call__(self, q: np.ndarray, grip: float, obj: np.ndarray, goal: np.ndarray, out: np.ndarray) -> np.ndarray:
        return _observe_jit(q, float(grip), obj, goal, out, *self._chain)
