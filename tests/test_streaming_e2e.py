"""Streaming and the Responses API end to end: the engine and `trio-llm run` against the mock
server (real sockets, real clock), and the idle timeout on MockClock through the mock app."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_llm
from tests._fakes import SocketLikeASGITransport
from trio_llm.testing import MockApp, MockServerConfig, mock_reply, serve_mock

TIMEOUT = 30
LATENCY = 0.05


def provider_for(api: str, base_url: str) -> trio_llm.Provider:
    if api == "chat":
        return trio_llm.OpenAICompatible(base_url=base_url, model="mock-gpt")
    if api == "messages":
        return trio_llm.AnthropicMessages(base_url=base_url, model="claude")
    return trio_llm.OpenAIResponses(base_url=base_url, model="mock-gpt")


def prompts(n: int, *, stream: bool, fault: str = "") -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    return [
        {"messages": [{"role": "user", "content": f"[{tag}] {i} + {i}? {fault}"}],
         "stream": stream, "max_tokens": 50}
        for i in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
@pytest.mark.parametrize("stream", [True, False])
async def test_each_api_whole_and_streamed_against_the_mock(api: str, stream: bool) -> None:
    """Each API answers through the engine with the mock's text and usage; streamed answers
    carry their time to first token (the mock's latency), whole ones none."""
    items = prompts(6, stream=stream)
    config = MockServerConfig(latency=LATENCY, latency_per_token=0.002)
    with trio.fail_after(TIMEOUT):
        async with serve_mock(config) as server:
            engine = trio_llm.Engine(provider=provider_for(api, server.base_url), keys=["sk-1"])
            results = await engine.map(items)
    for item, result in zip(items, results, strict=True):
        assert result.ok, result.error
        assert result.text == mock_reply(item["messages"][0]["content"])
        assert result.usage is not None
        assert result.usage.completion_tokens > 0
        assert result.usage.prompt_tokens > 0
        if stream:
            assert result.ttft_s is not None
            assert result.ttft_s >= LATENCY
            assert result.output_tokens_per_s is not None
        else:
            assert result.ttft_s is None


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
async def test_an_error_event_mid_stream_is_retried_to_a_whole_answer(api: str) -> None:
    """The mock's stream_error (each API's error event after the 200, halfway) once per prompt:
    every item is sent twice and ends with the whole text."""
    items = prompts(4, stream=True, fault="[[fault:stream_error*1]]")
    retry = trio_llm.RetryPolicy(wait_initial=0.01, wait_max=0.05)
    with trio.fail_after(TIMEOUT):
        async with serve_mock(MockServerConfig(latency_per_token=0.001)) as server:
            engine = trio_llm.Engine(
                provider=provider_for(api, server.base_url), keys=["sk-1"], retry=retry
            )
            results = await engine.map(items)
            faults = server.app.stats().faults
    assert faults == {"stream_error": 4}
    for item, result in zip(items, results, strict=True):
        assert result.ok, result.error
        assert result.attempts == 2
        assert result.text == mock_reply(item["messages"][0]["content"])


async def test_idle_timeout_ends_a_stalled_stream_from_the_mock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The mock's stream_stall (a 200 that stops sending) fails its attempt at the idle
    timeout, on trio's clock, and the retry gets the whole answer."""
    app = MockApp(MockServerConfig())
    [item] = prompts(1, stream=True, fault="[[fault:stream_stall*1]]")
    retry = trio_llm.RetryPolicy(wait_initial=0.5, wait_jitter=0.0)
    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://mock.test/v1", model="mock-gpt"),
        keys=["sk-1"],
        transport=SocketLikeASGITransport(app),
        idle_timeout=20.0,
        retry=retry,
    )
    [result] = await engine.map([item])
    assert result.ok, result.error
    assert result.attempts == 2
    assert result.text == mock_reply(item["messages"][0]["content"])
    # 20 s of silence, then 0.5 s of backoff.
    assert trio.current_time() == pytest.approx(20.5)
    assert app.stats().faults == {"stream_stall": 1}


def test_trio_llm_run_answers_responses_batch_lines_streamed_and_whole(tmp_path: Path) -> None:
    """`trio-llm run` with Batch API lines for /v1/responses (one of them streamed) sends them
    to the Responses API and writes Batch API output with the response bodies."""
    tag = uuid.uuid4().hex[:8]

    def line(custom_id: str, text: str, **extra: Any) -> dict[str, Any]:
        body = {"model": "mock-gpt", "input": text, "instructions": "Be brief.", **extra}
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": body}

    items = [
        line("whole", f"[{tag}] whole"),
        line("streamed", f"[{tag}] streamed", stream=True),
        line("short", f"[{tag}] short", max_output_tokens=1),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with trio_llm.testing.MockServerProcess(MockServerConfig(latency=0.01)) as server:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "trio_llm", "run", str(source), "-o", str(out),
             "--base-url", server.base_url, "--keys", "sk-1", "--no-progress",
             "--idle-timeout", "10"],
            capture_output=True, text=True, timeout=TIMEOUT, check=False, cwd=tmp_path,
        )  # fmt: skip
        paths = server.stats().by_status
    assert done.returncode == 0, done.stderr
    assert paths == {200: 3}
    lines = {r["custom_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    for name in ("whole", "streamed"):
        body = lines[name]["response"]["body"]
        assert body["object"] == "response"
        text = body["output"][0]["content"][0]["text"]
        assert text == mock_reply(f"[{tag}] {name}")
    short = lines["short"]["response"]["body"]
    assert short["status"] == "incomplete"
    assert short["usage"]["output_tokens"] == 1


def test_responses_lines_hash_as_the_request_they_stand_for() -> None:
    """A /v1/responses line's input hash (resume's quick path) is the hash of its request."""
    from trio_llm._convert import line_hash, parse_input_line

    data = {"custom_id": "a", "method": "POST", "url": "/v1/responses",
            "body": {"model": "m", "input": "hi", "max_output_tokens": 5}}  # fmt: skip
    parsed = parse_input_line(json.dumps(data).encode(), source="in", line=1)
    assert parsed.request.messages == ({"role": "user", "content": "hi"},)
    assert parsed.request.params == {"model": "m", "max_output_tokens": 5}
    assert line_hash(data) == parsed.hash


def test_a_responses_line_without_input_is_named() -> None:
    """A /v1/responses line with no usable input fails naming $.body.input."""
    from trio_llm._convert import LineError, parse_input_line

    data = {"custom_id": "a", "url": "/v1/responses", "body": {"model": "m", "input": []}}
    with pytest.raises(LineError) as caught:
        parse_input_line(json.dumps(data).encode(), source="in.jsonl", line=3)
    assert caught.value.field == "$.body.input"
