"""The mock's per-key rate limits: leaky buckets or fixed calendar windows, one per limit.

Each limited key has up to five counters: *requests* (``rpm``), *tokens* (``tpm``),
*requests_day* (``rpd``), *input_tokens* (``itpm``) and *output_tokens* (``otpm``).

A :class:`LeakyBucket` refills continuously at ``limit / window`` per second up to a capacity of
``burst_s`` seconds of that rate. A request is admitted when the bucket holds at least its cost,
or, for a request that costs more than the whole capacity, when the bucket is full; the level
may then go negative, a debt the refill pays off before anything else is admitted. Without that
rule a 5,000-token request on a 60,000 TPM key (capacity 1,000 at ``burst_s=1``) could never run.
The per-day bucket holds the whole day (Groq's RPD refills that way: its reset header says how
long until the bucket is full again).

A :class:`FixedWindow` counts use within each calendar window (minute) of the wall clock and
forgets it when the next window starts, as LiteLLM's limiters do (``dt.strftime("%H-%M")``).

The counters never sleep: they answer "admitted" or "retry in N seconds"; the server turns the
latter into a 429 (or holds the request). Headers are formatted per dialect in
``_mock_headers``.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol, TypeAlias, final

__all__ = [
    "LIMIT_NAMES",
    "Admission",
    "Counter",
    "FixedWindow",
    "KeyLimits",
    "LeakyBucket",
    "LimitName",
    "format_reset",
]

LimitName: TypeAlias = Literal[
    "requests", "tokens", "requests_day", "input_tokens", "output_tokens"
]

#: The counters in the order their refusals are reported (a tie goes to the first).
LIMIT_NAMES: tuple[LimitName, ...] = (
    "requests",
    "tokens",
    "requests_day",
    "input_tokens",
    "output_tokens",
)

MINUTE = 60.0
DAY = 86_400.0


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


class Counter(Protocol):
    """What the server needs from one limit, whichever way it is counted."""

    @property
    def limit(self) -> int:
        """The limit as the provider states it (per window)."""
        ...

    def wait_for(self, cost: float, now: float) -> float:
        """How long until *cost* is admissible: 0.0 if it is now."""
        ...

    def charge(self, cost: float, now: float) -> None:
        """Take *cost* (the caller checked :meth:`wait_for` first)."""
        ...

    def refund(self, amount: float, now: float) -> None:
        """Give back *amount* charged but not used."""
        ...

    def remaining(self, now: float) -> int:
        """What is left now, in whole units (never negative)."""
        ...

    def used(self, now: float) -> int:
        """What is spent now, in whole units (at most the limit... plus any debt)."""
        ...

    def reset_s(self, now: float) -> float:
        """Seconds until the counter is fully replenished."""
        ...


@final
class LeakyBucket:
    """A bucket of *limit per window* that refills continuously and may go into debt.

    Args:
        limit: the limit as the provider states it (per ``window_s``: RPM, TPM, RPD...).
        burst_s: capacity in seconds of refill: ``capacity = limit / window_s * burst_s``.
        now: the current time on the server's clock.
        window_s: the window the limit is stated for (60 for per-minute limits).
        empty: start with nothing in the bucket instead of full.
    """

    __slots__ = ("_level", "_updated", "capacity", "limit", "rate")

    def __init__(
        self,
        limit: int,
        burst_s: float,
        now: float,
        *,
        window_s: float = MINUTE,
        empty: bool = False,
    ) -> None:
        self.limit = limit
        self.rate = limit / window_s
        self.capacity = self.rate * burst_s
        self._level = 0.0 if empty else self.capacity
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

    def remaining(self, now: float) -> int:
        """Whole units in the bucket now (0 while in debt)."""
        return math.floor(max(self.level(now), 0.0))

    def used(self, now: float) -> int:
        """Whole units missing from a full bucket (debt included)."""
        return math.ceil(self.capacity - self.level(now) - _EPSILON)

    def reset_s(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level(now)) / self.rate)

    def headers(self, suffix: str, now: float) -> list[tuple[bytes, bytes]]:
        """Return OpenAI's ``x-ratelimit-{limit,remaining,reset}-<suffix>`` headers at *now*."""
        return [
            (b"x-ratelimit-limit-" + suffix.encode(), str(self.limit).encode()),
            (b"x-ratelimit-remaining-" + suffix.encode(), str(self.remaining(now)).encode()),
            (b"x-ratelimit-reset-" + suffix.encode(), format_reset(self.reset_s(now)).encode()),
        ]


