"""Labelled camera frames of pick_place, rendered in the twin at seeded states (for the success classifier).

Each frame is the twin's own camera (:meth:`TwinCore.render`, the scene file's
camera) looking at a scene posed directly (no physics is stepped): the cube, the
goal marker, and the arm put at an inverse-kinematics posture. The label is the
task's own success test (:class:`~vla_rl_ros.rewards.finishing.PickPlaceTask`):
the cube's centre within ``tolerance`` of the goal.

Kinds of scene (one drawn per frame, from a seeded generator):

* positives: ``placed`` (the cube resting on the table at a goal on the table,
  the hand away), ``held`` (the cube in the closed gripper at a goal in the air);
  the cube within ``pos_max`` x ``tolerance`` of the goal;
* negatives: ``start`` (cube and goal as the task draws them, the hand anywhere),
  ``held_away`` (the cube held somewhere else), ``near_miss`` (resting or held
  ``neg_min`` to 3 x ``tolerance`` from the goal), ``hand_at_goal`` (the empty
  hand at the goal, the cube elsewhere on the table).

Every frame shows the goal marker, as a person labelling it needs to: a pose is
drawn again while the line of sight from the camera to the goal's centre is
blocked by the arm (and, for a negative, by the cube: a cube in front of the
goal, 7.5 cm or more nearer the camera, looks placed from this camera). A
positive's goal sits inside the cube, which is what placed looks like.

The default margins (``pos_max`` 0.5, ``neg_min`` 1.5: positives within 2.5 cm,
negatives beyond 7.5 cm at the 5 cm tolerance) make the classes those a person
would label without hesitation; ``boundary=True`` draws the cube uniformly 0 to
2 x ``tolerance`` from the goal instead, the hard cases in between.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as pb

from .core import TwinCore

POSITIVE_KINDS = ("placed", "held")
NEGATIVE_KINDS = ("start", "held_away", "near_miss", "hand_at_goal")
DOWN = (1.0, 0.0, 0.0, 0.0)  # the hand pointing down (x, y, z, w)


@dataclass
class LabelledFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    label: bool  # the task's success test on the posed state
    kind: str
    distance: float  # cube centre to goal (m)


class SuccessFrameGenerator:
    """Render labelled pick_place frames: ``gen.frame(rng)`` or ``gen.batch(n, seed)``.

    Args:
        twin: a :class:`TwinCore` (default: the Panda in the default scene); its scene is posed, never stepped.
        width, height: the rendered frame (the camera a run's ``twin_node`` would publish at that size).
        tolerance: the success distance (m), as the recorder's ``success_tolerance``.
        positive_fraction: share of positives in :meth:`batch`.
    """

    def __init__(self, twin: TwinCore | None = None, width: int = 160, height: int = 160, tolerance: float = 0.05,
                 positive_fraction: float = 0.5, pos_max: float = 0.5, neg_min: float = 1.5):
        self.twin = twin or TwinCore()
        self.width, self.height = int(width), int(height)
        self.tol = float(tolerance)
        self.positive_fraction = float(positive_fraction)
        self.pos_max, self.neg_min = float(pos_max), float(neg_min)
        t = self.twin
        self._movable = [i for i in range(pb.getNumJoints(t.robot, physicsClientId=t.cid))
                         if pb.getJointInfo(t.robot, i, physicsClientId=t.cid)[2] != pb.JOINT_FIXED]
        self.half = t.object_half

    # ------------------------------------------------------------ posing
    def _set_gripper(self, width: float) -> None:
        t = self.twin
        q = t.spec.gripper_joint_sum(float(np.clip(width, 0.0, t.spec.gripper_open))) / max(1, len(t.finger_idx))
        for j in t.finger_idx:
            pb.resetJointState(t.robot, j, q, 0.0, physicsClientId=t.cid)
        for j, k, mult, off in t.gripper_mimics:
            pb.resetJointState(t.robot, j, mult * q + off, 0.0, physicsClientId=t.cid)

    def _home(self) -> None:
        t = self.twin
        for j, q in zip(t.arm_idx, t.home):
            pb.resetJointState(t.robot, j, q, 0.0, physicsClientId=t.cid)
        self._set_gripper(t.spec.gripper_open)

    def _hand_to(self, pos, yaw: float, width: float) -> None:
        """The hand's grasp point to ``pos``, pointing down, turned ``yaw`` about the vertical (iterated IK)."""
        t = self.twin
        c = t.cid
        for j, q in zip(t.arm_idx, t.home):
            pb.resetJointState(t.robot, j, q, 0.0, physicsClientId=c)
        orn = pb.getQuaternionFromEuler([np.pi, 0.0, yaw])
        for _ in range(20):
            sol = pb.calculateInverseKinematics(t.robot, t.ee_idx, list(pos), orn, maxNumIterations=50,
                                                physicsClientId=c)
            for j, q in zip(self._movable, sol):
                if j in t.arm_idx:
                    pb.resetJointState(t.robot, j, q, 0.0, physicsClientId=c)
            ee = pb.getLinkState(t.robot, t.ee_idx, computeForwardKinematics=True, physicsClientId=c)[4]
            if np.linalg.norm(np.asarray(ee) - pos) < 0.003:
                break
        self._set_gripper(width)

    def _place(self, cube, goal, cube_yaw: float) -> None:
        t = self.twin
        pb.resetBasePositionAndOrientation(t.cube, list(cube), pb.getQuaternionFromEuler([0, 0, cube_yaw]),
                                           physicsClientId=t.cid)
        pb.resetBasePositionAndOrientation(t.goal_body, list(goal), [0, 0, 0, 1], physicsClientId=t.cid)

    def _random_hand(self, rng) -> None:
        r = self.twin.region
        self._hand_to(rng.uniform(r.reach_low, r.reach_high), rng.uniform(-np.pi / 2, np.pi / 2),
                      rng.uniform(0.0, self.twin.spec.gripper_open))

    def _on_table_xy(self, rng):
        r = self.twin.region
        return np.array([*rng.uniform(r.object_low, r.object_high), self.half])

    def _offset(self, rng, lo: float, hi: float, planar: bool) -> np.ndarray:
        d = rng.uniform(lo, hi)
        if planar:
            a = rng.uniform(0, 2 * np.pi)
            return d * np.array([np.cos(a), np.sin(a), 0.0])
        v = rng.normal(size=3)
        return d * v / np.linalg.norm(v)

    def goal_in_sight(self, positive: bool) -> bool:
        """Whether the camera's line of sight to the goal's centre is clear (a positive's may end on the cube)."""
        t = self.twin
        goal = pb.getBasePositionAndOrientation(t.goal_body, physicsClientId=t.cid)[0]
        hit = pb.rayTest(list(t.scene.camera_eye), list(goal), physicsClientId=t.cid)[0][0]
        return hit == -1 or (positive and hit == t.cube)

    def pose(self, rng: np.random.Generator, positive: bool | None = None, kind: str | None = None,
             boundary: bool = False, attempts: int = 50) -> str:
        """Pose the scene for one frame, the goal in sight (:meth:`goal_in_sight`); returns the kind."""
        if kind is None:
            if positive is None:
                positive = rng.random() < self.positive_fraction
            kind = str(rng.choice(POSITIVE_KINDS if positive else NEGATIVE_KINDS))
        for _ in range(attempts):
            self._pose(rng, kind, boundary)
            if self.goal_in_sight(kind in POSITIVE_KINDS and (not boundary or self.distance() < self.tol)):
                return kind
        raise RuntimeError(f"no {kind} pose with the goal in sight in {attempts} attempts")

    def _pose(self, rng: np.random.Generator, kind: str, boundary: bool) -> None:
        r = self.twin.region
        tol = self.tol
        yaw = rng.uniform(-np.pi / 4, np.pi / 4)
        grip_yaw = yaw + rng.normal(0, 0.05)
        closed = 2 * self.half  # the fingers on the cube's faces
        lo, hi = (0.0, 2.0 * tol) if boundary else (0.0, self.pos_max * tol)
        if kind == "placed":
            goal = np.array([*rng.uniform(r.goal_low[:2], r.goal_high[:2]), self.half + rng.uniform(0, 0.01)])
            cube = goal + self._offset(rng, lo, hi, planar=True)
            cube[2] = self.half
            self._place(cube, goal, yaw)
            if rng.random() < 0.5:  # let go, hand lifted away
                self._hand_to(cube + [rng.uniform(-0.1, 0.0), rng.uniform(-0.1, 0.1), rng.uniform(0.08, 0.25)],
                              grip_yaw, self.twin.spec.gripper_open)
            else:
                self._random_hand(rng)
        elif kind == "held":
            goal = rng.uniform(r.goal_low, r.goal_high)
            goal[2] = max(goal[2], self.half + 0.03)
            cube = goal + self._offset(rng, lo, hi, planar=False)
            cube[2] = max(cube[2], self.half + 0.01)
            self._place(cube, goal, yaw)
            self._hand_to(cube, grip_yaw, closed)
        elif kind == "start":
            cube, goal = self.twin.sample_task(rng, "pick_place")
            self._place(cube, goal, yaw)
            if rng.random() < 0.3:  # the arm at home, as an episode begins
                self._home()
            else:
                self._random_hand(rng)
        elif kind == "held_away":
            goal = rng.uniform(r.goal_low, r.goal_high)
            for _ in range(100):
                cube = rng.uniform(r.goal_low, r.goal_high)
                cube[2] = max(cube[2], self.half + 0.01)
                if np.linalg.norm(cube - goal) >= self.neg_min * tol:
                    break
            self._place(cube, goal, yaw)
            self._hand_to(cube, grip_yaw, closed)
        elif kind == "near_miss":
            held = rng.random() < 0.5
            goal = rng.uniform(r.goal_low, r.goal_high)
            if not held:
                goal[2] = self.half + rng.uniform(0, 0.01)
            cube = goal + self._offset(rng, self.neg_min * tol, 3.0 * tol, planar=not held)
            cube[2] = max(cube[2], self.half + 0.01) if held else self.half
            self._place(cube, goal, yaw)
            if held:
                self._hand_to(cube, grip_yaw, closed)
            else:
                self._random_hand(rng)
        elif kind == "hand_at_goal":
            goal = rng.uniform(r.goal_low, r.goal_high)
            goal[2] = max(goal[2], self.half + 0.01)
            for _ in range(100):
                cube = self._on_table_xy(rng)
                if np.linalg.norm(cube - goal) >= max(self.neg_min * tol, 0.1):
                    break
            self._place(cube, goal, yaw)
            self._hand_to(goal, grip_yaw, rng.uniform(0.0, self.twin.spec.gripper_open))
        else:
            raise ValueError(f"unknown kind {kind!r}; known: {POSITIVE_KINDS + NEGATIVE_KINDS}")

    # ------------------------------------------------------------ frames
    def distance(self) -> float:
        t = self.twin
        cube = pb.getBasePositionAndOrientation(t.cube, physicsClientId=t.cid)[0]
        goal = pb.getBasePositionAndOrientation(t.goal_body, physicsClientId=t.cid)[0]
        return float(np.linalg.norm(np.asarray(cube) - np.asarray(goal)))

    def frame(self, rng: np.random.Generator, positive: bool | None = None, kind: str | None = None,
              boundary: bool = False) -> LabelledFrame:
        kind = self.pose(rng, positive, kind, boundary)
        d = self.distance()
        return LabelledFrame(self.twin.render(self.width, self.height), d < self.tol, kind, d)

    def batch(self, n: int, seed: int, n_positive: int | None = None,
              boundary: bool = False) -> list[LabelledFrame]:
        """``n`` frames from ``seed`` (``n_positive`` of them positive: default ``positive_fraction`` of ``n``;
        ``boundary``: the cube 0 to 2 x tolerance from the goal, labelled by the test)."""
        rng = np.random.default_rng(seed)
        n_pos = int(round(n * self.positive_fraction)) if n_positive is None else int(n_positive)
        order = rng.permutation([True] * n_pos + [False] * (n - n_pos))
        if boundary:
            return [self.frame(rng, kind=str(rng.choice(["placed", "held"])), boundary=True) for _ in range(n)]
        return [self.frame(rng, positive=bool(p)) for p in order]

    def close(self) -> None:
        self.twin.close()
