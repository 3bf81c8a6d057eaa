"""The one wait queue: tasks waiting for their moment, in arrival order.

Every wait in trio-llm's scheduling goes through a ``WaitQueue`` (as every trio primitive goes
through a ``ParkingLot``): a task parks until a deadline that its owner computed, and the owner
may later

* **re-time** it in place (a refund, a correction from the server's headers, a breaker that
  closed): the deadline moves, the task is not woken, its place in the queue is kept;
* **wake** it early to choose again (its key cooled down or was dropped).

Waiters are kept in arrival order, so an owner that re-times "everyone behind X" walks them in
the order they came: the queue is FIFO by construction, not by the luck of trio's wake order.
Several queues may share one numbering (``WaitQueue(numbering)``): they are then parts of one
queue, kept apart only so that each part can be walked alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Generic, TypeVar, final

import trio

__all__ = ["NEVER", "WaitQueue", "Waiter"]

T = TypeVar("T")


@final
class Waiter(Generic[T]):
    """One parked task and what its owner needs to know about it (``data``).

    Attributes:
        data: the owner's payload (what the task waits for).
        seq: its arrival number; lower came first.
        woken: True once the owner woke it early to choose again.
    """

    __slots__ = ("_scope", "data", "seq", "woken")

    def __init__(self, data: T, seq: int) -> None:
        self.data = data
        self.seq = seq
        self.woken = False
        self._scope = trio.CancelScope()

    @property
    def deadline(self) -> float:
        """When it will be released (``inf``: only when re-timed or woken)."""
        return self._scope.deadline

    @property
    def leaving(self) -> bool:
        """True once its deadline has passed or it was woken: moving it changes nothing."""
        return self._scope.cancel_called


@final
class WaitQueue(Generic[T]):
    """Parked tasks in arrival order, each until its own (movable) deadline."""

    __slots__ = ("_numbering", "_waiters")

    def __init__(self, numbering: Iterator[int] | None = None) -> None:
        # A dict keeps insertion order and removes in O(1).
        self._waiters: dict[Waiter[T], None] = {}
        self._numbering = itertools.count(1) if numbering is None else numbering

    def __len__(self) -> int:
        return len(self._waiters)

    def __iter__(self) -> Iterator[Waiter[T]]:
        """The waiters in arrival order (a snapshot: safe to re-time or wake while iterating)."""
        return iter(list(self._waiters))

    def waiter(self, data: T) -> Waiter[T]:
        """A new waiter for ``data``, numbered after every earlier one."""
        return Waiter(data, next(self._numbering))

    async def park(self, waiter: Waiter[T], deadline: float) -> bool:
        """Sleep until ``deadline`` (or wherever ``retime`` moves it).

        Returns True when the deadline came, False when the owner woke the task early to choose
        again. Cancellation from outside propagates as usual; the waiter leaves the queue either
        way.
        """
        waiter._scope.deadline = deadline
        self._waiters[waiter] = None
        try:
            with waiter._scope:
                await trio.sleep_forever()
        finally:
            del self._waiters[waiter]
        return not waiter.woken

    @staticmethod
    def retime(waiter: Waiter[T], deadline: float) -> None:
        """Move ``waiter``'s deadline (earlier or later) without waking it."""
        if not waiter.leaving:
            waiter._scope.deadline = deadline

    @staticmethod
    def wake(waiter: Waiter[T]) -> None:
        """Release ``waiter`` now, to choose again (``park`` returns False)."""
        if not waiter.leaving:
            waiter.woken = True
            waiter._scope.cancel()


#: A deadline that never comes: the waiter leaves only when re-timed or woken.
NEVER = math.inf
