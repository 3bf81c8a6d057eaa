"""Rate-limit headers: every provider format, and bad values ignored field by field."""

from __future__ import annotations

import datetime as dt
import email.utils
import math

import attrs
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_llm._headers import (
    RateLimitInfo,
    parse_duration,
    parse_rate_limit_headers,
    parse_retry_after,
)

# 2024-06-01T12:00:00Z and 2015-10-21T07:27:30Z as Unix timestamps.
NOON = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC).timestamp()
OCT_2015 = dt.datetime(2015, 10, 21, 7, 27, 30, tzinfo=dt.UTC).timestamp()

# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("120ms", 0.12),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        ("20ns", 20e-9),
        ("0s", 0.0),
        ("17", 17.0),
        ("2.5", 2.5),
        ("0", 0.0),
        (" 6m0s ", 360.0),
    ],
)
def test_parse_duration_reads_go_durations_and_bare_numbers(text: str, seconds: float) -> None:
    """Go-style durations (as OpenAI sends them) and bare numbers become seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "   ", "abc", "1x", "s", "1s2", "-1s", "1 s", "1s!", "ms"])
def test_parse_duration_rejects_malformed_text(text: str) -> None:
    """A malformed duration gives None rather than raising or guessing."""
    assert parse_duration(text) is None


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400", "-5"])
def test_parse_duration_rejects_negative_nan_and_inf(text: str) -> None:
    """A negative, NaN or infinite bare number is not a duration."""
    assert parse_duration(text) is None


# --- OpenAI -------------------------------------------------------------------------------

# OpenAI's documented example, with a reset a per-minute token bucket can have (the docs show
# "6m0s", which no one-minute window can take to refill: see the Groq test below).
OPENAI = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-tokens": "6ms",
}


def test_openai_headers_are_read() -> None:
    """All six x-ratelimit-* headers of an OpenAI response are read."""
    assert parse_rate_limit_headers(OPENAI, now_wall=NOON) == RateLimitInfo(
        requests_limit=60.0,
        requests_remaining=59.0,
        requests_reset_s=1.0,
        tokens_limit=150000.0,
        tokens_remaining=149984.0,
        tokens_reset_s=0.006,
    )


def test_header_names_are_case_insensitive_with_httpx_headers() -> None:
    """Header names match whatever their case, as HTTP says, given httpx.Headers."""
    headers = httpx.Headers({name.upper(): value for name, value in OPENAI.items()})
    headers["X-Should-Retry"] = "true"
    headers["Retry-After"] = "3"
    info = parse_rate_limit_headers(headers, now_wall=NOON)
    assert info.requests_limit == 60.0
    assert info.tokens_reset_s == 0.006
    assert info.should_retry is True
    assert info.retry_after_s == 3.0


def test_openai_durations_in_headers() -> None:
    """Reset headers take every duration form: ms, compound, fractional and bare seconds."""
    info = parse_rate_limit_headers(
        {"x-ratelimit-reset-requests": "120ms", "x-ratelimit-reset-tokens": "1h2m3.5s"}
    )
    assert info.requests_reset_s == pytest.approx(0.12)
    assert info.tokens_reset_s == pytest.approx(3723.5)
    info = parse_rate_limit_headers(
        {"x-ratelimit-reset-requests": "0.5s", "x-ratelimit-reset-tokens": "7"}
    )
    assert info.requests_reset_s == pytest.approx(0.5)
    assert info.tokens_reset_s == pytest.approx(7.0)


def test_malformed_values_are_ignored_field_by_field() -> None:
    """One bad header leaves its field None and every other field intact."""
    headers = dict(OPENAI)
    headers["x-ratelimit-limit-requests"] = "sixty"
    headers["x-ratelimit-reset-tokens"] = "soon"
    headers["x-ratelimit-remaining-tokens"] = ""
    info = parse_rate_limit_headers(headers, now_wall=NOON)
    assert info.requests_limit is None
    assert info.tokens_reset_s is None
    assert info.tokens_remaining is None
    assert info.requests_remaining == 59.0
    assert info.requests_reset_s == 1.0
    assert info.tokens_limit == 150000.0


@pytest.mark.parametrize("bad", ["-1", "nan", "NaN", "inf", "-inf", "1e400", "infinity"])
def test_negative_nan_and_inf_counts_are_rejected(bad: str) -> None:
    """A limit or remaining count that is negative, NaN or infinite is ignored."""
    info = parse_rate_limit_headers(
        {"x-ratelimit-limit-requests": bad, "x-ratelimit-remaining-tokens": bad}
    )
    assert info.requests_limit is None
    assert info.tokens_remaining is None


def test_missing_headers_give_an_empty_info() -> None:
    """A response without rate-limit headers says nothing (every field None)."""
    info = parse_rate_limit_headers(httpx.Headers({"content-type": "application/json"}))
    assert info == RateLimitInfo()
    assert info.empty
    assert not parse_rate_limit_headers({"x-ratelimit-limit-requests": "1"}).empty


# --- Retry-After --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("120", 120.0), ("1.5", 1.5), ("0", 0.0)])
def test_retry_after_in_seconds(text: str, seconds: float) -> None:
    """Retry-After given in seconds is read as seconds."""
    assert parse_retry_after({"retry-after": text}) == seconds
    assert parse_rate_limit_headers({"retry-after": text}).retry_after_s == seconds


@pytest.mark.parametrize(
    "date",
    [
        "Wed, 21 Oct 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 09:28:00 +0200",
        "Wed, 21 Oct 2015 07:28:00",  # no zone: UTC
    ],
)
def test_retry_after_as_http_date(date: str) -> None:
    """Retry-After given as an HTTP date is the time from now until then."""
    assert parse_retry_after({"retry-after": date}, now_wall=OCT_2015) == pytest.approx(30.0)
    info = parse_rate_limit_headers({"retry-after": date}, now_wall=OCT_2015)
    assert info.retry_after_s == pytest.approx(30.0)


def test_retry_after_date_in_the_past_is_zero() -> None:
    """An HTTP date already past means retry now, never a negative wait."""
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after({"retry-after": date}, now_wall=OCT_2015 + 3600) == 0.0


def test_retry_after_ms_wins_over_retry_after() -> None:
    """retry-after-ms, being more precise, is used when both headers are there."""
    headers = httpx.Headers({"Retry-After": "30", "Retry-After-Ms": "1500"})
    assert parse_retry_after(headers) == pytest.approx(1.5)
    assert parse_rate_limit_headers(headers).retry_after_s == pytest.approx(1.5)


@pytest.mark.parametrize("bad_ms", ["soon", "-5", "nan", ""])
def test_bad_retry_after_ms_falls_back_to_retry_after(bad_ms: str) -> None:
    """A malformed retry-after-ms is ignored in favour of retry-after."""
    assert parse_retry_after({"retry-after-ms": bad_ms, "retry-after": "4"}) == 4.0
    assert parse_retry_after({"retry-after-ms": bad_ms}) is None


@pytest.mark.parametrize("bad", ["-1", "nan", "soon", "", "Wed, 99 Foo 2015"])
def test_bad_retry_after_is_ignored(bad: str) -> None:
    """A negative, NaN or unreadable Retry-After gives None."""
    assert parse_retry_after({"retry-after": bad}) is None


def test_no_retry_after_is_none() -> None:
    """Without either header there is no Retry-After."""
    assert parse_retry_after({}) is None


@pytest.mark.parametrize(
    "headers",
    [{"retry-after": "inf"}, {"retry-after": "1e400"}, {"retry-after-ms": "inf"}],
    ids=["inf", "overflow", "ms-inf"],
)
def test_infinite_retry_after_is_rejected(headers: dict[str, str]) -> None:
    """An infinite Retry-After is ignored (it would cool a key for ever)."""
    assert parse_retry_after(headers) is None


def test_retry_after_date_with_huge_year_is_ignored() -> None:
    """An absurd HTTP date in Retry-After is ignored, never raised."""
    headers = {"retry-after": "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"}
    assert parse_rate_limit_headers(headers, now_wall=NOON).retry_after_s is None


# --- x-should-retry -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("false", False), ("TRUE", True), (" False ", False), ("yes", None)],
)
def test_x_should_retry(text: str, expected: bool | None) -> None:
    """x-should-retry: true/false (any case) is read; anything else is ignored."""
    assert parse_rate_limit_headers({"x-should-retry": text}).should_retry is expected


def test_x_should_retry_missing_is_none() -> None:
    """Without x-should-retry the server expressed no opinion."""
    assert parse_rate_limit_headers({}).should_retry is None


# --- Anthropic ----------------------------------------------------------------------------

ANTHROPIC = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-requests-reset": "2024-06-01T12:00:30Z",
    "anthropic-ratelimit-tokens-limit": "90000",
    "anthropic-ratelimit-tokens-remaining": "89000",
    "anthropic-ratelimit-tokens-reset": "2024-06-01T12:01:00Z",
    "anthropic-ratelimit-input-tokens-limit": "40000",
    "anthropic-ratelimit-input-tokens-remaining": "39000",
    "anthropic-ratelimit-input-tokens-reset": "2024-06-01T12:00:05Z",
}


def test_anthropic_headers_with_rfc3339_resets() -> None:
    """anthropic-ratelimit-* headers are read; resets are seconds from now until the timestamp."""
    info = parse_rate_limit_headers(httpx.Headers(ANTHROPIC), now_wall=NOON)
    assert info == RateLimitInfo(
        requests_limit=50.0,
        requests_remaining=49.0,
        requests_reset_s=30.0,
        tokens_limit=90000.0,
        tokens_remaining=89000.0,
        tokens_reset_s=60.0,
    )


def test_anthropic_input_tokens_stand_in_for_tokens() -> None:
    """Without a combined token limit, the input-token limit is the token limit."""
    headers = {k: v for k, v in ANTHROPIC.items() if "-tokens-" not in k or "input" in k}
    headers["anthropic-ratelimit-output-tokens-limit"] = "8000"
    info = parse_rate_limit_headers(headers, now_wall=NOON)
    assert info.tokens_limit == 40000.0
    assert info.tokens_remaining == 39000.0
    assert info.tokens_reset_s == pytest.approx(5.0)
    assert info.requests_limit == 50.0


def test_anthropic_token_headers_alone_are_recognised() -> None:
    """Anthropic token headers are read even without the request ones."""
    info = parse_rate_limit_headers(
        {"anthropic-ratelimit-input-tokens-limit": "40000"}, now_wall=NOON
    )
    assert info.tokens_limit == 40000.0
    assert info.requests_limit is None


@pytest.mark.parametrize(
    ("reset", "seconds"),
    [
        ("2024-06-01T12:00:30+00:00", 30.0),
        ("2024-06-01T14:00:30+02:00", 30.0),
        ("2024-06-01T12:00:30.5Z", 30.5),
        ("2024-06-01T12:00:30", 30.0),  # no zone: UTC
        ("2024-06-01T11:00:00Z", 0.0),  # already past: no wait
    ],
)
def test_anthropic_reset_forms(reset: str, seconds: float) -> None:
    """RFC 3339 resets with offsets, fractions, no zone, or in the past are read exactly."""
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-reset": reset,
    }
    assert parse_rate_limit_headers(headers, now_wall=NOON).requests_reset_s == pytest.approx(
        seconds
    )


def test_anthropic_malformed_values_are_ignored_field_by_field() -> None:
    """A bad Anthropic value leaves its field None and every other field intact."""
    headers = dict(ANTHROPIC)
    headers["anthropic-ratelimit-requests-reset"] = "tomorrow"
    headers["anthropic-ratelimit-tokens-remaining"] = "-3"
    info = parse_rate_limit_headers(headers, now_wall=NOON)
    assert info.requests_reset_s is None
    assert info.tokens_remaining is None
    assert info.requests_remaining == 49.0
    assert info.tokens_reset_s == 60.0


def test_anthropic_response_keeps_retry_after_and_should_retry() -> None:
    """Retry-After and x-should-retry are read alongside Anthropic's headers."""
    headers = dict(ANTHROPIC, **{"retry-after": "7", "x-should-retry": "false"})
    info = parse_rate_limit_headers(headers, now_wall=NOON)
    assert info.retry_after_s == 7.0
    assert info.should_retry is False


