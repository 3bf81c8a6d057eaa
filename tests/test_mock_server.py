"""Tests for trio_llm.testing: the mock OpenAI-compatible server.

These talk to a real hypercorn server over 127.0.0.1, so they run on the real clock (autojump
would jump while bytes are in flight) and keep every wait tiny and bounded.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio

import trio_llm.testing
from trio_llm.testing import (
    FAULT_KINDS,
    MockApp,
    MockServer,
    MockServerConfig,
    MockServerProcess,
    MockStats,
    count_tokens,
    format_reset,
    mock_reply,
    serve_mock,
)

KEY = "sk-test-0000000000a1b2"
TIMEOUT = 5


@asynccontextmanager
async def mock_client(
    config: MockServerConfig | None = None,
    *,
    key: str | None = KEY,
    read_timeout: float = TIMEOUT,
) -> AsyncIterator[tuple[MockServer, httpx.AsyncClient]]:
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    # The client's own timeout stands in for a user's deadline in the `hang` test only; test
    # bodies are guarded by trio.fail_after.
    timeout = httpx.Timeout(TIMEOUT, read=read_timeout)
    async with (
        serve_mock(config) as server,
        httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=timeout) as client,
    ):
        yield server, client


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": prompt}], **extra}


async def post(client: httpx.AsyncClient, prompt: str, **extra: Any) -> httpx.Response:
    return await client.post("/chat/completions", json=chat(prompt, **extra))


def sse_events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.split("\n\n") if line]


# -- content ---------------------------------------------------------------------------------


async def test_public_names() -> None:
    """trio_llm.testing exports exactly its documented public names."""
    assert trio_llm.testing.__all__ == sorted(trio_llm.testing.__all__)
    assert set(trio_llm.testing.__all__) == {
        "DEFAULT_FAULT_MIX", "FAULT_KINDS", "FaultKind", "HeaderDialect", "MockApp", "MockServer",
        "MockServerConfig", "MockServerProcess", "MockStats", "count_tokens", "format_reset",
        "mock_reply", "mock_server_main", "serve_mock",
    }  # fmt: skip


async def test_response_shape_is_openai_and_deterministic() -> None:
    """A chat completion has OpenAI's shape and the same prompt always gets the same reply."""
    with trio.fail_after(TIMEOUT):
        async with mock_client() as (_, client):
            first = await post(client, "Tell me about trio.")
            second = await post(client, "Tell me about trio.")
            other = await post(client, "Tell me about asyncio.")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    body = first.json()
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage"}
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-test"
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content == mock_reply("Tell me about trio.")
    digest = hashlib.sha256(b"Tell me about trio.").hexdigest()
    assert content.startswith(f"mock-{digest[:12]} ")
    assert 8 <= count_tokens(content) <= 40
    assert body["usage"] == {
        "prompt_tokens": count_tokens("Tell me about trio.") + 3,
        "completion_tokens": count_tokens(content),
        "total_tokens": count_tokens("Tell me about trio.") + 3 + count_tokens(content),
    }
    assert second.json()["choices"][0]["message"]["content"] == content
    assert other.json()["choices"][0]["message"]["content"] != content


@pytest.mark.parametrize(
    ("prompt", "answer"),
    [
        ("What is 12 + 7 x 3?", 33),
        ("Compute (12 + 7) * 3 and reply in JSON.", 57),
        ("item-42: 100 - 8 / 4", 98),
        ("2 \u00d7 3 \u00f7 4", 1.5),
        ("-5 + 2", -3),
    ],
)
def test_arithmetic_prompts_get_the_right_answer(prompt: str, answer: float) -> None:
    """A prompt containing an integer arithmetic expression gets {"answer": value}."""
    assert json.loads(mock_reply(prompt)) == {"answer": answer}


@pytest.mark.parametrize("prompt", ["no numbers here", "divide 1 / 0", "just -5", "a 3 x b"])
def test_non_arithmetic_prompts_get_a_hash_reply(prompt: str) -> None:
    """Prompts with no evaluable expression get the mock-<hash> reply."""
    assert mock_reply(prompt).startswith("mock-")


def test_count_tokens_is_chars_over_four() -> None:
    """The mock's token count is ceil(len / 4), at least 1."""
    assert [count_tokens(t) for t in ("", "a", "abcd", "abcde")] == [1, 1, 1, 2]


