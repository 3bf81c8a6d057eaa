"""What we know of one key's limits for one model, and how the server corrects it.

A ``RateModel`` holds the two buckets of one (key, model) — requests/min and tokens/min — and
keeps them true from what the server says:

* **headers** teach the limits when none were configured and lower a bucket whose level we
  over-estimated (where the server's bucket stands now: its remaining count, plus refill since,
  minus what we sent after that response — the ledger);
* a **429** is booked *after* its headers are learned (a debt computed at a rate we no longer
  believe would stall the key for minutes): the key cools for the server's Retry-After, and its
  buckets are set so that at the end of it they hold just the refused request. The key then
  resumes at its rate, one request after another — not as a burst of everyone who waited;
* a 429 **without** any rate-limit information (LiteLLM's router, Azure) cools the key for a
  growing while (1, 2, 4 s), lowers its rate (when one is known) and, when none is known, takes
  the successes of the last minute as a first estimate of the limit; the rate climbs back as
  time passes without such 429s;
* **usage** reconciles the tokens reserved for a request (an estimate) with what it consumed.

Every method that changes the buckets says so (returns True), so the scheduler re-times the
requests waiting on this key. Only this module changes a bucket's rate or level from outside.
"""

from __future__ import annotations

import collections
import math
from typing import TypeAlias, final

import attrs

from . import _events as ev
from ._config import Limits
from ._headers import RateLimitInfo
from ._limiter import TokenBucket

__all__ = ["SEND_MARGIN_S", "Booking", "RateModel", "Taken"]

#: What a reservation took from a pair of buckets (requests, tokens), to undo it exactly.
Taken: TypeAlias = tuple[float, float]

# Requests wait this much longer than our buckets say: the server's bucket runs on its own
# clock with its own rounding, and being a hair early costs a 429 while a hair late costs
# nothing (the reservations behind are not shifted by it).
SEND_MARGIN_S = 0.002
# While interactive calls come (see the scheduler), batch requests leave this many requests
# of room in a key's bucket when its burst holds it, so an interactive call finds a unit at
# once instead of waiting for the next refill. A saturated batch still sends at the bucket's
# rate, just that many units later; the room is only ever spent by interactive calls (which
# then delay the batch by as much, as they must).
LANE_ROOM = 1.0
# A bucket whose rate was unknown starts half full when a rate arrives. Our bucket drains when
# a request is scheduled, the server's when it arrives; the first burst is where that lag is
# largest (connections are being opened), so it leaves room for it.
_START_LEVEL = 0.5
# Token counts from headers may trail ours by this share of the bucket before we correct.
_TOKEN_SLACK = 0.02
# A token refund larger than this share of the bucket re-times the waiters.
_RETIME_REFUND = 0.01
# A capacity learned from headers must drop this much before it replaces the last one (the
# estimate jitters with the time a response spends in flight).
_CAPACITY_CHANGE = 0.9
# A 429 that says nothing (no Retry-After, no rate-limit headers) cools the key for 1 s,
# doubling per such 429 in a row up to a few seconds (short: a server that recovers is used
# again soon). A 429 from a server that never sends rate-limit headers lowers the rate by
# _DECREASE_FACTOR, down to _MIN_FACTOR; it climbs back by _RECOVERY_PER_S of the limit per
# second, in steps of at least _RECOVERY_STEP.
_HEADERLESS_COOLDOWN_S = 1.0
_MAX_HEADERLESS_COOLDOWN_S = 4.0
_DECREASE_FACTOR = 0.75
_MIN_FACTOR = 0.1
_RECOVERY_PER_S = 0.2
_RECOVERY_STEP = 0.05
# A request that needs a full token bucket (more tokens than the bucket holds) waits this
# much on top: the server's bucket must be full too, and it fills by the server's clock, when
# our requests arrive there (a scheduling hiccup later than we sent them). 429s whose
# Retry-After shows such a request was still early raise it, up to _LEARNED_MARGIN_MAX_S.
_FULL_BUCKET_MARGIN_S = 0.01
_LEARNED_MARGIN_MAX_S = 0.05
# How far back successes count as a first estimate of an unknown limit (a rate-limit window).
_WINDOW_S = 60.0


