"""Batch API offload: a file run through OpenAI's /v1/files + /v1/batches or Anthropic's Message
Batches on the mock server, merged into the same OUTPUT, resumed without submitting twice.

The engine talks to the mock app through ``httpx.ASGITransport`` (no sockets), so time runs
on trio's MockClock: polls and their backoff take virtual seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trio_llm import AnthropicMessages, ConfigurationError, Engine, OpenAICompatible
from trio_llm._offload import BatchOffload, state_path
from trio_llm._sinks import run_file
from trio_llm.testing import MockApp, MockServerConfig, mock_reply

KEY = "sk-test-offload-0001"


class Crash(Exception):
    """Stands in for kill -9 at one point of the protocol."""


class Recorder(httpx.AsyncBaseTransport):
    """Forwards to the app; records (time, method, path); crashes after a chosen call."""

    def __init__(self, app: MockApp, crash_after: tuple[str, str] | None = None) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.calls: list[tuple[float, str, str]] = []
        self.crash_after = crash_after

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((trio.current_time(), request.method, request.url.path))
        response = await self.inner.handle_async_request(request)
        if (request.method, request.url.path) == self.crash_after:
            await response.aread()
            raise Crash(f"killed after {request.method} {request.url.path}")
        return response


def engine(transport: httpx.AsyncBaseTransport, api: str = "openai") -> Engine:
    provider: Any = (
        AnthropicMessages(base_url="http://mock/v1", model="claude-haiku-4-5")
        if api == "anthropic"
        else OpenAICompatible(base_url="http://mock/v1", model="gpt-4o-mini")
    )
    return Engine(provider=provider, keys=[KEY], transport=transport, keep_raw=True)  # as the CLI


def write_input(path: Path, n: int, special: dict[int, str] | None = None) -> Path:
    lines = []
    for i in range(n):
        prompt = (special or {}).get(i, f"what is {i} + 1?")
        lines.append(json.dumps({"id": f"q{i}", "prompt": prompt}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_output(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    by_id = {line.get("custom_id", line.get("id")): line for line in lines}
    assert len(by_id) == len(lines), "an id written twice"
    return by_id


async def offload_run(
    transport: httpx.AsyncBaseTransport,
    source: Path,
    out: Path,
    *,
    api: str = "openai",
    **settings: Any,
) -> Any:
    settings = {"size": 20, "poll_s": 1.0, **settings}
    deadline = settings.pop("deadline", None)
    return await run_file(
        engine(transport, api),
        source,
        out,
        deadline=deadline,
        offload=BatchOffload(**settings),
    )


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_file_runs_through_the_batch_api(
    autojump_clock: Any, tmp_path: Path, api: str
) -> None:
    """50 lines in batches of 20: 3 batches, every line answered as a normal run would, half
    the price; expired and failed lines are failures a rerun sends again (only them)."""
    app = MockApp(MockServerConfig(keys=(KEY,), batch_polls=3))
    source = write_input(
        tmp_path / "in.jsonl", 50, {7: "[[batch:expired]] x", 9: "[[batch:failed*1]] y"}
    )
    out = tmp_path / "out.jsonl"
    report = await offload_run(httpx.ASGITransport(app=app), source, out, api=api)
    stats = app.stats()
    assert (stats.batch_creates, stats.batch_lines, stats.total_requests) == (3, 50, 0)
    assert (report.succeeded, report.failed) == (48, 2)
    lines = read_output(out)
    assert set(lines) == {f"q{i}" for i in range(50)}
    assert lines["q3"]["content"] == mock_reply("what is 3 + 1?")
    assert lines["q7"]["error"]["kind"] == "timeout"
    assert lines["q9"]["error"]["kind"] == "server_error"

    # The same lines through the engine: same content, twice the price.
    normal = tmp_path / "normal.jsonl"
    await run_file(engine(httpx.ASGITransport(app=app), api), source, normal)
    sync_line = read_output(normal)["q3"]
    assert lines["q3"]["cost_usd"] == pytest.approx(sync_line["cost_usd"] / 2)
    assert {k for k in lines["q3"] if k != "cost_usd"} == {k for k in sync_line if k != "cost_usd"}

    again = await offload_run(httpx.ASGITransport(app=app), source, out, api=api)
    stats = app.stats()
    assert (stats.batch_creates, stats.batch_lines) == (4, 52)
    assert (again.skipped, again.succeeded, again.failed) == (48, 1, 1)
    assert "content" in read_output(out)["q9"]


async def test_batch_api_lines_keep_their_output_shape(autojump_clock: Any, tmp_path: Path) -> None:
    """Batch API input lines get Batch API output lines, as in a normal run."""
    app = MockApp(MockServerConfig(keys=(KEY,)))
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": f"c{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "mock-gpt",
                        "messages": [{"role": "user", "content": f"{i}"}],
                    },
                }
            )
            + "\n"
            for i in range(3)
        ),
        encoding="utf-8",
    )
    await offload_run(httpx.ASGITransport(app=app), source, tmp_path / "out.jsonl")
    await run_file(engine(httpx.ASGITransport(app=app)), source, tmp_path / "normal.jsonl")
    offloaded = read_output(tmp_path / "out.jsonl")
    normal = read_output(tmp_path / "normal.jsonl")
    assert set(offloaded) == set(normal) == {"c0", "c1", "c2"}
    for cid in offloaded:
        assert set(offloaded[cid]) == set(normal[cid])
        assert offloaded[cid]["response"]["status_code"] == 200
        choice = offloaded[cid]["response"]["body"]["choices"][0]
        assert choice == normal[cid]["response"]["body"]["choices"][0]


async def test_polls_back_off(autojump_clock: Any, tmp_path: Path) -> None:
    """Status reads at 0, 1, 2.5, 4.75 s: each wait 1.5 x the last."""
    app = MockApp(MockServerConfig(keys=(KEY,), batch_polls=4))
    transport = Recorder(app)
    source = write_input(tmp_path / "in.jsonl", 5)
    await offload_run(transport, source, tmp_path / "out.jsonl")
    polls = [t for t, method, path in transport.calls if method == "GET" and "/batches/" in path]
    assert polls[:4] == pytest.approx([0.0, 1.0, 2.5, 4.75])


@pytest.mark.parametrize(
    ("crash_after", "api"),
    [
        (("POST", "/v1/files"), "openai"),
        (("POST", "/v1/batches"), "openai"),
        (("POST", "/v1/messages/batches"), "anthropic"),
        (("GET", "/v1/batches/"), "openai"),
    ],
)
async def test_a_rerun_after_a_crash_never_submits_twice(
    autojump_clock: Any, tmp_path: Path, crash_after: tuple[str, str], api: str
) -> None:
    """Killed right after an upload, a create, or during polling: the rerun finds what the
    server has (the file by name, the batch by metadata or size) and creates nothing twice."""
    app = MockApp(MockServerConfig(keys=(KEY,), batch_polls=3))
    source = write_input(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out.jsonl"
    crashing = Recorder(app, crash_after)
    if crash_after[1].endswith("/"):  # any poll: crash on the first status read
        crashing.crash_after = None
        original = crashing.handle_async_request

        async def crash_on_poll(request: httpx.Request) -> httpx.Response:
            response = await original(request)
            if request.method == "GET" and "/batches/" in request.url.path:
                raise Crash("killed while polling")
            return response

        crashing.handle_async_request = crash_on_poll  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await offload_run(crashing, source, out, api=api)
    await offload_run(httpx.ASGITransport(app=app), source, out, api=api)
    stats = app.stats()
    assert stats.batch_creates == 2  # 30 lines, batches of 20
    assert stats.batch_lines == 30
    assert stats.files_uploaded == (2 if api == "openai" else 0)
    assert stats.duplicate_successes == 0
    assert set(read_output(out)) == {f"q{i}" for i in range(30)}
    state = json.loads(state_path(out).read_text())
    assert all(chunk["merged"] for chunk in state["chunks"])


async def test_a_deadline_leaves_the_batches_for_the_rerun(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Past --deadline the items fail as deadline; the rerun collects the same batch."""
    app = MockApp(MockServerConfig(keys=(KEY,), batch_polls=1000, batch_after_s=100))
    source = write_input(tmp_path / "in.jsonl", 5)
    out = tmp_path / "out.jsonl"
    report = await offload_run(httpx.ASGITransport(app=app), source, out, deadline=10)
    assert report.failed == 5
    assert report.stopped == "deadline"
    assert trio.current_time() == pytest.approx(10, abs=0.01)
    await trio.sleep(100)
    again = await offload_run(httpx.ASGITransport(app=app), source, out)
    assert again.succeeded == 5
    assert app.stats().batch_creates == 1


