"""``serve_mock``: run the mock server inside the current trio program, on hypercorn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, cast, final

import hypercorn.config
import hypercorn.trio
import trio

from ._mock_config import MockServerConfig
from ._mock_server import MockApp

if TYPE_CHECKING:
    from hypercorn.typing import Framework

    from ._mock_stats import MockStats

__all__ = ["KEEP_ALIVE_S", "LISTEN_BACKLOG", "MockServer", "hypercorn_config", "serve_mock"]

#: Connections the mock lets wait to be accepted: more than the 10,000 a benchmark opens at
#: once (the kernel caps each listening socket at ``net.core.somaxconn``, so the mock on
#: uvicorn listens on several sockets of one port: ``_mock_main._listening_sockets``).
LISTEN_BACKLOG = 16_384
#: Seconds an idle client connection is kept open (uvicorn's and hypercorn's default is 5 s,
#: which closed connections under a CPU-bound client at 10,000 in flight; real providers keep
#: theirs for a minute or more).
KEEP_ALIVE_S = 120

# Hypercorn's own messages ("Running on ...", app errors) go to the caller's logging setup
# instead of a stderr handler of hypercorn's own.
_LOGGER = logging.getLogger("trio_llm.testing.mock_server")


def hypercorn_config(host: str, port: int) -> hypercorn.config.Config:
    """Return the hypercorn config the mock runs with, in-process or in its own process."""
    config = hypercorn.config.Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None  # one line per request would swamp a benchmark
    config.errorlog = _LOGGER
    # Shutting down waits this long for requests in flight (a `hang` fault waits forever).
    config.graceful_timeout = 0.5
    # Clients are benchmarks hammering one server: don't cycle their connections.
    config.keep_alive_max_requests = 1_000_000
    # Idle connections stay open as long as a real provider's, and a connect storm of
    # 10,000 waits to be accepted (hypercorn's default backlog is 100).
    config.keep_alive_timeout = KEEP_ALIVE_S
    config.backlog = LISTEN_BACKLOG
    return config


@final
class MockServer:
    """A running in-process mock server (see :func:`serve_mock`).

    Attributes:
        app: the ASGI app being served.
        host: the address it listens on.
        port: the port it listens on (the real one when asked for port 0).
        base_url: the OpenAI base URL, ``http://HOST:PORT/v1``.
    """

    def __init__(self, app: MockApp, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        url_host = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{url_host}:{port}/v1"

    @property
    def config(self) -> MockServerConfig:
        """The server's config."""
        return self.app.config

    async def stats(self) -> MockStats:
        """Return a snapshot of the server's counters (as ``GET /stats`` would)."""
        await trio.lowlevel.checkpoint()
        return self.app.stats()

    async def reset_stats(self) -> None:
        """Zero the server's counters (as ``POST /stats/reset`` would)."""
        await trio.lowlevel.checkpoint()
        self.app.reset_stats()


@asynccontextmanager
async def serve_mock(
    config: MockServerConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[MockServer]:
    """Serve the mock OpenAI-compatible server in this trio program for the ``async with`` block.

    It runs on hypercorn's trio worker in a task of its own, shares the process (and the CPU)
    with the caller, and stops when the block exits, also when the block raises or is
    cancelled. For throughput benchmarks prefer :class:`MockServerProcess`.

    Args:
        config: how the server behaves (default: any key, no limits, no latency, no faults).
        host: the address to listen on.
        port: the port; 0 picks a free one (read it from ``server.port``).

    Yields:
        The running server: ``server.base_url`` is ready for an OpenAI client.

    Example:
        ```python
        async with serve_mock(MockServerConfig(rpm=600)) as server:
            client = httpx.AsyncClient(base_url=server.base_url)
        ```
    """
    app = MockApp(config)
    shutdown = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            # hypercorn's types spell out the ASGI message TypedDicts; the app takes any mapping.
            serve = partial(
                hypercorn.trio.serve,
                cast("Framework", app),
                hypercorn_config(host, port),
                shutdown_trigger=shutdown.wait,
            )
            binds: list[str] = await nursery.start(serve)
            bound_port = int(binds[0].rsplit(":", 1)[1])
            try:
                yield MockServer(app, host, bound_port)
            finally:
                shutdown.set()
    except BaseExceptionGroup as group:
        # Our nursery wraps whatever the block raised; hand the caller their own exception
        # back, as if the server were not a task (`pytest.raises(ValueError)` keeps working).
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