async def test_prompt_tokens_count_every_message() -> None:
    """prompt_tokens counts every message (+3 each); the last user message is the prompt."""
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": [{"type": "text", "text": "And 3 * 3?"}]},
    ]
    with trio.fail_after(TIMEOUT):
        async with mock_client() as (_, client):
            response = await client.post("/chat/completions", json={"messages": messages})
    body = response.json()
    texts = ["Be brief.", "What is 2 + 2?", "4", "And 3 * 3?"]
    assert body["usage"]["prompt_tokens"] == sum(count_tokens(t) + 3 for t in texts)
    assert json.loads(body["choices"][0]["message"]["content"]) == {"answer": 9}
    assert body["model"] == "mock-gpt"  # the config's model when the request names none


async def test_max_tokens_cuts_the_reply() -> None:
    """max_tokens below the reply's length truncates it with finish_reason "length"."""
    with trio.fail_after(TIMEOUT):
        async with mock_client() as (_, client):
            cut = (await post(client, "hello", max_tokens=3)).json()
            whole = (await post(client, "hello", max_completion_tokens=1000)).json()
            bad = await post(client, "hello", max_tokens=0)
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["choices"][0]["message"]["content"] == mock_reply("hello")[:12]
    assert cut["usage"]["completion_tokens"] == 3
    assert whole["choices"][0]["finish_reason"] == "stop"
    assert whole["choices"][0]["message"]["content"] == mock_reply("hello")
    assert bad.status_code == 400


async def test_streaming_sends_sse_chunks_usage_and_done() -> None:
    """ "stream": true answers with chat.completion.chunk events, a usage chunk, then [DONE]."""
    with trio.fail_after(TIMEOUT):
        async with mock_client() as (_, client):
            response = await post(
                client, "stream me", stream=True, stream_options={"include_usage": True}
            )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == mock_reply("stream me")
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == count_tokens(text)
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_streaming_without_include_usage_has_no_usage() -> None:
    """Without stream_options.include_usage no chunk carries usage."""
    with trio.fail_after(TIMEOUT):
        async with mock_client() as (_, client):
            response = await post(client, "stream me", stream=True, max_tokens=2)
    events = sse_events(response.text)
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]"
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_streaming_paces_tokens_with_latency_per_token() -> None:
    """latency_per_token is spent across the streamed chunks."""
    config = MockServerConfig(latency=0.02, latency_per_token=0.005)
    with trio.fail_after(TIMEOUT):
        async with mock_client(config) as (_, client):
            start = trio.current_time()
            response = await post(client, "pace me", stream=True, max_tokens=8)
            elapsed = trio.current_time() - start
    assert sse_events(response.text)[-1] == "[DONE]"
    assert elapsed >= 0.02 + 8 * 0.005


async def test_latency_is_added_and_seeded() -> None:
    """latency delays the response; lognormal draws repeat for the same seed."""
    config = MockServerConfig(latency=0.03, latency_per_token=0.001)
    with trio.fail_after(TIMEOUT):
        async with mock_client(config) as (_, client):
            start = trio.current_time()
            await post(client, "slow", max_tokens=10)
            elapsed = trio.current_time() - start
    assert elapsed >= 0.03 + 10 * 0.001
    lognormal = MockServerConfig(latency=1.0, latency_sigma=0.5, seed=3)
    apps = [MockApp(lognormal), MockApp(lognormal)]
    draws = [[app._draw_latency() for _ in range(3)] for app in apps]
    assert draws[0] == draws[1]
    assert len(set(draws[0])) == 3


# -- auth and limits -------------------------------------------------------------------------


async def test_missing_or_unknown_key_gets_401() -> None:
    """A missing or unknown key gets 401 invalid_api_key; a listed key is served."""
    config = MockServerConfig(keys=(KEY,))
    with trio.fail_after(TIMEOUT):
        async with mock_client(config, key=None) as (server, client):
            missing = await post(client, "hi")
            unknown = await client.post(
                "/chat/completions", json=chat("hi"), headers={"authorization": "Bearer sk-no"}
            )
            known = await client.post(
                "/chat/completions", json=chat("hi"), headers={"authorization": f"Bearer {KEY}"}
            )
            stats = await server.stats()
    assert missing.status_code == unknown.status_code == 401
    assert missing.json()["error"]["code"] == unknown.json()["error"]["code"] == "invalid_api_key"
    assert known.status_code == 200
    assert stats.by_status == {401: 2, 200: 1}