@attrs.frozen(kw_only=True)
class Booking:
    """What a granted request took from its key, for settling it later.

    Attributes:
        tokens: tokens reserved (the estimate).
        sent_at: when it was granted, on trio's clock.
        requests_ledger / tokens_ledger: the key's ledgers just after it was charged.
    """

    tokens: float
    sent_at: float
    requests_ledger: float
    tokens_ledger: float


@final
class RateModel:
    """One key's buckets for one model, and everything learned about them.

    Args:
        limits: the configured limits (``None`` fields are learned from headers).
        events: where ``limits.updated`` and ``key.cooling`` go.
        key_id: the key's fingerprint, for those events.
        model: the model these limits are for.
        phase: a fraction of one request by which this key's requests bucket starts lower
            than the others', so that keys alike refill out of step and their requests
            interleave instead of leaving in lockstep (a newcomer then waits a fraction of
            one key's interval for the soonest key, not a whole one).
    """

    def __init__(
        self, limits: Limits, events: ev.EventHub, key_id: str, model: str, phase: float = 0.0
    ) -> None:
        self.limits = limits
        self._phase = phase
        self.key_id = key_id
        self.model = model
        self._events = events
        self.learned_rpm: float | None = None
        self.learned_tpm: float | None = None
        self._learned_capacity: dict[str, float] = {}
        self.factor = 1.0
        self._factor_stamp = 0.0
        self.requests = TokenBucket(None)
        self.tokens = TokenBucket(None)
        self.cooling_until = -math.inf
        self._full_margin_s = _FULL_BUCKET_MARGIN_S
        self._headerless_429s = 0
        self._last_refusal = -math.inf
        self.has_rate_headers = False
        # Everything charged on this key (granted, minus given back, plus or minus
        # reconciliations): a response's remaining count, minus what went out after it, is
        # where the server's bucket stands now.
        self.requests_ledger = 0.0
        self.tokens_ledger = 0.0
        # Units reserved by requests waiting for their moment (not yet sent).
        self.pending_requests = 0.0
        self.pending_tokens = 0.0
        # While no request limit is known: when recent requests succeeded.
        self._successes: collections.deque[float] = collections.deque()
        self.apply_rates()

    # --- the limits in force -------------------------------------------------------------
    def ceiling(self) -> tuple[float | None, float | None]:
        """(rpm, tpm) before the 429 back-off factor: the stricter of configured and learned."""

        def stricter(configured: float | None, learned: float | None) -> float | None:
            if configured is None:
                return learned
            return configured if learned is None else min(configured, learned)

        return (
            stricter(self.limits.rpm, self.learned_rpm),
            stricter(self.limits.tpm, self.learned_tpm),
        )

    def in_force(self) -> tuple[float | None, float | None]:
        """(rpm, tpm) with the back-off factor applied: what the buckets run at."""
        rpm, tpm = self.ceiling()
        return (
            None if rpm is None else rpm * self.factor,
            None if tpm is None else tpm * self.factor,
        )

    def apply_rates(self) -> bool:
        """Push the limits in force into the buckets; True if a bucket changed."""
        changed = False
        rpm, tpm = self.in_force()
        for bucket, per_minute, name in (
            (self.requests, rpm, "requests"),
            (self.tokens, tpm, "tokens"),
        ):
            if per_minute is None:
                if bucket.rate is not None:
                    bucket.set_rate(None)
                    changed = True
                continue
            rate = per_minute / 60.0
            capacity = max(1.0, rate * self.limits.burst_s)
            learned = self._learned_capacity.get(name)
            if learned is not None:
                capacity = min(capacity, learned)
            if bucket.rate == rate and bucket.capacity == capacity:
                continue
            was_unlimited = bucket.rate is None
            bucket.set_rate(rate, capacity)
            if was_unlimited:
                start = capacity * _START_LEVEL
                bucket.lower_to(start - self._phase if bucket is self.requests else start)
            changed = True
        return changed

    def too_large(self, tokens: float) -> bool:
        """Whether a request of ``tokens`` can never be served: more than the key's tokens per
        minute (providers refuse such a request outright)."""
        tpm = self.ceiling()[1]
        return tpm is not None and tokens > tpm

    # --- waiting -------------------------------------------------------------------------
    def _token_margin(self, tokens: float) -> float:
        """The send margin for a request of ``tokens``: one that needs a full bucket waits the
        margin learned from 429s refused a hair early (the server's bucket fills by its own
        clock, a scheduling hiccup later than ours)."""
        return self._full_margin_s if tokens >= self.tokens.capacity else SEND_MARGIN_S

    def _requests_margin(self, room: bool) -> float:
        """The send margin of the requests bucket: with ``room`` a request also waits until
        ``LANE_ROOM`` units would be left after it, when the burst is large enough that this
        costs no rate (a margin is a delay, never units)."""
        rate = self.requests.rate
        if (
            not room
            or rate is None
            or self.requests.capacity < 1 + LANE_ROOM + rate * SEND_MARGIN_S
        ):
            return SEND_MARGIN_S
        return SEND_MARGIN_S + LANE_ROOM / rate

    def delay(
        self, tokens: float, after: float, *, ahead: bool = False, room: bool = False
    ) -> float:
        """Seconds until a request of ``tokens`` could go, no earlier than ``after`` (``ahead``:
        if it went before every request waiting here: the reserved units count as there;
        ``room``: a batch request that leaves the interactive lane its room)."""
        return max(
            self.requests.delay(
                1, self._requests_margin(room), after, self.pending_requests if ahead else 0.0
            ),
            self.tokens.delay(
                tokens, self._token_margin(tokens), after, self.pending_tokens if ahead else 0.0
            ),
        )

    def reserve(self, tokens: float, after: float, *, room: bool = False) -> tuple[float, Taken]:
        """Reserve one request of ``tokens`` to go at ``after`` seconds from now, which must be
        no earlier than ``delay(tokens, ...)`` says; return the wait and what was taken.

        Both buckets are charged at that same moment: a bucket charged earlier than the
        request really leaves would count refill the server's bucket never had.
        """
        self.pending_requests += 1
        self.pending_tokens += tokens
        requests_wait, requests_taken = self.requests.hold(1, self._requests_margin(room), after)
        tokens_wait, tokens_taken = self.tokens.hold(tokens, self._token_margin(tokens), after)
        return max(requests_wait, tokens_wait), (requests_taken, tokens_taken)

    def give_back(self, tokens: float, taken: Taken) -> None:
        """A reservation was not used (the request did not go): undo it exactly."""
        self.pending_requests -= 1
        self.pending_tokens -= tokens
        self.requests.refund(taken[0])
        self.tokens.refund(taken[1])

    def book(self, tokens: float, now: float) -> Booking:
        """A reserved request goes now: it leaves the pending units for the ledger."""
        self.pending_requests -= 1
        self.pending_tokens -= tokens
        self.requests_ledger += 1
        self.tokens_ledger += tokens
        return Booking(
            tokens=tokens,
            sent_at=now,
            requests_ledger=self.requests_ledger,
            tokens_ledger=self.tokens_ledger,
        )

    def unbook(self, booking: Booking) -> None:
        """A booked request never reached the server: give back what it took."""
        self.requests_ledger -= 1
        self.tokens_ledger -= booking.tokens
        self.requests.refund(1)
        self.tokens.refund(booking.tokens)

    # --- what the server said ------------------------------------------------------------
    def succeeded(self, now: float) -> bool:
        """A request was answered; True if the rate climbed back (waiters are re-timed)."""
        self._headerless_429s = 0
        if self.ceiling()[0] is None:
            self._successes.append(now)
            while self._successes and self._successes[0] < now - _WINDOW_S:
                self._successes.popleft()
        return self.recover(now)

    def recover(self, now: float) -> bool:
        """Climb back towards the full limit after 429s from a server without rate-limit
        headers: from the later of the last such 429 and the end of its cooldown."""
        since = max(self._factor_stamp, self.cooling_until)
        if self.factor >= 1.0 or now <= since:
            return False
        factor = min(1.0, self.factor + (now - since) * _RECOVERY_PER_S)
        if factor - self.factor < _RECOVERY_STEP and factor < 1.0:
            return False
        self.factor = factor
        self._factor_stamp = now
        return self.apply_rates()

    def reconcile(self, booking: Booking, used_tokens: float) -> bool:
        """The response reported ``used_tokens``: refund the rest of the estimate or charge
        the overrun. True if waiters should be re-timed (a large refund)."""
        difference = booking.tokens - used_tokens
        self.tokens_ledger -= difference
        if difference > 0:
            self.tokens.refund(difference)
            return difference > _RETIME_REFUND * self.tokens.capacity
        if difference < 0:
            self.tokens.charge(-difference)
        return False

    def observe(self, info: RateLimitInfo, booking: Booking, now: float) -> bool:
        """A response's rate-limit headers: learn limits, align the buckets; True if changed."""
        if info == _NOTHING:
            return False
        self.has_rate_headers = True
        changed = self._learn(info)
        # Where the server's buckets stand now, from what this response said: lower ours to
        # that when they are ahead. (Remaining counts are whole units: one unit of slack.)
        if info.requests_remaining is not None:
            changed |= self._align(
                self.requests, booking, info.requests_remaining, now, tolerance=1.0
            )
        if info.tokens_remaining is not None:
            # Our token charges are estimates until each response reconciles them, and a
            # server may charge otherwise (max_tokens up front, or the real length): allow a
            # request's worth of disagreement.
            changed |= self._align(
                self.tokens,
                booking,
                info.tokens_remaining,
                now,
                tolerance=max(booking.tokens, _TOKEN_SLACK * self.tokens.capacity),
            )
        if info.wait_s is not None and info.wait_s > 0:
            # A used-up window (a daily quota, a calendar minute): nothing goes until it opens.
            changed |= self._cool(info.wait_s, now)
        return changed

    def refused(
        self, info: RateLimitInfo, retry_after: float | None, booking: Booking, now: float
    ) -> float:
        """The server refused ``booking``'s request with a 429; return how long the key cools.

        Learn first, then book: the headers of the 429 may teach a lower limit, and the time
        to wait is worked out at that rate.

        The refused request gives its tokens back (the server did not count them, and a big
        request's tokens are seconds of the key's throughput) but keeps its request: the next
        one must not leave at the same instant, a 429 is the one moment not to hurry.
        """
        self.tokens.refund(booking.tokens)
        self.tokens_ledger -= booking.tokens
        booking = attrs.evolve(booking, tokens_ledger=booking.tokens_ledger - booking.tokens)
        if (
            retry_after is not None
            and retry_after < _LEARNED_MARGIN_MAX_S
            and booking.tokens >= self.tokens.capacity
        ):
            # A request needing a full bucket was refused a hair early: wait longer for one.
            self._full_margin_s = min(
                _LEARNED_MARGIN_MAX_S, max(2 * self._full_margin_s, 3 * retry_after)
            )
        if info != _NOTHING:
            self.has_rate_headers = True
            self._learn(info)
        # A request sent before the last 429 was answered says nothing new about our pace.
        fresh = booking.sent_at > self._last_refusal
        self._last_refusal = now
        self._factor_stamp = now  # no recovery while 429s keep coming
        if fresh and not self.has_rate_headers:
            self._slow_down(now)
        if retry_after is None:
            retry_after = info.wait_s
        if retry_after is None and info == _NOTHING:
            retry_after = self._headerless_cooldown(escalate=fresh)
        if retry_after is None:
            # Rate-limit headers but no Retry-After: the buckets, aligned, set the pace.
            if info.requests_remaining is not None:
                self._align(self.requests, booking, info.requests_remaining, now, tolerance=0.0)
            if info.tokens_remaining is not None:
                self._align(self.tokens, booking, info.tokens_remaining, now, tolerance=0.0)
            retry_after = max(
                _HEADERLESS_COOLDOWN_S if self.requests.rate is None else 0.0,
                self.delay(booking.tokens, 0.0),
            )
        # The server admits this request in ``retry_after``: its buckets then hold just that
        # much. Ours are set to the same, so the requests behind resume at the rate.
        for bucket, need in ((self.requests, 1.0), (self.tokens, booking.tokens)):
            rate = bucket.rate
            if rate is not None:
                bucket.lower_to(min(need, bucket.capacity) - rate * retry_after)
        self._cool(retry_after, now)
        return retry_after

    def _cool(self, seconds: float, now: float) -> bool:
        until = now + seconds
        if until <= self.cooling_until:
            return False
        self.cooling_until = until
        self._events.emit(ev.KEY_COOLING, key_id=self.key_id, cooling_s=seconds)
        return True

    def _headerless_cooldown(self, *, escalate: bool) -> float:
        """How long a 429 that says nothing cools the key: 1 s, doubling per such 429 in a
        row (a fresh one, not a straggler sent before the last), up to a few seconds."""
        if escalate:
            self._headerless_429s += 1
        return min(
            _MAX_HEADERLESS_COOLDOWN_S,
            _HEADERLESS_COOLDOWN_S * 2.0 ** max(0, self._headerless_429s - 1),
        )

    def _slow_down(self, now: float) -> None:
        """A server that sends no rate-limit headers refused a request we paced: go slower."""
        rpm, _ = self.ceiling()
        if rpm is None:
            if not self._successes:
                return
            # No limit known: what got through in the last window is a first estimate.
            while self._successes and self._successes[0] < now - _WINDOW_S:
                self._successes.popleft()
            self.learned_rpm = max(1.0, float(len(self._successes)))
            self._successes.clear()
        else:
            self.factor = max(_MIN_FACTOR, self.factor * _DECREASE_FACTOR)
            self._factor_stamp = now
        self.apply_rates()
        self._updated("rate_limited")

    def _learn(self, info: RateLimitInfo) -> bool:
        learned = False
        if info.requests_limit is not None and info.requests_limit != self.learned_rpm:
            self.learned_rpm = info.requests_limit
            learned = True
        if info.tokens_limit is not None and info.tokens_limit != self.learned_tpm:
            self.learned_tpm = info.tokens_limit
            learned = True
        # A limit not configured has its burst learned too: a bucket refilling at ``rate``
        # that is full in ``reset`` seconds holds ``remaining + reset * rate`` when full.
        for configured, limit, remaining, reset, name in (
            (
                self.limits.rpm,
                info.requests_limit,
                info.requests_remaining,
                info.requests_reset_s,
                "requests",
            ),
            (
                self.limits.tpm,
                info.tokens_limit,
                info.tokens_remaining,
                info.tokens_reset_s,
                "tokens",
            ),
        ):
            if configured is None and limit and remaining is not None and reset is not None:
                capacity = max(1.0, remaining + reset * limit / 60.0)
                previous = self._learned_capacity.get(name)
                if previous is None or capacity < previous * _CAPACITY_CHANGE:
                    self._learned_capacity[name] = capacity
                    learned = True
        if learned:
            self.apply_rates()
            self._updated("headers")
        return learned

    def _updated(self, reason: str) -> None:
        rpm, tpm = self.in_force()
        self._events.emit(
            ev.LIMITS_UPDATED, key_id=self.key_id, model=self.model, rpm=rpm, tpm=tpm, reason=reason
        )

    def _align(
        self,
        bucket: TokenBucket,
        booking: Booking,
        after: float,
        now: float,
        *,
        tolerance: float,
    ) -> bool:
        """Lower ``bucket`` to where the server's stands now; True if lowered.

        ``after`` is the server's level just after it handled ``booking``'s request. Since
        then it refilled for the time elapsed and was charged everything we sent after it (the
        ledger). Our comparable level counts what waiters reserved but did not send as still
        there.
        """
        rate = bucket.rate
        if rate is None:
            return False
        if bucket is self.requests:
            sent_since = self.requests_ledger - booking.requests_ledger
            pending = self.pending_requests
        else:
            sent_since = self.tokens_ledger - booking.tokens_ledger
            pending = self.pending_tokens
        server_now = min(bucket.capacity, after + rate * (now - booking.sent_at)) - sent_since
        excess = bucket.level + pending - server_now
        if excess > tolerance:
            bucket.lower_to(bucket.level - excess)
            return True
        return False


_NOTHING = RateLimitInfo()
