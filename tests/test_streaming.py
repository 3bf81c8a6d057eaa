"""Streamed answers ("stream": true) through the engine, on MockTransport and MockClock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_llm
from trio_llm._sse import ServerSentEvent, SSEDecoder

SSE = {"content-type": "text/event-stream"}
TEXT = ["The ", "answer ", "is ", "4."]


def chat_events(words: Sequence[str] = TEXT, *, usage: bool = True) -> list[bytes]:
    """A chat completion stream: role chunk, one chunk per word, finish, usage, [DONE]."""

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini",
            "choices": [] if delta is None else [{"index": 0, "delta": delta,
                                                   "finish_reason": finish}],
            **extra,
        }  # fmt: skip
        return f"data: {json.dumps(body)}\n\n".encode()

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": word}) for word in words]
    events.append(chunk({}, "stop"))
    if usage:
        events.append(
            chunk(None, usage={"prompt_tokens": 7, "completion_tokens": len(words),
                               "total_tokens": 7 + len(words)})
        )  # fmt: skip
    events.append(b"data: [DONE]\n\n")
    return events


def anthropic_events(words: Sequence[str] = TEXT) -> list[bytes]:
    """An Anthropic Messages stream, as the API sends it."""

    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
               "content": [], "stop_reason": None,
               "usage": {"input_tokens": 9, "output_tokens": 1}}  # fmt: skip
    events = [
        event("message_start", {"message": message}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        event("ping", {}),
    ]
    events += [
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}})
        for w in words
    ]
    events += [
        event("content_block_stop", {"index": 0}),
        event("message_delta", {"delta": {"stop_reason": "end_turn"},
                                "usage": {"output_tokens": len(words)}}),
        event("message_stop", {}),
    ]  # fmt: skip
    return events


OVERLOADED = (
    b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
    b'"message": "Overloaded"}}\n\n'
)


def streamed(
    events: Sequence[bytes], *, first_s: float = 0.0, between_s: float = 0.0, then: Any = None
) -> httpx.Response:
    """A 200 event stream: ``first_s`` before the first event, ``between_s`` between the
    others, and after them ``then``: an exception to raise, a number of seconds to stall,
    or nothing (the body ends)."""

    async def body() -> AsyncIterator[bytes]:
        for i, event in enumerate(events):
            await trio.sleep(first_s if i == 0 else between_s)
            yield event
        if isinstance(then, BaseException):
            raise then
        if isinstance(then, (int, float)):
            await trio.sleep(then)

    return httpx.Response(200, headers=SSE, content=body())


Handler = Callable[[httpx.Request], Any]


def engine_for(
    handler: Handler, provider: trio_llm.Provider | None = None, **kwargs: Any
) -> trio_llm.Engine:
    kwargs.setdefault("limits", trio_llm.Limits(rpm=600_000, tpm=10**9))
    kwargs.setdefault("retry", trio_llm.RetryPolicy(attempts=3, wait_initial=0.5))
    return trio_llm.Engine(
        provider=provider
        or trio_llm.OpenAICompatible(base_url="http://llm.test/v1", model="gpt-4o-mini"),
        keys=["sk-test-1"],
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


STREAM = {"messages": [{"role": "user", "content": "2+2?"}], "stream": True}


async def test_chat_stream_is_assembled_with_usage_and_ttft(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A streamed chat completion is one Result: the text of every chunk, the usage of the last
    chunk, the time to its first token and its output tokens per second."""
    bodies: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return streamed(chat_events(), first_s=0.3, between_s=0.1)

    [result] = await engine_for(handler).map([STREAM])
    assert result.ok, result.error
    assert result.text == "".join(TEXT)
    assert result.finish_reason == "stop"
    assert result.usage == trio_llm.Usage(prompt_tokens=7, completion_tokens=4)
    assert bodies[0]["stream"] is True
    assert bodies[0]["stream_options"] == {"include_usage": True}
    # The first chunk (role only, no text) comes at 0.3 s, the first word 0.1 s later.
    assert result.ttft_s == pytest.approx(0.4)
    # 4 words from 0.4 s to [DONE] at 1.0 s (three more words, finish, usage, [DONE]).
    assert result.output_tokens_per_s == pytest.approx(4 / 0.6)
    assert result.latency == pytest.approx(1.0)