async def test_quota_exhausted_key_gets_insufficient_quota() -> None:
    """A quota-exhausted key gets 429 insufficient_quota with no retry-after."""
    config = MockServerConfig(quota_exhausted_keys=(KEY,))
    with trio.fail_after(TIMEOUT):
        async with mock_client(config) as (_, client):
            response = await post(client, "hi")
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "insufficient_quota"
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert "retry-after" not in response.headers


async def test_rpm_limit_gives_429_with_retry_after_and_headers() -> None:
    """Past the RPM bucket a request gets 429 rate_limit_exceeded with retry-after headers."""
    config = MockServerConfig(rpm=60)  # 1 request/s, capacity 1
    with trio.fail_after(TIMEOUT):
        async with mock_client(config) as (_, client):
            ok = await post(client, "one")
            limited = await post(client, "two")
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit-requests"] == "60"
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    assert ok.headers["x-ratelimit-reset-requests"] == "1s"
    assert "x-ratelimit-limit-tokens" not in ok.headers  # no TPM limit configured
    assert limited.status_code == 429
    assert limited.json() == {
        "error": {
            "message": limited.json()["error"]["message"],
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert limited.headers["retry-after"] == "1"
    assert 900 < int(limited.headers["retry-after-ms"]) <= 1000
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.headers["x-ratelimit-reset-requests"].endswith("ms")
    assert "x-request-id" in limited.headers


async def test_rpm_limit_admits_again_after_retry_after_ms() -> None:
    """Waiting retry-after-ms after a 429 is enough to be admitted."""
    # Capacity 1, refilled in 0.5 s: slow enough that the second request is limited even on a
    # loaded machine, fast enough to keep the test short (it runs on the real clock).
    config = MockServerConfig(rpm=120, burst_s=0.5)
    with trio.fail_after(TIMEOUT):
        async with mock_client(config) as (_, client):
            statuses = [(await post(client, "a")).status_code]
            limited = await post(client, "b")
            await trio.sleep(int(limited.headers["retry-after-ms"]) / 1000)
            statuses += [limited.status_code, (await post(client, "b")).status_code]
    assert statuses == [200, 429, 200]


async def test_tpm_limit_charges_prompt_plus_max_tokens_and_refunds() -> None:
    """TPM charges prompt + max_tokens, admits oversize when full, refunds, 429s in debt."""
    config = MockServerConfig(tpm=600)  # 10 tokens/s, capacity 10
    prompt = "x" * 8  # 2 tokens + 3 per message
    with trio.fail_after(TIMEOUT):
        async with mock_client(config) as (server, client):
            big = await post(client, prompt, max_tokens=100)  # costs 105 > capacity 10
            limited = await post(client, prompt, max_tokens=1)
            stats = await server.stats()
    completion = count_tokens(mock_reply(prompt))
    assert big.status_code == 200
    assert big.headers["x-ratelimit-limit-tokens"] == "600"
    assert big.headers["x-ratelimit-remaining-tokens"] == "0"
    assert big.headers["x-ratelimit-reset-tokens"] == format_reset((10 + 95) / 10)
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "tokens"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    # After the refund the debt is the real usage: total_tokens - 10 of capacity.
    wait_s = (5 + completion - 10 + 6) / 10  # pay the debt, then 6 tokens for the next one
    assert int(limited.headers["retry-after-ms"]) == pytest.approx(wait_s * 1000, abs=50)
    assert stats.tokens_charged == 5 + completion


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "1ms"),
        (0.12, "120ms"),
        (0.999, "999ms"),
        (1, "1s"),
        (1.1, "1.1s"),
        (1.5, "1.5s"),
        (59.25, "59.25s"),
        (360, "6m0s"),
        (3723, "1h2m3s"),
        (-1, "0s"),
    ],
)
def test_format_reset_formats_like_go_durations(seconds: float, text: str) -> None:
    """format_reset renders durations as OpenAI's reset headers do."""
    assert format_reset(seconds) == text


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "check"),
    [
        ("500", 500, lambda r: r.json()["error"]["type"] == "server_error"),
        ("503", 503, lambda r: r.headers["x-should-retry"] == "true"),
        ("529", 529, lambda r: r.json()["error"]["type"] == "overloaded_error"),
        ("context_length", 400, lambda r: r.json()["error"]["code"] == "context_length_exceeded"),
        ("vllm_error", 500, lambda r: r.json()["object"] == "error" and r.json()["code"] == 500),
        ("html_502", 502, lambda r: r.headers["content-type"] == "text/html"),
    ],
)
async def test_error_faults_answer_with_their_status(kind: str, status: int, check: Any) -> None:
    """Each error fault kind answers with its status and body shape."""
    with trio.fail_after(TIMEOUT):
        async with mock_client() as (server, client):
            response = await post(client, f"hi [[fault:{kind}]]")
            stats = await server.stats()
    assert response.status_code == status
    assert check(response)
    assert stats.faults == {kind: 1}
    assert stats.tokens_charged == 0  # a fault costs no tokens


