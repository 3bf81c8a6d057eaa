"""How many chat completions per second the mock server serves, per HTTP server.

    python -m benchmarks.mock_capacity [--quick] [--n N] [--runs R] [--concurrency C]
        [--json PATH]

Each available server kind (uvicorn + httptools, hypercorn on trio) runs the mock in its own
process with zero latency, no limits and no faults. This process drives it with two load
generators in turn, both under trio:

- ``raw``: keep-alive sockets writing prebuilt HTTP/1.1 requests and reading responses by their
  content-length: a few microseconds of client CPU per request, so the number is the server's.
- ``httpx``: ``httpx.AsyncClient`` shards of 4 connections (one client's pool degrades with many
  connections), i.e. what one trio process of httpx clients can get out of the mock.

The machine has 2 cores: the server gets about one and the load generator the other, so the
``httpx`` column is bounded by the client (about 1 ms of client CPU per request at 64 in flight:
its "client CPU" sits near 100% while the server idles) and the ``raw`` column by the server's
single process. "server CPU" is the child's CPU time over the wall time (100% = one
core busy); "req/s per server core" divides by it, the capacity a dedicated core would give.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

from trio_llm.testing import MockServerConfig, MockServerProcess

from ._harness import parse_options, report

try:
    import psutil  # type: ignore[import-untyped]
except ImportError:  # the `bench` extra brings it; without it the CPU columns stay empty
    psutil = None

KEY = "sk-bench-000000000000"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


def _body(i: int) -> bytes:
    # Distinct prompts, as in a real batch (the server hashes and tracks each one).
    return json.dumps(
        {"model": "bench", "messages": [{"role": "user", "content": f"benchmark prompt {i}"}]}
    ).encode()


class _Counter:
    def __init__(self, n: int) -> None:
        self.n = n
        self.issued = 0
        self.ok = 0
        self.errors = 0

    def take(self) -> int | None:
        if self.issued >= self.n:
            return None
        self.issued += 1
        return self.issued


async def _raw_worker(host: str, port: int, counter: _Counter) -> None:
    stream = await trio.open_tcp_stream(host, port)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
    ).encode()
    buffer = bytearray()
    async with stream:
        while (i := counter.take()) is not None:
            body = _body(i)
            await stream.send_all(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            while (end := buffer.find(b"\r\n\r\n")) < 0:
                data = await stream.receive_some(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                buffer += data
            match = _CONTENT_LENGTH.search(buffer, 0, end + 2)
            if match is None:
                raise ConnectionError("response without content-length")
            total = end + 4 + int(match.group(1))
            while len(buffer) < total:
                data = await stream.receive_some(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                buffer += data
            if buffer.startswith(b"HTTP/1.1 200"):
                counter.ok += 1
            else:
                counter.errors += 1
            del buffer[:total]


async def _run_raw(base_url: str, n: int, concurrency: int) -> _Counter:
    url = httpx.URL(base_url)
    assert url.port is not None
    counter = _Counter(n)
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(_raw_worker, url.host, url.port, counter)
    return counter


async def _run_httpx(base_url: str, n: int, concurrency: int) -> _Counter:
    counter = _Counter(n)
    # Small shards: one httpx pool slows down as its connection count grows (httpx #3215).
    per_client = 4
    shards = max(1, concurrency // per_client)
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}

    async def worker(client: httpx.AsyncClient) -> None:
        while (i := counter.take()) is not None:
            response = await client.post("/chat/completions", content=_body(i))
            if response.status_code == 200:
                counter.ok += 1
            else:
                counter.errors += 1

    clients = [
        httpx.AsyncClient(base_url=base_url, limits=limits, headers=headers, timeout=30)
        for _ in range(shards)
    ]
    try:
        async with trio.open_nursery() as nursery:
            for k in range(concurrency):
                nursery.start_soon(worker, clients[k % shards])
    finally:
        for client in clients:
            await client.aclose()
    return counter


def _measure(
    proc: MockServerProcess,
    generator: str,
    run: Callable[[str, int, int], Awaitable[_Counter]],
    n: int,
    concurrency: int,
) -> dict[str, Any]:
    # A short warm-up opens the connections and lets both sides reach a steady state.
    trio.run(run, proc.base_url, max(concurrency, n // 20), concurrency)
    child = psutil.Process(proc.pid) if psutil is not None and proc.pid else None
    cpu_before = sum(child.cpu_times()[:2]) if child else 0.0
    client_before = time.process_time()
    started = time.perf_counter()
    counter = trio.run(run, proc.base_url, n, concurrency)
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    cpu = (sum(child.cpu_times()[:2]) - cpu_before) if child else None
    return {
        "server": proc.server,
        "generator": generator,
        "connections": concurrency,
        "requests": counter.ok + counter.errors,
        "errors": counter.errors,
        "wall_s": round(wall, 3),
        "req_per_s": round(counter.ok / wall),
        "server_cpu": None if cpu is None else round(cpu / wall, 2),
        "client_cpu": round(client_cpu / wall, 2),
        "req_per_server_core_s": None if not cpu else round(counter.ok / cpu),
    }


def _servers() -> list[str]:
    servers = []
    try:
        import httptools  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print("uvicorn/httptools not installed (pip install 'trio-llm[bench]'): skipped")
    else:
        servers.append("uvicorn")
    servers.append("hypercorn")
    return servers


def _cells(r: dict[str, Any]) -> list[object]:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0%}"

    per_core = r["req_per_server_core_s"]
    return [
        r["server"], r["generator"], r["connections"], f"{r['requests']:,}", r["errors"],
        f"{r['req_per_s']:,}", pct(r["server_cpu"]), pct(r["client_cpu"]),
        "n/a" if per_core is None else f"{per_core:,}",
    ]  # fmt: skip


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, default=64, help="connections (default 64)")


def main(argv: list[str] | None = None) -> int:
    """Measure each server kind with each load generator; print and save the table."""
    options = parse_options(__doc__.split("\n\n")[0], argv, runs=1, extra=_add_options)
    n = options.n or (2000 if options.quick else 10000)
    concurrency: int = options.extra.concurrency

    config = MockServerConfig()  # zero latency, no limits, no faults
    rows: list[dict[str, Any]] = []
    for server in _servers():
        with MockServerProcess(config, server=server) as proc:  # type: ignore[arg-type]
            for generator, run in (("raw", _run_raw), ("httpx", _run_httpx)):
                runs = [_measure(proc, generator, run, n, concurrency) for _ in range(options.runs)]
                # The median run by throughput, so the row's columns belong together.
                row = sorted(runs, key=lambda r: r["req_per_s"])[len(runs) // 2]
                rows.append(row)
                print(f"  {server:9} {generator:5} {row['req_per_s']:>7,} req/s", file=sys.stderr)
    # Other work on the machine skews the numbers: say how busy it was.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report(
        "mock_capacity",
        "Mock server capacity (zero latency, no limits), requests/s",
        [
            "server",
            "load generator",
            "connections",
            "requests",
            "errors",
            "req/s",
            "server CPU",
            "client CPU",
            "req/s per server core",
        ],
        [_cells(r) for r in rows],
        options,
        summary={"rows": rows},
        notes=[
            f"{os.cpu_count()} cores, 1-minute load average {load:.2f} at the end of the run. "
            "`raw` measures the server (its CPU near 100%); `httpx` is bound by the client.",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
