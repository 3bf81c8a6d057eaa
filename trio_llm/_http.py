"""The HTTP layer: one kept-alive HTTP/1.1 connection per request slot.

The engine bounds the requests in flight (its ``CapacityLimiter``), so a connection pool has
nothing left to decide: each request takes an idle connection to its host off a free list (or
opens one), and puts it back when the whole response is read. httpcore does the HTTP (h11
parses it, httpcore owns each connection's life: keep-alive expiry, a closed socket noticed
before reuse, TLS); only httpcore's *pool* above the connections is skipped. That pool walks
its connections and queue on every request and every release: at 64 in flight it was the
largest single cost of the engine (benchmarks/HTTP_BACKENDS.md: 839 -> 572 us per request,
1.55x the rate; httpx's ``AsyncClient`` layer costs more still and is skipped too).

Two backends sit behind ``HttpPool``, chosen by what the engine was given:

* ``ConnectionPerSlot`` (the default): the above.
* ``HttpxTransports``: httpx transports, for a transport of the caller's own
  (``httpx.MockTransport`` in tests) and for HTTP/2 (``http2=True``: streams multiplexed on
  a few pooled connections, which only httpx's pool does).

Deadlines are trio cancel scopes in the engine, so neither backend has timeouts of its own.

This is the boundary where the HTTP library's exceptions end: ``send`` returns a response or
raises ``TransportFailure`` (``from`` the original), nothing else of httpx's or httpcore's
leaks out::

    ConnectError, ConnectTimeout         -> TransportFailure(connection, connect=True)
    other TimeoutException               -> TransportFailure(timeout)
    other transport / protocol errors    -> TransportFailure(connection)   (reset, EOF...)
    the body cut off after the headers   -> TransportFailure(connection)

``stream`` is the same exchange for a streamed (server-sent events) answer: it yields a
``StreamedResponse`` once the headers are in, whose ``chunks()`` map errors the same way.
Each backend streams on its own connections: a streamed answer arrives in one chunk per token
or so, and at 1,000 streams in flight the HTTP layer's cost *per chunk* is what bounds the
rate (benchmarks/streaming.py), so streams skip httpx's pool and response layers too.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Protocol, cast, final, runtime_checkable

import attrs
import httpcore
import httpx
import trio

from ._errors import ConfigurationError
from ._policy import ErrorKind
from ._providers import HttpRequest

__all__ = [
    "ConnectionPerSlot",
    "ConnectionStatistics",
    "HttpBackend",
    "HttpPool",
    "HttpxTransports",
    "RawResponse",
    "StreamedResponse",
    "StreamingBackend",
    "TransportFailure",
]

#: Connections per pool for the httpx backend. httpcore walks all of a pool's connections on
#: every request, so small pools keep that flat: at 1,000 in flight (benchmarks/concurrency.py)
#: pools of 8 beat pools of 32 by 0.78 -> 0.84 of the ideal rate.
CONNECTIONS_PER_SHARD = 8
#: Seconds an idle connection is kept for reuse (servers close theirs after 5-120 s; one the
#: server closed first is noticed before reuse and replaced).
KEEPALIVE_S = 30.0


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


class HttpBackend(Protocol):
    """What ``HttpPool`` needs of a backend: send one request, read the whole response."""

    async def send(self, request: HttpRequest) -> RawResponse:
        """The response, or ``TransportFailure`` (see the module docs)."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


@runtime_checkable
class StreamingBackend(HttpBackend, Protocol):
    """A backend that can also hand over a body as it arrives (see ``HttpPool.stream``)."""

    def stream(
        self, request: HttpRequest
    ) -> contextlib.AbstractAsyncContextManager[StreamedResponse]:
        """The response once its headers are in; its body through ``chunks()``."""
        ...


