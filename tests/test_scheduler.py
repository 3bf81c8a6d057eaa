"""The scheduler: pick-soonest, the fair queue, cooldowns, drops, reconciliation, learning."""

from __future__ import annotations

import collections
import functools
import itertools
import math
from typing import Any

import pytest
import trio
import trio.testing

from trio_llm import ErrorKind, Limits, OpenAICompatible, Usage
from trio_llm._breaker import BreakerPolicy
from trio_llm._events import KEY_COOLING, KEY_DROPPED, LIMITS_UPDATED, EventHub
from trio_llm._headers import RateLimitInfo
from trio_llm._outcome import NO_LIMITS, Outcome
from trio_llm._providers import Completion
from trio_llm._rate_model import SEND_MARGIN_S
from trio_llm._scheduler import EndpointSpec, KeyStatistics, Lease, Scheduler, Unavailable
from trio_llm._secrets import ApiKey

A = "sk-test-aaaaaaaaaaaaaaaa1111"
B = "sk-test-bbbbbbbbbbbbbbbb2222"
FP_A = "sk-…1111"
FP_B = "sk-…2222"
M = SEND_MARGIN_S
PROVIDER = OpenAICompatible(base_url="http://llm.test/v1", model="gpt-4o-mini")


class Events:
    """A consumer for EventHub that keeps every event dict."""

    def __init__(self) -> None:
        self.all: list[dict[str, Any]] = []

    def __call__(self, _logger: Any, _method: str, event_dict: Any) -> None:
        self.all.append(dict(event_dict))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in e.items() if k != "event"} for e in self.all if e["event"] == name
        ]


def make(
    *keys: str,
    limits: Limits,
    provider_limits: Limits | None = None,
    breaker: BreakerPolicy | None = None,
) -> tuple[Scheduler, Events]:
    """A scheduler over one endpoint whose events are recorded."""
    events = Events()
    spec = EndpointSpec(
        provider=PROVIDER,
        keys=tuple(ApiKey(k) for k in keys),
        limits=limits,
        provider_limits=provider_limits or Limits(),
    )
    return Scheduler([spec], EventHub((events,)), breaker), events


async def lease(scheduler: Scheduler, tokens: float = 1, **kwargs: Any) -> Lease:
    """A lease for a request of ``tokens`` (waiting as long as it takes)."""
    kwargs.setdefault("max_blocked", math.inf)
    return await scheduler.lease(tokens, None, **kwargs)


def answered(held: Lease, *, limits: RateLimitInfo = NO_LIMITS, used: int | None = None) -> None:
    """Settle ``held`` as a 200 (with ``used`` total tokens, if given)."""
    usage = None if used is None else Usage(prompt_tokens=used)
    held.sending()
    held.settle(
        Outcome(
            completion=Completion(text="", finish_reason="stop", usage=usage),
            status=200,
            limits=limits,
        )
    )


def refused(held: Lease, retry_after: float | None, limits: RateLimitInfo = NO_LIMITS) -> None:
    """Settle ``held`` as a 429."""
    held.sending()
    held.settle(
        Outcome(kind=ErrorKind.RATE_LIMITED, status=429, retry_after=retry_after, limits=limits)
    )


def dropped(held: Lease, message: str = "HTTP 401: bad key") -> None:
    """Settle ``held`` as a 401."""
    held.sending()
    held.settle(Outcome(kind=ErrorKind.AUTH, status=401, message=message))


def failed(held: Lease, kind: ErrorKind = ErrorKind.SERVER_ERROR) -> None:
    """Settle ``held`` as an endpoint failure (a 5xx)."""
    held.sending()
    held.settle(Outcome(kind=kind, status=502, message="HTTP 502: bad gateway"))


def stats_of(scheduler: Scheduler, key_id: str) -> KeyStatistics:
    """The statistics of one key."""
    (stats,) = [s for s in scheduler.statistics() if s.key_id == key_id]
    return stats


def left(scheduler: Scheduler, key_id: str) -> float:
    """Requests left in one key's bucket."""
    value = stats_of(scheduler, key_id).requests_left
    assert value is not None
    return value


async def take(scheduler: Scheduler, tokens: float = 1) -> str:
    """Lease and answer at once; the fingerprint of the key used."""
    held = await lease(scheduler, tokens)
    answered(held)
    return held.key.fingerprint


# --- choosing -----------------------------------------------------------------------------


