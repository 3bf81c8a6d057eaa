"""The mock ASGI app on hypercorn + asyncio + uvloop, HTTP/1.1 and h2c (prior knowledge).

    python -m benchmarks._h2c_server --streams 1000 < config.json

A helper of ``benchmarks/http_backends.py`` (trio_llm.testing serves h1 only on uvicorn, and
hypercorn on trio there): hypercorn answers an HTTP/2 connection preface on a cleartext socket
with HTTP/2, so one port serves both protocols. It prints ``listening on http://HOST:PORT/v1``
once the socket listens, like ``python -m trio_llm.testing``, and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import socket
import sys
from typing import Any, cast

import hypercorn.asyncio
import hypercorn.config

from trio_llm.testing import MockServerConfig
from trio_llm.testing._mock_server import MockApp


def raise_nofile(want: int) -> int:
    """Raise the soft open-files limit toward ``want`` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--streams", type=int, default=100, help="h2 max concurrent streams")
    parser.add_argument("--nofile", type=int, default=65536)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    raise_nofile(args.nofile)
    app = MockApp(MockServerConfig.from_json(sys.stdin.read()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, 0))
    sock.listen(4096)
    port = sock.getsockname()[1]
    config = hypercorn.config.Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = None
    config.backlog = 4096
    config.graceful_timeout = 0.5
    config.keep_alive_max_requests = 10_000_000
    config.keep_alive_timeout = 120
    config.h2_max_concurrent_streams = args.streams

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = asyncio.ensure_future(
            hypercorn.asyncio.serve(cast(Any, app), config, shutdown_trigger=stop.wait)
        )
        await asyncio.sleep(0.2)
        print(f"listening on http://{args.host}:{port}/v1", flush=True)
        await server

    if args.no_uvloop:
        asyncio.run(serve())
    else:
        import uvloop

        uvloop.run(serve())


if __name__ == "__main__":
    main()
