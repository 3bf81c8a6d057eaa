"""The official openai and anthropic SDKs parse what the mock server sends, streamed or whole.

The SDKs are synchronous here, called from a thread while the mock serves on 127.0.0.1 in the
test's trio run (real clock: real sockets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import openai
import pytest
import trio

from trio_llm.testing import MockServerConfig, mock_reply, serve_mock

T = TypeVar("T")
TIMEOUT = 30
PROMPT = "What is 6 * 7?"


async def with_sdk(config: MockServerConfig, call: Callable[[str], T]) -> T:
    """``call(base_url)`` in a thread while the mock serves."""
    with trio.fail_after(TIMEOUT):
        async with serve_mock(config) as server:
            return await trio.to_thread.run_sync(call, server.base_url)


def openai_client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)


def anthropic_client(base_url: str) -> anthropic.Anthropic:
    # The SDK appends /v1/messages to its base URL.
    return anthropic.Anthropic(
        base_url=base_url.removesuffix("/v1"), api_key="sk-ant-test", max_retries=0
    )


async def test_openai_chat_completion_whole_and_streamed() -> None:
    """client.chat.completions.create parses the mock's answer, and its stream with usage."""

    def call(base_url: str) -> tuple[Any, str, Any]:
        with openai_client(base_url) as client:
            whole = client.chat.completions.create(
                model="mock-gpt", messages=[{"role": "user", "content": PROMPT}]
            )
            text, usage = "", None
            for chunk in client.chat.completions.create(
                model="mock-gpt",
                messages=[{"role": "user", "content": PROMPT}],
                stream=True,
                stream_options={"include_usage": True},
            ):
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                usage = chunk.usage or usage
        return whole, text, usage

    whole, text, usage = await with_sdk(MockServerConfig(latency_per_token=0.001), call)
    assert whole.choices[0].message.content == mock_reply(PROMPT)
    assert whole.usage is not None
    assert text == mock_reply(PROMPT)
    assert usage.completion_tokens == whole.usage.completion_tokens


async def test_openai_responses_whole_and_streamed() -> None:
    """client.responses.create parses the mock's response (output_text, usage) and its
    streamed events, ending in response.completed with the usage."""

    def call(base_url: str) -> tuple[Any, list[Any]]:
        with openai_client(base_url) as client:
            whole = client.responses.create(
                model="mock-gpt", input=PROMPT, instructions="Be brief."
            )
            events = list(client.responses.create(model="mock-gpt", input=PROMPT, stream=True))
        return whole, events

    whole, events = await with_sdk(MockServerConfig(latency_per_token=0.001), call)
    assert whole.output_text == mock_reply(PROMPT)
    assert whole.usage.output_tokens > 0
    assert whole.usage.input_tokens_details.cached_tokens == 0
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == mock_reply(PROMPT)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == mock_reply(PROMPT)
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens


async def test_anthropic_messages_whole_and_streamed() -> None:
    """client.messages.create parses the mock's message, and messages.stream its events
    into the same final message and usage."""

    def call(base_url: str) -> tuple[Any, str, Any]:
        messages: Any = [{"role": "user", "content": PROMPT}]
        with anthropic_client(base_url) as client:
            whole = client.messages.create(model="claude", max_tokens=100, messages=messages)
            with client.messages.stream(model="claude", max_tokens=100, messages=messages) as s:
                text = "".join(s.text_stream)
                final = s.get_final_message()
        return whole, text, final

    whole, text, final = await with_sdk(MockServerConfig(latency_per_token=0.001), call)
    assert whole.content[0].text == mock_reply(PROMPT)
    assert text == mock_reply(PROMPT)
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens


async def test_sdks_see_the_mid_stream_error_faults() -> None:
    """stream_error breaks each API's stream off with an error the SDK understands: an
    APIError for chat completions, Anthropic's overloaded_error, a response.failed event."""
    config = MockServerConfig(error_rate=1.0, fault_mix={"stream_error": 1.0})

    def call(base_url: str) -> tuple[str, str, Any]:
        with openai_client(base_url) as client, anthropic_client(base_url) as claude:
            with pytest.raises(openai.APIError) as chat:
                for _ in client.chat.completions.create(
                    model="mock-gpt", messages=[{"role": "user", "content": PROMPT}], stream=True
                ):
                    pass
            with (
                pytest.raises(anthropic.APIStatusError) as messages,
                claude.messages.stream(
                    model="claude", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
                ) as stream,
            ):
                stream.get_final_message()
            events = list(client.responses.create(model="mock-gpt", input=PROMPT, stream=True))
        return str(chat.value), str(messages.value), events[-1]

    chat, messages, last = await with_sdk(config, call)
    assert "server had an error" in chat
    assert "Overloaded" in messages
    assert last.type == "response.failed"
    assert last.response.error.code == "server_error"