async def test_malformed_fault_is_a_200_with_invalid_json() -> None:
    """The malformed fault sends a 200 whose body is truncated JSON."""
    with trio.fail_after(TIMEOUT):
        async with mock_client() as (_, client):
            response = await post(client, "[[fault:malformed]]")
            streamed = await post(client, "[[fault:malformed]]", stream=True)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert streamed.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(sse_events(streamed.text)[0])


@pytest.mark.parametrize("stream", [False, True])
async def test_drop_fault_breaks_the_connection_mid_body(stream: bool) -> None:
    """The drop fault sends headers and part of the body, then closes the connection."""
    with trio.fail_after(TIMEOUT):
        async with mock_client() as (_, client):
            with pytest.raises(httpx.RemoteProtocolError):
                await post(client, "[[fault:drop]]", stream=stream)
            after = await post(client, "fine")  # the client recovers on a new connection
    assert after.status_code == 200


async def test_hang_fault_never_answers_until_the_client_leaves() -> None:
    """The hang fault sends nothing; the request ends when the client disconnects."""
    with trio.fail_after(TIMEOUT):
        async with mock_client(read_timeout=0.2) as (server, client):
            with pytest.raises(httpx.ReadTimeout):
                await post(client, "[[fault:hang]]")
            # The server notices the disconnect shortly after the client's timeout.
            for _ in range(200):
                stats = await server.stats()
                if stats.in_flight == 0:
                    break
                await trio.sleep(0.01)
    assert stats.in_flight == 0
    assert stats.faults == {"hang": 1}
    assert stats.by_status == {}


async def test_fault_directive_with_count_then_succeeds() -> None:
    """[[fault:KIND*N]] faults the first N times the prompt is seen, then succeeds."""
    prompt = "retry me [[fault:503*2]]"
    with trio.fail_after(TIMEOUT):
        async with mock_client() as (_, client):
            statuses = [(await post(client, prompt)).status_code for _ in range(4)]
            unknown = await post(client, "[[fault:teapot]]")
    assert statuses == [503, 503, 200, 200]
    assert unknown.status_code == 400
    assert "500" in unknown.json()["error"]["message"]


async def test_fault_retry_after_is_sent_on_5xx_when_configured() -> None:
    """fault_retry_after adds retry-after to 500/503/529 faults."""
    config = MockServerConfig(fault_retry_after=2)
    with trio.fail_after(TIMEOUT):
        async with mock_client(config) as (_, client):
            response = await post(client, "[[fault:529]]")
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "2000"
    assert response.headers["x-should-retry"] == "true"


async def _outcomes(config: MockServerConfig, prompts: list[str]) -> dict[str, list[int]]:
    """Send each prompt three times (sequential rounds) in the given order; record statuses."""
    outcomes: dict[str, list[int]] = {p: [] for p in prompts}
    async with mock_client(config) as (_, client):
        for _ in range(3):
            for prompt in prompts:
                outcomes[prompt].append((await post(client, prompt)).status_code)
    return outcomes


async def test_random_faults_are_seeded_and_independent_of_order() -> None:
    """Random faults follow (seed, prompt, attempt), not arrival order; a retry can succeed."""
    config = MockServerConfig(error_rate=0.5, seed=7, fault_mix={"500": 1, "503": 1})
    prompts = [f"prompt {i}" for i in range(30)]
    with trio.fail_after(TIMEOUT):
        forward = await _outcomes(config, prompts)
        backward = await _outcomes(config, prompts[::-1])
        reseeded = await _outcomes(attrs.evolve(config, seed=8), prompts)
    assert forward == backward
    assert forward != reseeded
    statuses = [s for attempts in forward.values() for s in attempts]
    assert set(statuses) == {200, 500, 503}
    assert 0.3 < statuses.count(200) / len(statuses) < 0.7
    # Each attempt is a fresh draw: some prompt fails first and succeeds on a retry.
    assert any(a[0] != 200 and 200 in a[1:] for a in forward.values())


