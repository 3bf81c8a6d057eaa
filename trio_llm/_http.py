"""The HTTP layer: several pooled ``httpx.AsyncClient`` shards instead of one big pool.

One client's connection pool degrades badly with hundreds of connections (httpx issue #3215:
the pool's bookkeeping is linear in its size and runs on every request). Keeping each pool
small and spreading requests over several clients keeps that cost flat, so the engine stays
efficient at 1,000 requests in flight. Requests go to the shard with the fewest in flight.

Deadlines are trio cancel scopes in the engine, so httpx's own timeouts are off.

This is the boundary where the HTTP library's exceptions end: ``send`` returns a response or
raises ``TransportFailure`` (``from`` the original), nothing else of httpx's leaks out::

    httpx.ConnectError, ConnectTimeout    -> TransportFailure(connection, connect=True)
    other httpx.TimeoutException          -> TransportFailure(timeout)
    other httpx.TransportError            -> TransportFailure(connection)   (reset, protocol...)
    the body cut off after the headers    -> TransportFailure(connection)

``stream`` is the same exchange for a streamed (server-sent events) answer: it yields a
``StreamedResponse`` once the headers are in, whose ``chunks()`` map errors the same way.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import final

import httpx

from ._errors import ConfigurationError
from ._policy import ErrorKind
from ._providers import HttpRequest

__all__ = ["HttpPool", "RawResponse", "StreamedResponse", "TransportFailure"]

#: Connections per pool. httpcore walks all of a pool's connections on every request, so
#: small pools keep that flat: at 1,000 in flight (benchmarks/concurrency.py) pools of 8 beat
#: pools of 32 by 0.78 -> 0.84 of the ideal rate; below 8 nothing more was gained.
CONNECTIONS_PER_SHARD = 8


@final
class RawResponse:
    """Status, headers (a dict with lower-case names) and the whole body of one response."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class TransportFailure(Exception):
    """No (whole) response arrived.

    Attributes:
        kind: ``connection`` or ``timeout``.
        message: what happened, naming the host.
        connect: True when no connection could be made at all (refused, DNS): an endpoint
            that never answered this way is unreachable, not busy.
    """

    def __init__(self, kind: ErrorKind, message: str, *, connect: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.connect = connect


@final
class HttpPool:
    """Connection pools sized for ``concurrency`` requests in flight.

    Requests go straight to httpx *transports* (``httpx.AsyncHTTPTransport``, or the one you
    pass, such as ``httpx.MockTransport``): a transport is one method,
    ``handle_async_request``, and skipping the ``AsyncClient`` layer above it (URL merging,
    auth flows, cookies, redirects, event hooks — none of which an API call needs) saves a
    good share of the per-request CPU.

    Args:
        concurrency: the most requests in flight; connections are kept alive for all of them.
        transport: one httpx transport for every request (``httpx.MockTransport`` in tests).
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
        # Sockets this pool may hold at once (none with a transport of the caller's own).
        self._sockets = 0 if transport is not None else concurrency
        if transport is not None:
            self._transports: list[httpx.AsyncBaseTransport] = [transport]
        else:
            shards = math.ceil(concurrency / connections_per_shard)
            per_shard = math.ceil(concurrency / shards)
            limits = httpx.Limits(
                max_connections=per_shard,
                max_keepalive_connections=per_shard,
                keepalive_expiry=30.0,
            )
            # One TLS context for every shard: building one loads the CA bundle (~20 ms).
            # No timeouts here: deadlines are trio cancel scopes in the engine.
            tls = httpx.create_ssl_context()
            self._transports = [
                httpx.AsyncHTTPTransport(verify=tls, limits=limits, http2=http2)
                for _ in range(shards)
            ]
        self._in_flight = [0] * len(self._transports)
        self._urls: dict[str, httpx.URL] = {}
        self._stack = contextlib.AsyncExitStack()

    @property
    def shards(self) -> int:
        """How many connection pools requests are spread over."""
        return len(self._transports)

    async def __aenter__(self) -> HttpPool:
        if self._sockets:
            ensure_open_files(self._sockets)
        for transport in self._transports:
            await self._stack.enter_async_context(transport)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def _url(self, url: str) -> httpx.URL:
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        return parsed

    async def send(self, request: HttpRequest) -> RawResponse:
        """Send one request on the least busy pool and read the whole body.

        Raises:
            TransportFailure: no whole response arrived (see the module docs).
        """
        in_flight = self._in_flight
        shard = in_flight.index(min(in_flight)) if len(in_flight) > 1 else 0
        transport = self._transports[shard]
        in_flight[shard] += 1
        url = self._url(request.url)
        try:
            try:
                response = await transport.handle_async_request(
                    httpx.Request(
                        request.method, url, headers=request.headers, content=request.content
                    )
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise TransportFailure(
                    ErrorKind.CONNECTION,
                    f"cannot connect to {url.host}:{url.port or _DEFAULT_PORTS.get(url.scheme)}"
                    f" ({_describe(exc)})",
                    connect=True,
                ) from exc
            except httpx.TimeoutException as exc:
                raise TransportFailure(ErrorKind.TIMEOUT, _describe(exc)) from exc
            except httpx.TransportError as exc:
                raise TransportFailure(ErrorKind.CONNECTION, _describe(exc)) from exc
            try:
                try:
                    body = await response.aread()
                except httpx.TransportError as exc:
                    raise TransportFailure(
                        ErrorKind.CONNECTION, f"the response body was cut off ({_describe(exc)})"
                    ) from exc
            finally:
                await response.aclose()
            # A plain dict with lower-case names: the headers are read a dozen times per
            # response (rate limits, retry-after, request id), and httpx.Headers scans its
            # list on every lookup.
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in response.headers.raw
            }
            return RawResponse(response.status_code, headers, body)
        finally:
            in_flight[shard] -= 1

    @contextlib.asynccontextmanager
    async def stream(self, request: HttpRequest) -> AsyncIterator[StreamedResponse]:
        """Send one request like ``send``, and hand over its body as it arrives.

        Kept apart from ``send`` (which reads whole bodies on the hot path): the body is read
        by the caller, chunk by chunk, inside the block; leaving it closes the response.

        Raises:
            TransportFailure: no response arrived, or (from ``chunks``) the body was cut off.
        """
        in_flight = self._in_flight
        shard = in_flight.index(min(in_flight)) if len(in_flight) > 1 else 0
        in_flight[shard] += 1
        url = self._url(request.url)
        try:
            try:
                response = await self._transports[shard].handle_async_request(
                    httpx.Request(
                        request.method, url, headers=request.headers, content=request.content
                    )
                )
            except httpx.TransportError as exc:
                raise _failure(exc, url) from exc
            try:
                yield StreamedResponse(response)
            finally:
                await response.aclose()
        finally:
            in_flight[shard] -= 1


@final
class StreamedResponse:
    """Status and headers of a response whose body is still arriving (see ``HttpPool.stream``)."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in response.headers.raw
        }

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as the transport delivers them.

        Raises:
            TransportFailure: the connection broke before the body's end.
        """
        try:
            # aiter_bytes, not aiter_raw: it also serves a body already in memory (a
            # MockTransport's), and undoes a content-encoding.
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise TransportFailure(
                ErrorKind.CONNECTION, f"the response body was cut off ({_describe(exc)})"
            ) from exc

    async def read(self) -> bytes:
        """The rest of the body at once (an error answer is not streamed)."""
        return b"".join([chunk async for chunk in self.chunks()])


def _failure(exc: httpx.TransportError, url: httpx.URL) -> TransportFailure:
    """The ``TransportFailure`` for an exception raised before any response arrived."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return TransportFailure(
            ErrorKind.CONNECTION,
            f"cannot connect to {url.host}:{url.port or _DEFAULT_PORTS.get(url.scheme)}"
            f" ({_describe(exc)})",
            connect=True,
        )
    if isinstance(exc, httpx.TimeoutException):
        return TransportFailure(ErrorKind.TIMEOUT, _describe(exc))
    return TransportFailure(ErrorKind.CONNECTION, _describe(exc))


_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Files a run needs besides its sockets (the interpreter, input, output, logs, a journal).
_SPARE_FILES = 64


def ensure_open_files(sockets: int) -> None:
    """Make sure the process may open ``sockets`` connections at once, raising its soft
    limit of open files if needed, before the run rather than in the middle of it (where
    ``EMFILE`` would fail requests one after another).

    Raises:
        ConfigurationError: the hard limit is too low; it says what to change.
    """
    try:
        import resource
    except ImportError:  # not on this platform: nothing to check
        return
    need = sockets + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise ConfigurationError(
            f"{sockets} requests in flight need about {need} open files, and this process "
            f"may open at most {hard} (ulimit -Hn)\nHINT: lower the concurrency to at most "
            f"{max(1, hard - _SPARE_FILES)}, or raise the hard limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
