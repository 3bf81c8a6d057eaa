"""The HTTP layer over real sockets: connections kept per slot, failures mapped at the boundary.

Every test talks to the mock server (hypercorn, in this process) on 127.0.0.1, on the real
clock (sockets and trio's autojump clock do not mix), each guarded by ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, cast

import httpcore
import hypercorn.trio
import orjson
import pytest
import trio
import trustme

from trio_llm import ErrorKind
from trio_llm._http import ConnectionPerSlot, HttpPool, TransportFailure, _SlotStream
from trio_llm._providers import HttpRequest
from trio_llm.testing import MockApp, MockServerConfig
from trio_llm.testing._mock_serve import hypercorn_config

SECRET = "sk-http-layer-secret-0001"


def _request(base_url: str, prompt: str = "hello") -> HttpRequest:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": prompt}]}
    return HttpRequest(
        method="POST",
        url=f"{base_url}/chat/completions",
        headers={"content-type": "application/json", "authorization": f"Bearer {SECRET}"},
        content=orjson.dumps(body),
    )


@asynccontextmanager
async def _serve(
    config: MockServerConfig | None = None, *, tls: trustme.LeafCert | None = None, **settings: Any
) -> AsyncIterator[str]:
    """The mock app on hypercorn with some of hypercorn's settings changed; yields its base URL."""
    server_config = hypercorn_config("127.0.0.1", 0)
    for name, value in settings.items():
        setattr(server_config, name, value)
    async with trio.open_nursery() as nursery:
        if tls is not None:
            with tls.private_key_and_cert_chain_pem.tempfile() as pem:
                server_config.certfile = server_config.keyfile = pem
                binds = await nursery.start(
                    partial(hypercorn.trio.serve, cast("Any", MockApp(config)), server_config)
                )
        else:
            binds = await nursery.start(
                partial(hypercorn.trio.serve, cast("Any", MockApp(config)), server_config)
            )
        port = int(binds[0].rsplit(":", 1)[1])
        scheme = "https" if tls is not None else "http"
        host = "localhost" if tls is not None else "127.0.0.1"
        yield f"{scheme}://{host}:{port}/v1"
        nursery.cancel_scope.cancel()


def _a_port_nobody_listens_on() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stats(pool: HttpPool) -> Any:
    backend = pool.backend
    assert isinstance(backend, ConnectionPerSlot)
    return backend.statistics()


async def test_one_connection_serves_requests_one_after_another() -> None:
    """Requests one after another all go on the one kept-alive connection."""
    with trio.fail_after(10):
        async with _serve() as url, HttpPool(4) as pool:
            for i in range(20):
                response = await pool.send(_request(url, f"p{i}"))
                assert response.status == 200
                assert orjson.loads(response.body)["choices"][0]["message"]["content"]
            assert _stats(pool).opened == 1
            assert _stats(pool).idle == 1


async def test_many_slots_each_keep_their_connection() -> None:
    """200 requests at once open at most 200 connections; the next waves reuse them all."""
    with trio.fail_after(30):
        async with _serve(MockServerConfig(latency=0.05)) as url, HttpPool(200) as pool:
            statuses: list[int] = []

            async def one(i: int) -> None:
                statuses.append((await pool.send(_request(url, f"p{i}"))).status)

            for wave in range(3):
                async with trio.open_nursery() as nursery:
                    for i in range(200):
                        nursery.start_soon(one, wave * 200 + i)
                if wave == 0:
                    first = _stats(pool).opened
            assert statuses == [200] * 600
            assert first <= 200
            assert _stats(pool).opened == first
            assert _stats(pool).open == first


async def test_a_server_that_closes_after_each_response() -> None:
    """``Connection: close`` on every response: a new connection each time, none failing."""
    with trio.fail_after(10):
        async with _serve(keep_alive_max_requests=1) as url, HttpPool(4) as pool:
            for i in range(5):
                assert (await pool.send(_request(url, f"p{i}"))).status == 200
            assert _stats(pool).opened == 5
            assert _stats(pool).open == 0


async def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    """A kept-alive connection the server closed while idle is noticed and not reused."""
    with trio.fail_after(10):
        async with _serve(keep_alive_timeout=0.1) as url, HttpPool(4) as pool:
            assert (await pool.send(_request(url, "first"))).status == 200
            assert _stats(pool).idle == 1
            # Wait (on the socket, not a clock) for the server to close its end.
            backend = pool.backend
            assert isinstance(backend, ConnectionPerSlot)
            (idle,) = next(iter(backend._idle.values()))
            sock = idle._network_stream.get_extra_info("socket")
            await trio.lowlevel.wait_readable(sock)
            assert (await pool.send(_request(url, "second"))).status == 200
            assert _stats(pool).opened == 2
            assert _stats(pool).open == 1


