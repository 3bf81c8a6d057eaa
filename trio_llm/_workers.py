"""Worker processes of a split run: starting them, and what each one runs.

A worker is this same command run again with one more flag (``--worker-fd FD`` for a child of
``--processes``, ``--join`` for Redis): it parses the same options, so it builds the same
engine; then it runs ``_split.work`` on its transport until the run is over. The coordinator
(``coordinate``) starts its workers, hands ``run_file`` a ``SplitRun`` in place of the engine,
and when the run ends waits for them to leave (they are killed after a few seconds if not).

A child of a coordinator never outlives it: a ``--processes`` child's socket closes when its
parent dies; a Redis child reads its stdin (a pipe from the parent) and leaves at its end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import trio

from ._engine import Engine
from ._errors import TrioLLMError
from ._split import ResultSource, SplitRun, work
from ._split_local import LocalHub, LocalLink, LocalStore, LocalTasks
from ._split_redis import RedisFeed, RedisTasks

__all__ = ["coordinate", "local_worker", "redis_worker"]

#: Seconds a worker has to leave once its run is over, before it is killed.
_LEAVE_S: Final = 10.0


def _window(engine: Engine, workers: int) -> int:
    """Items handed out and not answered yet: enough to keep every worker busy."""
    return max(1_000, 4 * engine.concurrency * workers)


async def _start(argv: Sequence[str], **kwargs: Any) -> trio.Process:
    command = [sys.executable, "-m", "trio_llm", *argv]
    return await trio.lowlevel.open_process(command, **kwargs)


async def _leave(processes: list[trio.Process]) -> None:
    """Tell the workers to leave, wait for them; kill what is still there after ``_LEAVE_S``."""
    with trio.CancelScope(shield=True):
        # A Redis child leaves at the end of its stdin: the run is over, and one that started
        # after it ended would otherwise wait for the name's next run until it is killed.
        for process in processes:
            if process.stdin is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await process.stdin.aclose()
        with trio.move_on_after(_LEAVE_S):
            for process in processes:
                await process.wait()
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def coordinate(
    mode: str, engine: Engine, options: dict[str, Any], argv: Sequence[str], *, output: str
) -> AsyncIterator[ResultSource]:
    """What ``run_file`` streams through in ``mode``: the engine itself (``one``), or a
    ``SplitRun`` with its workers started (``local``, ``redis``)."""
    if mode == "one":
        yield engine
        return
    if mode == "local":
        async with _local(engine, int(options["processes"]), argv) as source:
            yield source
        return
    feed = RedisFeed(options["redis"], os.path.basename(output), lease_s=float(options["lease"]))
    processes: list[trio.Process] = []
    async with feed:
        try:
            for _ in range(int(options["workers"])):
                child_argv = [*argv, "--join", "--workers", "1", "--exit-with-parent"]
                processes.append(await _start(child_argv, stdin=subprocess.PIPE))
            yield SplitRun(feed, window=_window(engine, len(processes)))
        finally:
            with trio.CancelScope(shield=True):
                await feed.finish()
            await _leave(processes)


@contextlib.asynccontextmanager
async def _local(engine: Engine, count: int, argv: Sequence[str]) -> AsyncIterator[ResultSource]:
    hub = LocalHub()
    processes: list[trio.Process] = []
    async with trio.open_nursery() as nursery:
        try:
            for _ in range(count):
                mine, theirs = socket.socketpair()
                with theirs:
                    fd = theirs.fileno()
                    processes.append(await _start([*argv, "--worker-fd", str(fd)], pass_fds=(fd,)))
                nursery.start_soon(
                    hub.serve, trio.SocketStream(trio.socket.from_stdlib_socket(mine))
                )
            nursery.start_soon(_fail_if_every_child_exits, processes, hub)
            yield SplitRun(hub, window=_window(engine, count))
        finally:
            with trio.CancelScope(shield=True):
                await hub.finish()
            await _leave(processes)
            nursery.cancel_scope.cancel()


def _leave_ctrl_c_to_the_parent() -> None:
    """A child in the terminal's process group gets the user's Ctrl-C too: it ignores it, and
    leaves when its parent stops (its socket or stdin closes), after the parent's graceful
    first Ctrl-C, instead of dropping its requests and printing a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def _fail_if_every_child_exits(processes: list[trio.Process], hub: LocalHub) -> None:
    """Stop the run, rather than wait for ever, when no child is left to send its items
    (killed by the OOM killer, say): what was written stays, and a rerun resumes."""
    for process in processes:
        await process.wait()
    if not hub.over:
        statuses = ", ".join(str(process.returncode) for process in processes)
        raise TrioLLMError(
            f"every worker process of --processes {len(processes)} exited before the run "
            f"ended (exit statuses {statuses})\nHINT: run the same command again: it resumes "
            "from OUTPUT"
        )


def local_worker(fd: int, make_engine: Callable[[Any], Engine]) -> int:
    """A ``--processes`` child: items and limits from the parent on the socket ``fd``."""

    _leave_ctrl_c_to_the_parent()

    async def main() -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket(fileno=fd)))
        link = LocalLink(stream)
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                await link.run()
                nursery.cancel_scope.cancel()  # the parent left: so does this child

            nursery.start_soon(reader)
            await work(make_engine(LocalStore(link)), LocalTasks(link))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return 0


def redis_worker(
    url: str,
    name: str,
    make_engine: Callable[[Any], Engine],
    *,
    workers: int,
    lease_s: float,
    argv: Sequence[str],
    exit_with_parent: bool,
) -> int:
    """``--join``: work for the run named ``name`` on ``url`` (``workers`` processes)."""
    if workers > 1:

        async def several() -> int:
            processes = [
                await _start([*argv, "--workers", "1", "--exit-with-parent"], stdin=subprocess.PIPE)
                for _ in range(workers)
            ]
            try:
                for process in processes:
                    await process.wait()
            finally:
                await _leave(processes)
            return max(process.returncode or 0 for process in processes)

        return trio.run(several)

    from ._store import RedisStore

    if exit_with_parent:
        _leave_ctrl_c_to_the_parent()

    async def main() -> int:
        async with (
            RedisStore(url) as store,
            RedisTasks(url, name, lease_s=lease_s) as tasks,
            trio.open_nursery() as nursery,
        ):
            if exit_with_parent:

                async def watch_parent() -> None:
                    # os.read, not sys.stdin: a buffered reader's lock, held by an abandoned
                    # thread, would stop the interpreter from exiting.
                    while await trio.to_thread.run_sync(os.read, 0, 1024, abandon_on_cancel=True):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch_parent)
            run = await tasks.wait_for_run()
            done = await work(make_engine(store), tasks)
            nursery.cancel_scope.cancel()
        if not exit_with_parent:
            print(f"trio-llm: worker of {name} (run {run}): {done} items answered", file=sys.stderr)
        return 0

    return trio.run(main)
