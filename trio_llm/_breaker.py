"""Circuit breakers: stop sending to an endpoint that keeps failing, then probe it.

::

    closed ──(threshold failures in a row)──► open ──(cool-off passed)──► half-open
      ▲                                        ▲                            │
      └──────────(a probe succeeds)────────────┼────────(a probe fails)─────┘
                                               (cool-off doubles, up to its maximum)

Only failures that say the *endpoint* is unwell count: 5xx, 529/503 overload, timeouts,
dropped connections. A 429 is the rate limiter's business and a 400 is the request's own fault.
The engine keeps one breaker per key and one for the provider: a failing key is set aside while
the others carry on, and an overloaded provider pauses all of its keys.
"""

from __future__ import annotations

import enum
import math
from typing import final

import attrs
import trio

from ._events import BREAKER_CLOSED, BREAKER_OPENED, EventHub
from ._policy import POLICY, ErrorKind

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker", "announce"]


class BreakerState(enum.StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    """When breakers trip and how long they stay open.

    Attributes:
        failures: consecutive failures that open a breaker.
        cool_off_s: how long it stays open the first time.
        max_cool_off_s: the cool-off doubles each time a probe fails, up to this.
        probes: requests let through at once while half-open.
    """

    failures: int = 5
    cool_off_s: float = 5.0
    max_cool_off_s: float = 120.0
    probes: int = 1


@final
class CircuitBreaker:
    """One endpoint's breaker, on trio's clock.

    Call ``delay()`` to learn how long to hold off (0: go), ``started()`` when a request
    actually goes out, then ``succeeded()`` or ``failed()`` (``finished()`` for outcomes that
    say nothing about the endpoint's health).
    """

    __slots__ = ("_cool_off", "_failures", "_in_probe", "_open_until", "name", "policy", "state")

    def __init__(self, policy: BreakerPolicy, name: str = "") -> None:
        self.policy = policy
        self.name = name
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._open_until = -math.inf
        self._cool_off = policy.cool_off_s
        self._in_probe = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name} {self.state.value}>"

    def delay(self) -> float:
        """Seconds to hold off before sending (0: a request may go now)."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        now = trio.current_time()
        if self.state is BreakerState.OPEN:
            if now < self._open_until:
                return self._open_until - now
            self.state = BreakerState.HALF_OPEN
        # Half-open: a few probes at a time; the others wait until a probe's answer closes or
        # reopens the breaker (whoever records it wakes them).
        return 0.0 if self._in_probe < self.policy.probes else math.inf

    def started(self) -> None:
        """A request goes out now (counted as a probe while half-open)."""
        if self.state is BreakerState.HALF_OPEN:
            self._in_probe += 1

    def _probe_done(self) -> None:
        if self._in_probe:
            self._in_probe -= 1

    def succeeded(self) -> BreakerState | None:
        """The endpoint answered well; returns the new state if it changed."""
        self._probe_done()
        self._failures = 0
        if self.state is not BreakerState.CLOSED:
            self.state = BreakerState.CLOSED
            self._cool_off = self.policy.cool_off_s
            return self.state
        return None

    def failed(self, kind: ErrorKind) -> BreakerState | None:
        """A request failed with ``kind``; returns the new state if it changed."""
        self._probe_done()
        if not POLICY[kind].breaker:
            return None
        now = trio.current_time()
        if self.state is BreakerState.HALF_OPEN:
            self._cool_off = min(self._cool_off * 2, self.policy.max_cool_off_s)
            return self._open(now)
        self._failures += 1
        if self.state is BreakerState.CLOSED and self._failures >= self.policy.failures:
            return self._open(now)
        return None

    def record(self, succeeded: bool, failure: ErrorKind | None) -> BreakerState | None:
        """How an attempt ended (a success, a failure of ``failure``'s kind, or neither);
        returns the new state if it changed."""
        if succeeded:
            return self.succeeded()
        if failure is not None:
            return self.failed(failure)
        self.finished()
        return None

    def finished(self) -> None:
        """A request ended with an outcome that says nothing about the endpoint (a 429, a 400,
        a cancellation): it no longer counts as a probe in flight."""
        self._probe_done()

    def _open(self, now: float) -> BreakerState:
        self.state = BreakerState.OPEN
        self._open_until = now + self._cool_off
        self._failures = 0
        return self.state

    @property
    def open_for(self) -> float:
        """Seconds it stays open from now (0 unless open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._open_until - trio.current_time())


def announce(
    events: EventHub,
    breaker: CircuitBreaker,
    changed: BreakerState | None,
    *,
    scope: str,
    key_id: str | None,
    failure: ErrorKind | None,
) -> None:
    """Emit ``breaker.opened`` / ``breaker.closed`` for a state change."""
    if changed is BreakerState.OPEN:
        events.emit(
            BREAKER_OPENED,
            scope=scope,
            key_id=key_id,
            open_s=breaker.open_for,
            reason=None if failure is None else failure.value,
        )
    elif changed is BreakerState.CLOSED:
        events.emit(BREAKER_CLOSED, scope=scope, key_id=key_id)
