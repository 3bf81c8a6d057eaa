"""KeyPool: pick-soonest, cooldowns, drops, reconciliation and learning from headers."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trio_llm import (
    ConfigurationError,
    KeyPool,
    KeyStatistics,
    Limits,
    NoKeysLeftError,
    RetryPolicy,
)
from trio_llm._events import KEY_COOLING, KEY_DROPPED, LIMITS_UPDATED, EventHub
from trio_llm._headers import RateLimitInfo
from trio_llm._keys import SEND_MARGIN_S
from trio_llm._secrets import ApiKey

A = "sk-test-aaaaaaaaaaaaaaaa1111"
B = "sk-test-bbbbbbbbbbbbbbbb2222"
FP_A = "sk-…1111"
FP_B = "sk-…2222"
M = SEND_MARGIN_S


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


def make_pool(*keys: str, limits: Limits) -> tuple[KeyPool, Events]:
    """A pool whose events are recorded."""
    events = Events()
    pool = KeyPool(keys, limits=limits)
    pool.attach(EventHub((events,)), Limits(), None)
    return pool, events


def stats_of(pool: KeyPool, key_id: str) -> KeyStatistics:
    """The statistics of one key."""
    (stats,) = [s for s in pool.statistics() if s.key_id == key_id]
    return stats


def left(pool: KeyPool, key_id: str) -> float:
    """Requests left in one key's bucket."""
    value = stats_of(pool, key_id).requests_left
    assert value is not None
    return value


async def take(pool: KeyPool, tokens: float = 1) -> str:
    """Acquire and release at once; the fingerprint of the key used."""
    lease = await pool.acquire(tokens)
    pool.release(lease)
    return lease.key.fingerprint


# --- choosing -----------------------------------------------------------------------------


async def test_picks_the_key_that_can_send_soonest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Keys ready alike share the requests evenly (a full bucket idle is refill wasted)."""
    pool, _ = make_pool(A, B, limits=Limits(rpm=600))  # 10/s, 10 per burst
    assert pool.alive == 2
    start = left(pool, FP_A)
    assert left(pool, FP_B) == start
    # A key is ready while it holds one request plus the send margin's refill.
    room = int(start - 10 * M)
    with trio.fail_after(10):
        used = [await take(pool) for _ in range(2 * room)]
    assert used == [FP_A, FP_B] * room
    assert trio.current_time() == 0.0
    assert left(pool, FP_A) < 1 + 10 * M
    # Both drained alike: the next one goes when the first of them can send.
    with trio.fail_after(10):
        await take(pool)
    assert trio.current_time() == pytest.approx((1 + 10 * M - (start - room)) / 10)


async def test_equally_ready_keys_share_by_fewest_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Between keys ready alike, the one with fewer requests in flight is used."""
    pool, _ = make_pool(A, B, limits=Limits(rpm=60_000))
    with trio.fail_after(10):
        leases = [await pool.acquire(1) for _ in range(4)]
    assert [lease.key.fingerprint for lease in leases] == [FP_A, FP_B, FP_A, FP_B]
    assert [s.in_flight for s in pool.statistics()] == [2, 2]
    for lease in leases:
        pool.release(lease)
    assert [s.in_flight for s in pool.statistics()] == [0, 0]


async def test_uneven_keys_are_each_used_to_their_own_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Over a minute, a key with half the limit gets half the requests; the total is the sum."""
    pool, _ = make_pool(A, B, limits=Limits(rpm=120))
    server_rpm = {FP_A: 120.0, FP_B: 60.0}  # B's headers say it has half
    counts: collections.Counter[str] = collections.Counter()

    async def worker() -> None:
        while True:
            lease = await pool.acquire(1)
            counts[lease.key.fingerprint] += 1
            await trio.sleep(0.3)  # latency
            pool.release(
                lease, info=RateLimitInfo(requests_limit=server_rpm[lease.key.fingerprint])
            )

    with trio.move_on_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(worker)
    assert stats_of(pool, FP_B).rpm == 60.0
    assert counts[FP_A] == pytest.approx(120, abs=3)
    assert counts[FP_B] == pytest.approx(60, abs=3)
    assert counts[FP_A] + counts[FP_B] == pytest.approx(180, abs=4)


async def test_provider_limits_cap_all_keys_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Account-wide limits hold across keys, however much room each key has."""
    pool = KeyPool([A, B], limits=Limits(rpm=60_000), provider_limits=Limits(rpm=60, burst_s=2))
    times = []
    with trio.fail_after(10):
        for _ in range(4):
            await take(pool)
            times.append(trio.current_time())
    # The account's bucket starts full (2) and refills at 1/s, plus the send margin.
    assert times == pytest.approx([0, M, 1 + M, 2 + M])