async def test_picks_the_key_that_can_send_soonest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Keys ready alike share the requests evenly (a full bucket idle is refill wasted), and
    once they are drained each request goes when the soonest of them can send."""
    scheduler, _ = make(A, B, limits=Limits(rpm=600))  # 10/s, 10 per burst
    assert scheduler.alive == 2
    # Half full, the second key half a request lower: they refill out of step.
    assert left(scheduler, FP_A) == 5.0
    assert left(scheduler, FP_B) == 4.5
    with trio.fail_after(10):
        used = []
        while trio.current_time() == 0.0:
            used.append(await take(scheduler))
    at_once = used[:-1]
    assert at_once[: 2 * 3] == [FP_A, FP_B] * 3  # alternating while both have room
    assert abs(at_once.count(FP_A) - at_once.count(FP_B)) <= 1
    # Drained, the next ones come one key after the other, half an interval apart.
    times = []
    for _ in range(4):
        await take(scheduler)
        times.append(trio.current_time())
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert gaps == [0.05, 0.05, 0.05]


async def test_equally_ready_keys_share_by_fewest_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Between keys ready alike, the one with fewer requests in flight is used."""
    scheduler, _ = make(A, B, limits=Limits(rpm=60_000))
    with trio.fail_after(10):
        leases = [await lease(scheduler) for _ in range(4)]
    assert [held.key.fingerprint for held in leases] == [FP_A, FP_B, FP_A, FP_B]
    assert [s.in_flight for s in scheduler.statistics()] == [2, 2]
    for held in leases:
        answered(held)
    assert [s.in_flight for s in scheduler.statistics()] == [0, 0]


async def test_uneven_keys_are_each_used_to_their_own_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Over a minute, a key with half the limit gets half the requests; the total is the sum."""
    scheduler, _ = make(A, B, limits=Limits(rpm=120))
    server_rpm = {FP_A: 120.0, FP_B: 60.0}  # B's headers say it has half
    counts: collections.Counter[str] = collections.Counter()

    async def worker() -> None:
        while True:
            held = await lease(scheduler)
            counts[held.key.fingerprint] += 1
            await trio.sleep(0.3)  # latency
            answered(held, limits=RateLimitInfo(requests_limit=server_rpm[held.key.fingerprint]))

    with trio.move_on_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(worker)
    assert stats_of(scheduler, FP_B).rpm == 60.0
    assert counts[FP_A] == pytest.approx(120, abs=3)
    assert counts[FP_B] == pytest.approx(60, abs=3)
    assert counts[FP_A] + counts[FP_B] == pytest.approx(180, abs=4)


async def test_provider_limits_cap_all_keys_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Account-wide limits hold across keys, however much room each key has."""
    scheduler, _ = make(A, B, limits=Limits(rpm=60_000), provider_limits=Limits(rpm=60, burst_s=2))
    times = []
    with trio.fail_after(10):
        for _ in range(4):
            await take(scheduler)
            times.append(trio.current_time())
    # The account's bucket starts full (2) and refills at 1/s, plus the send margin.
    assert times == pytest.approx([0, M, 1 + M, 2 + M])


