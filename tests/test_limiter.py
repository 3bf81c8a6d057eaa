"""TokenBucket: exact, FIFO, reservation-based rate limiting on trio's clock."""

from __future__ import annotations

import itertools
import math

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_llm import BucketStatistics, TokenBucket

# --- reading ------------------------------------------------------------------------------


def test_default_capacity_is_one_second_of_rate() -> None:
    """Without an explicit capacity the burst is one second's worth of the rate (at least 1)."""
    assert TokenBucket(5.0).capacity == 5.0
    assert TokenBucket(0.1).capacity == 1.0
    assert TokenBucket(None).capacity == math.inf


def test_bucket_can_be_built_outside_trio() -> None:
    """A bucket may be constructed before trio.run starts (it reads the clock lazily)."""
    bucket = TokenBucket(2.0, 4.0)
    assert bucket.rate == 2.0

    async def main() -> None:
        assert bucket.level == 4.0
        assert repr(bucket) == "<TokenBucket rate=2.0 capacity=4.0 level=4.00>"

    trio.run(main)


def test_repr_works_outside_trio() -> None:
    """repr() of a bucket never raises, even outside trio.run (debuggers, error messages)."""
    assert repr(TokenBucket(2.0, 4.0)) == "<TokenBucket rate=2.0 capacity=4.0 level=4.00>"


async def test_statistics_is_a_frozen_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    """statistics() reports rate, capacity, level, sleepers and their units, and is frozen."""
    bucket = TokenBucket(1.0, 2.0)
    assert bucket.statistics() == BucketStatistics(
        rate=1.0, capacity=2.0, level=2.0, waiting=0, reserved=0.0
    )
    bucket.acquire_nowait(2)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bucket.acquire, 1)
            nursery.start_soon(bucket.acquire, 0.5)
            await trio.testing.wait_all_tasks_blocked()
            stats = bucket.statistics()
            assert stats.waiting == 2
            assert stats.reserved == pytest.approx(1.5)
            assert stats.level == pytest.approx(-1.5)
            with pytest.raises(attrs.exceptions.FrozenInstanceError):
                stats.level = 0.0  # type: ignore[misc]
    assert trio.current_time() == pytest.approx(1.5)
    assert bucket.statistics().waiting == 0
    assert bucket.statistics().reserved == 0.0


# --- taking -------------------------------------------------------------------------------