# --- 429: cooling and back-off -----------------------------------------------------------


async def test_rate_limited_cools_that_key_while_others_carry_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After a 429 its key rests for the Retry-After; the other key serves meanwhile."""
    pool, events = make_pool(A, B, limits=Limits(rpm=600))
    with trio.fail_after(10):
        lease = await pool.acquire(1)
    assert lease.key.fingerprint == FP_A
    pool.rate_limited(lease, 30.0)
    pool.release(lease, sent=False)
    assert events.named(KEY_COOLING) == [{"key_id": FP_A, "cooling_s": 30.0}]
    with trio.fail_after(10):
        used = [await take(pool) for _ in range(8)]
    assert used == [FP_B] * 8
    assert trio.current_time() < 1
    assert stats_of(pool, FP_A).cooling_s == pytest.approx(30.0 - trio.current_time())
    assert stats_of(pool, FP_B).cooling_s == 0.0


@pytest.mark.parametrize(("retry_after", "cooling"), [(7.5, 7.5), (None, 1.0), (0.25, 0.25)])
async def test_rate_limited_key_sends_again_exactly_after_retry_after(
    autojump_clock: trio.testing.MockClock, retry_after: float | None, cooling: float
) -> None:
    """A cooled key's next request goes exactly when the Retry-After (default 1 s) is over."""
    pool, events = make_pool(A, limits=Limits(rpm=600))
    with trio.fail_after(10):
        lease = await pool.acquire(1)
        pool.rate_limited(lease, retry_after)
        pool.release(lease, sent=False)
        await take(pool)
    assert trio.current_time() == pytest.approx(cooling)
    assert events.named(KEY_COOLING) == [{"key_id": FP_A, "cooling_s": cooling}]


async def test_sleepers_on_a_key_that_gets_a_429_move_to_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Tasks waiting for a key that is then cooled re-choose and go on the other key."""
    pool, _ = make_pool(A, B, limits=Limits(rpm=60))  # 1/s
    with trio.fail_after(10):
        first = await pool.acquire(1)
        second = await pool.acquire(1)
    assert {first.key.fingerprint, second.key.fingerprint} == {FP_A, FP_B}
    got: list[tuple[str, float]] = []

    async def wait_for_one() -> None:
        lease = await pool.acquire(1)
        got.append((lease.key.fingerprint, trio.current_time()))

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_one)
            await trio.testing.wait_all_tasks_blocked()
            sleeping_on = first if left(pool, first.key.fingerprint) < 0 else second
            other = second if sleeping_on is first else first
            pool.rate_limited(sleeping_on, 60.0)
    assert len(got) == 1
    assert got[0][0] == other.key.fingerprint
    assert got[0][1] < 60


async def test_unexpected_429_lowers_the_rate_then_it_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Without rate-limit headers a 429 cuts the rate by a quarter, which climbs back slowly."""
    pool, events = make_pool(A, limits=Limits(rpm=600))
    with trio.fail_after(100):
        lease = await pool.acquire(1)
        pool.rate_limited(lease, 0.0)
        pool.release(lease, sent=False)
        assert stats_of(pool, FP_A).rpm == pytest.approx(450.0)
        assert events.named(LIMITS_UPDATED) == [
            {"key_id": FP_A, "rpm": pytest.approx(450.0), "tpm": None, "reason": "rate_limited"}
        ]
        # A second 429 within the same second does not cut again.
        await trio.sleep(0.5)
        pool.rate_limited(lease, 0.0)
        assert stats_of(pool, FP_A).rpm == pytest.approx(450.0)
        # A second later it does.
        await trio.sleep(0.5)
        pool.rate_limited(lease, 0.0)
        assert stats_of(pool, FP_A).rpm == pytest.approx(337.5)
        # Recovery: 2 % of the ceiling per second, applied as keys are picked.
        await trio.sleep(5)
        await take(pool)
        assert stats_of(pool, FP_A).rpm == pytest.approx(600 * (0.5625 + 5 * 0.02))
        await trio.sleep(30)
        await take(pool)
        assert stats_of(pool, FP_A).rpm == pytest.approx(600.0)