async def test_a_plain_run_over_open_batches_is_refused(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Without --batch-api, a run whose OUTPUT has open batches would pay twice: refused."""
    app = MockApp(MockServerConfig(keys=(KEY,), batch_polls=1000))
    source = write_input(tmp_path / "in.jsonl", 5)
    out = tmp_path / "out.jsonl"
    await offload_run(httpx.ASGITransport(app=app), source, out, deadline=5)
    with pytest.raises(ConfigurationError, match="--batch-api"):
        await run_file(engine(httpx.ASGITransport(app=app)), source, out)
    assert app.stats().total_requests == 0
    # auto goes on with the batches although the input is small.
    await offload_run(httpx.ASGITransport(app=app), source, out, auto=True, deadline=5)
    assert app.stats().batch_creates == 1


async def test_auto_sends_a_small_input_as_usual(autojump_clock: Any, tmp_path: Path) -> None:
    """--batch-api auto: under 1,000 items (or with a short deadline), a normal run."""
    app = MockApp(MockServerConfig(keys=(KEY,)))
    source = write_input(tmp_path / "in.jsonl", 5)
    await offload_run(httpx.ASGITransport(app=app), source, tmp_path / "out.jsonl", auto=True)
    assert (app.stats().batch_creates, app.stats().total_requests) == (0, 5)
    assert BatchOffload(auto=True).wanted(1000, None, tmp_path / "x")
    assert not BatchOffload(auto=True).wanted(1000, 3600, tmp_path / "x")
    assert not BatchOffload(auto=True).wanted(999, None, tmp_path / "x")
