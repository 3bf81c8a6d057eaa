"""The Redis transport of a split run (``trio-llm run --redis URL --workers N`` and ``--join``):
a Redis Stream of items with a consumer group, and a stream of results.

::

    coordinator ── XADD items ─► {ns}:split:NAME:RUN:items ── XREADGROUP (group "workers") ─► worker
        ▲                                                   ── XAUTOCLAIM after the lease ──► worker
        └── XREAD results ◄── {ns}:split:NAME:RUN:results ◄── XADD result ──────────────────┘
            write OUTPUT, then XACK + XDEL the item

A run is named after OUTPUT's file name (``NAME``); each start of the coordinator is a new run
(``RUN``), published under ``{ns}:split:NAME``, where workers find it (``--join`` waits for it).
A worker keeps the items it holds by claiming them again every third of the lease
(``XCLAIM ... JUSTID`` resets their idle time); a worker that dies stops doing that, and once
its items have been idle for a lease, the next worker to ask takes them over
(``XAUTOCLAIM``). An item is acknowledged (``XACK``) only once its result is in OUTPUT, so a
coordinator that dies leaves nothing acknowledged that was not written; its restart is a new
run that resumes from OUTPUT as any rerun does. The coordinator holds
``{ns}:split:NAME:coordinator`` for as long as it runs: a second one on the same name is
refused.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any, Final, final

import trio

from ._errors import ConfigurationError

__all__ = ["RedisFeed", "RedisTasks", "SplitTaken"]

_GROUP: Final = "workers"
#: How long to wait before asking again when a stream had nothing (no blocking reads: a
#: blocked connection would hold up the limits' Lua calls sharing it).
_POLL_S: Final = 0.02


class SplitTaken(ConfigurationError):
    """Another coordinator runs the same name on this Redis."""


def _client(url: str) -> Any:
    import coredis

    return coredis.Redis.from_url(url, decode_responses=True)


def _names(namespace: str, name: str, run: str) -> tuple[str, str, str]:
    base = f"{namespace}:split:{name}:{run}"
    return base + ":items", base + ":results", base + ":over"


@final
class RedisFeed:
    """The coordinator's end: a ``Feed`` on Redis Streams. Use ``async with``."""

    def __init__(
        self, url: str, name: str, *, namespace: str = "trio-llm", lease_s: float = 10.0
    ) -> None:
        self.url = url
        self.name = name
        self.run = secrets.token_hex(6)
        self.lease_s = lease_s
        self._pointer = f"{namespace}:split:{name}"
        self._lock = f"{namespace}:split:{name}:coordinator"
        self._items, self._results, self._over = _names(namespace, name, self.run)
        self._client: Any = None
        self._last = "0-0"
        self._ready: list[tuple[str, bytes]] = []
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> RedisFeed:
        import coredis

        async with contextlib.AsyncExitStack() as stack:
            client = self._client = await stack.enter_async_context(_client(self.url))
            ms = int(self.lease_s * 1000)
            if not await client.set(self._lock, self.run, condition=coredis.PureToken.NX, px=ms):
                taken = True
            else:
                taken = False
                await client.xgroup_create(self._items, _GROUP, identifier="0", mkstream=True)
                # The results stream exists from the start: a worker's XADD never creates it
                # (NOMKSTREAM), so a result for a run that is gone is not kept for nobody.
                await client.xgroup_create(self._results, "_", identifier="0", mkstream=True)
                await client.set(self._pointer, self.run)
                nursery = await stack.enter_async_context(trio.open_nursery())
                nursery.start_soon(self._hold_lock)
                stack.push_async_callback(self._cleanup, nursery)
                self._stack = stack.pop_all()
        if taken:  # raised here, not inside the client (which would wrap it in a group)
            raise SplitTaken(
                f"another coordinator is running {self.name!r} on {self.url} (its lock "
                f"{self._lock} expires {self.lease_s:g} s after it stops)"
            )
        return self

    async def _cleanup(self, nursery: trio.Nursery) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await self.finish()
            # Gone a minute after the run: a worker still asking sees ``over`` first.
            for key in (self._items, self._results):
                await self._client.pexpire(key, 60_000)
            await self._client.delete([self._lock])
        nursery.cancel_scope.cancel()

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _hold_lock(self) -> None:
        while True:
            await trio.sleep(self.lease_s / 3)
            await self._client.pexpire(self._lock, int(self.lease_s * 1000))

    async def put(self, index: int, request: bytes) -> None:
        await self._client.xadd(self._items, {"i": str(index), "r": request.decode()})

    async def next_result(self) -> tuple[object, bytes]:
        while not self._ready:
            reply = await self._client.xread(streams={self._results: self._last}, count=500)
            entries = () if not reply else reply[self._results]
            for entry in entries:
                fields = entry.field_values
                self._ready.append((f"{fields['t']} {entry.identifier}", fields["r"].encode()))
            if entries:
                self._last = entries[-1].identifier  # moved on only once they are in hand
            else:
                await trio.sleep(_POLL_S)
        ticket, payload = self._ready.pop(0)
        return ticket, payload

    async def written(self, ticket: object) -> None:
        item, result = str(ticket).split(" ")
        await self._client.xack(self._items, _GROUP, [item])
        await self._client.xdel(self._items, [item])
        await self._client.xdel(self._results, [result])

    async def finish(self) -> None:
        await self._client.set(self._over, "1", px=int(max(60.0, 6 * self.lease_s) * 1000))


