"""The watchdog core (no ROS inside): decides, every tick, whether the arm must hold.

Each input the controller depends on is an :class:`InputChannel`. A channel is
in one of four states:

* ``OK``: a valid message arrived recently enough;
* ``NEVER``: no valid message yet (a fault only for required channels);
* ``STALE``: the last valid message is older than the channel's timeout
  (required channels with a timeout > 0);
* ``ERROR``: the latest message was rejected (NaN, wrong size, missing joint,
  unsupported encoding...). The error stands until the next valid message,
  or for ``error_ttl_s`` seconds when that is > 0.

:meth:`Watchdog.check` returns ``""`` when the loop may act and otherwise the
reason to hold, estop first. It formats a string only when holding.
"""
from __future__ import annotations

OK, NEVER, STALE, ERROR = 0, 1, 2, 3
STATE_NAMES = {OK: "ok", NEVER: "never received", STALE: "stale", ERROR: "error"}


class InputChannel:
    __slots__ = ("name", "timeout_s", "required", "error_ttl_s", "last_ok", "error", "error_time",
                 "last_error", "n_ok", "n_rejected")

    def __init__(self, name: str, timeout_s: float = 0.0, required: bool = True, error_ttl_s: float = 0.0):
        self.name = name
        self.timeout_s = float(timeout_s)
        self.required = bool(required)
        self.error_ttl_s = float(error_ttl_s)
        self.last_ok: float | None = None
        self.error: str | None = None
        self.error_time = 0.0
        self.last_error = ""  # kept for diagnostics after the channel recovers
        self.n_ok = 0
        self.n_rejected = 0

    def accept(self, now: float) -> None:
        """A valid message arrived at ``now`` (monotonic seconds)."""
        self.last_ok = now
        self.error = None
        self.n_ok += 1

    def reject(self, now: float, error: str) -> None:
        """An invalid message arrived: the channel is in error until the next valid one (or the TTL)."""
        self.error = error
        self.error_time = now
        self.last_error = error
        self.n_rejected += 1

    def fresh(self, now: float, max_age_s: float) -> bool:
        return self.error is None and self.last_ok is not None and now - self.last_ok <= max_age_s

    def state(self, now: float) -> int:
        if self.error is not None and (self.error_ttl_s <= 0.0 or now - self.error_time <= self.error_ttl_s):
            return ERROR
        if self.last_ok is None:
            return NEVER if self.required else OK
        if self.required and self.timeout_s > 0.0 and now - self.last_ok > self.timeout_s:
            return STALE
        return OK

    def describe(self, now: float, state: int | None = None) -> str:
        s = self.state(now) if state is None else state
        if s == ERROR:
            return f"{self.name}: {self.error}"
        if s == NEVER:
            return f"waiting for {self.name}"
        if s == STALE:
            return f"{self.name} stale ({(now - self.last_ok) * 1e3:.0f} ms > {self.timeout_s * 1e3:.0f} ms)"
        return f"{self.name}: ok"


class Watchdog:
    def __init__(self, channels: list[InputChannel] | tuple[InputChannel, ...] = ()):
        self.channels = list(channels)
        self.by_name = {c.name: c for c in self.channels}
        if len(self.by_name) != len(self.channels):
            raise ValueError("duplicate channel names")
        self.estop = False

    def __getitem__(self, name: str) -> InputChannel:
        return self.by_name[name]

    def set_estop(self, engaged: bool) -> None:
        self.estop = bool(engaged)

    def check(self, now: float) -> str:
        """``""`` when every input is good and estop is off; otherwise why the arm must hold."""
        if self.estop:
            return "estop engaged"
        for ch in self.channels:
            s = ch.state(now)
            if s != OK:
                return ch.describe(now, s)
        return ""

    @property
    def n_rejected(self) -> int:
        return sum(c.n_rejected for c in self.channels)

    def last_errors(self) -> dict[str, str]:
        return {c.name: c.last_error for c in self.channels if c.last_error}