# --- never raises -------------------------------------------------------------------------

_NAMES = [
    *OPENAI,
    *ANTHROPIC,
    "anthropic-ratelimit-output-tokens-limit",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
]
_TRICKY = [
    "",
    " ",
    "-1",
    "nan",
    "inf",
    "1e400",
    "0x10",
    "1_0",
    "1s1",
    "9" * 400,
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "Wed, 31 Feb 2015 07:28:00 GMT",
    "Wed, 21 Oct 2015 25:61:00 +9999",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2024-06-01T12:00:30Z",
    "2024-13-01",
]
_values = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A-?[0-9.]{0,8}(h|m|s|ms|us|µs|ns)?([0-9.]{0,3}(h|m|s))?\Z"),
    st.sampled_from(_TRICKY),
    st.datetimes(timezones=st.just(dt.UTC)).map(email.utils.format_datetime),
    st.datetimes(timezones=st.just(dt.UTC)).map(dt.datetime.isoformat),
)


@settings(max_examples=200, deadline=None)
@given(headers=st.dictionaries(st.sampled_from(_NAMES), _values, max_size=8))
def test_arbitrary_header_values_never_raise(headers: dict[str, str]) -> None:
    """No header value, however odd, makes parsing raise; numbers are never negative or NaN."""
    info = parse_rate_limit_headers(headers, now_wall=NOON)
    for value in attrs.astuple(info):
        if isinstance(value, float):
            assert value >= 0
            assert not math.isnan(value)


