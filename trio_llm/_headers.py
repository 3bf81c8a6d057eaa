"""Reading rate-limit state from response headers (the server's view is the truth).

Formats understood:

* OpenAI and compatible servers: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the
  reset as a Go-style duration (``1s``, ``6m0s``, ``120ms``, ``1h2m3.5s``).
* Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
  {limit,remaining,reset}``, the reset as an RFC 3339 timestamp.
* ``retry-after`` (seconds, or an HTTP date), ``retry-after-ms``, ``x-should-retry``.

Malformed or missing values are ignored field by field: a bad header never fails a request.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import re
import time
from collections.abc import Mapping

import attrs

__all__ = ["RateLimitInfo", "parse_duration", "parse_rate_limit_headers", "parse_retry_after"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@attrs.frozen(kw_only=True)
class RateLimitInfo:
    """What one response said about our limits; ``None`` where it said nothing (usable)."""

    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset_s: float | None = None
    tokens_limit: float | None = None
    tokens_remaining: float | None = None
    tokens_reset_s: float | None = None
    retry_after_s: float | None = None
    should_retry: bool | None = None

    @property
    def empty(self) -> bool:
        """True when no rate-limit header was present."""
        return self == _EMPTY


_EMPTY = RateLimitInfo()


def _seconds(value: float) -> float | None:
    """``value`` if it is a usable number of seconds: finite and not negative (NaN is neither)."""
    return value if 0 <= value < math.inf else None


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``6m0s``, ``120ms``, ``1.5s``) or a bare number."""
    text = text.strip()
    if not text:
        return None
    try:
        return _seconds(float(text))
    except ValueError:
        pass
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return _seconds(total) if position == len(text) else None


def _parse_rfc3339_reset(text: str, now_wall: float) -> float | None:
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now_wall)


def parse_retry_after(headers: Mapping[str, str], now_wall: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis)
        except ValueError:
            value = -1.0
        if _seconds(value) is not None:
            return value / 1000.0
    text = headers.get("retry-after")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        now = time.time() if now_wall is None else now_wall
        return max(0.0, when.timestamp() - now)
    return _seconds(value)


def _number(headers: Mapping[str, str], name: str) -> float | None:
    text = headers.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 and value == value and value != float("inf") else None


def parse_rate_limit_headers(
    headers: Mapping[str, str], now_wall: float | None = None
) -> RateLimitInfo:
    """Everything the headers say about our limits (``headers`` must be case-insensitive,
    as ``httpx.Headers`` is, or lower-case)."""
    now = time.time() if now_wall is None else now_wall
    should_retry_text = headers.get("x-should-retry")
    should_retry = (
        None
        if should_retry_text is None
        else {"true": True, "false": False}.get(should_retry_text.strip().lower())
    )
    retry_after = parse_retry_after(headers, now)

    if "anthropic-ratelimit-requests-limit" in headers or any(
        f"anthropic-ratelimit-{kind}-limit" in headers
        for kind in ("tokens", "input-tokens", "output-tokens")
    ):
        # Anthropic counts input tokens apart; the input-token limit is the one that binds
        # for batches, so it stands in for "tokens" when the combined one is absent.
        token_kind = "tokens" if "anthropic-ratelimit-tokens-limit" in headers else "input-tokens"

        def reset(kind: str) -> float | None:
            text = headers.get(f"anthropic-ratelimit-{kind}-reset")
            return None if text is None else _parse_rfc3339_reset(text, now)

        return RateLimitInfo(
            requests_limit=_number(headers, "anthropic-ratelimit-requests-limit"),
            requests_remaining=_number(headers, "anthropic-ratelimit-requests-remaining"),
            requests_reset_s=reset("requests"),
            tokens_limit=_number(headers, f"anthropic-ratelimit-{token_kind}-limit"),
            tokens_remaining=_number(headers, f"anthropic-ratelimit-{token_kind}-remaining"),
            tokens_reset_s=reset(token_kind),
            retry_after_s=retry_after,
            should_retry=should_retry,
        )

    def duration(name: str) -> float | None:
        text = headers.get(name)
        return None if text is None else parse_duration(text)

    return RateLimitInfo(
        requests_limit=_number(headers, "x-ratelimit-limit-requests"),
        requests_remaining=_number(headers, "x-ratelimit-remaining-requests"),
        requests_reset_s=duration("x-ratelimit-reset-requests"),
        tokens_limit=_number(headers, "x-ratelimit-limit-tokens"),
        tokens_remaining=_number(headers, "x-ratelimit-remaining-tokens"),
        tokens_reset_s=duration("x-ratelimit-reset-tokens"),
        retry_after_s=retry_after,
        should_retry=should_retry,
    )