async def test_429_does_not_lower_the_rate_of_a_key_with_rate_headers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Where the server sends rate-limit headers, a lone 429 cools the key but keeps its rate."""
    pool, events = make_pool(A, limits=Limits(rpm=600))
    with trio.fail_after(10):
        lease = await pool.acquire(1)
        pool.release(lease, info=RateLimitInfo(requests_limit=600))
        lease = await pool.acquire(1)
    pool.rate_limited(lease, 2.0)
    pool.release(lease, sent=False)
    assert stats_of(pool, FP_A).rpm == 600.0
    assert [e["reason"] for e in events.named(LIMITS_UPDATED)] == ["headers"]
    assert stats_of(pool, FP_A).cooling_s == 2.0


# --- dropping -----------------------------------------------------------------------------


async def test_drop_removes_the_key_and_says_so_without_the_secret(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A dropped key is never used again; key.dropped carries its fingerprint, not the secret."""
    pool, events = make_pool(A, B, limits=Limits(rpm=600))
    with trio.fail_after(10):
        lease = await pool.acquire(1)
        pool.drop(lease, "auth (HTTP 401)")
        pool.release(lease, sent=False)
        used = {await take(pool) for _ in range(20)}
    assert used == {FP_B}
    assert events.named(KEY_DROPPED) == [{"key_id": FP_A, "reason": "auth (HTTP 401)"}]
    assert A not in repr(events.all)
    assert pool.alive == 1
    assert stats_of(pool, FP_A).dropped == "auth (HTTP 401)"
    # Dropping twice says it once.
    pool.drop(lease, "again")
    assert len(events.named(KEY_DROPPED)) == 1


async def test_acquire_raises_no_keys_left_once_every_key_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With every key dropped, acquire raises NoKeysLeftError at once instead of waiting."""
    pool, _ = make_pool(A, B, limits=Limits(rpm=600))
    with trio.fail_after(10):
        for _ in range(2):
            lease = await pool.acquire(1)
            pool.drop(lease, "insufficient_quota")
            pool.release(lease, sent=False)
        with pytest.raises(NoKeysLeftError):
            await pool.acquire(1)
    assert trio.current_time() == 0.0
    assert pool.alive == 0


async def test_waiting_tasks_get_no_keys_left_when_the_last_key_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Tasks already asleep in acquire raise NoKeysLeftError as soon as the last key goes."""
    pool, _ = make_pool(A, limits=Limits(rpm=600))
    with trio.fail_after(10):
        cooled = await pool.acquire(1)
        held = await pool.acquire(1)
    pool.rate_limited(cooled, 10.0)
    pool.release(cooled, sent=False)
    failed_at: list[float] = []

    async def waiter() -> None:
        with pytest.raises(NoKeysLeftError):
            await pool.acquire(1)
        failed_at.append(trio.current_time())

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter)
            await trio.sleep(2)
            pool.drop(held, "auth (HTTP 403)")
    assert failed_at == [2.0, 2.0, 2.0]


# --- reconciling --------------------------------------------------------------------------


async def test_release_refunds_unused_tokens(autojump_clock: trio.testing.MockClock) -> None:
    """When a request used fewer tokens than estimated, the rest goes back to the bucket."""
    pool, _ = make_pool(A, limits=Limits(rpm=600, tpm=60_000))  # 1000 tokens/s
    with trio.fail_after(10):
        lease = await pool.acquire(400)
    start = stats_of(pool, FP_A).tokens_left
    assert start is not None
    pool.release(lease, used_tokens=100)
    assert stats_of(pool, FP_A).tokens_left == pytest.approx(start + 300)


async def test_release_charges_tokens_over_the_estimate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When a request used more tokens than estimated, the overrun is charged."""
    pool, _ = make_pool(A, limits=Limits(rpm=600, tpm=60_000))
    with trio.fail_after(10):
        lease = await pool.acquire(400)
    start = stats_of(pool, FP_A).tokens_left
    assert start is not None
    pool.release(lease, used_tokens=1000)
    assert stats_of(pool, FP_A).tokens_left == pytest.approx(start - 600)


async def test_release_unsent_gives_everything_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A lease released with sent=False returns its request and all its tokens."""
    pool, _ = make_pool(A, limits=Limits(rpm=600, tpm=60_000))
    assert pool.alive == 1
    before = stats_of(pool, FP_A)
    with trio.fail_after(10):
        lease = await pool.acquire(400)
    during = stats_of(pool, FP_A)
    assert during.in_flight == 1
    assert during.tokens_left == pytest.approx(before.tokens_left - 400)  # type: ignore[operator]
    pool.release(lease, sent=False, used_tokens=50)
    after = stats_of(pool, FP_A)
    assert after.in_flight == 0
    assert after.requests_left == pytest.approx(before.requests_left)
    assert after.tokens_left == pytest.approx(before.tokens_left)