# --- values that make no sense, and other dialects ---------------------------------------


@pytest.mark.parametrize("limit", ["0", "-3", "0.0"])
def test_a_limit_of_zero_or_below_is_ignored(limit: str) -> None:
    """A limit <= 0 would stop every request forever: it is ignored, not obeyed."""
    info = parse_rate_limit_headers(
        {"x-ratelimit-limit-requests": limit, "x-ratelimit-remaining-requests": "0"}
    )
    assert info.requests_limit is None


def test_remaining_above_the_limit_is_ignored() -> None:
    """A remaining count larger than its own limit contradicts itself and is dropped."""
    info = parse_rate_limit_headers(
        {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "5000"}
    )
    assert info.tokens_limit == 1000.0
    assert info.tokens_remaining is None


def test_groq_requests_per_day_are_not_learned_as_per_minute() -> None:
    """Groq's x-ratelimit-limit-requests is per day (its reset of minutes says so): it is not
    a per-minute limit, while its per-minute tokens are.

    From https://console.groq.com/docs/rate-limits ("x-ratelimit-limit-requests: Always refers
    to Requests Per Day (RPD)"; example reset-requests 2m59.56s, reset-tokens 7.66s).
    """
    info = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-limit-tokens": "18000",
            "x-ratelimit-remaining-requests": "14370",
            "x-ratelimit-remaining-tokens": "17997",
            "x-ratelimit-reset-requests": "2m59.56s",
            "x-ratelimit-reset-tokens": "7.66s",
        },
        now_wall=NOON,
    )
    assert info.requests_limit is None
    assert info.requests_remaining == 14370.0
    assert info.tokens_limit == 18000.0
    assert info.wait_s is None


