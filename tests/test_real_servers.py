"""What real servers send (LiteLLM, Azure, vLLM, Anthropic, Groq, OpenAI), replayed through the
parsers and the engine. Each shape and its source is quoted in ``tests/real_shapes.py``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import real_shapes as real
import trio
import trio.testing
from _fakes import completion, make_engine

import trio_llm
from trio_llm import ErrorKind, Limits, ModelPrice, PriceTable, RetryPolicy, Usage
from trio_llm._headers import parse_rate_limit_headers
from trio_llm._providers import error_from_response

ANTHROPIC = trio_llm.AnthropicMessages(base_url="http://llm.test/v1", model="claude-haiku-4-5")
OPENAI = trio_llm.OpenAICompatible(base_url="http://llm.test/v1", model="gpt-4o-mini")


def response(shape: real.RealShape) -> httpx.Response:
    """``shape`` as an httpx response."""
    body = shape.body
    content = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    return httpx.Response(shape.status, content=content, headers=dict(shape.headers))


def error_of(shape: real.RealShape) -> Any:
    """The ProviderError our parser makes of ``shape``."""
    body = shape.body
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return error_from_response(shape.status, dict(shape.headers), content)


# --- 1. learn first, then book the 429 -----------------------------------------------------


async def test_a_resume_into_a_used_up_key_does_not_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """rpm configured 200x too high and a first answer that is a 429 with headers (a key
    another process used up): the run goes at the server's 30/min at once, not after a
    stall of Retry-After x 200 (LiteLLM's fixed window shape, tests/real_shapes.py)."""
    window_open_at = 2.0
    sent: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        now = trio.current_time()
        sent.append(now)
        if now < window_open_at:
            return httpx.Response(
                429,
                json={"error": {"message": "limit"}},
                headers={
                    "x-ratelimit-limit-requests": "30",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": "2s",
                    "retry-after": f"{window_open_at - now:.3f}",
                },
            )
        return completion("ok")

    engine = make_engine(handler, limits=Limits(rpm=6000), concurrency=8)
    results = await engine.map([str(i) for i in range(6)])
    assert all(r.ok for r in results)
    # 30/min: one every 2 s after the window opens: about 12 s for 6, not ~400 s.
    assert trio.current_time() < 15


# --- 2. 429s that say nothing ----------------------------------------------------------------


async def test_headerless_429s_for_a_while_then_recovery_fail_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """LiteLLM's deployment limiter answers 429 with no header and no Retry-After
    (LITELLM_DEPLOYMENT_429) for 50 s, then recovers: no item fails, the run goes on."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if trio.current_time() < 50:
            return response(real.LITELLM_DEPLOYMENT_429)
        await trio.sleep(0.1)
        return completion("ok")

    engine = make_engine(handler, limits=Limits(rpm=600), concurrency=16)
    results = await engine.map([str(i) for i in range(100)])
    assert all(r.ok for r in results)
    # After recovery 100 requests at 600/min need ~10 s; the back-off must not cost minutes.
    assert trio.current_time() < 50 + 30


async def test_with_no_limits_429s_keep_an_item_alive_for_a_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With no limits known and a used-up minute window, items do not spend their 8 attempts
    in 8 s: their 429s span at least a minute, so they get through when the window turns."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if trio.current_time() < 55:
            return response(real.LITELLM_NO_DEPLOYMENTS_429)
        return completion("ok")

    engine = make_engine(handler, limits=Limits(), concurrency=8)
    results = await engine.map([str(i) for i in range(30)])
    assert all(r.ok for r in results)


def test_retry_after_in_words_is_honoured_when_no_header_says_it() -> None:
    """Azure's 429 without Retry-After says "Please retry after 3 seconds"; LiteLLM's router
    says "Try again in 60 seconds"; OpenAI's says "try again in 18.642s"."""
    assert error_of(real.AZURE_429).retry_after == 3.0
    assert error_of(real.LITELLM_NO_DEPLOYMENTS_429).retry_after == 60.0
    assert error_of(real.OPENAI_429_RATE_LIMIT).retry_after == pytest.approx(18.642)
    assert error_of(real.AZURE_429_RETRY_AFTER).retry_after == 45.0  # the header wins


# --- 3. other header dialects ----------------------------------------------------------------


def test_litellm_relayed_retry_after_and_limits_are_read() -> None:
    """LiteLLM passes the provider's Retry-After on as llm_provider-retry-after."""
    info = parse_rate_limit_headers(real.LITELLM_RELAYED_429.headers)
    assert info.retry_after_s == 7.0
    assert info.requests_limit == 3.0


def test_litellm_virtual_key_headers_are_read() -> None:
    """LiteLLM's per-key x-ratelimit-api_key-* family (no reset header) is read."""
    info = parse_rate_limit_headers(real.LITELLM_KEY_SUCCESS_HEADERS.headers)
    assert (info.requests_limit, info.requests_remaining) == (5.0, 4.0)
    assert (info.tokens_limit, info.tokens_remaining) == (100_000.0, 99_950.0)


def test_groq_per_day_requests_are_not_a_per_minute_limit() -> None:
    """Groq's x-ratelimit-limit-requests is per day (reset 2m59.56s): not learned as rpm."""
    info = parse_rate_limit_headers(real.GROQ_SUCCESS_HEADERS.headers)
    assert info.requests_limit is None
    assert info.tokens_limit == 18_000.0


def test_litellm_fixed_window_at_zero_waits_for_the_next_minute() -> None:
    """LiteLLM's calendar-minute window at 0 with no reset: wait for the next minute."""
    info = parse_rate_limit_headers(
        real.LITELLM_FIXED_WINDOW_SUCCESS_HEADERS.headers, now_wall=60 * 28_333_334 + 40.0
    )
    assert info.wait_s == pytest.approx(20.0)


async def test_a_groq_key_out_of_requests_for_the_day_is_not_hammered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 200 saying the day's requests are used up (remaining 0, reset in minutes) cools the
    key until then instead of sending into certain 429s."""
    sent: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(trio.current_time())
        headers = dict(real.GROQ_SUCCESS_HEADERS.headers)
        headers["x-ratelimit-remaining-requests"] = "0" if len(sent) == 1 else "100"
        return httpx.Response(
            200,
            json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]},
            headers=headers,
        )

    engine = make_engine(
        handler, concurrency=1, retry=RetryPolicy(max_retry_after=600.0), limits=Limits()
    )
    results = await engine.map(["a", "b"])
    assert all(r.ok for r in results)
    assert sent[1] == pytest.approx(179.56, abs=0.1)


# --- 4. a proxy that holds an over-limit request ---------------------------------------------


async def test_a_request_held_by_a_proxy_for_a_minute_is_not_paid_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """LiteLLM holds an over-limit request up to 60 s, then answers 200: with the default
    attempt timeout that is one request, not a timeout and a paid retry."""
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        await trio.sleep(real.LITELLM_HOLD_MAX_S + 5)
        return completion("ok")

    engine = trio_llm.Engine(
        provider=OPENAI,
        keys=["sk-test-key-0000000001"],
        transport=httpx.MockTransport(handler),
    )
    [result] = await engine.map(["x"])
    assert result.ok
    assert (result.attempts, sent) == (1, 1)


# --- 5. usage and cost -----------------------------------------------------------------------


def test_anthropic_cache_tokens_are_counted_and_priced() -> None:
    """Anthropic's input_tokens leaves out the cache's reads and writes: they are added in,
    and priced at the cache rates (reads a tenth, writes 1.25 x input)."""
    completion_ = ANTHROPIC.parse_response(
        200,
        {},
        json.dumps(
            {
                "content": [{"type": "text", "text": "hi"}],
                "stop_reason": "end_turn",
                "usage": real.ANTHROPIC_USAGE_WITH_CACHE,
            }
        ).encode(),
    )
    usage = completion_.usage
    assert usage == Usage(
        prompt_tokens=21 + 1800, completion_tokens=393, cached_tokens=0, cache_write_tokens=1800
    )
    price = PriceTable.default().price("claude-haiku-4-5")
    assert price is not None
    assert price.cost(usage) == pytest.approx((21 * 1.0 + 1800 * 1.25 + 393 * 5.0) / 1e6)


def test_openai_cached_and_reasoning_tokens_are_kept_and_priced() -> None:
    """OpenAI's prompt_tokens_details.cached_tokens are priced at the cached rate; reasoning
    tokens are kept on the usage (LiteLLM's prompt-caching usage shape)."""
    usage_data = dict(real.LITELLM_PROMPT_CACHING_USAGE)
    usage_data["completion_tokens_details"] = {"reasoning_tokens": 120}
    completion_ = OPENAI.parse_response(
        200,
        {},
        json.dumps(
            {
                "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                "usage": usage_data,
            }
        ).encode(),
    )
    usage = completion_.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.cached_tokens, usage.reasoning_tokens) == (2006, 1920, 120)
    price = ModelPrice(input_per_m=2.5, output_per_m=10.0, cached_input_per_m=1.25)
    assert price.cost(usage) == pytest.approx((86 * 2.5 + 1920 * 1.25 + 300 * 10.0) / 1e6)


# --- 6 - 8. refusals, context length, odd content ------------------------------------------


def test_a_refusal_is_refused_not_a_success() -> None:
    """content null + refusal (OpenAI's recorded shape) ends as `refused`, with its words."""
    with pytest.raises(trio_llm.ProviderError) as info:
        OPENAI.parse_response(200, {}, json.dumps(real.OPENAI_REFUSAL.body).encode())
    assert info.value.kind is ErrorKind.REFUSED
    assert "refused" in info.value.message


@pytest.mark.parametrize(
    "shape",
    [
        real.VLLM_CONTEXT_LENGTH_LEGACY,
        real.VLLM_CONTEXT_LENGTH,
        real.VLLM_CONTEXT_LENGTH_INPUT,
        real.ANTHROPIC_PROMPT_TOO_LONG,
        real.OPENAI_400_CONTEXT_LENGTH,
    ],
)
def test_context_length_errors_of_every_server_are_context_length(
    shape: real.RealShape,
) -> None:
    """vLLM's old and new shapes, Anthropic's "prompt is too long" and OpenAI's code all say
    context_length (what a fallback to a longer-context model decides on)."""
    assert error_of(shape).kind is ErrorKind.CONTEXT_LENGTH


def test_content_as_a_list_of_parts_is_joined() -> None:
    """A server answering content as a list of parts (Mistral's recorded shape) gives text."""
    completion_ = OPENAI.parse_response(
        200, {}, json.dumps(real.OPENAI_CONTENT_PARTS.body).encode()
    )
    assert completion_.text


async def test_empty_choices_fail_clearly_after_at_most_one_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Azure's `choices: []` (a filtered prompt) fails as malformed after one retry, not
    eight attempts."""
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        return response(real.AZURE_EMPTY_CHOICES)

    [result] = await make_engine(handler).map(["x"])
    assert result.error is not None
    assert result.error.kind is ErrorKind.MALFORMED
    assert sent == 2


# --- 9. key problems keep the server's words --------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "kind"),
    [
        (real.OPENAI_401_INVALID_API_KEY, ErrorKind.AUTH),
        (real.OPENAI_429_INSUFFICIENT_QUOTA, ErrorKind.QUOTA),
        (real.ANTHROPIC_CREDIT_BALANCE, ErrorKind.QUOTA),
        (real.LITELLM_UNKNOWN_KEY_400, ErrorKind.AUTH),
    ],
)
async def test_a_key_refused_for_itself_is_dropped_and_its_words_kept(
    autojump_clock: trio.testing.MockClock, shape: real.RealShape, kind: ErrorKind
) -> None:
    """A key refused for itself (401, insufficient_quota, Anthropic's credit balance,
    LiteLLM's unknown key) is dropped, not retried per item and not picked again; the good
    key answers everything; with every key bad, the items say why, in the server's words."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"].endswith("bad"):
            return response(shape)
        return completion("ok")

    engine = make_engine(handler, keys=["sk-key-0000000000-bad", "sk-key-000000000-good"])
    results = await engine.map([str(i) for i in range(20)])
    assert all(r.ok for r in results)
    assert [k.dropped is not None for k in engine.statistics().keys] == [True, False]

    only_bad = make_engine(handler, keys=["sk-key-0000000000-bad"])
    results = await only_bad.map([str(i) for i in range(5)])
    assert {r.error.kind for r in results if r.error} == {kind}
    message = error_of(shape).message
    assert all(message in r.error.message for r in results if r.error)
