"""``mock_server_main``: run the mock server as a program, on uvicorn or hypercorn.

``python -m trio_llm.testing --rpm 500`` and ``trio-llm mock-server`` both end up here. The
process prints one line, ``listening on http://HOST:PORT/v1``, once its socket accepts
connections (so a parent that asked for port 0 learns the port), then serves until SIGINT or
SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import signal
import socket
import sys
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Literal, TypeAlias, cast

from ._mock_config import HEADER_DIALECTS, MockServerConfig
from ._mock_serve import KEEP_ALIVE_S, LISTEN_BACKLOG, hypercorn_config
from ._mock_server import MockApp

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["ServerKind", "mock_server_main", "resolve_server"]

ServerKind: TypeAlias = Literal["auto", "hypercorn", "uvicorn"]


def resolve_server(kind: ServerKind = "auto") -> Literal["hypercorn", "uvicorn"]:
    """Return the server that *kind* runs: ``"auto"`` is uvicorn + httptools when importable.

    In ``benchmarks/mock_capacity.py`` uvicorn + httptools served 5,000-9,000 requests/s on one
    core against hypercorn's 1,000-2,000; hypercorn is a dependency of trio-llm, so it is always
    there.
    """
    if kind != "auto":
        return kind
    has_uvicorn = importlib.util.find_spec("uvicorn") is not None
    has_httptools = importlib.util.find_spec("httptools") is not None
    return "uvicorn" if has_uvicorn and has_httptools else "hypercorn"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-llm mock-server",
        description="Serve a mock OpenAI-compatible API (POST /v1/chat/completions).",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    add("--port", type=int, default=8000, help="port; 0 picks a free one (default: %(default)s)")
    add("--keys", help="comma-separated valid API keys (default: accept any key)")
    add("--rpm", type=int, help="requests per minute per key (default: unlimited)")
    add("--tpm", type=int, help="tokens per minute per key (default: unlimited)")
    add("--latency", type=float, default=0.0, help="mean seconds per response (default: 0)")
    add("--latency-sigma", type=float, default=0.0, help="lognormal sigma; 0 = fixed latency")
    add("--latency-per-token", type=float, default=0.0, help="extra seconds per output token")
    add("--error-rate", type=float, default=0.0, help="probability of an injected fault (0..1)")
    add(
        "--fault-mix",
        help="weights over fault kinds, e.g. 500=3,503=1,drop=1,hang=1 (default: retryable kinds)",
    )
    add("--seed", type=int, default=0, help="seed for latency and faults (default: 0)")
    add("--burst-s", type=float, default=1.0, help="bucket capacity in seconds of rate")
    add("--quota-exhausted-keys", help="comma-separated keys that get 429 insufficient_quota")
    # Real servers' behaviours (issue 15); see MockServerConfig.
    add(
        "--headers",
        choices=HEADER_DIALECTS,
        default="native",
        help="whose rate-limit headers and 429 bodies to imitate (default: %(default)s)",
    )
    add(
        "--window",
        choices=["bucket", "minute"],
        default="bucket",
        help="count limits in a refilling bucket or fixed calendar minutes (default: bucket)",
    )
    add("--rpd", type=int, help="requests per day per key (default: unlimited)")
    add("--itpm", type=int, help="input tokens per minute per key (default: unlimited)")
    add("--otpm", type=int, help="output tokens per minute per key (default: unlimited)")
    add(
        "--hold-s",
        type=float,
        default=0.0,
        help="hold an over-limit request up to this many seconds, then answer (default: 0)",
    )
    add("--outage", help="429 with no headers for the first S seconds, or from A to B: S or A:B")
    add("--start-exhausted", action="store_true", help="keys start with their limits used up")
    add(
        "--credit-exhausted-keys",
        help="comma-separated keys that get Anthropic's 400 'credit balance is too low'",
    )
    add(
        "--unknown-key-error",
        choices=["openai", "litellm"],
        default="openai",
        help="refuse unknown keys with OpenAI's 401 or LiteLLM's 400 (default: openai)",
    )
    add(
        "--server",
        choices=["auto", "hypercorn", "uvicorn"],
        default="auto",
        help="HTTP server; auto = uvicorn+httptools when installed, else hypercorn",
    )
    # How MockServerProcess hands over a whole MockServerConfig (JSON, or "-" to read it from
    # stdin, which keeps the keys out of `ps`); replaces the flags above.
    add("--config-json", help=argparse.SUPPRESS)
    return parser


def _config_from_args(args: argparse.Namespace) -> MockServerConfig:
    if args.config_json:
        text = sys.stdin.read() if args.config_json == "-" else args.config_json
        return MockServerConfig.from_json(text)
    extra: dict[str, object] = {}
    if args.fault_mix:
        pairs = (item.partition("=") for item in args.fault_mix.split(",") if item)
        extra["fault_mix"] = [(kind.strip(), float(weight or 1)) for kind, _, weight in pairs]
    return MockServerConfig(
        keys=args.keys,
        quota_exhausted_keys=args.quota_exhausted_keys or (),
        rpm=args.rpm,
        tpm=args.tpm,
        burst_s=args.burst_s,
        latency=args.latency,
        latency_sigma=args.latency_sigma,
        latency_per_token=args.latency_per_token,
        error_rate=args.error_rate,
        seed=args.seed,
        headers=args.headers,
        window=args.window,
        rpd=args.rpd,
        itpm=args.itpm,
        otpm=args.otpm,
        hold_s=args.hold_s,
        outage=args.outage,
        start_exhausted=args.start_exhausted,
        credit_exhausted_keys=args.credit_exhausted_keys or (),
        unknown_key_error=args.unknown_key_error,
        **extra,  # type: ignore[arg-type]
    )


def mock_server_main(argv: Sequence[str] | None = None) -> int:
    """Run the mock server until SIGINT or SIGTERM; the ``trio-llm mock-server`` command.

    Args:
        argv: command-line arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 after a clean shutdown. Bad arguments exit with status 2, as
        ``argparse`` does.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = _config_from_args(args)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    # Warnings and errors from the server reach stderr unless the caller set logging up.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app = MockApp(config)
    if resolve_server(args.server) == "uvicorn":
        _run_uvicorn(app, args.host, args.port)
    else:
        _run_hypercorn(app, args.host, args.port)
    return 0


