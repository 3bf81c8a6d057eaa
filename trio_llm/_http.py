"""The HTTP layer: several pooled ``httpx.AsyncClient`` shards instead of one big pool.

One client's connection pool degrades badly with hundreds of connections (httpx issue #3215:
the pool's bookkeeping is linear in its size and runs on every request). Keeping each pool
small and spreading requests over several clients keeps that cost flat, so the engine stays
efficient at 1,000 requests in flight. Requests go to the shard with the fewest in flight.

Deadlines are trio cancel scopes in the engine, so httpx's own timeouts are off.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from types import TracebackType
from typing import final

import httpx

from ._providers import HttpRequest

__all__ = ["HttpPool", "RawResponse"]

#: Connections per client: measured (benchmarks/concurrency.py) as the size where one pool's
#: per-request cost is still small; more shards beyond the concurrency's needs cost nothing.
CONNECTIONS_PER_SHARD = 32


class RawResponse:
    """Status, headers and the whole body of one response."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class BodyError(Exception):
    """The status line and headers arrived, the body did not (truncated, connection dropped)."""


@final
class HttpPool:
    """Clients sized for ``concurrency`` requests in flight.

    Args:
        concurrency: the most requests in flight; connections are kept alive for all of them.
        transport: an httpx transport for every shard (``httpx.MockTransport`` in tests);
            with one, a single shard is used.
        http2: negotiate HTTP/2 where the server offers it (needs the ``h2`` package).
    """

    def __init__(
        self,
        concurrency: int,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        http2: bool = False,
        connections_per_shard: int = CONNECTIONS_PER_SHARD,
    ) -> None:
        shards = 1 if transport is not None else math.ceil(concurrency / connections_per_shard)
        per_shard = math.ceil(concurrency / shards)
        limits = httpx.Limits(
            max_connections=per_shard,
            max_keepalive_connections=per_shard,
            keepalive_expiry=30.0,
        )
        self._clients = [
            # Deadlines are trio cancel scopes in the engine: httpx's own timeouts are off.
            httpx.AsyncClient(
                limits=limits,
                timeout=None,  # noqa: S113
                transport=transport,
                http2=http2,
            )
            for _ in range(shards)
        ]
        self._in_flight = [0] * shards
        self._stack = contextlib.AsyncExitStack()

    @property
    def shards(self) -> int:
        """How many clients requests are spread over."""
        return len(self._clients)

    async def __aenter__(self) -> HttpPool:
        for client in self._clients:
            await self._stack.enter_async_context(client)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def send(self, request: HttpRequest) -> RawResponse:
        """Send one request on the least busy shard and read the whole body.

        Raises:
            httpx.TransportError: no response arrived (connect error, reset...).
            BodyError: the response's body could not be read completely.
        """
        in_flight = self._in_flight
        shard = in_flight.index(min(in_flight)) if len(in_flight) > 1 else 0
        client = self._clients[shard]
        in_flight[shard] += 1
        try:
            response = await client.send(
                client.build_request(
                    request.method, request.url, headers=request.headers, content=request.content
                ),
                stream=True,
            )
            try:
                try:
                    body = await response.aread()
                except httpx.TransportError as exc:
                    raise BodyError(f"{exc.__class__.__name__}: {exc}") from exc
            finally:
                await response.aclose()
            return RawResponse(response.status_code, response.headers, body)
        finally:
            in_flight[shard] -= 1
