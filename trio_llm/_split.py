"""One run split across processes: a coordinator that owns INPUT and OUTPUT, workers that send.

::

    coordinator (trio-llm run: INPUT, OUTPUT, resume, the summary)
      run_file ── SplitRun.stream(requests) ── Feed.put(index, request) ──┐
         ▲                                                               transport
         └─ write OUTPUT, then Feed.written(ticket) ◄── Feed.next_result ◄┘   │
                                                                              ▼
    worker 1..N (each its own trio loop, Engine, HTTP layer; limits in a shared store)
      work(engine, tasks): Tasks.take ─► engine.stream ─► Tasks.deliver(result)

The coordinator is ``run_file`` as in one process: it reads INPUT, skips what OUTPUT already
answers, writes every result as it comes; only the engine it streams through is a
``SplitRun``, which hands the requests to workers and gives back their results. So resume,
the journal's markers, duplicate ids and ``--failed`` are the same code in every mode.

Nothing lost, nothing twice: an item stays *outstanding* at the coordinator from the moment it
is handed out until its result is written. The transport gives the items a worker took and
never answered to another worker once that worker is gone (a closed pipe, or a lease that
ran out in Redis); an item answered twice (taken over from a worker that was slow, not dead)
is written once: the second result finds the item no longer outstanding and is dropped. A
result is acknowledged to the transport only after its line is in OUTPUT.

Two transports, one mechanism: ``_split_local`` (``--processes N``: child processes on a
socket to the parent, which also serves the limits from its ``MemoryStore``) and
``_split_redis`` (``--redis URL --workers N`` / ``--join``: a Redis Stream with a consumer
group, the limits in ``RedisStore``).
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Protocol, final

import attrs
import orjson
import trio

from ._convert import converter
from ._engine import Engine
from ._errors import ConfigurationError
from ._models import ErrorInfo, Request, Result
from ._policy import ErrorKind

__all__ = [
    "Feed",
    "ResultSource",
    "SplitRun",
    "Tasks",
    "decode_request",
    "decode_result",
    "encode_request",
    "encode_result",
    "work",
]


class ResultSource(Protocol):
    """What ``run_file`` streams through: an ``Engine``, or a ``SplitRun``."""

    def stream(
        self,
        prompts: AsyncIterable[Request],
        *,
        deadline: float | None = None,
        budget_usd: float | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[Result]]: ...


class Feed(Protocol):
    """The coordinator's end of a transport."""

    async def put(self, index: int, request: bytes) -> None:
        """Hand an item to the workers."""
        ...

    async def next_result(self) -> tuple[object, bytes]:
        """The next result a worker delivered, with its ticket (for ``written``)."""
        ...

    async def written(self, ticket: object) -> None:
        """The result of ``ticket`` is in OUTPUT: the transport may forget its item."""
        ...

    async def finish(self) -> None:
        """The run is over (done, or stopped): workers leave."""
        ...


class Tasks(Protocol):
    """A worker's end of a transport."""

    async def take(self, most: int) -> list[tuple[object, int, bytes]] | None:
        """Up to ``most`` items (ticket, index, request), waiting for at least one; ``None``
        once the run is over."""
        ...

    async def deliver(self, ticket: object, index: int, result: bytes) -> None:
        """Hand an item's result to the coordinator."""
        ...


def encode_request(request: Request) -> bytes:
    return orjson.dumps(converter.unstructure(request), option=orjson.OPT_NON_STR_KEYS)


def decode_request(data: bytes) -> Request:
    return converter.structure(orjson.loads(data), Request)


def encode_result(result: Result) -> bytes:
    return orjson.dumps(converter.unstructure(result), option=orjson.OPT_NON_STR_KEYS)


def decode_result(data: bytes) -> Result:
    return converter.structure(orjson.loads(data), Result)


# --- the worker ------------------------------------------------------------------------------