async def test_a_request_larger_than_the_tokens_per_minute_is_refused_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request that can never fit (more tokens than the key's tokens/min) fails at once,
    saying why, instead of waiting for a bucket that will never hold it."""
    scheduler, _ = make(A, limits=Limits(rpm=600, tpm=10_000))
    with pytest.raises(Unavailable) as info:
        await lease(scheduler, 12_000)
    assert info.value.outcome.kind is ErrorKind.BAD_REQUEST
    assert "10000 tokens/min" in info.value.outcome.message
    assert not info.value.outcome.sent
    assert trio.current_time() == 0.0


# --- the fair queue -----------------------------------------------------------------------


async def test_a_cancelled_waiter_gives_its_place_back_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When a waiter gives up, nobody is granted out of turn: two 1,500-token requests are
    never let through at one instant against a 1,000-token burst."""
    scheduler, _ = make(A, limits=Limits(rpm=60_000, tpm=60_000))  # 1,000 tokens/s and burst
    await trio.sleep(10)  # let the bucket fill
    granted: list[float] = []

    async def want(tokens: float, *, give_up: float | None = None) -> None:
        with trio.move_on_after(math.inf if give_up is None else give_up):
            held = await lease(scheduler, tokens)
            granted.append(trio.current_time())
            answered(held, used=int(tokens))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(want, 1_000)  # the whole burst, now
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(functools.partial(want, 1_500, give_up=0.1))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(want, 1_500)
        await trio.sleep(0.5)  # the first 1,500 gave up at 0.1
        nursery.start_soon(want, 1_500)
    gaps = [b - a for a, b in itertools_pairwise(granted)]
    assert len(granted) == 3
    # Each request needs a full bucket (1,000 tokens), which refills at 1,000/s: a second.
    assert all(gap >= 1.0 for gap in gaps)


def itertools_pairwise(values: list[float]) -> list[tuple[float, float]]:
    """Consecutive pairs of ``values``."""
    return list(itertools.pairwise(values))


async def test_waiters_resume_at_the_rate_after_a_cooldown_not_as_a_burst(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After a 429's Retry-After the waiters of a key go one per 1/rate, not all at once."""
    scheduler, _ = make(A, limits=Limits(rpm=600))  # 10/s
    while left(scheduler, FP_A) >= 1 + 10 * M:
        await take(scheduler)  # spend the burst: whoever comes next must wait
    held = await lease(scheduler)
    granted: list[float] = []

    async def want() -> None:
        answered(await lease(scheduler))
        granted.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(want)
        await trio.testing.wait_all_tasks_blocked()
        refused(held, 5.0)
    assert len(granted) == 30
    assert granted[0] == pytest.approx(5.0, abs=0.01)
    assert min(b - a for a, b in itertools_pairwise(granted)) == pytest.approx(0.1, abs=0.003)
    # No one-second window holds more than the rate and one request.
    for start in granted:
        assert sum(start <= t < start + 1 for t in granted) <= 11


async def test_a_waiter_that_gives_up_on_a_cooling_key_gives_nobody_a_place_out_of_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Waiters reserved behind a cooldown; the first gives up (``max_blocked``) before it
    ends: its moment goes back, and those behind are re-timed, so a newcomer does not take a
    moment one of them still holds (two sends at one instant against a burst of one)."""
    scheduler, _ = make(A, limits=Limits(rpm=60))  # 1/s, burst 1
    while left(scheduler, FP_A) >= 1 + M:
        await take(scheduler)
    refused(await lease(scheduler), 10.0)  # the key cools for 10 s
    granted: list[float] = []

    async def want(max_blocked: float) -> None:
        try:
            held = await lease(scheduler, max_blocked=max_blocked)
        except Unavailable:
            return
        granted.append(trio.current_time())
        answered(held)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(want, 5.0)  # gives up at 5 s, its moment (10 s) unused
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(2):
            nursery.start_soon(want, math.inf)
            await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(6)
        nursery.start_soon(want, math.inf)  # comes after the first one gave up
    print("GRANTED", granted)
    assert len(granted) == 3
    assert min(b - a for a, b in itertools_pairwise(granted)) >= 1.0 - 2 * M


async def test_rate_limited_cools_that_key_while_others_carry_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After a 429 its key rests for the Retry-After; the other key serves meanwhile."""
    scheduler, events = make(A, B, limits=Limits(rpm=600))
    with trio.fail_after(10):
        held = await lease(scheduler)
    assert held.key.fingerprint == FP_A
    refused(held, 30.0)
    assert events.named(KEY_COOLING) == [{"key_id": FP_A, "cooling_s": 30.0}]
    with trio.fail_after(10):
        used = [await take(scheduler) for _ in range(8)]
    assert used == [FP_B] * 8
    assert trio.current_time() < 1
    assert stats_of(scheduler, FP_A).cooling_s == pytest.approx(30.0 - trio.current_time())
    assert stats_of(scheduler, FP_B).cooling_s == 0.0


@pytest.mark.parametrize(("retry_after", "cooling"), [(7.5, 7.5), (None, 1.0), (0.25, 0.25)])
async def test_rate_limited_key_sends_again_exactly_after_retry_after(
    autojump_clock: trio.testing.MockClock, retry_after: float | None, cooling: float
) -> None:
    """A cooled key's next request goes exactly when the Retry-After (default 1 s) is over."""
    scheduler, events = make(A, limits=Limits(rpm=600))
    with trio.fail_after(10):
        refused(await lease(scheduler), retry_after)
        await take(scheduler)
    assert trio.current_time() == pytest.approx(cooling + M)
    assert events.named(KEY_COOLING) == [{"key_id": FP_A, "cooling_s": cooling}]


async def test_sleepers_on_a_key_that_gets_a_429_move_to_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Tasks waiting for a key that is then cooled re-choose and go on the other key."""
    scheduler, _ = make(A, B, limits=Limits(rpm=60))  # 1/s
    with trio.fail_after(10):
        first = await lease(scheduler)
        second = await lease(scheduler)
    assert {first.key.fingerprint, second.key.fingerprint} == {FP_A, FP_B}
    got: list[tuple[str, float]] = []

    async def wait_for_one() -> None:
        held = await lease(scheduler)
        got.append((held.key.fingerprint, trio.current_time()))

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_one)
            await trio.testing.wait_all_tasks_blocked()
            sleeping_on = first if left(scheduler, first.key.fingerprint) < 0 else second
            other = second if sleeping_on is first else first
            refused(sleeping_on, 60.0)
    assert len(got) == 1
    assert got[0][0] == other.key.fingerprint
    assert got[0][1] < 60


async def test_no_key_waits_past_the_retry_after_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When every key cools for longer than the cap, a request fails at once with the server's
    Retry-After in the message, instead of sleeping out the cooldown (on each key in turn)."""
    scheduler, _ = make(A, B, limits=Limits(rpm=600))
    refused(await lease(scheduler), 3600.0)
    refused(await lease(scheduler), 3600.0)
    with pytest.raises(Unavailable) as info:
        await lease(scheduler, max_blocked=120.0)
    outcome = info.value.outcome
    assert outcome.kind is ErrorKind.RATE_LIMITED
    assert "3600s" in outcome.message
    assert "max_retry_after=120s" in outcome.message
    assert trio.current_time() == 0.0


async def test_waiters_leave_a_key_whose_cooldown_passes_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Requests already waiting when their key gets a 3600 s cooldown fail at once."""
    scheduler, _ = make(A, limits=Limits(rpm=60))
    held = await lease(scheduler)
    start = trio.current_time()
    outcomes: list[ErrorKind | None] = []

    async def want() -> None:
        with pytest.raises(Unavailable) as info:
            await lease(scheduler, max_blocked=120.0)
        outcomes.append(info.value.outcome.kind)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(want)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.5)
        refused(held, 3600.0)
    assert outcomes == [ErrorKind.RATE_LIMITED] * 5
    assert trio.current_time() == start + 0.5


async def test_a_429_with_headers_is_booked_at_the_rate_they_teach(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Learn first, then book: with rpm configured 200 x too high, a first 429 whose headers
    say 30/min resumes after its Retry-After at 30/min (not after Retry-After x 200)."""
    scheduler, _ = make(A, limits=Limits(rpm=6000))
    held = await lease(scheduler)
    refused(
        held,
        2.0,
        RateLimitInfo(
            requests_limit=30, requests_remaining=0, requests_reset_s=2.0, retry_after_s=2.0
        ),
    )
    times = []
    for _ in range(3):
        await take(scheduler)
        times.append(trio.current_time())
    assert times == pytest.approx([2.0 + M, 4.0 + 2 * M, 6.0 + 3 * M], abs=0.01)


async def test_unexpected_429_lowers_the_rate_then_it_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Without rate-limit headers a 429 cuts the rate by a quarter; it climbs back at a fifth
    of the limit per second without such 429s, and the waiters already queued follow it."""
    scheduler, events = make(A, limits=Limits(rpm=600))
    with trio.fail_after(100):
        first, straggler = await lease(scheduler), await lease(scheduler)
        refused(first, None)
        assert stats_of(scheduler, FP_A).rpm == pytest.approx(450.0)
        assert events.named(LIMITS_UPDATED) == [
            {
                "key_id": FP_A,
                "model": "gpt-4o-mini",
                "rpm": pytest.approx(450.0),
                "tpm": None,
                "reason": "rate_limited",
            }
        ]
        # A 429 for a request sent before the first was answered does not cut again.
        await trio.sleep(0.5)
        refused(straggler, None)
        assert stats_of(scheduler, FP_A).rpm == pytest.approx(450.0)
        # One sent after it does.
        refused(await lease(scheduler), None)
        assert stats_of(scheduler, FP_A).rpm == pytest.approx(337.5)
        # Recovery: a fifth of the limit per second, applied as the key is used.
        await trio.sleep(10)
        await take(scheduler)
        assert stats_of(scheduler, FP_A).rpm == pytest.approx(600.0)


async def test_headerless_429s_cool_for_longer_each_time_then_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """429s that say nothing cool the key 1, 2, 4, 4 s; a success resets it."""
    scheduler, events = make(A, limits=Limits(rpm=60_000))
    for _ in range(4):
        refused(await lease(scheduler), None)
    answered(await lease(scheduler))
    refused(await lease(scheduler), None)
    assert [e["cooling_s"] for e in events.named(KEY_COOLING)] == [1.0, 2.0, 4.0, 4.0, 1.0]


async def test_headerless_429s_with_no_limits_learn_the_recent_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With no limit known, a 429 that says nothing takes what got through in the last minute
    as the limit, so the key resumes at that pace instead of in bursts."""
    scheduler, events = make(A, limits=Limits())
    for _ in range(30):
        await take(scheduler)
    refused(await lease(scheduler), None)
    assert stats_of(scheduler, FP_A).rpm == 30.0
    assert [e["reason"] for e in events.named(LIMITS_UPDATED)] == ["rate_limited"]


async def test_429_does_not_lower_the_rate_of_a_key_with_rate_headers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Where the server sends rate-limit headers, a lone 429 cools the key but keeps its rate."""
    scheduler, events = make(A, limits=Limits(rpm=600))
    with trio.fail_after(10):
        answered(await lease(scheduler), limits=RateLimitInfo(requests_limit=600))
        held = await lease(scheduler)
    refused(held, 2.0, RateLimitInfo(requests_limit=600))
    assert stats_of(scheduler, FP_A).rpm == 600.0
    assert [e["reason"] for e in events.named(LIMITS_UPDATED)] == ["headers"]
    assert stats_of(scheduler, FP_A).cooling_s == 2.0


async def test_a_used_up_daily_window_cools_the_key_until_it_opens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 200 whose headers say a longer-than-a-minute window is used up (Groq's requests per
    day at 0) cools the key until the reset, without a 429."""
    scheduler, _ = make(A, limits=Limits(rpm=600))
    answered(await lease(scheduler), limits=RateLimitInfo(requests_remaining=0, wait_s=90.0))
    await take(scheduler)
    assert trio.current_time() == pytest.approx(90.0, abs=0.01)


# --- dropping -----------------------------------------------------------------------------


async def test_drop_removes_the_key_and_says_so_without_the_secret(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A dropped key is never used again; key.dropped carries its fingerprint, not the secret."""
    scheduler, events = make(A, B, limits=Limits(rpm=600))
    with trio.fail_after(10):
        dropped(await lease(scheduler), "HTTP 401: bad key")
        used = {await take(scheduler) for _ in range(20)}
    assert used == {FP_B}
    assert events.named(KEY_DROPPED) == [{"key_id": FP_A, "reason": "HTTP 401: bad key"}]
    assert A not in repr(events.all)
    assert scheduler.alive == 1
    assert stats_of(scheduler, FP_A).dropped == "HTTP 401: bad key"


async def test_lease_fails_once_every_key_is_dropped_with_the_servers_words(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With every key dropped, lease fails at once, and says what the server said of each."""
    scheduler, _ = make(A, B, limits=Limits(rpm=600))
    with trio.fail_after(10):
        dropped(await lease(scheduler), "HTTP 401: Incorrect API key")
        held = await lease(scheduler)
        held.sending()
        held.settle(
            Outcome(kind=ErrorKind.QUOTA, status=429, message="HTTP 429: insufficient_quota")
        )
        with pytest.raises(Unavailable) as info:
            await lease(scheduler)
    outcome = info.value.outcome
    assert outcome.kind is ErrorKind.QUOTA
    assert outcome.status == 429
    assert f"{FP_A}: HTTP 401: Incorrect API key" in outcome.message
    assert f"{FP_B}: HTTP 429: insufficient_quota" in outcome.message
    assert trio.current_time() == 0.0
    assert scheduler.alive == 0


async def test_waiting_tasks_fail_when_the_last_key_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Tasks already waiting fail as soon as the last key goes."""
    scheduler, _ = make(A, limits=Limits(rpm=600))
    with trio.fail_after(10):
        cooled = await lease(scheduler)
        held = await lease(scheduler)
    refused(cooled, 10.0)
    failed_at: list[float] = []

    async def waiter() -> None:
        with pytest.raises(Unavailable):
            await lease(scheduler)
        failed_at.append(trio.current_time())

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter)
            await trio.sleep(2)
            dropped(held, "HTTP 403: forbidden")
    assert failed_at == [2.0, 2.0, 2.0]


async def test_an_endpoint_that_never_answered_and_refuses_connections_is_unreachable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Connect errors in a row before any answer mark the endpoint unreachable: requests fail
    at once with the connect error's words, instead of backing off for minutes."""
    scheduler, events = make(A, limits=Limits(rpm=60_000))
    for _ in range(3):
        held = await lease(scheduler)
        held.sending()
        held.settle(
            Outcome(
                kind=ErrorKind.CONNECTION,
                message="cannot connect to 127.0.0.1:18099 (ConnectError: refused)",
                code="connect_error",
            )
        )
    with pytest.raises(Unavailable) as info:
        await lease(scheduler)
    assert info.value.outcome.kind is ErrorKind.CONNECTION
    assert "127.0.0.1:18099" in info.value.outcome.message
    assert "check the base URL" in info.value.outcome.message
    assert [e["reason"] for e in events.all if e["event"] == "breaker.opened"] == ["unreachable"]


async def test_an_endpoint_that_answered_once_is_never_called_unreachable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once a request was answered, connect errors are the breaker's business, not a stop."""
    scheduler, _ = make(A, limits=Limits(rpm=60_000))
    answered(await lease(scheduler))
    for _ in range(5):
        held = await lease(scheduler)
        held.sending()
        held.settle(Outcome(kind=ErrorKind.CONNECTION, message="refused", code="connect_error"))
    assert (await lease(scheduler)).key.fingerprint == FP_A


# --- breakers -----------------------------------------------------------------------------


async def test_a_closing_breaker_wakes_everyone_held_back_by_its_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When the half-open probe succeeds, every waiting request goes at once (unlimited key),
    instead of waiting out another cool-off."""
    policy = BreakerPolicy(failures=2, cool_off_s=5.0, probes=1)
    scheduler, _ = make(A, limits=Limits(), breaker=policy)
    failed(await lease(scheduler))
    failed(await lease(scheduler))  # opens for 5 s
    (stats,) = scheduler.statistics()
    assert (stats.down, stats.down_s) == ("endpoint", 5.0)
    granted: list[float] = []

    async def want() -> None:
        answered(await lease(scheduler))
        granted.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        probe_done = trio.Event()

        async def probe() -> None:
            held = await lease(scheduler)
            await probe_done.wait()
            answered(held)

        nursery.start_soon(probe)
        await trio.sleep(5.5)  # the probe has gone (at 5 s) and is out
        for _ in range(10):
            nursery.start_soon(want)
        await trio.sleep(1)
        assert granted == []
        probe_done.set()
    assert granted == [6.5] * 10


# --- reconciling --------------------------------------------------------------------------


async def test_settle_refunds_unused_tokens(autojump_clock: trio.testing.MockClock) -> None:
    """When a request used fewer tokens than estimated, the rest goes back to the bucket."""
    scheduler, _ = make(A, limits=Limits(rpm=600, tpm=60_000))  # 1000 tokens/s
    with trio.fail_after(10):
        held = await lease(scheduler, 400)
    start = stats_of(scheduler, FP_A).tokens_left
    assert start is not None
    answered(held, used=100)
    assert stats_of(scheduler, FP_A).tokens_left == pytest.approx(start + 300)


async def test_settle_charges_tokens_over_the_estimate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When a request used more tokens than estimated, the overrun is charged."""
    scheduler, _ = make(A, limits=Limits(rpm=600, tpm=60_000))
    with trio.fail_after(10):
        held = await lease(scheduler, 400)
    start = stats_of(scheduler, FP_A).tokens_left
    assert start is not None
    answered(held, used=1000)
    assert stats_of(scheduler, FP_A).tokens_left == pytest.approx(start - 600)


async def test_a_lease_left_unsent_gives_everything_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A lease left without sending returns its request and all its tokens."""
    scheduler, _ = make(A, limits=Limits(rpm=600, tpm=60_000))
    before = stats_of(scheduler, FP_A)
    with await lease(scheduler, 400):
        during = stats_of(scheduler, FP_A)
        assert during.in_flight == 1
        assert during.tokens_left == pytest.approx(before.tokens_left - 400)  # type: ignore[operator]
    after = stats_of(scheduler, FP_A)
    assert after.in_flight == 0
    assert after.requests_left == pytest.approx(before.requests_left)
    assert after.tokens_left == pytest.approx(before.tokens_left)


async def test_cancelled_lease_gives_its_reservation_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A task cancelled while waiting for a key leaves the buckets as it found them."""
    scheduler, _ = make(A, limits=Limits(rpm=60, tpm=6000))  # 1 request, 100 tokens per s
    with trio.fail_after(10):
        held = await lease(scheduler)  # leaves the requests bucket short
    before = stats_of(scheduler, FP_A)
    assert before.requests_left is not None
    assert before.tokens_left is not None
    with trio.move_on_after(0.25):
        await lease(scheduler, 50)
    after = stats_of(scheduler, FP_A)
    # Only the refill of the quarter second shows: the reservation is undone exactly.
    assert after.requests_left == pytest.approx(before.requests_left + 0.25)
    assert after.tokens_left == pytest.approx(min(100.0, before.tokens_left + 25))
    answered(held)


# --- learning from headers ----------------------------------------------------------------


async def test_headers_lower_an_over_estimated_bucket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When the server has fewer requests and tokens left than we thought, we believe it."""
    scheduler, _ = make(A, limits=Limits(rpm=600, tpm=60_000))
    with trio.fail_after(10):
        held = await lease(scheduler, 100)
    requests_left = left(scheduler, FP_A)
    tokens_left = stats_of(scheduler, FP_A).tokens_left
    assert tokens_left is not None
    answered(
        held,
        limits=RateLimitInfo(
            requests_remaining=requests_left - 3, tokens_remaining=tokens_left - 300
        ),
    )
    assert left(scheduler, FP_A) == pytest.approx(requests_left - 3)
    assert stats_of(scheduler, FP_A).tokens_left == pytest.approx(tokens_left - 300)


async def test_headers_never_raise_our_level_and_small_gaps_are_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server with more left than we think, or a gap of about one request, changes nothing."""
    scheduler, _ = make(A, limits=Limits(rpm=600, tpm=60_000))
    with trio.fail_after(10):
        held = await lease(scheduler, 100)
        requests_left = left(scheduler, FP_A)
        answered(held, limits=RateLimitInfo(requests_remaining=1000, tokens_remaining=1e6))
        assert left(scheduler, FP_A) == pytest.approx(requests_left)
        held = await lease(scheduler, 100)
    requests_left = left(scheduler, FP_A)
    tokens_left = stats_of(scheduler, FP_A).tokens_left
    assert tokens_left is not None
    answered(
        held,
        limits=RateLimitInfo(
            requests_remaining=requests_left - 0.5,
            tokens_remaining=tokens_left - 50,  # under the 100 estimated
        ),
    )
    assert left(scheduler, FP_A) == pytest.approx(requests_left)
    assert stats_of(scheduler, FP_A).tokens_left == pytest.approx(tokens_left)


async def test_headers_teach_unknown_limits(autojump_clock: trio.testing.MockClock) -> None:
    """With no limits configured, the first headers set rpm and tpm and emit limits.updated."""
    scheduler, events = make(A, limits=Limits())
    with trio.fail_after(10):
        leases = [await lease(scheduler, 100) for _ in range(5)]  # unknown: nothing waits
    assert trio.current_time() == 0.0
    assert stats_of(scheduler, FP_A).rpm is None
    answered(
        leases[0],
        limits=RateLimitInfo(
            requests_limit=600,
            requests_remaining=599,
            requests_reset_s=0.1,
            tokens_limit=90_000,
            tokens_remaining=89_900,
            tokens_reset_s=0.1,
        ),
        used=100,
    )
    stats = stats_of(scheduler, FP_A)
    assert (stats.rpm, stats.tpm) == (600.0, 90_000.0)
    assert stats.requests_left is not None
    assert 0 < stats.requests_left <= 10  # one second's burst at 10/s
    assert events.named(LIMITS_UPDATED) == [
        {"key_id": FP_A, "model": "gpt-4o-mini", "rpm": 600.0, "tpm": 90_000.0, "reason": "headers"}
    ]
    for held in leases[1:]:
        answered(held)


async def test_headers_teach_a_small_burst(autojump_clock: trio.testing.MockClock) -> None:
    """With no limits configured, remaining + reset x rate bounds the bucket's capacity."""
    scheduler, _ = make(A, limits=Limits())
    with trio.fail_after(10):
        held = await lease(scheduler)
    answered(
        held,
        limits=RateLimitInfo(requests_limit=600, requests_remaining=2, requests_reset_s=0.1),
    )
    # 2 left, full again in 0.1 s at 10/s: the server's bucket holds 3.
    assert left(scheduler, FP_A) <= 3
    with trio.fail_after(10):
        while left(scheduler, FP_A) >= 1 + 10 * M:
            await take(scheduler)
    assert trio.current_time() == 0.0
    await trio.sleep(10)
    assert left(scheduler, FP_A) == pytest.approx(3.0)


@pytest.mark.parametrize(("configured", "server", "used"), [(1200, 600, 600), (300, 600, 300)])
async def test_stricter_of_configured_and_server_limit_is_used(
    autojump_clock: trio.testing.MockClock, configured: float, server: float, used: float
) -> None:
    """A configured limit above what the server reports gives way; a lower one stands."""
    scheduler, _ = make(A, limits=Limits(rpm=configured))
    with trio.fail_after(10):
        held = await lease(scheduler)
    answered(held, limits=RateLimitInfo(requests_limit=server))
    assert stats_of(scheduler, FP_A).rpm == used


async def test_each_model_of_a_key_has_its_own_limits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Limits learned from one model's headers apply to that model only (providers enforce
    them per key and model); requests in flight are counted per key."""
    scheduler, _ = make(A, limits=Limits())
    big = await scheduler.lease(1, "gpt-4o-mini", max_blocked=math.inf)
    small = await scheduler.lease(1, "gpt-4o", max_blocked=math.inf)
    assert stats_of(scheduler, FP_A).in_flight == 2
    answered(big, limits=RateLimitInfo(requests_limit=10_000))
    answered(small, limits=RateLimitInfo(requests_limit=500))
    assert big.model == "gpt-4o-mini"
    assert stats_of(scheduler, FP_A).rpm == 10_000  # the default model's
    # 20 requests a model: gpt-4o-mini's burst (166/s) holds them all at once; gpt-4o at
    # 500/min (8.3/s, half its burst at the start) takes more than a second.
    for model in ("gpt-4o-mini", "gpt-4o"):
        for _ in range(20):
            held = await scheduler.lease(1, model, max_blocked=math.inf)
            answered(held)
        if model == "gpt-4o-mini":
            assert trio.current_time() == 0.0
    assert trio.current_time() > 1.5


async def test_waiters_re_reserve_when_headers_lower_the_bucket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Tasks already waiting for a key wait longer once headers show it has less left."""
    scheduler, _ = make(A, limits=Limits(rpm=60, burst_s=10))  # 1/s, 10 per burst
    with trio.fail_after(10):
        leases = [await lease(scheduler)]
        while left(scheduler, FP_A) >= 1 + M:
            leases.append(await lease(scheduler))
    assert trio.current_time() == 0.0
    first = leases[0]
    assert len(leases) >= 4
    admitted: list[float] = []

    async def waiter() -> None:
        await lease(scheduler)
        admitted.append(trio.current_time())

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            level = left(scheduler, FP_A)  # includes the waiter's reservation
            # The server has 4 requests fewer than we thought: it reports, as left after the
            # first request, what we hold (level, plus the waiter's unit not yet sent, plus
            # the leases granted after the first) minus 4.
            reported = level + 1 + (len(leases) - 1) - 4
            answered(first, limits=RateLimitInfo(requests_remaining=reported))
    # The waiter gives its unit back (level - 4 + 1) and waits until 1 + margin is there.
    assert admitted == [pytest.approx(1 + M - (level - 4 + 1))]


# --- trio conventions ---------------------------------------------------------------------


async def test_lease_in_a_cancelled_scope_gets_no_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A lease inside an already-cancelled scope raises Cancelled, not a lease."""
    scheduler, _ = make(A, limits=Limits(rpm=60_000))
    with trio.CancelScope() as scope:
        scope.cancel()
        await lease(scheduler)
    assert scope.cancelled_caught
    assert stats_of(scheduler, FP_A).in_flight == 0


# --- statistics ---------------------------------------------------------------------------


async def test_statistics_per_key(autojump_clock: trio.testing.MockClock) -> None:
    """statistics() gives each key's limits, levels, in-flight count, cooldown and drop reason."""
    scheduler, _ = make(A, B, limits=Limits(rpm=600, tpm=60_000))
    with trio.fail_after(10):
        on_a = await lease(scheduler, 10)
        on_b = await lease(scheduler, 10)
        await lease(scheduler, 10)
        await lease(scheduler, 10)
    refused(on_b, 5.0)
    dropped(on_a, "HTTP 401: bad key")
    a, b = scheduler.statistics()
    assert (a.key_id, b.key_id) == (FP_A, FP_B)
    assert (a.in_flight, b.in_flight) == (1, 1)
    assert a.rpm == 600.0
    assert a.tpm == 60_000.0
    assert b.rpm == pytest.approx(450.0)  # lowered by the 429 that said nothing
    assert a.requests_left is not None
    assert a.tokens_left is not None
    assert (a.cooling_s, b.cooling_s) == (0.0, 5.0)
    assert (a.dropped, b.dropped) == ("HTTP 401: bad key", None)
    assert A not in repr(scheduler.statistics())


async def test_unknown_limits_show_as_none(autojump_clock: trio.testing.MockClock) -> None:
    """With nothing configured or learned, limits and levels are reported as unknown."""
    scheduler, _ = make(A, limits=Limits())
    (stats,) = scheduler.statistics()
    assert (stats.rpm, stats.tpm, stats.requests_left, stats.tokens_left) == (None,) * 4


# --- aligning with the server -------------------------------------------------------------


async def test_a_shortfall_reported_by_several_responses_is_corrected_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Responses that all show the same gap lower the bucket once, not once each."""
    scheduler, _ = make(A, limits=Limits(rpm=600, burst_s=2))  # 10/s, 20 per burst
    with trio.fail_after(10):
        leases = [await lease(scheduler) for _ in range(4)]
    held = left(scheduler, FP_A)
    # The server is 3 requests short of what we think. Each response reports what was left
    # right after its own request: 3 fewer than we expected at that point.
    for position, each in enumerate(leases):
        sent_after = len(leases) - 1 - position
        answered(each, limits=RateLimitInfo(requests_remaining=held + sent_after - 3))
    assert left(scheduler, FP_A) == pytest.approx(held - 3)


async def test_a_lower_limit_learned_from_headers_also_lowers_the_level(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When headers show a lower limit, what we credited at the old rate is taken back."""
    scheduler, _ = make(A, limits=Limits(rpm=1200))  # we think 20/s; the server does 10/s
    with trio.fail_after(10):
        held = await lease(scheduler)
    reported_after = left(scheduler, FP_A)  # the server agreed at the time of sending
    await trio.sleep(1.0)  # we refill 20, the server only 10
    answered(held, limits=RateLimitInfo(requests_limit=600, requests_remaining=reported_after))
    assert stats_of(scheduler, FP_A).rpm == 600
    # The server's bucket: what it reported, plus 1 s at 10/s, capped at its 10 capacity.
    assert left(scheduler, FP_A) == pytest.approx(min(10, reported_after + 10))


@pytest.mark.parametrize(("retry_after", "next_after"), [(0.5, 0.5 + M), (0.02, 0.1)])
async def test_a_429_retry_after_aligns_the_schedule(
    autojump_clock: trio.testing.MockClock, retry_after: float, next_after: float
) -> None:
    """After a 429 the key's next request goes at its Retry-After, or at the key's own pace
    if that is later: the refused request keeps its place, so a server that says "retry now"
    is not answered with a burst."""
    scheduler, _ = make(A, limits=Limits(rpm=600, burst_s=1))  # 10/s, capacity 10
    with trio.fail_after(10):
        answered(await lease(scheduler))
        while left(scheduler, FP_A) >= 1 + M:
            answered(await lease(scheduler))  # spend the burst (sent, admitted)
        held = await lease(scheduler)
        sent_at = trio.current_time()
        refused(
            held,
            retry_after,
            RateLimitInfo(requests_limit=600, requests_remaining=0, retry_after_s=retry_after),
        )
        await lease(scheduler)
    assert trio.current_time() == pytest.approx(sent_at + next_after, abs=0.003)