async def test_cancelled_acquire_gives_its_reservation_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A task cancelled while waiting for a key leaves the buckets as it found them."""
    pool, _ = make_pool(A, limits=Limits(rpm=60, tpm=6000))  # 1 request, 100 tokens per s
    with trio.fail_after(10):
        lease = await pool.acquire(1)  # leaves the requests bucket short
    before = stats_of(pool, FP_A)
    assert before.requests_left is not None
    assert before.tokens_left is not None
    with trio.move_on_after(0.25):
        await pool.acquire(50)
    after = stats_of(pool, FP_A)
    # Only the refill of the quarter second shows.
    assert after.requests_left == pytest.approx(before.requests_left + 0.25)
    assert after.tokens_left == pytest.approx(min(100.0, before.tokens_left + 25))
    pool.release(lease)


# --- learning from headers ----------------------------------------------------------------


async def test_headers_lower_an_over_estimated_bucket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When the server has fewer requests and tokens left than we thought, we believe it."""
    pool, _ = make_pool(A, limits=Limits(rpm=600, tpm=60_000))
    with trio.fail_after(10):
        lease = await pool.acquire(100)
    # Nothing else was sent and no time passed: the server should report what we hold.
    requests_left = left(pool, FP_A)
    tokens_left = stats_of(pool, FP_A).tokens_left
    assert tokens_left is not None
    pool.release(
        lease,
        info=RateLimitInfo(
            requests_remaining=requests_left - 3, tokens_remaining=tokens_left - 300
        ),
    )
    assert left(pool, FP_A) == pytest.approx(requests_left - 3)
    assert stats_of(pool, FP_A).tokens_left == pytest.approx(tokens_left - 300)


async def test_headers_never_raise_our_level_and_small_gaps_are_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server with more left than we think, or a gap of about one request, changes nothing."""
    pool, _ = make_pool(A, limits=Limits(rpm=600, tpm=60_000))
    with trio.fail_after(10):
        lease = await pool.acquire(100)
        requests_left = left(pool, FP_A)
        pool.release(lease, info=RateLimitInfo(requests_remaining=1000, tokens_remaining=1e6))
        assert left(pool, FP_A) == pytest.approx(requests_left)
        lease = await pool.acquire(100)
    requests_left = left(pool, FP_A)
    tokens_left = stats_of(pool, FP_A).tokens_left
    assert tokens_left is not None
    pool.release(
        lease,
        info=RateLimitInfo(
            requests_remaining=requests_left - 0.5,
            tokens_remaining=tokens_left - 50,  # under the 100 estimated
        ),
    )
    assert left(pool, FP_A) == pytest.approx(requests_left)
    assert stats_of(pool, FP_A).tokens_left == pytest.approx(tokens_left)


async def test_headers_teach_unknown_limits(autojump_clock: trio.testing.MockClock) -> None:
    """With no limits configured, the first headers set rpm and tpm and emit limits.updated."""
    pool, events = make_pool(A, limits=Limits())
    with trio.fail_after(10):
        leases = [await pool.acquire(100) for _ in range(5)]  # unknown: nothing waits
    assert trio.current_time() == 0.0
    assert stats_of(pool, FP_A).rpm is None
    pool.release(
        leases[0],
        info=RateLimitInfo(
            requests_limit=600,
            requests_remaining=599,
            requests_reset_s=0.1,
            tokens_limit=90_000,
            tokens_remaining=89_900,
            tokens_reset_s=0.1,
        ),
        used_tokens=100,
    )
    stats = stats_of(pool, FP_A)
    assert (stats.rpm, stats.tpm) == (600.0, 90_000.0)
    assert stats.requests_left is not None
    assert 0 < stats.requests_left <= 10  # one second's burst at 10/s
    assert events.named(LIMITS_UPDATED) == [
        {"key_id": FP_A, "rpm": 600.0, "tpm": 90_000.0, "reason": "headers"}
    ]
    for lease in leases[1:]:
        pool.release(lease)


async def test_headers_teach_a_small_burst(autojump_clock: trio.testing.MockClock) -> None:
    """With no limits configured, remaining + reset x rate bounds the bucket's capacity."""
    pool, _ = make_pool(A, limits=Limits())
    with trio.fail_after(10):
        lease = await pool.acquire(1)
    pool.release(
        lease,
        info=RateLimitInfo(requests_limit=600, requests_remaining=2, requests_reset_s=0.1),
    )
    # 2 left, full again in 0.1 s at 10/s: the server's bucket holds 3.
    assert left(pool, FP_A) <= 3
    with trio.fail_after(10):
        while left(pool, FP_A) >= 1 + 10 * M:
            await take(pool)
    assert trio.current_time() == 0.0
    await trio.sleep(10)
    assert left(pool, FP_A) == pytest.approx(3.0)