def test_config_rejects_bad_values_with_hints() -> None:
    """MockServerConfig validates its fields and names the valid fault kinds."""
    with pytest.raises(ValueError, match="HINT"):
        MockServerConfig(fault_mix={"teapot": 1})
    with pytest.raises(ValueError, match="error_rate"):
        MockServerConfig(error_rate=0.1, fault_mix={})
    with pytest.raises(ValueError, match="error_rate"):
        MockServerConfig(error_rate=1.5)
    with pytest.raises(ValueError, match="rpm"):
        MockServerConfig(rpm=0)
    assert MockServerConfig(keys="a,b").keys == ("a", "b")
    assert set(FAULT_KINDS) >= {"500", "503", "529", "drop", "hang", "malformed"}


def test_config_round_trips_through_json() -> None:
    """A config survives to_json/from_json (how a child process receives it)."""
    config = MockServerConfig(
        keys=("a", "b"), rpm=10, fault_mix={"hang": 1, "500": 2}, error_rate=0.1
    )
    assert MockServerConfig.from_json(config.to_json()) == config


# -- stats -----------------------------------------------------------------------------------


async def test_stats_count_statuses_keys_tokens_and_duplicates() -> None:
    """/stats counts statuses, key fingerprints, tokens, in-flight peak and duplicate 200s."""
    config = MockServerConfig(latency=0.1)
    ids: set[str] = set()

    async def post_one(client: httpx.AsyncClient, prompt: str) -> None:
        ids.add((await post(client, prompt)).json()["id"])

    with trio.fail_after(TIMEOUT):
        async with mock_client(config) as (server, client):
            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(post_one, client, f"concurrent {i}")
            await post(client, "concurrent 0")  # a second success for the same prompt
            await post(client, "[[fault:500]]")
            root = server.base_url.removesuffix("/v1")
            over_http = MockStats.from_json((await client.get(f"{root}/stats")).content)
            stats = await server.stats()
            reset = await client.post(f"{root}/stats/reset")
            after = await server.stats()
    assert len(ids) == 5  # concurrent responses keep their own ids
    assert stats == over_http
    assert stats.total_requests == 7
    assert stats.by_status == {200: 6, 500: 1}
    assert stats.by_key == {"sk-…a1b2": 7}
    assert KEY not in stats.to_json()
    assert stats.successes == 6
    assert stats.duplicate_successes == 1
    assert stats.max_in_flight == 5
    expected_tokens = sum(
        count_tokens(p) + 3 + count_tokens(mock_reply(p))
        for p in [*(f"concurrent {i}" for i in range(5)), "concurrent 0"]
    )
    assert stats.tokens_charged == expected_tokens
    assert reset.status_code == 200
    assert after == MockStats()


async def test_models_and_unknown_routes() -> None:
    """GET /v1/models lists the model; unknown routes get 404 and bad JSON gets 400."""
    with trio.fail_after(TIMEOUT):
        async with mock_client(MockServerConfig(model="my-model")) as (_, client):
            models = await client.get("/models")
            missing = await client.get("/nope")
            bad_json = await client.post("/chat/completions", content=b"{not json")
            no_messages = await client.post("/chat/completions", json={"model": "m"})
    assert [m["id"] for m in models.json()["data"]] == ["my-model"]
    assert missing.status_code == 404
    assert bad_json.status_code == no_messages.status_code == 400
    assert bad_json.json()["error"]["type"] == "invalid_request_error"


# -- running it ------------------------------------------------------------------------------


async def test_serve_mock_stops_and_reraises_the_body_exception() -> None:
    """serve_mock shuts down when its block raises and re-raises the block's own exception."""
    ports: list[int] = []

    async def serve_and_fail() -> None:
        async with serve_mock() as server:
            ports.append(server.port)
            raise KeyError("boom")

    with trio.fail_after(TIMEOUT):
        with pytest.raises(KeyError, match="boom"):
            await serve_and_fail()
        with pytest.raises(OSError, match="connect"):
            await trio.open_tcp_stream("127.0.0.1", ports[0])