def _announce(host: str, port: int) -> None:
    url_host = f"[{host}]" if ":" in host else host
    print(f"listening on http://{url_host}:{port}/v1", flush=True)


def _run_hypercorn(app: MockApp, host: str, port: int) -> None:
    import hypercorn.trio
    import trio

    if TYPE_CHECKING:
        from hypercorn.typing import Framework

    async def serve() -> None:
        shutdown = trio.Event()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                run = partial(
                    hypercorn.trio.serve,
                    cast("Framework", app),
                    hypercorn_config(host, port),
                    shutdown_trigger=shutdown.wait,
                )
                binds: list[str] = await nursery.start(run)
                _announce(host, int(binds[0].rsplit(":", 1)[1]))
                async for _ in signals:
                    shutdown.set()
                    break

    trio.run(serve)


class _DropNoise(logging.Filter):
    """Silence uvicorn's error for the ``drop`` fault, which returns mid-body on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


def _run_uvicorn(app: MockApp, host: str, port: int) -> None:
    import uvicorn

    # Bind here rather than in uvicorn, so port 0 works and the real port can be announced.
    sockets = _listening_sockets(host, port)
    bound_port = int(sockets[0].getsockname()[1])

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                _announce(host, bound_port)

    config = uvicorn.Config(
        app,
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=LISTEN_BACKLOG,
        # Clients reuse a connection after their own pauses (a CPU-bound client at 10,000 in
        # flight takes seconds); uvicorn's default 5 s closed connections under them.
        timeout_keep_alive=KEEP_ALIVE_S,
        # Shutdown otherwise waits for every request in flight, and a `hang` never ends.
        timeout_graceful_shutdown=1,
    )
    logging.getLogger("uvicorn.error").addFilter(_DropNoise())

    # uvicorn re-raises the signal that stopped it once it has shut down; with these handlers
    # in place that re-raise is a no-op and this function returns normally.
    def ignore(signum: int, frame: FrameType | None) -> None:
        pass

    previous = {sig: signal.signal(sig, ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        Server(config).run(sockets=sockets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()


def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets listening on one port (``SO_REUSEPORT``), enough for ``LISTEN_BACKLOG``
    connections waiting to be accepted.

    The kernel caps each socket's accept queue at ``net.core.somaxconn`` (4,096 here), and
    10,000 clients connecting at once overflow one queue: the rest retransmit their SYNs
    after 1 s, 3 s..., which delays the whole first wave. Each socket has its own queue, and
    the kernel spreads new connections over them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    count = 1
    if hasattr(socket, "SO_REUSEPORT"):
        count = max(1, min(8, math.ceil(LISTEN_BACKLOG / _somaxconn())))
    sockets: list[socket.socket] = []
    for _ in range(count):
        # proto=IPPROTO_TCP matters: accepted sockets inherit it, and asyncio sets TCP_NODELAY
        # only on sockets that say they are TCP. Without it, Nagle + delayed ACKs cap a
        # connection at ~25 requests/s (uvicorn writes the headers and the body separately).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if count > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port if not sockets else sockets[0].getsockname()[1]))
        sockets.append(sock)
    return sockets


def _somaxconn() -> int:
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as file:
            return max(1, int(file.read().strip()))
    except (OSError, ValueError):
        return 4096


if __name__ == "__main__":  # pragma: no cover
    sys.exit(mock_server_main())
