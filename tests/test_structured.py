"""Tool calls, finish reasons and structured output (issue 11): data on the Result, answers
checked against their schema on the way back."""

from __future__ import annotations

import json
from typing import Any

import attrs
import httpx
import pydantic
import pytest
import trio
from _fakes import make_engine

import trio_llm
from trio_llm import ErrorKind, Limits, RetryPolicy
from trio_llm._models import ToolCall
from trio_llm.testing import MockServerConfig, serve_mock

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


class Answer(pydantic.BaseModel):
    """What the model must answer."""

    city: str
    temperature: int
    sunny: bool


@attrs.frozen
class AttrsAnswer:
    """The same, as an attrs class."""

    city: str
    temperature: int
    sunny: bool


def chat_answer(content: str | None, finish: str = "stop", **message: Any) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "choices": [
                {"index": 0, "finish_reason": finish,
                 "message": {"role": "assistant", "content": content, **message}}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5},
        },
    )  # fmt: skip


async def test_tool_calls_and_finish_reason_are_on_the_result() -> None:
    """The mock's tool call comes back as ToolCall data with finish_reason tool_calls; after
    the tool's result the model answers in text."""
    with trio.fail_after(20):
        async with serve_mock(MockServerConfig()) as server:
            engine = trio_llm.Engine(
                provider=trio_llm.OpenAICompatible(base_url=server.base_url),
                keys=["sk-test"],
                limits=Limits(rpm=6000, tpm=10**7),
            )
            ask = {"messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER_TOOL]}
            [called] = await engine.map([ask])
            assert called.ok, called.error
            assert called.finish_reason == "tool_calls"
            [call] = called.tool_calls
            assert call.name == "get_weather"
            arguments = json.loads(call.arguments)
            assert set(arguments) == {"city", "days"}
            assert isinstance(arguments["days"], int)
            follow = {
                "messages": [
                    *ask["messages"],
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": call.id, "type": "function",
                         "function": {"name": call.name, "arguments": call.arguments}}]},
                    {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
                ],
                "tools": [WEATHER_TOOL],
            }  # fmt: skip
            [answered] = await engine.map([follow])
    assert answered.ok
    assert answered.finish_reason == "stop"
    assert answered.tool_calls == ()
    assert answered.text


