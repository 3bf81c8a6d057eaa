"""The local transport of a split run (``trio-llm run --processes N``): child processes on a
socket pair each, to a parent that hands out the items and serves the key limits.

::

    parent: run_file ─ SplitRun ─ LocalHub ─┬─ socket ─ child 1: Engine(limits_store=LocalStore)
              (INPUT, OUTPUT)  MemoryStore ─┤           work(engine, LocalTasks)
                                            └─ socket ─ child 2: ...

One frame per message: 4 bytes of length, then JSON. A child asks ``take`` (items) and
``store`` (a ``LimitsStore.take``: the parent's ``MemoryStore`` answers, on the parent's clock,
so every child's requests together hold the limits) and sends ``done`` with each result. The
parent remembers which items each child holds; when a child's socket closes before it
answered them (it crashed, or was killed) they go back to the front of the queue for the
others, which is how nothing is lost.
"""

from __future__ import annotations

import collections
import itertools
import math
import struct
from collections.abc import Sequence
from typing import Any, Final, final

import orjson
import trio

from ._store import MemoryStore, StoreBucket, StoreReply

__all__ = ["LocalHub", "LocalLink", "LocalStore", "LocalTasks"]

_HEADER: Final = struct.Struct(">I")


@final
class _Framed:
    """Length-prefixed JSON frames over a stream; sends from many tasks are serialised."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._lock = trio.Lock()

    async def send(self, message: Any) -> None:
        data = orjson.dumps(message)
        async with self._lock:
            await self.stream.send_all(_HEADER.pack(len(data)) + data)

    async def receive(self) -> Any:
        """The next message, or ``None`` at the end of the stream."""
        while True:
            if len(self._buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buffer)
                end = _HEADER.size + size
                if len(self._buffer) >= end:
                    data = bytes(self._buffer[_HEADER.size : end])
                    del self._buffer[:end]
                    return orjson.loads(data)
            chunk = await self.stream.receive_some(1 << 16)
            if not chunk:
                return None  # a torn last frame (the peer died mid-send) is no message
            self._buffer += chunk


# --- the parent ------------------------------------------------------------------------------


@final
class LocalHub:
    """The parent's end: a ``Feed`` for ``SplitRun``, serving children's sockets."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self._queue: collections.deque[tuple[int, str]] = collections.deque()
        self._changed = trio.Condition()
        self._over = False
        self._results_in, self._results_out = trio.open_memory_channel[tuple[object, bytes]](
            math.inf
        )
        self.children_lost = 0

    # Feed
    async def put(self, index: int, request: bytes) -> None:
        self._queue.append((index, request.decode()))
        async with self._changed:
            self._changed.notify_all()

    async def next_result(self) -> tuple[object, bytes]:
        return await self._results_out.receive()

    async def written(self, ticket: object) -> None:
        await trio.lowlevel.checkpoint()  # the parent forgot the item when its result came

    @property
    def over(self) -> bool:
        """Whether the run is over (``finish`` was called)."""
        return self._over

    async def finish(self) -> None:
        self._over = True
        async with self._changed:
            self._changed.notify_all()

    # children
    async def serve(self, stream: trio.abc.Stream) -> None:
        """Serve one child until its socket closes; then requeue what it held."""
        link = _Framed(stream)
        held: dict[int, str] = {}
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    message = await link.receive()
                    if message is None:
                        break
                    op = message[0]
                    if op == "done":
                        index = message[1]
                        if held.pop(index, None) is not None:
                            self._results_in.send_nowait((None, message[2].encode()))
                    else:
                        # Waits (a take with nothing to hand out, a store's answer) must not
                        # hold up this child's other messages.
                        nursery.start_soon(self._answer, link, message, held)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # The child is gone: a kill -9 with frames it never read in its socket is a reset,
            # not an end of stream; raised in the nursery, it comes as a group.
            pass
        finally:
            if held:
                self.children_lost += 1
                # Back to the front, in order: the next child to ask takes them over.
                self._queue.extendleft(reversed(list(held.items())))
                held.clear()
                with trio.CancelScope(shield=True):
                    async with self._changed:
                        self._changed.notify_all()
            # Closed here, also when the run is cancelled (Ctrl-C): the child sees the end of
            # its socket and leaves at once, rather than wait to be killed.
            await trio.aclose_forcefully(stream)

    async def _answer(self, link: _Framed, message: list[Any], held: dict[int, str]) -> None:
        op, call = message[0], message[1]
        if op == "take":
            most = int(message[2])
            async with self._changed:
                while not self._queue and not self._over:
                    await self._changed.wait()
            if self._over or not self._queue:
                # Over (done, the deadline, Ctrl-C): nothing more goes out, even if the queue
                # still holds items (a rerun sends them).
                await link.send([call, None])
                return
            items: list[list[Any]] = []
            while self._queue and len(items) < most:
                index, request = self._queue.popleft()
                held[index] = request
                items.append([index, request])
            await link.send([call, items])
        elif op == "store":
            args = message[2]
            reply = await self.store.take(
                [StoreBucket(*b) for b in args["buckets"]],
                cooling=args["cooling"],
                refunds=[StoreBucket(*b) for b in args["refunds"]],
                cool=[(n, s) for n, s in args["cool"]],
                drop=[(n, r) for n, r in args["drop"]],
                dropped_of=args["dropped_of"],
            )
            await link.send([call, reply.wait_s, reply.dropped])