async def test_a_whole_answer_has_no_stream_timing(autojump_clock: trio.testing.MockClock) -> None:
    """Without "stream" the Result has no time to first token."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={"choices": [{"message": {"content": "4"}, "finish_reason": "stop"}]},
        )

    [result] = await engine_for(handler).map(["2+2?"])
    assert result.ok
    assert result.ttft_s is None
    assert result.output_tokens_per_s is None


async def test_anthropic_stream_with_usage_from_message_delta(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A streamed Messages answer: text deltas joined, input usage from message_start and
    output usage from message_delta; the body is sent with "stream": true."""
    bodies: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return streamed(anthropic_events(), first_s=0.2, between_s=0.05)

    provider = trio_llm.AnthropicMessages(base_url="http://llm.test/v1", model="claude")
    [result] = await engine_for(handler, provider).map([STREAM])
    assert result.ok, result.error
    assert result.text == "".join(TEXT)
    assert result.finish_reason == "end_turn"
    assert result.usage == trio_llm.Usage(prompt_tokens=9, completion_tokens=4)
    assert bodies[0]["stream"] is True
    # message_start at 0.2, content_block_start and ping, then the first word: 0.35 s.
    assert result.ttft_s == pytest.approx(0.35)


async def test_overloaded_error_mid_stream_is_retried_not_half_a_text(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Anthropic's `event: error` (overloaded_error) after a 200 and two words is a retryable
    failure: the item is sent again and its Result has the whole second answer."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return streamed([*anthropic_events()[:5], OVERLOADED])
        return streamed(anthropic_events(["whole ", "answer"]))

    provider = trio_llm.AnthropicMessages(base_url="http://llm.test/v1", model="claude")
    [result] = await engine_for(handler, provider).map([STREAM])
    assert result.ok, result.error
    assert result.text == "whole answer"
    assert result.attempts == 2


async def test_error_events_fail_as_their_kind_after_the_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An error event that keeps coming fails the item as `overloaded` with the server's words,
    never as a success; an OpenAI `{"error": ...}` chunk without a type is a server error."""

    async def anthropic(request: httpx.Request) -> httpx.Response:
        return streamed([*anthropic_events()[:4], OVERLOADED])

    provider = trio_llm.AnthropicMessages(base_url="http://llm.test/v1", model="claude")
    [failed] = await engine_for(anthropic, provider).map([STREAM])
    assert not failed.ok
    assert failed.text is None
    assert failed.error is not None
    assert failed.error.kind is trio_llm.ErrorKind.OVERLOADED
    assert failed.error.status == 200
    assert "Overloaded" in failed.error.message
    assert failed.attempts == 3

    async def openai(request: httpx.Request) -> httpx.Response:
        error = b'data: {"error": {"message": "The model crashed"}}\n\n'
        return streamed([*chat_events()[:3], error])

    [failed] = await engine_for(openai).map([STREAM])
    assert failed.error is not None
    assert failed.error.kind is trio_llm.ErrorKind.SERVER_ERROR
    assert "The model crashed" in failed.error.message


async def test_idle_timeout_fails_a_stalled_stream_and_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stream that stops sending for idle_timeout seconds fails as a timeout at that moment
    (long before the attempt timeout) and is sent again."""
    calls: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(trio.current_time())
        if len(calls) == 1:
            return streamed(chat_events()[:3], between_s=1.0, then=1000.0)
        return streamed(chat_events())

    retry = trio_llm.RetryPolicy(attempts=3, wait_initial=0.5, wait_jitter=0.0)
    engine = engine_for(handler, idle_timeout=5.0, timeout=600.0, retry=retry)
    [result] = await engine.map([STREAM])
    assert result.ok, result.error
    assert result.text == "".join(TEXT)
    # Chunks at 0, 1 and 2 s; nothing more: the idle timeout fires at 7 s, the backoff 0.5 s.
    assert calls == [0.0, pytest.approx(7.5)]


async def test_idle_timeout_counts_the_wait_for_the_headers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that never answers a streamed request fails it at the idle timeout."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(10_000)
        raise AssertionError("unreachable")

    retry = trio_llm.RetryPolicy(attempts=1)
    [result] = await engine_for(handler, idle_timeout=3.0, retry=retry).map([STREAM])
    assert result.error is not None
    assert result.error.kind is trio_llm.ErrorKind.TIMEOUT
    assert "idle timeout" in result.error.message
    assert trio.current_time() == pytest.approx(3.0)


async def test_without_idle_timeout_the_attempt_timeout_still_bounds_a_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With no idle timeout, a stalled stream ends at the attempt's timeout."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return streamed(chat_events()[:2], then=10_000.0)

    retry = trio_llm.RetryPolicy(attempts=1)
    [result] = await engine_for(handler, timeout=30.0, retry=retry).map([STREAM])
    assert result.error is not None
    assert result.error.kind is trio_llm.ErrorKind.TIMEOUT
    assert trio.current_time() == pytest.approx(30.0)


def test_idle_timeout_must_be_positive() -> None:
    """idle_timeout=0 is misuse."""
    with pytest.raises(trio_llm.ConfigurationError, match="idle_timeout"):
        engine_for(lambda request: None, idle_timeout=0)


async def test_error_status_of_a_streamed_request_is_read_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 429 to a streamed request is the usual rate-limit failure (JSON body, headers)."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(
                429,
                json={"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
                headers={"retry-after": "2"},
            )
        return streamed(chat_events())

    [result] = await engine_for(handler).map([STREAM])
    assert result.ok
    assert result.attempts == 2
    assert trio.current_time() >= 2.0


async def test_a_server_that_ignores_stream_is_read_as_a_whole_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A JSON answer to a streamed request (a server without streaming) is still an answer."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"choices": [{"message": {"content": "4"}, "finish_reason": "stop"}]}
        )

    [result] = await engine_for(handler).map([STREAM])
    assert result.ok
    assert result.text == "4"


