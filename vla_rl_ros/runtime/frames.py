"""Task poses from other frames: static transforms into the base frame (no ROS inside).

Perception publishes in a world or camera frame. A :class:`FrameTable` knows
static transforms, each a child frame's pose in its parent frame (as tf2's
``/tf_static`` and ``static_transform_publisher`` give them), and maps a pose
in any frame it can connect to the base frame into the base frame, position
and orientation. The transforms come from the params file
(``static_transforms``: :func:`parse_static_transform`) and, where the robot
runs tf2, from ``/tf_static``. Nothing is looked up in time: the transforms are
static, so the control loop pays one cached composition per pose.

A transform is ``(t, q)``: translation ``(x, y, z)`` and unit quaternion
``(x, y, z, w)``; it maps a point ``p`` of the child frame to ``q p q* + t`` in
the parent frame.
"""
from __future__ import annotations

import math
from typing import Sequence

Vec = tuple[float, float, float]
Quat = tuple[float, float, float, float]
Transform = tuple[Vec, Quat]
IDENTITY: Transform = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
MAX_FRAMES = 1000
"""A table holds at most this many frames (a flood of ``/tf_static`` frames cannot grow it without bound)."""


def quat_mul(a: Sequence[float], b: Sequence[float]) -> Quat:
    """Hamilton product ``a b`` of ``(x, y, z, w)`` quaternions: rotation ``b`` first, then ``a``."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz)


def quat_rotate(q: Sequence[float], v: Sequence[float]) -> Vec:
    """``v`` rotated by the unit quaternion ``q``."""
    x, y, z, w = q
    vx, vy, vz = v
    # v + 2 w (u x v) + 2 u x (u x v), u = (x, y, z)
    cx, cy, cz = y * vz - z * vy, z * vx - x * vz, x * vy - y * vx
    return (vx + 2.0 * (w * cx + y * cz - z * cy),
            vy + 2.0 * (w * cy + z * cx - x * cz),
            vz + 2.0 * (w * cz + x * cy - y * cx))


def compose(a: Transform, b: Transform) -> Transform:
    """``a`` after ``b``: frame C in A from B in A (``a``) and C in B (``b``)."""
    ta, qa = a
    tb, qb = b
    r = quat_rotate(qa, tb)
    return (ta[0] + r[0], ta[1] + r[1], ta[2] + r[2]), quat_mul(qa, qb)


def invert(a: Transform) -> Transform:
    t, (x, y, z, w) = a
    qi = (-x, -y, -z, w)
    r = quat_rotate(qi, t)
    return (-r[0], -r[1], -r[2]), qi


def make_transform(t: Sequence[float], q: Sequence[float]) -> Transform:
    """A transform from a translation and a quaternion (normalised); ``ValueError`` for a non-finite value
    or a zero quaternion."""
    t, q = tuple(float(v) for v in t), tuple(float(v) for v in q)
    if len(t) != 3 or len(q) != 4:
        raise ValueError(f"a transform is 3 translation and 4 quaternion values, got {len(t)} and {len(q)}")
    if not all(math.isfinite(v) for v in t + q):
        raise ValueError(f"non-finite transform {list(t + q)}")
    n = math.sqrt(sum(v * v for v in q))
    if not n > 1e-9:
        raise ValueError(f"zero quaternion {list(q)}")
    return t, (q[0] / n, q[1] / n, q[2] / n, q[3] / n)


def parse_static_transform(text: str, base_frame: str) -> tuple[str, str, Transform]:
    """One ``static_transforms`` entry: ``"FRAME x y z qx qy qz qw"`` (FRAME's pose in the base frame) or
    ``"FRAME PARENT x y z qx qy qz qw"`` (its pose in PARENT, another configured or ``/tf_static`` frame).
    Returns ``(frame, parent, transform)``; ``ValueError`` says what is wrong."""
    parts = text.split()
    if len(parts) not in (8, 9):
        raise ValueError(f"static transform {text!r}: expected 'FRAME [PARENT] x y z qx qy qz qw'")
    frame, parent = parts[0], parts[1] if len(parts) == 9 else base_frame
    try:
        values = [float(v) for v in parts[-7:]]
    except ValueError as e:
        raise ValueError(f"static transform {text!r}: {e}") from None
    if frame == parent:
        raise ValueError(f"static transform {text!r}: a frame cannot be its own parent")
    try:
        return frame, parent, make_transform(values[:3], values[3:])
    except ValueError as e:
        raise ValueError(f"static transform {text!r}: {e}") from None


class FrameTable:
    """Static transforms (a tree: each frame has one parent) and poses mapped into ``base_frame``.

    :meth:`add` takes a child frame's pose in its parent; ``pinned`` ones (the params file's) are not replaced
    by later unpinned ones (``/tf_static``). :meth:`lookup` gives the base-from-frame transform, cached until the
    table changes."""

    def __init__(self, base_frame: str):
        self.base_frame = base_frame
        self._parent: dict[str, tuple[str, Transform, bool]] = {}
        self._cache: dict[str, Transform | None] = {}

    def __len__(self) -> int:
        return len(self._parent)

    def frames(self) -> list[str]:
        return sorted(self._parent)

    def add(self, parent: str, child: str, transform: Transform, pinned: bool = False) -> str | None:
        """Record ``child``'s pose in ``parent``; returns why it was not (or ``None``)."""
        if not child or not parent or child == parent:
            return f"transform {parent!r} -> {child!r}: empty or identical frame names"
        old = self._parent.get(child)
        if old is not None and old[2] and not pinned:
            return None if old[0] == parent else f"{child!r} is fixed by static_transforms; ignoring its parent {parent!r}"
        if old is None and len(self._parent) >= MAX_FRAMES:
            return f"more than {MAX_FRAMES} frames; ignoring {child!r}"
        self._parent[child] = (parent, transform, pinned)
        self._cache.clear()
        return None

    def _to_root(self, frame: str) -> tuple[str, Transform]:
        """``(root, root-from-frame)``, following parents to the top of the tree."""
        t, seen = IDENTITY, {frame}
        while frame in self._parent:
            parent, tf, _ = self._parent[frame]
            t = compose(tf, t)
            frame = parent
            if frame in seen:  # a loop (A in B, B in A): no root
                return "", t
            seen.add(frame)
        return frame, t

    def lookup(self, frame: str) -> Transform | None:
        """The pose of ``frame`` in the base frame (``''`` is the base frame); ``None`` when unconnected."""
        if frame in ("", self.base_frame):
            return IDENTITY
        if frame in self._cache:
            return self._cache[frame]
        root_f, t_f = self._to_root(frame)
        root_b, t_b = self._to_root(self.base_frame)
        out = compose(invert(t_b), t_f) if root_f and root_f == root_b else None
        if len(self._cache) < MAX_FRAMES:
            self._cache[frame] = out
        return out

    def to_base(self, frame_id: str, position: Sequence[float], orientation: Sequence[float]
                ) -> tuple[str | None, Sequence[float], Sequence[float]]:
        """``(error, position, orientation)``: the pose in the base frame, or why it cannot be (an unknown
        frame). The values themselves are not checked here (:func:`~vla_rl_ros.runtime.inputs.validate_pose`)."""
        t = self.lookup(frame_id)
        if t is None:
            known = ", ".join(repr(f) for f in self.frames()[:10]) or "none"
            return (f"frame_id {frame_id[:80]!r} is not the base frame {self.base_frame!r} and no static transform "
                    f"connects it (static_transforms, /tf_static; known frames: {known})"), position, orientation
        if t is IDENTITY:
            return None, position, orientation
        (tx, ty, tz), q = t
        r = quat_rotate(q, position)
        return None, (r[0] + tx, r[1] + ty, r[2] + tz), quat_mul(q, orientation)


def add_tf_message(table: FrameTable, msg) -> list[str]:
    """Add the transforms of a ``tf2_msgs/TFMessage`` (``/tf_static``; any object of that shape) to ``table``;
    returns why each refused one was."""
    errors = []
    for tr in msg.transforms:
        t, r = tr.transform.translation, tr.transform.rotation
        try:
            err = table.add(tr.header.frame_id, tr.child_frame_id, make_transform((t.x, t.y, t.z), (r.x, r.y, r.z, r.w)))
        except ValueError as e:
            err = str(e)
        if err:
            errors.append(err)
    return errors


def frame_table(base_frame: str, entries: Sequence[str]) -> FrameTable:
    """A table from ``static_transforms`` entries (``''`` ones skipped); ``ValueError`` on a malformed one."""
    table = FrameTable(base_frame)
    for e in entries:
        if not e.strip():
            continue
        frame, parent, t = parse_static_transform(e, base_frame)
        err = table.add(parent, frame, t, pinned=True)
        if err:
            raise ValueError(f"static transform {e!r}: {err}")
    return table
