"""The mock's per-key rate limits: two leaky buckets and OpenAI's rate-limit headers.

Each limited key has a *requests* bucket (``rpm``) and a *tokens* bucket (``tpm``). A bucket
refills continuously at ``limit / 60`` per second up to a capacity of ``burst_s`` seconds of that
rate. A request is admitted when the bucket holds at least its cost, or, for a request that costs
more than the whole capacity, when the bucket is full; the level may then go negative, a debt
the refill pays off before anything else is admitted. Without that rule a 5,000-token request on
a 60,000 TPM key (capacity 1,000 at ``burst_s=1``) could never run.

The bucket never sleeps: it answers "admitted" or "retry in N seconds", and the server turns the
latter into a 429 with ``retry-after`` / ``retry-after-ms``.
"""

from __future__ import annotations

import math
from typing import Literal, final

__all__ = ["Admission", "KeyLimits", "LeakyBucket", "format_reset"]


def format_reset(seconds: float) -> str:
    """Format a duration the way OpenAI's ``x-ratelimit-reset-*`` headers do (Go durations).

    The value is rounded up to whole milliseconds.

    Examples:
        >>> [format_reset(s) for s in (0.12, 1, 1.5, 360, 3723)]
        ['120ms', '1s', '1.5s', '6m0s', '1h2m3s']
    """
    # round() first so float noise (1.1 * 1000 == 1100.0000000000002) doesn't add a millisecond.
    total_ms = max(0, math.ceil(round(seconds * 1000, 6)))
    if total_ms == 0:
        return "0s"
    if total_ms < 1000:
        return f"{total_ms}ms"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole_s, ms = divmod(rest, 1000)
    secs = f"{whole_s}.{ms:03d}".rstrip("0") if ms else str(whole_s)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


_EPSILON = 1e-6


@final
class LeakyBucket:
    """A bucket of *limit per minute* that refills continuously and may go into debt.

    Args:
        limit_per_minute: the limit as the provider states it (RPM or TPM).
        burst_s: capacity in seconds of refill: ``capacity = limit / 60 * burst_s``.
        now: the current time on the server's clock; the bucket starts full.
    """

    __slots__ = ("_level", "_updated", "capacity", "limit", "rate")

    def __init__(self, limit_per_minute: int, burst_s: float, now: float) -> None:
        self.limit = limit_per_minute
        self.rate = limit_per_minute / 60.0
        self.capacity = self.rate * burst_s
        self._level = self.capacity
        self._updated = now

    def level(self, now: float) -> float:
        """Return the level at *now* after the refill since the last update."""
        if now > self._updated:
            self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
            self._updated = now
        return self._level

    def wait_for(self, cost: float, now: float) -> float:
        """Return how long until *cost* is admissible: 0.0 if it is now."""
        needed = min(cost, self.capacity)
        shortfall = needed - self.level(now)
        # Refilling in float steps can leave a full bucket a hair (1e-13) below its capacity;
        # a real server counts whole tokens, so such a hair is not a shortfall.
        return 0.0 if shortfall <= _EPSILON else shortfall / self.rate

    def charge(self, cost: float, now: float) -> None:
        """Take *cost* out of the bucket (the caller checked :meth:`wait_for` first)."""
        self._level = self.level(now) - cost

    def refund(self, amount: float, now: float) -> None:
        """Give back *amount* (never above capacity)."""
        self._level = min(self.capacity, self.level(now) + amount)

    def headers(self, suffix: str, now: float) -> list[tuple[bytes, bytes]]:
        """Return OpenAI's ``x-ratelimit-{limit,remaining,reset}-<suffix>`` headers at *now*."""
        level = self.level(now)
        remaining = math.floor(max(level, 0.0))
        reset = (self.capacity - level) / self.rate
        return [
            (b"x-ratelimit-limit-" + suffix.encode(), str(self.limit).encode()),
            (b"x-ratelimit-remaining-" + suffix.encode(), str(remaining).encode()),
            (b"x-ratelimit-reset-" + suffix.encode(), format_reset(reset).encode()),
        ]


@final
class Admission:
    """The outcome of :meth:`KeyLimits.admit`.

    Attributes:
        wait_s: 0.0 when admitted, else the time until the request would be admissible.
        limited_by: which bucket refused it (``"requests"`` or ``"tokens"``), else ``None``.
        headers: the rate-limit headers as of this decision.
    """

    __slots__ = ("headers", "limited_by", "wait_s")

    def __init__(
        self,
        wait_s: float,
        limited_by: Literal["requests", "tokens"] | None,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self.wait_s = wait_s
        self.limited_by = limited_by
        self.headers = headers


@final
class KeyLimits:
    """The requests and tokens buckets of one key; either may be ``None`` (unlimited)."""

    __slots__ = ("requests", "tokens")

    def __init__(self, rpm: int | None, tpm: int | None, burst_s: float, now: float) -> None:
        self.requests = None if rpm is None else LeakyBucket(rpm, burst_s, now)
        self.tokens = None if tpm is None else LeakyBucket(tpm, burst_s, now)

    def admit(self, token_cost: int, now: float) -> Admission:
        """Charge one request and *token_cost* tokens if both buckets allow it, else refuse.

        Nothing is charged on refusal. When both buckets refuse, the longer wait is reported so
        that a client honouring ``retry-after`` is admitted on its next try.
        """
        wait_requests = 0.0 if self.requests is None else self.requests.wait_for(1, now)
        wait_tokens = 0.0 if self.tokens is None else self.tokens.wait_for(token_cost, now)
        limited_by: Literal["requests", "tokens"] | None = None
        if wait_requests > 0 or wait_tokens > 0:
            limited_by = "requests" if wait_requests >= wait_tokens else "tokens"
        else:
            if self.requests is not None:
                self.requests.charge(1, now)
            if self.tokens is not None:
                self.tokens.charge(token_cost, now)
        return Admission(max(wait_requests, wait_tokens), limited_by, self.headers(now))

    def refund_tokens(self, amount: int, now: float) -> None:
        """Return tokens charged up front but not used (``max_tokens`` above the real length)."""
        if self.tokens is not None and amount > 0:
            self.tokens.refund(amount, now)

    def headers(self, now: float) -> list[tuple[bytes, bytes]]:
        """Return the rate-limit headers of the limited buckets at *now*."""
        headers: list[tuple[bytes, bytes]] = []
        if self.requests is not None:
            headers += self.requests.headers("requests", now)
        if self.tokens is not None:
            headers += self.tokens.headers("tokens", now)
        return headers
