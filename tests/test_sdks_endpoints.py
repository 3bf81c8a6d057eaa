"""The official openai and anthropic SDKs (non-streaming) parse the mock server's embeddings,
tool calls, structured answers and Anthropic messages (issue 11); Azure's deployment paths.

The SDKs are synchronous here, called from a thread while the mock serves on 127.0.0.1 in the
test's trio run (real clock: real sockets).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import openai
import pydantic
import trio

from trio_llm.testing import MockServerConfig, mock_reply, serve_mock
from trio_llm.testing._mock_embeddings import embedding_of

T = TypeVar("T")
TIMEOUT = 30
PROMPT = "What is 6 * 7?"
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


async def with_sdk(config: MockServerConfig, call: Callable[[str], T]) -> T:
    """``call(base_url)`` in a thread while the mock serves."""
    with trio.fail_after(TIMEOUT):
        async with serve_mock(config) as server:
            return await trio.to_thread.run_sync(call, server.base_url)


def openai_client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)


async def test_openai_sdk_chat_and_embeddings() -> None:
    """client.chat.completions.create and client.embeddings.create parse the mock's answers."""

    def call(base_url: str) -> tuple[Any, Any]:
        with openai_client(base_url) as client:
            chat = client.chat.completions.create(
                model="mock-gpt", messages=[{"role": "user", "content": PROMPT}]
            )
            vectors = client.embeddings.create(
                model="text-embedding-3-small", input=["one", "two"], dimensions=12
            )
        return chat, vectors

    chat, vectors = await with_sdk(MockServerConfig(), call)
    assert chat.choices[0].message.content == mock_reply(PROMPT)
    assert [d.index for d in vectors.data] == [0, 1]
    assert vectors.data[1].embedding == embedding_of("two", 12)
    assert vectors.usage.prompt_tokens == 2
    assert vectors.model == "text-embedding-3-small"


async def test_openai_sdk_tool_calls_and_parse() -> None:
    """The SDK reads the mock's tool call, and its parse() helper validates a structured
    answer for a pydantic model."""

    class Weather(pydantic.BaseModel):
        city: str
        days: int

    def call(base_url: str) -> tuple[Any, Any]:
        with openai_client(base_url) as client:
            tools = client.chat.completions.create(
                model="mock-gpt", messages=[{"role": "user", "content": "weather?"}], tools=[TOOL]
            )
            parsed = client.chat.completions.parse(
                model="mock-gpt",
                messages=[{"role": "user", "content": "weather?"}],
                response_format=Weather,
            )
        return tools, parsed

    tools, parsed = await with_sdk(MockServerConfig(), call)
    choice = tools.choices[0]
    assert choice.finish_reason == "tool_calls"
    [tool_call] = choice.message.tool_calls
    assert tool_call.function.name == "get_weather"
    assert set(json.loads(tool_call.function.arguments)) == {"city", "days"}
    weather = parsed.choices[0].message.parsed
    assert isinstance(weather, Weather)
    assert isinstance(weather.days, int)


async def test_anthropic_sdk_messages_and_tool_use() -> None:
    """client.messages.create parses the mock's text answer and its tool_use answer."""

    def call(base_url: str) -> tuple[Any, Any]:
        with anthropic.Anthropic(
            base_url=base_url.removesuffix("/v1"), api_key="sk-ant-test", max_retries=0
        ) as client:
            text = client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=64,
                messages=[{"role": "user", "content": PROMPT}],
            )
            tool = client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=64,
                messages=[{"role": "user", "content": "weather?"}],
                tools=[
                    {
                        "name": "get_weather",
                        "input_schema": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    }
                ],
            )
        return text, tool

    text, tool = await with_sdk(MockServerConfig(), call)
    assert text.content[0].text == mock_reply(PROMPT)
    assert text.stop_reason == "end_turn"
    assert text.usage.input_tokens > 0
    assert tool.stop_reason == "tool_use"
    [block] = tool.content
    assert block.type == "tool_use"
    assert block.name == "get_weather"
    assert set(block.input) == {"city"}