@final
class FixedWindow:
    """Use counted per fixed calendar window of the wall clock (LiteLLM's ``%H-%M`` minutes).

    A request is admitted while ``used + cost <= limit``; a request larger than the whole
    limit is admitted into an unused window (so it can ever run). A refusal waits for the next
    window. Refunds only return use to the window it was taken from.

    Args:
        limit: the limit per window.
        now: the current time on the server's clock.
        wall_offset: add to the server's clock to get Unix time (window boundaries are on the
            wall clock: minute ``N`` starts at ``N * 60`` seconds since the epoch).
        window_s: the window length.
        exhausted: the current window starts used up (as if another process had spent it).
    """

    __slots__ = ("_used", "_window", "limit", "wall_offset", "window_s")

    def __init__(
        self,
        limit: int,
        now: float,
        *,
        wall_offset: float,
        window_s: float = MINUTE,
        exhausted: bool = False,
    ) -> None:
        self.limit = limit
        self.wall_offset = wall_offset
        self.window_s = window_s
        self._window = self._index(now)
        self._used = float(limit) if exhausted else 0.0

    def _index(self, now: float) -> int:
        return math.floor((now + self.wall_offset) / self.window_s + 1e-9)

    def _roll(self, now: float) -> None:
        window = self._index(now)
        if window != self._window:
            self._window = window
            self._used = 0.0

    def wait_for(self, cost: float, now: float) -> float:
        """0.0 if *cost* fits in this window, else the seconds to the next one."""
        self._roll(now)
        if self._used + cost <= self.limit + _EPSILON or self._used <= _EPSILON:
            return 0.0
        return self.reset_s(now)

    def charge(self, cost: float, now: float) -> None:
        """Count *cost* in the current window."""
        self._roll(now)
        self._used += cost

    def refund(self, amount: float, now: float) -> None:
        """Uncount *amount*, if the window it was charged to is still the current one."""
        self._roll(now)
        self._used = max(0.0, self._used - amount)

    def remaining(self, now: float) -> int:
        """What is left of this window's limit."""
        self._roll(now)
        return max(0, math.floor(self.limit - self._used + _EPSILON))

    def used(self, now: float) -> int:
        """What this window has used."""
        self._roll(now)
        return math.ceil(self._used - _EPSILON)

    def reset_s(self, now: float) -> float:
        """Seconds to the start of the next window."""
        wall = now + self.wall_offset
        return (math.floor(wall / self.window_s + 1e-9) + 1) * self.window_s - wall


@final
class Admission:
    """The outcome of :meth:`KeyLimits.admit`.

    Attributes:
        wait_s: 0.0 when admitted, else the time until the request would be admissible.
        limited_by: which counter refused it, else ``None``.
        requested: what the request asked of that counter (1 request, N tokens).
    """

    __slots__ = ("limited_by", "requested", "wait_s")

    def __init__(self, wait_s: float, limited_by: LimitName | None, requested: float) -> None:
        self.wait_s = wait_s
        self.limited_by = limited_by
        self.requested = requested


@final
class KeyLimits:
    """The counters of one key; each may be ``None`` (unlimited).

    Args:
        limits: the limit of each counter (``None`` or missing: unlimited).
        burst_s: bucket capacity in seconds of refill (per-minute buckets).
        now: the current time on the server's clock.
        window: ``"bucket"`` or ``"minute"`` (fixed calendar minutes; the day stays a bucket).
        wall_offset: server clock to Unix time, for fixed windows.
        exhausted: every counter starts used up.
    """

    __slots__ = ("counters", "window")

    def __init__(
        self,
        limits: dict[LimitName, int | None],
        burst_s: float,
        now: float,
        *,
        window: Literal["bucket", "minute"] = "bucket",
        wall_offset: float = 0.0,
        exhausted: bool = False,
    ) -> None:
        self.window = window
        self.counters: dict[LimitName, Counter] = {}
        for name in LIMIT_NAMES:
            limit = limits.get(name)
            if limit is None:
                continue
            counter: Counter
            if name == "requests_day":
                counter = LeakyBucket(limit, DAY, now, window_s=DAY, empty=exhausted)
            elif window == "minute":
                counter = FixedWindow(limit, now, wall_offset=wall_offset, exhausted=exhausted)
            else:
                counter = LeakyBucket(limit, burst_s, now, empty=exhausted)
            self.counters[name] = counter

    @property
    def requests(self) -> Counter | None:
        """The per-minute requests counter."""
        return self.counters.get("requests")

    @property
    def tokens(self) -> Counter | None:
        """The per-minute tokens counter."""
        return self.counters.get("tokens")

    def admit(self, costs: dict[LimitName, float], now: float) -> Admission:
        """Charge every counter its cost if all of them allow it, else refuse.

        Nothing is charged on refusal. When several counters refuse, the longest wait is
        reported so that a client honouring ``retry-after`` is admitted on its next try.
        """
        longest = 0.0
        limited_by: LimitName | None = None
        for name, counter in self.counters.items():
            wait = counter.wait_for(costs.get(name, 0.0), now)
            if wait > longest:
                longest, limited_by = wait, name
        if limited_by is not None:
            return Admission(longest, limited_by, costs.get(limited_by, 0.0))
        for name, counter in self.counters.items():
            counter.charge(costs.get(name, 0.0), now)
        return Admission(0.0, None, 0.0)

    def refund(self, name: LimitName, amount: float, now: float) -> None:
        """Return *amount* charged up front to counter *name* but not used."""
        counter = self.counters.get(name)
        if counter is not None and amount > 0:
            counter.refund(amount, now)

    def refund_tokens(self, amount: int, now: float) -> None:
        """Return tokens charged up front but not used (``max_tokens`` above the real length)."""
        self.refund("tokens", amount, now)