# --- a child ---------------------------------------------------------------------------------


@final
class LocalLink:
    """A child's socket to the parent: calls with replies matched by number."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._link = _Framed(stream)
        self._calls = itertools.count()
        self._waiting: dict[int, tuple[trio.Event, list[Any]]] = {}
        self._closed = False

    async def run(self) -> None:
        """Read the parent's replies until the socket closes (then every call fails)."""
        try:
            while True:
                try:
                    message = await self._link.receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    message = None
                if message is None:
                    break
                waiter = self._waiting.pop(message[0], None)
                if waiter is not None:
                    waiter[1].extend(message[1:])
                    waiter[0].set()
        finally:
            self._closed = True
            for event, _ in self._waiting.values():
                event.set()
            self._waiting.clear()

    async def call(self, *message: Any) -> list[Any]:
        if self._closed:
            raise trio.BrokenResourceError("the parent's socket closed")
        number = next(self._calls)
        event, reply = trio.Event(), list[Any]()
        self._waiting[number] = (event, reply)
        try:
            await self._link.send([message[0], number, *message[1:]])
            await event.wait()
        finally:
            self._waiting.pop(number, None)
        if not reply:
            raise trio.BrokenResourceError("the parent's socket closed")
        return reply

    async def send(self, *message: Any) -> None:
        await self._link.send(list(message))


@final
class LocalTasks:
    """A child's ``Tasks``: items from the parent, results back to it."""

    def __init__(self, link: LocalLink) -> None:
        self._link = link

    async def take(self, most: int) -> list[tuple[object, int, bytes]] | None:
        try:
            (items,) = await self._link.call("take", most)
        except trio.BrokenResourceError:
            return None  # the parent is gone: the run is over for this child
        if items is None:
            return None
        return [(None, int(index), request.encode()) for index, request in items]

    async def deliver(self, ticket: object, index: int, result: bytes) -> None:
        await self._link.send("done", index, result.decode())


@final
class LocalStore:
    """A ``LimitsStore`` whose buckets live in the parent's ``MemoryStore``."""

    def __init__(self, link: LocalLink) -> None:
        self._link = link

    async def take(
        self,
        buckets: Sequence[StoreBucket],
        *,
        cooling: Sequence[str] = (),
        refunds: Sequence[StoreBucket] = (),
        cool: Sequence[tuple[str, float]] = (),
        drop: Sequence[tuple[str, str]] = (),
        dropped_of: Sequence[str] = (),
    ) -> StoreReply:
        def plain(items: Sequence[StoreBucket]) -> list[list[Any]]:
            return [[b.name, b.amount, b.rate, b.capacity] for b in items]

        wait_s, dropped = await self._link.call(
            "store",
            {
                "buckets": plain(buckets),
                "cooling": list(cooling),
                "refunds": plain(refunds),
                "cool": [list(c) for c in cool],
                "drop": [list(d) for d in drop],
                "dropped_of": list(dropped_of),
            },
        )
        return StoreReply(wait_s=float(wait_s), dropped=tuple((n, r) for n, r in dropped))

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