@final
class RedisTasks:
    """A worker's end: ``Tasks`` from the run published under NAME. Use ``async with``;
    ``wait_for_run`` first (it waits for a coordinator to start one)."""

    def __init__(
        self, url: str, name: str, *, namespace: str = "trio-llm", lease_s: float = 10.0
    ) -> None:
        self.url = url
        self.name = name
        self.namespace = namespace
        self.lease_s = lease_s
        self.consumer = secrets.token_hex(6)
        self._pointer = f"{namespace}:split:{name}"
        self.run: str | None = None
        self._items = self._results = self._over = ""
        self._client: Any = None
        self._held: set[str] = set()
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> RedisTasks:
        async with contextlib.AsyncExitStack() as stack:
            self._client = await stack.enter_async_context(_client(self.url))
            nursery = await stack.enter_async_context(trio.open_nursery())
            nursery.start_soon(self._hold_items)
            stack.callback(nursery.cancel_scope.cancel)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def wait_for_run(self, *, after: str | None = None) -> str:
        """The run published under NAME (other than ``after``), once there is one."""
        while True:
            run = await self._client.get(self._pointer)
            if run and run != after:
                over = _names(self.namespace, self.name, run)[2]
                if not await self._client.exists([over]):
                    self.run = run
                    self._items, self._results, self._over = _names(self.namespace, self.name, run)
                    self._held.clear()
                    return str(run)
            await trio.sleep(0.2)

    async def _hold_items(self) -> None:
        """Claim again what this worker holds, before the lease runs out: it is still ours."""
        while True:
            await trio.sleep(self.lease_s / 3)
            if self._held:
                await self._client.xclaim(
                    self._items, _GROUP, self.consumer, 0, list(self._held), justid=True
                )

    async def _over_yet(self) -> bool:
        return bool(await self._client.exists([self._over])) or (
            await self._client.get(self._pointer) != self.run
        )

    async def take(self, most: int) -> list[tuple[object, int, bytes]] | None:
        lease_ms = int(self.lease_s * 1000)
        while True:
            # Over (done, the deadline, Ctrl-C) first: what is left in the stream is for a
            # rerun, not to be sent after the coordinator stopped.
            if await self._over_yet():
                return None
            # A dead worker's items first (idle for a lease), then new ones.
            _, entries, *_ = await self._client.xautoclaim(
                self._items, _GROUP, self.consumer, lease_ms, "0-0", count=most
            )
            if not entries:
                reply = await self._client.xreadgroup(
                    _GROUP, self.consumer, streams={self._items: ">"}, count=most
                )
                entries = () if not reply else reply[self._items]
            items = [
                (e.identifier, int(e.field_values["i"]), e.field_values["r"].encode())
                for e in entries
                if e.field_values  # an entry deleted while pending shows without its fields
            ]
            if items:
                self._held.update(str(ticket) for ticket, _, _ in items)
                return items
            await trio.sleep(_POLL_S)

    async def deliver(self, ticket: object, index: int, result: bytes) -> None:
        await self._client.xadd(
            self._results, {"t": str(ticket), "r": result.decode()}, nomkstream=True
        )
        self._held.discard(str(ticket))