async def test_connect_refused_is_a_connect_failure_naming_the_host() -> None:
    """A port nobody listens on: ``connection`` with ``connect=True``, the host and port named,
    the key nowhere."""
    port = _a_port_nobody_listens_on()
    with trio.fail_after(10):
        async with HttpPool(4) as pool:
            with pytest.raises(TransportFailure) as caught:
                await pool.send(_request(f"http://127.0.0.1:{port}/v1"))
            assert _stats(pool).open == 0
    failure = caught.value
    assert failure.kind is ErrorKind.CONNECTION
    assert failure.connect
    assert f"127.0.0.1:{port}" in failure.message
    assert SECRET not in repr(failure)
    assert SECRET not in failure.message


async def test_a_body_cut_off_is_a_connection_failure() -> None:
    """A response that stops midway (the mock's ``drop`` fault) is ``connection``, not a
    connect failure, and its connection is not reused."""
    config = MockServerConfig(error_rate=1.0, fault_mix=(("drop", 1.0),))
    with trio.fail_after(10):
        async with _serve(config) as url, HttpPool(4) as pool:
            with pytest.raises(TransportFailure) as caught:
                await pool.send(_request(url))
            assert _stats(pool).open == 0
    assert caught.value.kind is ErrorKind.CONNECTION
    assert not caught.value.connect
    assert "cut off" in caught.value.message


async def test_cancelling_a_slow_request_closes_its_connection() -> None:
    """A cancel scope ends a request the server is slow to answer; its connection is closed,
    and the next request goes on a new one."""
    with trio.fail_after(20):
        async with _serve(MockServerConfig(latency=30.0)) as slow, HttpPool(4) as pool:
            with trio.move_on_after(0.3) as scope:
                await pool.send(_request(slow))
            assert scope.cancelled_caught
            assert _stats(pool) == type(_stats(pool))(open=0, idle=0, opened=1)
            async with _serve() as fast:
                assert (await pool.send(_request(fast))).status == 200
            assert _stats(pool).opened == 2


async def test_connections_stay_within_the_concurrency_across_hosts() -> None:
    """Two hosts share the budget: a connection to the second closes an idle one to the first."""
    with trio.fail_after(10):
        async with _serve() as a, _serve() as b, HttpPool(1) as pool:
            for url in (a, b, a, b):
                assert (await pool.send(_request(url))).status == 200
                assert _stats(pool).open == 1
            assert _stats(pool).opened == 4


async def test_https_with_a_trusted_certificate() -> None:
    """https: TLS on the connection, verified against the CA the context trusts."""
    ca = trustme.CA()
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with trio.fail_after(10):
        async with _serve(tls=ca.issue_cert("localhost")) as url:
            pool = HttpPool(4, backend=ConnectionPerSlot(4, ssl_context=context))
            async with pool:
                for i in range(3):
                    assert (await pool.send(_request(url, f"p{i}"))).status == 200
                assert _stats(pool).opened == 1


async def test_an_untrusted_certificate_is_a_connect_failure() -> None:
    """A certificate no trusted CA signed fails the connection (as httpx does), before sending."""
    with trio.fail_after(10):
        async with _serve(tls=trustme.CA().issue_cert("localhost")) as url, HttpPool(4) as pool:
            with pytest.raises(TransportFailure) as caught:
                await pool.send(_request(url))
    assert caught.value.connect
    assert caught.value.kind is ErrorKind.CONNECTION


