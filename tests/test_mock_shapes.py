"""The mock server imitates what real servers send (issue 15), shape for shape.

Every test drives :class:`MockApp` through ``httpx.ASGITransport`` (no socket, so every test
runs on the ``autojump_clock`` and waits are exact virtual times) and compares what the mock sends
with a shape from ``tests/real_shapes.py``: the same keys and JSON types, the same fixed
strings, and messages worded the same with their numbers (and named variable parts) free.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import real_shapes as real
import trio
import trio.testing

from trio_llm.testing import MockApp, MockServerConfig, MockServerProcess, count_tokens, mock_reply
from trio_llm.testing._mock_main import _config_from_args, _parser

KEY = "sk-test-0000000000a1b2"
#: Unix time at virtual time 0: 20 s into a calendar minute (1_700_000_000 = 28,333,333 min + 20 s).
EPOCH = 1_700_000_000.0
RATE_LIMIT_PREFIXES = ("x-ratelimit", "anthropic-ratelimit", "llm_provider-x-ratelimit")


def wall_clock() -> float:
    """Unix time that follows trio's (virtual) clock."""
    return EPOCH + trio.current_time()


@asynccontextmanager
async def mock(
    config: MockServerConfig | None = None, *, auth: dict[str, str] | None = None
) -> AsyncIterator[tuple[MockApp, httpx.AsyncClient]]:
    """A client wired to a fresh MockApp with no socket."""
    app = MockApp(config, wall_clock=wall_clock)
    headers = {"authorization": f"Bearer {KEY}"} if auth is None else auth
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://mock/v1", headers=headers
    ) as client:
        yield app, client