async def work(engine: Engine, tasks: Tasks, *, batch: int | None = None) -> int:
    """Send what ``tasks`` hands out through ``engine`` until the run is over; return how many
    results this worker delivered.

    Items are taken as the engine reads its source, a few at a time, so that a worker holds
    little more than it has in flight (the rest stays for the other workers).
    """
    most = batch if batch is not None else max(1, engine.concurrency // 4)
    taken: dict[int, tuple[object, int]] = {}  # the engine's index -> (ticket, run's index)
    delivered = 0

    async def requests() -> AsyncGenerator[Request, None]:
        local = 0
        while True:
            items = await tasks.take(most)
            if items is None:
                return
            for ticket, index, payload in items:
                taken[local] = (ticket, index)
                local += 1
                yield decode_request(payload)

    async with engine.stream(requests()) as results:
        async for result in results:
            ticket, index = taken.pop(result.index)
            await tasks.deliver(ticket, index, encode_result(attrs.evolve(result, index=index)))
            delivered += 1
    return delivered


# --- the coordinator -------------------------------------------------------------------------


@final
class SplitRun:
    """An engine-like ``stream`` whose requests are sent by workers at the other end of
    ``feed``.

    Args:
        feed: the coordinator's end of a transport.
        window: the most items handed out and not yet answered (memory stays flat in the
            transport too, whatever the size of INPUT).
    """

    def __init__(self, feed: Feed, *, window: int = 10_000) -> None:
        self.feed = feed
        self.window = window

    def stream(
        self,
        prompts: AsyncIterable[Request],
        *,
        deadline: float | None = None,
        budget_usd: float | None = None,
    ) -> _SplitStream:
        if budget_usd is not None:
            raise ConfigurationError(
                "a budget is kept by one process: it cannot be split across workers\n"
                "HINT: drop --budget, or drop --processes / --workers"
            )
        return _SplitStream(self, prompts, deadline)


@final
class _SplitStream:
    def __init__(
        self, split: SplitRun, prompts: AsyncIterable[Request], deadline: float | None
    ) -> None:
        self._feed = split.feed
        self._window = split.window
        self._prompts = prompts
        self._deadline = deadline
        self._outstanding: set[int] = set()
        self._room = trio.Condition()
        self._read_all = False
        self._send, self._receive = trio.open_memory_channel[tuple[object, Result]](math.inf)
        self._unacked: object = _NOTHING
        self._nursery_cm: Any = None
        self._nursery: trio.Nursery | None = None
        self._collector = trio.CancelScope()
        # What the deadline stops: handing out and collecting. Not the nursery's own scope,
        # which also holds the caller's loop between __aenter__ and __aexit__: the caller
        # still reads (and writes) the deadline's failures.
        self._work = trio.CancelScope()

    async def __aenter__(self) -> _SplitStream:
        self._nursery_cm = trio.open_nursery()
        nursery = self._nursery = await self._nursery_cm.__aenter__()
        nursery.start_soon(self._hand_out_and_collect)
        return self

    async def _hand_out_and_collect(self) -> None:
        with self._work:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._produce)
                nursery.start_soon(self._collect)
                if self._deadline is not None:
                    nursery.start_soon(self._stop_at, self._deadline)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._nursery is not None
        if exc is None:
            await self._acknowledge()
        self._nursery.cancel_scope.cancel()
        try:
            await self._nursery_cm.__aexit__(None, None, None)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._feed.finish()

    def __aiter__(self) -> _SplitStream:
        return self

    async def __anext__(self) -> Result:
        # The caller asks for the next result once it wrote the previous one.
        await self._acknowledge()
        try:
            ticket, result = await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        self._unacked = ticket
        return result

    async def _acknowledge(self) -> None:
        ticket, self._unacked = self._unacked, _NOTHING
        if ticket is not _NOTHING and ticket is not None:
            await self._feed.written(ticket)

    async def _produce(self) -> None:
        index = 0
        async for request in self._prompts:
            async with self._room:
                while len(self._outstanding) >= self._window:
                    await self._room.wait()
            self._outstanding.add(index)
            await self._feed.put(index, encode_request(request))
            index += 1
        self._read_all = True
        self._collector.cancel()  # it may be waiting for a result when none is outstanding

    async def _collect(self) -> None:
        while not (self._read_all and not self._outstanding):
            self._collector = trio.CancelScope()
            with self._collector:
                ticket, payload = await self._feed.next_result()
            if self._collector.cancelled_caught:
                continue
            result = decode_result(payload)
            if result.index not in self._outstanding:
                await self._feed.written(ticket)  # answered twice (taken over): written once
                continue
            # Handed to the caller before the next checkpoint: the deadline, which fails what
            # is still outstanding and closes the channel, sees it either here or there.
            self._outstanding.discard(result.index)
            self._send.send_nowait((ticket, result))
            async with self._room:
                self._room.notify_all()
        self._send.close()

    async def _stop_at(self, deadline: float) -> None:
        await trio.sleep(deadline)
        # Nothing more is read or handed out; what was handed out and not answered ends as
        # a failure of kind deadline (which a rerun sends again), as in one process.
        message = f"the run's deadline of {deadline}s passed"
        for index in sorted(self._outstanding):
            failed = Result(
                index=index, ok=False, error=ErrorInfo(kind=ErrorKind.DEADLINE, message=message)
            )
            self._send.send_nowait((None, failed))
        self._outstanding.clear()
        self._send.close()
        self._work.cancel()


_NOTHING = object()