@pytest.mark.parametrize(("configured", "server", "used"), [(1200, 600, 600), (300, 600, 300)])
async def test_stricter_of_configured_and_server_limit_is_used(
    autojump_clock: trio.testing.MockClock, configured: float, server: float, used: float
) -> None:
    """A configured limit above what the server reports gives way; a lower one stands."""
    pool, _ = make_pool(A, limits=Limits(rpm=configured))
    with trio.fail_after(10):
        lease = await pool.acquire(1)
    pool.release(lease, info=RateLimitInfo(requests_limit=server))
    assert stats_of(pool, FP_A).rpm == used


async def test_sleepers_re_reserve_when_headers_lower_the_bucket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Tasks already waiting for a key wait longer once headers show it has less left."""
    pool, _ = make_pool(A, limits=Limits(rpm=60, burst_s=10))  # 1/s, 10 per burst
    with trio.fail_after(10):
        leases = [await pool.acquire(1)]
        while left(pool, FP_A) >= 1 + M:
            leases.append(await pool.acquire(1))
    assert trio.current_time() == 0.0
    first = leases[0]
    assert len(leases) >= 4
    admitted: list[float] = []

    async def waiter() -> None:
        await pool.acquire(1)
        admitted.append(trio.current_time())

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            level = left(pool, FP_A)  # includes the waiter's reservation
            # The server has 4 requests fewer than we thought: it reports, as left after the
            # first request, what we hold (level, plus the waiter's unit not yet sent, plus
            # the leases granted after the first) minus 4.
            reported = level + 1 + (len(leases) - 1) - 4
            pool.release(first, info=RateLimitInfo(requests_remaining=reported))
    # The waiter gives its unit back (level - 4 + 1) and waits until 1 + margin is there.
    assert admitted == [pytest.approx(1 + M - (level - 4 + 1))]


# --- trio conventions ---------------------------------------------------------------------


async def test_acquire_in_a_cancelled_scope_gets_no_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An acquire inside an already-cancelled scope raises Cancelled, not a lease."""
    pool, _ = make_pool(A, limits=Limits(rpm=60_000))
    assert pool.alive == 1
    with trio.testing.assert_checkpoints():
        pool.release(await pool.acquire(1))
    with trio.CancelScope() as scope:
        scope.cancel()
        await pool.acquire(1)
    assert scope.cancelled_caught
    assert stats_of(pool, FP_A).in_flight == 0


# --- statistics ---------------------------------------------------------------------------


def test_statistics_before_a_run_lists_every_key() -> None:
    """Before any trio run, statistics() still lists each key by fingerprint."""
    pool = KeyPool([A, B], limits=Limits(rpm=600))
    assert pool.statistics() == (
        KeyStatistics(
            key_id=FP_A,
            in_flight=0,
            rpm=None,
            tpm=None,
            requests_left=None,
            tokens_left=None,
            cooling_s=0.0,
            dropped=None,
        ),
        KeyStatistics(
            key_id=FP_B,
            in_flight=0,
            rpm=None,
            tpm=None,
            requests_left=None,
            tokens_left=None,
            cooling_s=0.0,
            dropped=None,
        ),
    )


