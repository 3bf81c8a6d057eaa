"""A small trio HTTP service whose users share one engine: one key pool, one set of limits.

A raw ASGI app on hypercorn's trio worker (no web framework) with two routes:

- ``POST /ask`` with ``{"prompt": "..."}``: ``await engine.complete(prompt)`` and answer
  ``{"ok": true, "text": ..., "key_id": ..., "latency_s": ..., "attempts": ...}`` (502 with the
  error when the request failed for good, 504 past ``--request-timeout``);
- ``GET /stats``: the engine's ``statistics()`` (requests in flight, waiting for a slot, and
  every key's state: fingerprints only, never a key) plus the service's own counters.

The engine is created once and opened with ``async with engine:`` at startup, around the
server, so every handler calls into the same engine: concurrent users share its HTTP pool,
its ``concurrency`` cap and its keys' rate limits, instead of each request tripping over the
others' 429s.

With no ``--base-url`` the built-in mock server runs in this process (3 keys x 600 rpm, ~0.2 s
latency). ``--self-test N`` starts the service on a free port, fires N concurrent requests at
it with httpx, prints latency and throughput and ``/stats``, and exits.

    python examples/trio_service.py --self-test 60      # start, load, report, exit
    python examples/trio_service.py --port 8000         # serve until Ctrl-C, then:
    curl -s localhost:8000/ask -d '{"prompt": "What is 6 x 7?"}'
    curl -s localhost:8000/stats
    OPENAI_API_KEY=sk-...,sk-... python examples/trio_service.py --port 8000 \\
        --base-url https://api.openai.com/v1 --keys-env OPENAI_API_KEY \\
        --model gpt-4o-mini --rpm 500
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, cast, final

import attrs
import httpx
import hypercorn.config
import hypercorn.trio
import trio

import trio_llm
from trio_llm.testing import MockServerConfig, serve_mock

if TYPE_CHECKING:
    from hypercorn.typing import Framework

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The largest ``POST /ask`` body accepted.
MAX_BODY_BYTES = 1_000_000

_LOGGER = logging.getLogger("trio_llm.examples.service")


@attrs.define(eq=False)
class ServiceCounters:
    """What the service itself counts (the engine counts the rest)."""

    asked: int = 0
    answered: int = 0
    failed: int = 0
    active: int = 0
    peak_active: int = 0


@final
class AskApp:
    """The ASGI app: ``POST /ask`` and ``GET /stats`` on one shared ``Engine``.

    Args:
        engine: an engine that is open (``async with engine:``) while the app serves.
        request_timeout: seconds one ``/ask`` may take, retries included (a cancel scope).
    """

    def __init__(self, engine: trio_llm.Engine, *, request_timeout: float = 120.0) -> None:
        self.engine = engine
        self.request_timeout = request_timeout
        self.counters = ServiceCounters()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        route = (scope["method"], scope["path"])
        if route == ("POST", "/ask"):
            await self._ask(receive, send)
        elif route == ("GET", "/stats"):
            await _respond(send, 200, self.stats())
        elif scope["path"] in ("/ask", "/stats"):
            await _respond(send, 405, {"error": f"{scope['method']} not allowed here"})
        else:
            await _respond(send, 404, {"error": "no such route; try POST /ask or GET /stats"})

    def stats(self) -> dict[str, Any]:
        """The engine's snapshot (key fingerprints only) and the service's counters."""
        snapshot = self.engine.statistics()
        return {
            "in_flight": snapshot.in_flight,
            "waiting": snapshot.waiting,
            "concurrency": self.engine.concurrency,
            "keys": [attrs.asdict(key) for key in snapshot.keys],
            "service": attrs.asdict(self.counters),
        }

    async def _ask(self, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            await _respond(send, 413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
            return
        try:
            prompt = json.loads(body)["prompt"]
        except (ValueError, KeyError, TypeError):
            prompt = None
        if not isinstance(prompt, str) or not prompt:
            await _respond(send, 400, {"error": 'expected a JSON body {"prompt": "..."}'})
            return
        counters = self.counters
        counters.asked += 1
        counters.active += 1
        counters.peak_active = max(counters.peak_active, counters.active)
        result: trio_llm.Result | None = None
        try:
            with trio.move_on_after(self.request_timeout):
                result = await self.engine.complete(prompt)
        finally:
            counters.active -= 1
        if result is None:
            counters.failed += 1
            message = f"no answer within {self.request_timeout} s"
            await _respond(
                send, 504, {"ok": False, "error": {"kind": "deadline", "message": message}}
            )
        elif result.ok:
            counters.answered += 1
            answer = {
                "ok": True,
                "text": result.text,
                "key_id": result.key_id,
                "latency_s": result.latency,
                "attempts": result.attempts,
            }
            await _respond(send, 200, answer)
        else:
            counters.failed += 1
            assert result.error is not None
            error = {"kind": result.error.kind.value, "message": result.error.message}
            await _respond(send, 502, {"ok": False, "error": error})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or ``None`` when it is larger than ``MAX_BODY_BYTES``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@attrs.frozen
class RunningService:
    """A service that is up: where it listens and its app (for counters)."""

    url: str
    app: AskApp


@asynccontextmanager
async def run_service(
    engine: trio_llm.Engine,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    request_timeout: float = 120.0,
) -> AsyncIterator[RunningService]:
    """Open ``engine`` and serve ``AskApp`` on it for the ``async with`` block.

    The engine is entered once, around the server: every request handler shares it.
    """
    app = AskApp(engine, request_timeout=request_timeout)
    config = hypercorn.config.Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = _LOGGER
    config.graceful_timeout = 1.0
    shutdown = trio.Event()
    async with engine, trio.open_nursery() as nursery:
        serve = partial(
            hypercorn.trio.serve, cast("Framework", app), config, shutdown_trigger=shutdown.wait
        )
        binds: list[str] = await nursery.start(serve)
        try:
            yield RunningService(url=binds[0], app=app)
        finally:
            shutdown.set()


@attrs.frozen(kw_only=True)
class SelfTestReport:
    """What ``--self-test N`` measured, client side and from ``/stats``.

    Attributes:
        n: concurrent requests fired.
        ok: answers with HTTP 200 and ``"ok": true``.
        statuses: how many responses had each HTTP status.
        wall_s: seconds from the first request out to the last answer in.
        latencies_s: each request's round-trip time, as the HTTP client saw it.
        key_ids: the key fingerprints that answered.
        stats_mid_run: ``GET /stats`` when half the answers were in (the rest still in the
            engine: in flight, or waiting for a slot or a key's rate limit).
        stats: ``GET /stats`` after the load.
        floor_s: N / (keys x rate) when the keys' rpm is known, else ``None``.
    """

    n: int
    ok: int
    statuses: dict[int, int]
    wall_s: float
    latencies_s: tuple[float, ...]
    key_ids: frozenset[str]
    stats_mid_run: dict[str, Any]
    stats: dict[str, Any]
    floor_s: float | None

    @property
    def requests_per_s(self) -> float:
        """Answers per second."""
        return self.ok / self.wall_s if self.wall_s else 0.0


async def self_test(url: str, n: int, rpm: float | None) -> SelfTestReport:
    """Fire ``n`` concurrent ``POST /ask`` at ``url``, then read ``/stats``."""
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    key_ids: set[str] = set()
    stats_mid_run: dict[str, Any] = {}
    ok = done = 0
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:

        async def snapshot() -> None:
            stats_mid_run.update((await client.get("/stats")).json())

        async def one(i: int, nursery: trio.Nursery) -> None:
            nonlocal ok, done
            started = time.perf_counter()
            response = await client.post("/ask", json={"prompt": f"What is {i} + {i % 7}?"})
            latencies.append(time.perf_counter() - started)
            done += 1
            if done == n // 2:
                nursery.start_soon(snapshot)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            answer = response.json()
            if response.status_code == 200 and answer.get("ok"):
                ok += 1
                key_ids.add(answer["key_id"])

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i, nursery)
        wall = time.perf_counter() - started
        stats = (await client.get("/stats")).json()
    keys = len(stats["keys"])
    return SelfTestReport(
        n=n,
        ok=ok,
        statuses=statuses,
        wall_s=wall,
        latencies_s=tuple(latencies),
        key_ids=frozenset(key_ids),
        stats_mid_run=stats_mid_run,
        stats=stats,
        floor_s=None if rpm is None else n / (keys * rpm / 60.0),
    )


def render(report: SelfTestReport) -> str:
    """Latency, throughput and the final ``/stats``, for a terminal."""
    ordered = sorted(report.latencies_s)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    lines = [
        f"{report.n} concurrent POST /ask: {report.ok} ok, HTTP statuses {report.statuses}",
        f"wall {report.wall_s:.2f} s, {report.requests_per_s:.1f} answers/s"
        + (f" (rate-limit floor {report.floor_s:.2f} s)" if report.floor_s is not None else ""),
        f"latency p50 {statistics.median(ordered):.3f} s, p95 {pct(0.95):.3f} s, "
        f"max {ordered[-1]:.3f} s",
        f"answered by {len(report.key_ids)} key(s): {', '.join(sorted(report.key_ids))}",
    ]
    for when, stats in (("half-way", report.stats_mid_run), ("after", report.stats)):
        if not stats:
            continue
        lines.append(
            f"GET /stats {when}: in_flight {stats['in_flight']}, waiting {stats['waiting']} "
            f"(concurrency {stats['concurrency']}); service {stats['service']}"
        )
        lines += [
            f"  key {key['key_id']}: rpm {key['rpm']}, in_flight {key['in_flight']}, "
            f"requests_left {_num(key['requests_left'])}, cooling_s {_num(key['cooling_s'])}, "
            f"dropped {key['dropped']}"
            for key in stats["keys"]
        ]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--self-test", type=int, metavar="N", help="fire N requests and exit")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (8000; 0 = any free one)")
    parser.add_argument("--rpm", type=float, default=None, help="requests/min per key")
    parser.add_argument("--tpm", type=float, default=None, help="tokens/min per key")
    parser.add_argument("--concurrency", type=int, default=16, help="engine in flight (16)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt (60)")
    parser.add_argument(
        "--request-timeout", type=float, default=120.0, help="seconds per /ask, retries included"
    )
    real = parser.add_argument_group("a real endpoint (default: the built-in mock)")
    real.add_argument("--base-url", help="an OpenAI-compatible base URL, e.g. .../v1")
    real.add_argument("--keys-env", default="OPENAI_API_KEY", help="env var with k1,k2,...")
    real.add_argument("--model", default=None, help="model name (gpt-4o-mini)")
    mock = parser.add_argument_group("the mock server")
    mock.add_argument("--mock-keys", type=int, default=3, help="keys (3)")
    mock.add_argument("--latency", type=float, default=0.2, help="mean latency, s (0.2)")
    return parser


async def run(args: argparse.Namespace) -> SelfTestReport | int:
    """Serve (until cancelled) or self-test, on the mock unless ``--base-url`` is given."""

    async def with_engine(
        base_url: str, model: str, keys: trio_llm.KeyPool | list[str]
    ) -> SelfTestReport | int:
        rpm = args.rpm
        engine = trio_llm.Engine(
            provider=trio_llm.OpenAICompatible(base_url=base_url, model=model),
            keys=keys,
            limits=trio_llm.Limits(rpm=rpm, tpm=args.tpm),
            concurrency=args.concurrency,
            timeout=args.timeout,
        )
        port = 0 if args.self_test else args.port
        async with run_service(
            engine, host=args.host, port=port, request_timeout=args.request_timeout
        ) as service:
            if args.self_test:
                print(f"service on {service.url}, self-test with {args.self_test} requests")
                return await self_test(service.url, args.self_test, rpm)
            print(f"service on {service.url} (POST /ask, GET /stats); Ctrl-C stops it", flush=True)
            # Stop gracefully: leaving the block stops hypercorn, then closes the engine.
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            print("stopping")
            return 0

    if args.base_url is not None:
        keys = trio_llm.KeyPool.from_env(args.keys_env)
        return await with_engine(args.base_url, args.model or "gpt-4o-mini", keys)
    if args.rpm is None:
        args.rpm = 600.0
    mock_keys = [f"mock-key-{i + 1}" for i in range(args.mock_keys)]
    config = MockServerConfig(
        keys=mock_keys,
        rpm=int(args.rpm),
        tpm=None if args.tpm is None else int(args.tpm),
        latency=args.latency,
    )
    async with serve_mock(config) as mock:
        print(f"mock server on {mock.base_url}: {len(mock_keys)} keys x {config.rpm} rpm")
        return await with_engine(mock.base_url, args.model or config.model, mock_keys)


def main(argv: Sequence[str] | None = None) -> SelfTestReport | int:
    """Serve until Ctrl-C or SIGTERM (returns 0), or with ``--self-test N`` return its report."""
    args = _parser().parse_args(argv)
    outcome = trio.run(run, args)
    if isinstance(outcome, SelfTestReport):
        print(render(outcome))
    return outcome


if __name__ == "__main__":
    result = main()
    if isinstance(result, SelfTestReport):
        sys.exit(0 if result.ok == result.n else 1)
    sys.exit(result)