async def test_acquire_nowait_takes_units_when_there(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """acquire_nowait takes units at once while the bucket holds them."""
    bucket = TokenBucket(1.0, 3.0)
    bucket.acquire_nowait(2)
    assert bucket.level == pytest.approx(1.0)


async def test_acquire_nowait_raises_would_block_and_takes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """acquire_nowait raises trio.WouldBlock when short, leaving the level untouched."""
    bucket = TokenBucket(1.0, 3.0)
    bucket.acquire_nowait(3)
    with pytest.raises(trio.WouldBlock):
        bucket.acquire_nowait(1)
    assert bucket.level == pytest.approx(0.0)
    await trio.sleep(1)
    bucket.acquire_nowait(1)


async def test_acquire_sleeps_exactly_until_units_are_there(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """acquire wakes at the exact moment the bucket has refilled enough, not on a poll tick."""
    bucket = TokenBucket(2.0, 4.0)
    bucket.acquire_nowait(4)
    with trio.fail_after(10):
        await bucket.acquire(3)
    assert trio.current_time() == pytest.approx(1.5)
    assert bucket.level == pytest.approx(0.0)


class _StepCounter(trio.abc.Instrument):
    """Counts how often each task runs a step (a polling sleeper would run many)."""

    def __init__(self) -> None:
        self.steps: dict[trio.lowlevel.Task, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] = self.steps.get(task, 0) + 1


async def test_acquire_sleeps_in_one_piece(autojump_clock: trio.testing.MockClock) -> None:
    """A long acquire is not woken again and again to poll: it sleeps once until its moment."""
    bucket = TokenBucket(0.001, 1.0)
    bucket.acquire_nowait(1)
    counter = _StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        with trio.fail_after(2000):
            await bucket.acquire(1)
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert trio.current_time() == pytest.approx(1000.0)
    assert counter.steps[trio.lowlevel.current_task()] <= 3


async def test_acquire_with_units_there_is_a_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """acquire checkpoints even when it need not wait (trio's convention)."""
    bucket = TokenBucket(1.0, 5.0)
    with trio.testing.assert_checkpoints():
        await bucket.acquire(1)


async def test_unlimited_bucket_never_waits(autojump_clock: trio.testing.MockClock) -> None:
    """A bucket with rate None admits anything at once and keeps no level."""
    bucket = TokenBucket(None)
    with trio.fail_after(1):
        for _ in range(100):
            await bucket.acquire(1e9)
        bucket.acquire_nowait(1e12)
    assert trio.current_time() == 0.0
    assert bucket.delay(1e12) == 0.0
    assert bucket.statistics().rate is None


async def test_request_larger_than_capacity_is_admitted_when_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request bigger than the capacity goes once the bucket is full, never waits forever."""
    bucket = TokenBucket(1.0, 2.0)
    with trio.fail_after(10):
        await bucket.acquire(5)
    assert trio.current_time() == 0.0
    assert bucket.level == pytest.approx(-3.0)
    # The debt is paid before anyone else is admitted.
    with trio.fail_after(10):
        await bucket.acquire(1)
    assert trio.current_time() == pytest.approx(4.0)


async def test_request_larger_than_capacity_waits_until_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request bigger than the capacity waits only until the bucket is full."""
    bucket = TokenBucket(1.0, 2.0)
    bucket.acquire_nowait(1.5)
    with trio.fail_after(10):
        await bucket.acquire(10)
    assert trio.current_time() == pytest.approx(1.5)


async def test_waiters_are_served_fifo(autojump_clock: trio.testing.MockClock) -> None:
    """Sleepers are admitted in the order they arrived, each at its own exact moment."""
    bucket = TokenBucket(1.0, 2.0)
    bucket.acquire_nowait(2)
    admitted: list[tuple[int, float]] = []

    async def take(index: int, amount: float) -> None:
        await bucket.acquire(amount)
        admitted.append((index, trio.current_time()))

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            for index, amount in enumerate([1, 0.5, 2, 0.25]):
                nursery.start_soon(take, index, amount)
                await trio.testing.wait_all_tasks_blocked()
    assert [index for index, _ in admitted] == [0, 1, 2, 3]
    assert [at for _, at in admitted] == pytest.approx([1.0, 1.5, 3.5, 3.75])


async def test_latecomer_does_not_overtake_sleepers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A small request arriving later queues behind a sleeping big one (no starvation)."""
    bucket = TokenBucket(1.0, 4.0)
    bucket.acquire_nowait(4)
    admitted: list[str] = []

    async def take(name: str, amount: float) -> None:
        await bucket.acquire(amount)
        admitted.append(name)

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(take, "big", 3)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(1)
            with pytest.raises(trio.WouldBlock):
                bucket.acquire_nowait(1)
            nursery.start_soon(take, "small", 1)
    assert admitted == ["big", "small"]
    assert trio.current_time() == pytest.approx(4.0)


# --- giving back --------------------------------------------------------------------------


async def test_refund_never_exceeds_capacity(autojump_clock: trio.testing.MockClock) -> None:
    """Refunding more than was taken fills the bucket to its capacity and no further."""
    bucket = TokenBucket(1.0, 3.0)
    bucket.acquire_nowait(1)
    bucket.refund(10)
    assert bucket.level == 3.0


async def test_charge_takes_units_without_waiting(autojump_clock: trio.testing.MockClock) -> None:
    """charge() takes extra units at once (usage over the estimate), delaying later takers."""
    bucket = TokenBucket(1.0, 3.0)
    bucket.charge(5)
    assert bucket.level == pytest.approx(-2.0)
    assert trio.current_time() == 0.0
    with trio.fail_after(10):
        await bucket.acquire(1)
    assert trio.current_time() == pytest.approx(3.0)


async def test_cancelled_acquire_refunds_its_units(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A sleeper cancelled before its moment gives its units back."""
    bucket = TokenBucket(1.0, 1.0)
    bucket.acquire_nowait(1)
    with trio.move_on_after(0.25) as scope:
        await bucket.acquire(1)
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(0.25)
    stats = bucket.statistics()
    assert stats.level == pytest.approx(0.25)
    assert stats.waiting == 0
    assert stats.reserved == 0.0
    # The next taker is not delayed by the abandoned reservation.
    with trio.fail_after(10):
        await bucket.acquire(1)
    assert trio.current_time() == pytest.approx(1.0)


# --- correcting ---------------------------------------------------------------------------


async def test_set_rate_wakes_sleepers_who_re_reserve(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Raising the rate wakes a sleeper, which then goes at the time the new rate allows."""
    bucket = TokenBucket(1.0, 1.0)
    bucket.acquire_nowait(1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bucket.acquire, 1)
            await trio.sleep(0.25)
            bucket.set_rate(4.0, 1.0)
    # At 0.25 the level is 0.25; 0.75 more at 4/s takes 0.1875 s.
    assert trio.current_time() == pytest.approx(0.4375)


async def test_set_rate_lower_delays_sleepers(autojump_clock: trio.testing.MockClock) -> None:
    """Lowering the rate makes a sleeper wait for the slower refill."""
    bucket = TokenBucket(2.0, 2.0)
    bucket.acquire_nowait(2)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bucket.acquire, 1)
            await trio.sleep(0.25)
            bucket.set_rate(0.5, 2.0)
    # At 0.25 the level is 0.5; 0.5 more at 0.5/s takes 1 s.
    assert trio.current_time() == pytest.approx(1.25)


async def test_set_rate_none_releases_sleepers(autojump_clock: trio.testing.MockClock) -> None:
    """Making a bucket unlimited lets its sleepers go at once."""
    bucket = TokenBucket(1.0, 1.0)
    bucket.acquire_nowait(1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(bucket.acquire, 1)
            await trio.sleep(0.5)
            bucket.set_rate(None)
    assert trio.current_time() == pytest.approx(0.5)


async def test_set_rate_from_unlimited_starts_full(autojump_clock: trio.testing.MockClock) -> None:
    """A bucket that learns its rate starts full at the new capacity."""
    bucket = TokenBucket(None)
    bucket.set_rate(2.0, 6.0)
    assert bucket.level == 6.0
    assert bucket.capacity == 6.0
    bucket.set_rate(1.0)
    assert bucket.capacity == 1.0
    assert bucket.level == 1.0


async def test_lower_to_wakes_sleepers_who_re_reserve(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When the server says we have less, sleepers re-reserve and wait for the real level."""
    bucket = TokenBucket(1.0, 10.0)
    bucket.acquire_nowait(10)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bucket.acquire, 1)
            await trio.sleep(0.5)
            assert bucket.level == pytest.approx(-0.5)
            bucket.lower_to(-3.5)
    # -3.5 includes the sleeper's unit: it needs the level at 1 again, 4.5 units later... minus
    # its own refunded unit: (1 - (-2.5)) / 1 = 3.5 s after 0.5.
    assert trio.current_time() == pytest.approx(4.0)


async def test_lower_to_never_raises_the_level(autojump_clock: trio.testing.MockClock) -> None:
    """lower_to with a higher level than ours changes nothing."""
    bucket = TokenBucket(1.0, 10.0)
    bucket.acquire_nowait(6)
    bucket.lower_to(8)
    assert bucket.level == pytest.approx(4.0)
    bucket.lower_to(1)
    assert bucket.level == pytest.approx(1.0)


def _admissions_after_change(change: str) -> list[float]:
    """Admission times, in arrival order, of three sleepers when the bucket changes under them.

    Rate 1/s, capacity 1, drained at 0; sleepers of 1 unit each arrive at 0 (due at 1, 2, 3).
    At 0.5 either the rate doubles or the server says we have one unit less.
    """
    times: dict[int, float] = {}

    async def main() -> None:
        bucket = TokenBucket(1.0, 1.0)
        bucket.acquire_nowait(1)

        async def take(index: int) -> None:
            await bucket.acquire(1)
            times[index] = trio.current_time()

        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:
                for index in range(3):
                    nursery.start_soon(take, index)
                    await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0.5)
                if change == "set_rate":
                    bucket.set_rate(2.0, 1.0)
                else:
                    bucket.lower_to(bucket.level - 1)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return [times[index] for index in range(3)]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # Level at 0.5 without the reservations: 0.5; at 2/s the three are due 0.25 s apart.
        ("set_rate", [0.75, 1.25, 1.75]),
        # Level at 0.5 without the reservations: -0.5 - 1; at 1/s they are due 1 s apart.
        ("lower_to", [2.0, 3.0, 4.0]),
    ],
)
def test_sleepers_keep_their_places_when_the_bucket_changes(
    change: str, expected: list[float]
) -> None:
    """Sleepers re-reserved by set_rate/lower_to stay FIFO and spaced, never released together."""
    # trio may wake the sleepers in any order: several runs make an ordering bug show.
    for _ in range(10):
        assert _admissions_after_change(change) == pytest.approx(expected)