async def test_statistics_per_key(autojump_clock: trio.testing.MockClock) -> None:
    """statistics() gives each key's limits, levels, in-flight count, cooldown and drop reason."""
    pool, _ = make_pool(A, B, limits=Limits(rpm=600, tpm=60_000))
    with trio.fail_after(10):
        on_a = await pool.acquire(10)
        on_b = await pool.acquire(10)
    pool.rate_limited(on_b, 5.0)
    pool.drop(on_a, "auth (HTTP 401)")
    a, b = pool.statistics()
    assert (a.key_id, b.key_id) == (FP_A, FP_B)
    assert (a.in_flight, b.in_flight) == (1, 1)
    assert a.rpm == 600.0
    assert a.tpm == 60_000.0
    assert b.rpm == pytest.approx(450.0)  # lowered by the 429
    assert a.requests_left is not None
    assert a.tokens_left is not None
    assert (a.cooling_s, b.cooling_s) == (0.0, 5.0)
    assert (a.dropped, b.dropped) == ("auth (HTTP 401)", None)
    assert A not in repr(pool.statistics())


async def test_unknown_limits_show_as_none(autojump_clock: trio.testing.MockClock) -> None:
    """With nothing configured or learned, limits and levels are reported as unknown."""
    pool = KeyPool([A], limits=Limits())
    assert pool.alive == 1
    (stats,) = pool.statistics()
    assert (stats.rpm, stats.tpm, stats.requests_left, stats.tokens_left) == (None,) * 4


# --- construction -------------------------------------------------------------------------


def test_duplicate_keys_are_collapsed() -> None:
    """The same key given twice (even with spaces or as ApiKey) is one key."""
    pool = KeyPool([A, f" {A} ", ApiKey(A), B])
    assert len(pool) == 2
    assert [key.fingerprint for key in pool.keys] == [FP_A, FP_B]


@pytest.mark.parametrize("keys", [[], [""], ["  "], [A, ""]])
def test_no_or_empty_keys_are_a_configuration_error(keys: list[str]) -> None:
    """A pool without keys, or with an empty one, is refused at construction."""
    with pytest.raises(ConfigurationError):
        KeyPool(keys)


def test_no_keys_error_has_a_hint() -> None:
    """The error for an empty key list says how to pass keys."""
    with pytest.raises(ConfigurationError, match="HINT: pass keys="):
        KeyPool([])


def test_from_env_splits_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_env reads comma-separated keys, ignoring blanks and repeats."""
    monkeypatch.setenv("TEST_LLM_KEYS", f" {A} ,, {B},{A}, ")
    pool = KeyPool.from_env("TEST_LLM_KEYS", limits=Limits(rpm=10))
    assert [key.reveal() for key in pool.keys] == [A, B]
    assert pool.limits == Limits(rpm=10)


@pytest.mark.parametrize("value", [None, "", " , ,"])
def test_from_env_empty_is_a_configuration_error_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """An unset or empty variable is refused with a HINT naming the variable."""
    if value is None:
        monkeypatch.delenv("TEST_LLM_KEYS", raising=False)
    else:
        monkeypatch.setenv("TEST_LLM_KEYS", value)
    with pytest.raises(
        ConfigurationError, match=r"TEST_LLM_KEYS[\s\S]*HINT: export TEST_LLM_KEYS="
    ):
        KeyPool.from_env("TEST_LLM_KEYS")


@pytest.mark.parametrize(
    "line",
    [
        f"OPENAI_API_KEY={A},{B}",
        f"export OPENAI_API_KEY={A},{B}",
        f'OPENAI_API_KEY="{A},{B}"',
        f"OPENAI_API_KEY='{A}, {B}'",
        f"  export   OPENAI_API_KEY = {A} , {B}  ",
    ],
)
def test_from_dotenv_reads_the_variable(tmp_path: Path, line: str) -> None:
    """from_dotenv reads NAME=k1,k2 with export, quotes and spaces, skipping comments."""
    env = tmp_path / ".env"
    env.write_text(
        f"# OPENAI_API_KEY=sk-commented-out-key-0000\nOTHER=1\n\n{line}\n", encoding="utf-8"
    )
    pool = KeyPool.from_dotenv(env)
    assert [key.reveal() for key in pool.keys] == [A, B]


def test_from_dotenv_ignores_inline_comments(tmp_path: Path) -> None:
    """A comment after the value (as python-dotenv allows) is not part of the key."""
    env = tmp_path / ".env"
    env.write_text(f"OPENAI_API_KEY={A},{B}  # team keys\n", encoding="utf-8")
    assert [key.reveal() for key in KeyPool.from_dotenv(env).keys] == [A, B]


def test_from_dotenv_without_the_variable_is_a_configuration_error(tmp_path: Path) -> None:
    """A .env file that does not set the variable is refused, naming it."""
    env = tmp_path / ".env"
    env.write_text("# OPENAI_API_KEY=x\nOPENAI_API_KEY=\nOTHER=1\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="sets no OPENAI_API_KEY"):
        KeyPool.from_dotenv(env)


def test_from_dotenv_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A .env file that cannot be read is a ConfigurationError, not an OSError."""
    with pytest.raises(ConfigurationError, match="cannot read"):
        KeyPool.from_dotenv(tmp_path / "missing.env")