async def test_anthropic_tool_use_is_a_tool_call() -> None:
    """Anthropic's tool_use block is the same ToolCall; stop_reason tool_use is tool_calls."""
    tool = {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    with trio.fail_after(20):
        async with serve_mock(MockServerConfig()) as server:
            engine = trio_llm.Engine(
                provider=trio_llm.AnthropicMessages(base_url=server.base_url),
                keys=["sk-ant-test"],
                limits=Limits(rpm=6000, tpm=10**7),
            )
            [result] = await engine.map(
                [{"messages": [{"role": "user", "content": "weather?"}], "tools": [tool]}]
            )
    assert result.ok, result.error
    assert result.finish_reason == "tool_calls"
    [call] = result.tool_calls
    assert call.name == "get_weather"
    assert call.id.startswith("toolu_")
    assert set(json.loads(call.arguments)) == {"city"}


@pytest.mark.parametrize(
    ("finish", "message", "expected"),
    [
        ("stop", {}, "stop"),
        ("length", {}, "length"),
        ("content_filter", {}, "content_filter"),
        ("function_call", {"function_call": {"name": "f", "arguments": "{}"}}, "tool_calls"),
    ],
)
def test_openai_finish_reasons_are_normalised(
    finish: str, message: dict[str, Any], expected: str
) -> None:
    """OpenAI's finish reasons in the common words (the old function_call is a tool call)."""
    response = chat_answer("x", finish, **message)
    completion = trio_llm.OpenAICompatible().parse_response(200, {}, response.content)
    assert completion.finish_reason == expected
    if message:
        assert completion.tool_calls == (ToolCall(id="", name="f", arguments="{}"),)


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
     ("tool_use", "tool_calls"), ("refusal", "refusal"), ("pause_turn", "pause_turn")],
)  # fmt: skip
def test_anthropic_stop_reasons_are_normalised(stop: str, expected: str) -> None:
    """Anthropic's stop reasons in OpenAI's words; one we do not know passes through."""
    body = {"content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {}}
    completion = trio_llm.AnthropicMessages().parse_response(200, {}, json.dumps(body).encode())
    assert completion.finish_reason == expected


@pytest.mark.parametrize("schema", [Answer, AttrsAnswer, Answer.model_json_schema()])
async def test_a_schema_parses_the_answer(schema: Any) -> None:
    """map(schema=...) sends the schema, and Result.parsed is the validated answer."""
    with trio.fail_after(20):
        async with serve_mock(MockServerConfig()) as server:
            engine = trio_llm.Engine(
                provider=trio_llm.OpenAICompatible(base_url=server.base_url),
                keys=["sk-test"],
                limits=Limits(rpm=6000, tpm=10**7),
            )
            [result] = await engine.map(["the weather in Lyon?"], schema=schema)
    assert result.ok, result.error
    value = result.parsed
    if isinstance(schema, dict):
        assert set(value) == {"city", "temperature", "sunny"}
    else:
        assert isinstance(value, schema)
        assert isinstance(value.temperature, int)
    assert json.loads(result.text or "")["city"] == (
        value["city"] if isinstance(value, dict) else value.city
    )


async def test_an_invalid_answer_is_asked_again_apart_from_the_attempts(
    autojump_clock: Any,
) -> None:
    """Answers that do not validate are asked again (not counted against attempts=1), then
    fail as invalid_output saying what is wrong."""
    sent: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return chat_answer('{"city": "Lyon", "temperature": "warm", "sunny": true}')

    retry = RetryPolicy(attempts=1, invalid_output_attempts=3)
    [result] = await make_engine(handler, retry=retry).map(["weather?"], schema=Answer)
    assert not result.ok
    assert result.error is not None
    assert result.error.kind is ErrorKind.INVALID_OUTPUT
    assert "temperature" in result.error.message
    assert result.attempts == 3
    assert sent[0]["response_format"]["type"] == "json_schema"
    assert sent[0]["response_format"]["json_schema"]["name"] == "Answer"


async def test_a_later_valid_answer_succeeds(autojump_clock: Any) -> None:
    """Not JSON once, then a valid answer: ok after two attempts, parsed."""
    answers = iter(['{"city": "Ly', '{"city": "Lyon", "temperature": 21, "sunny": true}'])

    async def handler(request: httpx.Request) -> httpx.Response:
        return chat_answer(next(answers))

    [result] = await make_engine(handler).map(["weather?"], schema=AttrsAnswer)
    assert result.ok, result.error
    assert result.attempts == 2
    assert result.parsed == AttrsAnswer(city="Lyon", temperature=21, sunny=True)


async def test_a_requests_own_response_format_is_checked() -> None:
    """A body's response_format json_schema is checked too: the mock's cut JSON once
    (invalid_json), then a valid answer."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    body = {
        "messages": [{"role": "user", "content": "[[fault:invalid_json*1]] a number"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    }
    with trio.fail_after(20):
        async with serve_mock(MockServerConfig()) as server:
            engine = trio_llm.Engine(
                provider=trio_llm.OpenAICompatible(base_url=server.base_url),
                keys=["sk-test"],
                limits=Limits(rpm=6000, tpm=10**7),
            )
            [result] = await engine.map([body])
            stats = await server.stats()
    assert result.ok, result.error
    assert result.attempts == 2
    assert isinstance(result.parsed["n"], int)
    assert stats.faults == {"invalid_json": 1}


def test_a_bad_schema_is_refused_with_a_hint() -> None:
    """A schema that is no class or dict is misuse, refused before anything is sent."""
    engine = trio_llm.Engine(provider=trio_llm.OpenAICompatible(), keys=["k"])
    with pytest.raises(trio_llm.ConfigurationError, match="pydantic model"):
        trio.run(lambda: engine.map(["x"], schema=42))
