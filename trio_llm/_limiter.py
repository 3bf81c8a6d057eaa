"""Token buckets on trio's clock: how many requests and tokens may be sent, and when.

A bucket holds up to ``capacity`` units and refills continuously at ``rate`` units per second.
It works by *reservation* (like GCRA or Go's ``rate.Limiter.Reserve``): taking units lowers the
level at once, possibly below zero, and tells the taker how long to sleep before its units are
really there. Later takers see the lower level and sleep longer, so waiters are served in the
order they arrived (FIFO) and each sleeps exactly until its moment: there is no polling loop.

A request larger than the capacity is admitted when the bucket is full (the level then goes
negative), as providers do, so one big prompt can never wait forever.

The level can be corrected from the outside (the server's rate-limit headers are the truth), and
the rate can change (limits learned from headers, or lowered after unexpected 429s). Sleepers are
woken when that happens so that they re-reserve under the new state.
"""

from __future__ import annotations

import math
from typing import final

import attrs
import trio

__all__ = ["BucketStatistics", "TokenBucket"]


@attrs.frozen(kw_only=True)
class BucketStatistics:
    """A snapshot of a bucket.

    Attributes:
        rate: units per second (``None``: unlimited).
        capacity: the most units the bucket holds (the burst).
        level: units available now; negative while reservations wait for their moment.
        waiting: tasks asleep in ``acquire``.
        reserved: units held by those sleepers.
    """

    rate: float | None
    capacity: float
    level: float
    waiting: int
    reserved: float