def _stream_request(base_url: str, prompt: str = "hello") -> HttpRequest:
    body = {
        "model": "mock-gpt",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return HttpRequest(
        method="POST",
        url=f"{base_url}/chat/completions",
        headers={"content-type": "application/json", "authorization": f"Bearer {SECRET}"},
        content=orjson.dumps(body),
    )


async def _read_events(pool: HttpPool, url: str, prompt: str) -> list[bytes]:
    async with pool.stream(_stream_request(url, prompt)) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = b"".join([chunk async for chunk in response.chunks()])
    return [line for line in body.split(b"\n") if line.startswith(b"data: ")]


async def test_streams_are_read_on_the_slots_connections_and_kept_alive() -> None:
    """A stream read to its end (``data: [DONE]``) leaves its connection idle for the next
    request, streamed or whole: streams use the same connections as whole answers."""
    with trio.fail_after(10):
        async with _serve(MockServerConfig(latency_per_token=0.001)) as url, HttpPool(4) as pool:
            for i in range(5):
                events = await _read_events(pool, url, f"p{i}")
                assert events[-1] == b"data: [DONE]"
                assert len(events) > 3  # one chunk per token, then usage, then [DONE]
            assert _stats(pool) == type(_stats(pool))(open=1, idle=1, opened=1)
            assert (await pool.send(_request(url, "whole"))).status == 200
            assert _stats(pool).opened == 1


async def test_a_stream_left_midway_closes_its_connection() -> None:
    """Leaving a stream before its end (cancelled, or an error event) closes the connection
    instead of putting a half-read one back; the next request opens a new one."""
    with trio.fail_after(10):
        async with _serve(MockServerConfig(latency_per_token=0.05)) as url, HttpPool(4) as pool:
            async with pool.stream(_stream_request(url)) as response:
                async for _chunk in response.chunks():
                    break  # the first chunk only
            assert _stats(pool) == type(_stats(pool))(open=0, idle=0, opened=1)
            with trio.move_on_after(0.2) as scope:
                async with pool.stream(_stream_request(url)) as response:
                    async for _chunk in response.chunks():
                        pass
            assert scope.cancelled_caught
            assert _stats(pool) == type(_stats(pool))(open=0, idle=0, opened=2)
            assert (await _read_events(pool, url, "after"))[-1] == b"data: [DONE]"
            assert _stats(pool).opened == 3


async def test_a_stream_cut_off_is_a_connection_failure() -> None:
    """The server drops the connection mid-body: ``chunks()`` raises ``TransportFailure``
    (``connection``, not a connect failure), and the connection is not kept."""
    config = MockServerConfig(error_rate=1.0, fault_mix=(("drop", 1.0),))
    with trio.fail_after(10):
        async with _serve(config) as url, HttpPool(4) as pool:
            with pytest.raises(TransportFailure) as caught:
                await _read_events(pool, url, "dropped")
            assert _stats(pool).open == 0
    assert caught.value.kind is ErrorKind.CONNECTION
    assert not caught.value.connect
    assert "cut off" in caught.value.message
    assert SECRET not in caught.value.message


async def test_a_stream_to_a_closed_port_is_a_connect_failure() -> None:
    """No response at all: the stream's block is never entered; ``connect=True``."""
    port = _a_port_nobody_listens_on()
    with trio.fail_after(10):
        async with HttpPool(4) as pool:
            with pytest.raises(TransportFailure) as caught:
                async with pool.stream(_stream_request(f"http://127.0.0.1:{port}/v1")):
                    raise AssertionError("no response arrived")
            assert _stats(pool).open == 0
    assert caught.value.connect


async def test_a_request_goes_out_in_one_send_before_the_first_read() -> None:
    """The connection's stream holds httpcore's writes (headers, then body) until it reads:
    one send for the request, and all of it out before waiting for the answer."""
    ours, theirs = trio.socket.socketpair()
    stream = _SlotStream(trio.SocketStream(ours))
    peer = trio.SocketStream(theirs)
    with trio.fail_after(10):
        await stream.write(b"POST / HTTP/1.1\r\n\r\n")
        await stream.write(b"{}")
        assert not theirs.is_readable()  # nothing sent yet
        async with trio.open_nursery() as nursery:
            replies: list[bytes] = []

            async def read() -> None:
                replies.append(await stream.read(100))

            nursery.start_soon(read)
            assert await peer.receive_some(100) == b"POST / HTTP/1.1\r\n\r\n{}"
            await peer.send_all(b"HTTP/1.1 200 OK\r\n")
        assert replies == [b"HTTP/1.1 200 OK\r\n"]
        await peer.aclose()
        assert await stream.read(100) == b""  # the end of the stream, as httpcore expects
        await stream.aclose()
        with pytest.raises(httpcore.ReadError):
            await stream.read(100)


async def test_an_answer_before_the_whole_body_was_read_is_the_answer() -> None:
    """A server that answers (413) after the headers alone and closes, its socket holding
    2 MB of body it never read: the client gets the 413, as httpcore's own stream gives it
    (the send fails with a reset; the answer is read all the same), and does not keep the
    connection."""

    async def refuse(stream: trio.SocketStream) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            received += await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\n"
            b"too long"
        )
        await stream.aclose()  # with the body unread: a reset

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, refuse, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with HttpPool(4) as pool:
                for _ in range(3):
                    request = _request(f"http://127.0.0.1:{port}/v1", "x" * 2_000_000)
                    response = await pool.send(request)
                    assert (response.status, response.body) == (413, b"too long")
                    assert _stats(pool).open == 0
            nursery.cancel_scope.cancel()


async def test_a_connection_holding_an_unsent_request_is_not_reused() -> None:
    """A server that sends two answers to one request: the parser keeps the second and
    "answers" the next request with it, without a read, so that request never left. Its
    connection is not taken again (the one after opens a new one), so no request goes out
    late, ahead of another's, on a connection whose answers are out of step."""

    async def twice_then_once(stream: trio.SocketStream) -> None:
        answers = [b"first", b"extra"]
        received = b""
        with contextlib.suppress(trio.BrokenResourceError):
            while True:
                while b"\r\n\r\n" not in received:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    received += data
                head, _, received = received.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(received) < length:
                    received += await stream.receive_some(65536)
                received = received[length:]
                # One send: both answers arrive (and are parsed) together.
                await stream.send_all(
                    b"".join(
                        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                        for body in answers or [b"later"]
                    )
                )
                answers = []

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, twice_then_once, 0, host="127.0.0.1")
            )
            url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1"
            async with HttpPool(4) as pool:
                assert (await pool.send(_request(url, "a"))).body == b"first"
                assert (await pool.send(_request(url, "b"))).body == b"extra"  # never sent
                assert (await pool.send(_request(url, "c"))).body == b"first"  # a new one
                assert _stats(pool).opened == 2
            nursery.cancel_scope.cancel()
