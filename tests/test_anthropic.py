"""Anthropic's Messages API: request body, responses, errors and rate-limit headers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import trio_llm
from trio_llm import AnthropicMessages, ErrorKind, ProviderError, Request, Usage
from trio_llm._models import ToolCall

PROVIDER = AnthropicMessages(model="claude-haiku-4-5")


def _body(request: Request) -> dict[str, Any]:
    built = PROVIDER.build_request(request, "sk-ant-secret")
    assert built.url == "https://api.anthropic.com/v1/messages"
    assert built.headers["x-api-key"] == "sk-ant-secret"
    assert built.headers["anthropic-version"] == "2023-06-01"
    return dict(json.loads(built.content))


def test_system_messages_become_the_system_field() -> None:
    """System messages move to `system`; max_tokens gets a default; other fields pass."""
    body = _body(
        Request.from_messages(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            temperature=0.1,
        )
    )
    assert body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 1024,
        "temperature": 0.1,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
    }


def test_max_completion_tokens_is_max_tokens() -> None:
    """OpenAI's max_completion_tokens is sent as Anthropic's max_tokens."""
    body = _body(Request.from_prompt("x", max_completion_tokens=5))
    assert body["max_tokens"] == 5


def test_parses_text_blocks_and_usage() -> None:
    """Text blocks are joined; input/output tokens become usage."""
    completion = PROVIDER.parse_response(
        200,
        {"request-id": "req_1"},
        json.dumps(
            {
                "content": [
                    {"type": "text", "text": "Hello"},
                    {"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}},
                    {"type": "text", "text": " world"},
                ],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 10, "output_tokens": 2},
            }
        ).encode(),
    )
    assert completion.text == "Hello world"
    # Anthropic's stop reasons in OpenAI's words; tool_use blocks as tool calls.
    assert completion.finish_reason == "stop"
    assert completion.tool_calls == (ToolCall(id="t", name="f", arguments='{"x":1}'),)
    assert completion.usage == Usage(prompt_tokens=10, completion_tokens=2)
    assert completion.request_id == "req_1"


def test_overloaded_error_is_an_overload() -> None:
    """529 overloaded_error is retried as an overload, with its message."""
    with pytest.raises(ProviderError) as caught:
        PROVIDER.parse_response(
            529,
            {},
            b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
        )
    assert caught.value.kind is ErrorKind.OVERLOADED
    assert caught.value.message == "HTTP 529: Overloaded"


def test_malformed_body_is_malformed() -> None:
    """A 200 that is not a Messages response is MALFORMED."""
    with pytest.raises(ProviderError) as caught:
        PROVIDER.parse_response(200, {}, b'{"id": "x"}')
    assert caught.value.kind is ErrorKind.MALFORMED


async def test_engine_learns_limits_from_anthropic_headers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An engine on Anthropic reads anthropic-ratelimit-* headers into its key's limits."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 3, "output_tokens": 1},
            },
            headers={
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "49",
                "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:01Z",
                "anthropic-ratelimit-input-tokens-limit": "40000",
                "anthropic-ratelimit-input-tokens-remaining": "39990",
                "anthropic-ratelimit-input-tokens-reset": "2030-01-01T00:00:01Z",
            },
        )

    engine = trio_llm.Engine(
        provider=AnthropicMessages(base_url="http://anthropic.test/v1"),
        keys=["sk-ant-test-key-0001"],
        transport=httpx.MockTransport(handler),
    )
    [result] = await engine.map(["hi"])
    assert result.ok
    assert result.text == "ok"
    [key] = engine.statistics().keys
    assert key.rpm == 50
    assert key.tpm == 40000
