"""The scheduler: which key sends the next request, when, and what its answer does to the key.

::

    lease(tokens, model)                    ──► choose the key that can send soonest
        │  (across every endpoint; ties to the fewest in flight, then least recently used)
        ▼
    reserve in its buckets (key and model, and the endpoint's) no earlier than the key may send
        │  (cooling after a 429, a breaker open)
        ▼
    park in the key's WaitQueue until the reservation is due        ◄── re-timed in place on
        │                                                               refunds, corrections,
        ▼                                                               a breaker closing;
    Lease ──► the attempt sends ──► lease.settle(outcome)               woken to choose again
                                      │                                 when the key cools, is
                                      └─ refunds, reconciliation,       dropped or its breaker
                                         learning, cooling, dropping,   opens
                                         key and provider breakers

One scheduler serves one trio run of an engine: every caller of the engine shares it, so limits
hold across concurrent ``map``/``stream``/``complete`` calls. ``lease`` raises ``Unavailable``
with a final ``Outcome`` when nothing can be sent for the request: every key dropped, every key
cooling for longer than the caller will wait, the endpoint unreachable, or a request larger than
the key's tokens per minute.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Final, final

import attrs
import trio

from . import _events as ev
from ._breaker import BreakerPolicy, BreakerState, CircuitBreaker, announce
from ._config import Limits
from ._errors import TrioLLMError
from ._limiter import TokenBucket
from ._outcome import Outcome
from ._policy import POLICY, ErrorKind, KeyAction
from ._providers import Provider
from ._rate_model import SEND_MARGIN_S, Booking, RateModel, Taken
from ._secrets import ApiKey
from ._store import LimitsStore, StoreBucket, store_name
from ._waiters import NEVER, Waiter, WaitQueue

#: How far (in seconds of rate) the buckets in a shared store stay short of the limit, for the
#: jitter between processes' delays to the server (see ``Scheduler._store_buckets``).
STORE_SLACK_S: Final = 0.05

__all__ = ["EndpointSpec", "KeyStatistics", "Lease", "Scheduler", "Unavailable"]

#: Connect-level failures in a row, with no request to the endpoint ever answered, after which
#: the endpoint counts as unreachable (a wrong port or host), not busy.
UNREACHABLE_AFTER = 3
#: The least share of grants the batch keeps while interactive requests go ahead of it,
#: over the last _SHARE_WINDOW grants.
BATCH_SHARE = 0.2
# For this long after an interactive request, batch requests leave it room in the buckets
# (``LANE_ROOM``): the next interactive call goes at once. A batch alone drains them fully.
LANE_ROOM_S = 60.0
_SHARE_WINDOW = 50
#: A request that must wait at least this long for its key says so (``request.waiting``).
WAITING_EVENT_S = 5.0


@attrs.frozen(kw_only=True)
class KeyStatistics:
    """A snapshot of one key, for programs and the progress display (never the secret).

    Attributes:
        key_id: the key's fingerprint.
        in_flight: requests sent on it and not answered yet.
        rpm / tpm: the limits in force now (configured, learned or lowered), ``None`` unknown.
        requests_left / tokens_left: what its buckets hold now.
        cooling_s: seconds until it may send again after a 429 (0 when not cooling).
        dropped: why it was dropped for the run, or ``None``.
        down: ``"endpoint"`` or ``"key"`` while a circuit breaker holds it back (the endpoint's
            or its own), ``"unreachable"`` for an endpoint that never answered, else ``None``.
        down_s: seconds until the breaker lets a probe through (0 while one is out).
        provider / model: the endpoint the key serves (its provider's name) and the model whose
            limits these are: one key on two routes of a fallback chain is two entries.
    """

    key_id: str
    in_flight: int
    rpm: float | None
    tpm: float | None
    requests_left: float | None
    tokens_left: float | None
    cooling_s: float
    dropped: str | None
    down: str | None = None
    down_s: float = 0.0
    provider: str = ""
    model: str = ""


@attrs.frozen(kw_only=True)
class EndpointSpec:
    """What the scheduler needs of one route: its provider, keys and limits."""

    provider: Provider
    keys: tuple[ApiKey, ...]
    limits: Limits
    provider_limits: Limits
    #: The model every request sent here uses, whatever it names (a fallback route's model).
    model: str | None = None


class Unavailable(TrioLLMError):
    """Nothing can be sent for this request; ``outcome`` says why (it is final)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


@final
class _Endpoint:
    """One route at work: its provider, keys, provider-wide buckets and breaker."""

    def __init__(self, spec: EndpointSpec, breaker: BreakerPolicy | None) -> None:
        self.provider = spec.provider
        self.model = spec.model
        self.index = 0  # its position among the scheduler's endpoints
        self.store_name = "endpoint:" + store_name(
            getattr(spec.provider, "base_url", spec.provider.name), spec.provider.name
        )
        self.requests = _bucket(spec.provider_limits.rpm, spec.provider_limits.burst_s)
        self.tokens = _bucket(spec.provider_limits.tpm, spec.provider_limits.burst_s)
        self.breaker = None if breaker is None else CircuitBreaker(breaker, spec.provider.name)
        self.answered = False  # has any request to it ever been answered?
        self.last_failure: Outcome | None = None  # the last that counted for its breaker
        self.connect_failures = 0
        self.unreachable: Outcome | None = None
        self.slots: list[_Slot] = []

    def delay(self, tokens: float, after: float) -> float:
        return max(
            self.requests.delay(1, SEND_MARGIN_S, after),
            self.tokens.delay(tokens, SEND_MARGIN_S, after),
        )

    def reserve(self, tokens: float, after: float) -> tuple[float, Taken]:
        requests_wait, requests_taken = self.requests.hold(1, SEND_MARGIN_S, after)
        tokens_wait, tokens_taken = self.tokens.hold(tokens, SEND_MARGIN_S, after)
        return max(requests_wait, tokens_wait), (requests_taken, tokens_taken)

    def refund(self, tokens: float, taken: Taken | None = None) -> None:
        """Give back a request's units (``taken``: exactly what a reservation took)."""
        requests, tokens = (1.0, tokens) if taken is None else taken
        self.requests.refund(requests)
        self.tokens.refund(tokens)

    @property
    def limited(self) -> bool:
        """Whether it has buckets of its own (shared by all of its keys)."""
        return self.requests.rate is not None or self.tokens.rate is not None

    def waiters(self) -> Iterator[Waiter[_Want]]:
        for slot in self.slots:
            yield from slot.waiters()


@final
class _Slot:
    """One key at work: its health (in flight, breaker, dropped) and its limits per model."""

    def __init__(
        self,
        key: ApiKey,
        endpoint: _Endpoint,
        limits: Limits,
        breaker: BreakerPolicy | None,
        events: ev.EventHub,
        numbering: Iterator[int],
    ) -> None:
        self.key = key
        self.endpoint = endpoint
        self.limits = limits
        self.breaker = None if breaker is None else CircuitBreaker(breaker, key.fingerprint)
        self.dropped: Outcome | None = None
        self.last_failure: Outcome | None = None  # the last that counted for its breaker
        self.in_flight = 0
        self.granted = 0  # when it was last granted (a scheduler-wide sequence number)
        self._events = events
        self._numbering = numbering
        self.phase = 0.0  # set by the scheduler: its place among the endpoint's keys
        # Its name in a store shared with other processes (a hash: never the key).
        self.store_name = "key:" + store_name(key.reveal())
        self.models: dict[str, RateModel] = {}
        self.queues: dict[str, WaitQueue[_Want]] = {}

    def rates(self, model: str) -> RateModel:
        rates = self.models.get(model)
        if rates is None:
            rates = self.models[model] = RateModel(
                self.limits, self._events, self.key.fingerprint, model, self.phase
            )
            self.queues[model] = WaitQueue(self._numbering)
        return rates

    def waiters(self) -> Iterator[Waiter[_Want]]:
        for queue in self.queues.values():
            yield from queue


@attrs.define(eq=False)
class _Want:
    """What one parked request holds: where it waits and what it reserved."""

    slot: _Slot
    rates: RateModel
    tokens: float
    reserved: bool
    give_up: float = math.inf  # when to stop waiting for a key that may not send at all
    urgent: bool = False  # an interactive request: it reserves ahead of the batch
    taken: tuple[Taken, Taken] = ((0.0, 0.0), (0.0, 0.0))  # from the key's, the endpoint's


@final
class Lease:
    """Permission to send one request with one key; settle it with the attempt's outcome.

    Use it as a context manager: leaving without ``settle`` gives back what it holds (all of
    it if the request was never sent).
    """

    __slots__ = ("_booking", "_rates", "_scheduler", "_sent", "_settled", "_slot", "model")

    def __init__(
        self,
        scheduler: Scheduler,
        slot: _Slot,
        rates: RateModel,
        booking: Booking,
    ) -> None:
        self._scheduler = scheduler
        self._slot = slot
        self._rates = rates
        self._booking = booking
        self._sent = False
        self._settled = False
        self.model = rates.model

    @property
    def key(self) -> ApiKey:
        """The key to send with."""
        return self._slot.key

    @property
    def provider(self) -> Provider:
        """The endpoint to send to."""
        return self._slot.endpoint.provider

    @property
    def tokens(self) -> float:
        """Tokens reserved for the request (the estimate)."""
        return self._booking.tokens

    @property
    def route(self) -> int:
        """The position of the endpoint it sends to, among the engine's routes."""
        return self._slot.endpoint.index

    @property
    def overrides_model(self) -> bool:
        """Whether the endpoint sends every request to its own model (``model``)."""
        return self._slot.endpoint.model is not None

    def sending(self) -> None:
        """The request is about to leave: from here on the server may count it."""
        self._sent = True

    def settle(self, outcome: Outcome) -> None:
        """Book the attempt's outcome on the key, its limits and both breakers."""
        if not self._settled:
            self._settled = True
            self._scheduler._settle(self._slot, self._rates, self._booking, outcome, self._sent)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._settled:
            self._settled = True
            self._scheduler._abandon(self._slot, self._rates, self._booking, self._sent)


@final
class Scheduler:
    """Keys and endpoints for one trio run of an engine.

    Args:
        endpoints: the routes, in order.
        events: where key and breaker events go.
        breaker: the circuit breaker policy for each key and endpoint (``None``: none).
        store: buckets shared with other processes using the same keys (``None``: this
            process alone).
    """

    def __init__(
        self,
        endpoints: Sequence[EndpointSpec],
        events: ev.EventHub,
        breaker: BreakerPolicy | None,
        store: LimitsStore | None = None,
    ) -> None:
        self._events = events
        self._store = store
        # What this process learned, for the store with its next take.
        self._refunds: list[StoreBucket] = []
        self._cools: list[tuple[str, float]] = []
        self._drops: list[tuple[str, str]] = []
        # One asker at a time per key and model: the others wait here, in their order, instead
        # of all asking the store again at the moment it named (a herd of refusals).
        self._askers: dict[str, trio.Lock] = {}
        self._endpoints: list[_Endpoint] = []
        self._slots: list[_Slot] = []
        # One queue in arrival order, kept in parts (one per key and model) for speed.
        numbering = itertools.count(1)
        for spec in endpoints:
            endpoint = _Endpoint(spec, breaker)
            endpoint.index = len(self._endpoints)
            for key in spec.keys:
                slot = _Slot(key, endpoint, spec.limits, breaker, events, numbering)
                slot.phase = len(endpoint.slots) / len(spec.keys)
                endpoint.slots.append(slot)
                self._slots.append(slot)
            self._endpoints.append(endpoint)
        self._granted = 0
        # Which lane the recent grants went to (True: the batch), for the batch's share.
        self._recent_lanes: collections.deque[bool] = collections.deque(maxlen=_SHARE_WINDOW)
        self._room_until = -math.inf  # batch requests leave the interactive lane room until

    # --- asking --------------------------------------------------------------------------
    async def lease(
        self,
        tokens: float,
        model: str | None,
        *,
        max_blocked: float,
        route: int | None = None,
        urgent: bool = False,
    ) -> Lease:
        """Wait until some key may send a request of ``tokens``; return its lease.

        Args:
            tokens: the request's estimated tokens.
            model: the model the request names, or ``None`` for each endpoint's default.
            max_blocked: the longest a request waits for keys that may not send at all (cooling
                after a 429, an open breaker); after that it fails with their last failure.
            route: only this endpoint (its position), or ``None`` for whichever can send
                soonest.
            urgent: an interactive request: it takes the first moment ahead of the batch
                requests already waiting for the same buckets (which keep a guaranteed share).

        Raises:
            Unavailable: nothing can be sent for it (see the module docs).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        give_up = trio.current_time() + max_blocked
        if urgent:
            self._room_until = trio.current_time() + LANE_ROOM_S
        while True:
            slot, rates = self._choose(tokens, model, max_blocked, route, urgent=urgent)
            now = trio.current_time()
            want = _Want(slot, rates, tokens, reserved=False, give_up=give_up, urgent=urgent)
            passed = self._make_room(want) if urgent else []
            deadline = self._deadline(want, now)
            for waiter in passed:  # the batch requests it went ahead of, in their order
                WaitQueue.retime(waiter, self._deadline(waiter.data, now))
            if deadline <= now:
                if self._store is None:  # the hot path: nothing to ask anyone
                    return self._grant(want, now)
                if await self._shared(want):
                    return self._grant(want, trio.current_time())
                continue
            wait = deadline - now
            queue = slot.queues[rates.model]
            waiter = queue.waiter(want)
            if wait >= WAITING_EVENT_S:
                self._events.emit(
                    ev.REQUEST_WAITING,
                    key_id=slot.key.fingerprint,
                    wait_s=wait,
                    est_tokens=tokens,
                )
            try:
                came = await queue.park(waiter, deadline)
            except BaseException:
                # Cancelled while waiting: its units go back, and those behind it are re-timed
                # so that nobody takes its place out of turn.
                if want.reserved:
                    self._unreserve(want)
                    self._retime_behind(waiter)
                raise
            now = trio.current_time()
            blocked = self._blocked(slot, rates, now)
            if came and want.reserved and blocked <= 0:
                if self._store is None or await self._shared(want):
                    return self._grant(want, trio.current_time())
                continue
            if want.reserved:
                # Its moment goes back (the key is blocked again, or it gives up): those behind
                # it are re-timed, as when a waiter is cancelled, or the next to reserve would
                # take a moment one of them still holds.
                self._unreserve(want)
                self._retime_behind(waiter)
            if blocked > 0 and now >= give_up:
                raise Unavailable(self._blocked_outcome(slot, rates, max_blocked))

    async def _shared(self, want: _Want) -> bool:
        """Take ``want``'s units from the store shared with other processes, waiting as long
        as it says; False if its key turned out dropped (by another process): choose again.

        The local reservation is kept while waiting: this process's own requests stay in
        their order behind it. Cancelled, it is given back.
        """
        store = self._store
        assert store is not None
        slot, rates = want.slot, want.rates
        asker = self._askers.setdefault(f"{slot.store_name}:{rates.model}", trio.Lock())
        try:
            async with asker:
                return await self._ask_store(want, store)
        except BaseException:
            self._unreserve(want)
            raise

    async def _ask_store(self, want: _Want, store: LimitsStore) -> bool:
        """``_shared``'s loop, for the one request of its key and model asking the store."""
        slot, rates = want.slot, want.rates
        while True:
            buckets = self._store_buckets(slot, rates, want.tokens)
            refunds, self._refunds = self._refunds, []
            cool, self._cools = self._cools, []
            drop, self._drops = self._drops, []
            reply = await store.take(
                buckets,
                cooling=[slot.store_name + ":" + rates.model],
                refunds=refunds,
                cool=cool,
                drop=drop,
                dropped_of=[s.store_name for s in self._slots if s.dropped is None],
            )
            for name, reason in reply.dropped:
                for other in self._slots:
                    if other.store_name == name and other.dropped is None:
                        self._drop(
                            other,
                            Outcome(
                                kind=ErrorKind.AUTH,
                                message=f"dropped by another process sharing it: {reason}",
                            ),
                            share=False,
                        )
            if slot.dropped is not None:
                self._unreserve(want)
                return False
            if reply.wait_s <= 0:
                return True
            # At least a millisecond: a store's clock and ours never agree to the last bit.
            await trio.sleep(max(reply.wait_s, 0.001))

    def _store_buckets(self, slot: _Slot, rates: RateModel, tokens: float) -> list[StoreBucket]:
        """The buckets a request of ``tokens`` on ``slot`` takes from in the store.

        Their capacity is ``STORE_SLACK_S`` of rate short of the limit's: requests granted
        one after another by the store leave from different processes (hosts), whose delays
        to the server differ, so two of them may arrive closer together than they were
        granted. The server's bucket then stays that many units ahead of the store's, which
        absorbs the jitter instead of answering 429 (the cost: a burst shorter by as much).
        """
        buckets = []
        name = f"{slot.store_name}:{rates.model}"
        endpoint = slot.endpoint
        for bucket, amount, bucket_name in (
            (rates.requests, 1.0, f"{name}:r"),
            (rates.tokens, tokens, f"{name}:t"),
            (endpoint.requests, 1.0, f"{endpoint.store_name}:r"),
            (endpoint.tokens, tokens, f"{endpoint.store_name}:t"),
        ):
            if bucket.rate is not None:
                capacity = max(amount, bucket.capacity - bucket.rate * STORE_SLACK_S, 1.0)
                buckets.append(StoreBucket(bucket_name, amount, bucket.rate, capacity))
        return buckets

    def _share_refund(self, slot: _Slot, rates: RateModel, requests: float, tokens: float) -> None:
        """Units given back here are given back in the store too, with the next take."""
        if self._store is None:
            return
        key = f"{slot.store_name}:{rates.model}"
        endpoint = slot.endpoint
        for name, bucket, amount in (
            (f"{key}:r", rates.requests, requests),
            (f"{key}:t", rates.tokens, tokens),
            (f"{endpoint.store_name}:r", endpoint.requests, requests),
            (f"{endpoint.store_name}:t", endpoint.tokens, tokens),
        ):
            if amount > 0 and bucket.rate is not None:
                capacity = max(bucket.capacity - bucket.rate * STORE_SLACK_S, 1.0)
                self._refunds.append(StoreBucket(name, amount, bucket.rate, capacity))

    def _choose(
        self,
        tokens: float,
        model: str | None,
        max_blocked: float,
        route: int | None = None,
        *,
        urgent: bool = False,
    ) -> tuple[_Slot, RateModel]:
        """The key that can send soonest, or ``Unavailable``."""
        now = trio.current_time()
        best: tuple[_Slot, RateModel] | None = None
        best_rank: tuple[float, int, int] = (math.inf, 0, 0)
        cooling_for = math.inf
        too_large: RateModel | None = None
        alive = False
        slots = self._slots if route is None else self._endpoints[route].slots
        for slot in slots:
            endpoint = slot.endpoint
            if slot.dropped is not None or endpoint.unreachable is not None:
                continue
            alive = True
            rates = slot.rates(endpoint.model or model or endpoint.provider.model)
            if rates.recover(now):
                self._retime(slot, rates)
            if rates.too_large(tokens):
                too_large = rates
                continue
            cooling = rates.cooling_until - now
            if cooling > max_blocked:
                cooling_for = min(cooling_for, cooling)
                continue
            blocked = self._blocked(slot, rates, now)
            delay = blocked
            if blocked < math.inf:
                # An urgent request goes ahead of the waiters: what they reserved is its too.
                delay = max(
                    rates.delay(tokens, blocked, ahead=urgent, room=self._room(urgent, now)),
                    endpoint.delay(tokens, blocked),
                )
            rank = (delay, slot.in_flight, slot.granted)
            if best is None or rank < best_rank:
                best, best_rank = (slot, rates), rank
        if best is not None:
            return best
        if not alive:
            raise Unavailable(self._nothing_left(slots))
        if cooling_for < math.inf:
            raise Unavailable(
                Outcome(
                    kind=ErrorKind.RATE_LIMITED,
                    message=f"not sent: every key is rate-limited for {cooling_for:.0f}s more "
                    "(the server's Retry-After), longer than RetryPolicy.max_retry_after="
                    f"{max_blocked:g}s",
                    sent=False,
                )
            )
        assert too_large is not None
        raise Unavailable(
            Outcome(
                kind=ErrorKind.BAD_REQUEST,
                message=f"not sent: about {tokens:.0f} tokens, more than the key's limit of "
                f"{too_large.ceiling()[1]:.0f} tokens/min (lower max_tokens, or split it)",
                sent=False,
                code="request_too_large",
            )
        )

    def _nothing_left(self, slots: Sequence[_Slot]) -> Outcome:
        """Why none of ``slots`` is left: the endpoint is unreachable, or every key was
        dropped (and what the server said about each)."""
        for slot in slots:
            if slot.endpoint.unreachable is not None:
                return slot.endpoint.unreachable
        dropped = [(s.key, s.dropped) for s in slots if s.dropped is not None]
        reasons = "; ".join(f"{key.fingerprint}: {why.message}" for key, why in dropped[:3])
        if len(dropped) > 3:
            reasons += f"; and {len(dropped) - 3} more"
        return attrs.evolve(
            dropped[-1][1],
            message=f"not sent: every API key was dropped ({reasons})",
            sent=False,
        )

    def _blocked(self, slot: _Slot, rates: RateModel, now: float) -> float:
        """Seconds until ``slot`` may send at all (cooling, breakers); ``inf``: until woken."""
        blocked = rates.cooling_until - now
        for breaker in (slot.breaker, slot.endpoint.breaker):
            if breaker is not None:
                blocked = max(blocked, breaker.delay())
        return max(0.0, blocked)

    def _deadline(self, want: _Want, now: float) -> float:
        """When ``want`` may go (its reservation made), or when it gives up waiting for a key
        that may not send at all, whichever comes first."""
        deadline = now + self._reserve(want, now)
        if self._blocked(want.slot, want.rates, now) > 0:
            deadline = min(deadline, want.give_up)
        return deadline

    def _blocked_outcome(self, slot: _Slot, rates: RateModel, waited: float) -> Outcome:
        """Why a request gave up waiting for ``slot``: its cooldown, or a breaker's last
        failure."""
        now = trio.current_time()
        failure = None
        for breaker, last in (
            (slot.endpoint.breaker, slot.endpoint.last_failure),
            (slot.breaker, slot.last_failure),
        ):
            if breaker is not None and breaker.delay() > 0 and last is not None:
                failure = last
        if failure is None or rates.cooling_until > now:
            return Outcome(
                kind=ErrorKind.RATE_LIMITED,
                message=f"not sent: the key was rate-limited for longer than {waited:g}s",
                sent=False,
            )
        return attrs.evolve(
            failure,
            message=f"not sent: the endpoint kept failing for more than {waited:g}s "
            f"(its breaker is open; last: {failure.message})",
            sent=False,
        )

    def _reserve(self, want: _Want, now: float) -> float:
        """Reserve ``want``'s units no earlier than its key may send; the wait (``inf``:
        blocked until woken, nothing reserved)."""
        blocked = self._blocked(want.slot, want.rates, now)
        if blocked == math.inf:
            want.reserved = False
            return NEVER
        want.reserved = True
        # The moment it can go by every bucket; each is then charged at that very moment.
        endpoint = want.slot.endpoint
        moment = max(
            blocked,
            want.rates.delay(want.tokens, blocked, room=self._room(want.urgent, now)),
            endpoint.delay(want.tokens, blocked),
        )
        key_wait, key_taken = want.rates.reserve(
            want.tokens, moment, room=self._room(want.urgent, now)
        )
        endpoint_wait, endpoint_taken = endpoint.reserve(want.tokens, moment)
        want.taken = (key_taken, endpoint_taken)
        return max(key_wait, endpoint_wait)

    def _room(self, urgent: bool, now: float) -> bool:
        """Whether a request leaves the interactive lane room: a batch one, while interactive
        requests come."""
        return not urgent and now < self._room_until

    def _unreserve(self, want: _Want) -> None:
        if want.reserved:
            want.reserved = False
            want.rates.give_back(want.tokens, want.taken[0])
            want.slot.endpoint.refund(want.tokens, want.taken[1])

    def _grant(self, want: _Want, now: float) -> Lease:
        slot = want.slot
        self._recent_lanes.append(not want.urgent)
        slot.in_flight += 1
        self._granted += 1
        slot.granted = self._granted
        for breaker in (slot.breaker, slot.endpoint.breaker):
            if breaker is not None:
                breaker.started()
        want.reserved = False
        return Lease(self, slot, want.rates, want.rates.book(want.tokens, now))

    # --- re-timing and waking ------------------------------------------------------------
    #
    # A bucket keeps only a level, not who holds which moment: giving back a reservation that
    # others came after (a waiter woken, cancelled or re-timed) frees *its* moment, while those
    # behind keep theirs — a newcomer would then take a moment someone still holds. So whoever
    # gives back a waiter's units re-times everyone behind it in every bucket they share: the
    # same key and model, and the endpoint's own buckets when it has limits.

    def _behind(self, first: int, waiters: Iterable[Waiter[_Want]]) -> list[Waiter[_Want]]:
        """The reserved waiters that share a bucket with any of ``waiters`` and came after
        number ``first``, in queue order."""
        return self._sharing(first, [w.data for w in waiters])

    def _sharing(self, first: int, wants: Iterable[_Want]) -> list[Waiter[_Want]]:
        """The waiters that share a bucket with any of ``wants`` and came after number
        ``first``, in queue order (urgent ones first, then by arrival)."""
        wants = list(wants)
        models = {id(w.rates) for w in wants}
        endpoints = {id(w.slot.endpoint) for w in wants if w.slot.endpoint.limited}
        found: dict[int, Waiter[_Want]] = {}
        for slot in self._slots:
            shares = id(slot.endpoint) in endpoints
            for rates in slot.models.values():
                if not shares and id(rates) not in models:
                    continue
                for waiter in slot.queues[rates.model]:
                    if waiter.seq > first and not waiter.leaving:
                        found[waiter.seq] = waiter
        return sorted(found.values(), key=_queue_order)

    def _rearrange(self, moved: list[Waiter[_Want]], *, wake: bool) -> None:
        """Give back the units of ``moved`` and of everyone behind them; then wake ``moved``
        to choose again (``wake``) or re-time them too; re-time the rest in arrival order."""
        moved = [w for w in moved if not w.leaving]
        if not moved:
            return
        behind = self._behind(min(w.seq for w in moved), moved)
        for waiter in (*moved, *behind):
            self._unreserve(waiter.data)
        if wake:
            for waiter in moved:
                WaitQueue.wake(waiter)
            moving = set(moved)
            again = [w for w in behind if w not in moving]
        else:
            again = sorted({*moved, *behind}, key=_queue_order)
        now = trio.current_time()
        for waiter in again:
            WaitQueue.retime(waiter, self._deadline(waiter.data, now))

    def _make_room(self, want: _Want) -> list[Waiter[_Want]]:
        """Let an urgent request reserve ahead of the batch: give back the reservations of
        the batch requests waiting for the same buckets (they are re-reserved behind it).

        The batch keeps a guaranteed share: while it got less than ``BATCH_SHARE`` of the
        recent grants, urgent requests queue like everyone else."""
        recent = self._recent_lanes
        if len(recent) >= _SHARE_WINDOW and sum(recent) / len(recent) < BATCH_SHARE:
            return []
        passed = [w for w in self._sharing(0, [want]) if not w.data.urgent and w.data.reserved]
        for waiter in passed:
            self._unreserve(waiter.data)
        return passed

    def _retime(self, slot: _Slot, rates: RateModel) -> None:
        """The buckets of ``rates`` changed: re-reserve its waiters (and those behind them) in
        arrival order and move their deadlines; nobody is woken."""
        self._rearrange(list(slot.queues[rates.model]), wake=False)

    def _retime_behind(self, gone: Waiter[_Want]) -> None:
        """``gone`` left the queue and gave its units back: re-time those who came after."""
        behind = self._behind(gone.seq, [gone])
        for waiter in behind:
            self._unreserve(waiter.data)
        now = trio.current_time()
        for waiter in behind:
            WaitQueue.retime(waiter, self._deadline(waiter.data, now))

    def _retime_slot(self, slot: _Slot) -> None:
        self._rearrange(list(slot.waiters()), wake=False)

    def _wake(self, waiters: Iterable[Waiter[_Want]]) -> None:
        """Release these waiters to choose a key again (theirs cooled, went or broke)."""
        self._rearrange(list(waiters), wake=True)

    def _wake_everyone(self) -> None:
        self._wake(self._all_waiters())

    # --- settling ------------------------------------------------------------------------
    def _abandon(self, slot: _Slot, rates: RateModel, booking: Booking, sent: bool) -> None:
        """A lease left without an outcome (cancelled): give back what it holds."""
        slot.in_flight -= 1
        for breaker in (slot.breaker, slot.endpoint.breaker):
            if breaker is not None:
                breaker.finished()
        if not sent:
            rates.unbook(booking)
            slot.endpoint.refund(booking.tokens)
            self._share_refund(slot, rates, 1.0, booking.tokens)
            self._retime(slot, rates)

    def _settle(
        self, slot: _Slot, rates: RateModel, booking: Booking, outcome: Outcome, sent: bool
    ) -> None:
        """Everything an attempt's outcome does to its key, limits and breakers."""
        slot.in_flight -= 1
        endpoint = slot.endpoint
        now = trio.current_time()
        if not sent:
            for breaker in (slot.breaker, endpoint.breaker):
                if breaker is not None:
                    breaker.finished()
            rates.unbook(booking)
            endpoint.refund(booking.tokens)
            self._share_refund(slot, rates, 1.0, booking.tokens)
            self._retime(slot, rates)
            return
        retime = False
        rule = POLICY[outcome.kind] if outcome.kind is not None else None
        if outcome.status is not None:
            endpoint.answered = True
            endpoint.connect_failures = 0
        if rule is None:
            retime |= rates.succeeded(now)
            usage = outcome.usage
            if usage is not None:
                retime |= rates.reconcile(booking, usage.total_tokens)
                self._share_refund(slot, rates, 0.0, booking.tokens - usage.total_tokens)
        if rule is not None and rule.key is KeyAction.COOL:
            # Those waiting on this key may be better off on another: they choose again. Their
            # units go back first, so that the cooldown's setting of the buckets stands.
            self._wake(iter(slot.queues[rates.model]))
            endpoint.tokens.refund(booking.tokens)
            cooling = rates.refused(outcome.limits, outcome.retry_after, booking, now)
            if self._store is not None:
                self._share_refund(slot, rates, 0.0, booking.tokens)
                self._cools.append((f"{slot.store_name}:{rates.model}", cooling))
        else:
            retime |= rates.observe(outcome.limits, booking, now)
        if rule is not None and rule.key is KeyAction.DROP:
            # Refused as the key's fault: the server did not count it against the account.
            rates.unbook(booking)
            endpoint.refund(booking.tokens)
            self._share_refund(slot, rates, 1.0, booking.tokens)
            self._drop(slot, outcome)
        if (
            outcome.code == "connect_error"
            and not endpoint.answered
            and endpoint.unreachable is None
        ):
            endpoint.connect_failures += 1
            if endpoint.connect_failures >= UNREACHABLE_AFTER:
                endpoint.unreachable = attrs.evolve(
                    outcome,
                    message=f"not sent: {outcome.message}; no request to this endpoint has "
                    "succeeded (check the base URL)",
                    sent=False,
                )
                self._events.emit(
                    ev.BREAKER_OPENED,
                    scope="provider",
                    key_id=None,
                    open_s=math.inf,
                    reason="unreachable",
                )
                self._wake(endpoint.waiters())
        succeeded = rule is None
        failure = outcome.kind if rule is not None and rule.breaker else None
        if failure is not None:
            slot.last_failure = endpoint.last_failure = outcome
        changed = self._record(slot.breaker, succeeded, failure, slot.key.fingerprint)
        if changed is BreakerState.OPEN:
            self._wake(slot.waiters())
        elif changed is BreakerState.CLOSED:
            retime = False
            self._retime_slot(slot)
            self._wake(w for w in self._all_waiters() if not w.data.reserved)
        if self._record(endpoint.breaker, succeeded, failure, None) is not None:
            # Open: its waiters may go to another endpoint. Closed: everyone held back by the
            # half-open probe goes again now, not after a cool-off.
            self._wake(endpoint.waiters())
        if retime:
            self._retime(slot, rates)

    def _drop(self, slot: _Slot, outcome: Outcome, *, share: bool = True) -> None:
        if slot.dropped is not None:
            return
        slot.dropped = outcome
        if share and self._store is not None:
            self._drops.append((slot.store_name, outcome.message))
        self._events.emit(ev.KEY_DROPPED, key_id=slot.key.fingerprint, reason=outcome.message)
        if any(s.dropped is None for s in self._slots):
            self._wake(slot.waiters())
        else:
            self._wake_everyone()

    def _record(
        self,
        breaker: CircuitBreaker | None,
        succeeded: bool,
        failure: ErrorKind | None,
        key_id: str | None,
    ) -> BreakerState | None:
        """Tell ``breaker`` how an attempt ended; announce and return a change of state."""
        if breaker is None:
            return None
        changed = breaker.record(succeeded, failure)
        announce(
            self._events,
            breaker,
            changed,
            scope="provider" if key_id is None else "key",
            key_id=key_id,
            failure=failure,
        )
        return changed

    def _all_waiters(self) -> Iterator[Waiter[_Want]]:
        for slot in self._slots:
            yield from slot.waiters()

    # --- reading -------------------------------------------------------------------------
    def statistics(self) -> tuple[KeyStatistics, ...]:
        """A snapshot of every key (its default model's limits)."""
        now = trio.current_time()
        stats = []
        for slot in self._slots:
            # A route that overrides the model sends everything there: those are its limits.
            model = slot.endpoint.model or slot.endpoint.provider.model
            rates = slot.rates(model)
            rpm, tpm = rates.in_force()
            cooling = max((r.cooling_until for r in slot.models.values()), default=-math.inf)
            down, down_s = None, 0.0
            for scope, breaker in (("endpoint", slot.endpoint.breaker), ("key", slot.breaker)):
                if breaker is not None and breaker.state is not BreakerState.CLOSED:
                    down, down_s = scope, breaker.open_for
                    break
            if slot.endpoint.unreachable is not None:
                down, down_s = "unreachable", 0.0
            stats.append(
                KeyStatistics(
                    key_id=slot.key.fingerprint,
                    in_flight=slot.in_flight,
                    rpm=rpm,
                    tpm=tpm,
                    requests_left=None if rates.requests.rate is None else rates.requests.level,
                    tokens_left=None if rates.tokens.rate is None else rates.tokens.level,
                    cooling_s=max(0.0, cooling - now),
                    dropped=None if slot.dropped is None else slot.dropped.message,
                    down=down,
                    down_s=down_s,
                    provider=slot.endpoint.provider.name,
                    model=model,
                )
            )
        return tuple(stats)

    @property
    def alive(self) -> int:
        """How many keys are not dropped."""
        return sum(1 for slot in self._slots if slot.dropped is None)


def _queue_order(waiter: Waiter[_Want]) -> tuple[bool, int]:
    """Urgent waiters first, then by arrival."""
    return (not waiter.data.urgent, waiter.seq)


def _bucket(per_minute: float | None, burst_s: float) -> TokenBucket:
    if per_minute is None:
        return TokenBucket(None)
    rate = per_minute / 60.0
    return TokenBucket(rate, max(1.0, rate * burst_s))
