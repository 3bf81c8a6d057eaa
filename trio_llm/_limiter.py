"""Token buckets on trio's clock: how many requests and tokens may be sent, and when.

A bucket holds up to ``capacity`` units and refills continuously at ``rate`` units per second.
It works by *reservation* (like GCRA or Go's ``rate.Limiter.Reserve``): taking units lowers the
level at once, possibly below zero, and tells the taker how long to sleep before its units are
really there. Later takers see the lower level and sleep longer, so waiters are served in the
order they arrived (FIFO) and each sleeps exactly until its moment: there is no polling loop.

A reservation may start no earlier than a given moment (``after``: a key cooling down, a
breaker open): the bucket then counts only the refill it can really hold by that moment (never
more than its capacity), so the waiters behind a pause leave at the bucket's rate afterwards,
not all together.

A request larger than the capacity is admitted when the bucket is full (the level then goes
negative), as providers do, so one big prompt can never wait forever.

The level can be corrected from the outside (the server's rate-limit headers are the truth), and
the rate can change (limits learned from headers, or lowered after unexpected 429s). Sleepers in
``acquire`` are then re-timed in place, in arrival order (``trio_llm._waiters``).
"""

from __future__ import annotations

import math
from typing import final

import attrs
import trio

from ._waiters import WaitQueue

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

    _sleepers: WaitQueue[float]

    def __init__(self, rate: float | None, capacity: float | None = None) -> None:
        self._rate = rate
        self._capacity = self._default_capacity(rate) if capacity is None else capacity
        self._level = self._capacity
        # Read the clock lazily: a bucket may be built before trio.run starts.
        self._stamp: float | None = None
        # Tasks asleep in acquire, in arrival order; each waiter's data is its units.
        self._sleepers = WaitQueue()

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

    def delay(
        self, amount: float, margin_s: float = 0.0, after: float = 0.0, credit: float = 0.0
    ) -> float:
        """Seconds until ``amount`` units could be taken, if nobody else takes any first.

        ``margin_s`` asks for that many seconds of refill on top, so that a server counting
        the same bucket with its own clock and rounding is never a hair short. A request at
        least as large as the capacity waits for a full bucket and then the margin too.
        ``after``: not before that many seconds from now (the answer is at least ``after``).
        ``credit``: as if that many reserved units were given back first (what a request
        that may go ahead of those reservations would wait).
        """
        if self._rate is None:
            return max(0.0, after)
        self._refill()
        if not credit:
            return self._wait(amount, margin_s, after)[0]
        level = self._level
        self._level = min(self._capacity, level + credit)
        try:
            return self._wait(amount, margin_s, after)[0]
        finally:
            self._level = level

    def _wait(self, amount: float, margin_s: float, after: float) -> tuple[float, float, float]:
        """(wait, moment, level): ``amount`` can be taken after ``wait`` seconds, no earlier
        than ``after``; the units are counted as taken ``moment`` seconds from now, when the
        bucket holds ``level`` (refill capped at the capacity while it waits for ``after``).

        The margin is only a delay: it never costs units, even when the bucket is full.
        """
        rate = self._rate
        assert rate is not None
        need = min(amount, self._capacity)
        extra = 0.0
        if need + rate * margin_s <= self._capacity:
            need += rate * margin_s
        else:
            # The margin cannot be had as units (the bucket would overflow): wait it as time.
            extra = margin_s
        moment = max(0.0, (need - self._level) / rate)
        if after > moment:
            moment = after
            level = min(self._capacity, self._level + rate * after)
        else:
            level = self._level + rate * moment
        return moment + extra, moment, level

    def statistics(self) -> BucketStatistics:
        """A frozen snapshot of the bucket's state."""
        return BucketStatistics(
            rate=self._rate,
            capacity=self._capacity,
            level=self.level,
            waiting=len(self._sleepers),
            reserved=sum(waiter.data for waiter in self._sleepers),
        )

    # --- taking and giving back ----------------------------------------------------------
    def reserve(self, amount: float, margin_s: float = 0.0, after: float = 0.0) -> float:
        """Take ``amount`` units now; return the seconds to wait before they are really there.

        The caller must sleep that long before acting (``acquire`` does it for you) and must
        ``refund`` the units if it gives up before using them. ``margin_s`` and ``after`` are as
        in ``delay``.
        """
        return self.hold(amount, margin_s, after)[0]

    def hold(self, amount: float, margin_s: float = 0.0, after: float = 0.0) -> tuple[float, float]:
        """``reserve``, also returning what to ``refund`` if the units go unused: ``amount``
        plus the refill a full bucket would have lost while waiting for ``after``."""
        if self._rate is None:
            return max(0.0, after), 0.0
        self._refill()
        wait, moment, level = self._wait(amount, margin_s, after)
        # The level is kept as of now: what it will be at the moment of taking, less the
        # refill until then. Refill lost to the capacity during a pause is not counted.
        new_level = level - amount - self._rate * moment
        taken = self._level - new_level
        self._level = new_level
        return wait, taken

    def acquire_nowait(self, amount: float = 1) -> None:
        """Take ``amount`` units if they are there now, else raise ``trio.WouldBlock``."""
        if self.delay(amount) > 0:
            raise trio.WouldBlock
        self.reserve(amount)

    async def acquire(self, amount: float = 1) -> None:
        """Take ``amount`` units, sleeping until they are there (FIFO among sleepers).

        If the bucket's rate or level is changed while sleeping, the reservation is made anew
        under the new state (in arrival order). Cancelled sleepers give their units back, and
        those who came after them are re-timed so that nobody takes their place out of turn.
        """
        wait = self.reserve(amount)
        if wait <= 0:
            await trio.lowlevel.checkpoint()
            return
        waiter = self._sleepers.waiter(amount)
        try:
            await self._sleepers.park(waiter, trio.current_time() + wait)
        except BaseException:
            # Cancelled (or anything else): the units were never used.
            self.refund(amount)
            self._retime_sleepers(after=waiter.seq)
            raise

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
        self._retime_sleepers()

    def lower_to(self, level: float) -> None:
        """Lower the level to ``level`` if it is higher (the server knows we have less)."""
        if self._rate is None:
            return
        self._refill()
        if level < self._level:
            self._level = level
            self._retime_sleepers()

    def _retime_sleepers(self, after: int = 0) -> None:
        """Re-reserve the sleepers that came after number ``after`` under the new state, in
        arrival order, moving their deadlines (nobody is woken to race for it).

        All of their units are given back before any is taken again, so that none counts the
        others' old reservations.
        """
        sleepers = [w for w in self._sleepers if w.seq > after and not w.leaving]
        if not sleepers:
            return
        for waiter in sleepers:
            self.refund(waiter.data)
        now = trio.current_time()
        for waiter in sleepers:
            self._sleepers.retime(waiter, now + self.reserve(waiter.data))

    def _refill(self) -> None:
        now = trio.current_time()
        if self._stamp is None:
            self._stamp = now
        elif self._rate is not None and self._level < self._capacity:
            self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate)
        self._stamp = now