# --- properties ---------------------------------------------------------------------------

_arrivals = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40).map(lambda tenths: tenths / 10),  # arrival time
        st.integers(min_value=1, max_value=8).map(lambda eighths: eighths / 4),  # amount <= 2
    ),
    min_size=1,
    max_size=25,
)


def _run_arrivals(
    rate: float, capacity: float, arrivals: list[tuple[float, float]]
) -> list[tuple[int, float, float]]:
    """(arrival index, admission time, amount) for each request, in arrival order."""
    admitted: dict[int, tuple[float, float]] = {}
    order: list[int] = []

    async def main() -> None:
        bucket = TokenBucket(rate, capacity)

        async def take(index: int, at: float, amount: float) -> None:
            await trio.sleep_until(at)
            order.append(index)  # acquire reserves before its first checkpoint
            await bucket.acquire(amount)
            admitted[index] = (trio.current_time(), amount)
            assert bucket.level <= bucket.capacity

        with trio.fail_after(10_000):
            async with trio.open_nursery() as nursery:
                for index, (at, amount) in enumerate(arrivals):
                    nursery.start_soon(take, index, at, amount)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return [(index, *admitted[index]) for index in order]


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 4.0]),
    capacity=st.sampled_from([2.0, 3.0, 8.0]),
    arrivals=_arrivals,
)
def test_never_admits_more_than_rate_times_window_plus_capacity(
    rate: float, capacity: float, arrivals: list[tuple[float, float]]
) -> None:
    """Over any window the bucket admits at most rate x window + capacity units."""
    admitted = sorted(_run_arrivals(rate, capacity, arrivals), key=lambda item: item[1])
    for start in range(len(admitted)):
        total = 0.0
        for end in range(start, len(admitted)):
            total += admitted[end][2]
            window = admitted[end][1] - admitted[start][1]
            assert total <= rate * window + capacity + 1e-6


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 4.0]),
    capacity=st.sampled_from([2.0, 3.0, 8.0]),
    arrivals=_arrivals,
)
def test_admissions_follow_arrival_order(
    rate: float, capacity: float, arrivals: list[tuple[float, float]]
) -> None:
    """A request is never admitted before one that arrived earlier (FIFO)."""
    times = [at for _, at, _ in _run_arrivals(rate, capacity, arrivals)]
    for earlier, later in itertools.pairwise(times):
        assert earlier <= later + 1e-9


@settings(max_examples=100, deadline=None)
@given(
    capacity=st.sampled_from([1.0, 2.5, 10.0]),
    operations=st.lists(
        st.tuples(
            st.sampled_from(["reserve", "refund", "charge", "sleep", "lower_to"]),
            st.floats(min_value=0, max_value=20, allow_nan=False),
        ),
        max_size=30,
    ),
)
def test_level_never_exceeds_capacity(capacity: float, operations: list[tuple[str, float]]) -> None:
    """Whatever is reserved, refunded, charged or corrected, the level stays <= capacity."""

    async def main() -> None:
        bucket = TokenBucket(1.5, capacity)
        for name, amount in operations:
            if name == "sleep":
                await trio.sleep(amount)
            elif name == "lower_to":
                bucket.lower_to(bucket.level - amount)
            else:
                getattr(bucket, name)(amount)
            assert bucket.level <= capacity
            assert bucket.statistics().level <= capacity

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