def chat(prompt: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": prompt}], **extra}


async def post(client: httpx.AsyncClient, prompt: str = "hello", **extra: Any) -> httpx.Response:
    return await client.post("/chat/completions", json=chat(prompt, **extra))


async def post_messages(
    client: httpx.AsyncClient, prompt: str = "hello", **extra: Any
) -> httpx.Response:
    body = {"model": "claude-test", "max_tokens": 100, **extra}
    body["messages"] = [{"role": "user", "content": prompt}]
    return await client.post("/messages", json=body)


def skeleton(value: Any) -> Any:
    """The shape of a JSON value: keys and types, no values."""
    if isinstance(value, dict):
        return {key: skeleton(item) for key, item in value.items()}
    if isinstance(value, list):
        return [skeleton(item) for item in value]
    if value is None:
        return "null"
    return type(value).__name__


def wording(text: str, *variables: str) -> re.Pattern[str]:
    """A pattern for messages worded like *text*: numbers and the *variables* may differ."""
    pattern = re.escape(text)
    for variable in variables:
        pattern = pattern.replace(re.escape(variable), "(.+?)")
    # Numbers (with thousands separators and decimals) and Go durations differ per request.
    pattern = re.sub(r"\d(?:[\d,]|\\\.)*(?:ms|[hms])?", r"\\d[\\dhms,.]*", pattern)
    return re.compile(pattern + r"\Z")


def rate_limit_names(headers: httpx.Headers | dict[str, str]) -> set[str]:
    """The rate-limit header names (any dialect), lower case."""
    return {name.lower() for name in headers if name.lower().startswith(RATE_LIMIT_PREFIXES)}


def message_of(body: Any) -> str:
    error = body.get("error", body)
    return str(error["message"])


# -- rate-limit dialects -------------------------------------------------------------------------


async def test_headers_none_sends_no_rate_limit_header_and_litellms_deployment_429(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """headers="none": no rate-limit header, no Retry-After; LiteLLM's deployment-limiter 429."""
    config = MockServerConfig(rpm=60, headers="none")
    async with mock(config) as (app, client):
        ok = await post(client)
        limited = await post(client)
    assert ok.status_code == 200
    assert limited.status_code == 429
    for response in (ok, limited):
        assert rate_limit_names(response.headers) == set()
        assert "retry-after" not in response.headers
        assert "retry-after-ms" not in response.headers
    expected = real.LITELLM_DEPLOYMENT_429.body
    assert skeleton(limited.json()) == skeleton(expected)
    assert wording(message_of(expected)).match(message_of(limited.json()))
    assert limited.json()["error"]["message"].endswith("rpm limit=60. current usage=60")
    assert app.stats().by_status == {200: 1, 429: 1}


async def test_headers_litellm_bucket_sends_the_v3_key_family_and_its_429(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """headers="litellm": x-ratelimit-api_key-* on 200s; 429 with retry-after 60 and reset_at."""
    config = MockServerConfig(rpm=60, tpm=100_000, headers="litellm")
    async with mock(config) as (_, client):
        ok = await post(client)
        limited = await post(client)
    assert rate_limit_names(ok.headers) == set(real.LITELLM_KEY_SUCCESS_HEADERS.headers)
    assert ok.headers["x-ratelimit-api_key-limit-requests"] == "60"
    assert ok.headers["x-ratelimit-api_key-remaining-requests"] == "0"
    assert ok.headers["x-ratelimit-api_key-limit-tokens"] == "100000"
    assert limited.status_code == 429
    shape = real.LITELLM_KEY_LIMIT_429
    for name in ("retry-after", "rate_limit_type", "reset_at"):
        assert name in limited.headers
    assert limited.headers["retry-after"] == shape.headers["retry-after"] == "60"
    assert limited.headers["rate_limit_type"] == "requests"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", limited.headers["reset_at"])
    assert rate_limit_names(limited.headers) == set()
    assert skeleton(limited.json()) == skeleton(shape.body)
    assert wording(message_of(shape.body), "hashed-key-1a2b3c").match(message_of(limited.json()))


async def test_headers_litellm_minute_window_is_the_v1_limiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """LiteLLM v1 (window="minute"): bare limit/remaining, no reset; float Retry-After to :00."""
    config = MockServerConfig(rpm=2, headers="litellm", window="minute")
    async with mock(config) as (_, client):
        first = await post(client, "a")
        second = await post(client, "b")
        limited = await post(client, "c")
    shape = real.LITELLM_FIXED_WINDOW_SUCCESS_HEADERS
    assert rate_limit_names(first.headers) == {"x-ratelimit-limit-requests",
                                               "x-ratelimit-remaining-requests"}  # fmt: skip
    assert rate_limit_names(first.headers) <= set(shape.headers)
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.status_code == 429
    # Virtual time ~0 is 20 s into a minute: 40 s to the next one, as a float string.
    assert float(limited.headers["retry-after"]) == pytest.approx(40.0, abs=0.01)
    assert "." in limited.headers["retry-after"]
    expected = real.LITELLM_FIXED_WINDOW_429.body
    assert skeleton(limited.json()) == skeleton(expected)
    assert wording(message_of(expected)).match(message_of(limited.json()))


async def test_headers_litellm_relay_renames_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """headers="litellm_relay": a relayed 429 has Retry-After only as llm_provider-retry-after."""
    config = MockServerConfig(rpm=60, headers="litellm_relay")
    async with mock(config) as (_, client):
        await post(client)
        limited = await post(client)
    shape = real.LITELLM_RELAYED_429
    assert limited.status_code == 429
    assert "retry-after" not in limited.headers
    assert limited.headers["llm_provider-retry-after"] == "1"
    expected_names = {name for name in shape.headers if name != "content-type"}
    assert set(limited.headers) >= expected_names
    assert rate_limit_names(limited.headers) == rate_limit_names(shape.headers)
    assert skeleton(limited.json()) == skeleton(shape.body)
    assert wording(message_of(shape.body), "gpt-4o-mini", "org-abc").match(
        message_of(limited.json())
    )


async def test_headers_groq_reports_requests_per_day_and_tokens_per_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """headers="groq": the requests headers are per day, tokens per minute; Retry-After on 429."""
    config = MockServerConfig(rpm=60, rpd=14_400, tpm=18_000, headers="groq")
    async with mock(config) as (_, client):
        ok = await post(client)
        limited = await post(client)  # the (unreported) RPM limit refuses it
    shape = real.GROQ_SUCCESS_HEADERS
    assert rate_limit_names(ok.headers) == set(shape.headers)
    assert ok.headers["x-ratelimit-limit-requests"] == "14400"
    assert ok.headers["x-ratelimit-remaining-requests"] == "14399"
    assert ok.headers["x-ratelimit-reset-requests"] == "6s"  # one request of a day's 14,400
    assert ok.headers["x-ratelimit-limit-tokens"] == "18000"
    assert "retry-after" not in ok.headers
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert skeleton(limited.json()) == skeleton(real.GROQ_429.body)
    assert "param" not in limited.json()["error"]
    assert wording(message_of(real.GROQ_429.body), "gemma2-9b-it", "...", "tokens per minute",
                   "TPM").match(message_of(limited.json()))  # fmt: skip


async def test_groq_reset_is_a_go_duration_over_minutes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Groq's per-day reset reads like its docs' "2m59.56s" once more than a minute is spent."""
    config = MockServerConfig(rpd=14_400, headers="groq")
    async with mock(config) as (_, client):
        for i in range(30):
            response = await post(client, f"p{i}")
    reset = response.headers["x-ratelimit-reset-requests"]
    assert re.fullmatch(r"\d+m\d+(\.\d+)?s", reset)
    assert re.fullmatch(r"\d+m\d+(\.\d+)?s", real.GROQ_SUCCESS_HEADERS.headers[
        "x-ratelimit-reset-requests"])  # fmt: skip
    assert reset == "3m0s"


async def test_rpd_is_enforced_per_day(autojump_clock: trio.testing.MockClock) -> None:
    """rpd refuses past the day's requests, with the wait of a day's refill rate."""
    config = MockServerConfig(rpd=2)
    async with mock(config) as (_, client):
        statuses = [(await post(client, f"p{i}")).status_code for i in range(3)]
        limited = await post(client, "p3")
    assert statuses == [200, 200, 429]
    assert limited.json()["error"]["type"] == "requests"
    assert "requests per day (RPD)" in limited.json()["error"]["message"]
    assert int(limited.headers["retry-after"]) == pytest.approx(43_200, abs=2)


async def test_headers_anthropic_sends_all_four_families_with_rfc3339_resets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """headers="anthropic": anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*."""
    config = MockServerConfig(
        rpm=1000, tpm=96_000, itpm=80_000, otpm=16_000, headers="anthropic", burst_s=60
    )
    async with mock(config) as (_, client):
        ok = await post(client)
    shape = real.ANTHROPIC_SUCCESS_HEADERS
    assert rate_limit_names(ok.headers) == rate_limit_names(shape.headers)
    assert ok.headers["anthropic-ratelimit-requests-limit"] == "1000"
    assert ok.headers["anthropic-ratelimit-requests-remaining"] == "999"
    for name in rate_limit_names(ok.headers):
        if name.endswith("-reset"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ok.headers[name])
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", shape.headers[name])
    # The requests bucket is full again 60 ms after one request: the next whole second.
    assert ok.headers["anthropic-ratelimit-requests-reset"] == "2023-11-14T22:13:21Z"


async def test_anthropic_429_on_messages_has_retry_after_and_anthropics_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On /v1/messages the native dialect is Anthropic's: rate_limit_error and retry-after."""
    config = MockServerConfig(itpm=600)  # 10 input tokens of capacity
    async with mock(config, auth={"x-api-key": KEY}) as (_, client):
        big = await post_messages(client, "x" * 40)  # 13 tokens: admitted into a full bucket
        limited = await post_messages(client, "y")
    assert big.status_code == 200
    assert limited.status_code == 429
    assert limited.headers["retry-after"].isdigit()
    assert "anthropic-ratelimit-input-tokens-remaining" in limited.headers
    body = limited.json()
    assert skeleton(body["error"]) == skeleton(real.ANTHROPIC_429.body["error"])  # type: ignore[index]
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert body["request_id"] == limited.headers["request-id"]
    expected = message_of(real.ANTHROPIC_429.body)
    assert wording(expected, "0dccdde6-f924-4f1b-bb3b-92ef846e0a5b", "docs.anthropic.com").match(
        message_of(body)
    )


async def test_headers_azure_sends_remaining_only_and_retry_after_on_429(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """headers="azure": only x-ratelimit-remaining-*; a 429 has Retry-After and Azure's body."""
    config = MockServerConfig(rpm=30, tpm=100_000, headers="azure")
    async with mock(config, auth={real.AZURE_API_KEY_HEADER: KEY}) as (_, client):
        ok = await post(client)
        limited = await post(client)
    assert ok.status_code == 200
    assert rate_limit_names(ok.headers) == rate_limit_names(real.AZURE_SUCCESS_HEADERS.headers)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert rate_limit_names(limited.headers) == rate_limit_names(real.AZURE_429_RETRY_AFTER.headers)
    assert skeleton(limited.json()) == skeleton(real.AZURE_429.body)
    expected = message_of(real.AZURE_429.body)
    assert wording(expected, "token").match(message_of(limited.json()))
    assert "call rate limit" in message_of(limited.json())


@pytest.mark.parametrize("header", ["api-key", "x-api-key"])
async def test_azure_and_anthropic_key_headers_authenticate(
    autojump_clock: trio.testing.MockClock, header: str
) -> None:
    """A key in api-key (Azure) or x-api-key (Anthropic) is read like a Bearer token."""
    config = MockServerConfig(keys=(KEY,))
    async with mock(config, auth={header: KEY}) as (app, client):
        ok = await post(client)
    async with mock(config, auth={header: "sk-wrong-000000000000"}) as (_, client):
        refused = await post(client)
    assert ok.status_code == 200
    assert app.stats().by_key == {"sk-…a1b2": 1}
    assert refused.status_code == 401


# -- windows, holds, outages, exhausted keys -------------------------------------------------------


async def test_fixed_minute_window_has_no_reset_and_reopens_at_the_next_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """window="minute": remaining 0 and no reset header; the next calendar minute admits."""
    config = MockServerConfig(rpm=2, window="minute")
    async with mock(config) as (_, client):
        first = await post(client, "a")
        second = await post(client, "b")
        limited = await post(client, "c")
        await trio.sleep(float(limited.headers["retry-after-ms"]) / 1000)
        after = await post(client, "c")
    assert [r.status_code for r in (first, second, limited, after)] == [200, 200, 429, 200]
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    for response in (first, second, limited):
        assert "x-ratelimit-reset-requests" not in response.headers
    assert int(limited.headers["retry-after-ms"]) == 40_000
    assert trio.current_time() == pytest.approx(40.0)
    assert after.headers["x-ratelimit-remaining-requests"] == "1"


async def test_hold_answers_200_once_the_limit_allows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """hold_s: an over-limit request waits for capacity, then gets a 200 (counted as held)."""
    config = MockServerConfig(rpm=6, hold_s=60)
    async with mock(config) as (app, client):
        await post(client, "a")
        start = trio.current_time()
        held = await post(client, "b")
        waited = trio.current_time() - start
    assert held.status_code == 200
    assert waited == pytest.approx(10.0)
    stats = app.stats()
    assert stats.held == 1
    assert stats.by_status == {200: 2}


async def test_hold_gives_up_after_hold_s(autojump_clock: trio.testing.MockClock) -> None:
    """A request that still does not fit after hold_s gets its 429 then."""
    config = MockServerConfig(rpm=1, hold_s=5, headers="none")
    async with mock(config) as (app, client):
        await post(client, "a")
        start = trio.current_time()
        limited = await post(client, "b")
        waited = trio.current_time() - start
    assert limited.status_code == 429
    assert waited == pytest.approx(5.0)
    assert app.stats().held == 1


async def test_hold_until_the_next_minute_with_a_fixed_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A calendar-minute limit plus the proxy's hold: the client sees a slow 200 (LiteLLM)."""
    config = MockServerConfig(rpm=1, window="minute", hold_s=60, headers="litellm")
    async with mock(config) as (_, client):
        await post(client, "a")
        held = await post(client, "b")
    assert held.status_code == 200
    assert trio.current_time() == pytest.approx(40.0)
    assert real.LITELLM_HOLD_MAX_S == 60.0


async def test_outage_429s_without_headers_then_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """outage=S: 429s with no rate-limit header or Retry-After for S seconds, then service."""
    config = MockServerConfig(rpm=600, outage=50)
    async with mock(config) as (app, client):
        during = [await post(client, f"p{i}") for i in range(3)]
        await trio.sleep(50)
        after = await post(client, "p0")
    for response in during:
        assert response.status_code == 429
        assert rate_limit_names(response.headers) == set()
        assert "retry-after" not in response.headers
        assert "retry-after-ms" not in response.headers
    expected = real.LITELLM_NO_DEPLOYMENTS_429.body
    assert skeleton(during[0].json()) == skeleton(expected)
    prefix = "No deployments available for selected model, Try again in 50 seconds. Passed model="
    assert message_of(during[0].json()).startswith(prefix)
    assert message_of(expected).startswith(prefix.replace("50", "60"))
    assert after.status_code == 200
    assert after.headers["x-ratelimit-limit-requests"] == "600"
    assert app.stats().by_status == {429: 3, 200: 1}


async def test_outage_between_two_times(autojump_clock: trio.testing.MockClock) -> None:
    """outage="A:B" refuses only from A to B seconds after the first request."""
    config = MockServerConfig(outage="10:20")
    async with mock(config) as (_, client):
        before = await post(client)
        await trio.sleep(10)
        during = await post(client)
        await trio.sleep(10)
        after = await post(client)
    assert [r.status_code for r in (before, during, after)] == [200, 429, 200]


async def test_start_exhausted_bucket_makes_the_first_request_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """start_exhausted: the key's window is used up at the start (another process spent it)."""
    config = MockServerConfig(rpm=60, tpm=6000, start_exhausted=True)
    async with mock(config) as (_, client):
        first = await post(client)
        await trio.sleep(int(first.headers["retry-after-ms"]) / 1000)
        second = await post(client)
    assert first.status_code == 429
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.status_code == 200


async def test_start_exhausted_fixed_window_waits_for_the_next_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a fixed window, a used-up key is refused until the next calendar minute."""
    config = MockServerConfig(rpm=100, window="minute", start_exhausted=True, headers="none")
    async with mock(config) as (_, client):
        first = await post(client)
    assert first.status_code == 429
    assert rate_limit_names(first.headers) == set()


async def test_itpm_and_otpm_charge_input_and_output_separately(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """itpm charges the prompt, otpm max_tokens refunded to the real length."""
    config = MockServerConfig(itpm=600, otpm=600, headers="anthropic")  # capacity 10 each
    async with mock(config) as (_, client):
        ok = await post(client, "hi", max_tokens=10)
        limited = await post(client, "hi", max_tokens=10)
    assert ok.status_code == 200
    assert int(ok.headers["anthropic-ratelimit-input-tokens-remaining"]) == 10 - 4
    # The reply fills max_tokens (it is longer), so nothing was refunded to the output bucket.
    assert ok.json()["usage"]["completion_tokens"] == 10 < count_tokens(mock_reply("hi"))
    assert ok.headers["anthropic-ratelimit-output-tokens-remaining"] == "0"
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert "output tokens per minute" in message_of(limited.json())


# -- faults in real servers' shapes ------------------------------------------------------------


async def test_refusal_fault_is_content_null_with_a_refusal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """[[fault:refusal]]: content null, a refusal text, finish_reason stop (OpenAI's shape)."""
    async with mock() as (app, client):
        response = await post(client, "[[fault:refusal]]")
    body = response.json()
    expected = real.OPENAI_REFUSAL.body
    assert response.status_code == 200
    assert skeleton(body["choices"]) == skeleton(expected["choices"])  # type: ignore[index]
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["refusal"] == expected["choices"][0]["message"]["refusal"]  # type: ignore[index]
    assert body["choices"][0]["finish_reason"] == "stop"
    stats = app.stats()
    assert stats.faults == {"refusal": 1}
    assert stats.successes == 0
    assert stats.by_status == {200: 1}


async def test_content_parts_fault_is_a_list_of_parts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """[[fault:content_parts]]: content is [thinking part, text part] as Mistral sends it."""
    prompt = "17 x 23 [[fault:content_parts]]"
    async with mock() as (app, client):
        response = await post(client, prompt)
    message = response.json()["choices"][0]["message"]
    expected = real.OPENAI_CONTENT_PARTS.body["choices"][0]["message"]  # type: ignore[index]
    assert skeleton(message) == skeleton(expected)
    assert message["content"][1] == {"type": "text", "text": mock_reply(prompt)}
    assert app.stats().successes == 1


async def test_content_parts_fault_streams_lists_of_parts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Streamed, each content delta of the content_parts fault is a list of parts."""
    async with mock() as (_, client):
        response = await post(client, "[[fault:content_parts]]", stream=True)
    chunks = [json.loads(line.removeprefix("data: "))
              for line in response.text.split("\n\n") if line and "[DONE]" not in line]  # fmt: skip
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-1]]
    assert all(isinstance(d["content"], list) for d in deltas)
    text = "".join(part["text"] for d in deltas for part in d["content"])
    assert text == mock_reply("[[fault:content_parts]]")


async def test_empty_choices_fault_is_azures_prompt_filter_object(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """[[fault:empty_choices]]: a 200 with choices: [] (Azure's shape)."""
    async with mock() as (app, client):
        response = await post(client, "[[fault:empty_choices]]")
        streamed = await post(client, "[[fault:empty_choices]]", stream=True)
    assert response.status_code == 200
    assert response.json() == real.AZURE_EMPTY_CHOICES.body
    events = [line for line in streamed.text.split("\n\n") if line]
    assert json.loads(events[0].removeprefix("data: "))["choices"] == []
    assert events[-1] == "data: [DONE]"
    assert app.stats().successes == 0


async def test_openai_usage_details_fault_has_cached_and_reasoning_tokens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """[[fault:openai_usage_details]]: usage with prompt/completion_tokens_details."""
    async with mock() as (app, client):
        response = await post(client, "[[fault:openai_usage_details]]")
    usage = response.json()["usage"]
    assert skeleton(usage) == skeleton(real.OPENAI_USAGE_DETAILS)
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] // 2
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning <= usage["completion_tokens"]
    assert app.stats().successes == 1


async def test_anthropic_cache_usage_fault_on_chat_completions_is_litellms_usage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On chat completions the cache fault's usage is LiteLLM's OpenAI-format one."""
    async with mock() as (_, client):
        response = await post(client, "[[fault:anthropic_cache_usage]]")
    usage = response.json()["usage"]
    assert skeleton(usage) == skeleton(real.LITELLM_PROMPT_CACHING_USAGE)
    prompt = count_tokens("[[fault:anthropic_cache_usage]]") + 3
    assert usage["prompt_tokens"] == prompt
    assert usage["prompt_tokens_details"]["cached_tokens"] + usage[
        "cache_creation_input_tokens"] <= prompt  # fmt: skip


async def test_anthropic_cache_usage_fault_on_messages_is_native_usage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On /v1/messages the cache fault has cache writes and reads; input_tokens excludes them."""
    prompt = "cache me please [[fault:anthropic_cache_usage]]"
    async with mock(auth={"x-api-key": KEY}) as (_, client):
        response = await post_messages(client, prompt)
    usage = response.json()["usage"]
    assert skeleton(usage) == skeleton(real.ANTHROPIC_USAGE_WITH_CACHE)
    total = usage["input_tokens"] + usage["cache_creation_input_tokens"]
    total += usage["cache_read_input_tokens"]
    assert total == count_tokens(prompt) + 3
    assert usage["cache_creation_input_tokens"] > 0
    assert usage["cache_read_input_tokens"] > 0


@pytest.mark.parametrize(
    ("kind", "shape", "max_tokens"),
    [
        ("vllm_context_legacy", real.VLLM_CONTEXT_LENGTH_LEGACY, 4000),
        ("vllm_context", real.VLLM_CONTEXT_LENGTH, 3072),
        ("vllm_context", real.VLLM_CONTEXT_LENGTH_INPUT, None),
    ],
)
async def test_vllm_context_length_faults_in_both_shapes(
    autojump_clock: trio.testing.MockClock, kind: str, shape: real.RealShape, max_tokens: int | None
) -> None:
    """vLLM's context-length 400 in its old flat and new nested shapes, worded as vLLM words it."""
    extra = {} if max_tokens is None else {"max_tokens": max_tokens}
    async with mock() as (app, client):
        response = await post(client, f"[[fault:{kind}]]", **extra)
    assert response.status_code == shape.status == 400
    assert skeleton(response.json()) == skeleton(shape.body)
    assert wording(message_of(shape.body)).match(message_of(response.json()))
    assert app.stats().tokens_charged == 0


async def test_vllm_legacy_without_max_tokens_uses_vllms_other_sentence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Without max_tokens the legacy shape says "... tokens in the messages, Please reduce ..."."""
    async with mock() as (_, client):
        response = await post(client, "[[fault:vllm_context_legacy]]")
    assert response.json()["object"] == "error"
    assert re.fullmatch(
        r"This model's maximum context length is \d+ tokens\. However, you requested \d+ tokens "
        r"in the messages, Please reduce the length of the messages\.",
        response.json()["message"],
    )


@pytest.mark.parametrize(
    ("kind", "shape", "variables"),
    [
        ("anthropic_prompt_too_long", real.ANTHROPIC_PROMPT_TOO_LONG, ()),
        ("anthropic_overloaded", real.ANTHROPIC_OVERLOADED, ()),
        ("anthropic_credit_balance", real.ANTHROPIC_CREDIT_BALANCE, ()),
        ("litellm_unknown_key", real.LITELLM_UNKNOWN_KEY_400, ()),
    ],
)
@pytest.mark.parametrize("route", ["chat", "messages"])
async def test_anthropic_and_litellm_error_faults_keep_their_shape(
    autojump_clock: trio.testing.MockClock,
    kind: str,
    shape: real.RealShape,
    variables: tuple[str, ...],
    route: str,
) -> None:
    """Each error fault answers with its server's status, envelope and words, on either route."""
    auth = {"authorization": f"Bearer {KEY}", "x-api-key": KEY}
    async with mock(auth=auth) as (_, client):
        if route == "chat":
            response = await post(client, f"[[fault:{kind}]]")
        else:
            response = await post_messages(client, f"[[fault:{kind}]]")
    assert response.status_code == shape.status
    assert skeleton(response.json()) == skeleton(shape.body)
    assert wording(message_of(shape.body), *variables).match(message_of(response.json()))
    if "request_id" in response.json():
        assert response.json()["request_id"].startswith("req_")


async def test_529_on_messages_is_anthropics_overloaded_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The generic 529 fault on /v1/messages is Anthropic's overloaded_error."""
    async with mock(auth={"x-api-key": KEY}) as (_, client):
        response = await post_messages(client, "[[fault:529]]")
    assert response.status_code == 529
    assert skeleton(response.json()) == skeleton(real.ANTHROPIC_OVERLOADED.body)
    assert response.json()["error"] == real.ANTHROPIC_OVERLOADED.body["error"]  # type: ignore[index]


async def test_context_length_on_messages_is_prompt_too_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The generic context_length fault on /v1/messages is Anthropic's "prompt is too long"."""
    async with mock(auth={"x-api-key": KEY}) as (_, client):
        response = await post_messages(client, "[[fault:context_length]]")
    expected = real.ANTHROPIC_PROMPT_TOO_LONG.body
    assert response.status_code == 400
    assert wording(message_of(expected)).match(message_of(response.json()))


async def test_openai_only_variant_on_messages_is_refused_clearly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A fault with no Anthropic shape answers 400 naming the fault, not a silent success."""
    async with mock(auth={"x-api-key": KEY}) as (_, client):
        response = await post_messages(client, "[[fault:refusal]]")
    assert response.status_code == 400
    assert "'refusal'" in message_of(response.json())


# -- key-level errors ------------------------------------------------------------------------------


async def test_credit_exhausted_keys_always_get_the_credit_balance_400(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """credit_exhausted_keys: every request with the key gets Anthropic's credit-balance 400."""
    config = MockServerConfig(credit_exhausted_keys=(KEY,))
    async with mock(config) as (app, client):
        responses = [await post(client, f"p{i}") for i in range(2)]
    for response in responses:
        assert response.status_code == 400
        assert skeleton(response.json()) == skeleton(real.ANTHROPIC_CREDIT_BALANCE.body)
        assert message_of(response.json()) == message_of(real.ANTHROPIC_CREDIT_BALANCE.body)
    assert app.stats().by_status == {400: 2}


async def test_unknown_key_error_litellm_answers_no_db_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """unknown_key_error="litellm": an unknown key gets LiteLLM's 400 no_db_connection."""
    config = MockServerConfig(keys=("sk-known-000000000000",), unknown_key_error="litellm")
    async with mock(config) as (_, client):
        response = await post(client)
    assert response.status_code == 400
    assert response.json() == real.LITELLM_UNKNOWN_KEY_400.body


async def test_openai_error_envelopes_match_the_real_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The mock's 401, insufficient_quota 429, context-length 400 and 500 have OpenAI's envelope."""
    config = MockServerConfig(
        keys=("sk-other-00000000000",), quota_exhausted_keys=("sk-quota-0000",)
    )
    async with mock(config) as (_, client):
        unknown = await post(client)
    async with mock(config, auth={"authorization": "Bearer sk-quota-0000"}) as (_, client):
        quota = await post(client)
    async with mock() as (_, client):
        context = await post(client, "[[fault:context_length]]")
        server = await post(client, "[[fault:500]]")
    pairs = [
        (unknown, real.OPENAI_401_INVALID_API_KEY),
        (quota, real.OPENAI_429_INSUFFICIENT_QUOTA),
        (context, real.OPENAI_400_CONTEXT_LENGTH),
        (server, real.OPENAI_500),
    ]
    for response, shape in pairs:
        assert response.status_code == shape.status
        assert skeleton(response.json()) == skeleton(shape.body)
        mine, theirs = response.json()["error"], shape.body["error"]  # type: ignore[index]
        assert (mine["type"], mine["code"]) == (theirs["type"], theirs["code"])
    assert wording(message_of(real.OPENAI_400_CONTEXT_LENGTH.body)).match(
        message_of(context.json())
    )


async def test_openai_rate_limit_envelope_matches_the_real_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The default 429 has OpenAI's envelope: type names the limit, code rate_limit_exceeded."""
    async with mock(MockServerConfig(tpm=600)) as (_, client):
        await post(client, "x", max_tokens=100)
        limited = await post(client, "y")
    expected = real.OPENAI_429_RATE_LIMIT.body["error"]  # type: ignore[index]
    assert skeleton(limited.json()) == skeleton(real.OPENAI_429_RATE_LIMIT.body)
    assert limited.json()["error"]["type"] == expected["type"] == "tokens"
    assert limited.json()["error"]["code"] == expected["code"]


# -- /v1/messages ----------------------------------------------------------------------------------


async def test_messages_route_answers_in_anthropics_shape(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """POST /v1/messages: a Messages response, request-id, native anthropic-ratelimit headers."""
    config = MockServerConfig(rpm=50)
    async with mock(config, auth={"x-api-key": KEY}) as (_, client):
        response = await client.post("/messages", json={
            "model": "claude-test", "max_tokens": 3, "system": "Be brief.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        })  # fmt: skip
    body = response.json()
    assert response.status_code == 200
    assert body["type"] == "message"
    assert body["content"] == [{"type": "text", "text": mock_reply("hello")[:12]}]
    assert body["stop_reason"] == "max_tokens"
    prompt = count_tokens("hello") + 3 + count_tokens("Be brief.") + 3
    assert body["usage"] == {"input_tokens": prompt, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 0, "output_tokens": 3}  # fmt: skip
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["anthropic-ratelimit-requests-limit"] == "50"


async def test_messages_route_errors_are_anthropic_shaped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """/v1/messages refuses a missing key or max_tokens with Anthropic's envelope."""
    async with mock(auth={}) as (_, client):
        no_key = await post_messages(client)
    async with mock(auth={"x-api-key": KEY}) as (_, client):
        no_max = await client.post("/messages", json={"messages": [{"role": "user",
                                                                    "content": "hi"}]})  # fmt: skip
    assert no_key.status_code == 401
    assert no_key.json()["error"]["type"] == "authentication_error"
    for response in (no_max,):
        assert response.status_code == 400
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in message_of(no_max.json())


# -- configuration -----------------------------------------------------------------------------


def test_new_config_fields_default_off_and_round_trip_through_json() -> None:
    """The new fields default to today's behaviour and survive to_json/from_json."""
    default = MockServerConfig()
    assert (default.headers, default.window, default.hold_s, default.outage) == (
        "native", "bucket", 0.0, None)  # fmt: skip
    assert (default.rpd, default.itpm, default.otpm, default.start_exhausted) == (
        None, None, None, False)  # fmt: skip
    assert default.unknown_key_error == "openai"
    config = MockServerConfig(
        headers="groq", window="minute", rpd=10, itpm=5, otpm=6, hold_s=60, outage="5:50",
        start_exhausted=True, credit_exhausted_keys="a,b", unknown_key_error="litellm",
        fault_mix={"refusal": 1, "vllm_context": 2}, error_rate=0.1,
    )  # fmt: skip
    assert config.outage == (5.0, 50.0)
    assert MockServerConfig(outage=50).outage == (0.0, 50.0)
    assert MockServerConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="HINT"):
        MockServerConfig(outage="50:10")
    with pytest.raises(ValueError, match="headers"):
        MockServerConfig(headers="teapot")  # type: ignore[arg-type]


def test_cli_flags_set_the_new_fields() -> None:
    """`trio-llm mock-server` flags reach every new config field."""
    args = _parser().parse_args([
        "--headers", "litellm", "--window", "minute", "--rpd", "100", "--itpm", "20",
        "--otpm", "30", "--hold-s", "60", "--outage", "50", "--start-exhausted",
        "--credit-exhausted-keys", "k1,k2", "--unknown-key-error", "litellm",
        "--fault-mix", "refusal=1,empty_choices=1",
    ])  # fmt: skip
    config = _config_from_args(args)
    assert config == MockServerConfig(
        headers="litellm", window="minute", rpd=100, itpm=20, otpm=30, hold_s=60,
        outage=(0, 50), start_exhausted=True, credit_exhausted_keys=("k1", "k2"),
        unknown_key_error="litellm", fault_mix={"refusal": 1, "empty_choices": 1},
    )  # fmt: skip


async def test_wording_helper_generalises_numbers_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The test helper frees numbers and named parts, nothing else."""
    assert wording("Limit 3, Used 3.").match("Limit 30,000, Used 29,999.")
    assert not wording("Limit 3, Used 3.").match("Limit 3, Spent 3.")
    assert wording("try again in 5.289s.").match("try again in 1m0.5s.")
    assert wording("model x-1 ok", "x-1").match("model gpt-test ok")


# -- a real socket ---------------------------------------------------------------------------------


def test_a_child_process_gets_the_new_modes() -> None:
    """MockServerProcess hands the new fields to its child (JSON) and the child honours them."""
    config = MockServerConfig(rpm=60, headers="litellm", credit_exhausted_keys=("sk-broke-00000",))
    auth = {"authorization": f"Bearer {KEY}"}
    anthropic_body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with (
        MockServerProcess(config) as proc,
        httpx.Client(base_url=proc.base_url, timeout=5) as client,
    ):
        ok = client.post("/chat/completions", json=chat(), headers=auth)
        limited = client.post("/chat/completions", json=chat(), headers=auth)
        broke = client.post(
            "/messages", json=anthropic_body, headers={"x-api-key": "sk-broke-00000"}
        )
    assert ok.headers["x-ratelimit-api_key-limit-requests"] == "60"
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "60"
    assert broke.status_code == 400
    assert broke.json()["error"]["message"] == message_of(real.ANTHROPIC_CREDIT_BALANCE.body)
