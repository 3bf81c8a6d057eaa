"""Reading rate-limit state from response headers (the server's view is the truth).

Formats understood:

* OpenAI and compatible servers: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the
  reset as a Go-style duration (``1s``, ``6m0s``, ``120ms``, ``1h2m3.5s``).
* Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
  {limit,remaining,reset}``, the reset as an RFC 3339 timestamp.
* LiteLLM's proxy: the same names for its own limiter, ``x-ratelimit-api_key-*`` for the
  virtual key's limits, and the provider's headers forwarded with an ``llm_provider-`` prefix.
* Groq: the OpenAI names, but ``x-ratelimit-limit-requests`` is per *day*: a window whose
  reset is longer than a minute is never learned as a per-minute limit.
* ``retry-after`` (seconds, or an HTTP date), ``retry-after-ms``, ``x-should-retry``.

Malformed or missing values are ignored field by field, and so are values that make no sense (a
limit of 0 or below, more remaining than the limit, NaN): a bad header never fails a request and
is never obeyed. A dimension with nothing remaining says how long nothing can be sent
(``wait_s``): until its reset when its window is longer than a minute (a daily quota), until the
next calendar minute when no reset is given (a fixed minute window, as LiteLLM counts).
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
    """What one response said about our limits; ``None`` where it said nothing (usable).

    ``*_limit`` are per-minute limits (``None`` when the window is not a minute);
    ``wait_s`` is how long the server will refuse everything (a used-up window), if it said.
    """

    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset_s: float | None = None
    tokens_limit: float | None = None
    tokens_remaining: float | None = None
    tokens_reset_s: float | None = None
    retry_after_s: float | None = None
    should_retry: bool | None = None
    wait_s: float | None = None

    @property
    def empty(self) -> bool:
        """True when no rate-limit header was present."""
        return self == _EMPTY


_EMPTY = RateLimitInfo()
#: Every header name read below starts with one of these.
_RATE_LIMIT_PREFIXES = (
    "x-ratelimit-",
    "anthropic-ratelimit-",
    "llm_provider-",
    "retry-after",
    "x-should-retry",
)


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


def _number(headers: Mapping[str, str], *names: str) -> float | None:
    """The first of ``names`` present, as a finite number >= 0 (else ``None``)."""
    for name in names:
        text = headers.get(name)
        if text is None:
            continue
        try:
            value = float(text)
        except ValueError:
            return None
        return value if 0 <= value < math.inf else None
    return None


#: Beyond this, a reset is not the end of a one-minute window (a daily quota, say).
_MINUTE_WINDOW_S = 61.0


@attrs.frozen
class _Dimension:
    """One limit (requests or tokens) as the headers state it, after the sanity rules."""

    limit: float | None
    remaining: float | None
    reset_s: float | None
    #: The window is known to be a minute (Anthropic documents all of its limits so).
    minute: bool = False

    @classmethod
    def checked(
        cls,
        limit: float | None,
        remaining: float | None,
        reset_s: float | None,
        *,
        minute: bool = False,
    ) -> _Dimension:
        if limit is not None and limit <= 0:
            limit = None  # a limit of 0 would stop everything forever: not believable
        if limit is not None and remaining is not None and remaining > limit:
            remaining = None  # contradicts its own limit
        return cls(limit, remaining, reset_s, minute)

    @property
    def longer_than_a_minute(self) -> bool:
        """Whether the reset says the window is longer than a minute (a daily quota)."""
        return not self.minute and self.reset_s is not None and self.reset_s > _MINUTE_WINDOW_S

    @property
    def per_minute_limit(self) -> float | None:
        """The limit, if its window is a minute."""
        return None if self.longer_than_a_minute else self.limit

    def wait(self, now_wall: float) -> float | None:
        """Seconds nothing can be sent, when this dimension is used up and its window is not
        a refilling minute bucket."""
        if self.remaining is None or self.remaining >= 1:
            return None
        if self.reset_s is None:
            # A fixed calendar-minute window (no reset said): it opens at the next minute.
            return 60.0 - now_wall % 60.0
        return self.reset_s if self.longer_than_a_minute else None


def parse_rate_limit_headers(
    headers: Mapping[str, str], now_wall: float | None = None
) -> RateLimitInfo:
    """Everything the headers say about our limits (``headers`` must be case-insensitive,
    as ``httpx.Headers`` is, or lower-case)."""
    for name in headers:
        if name.lower().startswith(_RATE_LIMIT_PREFIXES):
            break
    else:
        # Most responses of most servers carry none of these (the parse below costs ~15 us).
        return _EMPTY
    now = time.time() if now_wall is None else now_wall
    should_retry_text = headers.get("x-should-retry")
    should_retry = (
        None
        if should_retry_text is None
        else {"true": True, "false": False}.get(should_retry_text.strip().lower())
    )
    retry_after = parse_retry_after(headers, now)
    if retry_after is None:
        # LiteLLM forwards the provider's own headers with a prefix.
        retry_after = parse_retry_after(
            {
                name.removeprefix("llm_provider-"): value
                for name in ("llm_provider-retry-after", "llm_provider-retry-after-ms")
                if (value := headers.get(name)) is not None
            },
            now,
        )

    if "anthropic-ratelimit-requests-limit" in headers or any(
        f"anthropic-ratelimit-{kind}-limit" in headers
        for kind in ("tokens", "input-tokens", "output-tokens")
    ):
        # Anthropic counts input tokens apart; the input-token limit is the one that binds
        # for batches, so it stands in for "tokens" when the combined one is absent.
        token_kind = "tokens" if "anthropic-ratelimit-tokens-limit" in headers else "input-tokens"

        def anthropic(kind: str) -> _Dimension:
            text = headers.get(f"anthropic-ratelimit-{kind}-reset")
            return _Dimension.checked(
                _number(headers, f"anthropic-ratelimit-{kind}-limit"),
                _number(headers, f"anthropic-ratelimit-{kind}-remaining"),
                None if text is None else _parse_rfc3339_reset(text, now),
                minute=True,
            )

        requests, tokens = anthropic("requests"), anthropic(token_kind)
    else:

        def openai(kind: str) -> _Dimension:
            # Our own names first; then LiteLLM's per-virtual-key family; then the provider's
            # headers as LiteLLM forwards them.
            for prefix in ("x-ratelimit-", "x-ratelimit-api_key-", "llm_provider-x-ratelimit-"):
                names = [f"{prefix}{part}-{kind}" for part in ("limit", "remaining", "reset")]
                if not any(name in headers for name in names):
                    continue
                text = headers.get(names[2])
                return _Dimension.checked(
                    _number(headers, names[0]),
                    _number(headers, names[1]),
                    None if text is None else parse_duration(text),
                )
            return _Dimension.checked(None, None, None)

        requests, tokens = openai("requests"), openai("tokens")

    waits = [w for w in (requests.wait(now), tokens.wait(now)) if w is not None]
    return RateLimitInfo(
        requests_limit=requests.per_minute_limit,
        requests_remaining=requests.remaining,
        requests_reset_s=requests.reset_s,
        tokens_limit=tokens.per_minute_limit,
        tokens_remaining=tokens.remaining,
        tokens_reset_s=tokens.reset_s,
        retry_after_s=retry_after,
        should_retry=should_retry,
        wait_s=max(waits) if waits else None,
    )