@final
class HttpPool:
    """The engine's HTTP layer, sized for ``concurrency`` requests in flight.

    Args:
        concurrency: the most requests in flight; a connection is kept alive for each.
        transport: one httpx transport for every request (``httpx.MockTransport`` in tests).
        http2: negotiate HTTP/2 where the server offers it (needs the ``h2`` package).
        backend: a backend of your own (anything with ``send`` and ``aclose``); overrides
            ``transport`` and ``http2``.
    """

    def __init__(
        self,
        concurrency: int,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        http2: bool = False,
        backend: HttpBackend | None = None,
    ) -> None:
        # Sockets this layer may hold at once (none with a transport of the caller's own).
        self._sockets = 0 if transport is not None or backend is not None else concurrency
        self._concurrency = concurrency
        if backend is not None:
            self.backend: HttpBackend = backend
        elif transport is not None:
            self.backend = HttpxTransports([transport])
        elif http2:
            self.backend = HttpxTransports.sharded(concurrency, http2=True)
        else:
            self.backend = ConnectionPerSlot(concurrency)
        # A backend of the caller's own that cannot stream gets httpx transports for its
        # streams, made at the first one (a run that streams nothing opens none).
        self._streams: StreamingBackend | None = (
            self.backend if isinstance(self.backend, StreamingBackend) else None
        )
        self._own_streams = False

    async def __aenter__(self) -> HttpPool:
        if self._sockets:
            ensure_open_files(self._sockets)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.backend.aclose()
        if self._own_streams and self._streams is not None:
            await self._streams.aclose()

    async def send(self, request: HttpRequest) -> RawResponse:
        """Send one request and read the whole body.

        Raises:
            TransportFailure: no whole response arrived (see the module docs).
        """
        return await self.backend.send(request)

    @contextlib.asynccontextmanager
    async def stream(self, request: HttpRequest) -> AsyncIterator[StreamedResponse]:
        """Send one request and hand over its body as it arrives; leaving the block closes
        the response (its connection is kept only if the body was read to its end).

        Raises:
            TransportFailure: no response arrived, or (from ``chunks``) the body was cut off.
        """
        if self._streams is None:
            self._streams = HttpxTransports.sharded(self._concurrency)
            self._own_streams = True
        async with self._streams.stream(request) as response:
            yield response


# --- httpcore connections, one per slot -----------------------------------------------------


@final
class _Target:
    """One URL, parsed once: its httpcore URL and origin, and its ``host`` header."""

    __slots__ = ("host_header", "key", "label", "url")

    def __init__(self, url: str) -> None:
        parsed = httpx.URL(url)
        self.url = httpcore.URL(
            scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path
        )
        origin = self.url.origin
        self.key = (origin.scheme, origin.host, origin.port)
        self.host_header = parsed.netloc
        self.label = f"{parsed.host}:{origin.port}"


@attrs.frozen(kw_only=True)
class ConnectionStatistics:
    """A snapshot of ``ConnectionPerSlot``.

    Attributes:
        open: connections open now (in use or idle).
        idle: open connections waiting for a request.
        opened: connections opened since the start (reuse keeps it low).
    """

    open: int
    idle: int
    opened: int