async def test_serve_mock_stops_when_cancelled() -> None:
    """serve_mock shuts down cleanly when its block is cancelled."""
    with trio.fail_after(TIMEOUT):
        with trio.move_on_after(0.05) as scope:
            async with serve_mock() as server:
                assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
                await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_app_runs_without_a_socket() -> None:
    """MockApp serves through httpx.ASGITransport, with no socket."""
    transport = httpx.ASGITransport(app=MockApp())
    headers = {"authorization": f"Bearer {KEY}"}
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(
            transport=transport, base_url="http://mock/v1", headers=headers
        ) as client:
            response = await post(client, "1 + 1")
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"answer": 2}


def _servers() -> list[str]:
    servers = ["hypercorn"]
    try:
        import httptools  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        pass
    else:
        servers.append("uvicorn")
    return servers


@pytest.mark.parametrize("server", _servers())
def test_mock_server_process_serves_and_stops(server: str) -> None:
    """MockServerProcess starts the server in a child process and stops it on exit."""
    config = MockServerConfig(keys=(KEY,), rpm=6000)
    with MockServerProcess(config, server=server) as proc:  # type: ignore[arg-type]
        assert proc.server == server
        headers = {"authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=proc.base_url, headers=headers, timeout=TIMEOUT) as client:
            response = client.post("/chat/completions", json=chat("6 x 7"))
            with pytest.raises(httpx.RemoteProtocolError):
                client.post("/chat/completions", json=chat("[[fault:drop]]"))
        assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"answer": 42}
        assert response.headers["x-ratelimit-limit-requests"] == "6000"
        assert proc.stats().by_status == {200: 2}
        process = proc._process
    assert process is not None
    assert process.returncode == 0


@pytest.mark.parametrize("server", _servers())
def test_cli_prints_its_url_and_exits_cleanly_on_sigterm(server: str) -> None:
    """`python -m trio_llm.testing --port 0` prints its URL, serves, and exits 0 on SIGTERM."""
    command = [sys.executable, "-m", "trio_llm.testing", "--port", "0", "--server", server,
               "--keys", "a,b", "--rpm", "120", "--error-rate", "0"]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:  # noqa: S603
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        base_url = line.removeprefix("listening on ").strip()
        response = httpx.post(
            f"{base_url}/chat/completions", json=chat("hi"), headers={"authorization": "Bearer c"}
        )
        child.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert child.wait(TIMEOUT) == 0
        assert time.monotonic() - started < TIMEOUT
    assert response.status_code == 401


def test_uvicorn_listens_with_room_for_ten_thousand_connects() -> None:
    """The mock on uvicorn listens on enough sockets of one port for a 10,000-client connect
    storm (each socket's accept queue is capped at somaxconn), and each one accepts."""
    import math
    import socket

    from trio_llm.testing._mock_main import _listening_sockets, _somaxconn
    from trio_llm.testing._mock_serve import LISTEN_BACKLOG

    sockets = _listening_sockets("127.0.0.1", 0)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1
        port = ports.pop()
        assert len(sockets) * _somaxconn() >= min(LISTEN_BACKLOG, 8 * _somaxconn())
        assert len(sockets) == min(8, math.ceil(LISTEN_BACKLOG / _somaxconn()))
        for sock in sockets:
            sock.listen(LISTEN_BACKLOG)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        for sock in sockets:
            sock.settimeout(0)
        accepted = 0
        for sock in sockets:
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                conn.close()
                accepted += 1
        assert accepted == 32
        for client in clients:
            client.close()
    finally:
        for sock in sockets:
            sock.close()


def test_mock_keeps_idle_connections_a_minute_or_more() -> None:
    """hypercorn (in-process and in its own process) keeps idle connections >= 60 s and lets
    10,000 connects wait; uvicorn gets the same numbers in ``_run_uvicorn``."""
    from trio_llm.testing._mock_serve import KEEP_ALIVE_S, LISTEN_BACKLOG, hypercorn_config

    config = hypercorn_config("127.0.0.1", 0)
    assert config.keep_alive_timeout == KEEP_ALIVE_S >= 60
    assert config.backlog == LISTEN_BACKLOG >= 10_000