@final
class TokenBucket:
    """A continuously refilling bucket of ``capacity`` units at ``rate`` units per second.

    Args:
        rate: units per second; ``None`` makes the bucket unlimited until ``set_rate``.
        capacity: the burst; defaults to one second's worth of ``rate`` (at least 1).

    All times are read from ``trio.current_time()``, so the bucket is exact under
    ``trio.testing.MockClock``.
    """

    __slots__ = ("_capacity", "_level", "_rate", "_sleepers", "_stamp")

    def __init__(self, rate: float | None, capacity: float | None = None) -> None:
        self._rate = rate
        self._capacity = self._default_capacity(rate) if capacity is None else capacity
        self._level = self._capacity
        # Read the clock lazily: a bucket may be built before trio.run starts.
        self._stamp: float | None = None
        # Tasks asleep in acquire, in arrival order: (units, the cancel scope they sleep in).
        self._sleepers: list[tuple[float, trio.CancelScope]] = []

    @staticmethod
    def _default_capacity(rate: float | None) -> float:
        return math.inf if rate is None else max(rate, 1.0)

    def __repr__(self) -> str:
        try:
            level = self.level
        except RuntimeError:  # outside trio.run: no clock to refill by
            level = self._level
        return f"<TokenBucket rate={self._rate} capacity={self._capacity} level={level:.2f}>"

    # --- reading -------------------------------------------------------------------------
    @property
    def rate(self) -> float | None:
        """Units per second, or ``None`` when unlimited."""
        return self._rate

    @property
    def capacity(self) -> float:
        """The most units the bucket can hold."""
        return self._capacity

    @property
    def level(self) -> float:
        """Units available now (negative while reservations are pending)."""
        self._refill()
        return self._level

    def delay(self, amount: float, margin_s: float = 0.0) -> float:
        """Seconds until ``amount`` units could be taken, if nobody else takes any first.

        ``margin_s`` asks for that many seconds of refill on top, so that a server counting
        the same bucket with its own clock and rounding is never a hair short. A request at
        least as large as the capacity waits for a full bucket and then the margin too.
        """
        if self._rate is None:
            return 0.0
        self._refill()
        need = min(amount, self._capacity)
        if need + self._rate * margin_s <= self._capacity:
            return max(0.0, (need + self._rate * margin_s - self._level) / self._rate)
        # The margin cannot be had as units (the bucket would overflow): wait it as time.
        return max(0.0, (need - self._level) / self._rate) + margin_s

    def statistics(self) -> BucketStatistics:
        """A frozen snapshot of the bucket's state."""
        return BucketStatistics(
            rate=self._rate,
            capacity=self._capacity,
            level=self.level,
            waiting=len(self._sleepers),
            reserved=sum(amount for amount, _ in self._sleepers),
        )

    # --- taking and giving back ----------------------------------------------------------
    def reserve(self, amount: float, margin_s: float = 0.0) -> float:
        """Take ``amount`` units now; return the seconds to wait before they are really there.

        The caller must sleep that long before acting (``acquire`` does it for you) and must
        ``refund`` the units if it gives up before using them. ``margin_s`` is as in ``delay``.
        """
        wait = self.delay(amount, margin_s)
        if self._rate is not None:
            self._level -= amount
        return wait

    def acquire_nowait(self, amount: float = 1) -> None:
        """Take ``amount`` units if they are there now, else raise ``trio.WouldBlock``."""
        if self.delay(amount) > 0:
            raise trio.WouldBlock
        self.reserve(amount)

    async def acquire(self, amount: float = 1) -> None:
        """Take ``amount`` units, sleeping until they are there (FIFO among sleepers).

        If the bucket's rate or level is changed while sleeping, the reservation is made anew
        under the new state. Cancelled sleepers give their units back.
        """
        wait = self.reserve(amount)
        if wait <= 0:
            await trio.lowlevel.checkpoint()
            return
        # A state change moves the deadline (see _wake_sleepers) instead of waking us.
        sleeper = (amount, trio.CancelScope(deadline=trio.current_time() + wait))
        self._sleepers.append(sleeper)
        try:
            with sleeper[1]:
                await trio.sleep_forever()
        except BaseException:
            # Cancelled (or anything else): the units were never used.
            self.refund(amount)
            raise
        finally:
            self._sleepers.remove(sleeper)

    def refund(self, amount: float) -> None:
        """Give back ``amount`` unused units; the level never exceeds the capacity."""
        if self._rate is None:
            return
        self._refill()
        self._level = min(self._capacity, self._level + amount)

    def charge(self, amount: float) -> None:
        """Take ``amount`` more units without waiting (usage turned out larger than reserved)."""
        if self._rate is None:
            return
        self._refill()
        self._level -= amount

    # --- correcting ----------------------------------------------------------------------
    def set_rate(self, rate: float | None, capacity: float | None = None) -> None:
        """Change the rate (and capacity); sleepers re-reserve under the new rate."""
        self._refill()
        if rate == self._rate and (capacity is None or capacity == self._capacity):
            return
        was_unlimited = self._rate is None
        self._rate = rate
        self._capacity = self._default_capacity(rate) if capacity is None else capacity
        if was_unlimited or self._level > self._capacity:
            self._level = self._capacity
        self._wake_sleepers()

    def lower_to(self, level: float) -> None:
        """Lower the level to ``level`` if it is higher (the server knows we have less)."""
        if self._rate is None:
            return
        self._refill()
        if level < self._level:
            self._level = level
            self._wake_sleepers()

    def _wake_sleepers(self) -> None:
        """Re-reserve every sleeper under the new state, in arrival order, moving deadlines.

        (Waking them to re-reserve themselves let each one count the others' units and let
        trio's wake order decide who goes first.)
        """
        if not self._sleepers:
            return
        if self._rate is not None:
            pending = sum(amount for amount, _ in self._sleepers)
            self._level = min(self._capacity, self._level + pending)
        now = trio.current_time()
        for amount, scope in self._sleepers:
            scope.deadline = now + self.reserve(amount)

    def _refill(self) -> None:
        now = trio.current_time()
        if self._stamp is None:
            self._stamp = now
        elif self._rate is not None and self._level < self._capacity:
            self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate)
        self._stamp = now