@final
class ConnectionPerSlot:
    """One httpcore HTTP/1.1 connection per request in flight, kept on a free list per host.

    At most ``concurrency`` connections are open at once: a new one past that closes an idle
    one to another host first (the callers bound the requests in flight, so one host alone
    never needs more). An idle connection the server closed, or idle longer than
    ``keepalive_s``, is closed when it comes off the list instead of being reused; a connection
    whose exchange failed or was cancelled midway is closed at once.
    """

    def __init__(
        self,
        concurrency: int,
        *,
        keepalive_s: float = KEEPALIVE_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max_open = concurrency
        self._keepalive_s = keepalive_s
        self._tls = ssl_context
        self._idle: dict[tuple[bytes, bytes, int], list[httpcore.AsyncHTTP11Connection]] = {}
        self._open: set[httpcore.AsyncHTTP11Connection] = set()
        self._targets: dict[str, _Target] = {}
        self._opened = 0

    def statistics(self) -> ConnectionStatistics:
        """How many connections are open, idle, and were opened so far."""
        return ConnectionStatistics(
            open=len(self._open),
            idle=sum(len(idle) for idle in self._idle.values()),
            opened=self._opened,
        )

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _Target(url)
        return target

    def _tls_context(self) -> ssl.SSLContext:
        # One for every connection, built on the first https one: loading the CA bundle takes
        # ~20 ms, and an http-only run (the mock server) needs none.
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    async def _connection(self, target: _Target) -> httpcore.AsyncHTTP11Connection:
        idle = self._idle.get(target.key)
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be stale
            if connection.is_idle() and not connection.has_expired():
                return connection
            await self._close(connection)
        if len(self._open) >= self._max_open:
            await self._close_one_idle()
        # Connected here rather than by httpcore.AsyncHTTPConnection: that wrapper only adds
        # a lock (a trio schedule point per request) and tracing around the same HTTP/1.1
        # connection. Failures here are httpcore's ConnectError (refused, DNS, TLS).
        origin = target.url.origin
        host = origin.host.decode("ascii")
        tls = self._tls_context() if origin.scheme == b"https" else None
        connection = httpcore.AsyncHTTP11Connection(
            origin,
            await _SlotStream.connect(host, origin.port, tls),
            keepalive_expiry=self._keepalive_s,
        )
        self._open.add(connection)
        self._opened += 1
        return connection

    async def _close_one_idle(self) -> None:
        for idle in self._idle.values():
            if idle:
                await self._close(idle.pop(0))
                return

    async def _close(self, connection: httpcore.AsyncHTTP11Connection) -> None:
        self._open.discard(connection)
        with contextlib.suppress(Exception):
            await connection.aclose()

    async def send(self, request: HttpRequest) -> RawResponse:
        """Send on an idle connection to the request's host (or a new one); read it all."""
        target = self._target(request.url)
        try:
            connection = await self._connection(target)
        except Exception as exc:
            raise _mapped(exc, target.label) from exc
        reusable = False
        try:
            try:
                response = await connection.handle_async_request(_httpcore_request(target, request))
            except Exception as exc:
                raise _mapped(exc, target.label) from exc
            try:
                try:
                    body = await response.aread()
                except Exception as exc:
                    mapped = _mapped(exc, target.label)
                    mapped.message = f"the response body was cut off ({mapped.message})"
                    raise mapped from exc
            finally:
                await response.aclose()
            reusable = True
        finally:
            if reusable and connection.is_idle():
                self._idle.setdefault(target.key, []).append(connection)
            else:
                # Failed, cancelled midway or told to close: its state is not worth a reuse.
                await self._close(connection)
        return RawResponse(response.status, _httpcore_headers(response), body)

    @contextlib.asynccontextmanager
    async def stream(self, request: HttpRequest) -> AsyncIterator[StreamedResponse]:
        """Send like ``send``, and hand over the body as it arrives, chunk by chunk: the
        connection goes back to the free list only if the body was read to its end."""
        target = self._target(request.url)
        try:
            connection = await self._connection(target)
        except Exception as exc:
            raise _mapped(exc, target.label) from exc
        try:
            try:
                response = await connection.handle_async_request(_httpcore_request(target, request))
            except Exception as exc:
                raise _mapped(exc, target.label) from exc
            body = _httpcore_body(response, target.label)
            try:
                yield StreamedResponse(response.status, _httpcore_headers(response), body)
            finally:
                await body.aclose()
                await response.aclose()
        finally:
            if connection.is_idle():
                self._idle.setdefault(target.key, []).append(connection)
            else:
                # Left midway (cancelled, an error event) or told to close.
                await self._close(connection)

    async def aclose(self) -> None:
        """Close every connection."""
        self._idle.clear()
        for connection in list(self._open):
            await self._close(connection)


@final
class _SlotStream(httpcore.AsyncNetworkStream):
    """One connection's bytes for httpcore, on a trio stream (TCP, or TLS over it).

    In place of httpcore's own trio stream, for two costs per request that it pays and we
    need not: a cancel scope and two context managers around every read and write, for
    timeouts we never give it (deadlines are the engine's cancel scopes; the ``timeout``
    arguments are only its interface's), and one send for the headers and another for the
    body. Writes here wait for the next read and go out in one ``send_all``: a request is
    one send, and nothing is read before the request is out. Errors are httpcore's, as from
    its own stream.
    """

    __slots__ = ("_pending", "_stream", "_write_failed")

    def __init__(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
        self._stream = stream
        self._pending: list[bytes] = []
        self._write_failed: Exception | None = None

    @classmethod
    async def connect(cls, host: str, port: int, tls: ssl.SSLContext | None) -> _SlotStream:
        """A TCP connection to ``host:port`` (TLS with ``tls``); ``httpcore.ConnectError``
        when it cannot be made (refused, DNS, a certificate not trusted)."""
        try:
            tcp = await trio.open_tcp_stream(host, port)  # TCP_NODELAY set by trio
        except OSError as exc:
            raise httpcore.ConnectError(_describe(exc)) from exc
        if tls is None:
            return cls(tcp)
        secure = trio.SSLStream(tcp, tls, server_hostname=host, https_compatible=True)
        try:
            await secure.do_handshake()
        except BaseException as exc:
            await trio.aclose_forcefully(tcp)
            if isinstance(exc, (trio.BrokenResourceError, OSError)):
                # trio's error wraps the ssl module's, which says what was wrong.
                cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
                raise httpcore.ConnectError(_describe(cause)) from exc
            raise
        return cls(secure)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                # As httpcore does with a write that fails: the server may have answered
                # and closed before reading all of the request (413, 401): read that answer.
                # The connection is never reused (is_readable says so).
                self._write_failed = exc
        try:
            return cast("bytes", await self._stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            cause = self._write_failed or exc
            raise httpcore.ReadError(_describe(cause)) from cause

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if buffer:
            self._pending.append(buffer)

    async def aclose(self) -> None:
        self._pending = []
        await self._stream.aclose()

    def get_extra_info(self, info: str) -> Any:
        stream = self._stream
        tcp = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        if info == "is_readable":  # an idle connection the server closed (or wrote to)
            # Not to be reused either: a request it could not send, or one still unsent
            # (a server that sent more than its answer had it "answered" without a read).
            return self._write_failed is not None or bool(self._pending) or tcp.socket.is_readable()
        if info == "socket":
            return tcp.socket
        if info == "ssl_object" and isinstance(stream, trio.SSLStream):
            return stream._ssl_object  # trio has no public name for it
        if info == "client_addr":
            return tcp.socket.getsockname()
        if info == "server_addr":
            return tcp.socket.getpeername()
        return None


def _httpcore_request(target: _Target, request: HttpRequest) -> httpcore.Request:
    content = request.content
    headers = [(b"host", target.host_header), (b"content-length", b"%d" % len(content))]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
    return httpcore.Request(request.method.encode(), target.url, headers=headers, content=content)


def _httpcore_headers(response: httpcore.Response) -> dict[str, str]:
    # h11 gives header names in lower case already.
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in response.headers}


async def _httpcore_body(response: httpcore.Response, where: str) -> AsyncGenerator[bytes]:
    # The connection's own byte stream (``aiter_stream`` would wrap it in a generator that
    # never closes it), in aclosing: a body left midway (an error event, a cancel) is closed
    # here and now, not by the garbage collector.
    body = cast("AsyncIterable[bytes]", response.stream)
    try:
        async with contextlib.aclosing(cast("AsyncGenerator[bytes]", aiter(body))) as stream:
            async for chunk in stream:
                yield chunk
    except Exception as exc:
        mapped = _mapped(exc, where)
        mapped.message = f"the response body was cut off ({mapped.message})"
        raise mapped from exc


def _mapped(exc: Exception, where: str) -> TransportFailure:
    """httpcore's exception as ours (see the module docs)."""
    if isinstance(exc, (httpcore.ConnectError, httpcore.ConnectTimeout)):
        return TransportFailure(
            ErrorKind.CONNECTION, f"cannot connect to {where} ({_describe(exc)})", connect=True
        )
    if isinstance(exc, httpcore.TimeoutException):
        return TransportFailure(ErrorKind.TIMEOUT, _describe(exc))
    if isinstance(
        exc, (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ConnectionNotAvailable)
    ):
        return TransportFailure(ErrorKind.CONNECTION, _describe(exc))
    raise exc  # not a transport failure: a bug, failing its item alone


# --- httpx transports -----------------------------------------------------------------------


@final
class HttpxTransports:
    """Requests straight to httpx *transports*, to the one with the fewest in flight.

    A transport is one method, ``handle_async_request``: tests swap in
    ``httpx.MockTransport``, and skipping the ``AsyncClient`` above it (URL merging, auth
    flows, cookies, redirects, event hooks — none of which an API call needs) saves CPU.
    """

    def __init__(self, transports: list[httpx.AsyncBaseTransport]) -> None:
        self._transports = transports
        self._in_flight = [0] * len(transports)
        self._urls: dict[str, httpx.URL] = {}

    @classmethod
    def sharded(cls, concurrency: int, *, http2: bool = False) -> HttpxTransports:
        """``httpx.AsyncHTTPTransport`` pools of ``CONNECTIONS_PER_SHARD`` connections."""
        shards = math.ceil(concurrency / CONNECTIONS_PER_SHARD)
        per_shard = math.ceil(concurrency / shards)
        limits = httpx.Limits(
            max_connections=per_shard,
            max_keepalive_connections=per_shard,
            keepalive_expiry=KEEPALIVE_S,
        )
        # One TLS context for every shard: building one loads the CA bundle (~20 ms).
        tls = httpx.create_ssl_context()
        return cls(
            [
                httpx.AsyncHTTPTransport(verify=tls, limits=limits, http2=http2)
                for _ in range(shards)
            ]
        )

    @property
    def shards(self) -> int:
        """How many transports requests are spread over."""
        return len(self._transports)

    def _url(self, url: str) -> httpx.URL:
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        return parsed

    async def send(self, request: HttpRequest) -> RawResponse:
        """Send on the least busy transport and read the whole body."""
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
            except httpx.TransportError as exc:
                raise _failure(exc, url) from exc
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

    async def aclose(self) -> None:
        """Close every transport."""
        for transport in self._transports:
            await transport.aclose()

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
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in response.headers.raw
            }
            body = _httpx_body(response)
            try:
                yield StreamedResponse(response.status_code, headers, body)
            finally:
                await body.aclose()
                await response.aclose()
        finally:
            in_flight[shard] -= 1


async def _httpx_body(response: httpx.Response) -> AsyncGenerator[bytes]:
    try:
        # aiter_bytes, not aiter_raw: it also serves a body already in memory (a
        # MockTransport's), and undoes a content-encoding.
        chunks = cast("AsyncGenerator[bytes]", response.aiter_bytes())
        async with contextlib.aclosing(chunks) as stream:
            async for chunk in stream:
                yield chunk
    except (httpx.TransportError, httpx.DecodingError) as exc:
        raise TransportFailure(
            ErrorKind.CONNECTION, f"the response body was cut off ({_describe(exc)})"
        ) from exc


@final
class StreamedResponse:
    """Status and headers of a response whose body is still arriving (see ``HttpPool.stream``)."""

    __slots__ = ("_body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: AsyncIterator[bytes]) -> None:
        self.status = status
        #: Lower-case names.
        self.headers = headers
        self._body = body

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as the connection delivers them (once).

        Raises:
            TransportFailure: the connection broke before the body's end.
        """
        return self._body

    async def read(self) -> bytes:
        """The rest of the body at once (an error answer is not streamed)."""
        return b"".join([chunk async for chunk in self._body])


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