@settings(max_examples=60, deadline=None)
@given(
    cut=st.integers(min_value=0, max_value=len(chat_events())),
    byte=st.integers(min_value=0, max_value=200),
    how=st.sampled_from(["reset", "eof"]),
    anthropic=st.booleans(),
)
def test_a_stream_cut_anywhere_is_a_whole_result_or_a_retried_failure(
    cut: int, byte: int, how: str, anthropic: bool
) -> None:
    """Cut a stream after any chunk, at any byte of the next one, by a reset or a clean end:
    the item either succeeds with the whole text (the cut came after the last event) or is
    retried, and its Result never carries part of a text."""
    events = anthropic_events() if anthropic else chat_events()
    cut = min(cut, len(events))
    head = [*events[:cut]]
    if cut < len(events):
        head.append(events[cut][: byte % (len(events[cut]) + 1)])
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            then = httpx.ReadError("connection reset") if how == "reset" else None
            return streamed(head, between_s=0.01, then=then)
        return streamed(events)

    provider = (
        trio_llm.AnthropicMessages(base_url="http://llm.test/v1", model="claude")
        if anthropic
        else None
    )
    # One attempt only: what the cut stream alone gives.
    retry = trio_llm.RetryPolicy(attempts=1)
    engine = engine_for(handler, provider, retry=retry)
    [first] = trio.run(engine.map, [STREAM], clock=trio.testing.MockClock(autojump_threshold=0))
    # Whole: the last event came; for a chat stream, its finish and usage chunks are enough.
    whole = (events[-1] if anthropic else events[-2]) in b"".join(head)
    if first.ok:
        assert whole  # a success only when the stream's last event had arrived
        assert first.text == "".join(TEXT)
    else:
        assert first.text is None
        assert first.error is not None
        assert first.error.retryable
        assert not whole
    # With a second attempt the item always ends whole.
    calls = 0
    engine = engine_for(handler, provider, retry=trio_llm.RetryPolicy(attempts=2))
    [result] = trio.run(engine.map, [STREAM], clock=trio.testing.MockClock(autojump_threshold=0))
    assert result.ok, result.error
    assert result.text == "".join(TEXT)
    assert result.attempts == (1 if first.ok else 2)


@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["message", "delta", "error"]),
            st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30),
        ),
        max_size=6,
    ),
    splits=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_sse_decoder_gives_the_same_events_however_the_bytes_are_cut(
    events: list[tuple[str, str]], splits: list[int], newline: str
) -> None:
    """The event stream's bytes cut into chunks anywhere (inside UTF-8 characters, between
    \\r and \\n) decode to the events that were sent, and a cut-off last event is dropped."""
    nl = newline
    wire = "".join(
        f": keep-alive{nl}event: {name}{nl}data: {data}{nl}data: second{nl}{nl}"
        for name, data in events
    ).encode()
    wire += f"data: unfinished{nl}".encode()
    decoder = SSEDecoder()
    got: list[ServerSentEvent] = []
    points = sorted({min(s, len(wire)) for s in splits})
    for start, end in zip([0, *points], [*points, len(wire)], strict=True):
        got += decoder.feed(wire[start:end])
    decoder.close()
    assert got == [ServerSentEvent(event=name, data=f"{data}\nsecond") for name, data in events]