# --- configuration values -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (Limits, "rpm", 0),
        (Limits, "rpm", -60),
        (Limits, "tpm", 0.0),
        (Limits, "tpm", float("nan")),
        (Limits, "burst_s", 0),
        (Limits, "burst_s", -1),
        (RetryPolicy, "attempts", 0),
        (RetryPolicy, "wait_initial", -0.5),
        (RetryPolicy, "wait_max", -1),
        (RetryPolicy, "wait_jitter", -1),
        (RetryPolicy, "wait_exp_base", 0),
        (RetryPolicy, "max_retry_after", -1),
        (RetryPolicy, "deadline", 0),
    ],
)
def test_bad_settings_raise_configuration_error_naming_the_field(
    cls: type, field: str, value: float
) -> None:
    """A zero or negative limit or retry setting fails at construction, naming the field."""
    with pytest.raises(ConfigurationError, match=rf"^{field} must be") as info:
        cls(**{field: value})
    assert isinstance(info.value, ValueError)


def test_good_settings_are_accepted() -> None:
    """Positive limits, None (unknown) and zero waits are valid."""
    assert Limits(rpm=None, tpm=None).rpm is None
    assert Limits(rpm=0.5, tpm=1, burst_s=0.1).burst_s == 0.1
    assert RetryPolicy(wait_initial=0, wait_max=0, wait_jitter=0, deadline=None).attempts == 8


# --- aligning with the server ---------------------------------------------------------------


async def test_a_shortfall_reported_by_several_responses_is_corrected_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Responses that all show the same gap lower the bucket once, not once each."""
    pool, _ = make_pool(A, limits=Limits(rpm=600, burst_s=2))  # 10/s, 20 per burst
    with trio.fail_after(10):
        leases = [await pool.acquire(1) for _ in range(4)]
    held = left(pool, FP_A)
    # The server is 3 requests short of what we think. Each response reports what was left
    # right after its own request: 3 fewer than we expected at that point.
    for position, lease in enumerate(leases):
        sent_after = len(leases) - 1 - position
        pool.release(lease, info=RateLimitInfo(requests_remaining=held + sent_after - 3))
    assert left(pool, FP_A) == pytest.approx(held - 3)


async def test_a_lower_limit_learned_from_headers_also_lowers_the_level(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When headers show a lower limit, what we credited at the old rate is taken back."""
    pool, _ = make_pool(A, limits=Limits(rpm=1200))  # we think 20/s; the server does 10/s
    with trio.fail_after(10):
        lease = await pool.acquire(1)
    reported_after = left(pool, FP_A)  # the server agreed at the time of sending
    await trio.sleep(1.0)  # we refill 20, the server only 10
    pool.release(lease, info=RateLimitInfo(requests_limit=600, requests_remaining=reported_after))
    assert stats_of(pool, FP_A).rpm == 600
    # The server's bucket: what it reported, plus 1 s at 10/s, capped at its 10 capacity.
    assert left(pool, FP_A) == pytest.approx(min(10, reported_after + 10))


async def test_a_429_retry_after_aligns_the_schedule_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 429 whose Retry-After shows we were 0.02 s early moves the next send 0.02 s later."""
    pool, _ = make_pool(A, limits=Limits(rpm=600, burst_s=1))  # 10/s, capacity 10
    with trio.fail_after(10):
        pool.release(await pool.acquire(1))
        while left(pool, FP_A) >= 1 + M:
            pool.release(await pool.acquire(1))  # spend the burst (sent, admitted)
        lease = await pool.acquire(1)
        sent_at = trio.current_time()
        refused = RateLimitInfo(requests_limit=600, requests_remaining=0, retry_after_s=0.02)
        pool.rate_limited(lease, 0.02, refused)
        pool.release(lease, info=refused, sent=False)
        await pool.acquire(1)
    # The server needed 0.02 s more for this request: it is admitted then (plus our margin).
    assert trio.current_time() == pytest.approx(sent_at + 0.02 + M)
