"""``MockServerProcess``: the mock server in a child process, for benchmarks and examples."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self, final

import httpx

from ._mock_config import MockServerConfig
from ._mock_main import ServerKind, resolve_server
from ._mock_stats import MockStats

__all__ = ["MockServerProcess"]

_READY_PREFIX = "listening on "
# The directory holding the trio_llm package, so the child imports the same code as the parent
# even when the parent found it through sys.path tweaks (pytest's rootdir, a notebook's cwd).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@final
class MockServerProcess:
    """The mock server in a process of its own (a sync context manager).

    A separate process gives the server its own interpreter and core, so a load generator in
    the parent measures the client and not a shared event loop. Entering starts
    ``python -m trio_llm.testing`` on a free port and waits until it listens; leaving stops it
    (SIGTERM, then SIGKILL after ``stop_timeout`` seconds).

    Args:
        config: how the server behaves.
        server: ``"uvicorn"`` (uvicorn + httptools, the fastest), ``"hypercorn"`` (trio), or
            ``"auto"``: uvicorn when installed (the ``bench`` extra), else hypercorn.
        host: the address to listen on.
        port: the port; 0 picks a free one.
        startup_timeout: seconds to wait for the child to listen before giving up.
        stop_timeout: seconds to wait after SIGTERM before SIGKILL.

    Example:
        ```python
        with MockServerProcess(MockServerConfig(latency=0.2)) as proc:
            run_benchmark(base_url=proc.base_url)
            print(proc.stats())
        ```
    """

    def __init__(
        self,
        config: MockServerConfig | None = None,
        *,
        server: ServerKind = "auto",
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.config = config if config is not None else MockServerConfig()
        self.server: Literal["hypercorn", "uvicorn"] = resolve_server(server)
        self.host = host
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._process: subprocess.Popen[str] | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://HOST:PORT/v1`` (once started)."""
        if self._base_url is None:
            msg = "the mock server is not running; HINT: use `with MockServerProcess(...) as p:`"
            raise RuntimeError(msg)
        return self._base_url

    @property
    def port(self) -> int:
        """The port the child listens on."""
        return int(self.base_url.rsplit(":", 1)[1].split("/", 1)[0])

    @property
    def pid(self) -> int | None:
        """The child's process id, or ``None`` when not running."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the child and wait until it listens."""
        if self._process is not None:
            return
        command = [
            sys.executable, "-m", "trio_llm.testing",
            "--host", self.host,
            "--port", str(self._requested_port),
            "--server", self.server,
            "--config-json", "-",
        ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, env=env
        )
        self._process = process
        assert process.stdin is not None
        assert process.stdout is not None
        # The config (keys included) goes through stdin rather than argv, which `ps` shows.
        with process.stdin:
            process.stdin.write(self.config.to_json())
        lines: queue.Queue[str] = queue.Queue()
        # A thread, because a pipe read has no portable timeout; it keeps draining stdout so
        # the child can never block on a full pipe.
        threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
        try:
            while True:
                try:
                    line = lines.get(timeout=self._startup_timeout)
                except queue.Empty:
                    msg = f"mock server did not listen within {self._startup_timeout} s"
                    raise TimeoutError(msg) from None
                if not line:
                    msg = f"mock server exited with status {process.wait()} before listening"
                    raise RuntimeError(msg)
                if line.startswith(_READY_PREFIX):
                    self._base_url = line[len(_READY_PREFIX) :].strip()
                    return
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the child: SIGTERM, then SIGKILL if it hasn't exited in ``stop_timeout``."""
        process, self._process, self._base_url = self._process, None, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def stats(self) -> MockStats:
        """Fetch the child's counters (``GET /stats``)."""
        response = httpx.get(self._root_url() + "/stats")
        response.raise_for_status()
        return MockStats.from_json(response.content)

    def reset_stats(self) -> None:
        """Zero the child's counters (``POST /stats/reset``)."""
        httpx.post(self._root_url() + "/stats/reset").raise_for_status()

    def _root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):
        pass  # closed by stop()
    lines.put("")  # end of file: the child exited