def test_a_used_up_daily_quota_says_how_long_to_wait() -> None:
    """Nothing remaining in a window longer than a minute: wait until its reset."""
    info = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "2m59.56s",
        },
        now_wall=NOON,
    )
    assert info.wait_s == pytest.approx(179.56)


def test_used_up_without_a_reset_waits_for_the_next_calendar_minute() -> None:
    """Remaining 0 and no reset header (LiteLLM's fixed calendar-minute window) means the next
    minute, not one second."""
    info = parse_rate_limit_headers(
        {"x-ratelimit-limit-requests": "30", "x-ratelimit-remaining-requests": "0"},
        now_wall=NOON + 42.5,
    )
    assert info.requests_limit == 30.0
    assert info.wait_s == pytest.approx(17.5)


def test_an_openai_bucket_at_zero_is_not_a_window_wait() -> None:
    """Remaining 0 with a reset within a minute is a refilling bucket: the buckets pace it."""
    info = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
        }
    )
    assert info.wait_s is None


def test_litellm_prefixed_retry_after_is_read() -> None:
    """LiteLLM forwards the provider's Retry-After as llm_provider-retry-after."""
    info = parse_rate_limit_headers({"llm_provider-retry-after": "7"})
    assert info.retry_after_s == 7.0


def test_litellm_virtual_key_limits_are_read() -> None:
    """LiteLLM's per-virtual-key x-ratelimit-api_key-* family stands in for the plain names."""
    info = parse_rate_limit_headers(
        {
            "x-ratelimit-api_key-limit-requests": "100",
            "x-ratelimit-api_key-remaining-requests": "40",
            "x-ratelimit-api_key-limit-tokens": "10000",
            "x-ratelimit-api_key-remaining-tokens": "9000",
        },
        now_wall=NOON,
    )
    assert (info.requests_limit, info.requests_remaining) == (100.0, 40.0)
    assert (info.tokens_limit, info.tokens_remaining) == (10000.0, 9000.0)


@given(
    st.dictionaries(
        st.text("abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=30),
        st.text(max_size=20),
        max_size=8,
    )
)
def test_headers_without_rate_limit_names_parse_as_empty(headers: dict[str, str]) -> None:
    """Whatever else a response carries, with no rate-limit header it says nothing of limits,
    and adding one among them is still read."""
    others = {
        k: v for k, v in headers.items() if not k.startswith(("x-", "anthropic", "llm_", "retry"))
    }
    assert parse_rate_limit_headers(others).empty
    info = parse_rate_limit_headers({**others, "x-ratelimit-limit-requests": "600"})
    assert info.requests_limit == 600
