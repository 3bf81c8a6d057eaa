"""Rate-limit headers in each server's dialect (``MockServerConfig.headers``).

The counters of :mod:`._mock_limits` hold the state; this module only spells it the way a given
server does. The dialects and what they send (each quoted in ``tests/real_shapes.py``):

=================  ==========================================  =================================
dialect            on every limited response                   added on a 429
=================  ==========================================  =================================
``openai``         ``x-ratelimit-{limit,remaining,reset}-*``   ``retry-after``, ``retry-after-ms``
                   (no reset with ``window="minute"``)
``none``           nothing                                     nothing
``litellm``        bucket: ``x-ratelimit-api_key-{remaining,   bucket: ``retry-after: 60``,
                   limit}-*``; minute: ``x-ratelimit-          ``rate_limit_type``, ``reset_at``;
                   {remaining,limit}-*`` (no reset)            minute: float ``retry-after`` to
                                                               the next minute, nothing else
``litellm_relay``  bare ``x-ratelimit-{limit,remaining}-*``    ``llm_provider-retry-after``
                   + ``llm_provider-`` copies (reset too)
``groq``           requests family from ``rpd`` (per day),     ``retry-after``
                   tokens from ``tpm``; Go-duration resets
``anthropic``      ``anthropic-ratelimit-{requests,tokens,     ``retry-after``
                   input-tokens,output-tokens}-{limit,
                   remaining,reset}``, RFC 3339 resets
``azure``          ``x-ratelimit-remaining-{requests,tokens}``  ``retry-after``
=================  ==========================================  =================================
"""

from __future__ import annotations

import math
import time
from typing import Literal, TypeAlias

from ._mock_config import HeaderDialect
from ._mock_limits import Admission, Counter, KeyLimits, LimitName, format_reset

__all__ = ["Api", "Headers", "limit_headers", "resolve_dialect", "retry_headers", "rfc3339"]

Headers = list[tuple[bytes, bytes]]
Api: TypeAlias = Literal["openai", "anthropic"]

#: The 429 ``rate_limit_type`` LiteLLM's v3 limiter reports for each of our counters.
_LITELLM_TYPE: dict[LimitName, str] = {
    "requests": "requests",
    "requests_day": "requests",
    "tokens": "tokens",
    "input_tokens": "tokens",
    "output_tokens": "tokens",
}


def resolve_dialect(dialect: HeaderDialect, api: Api) -> HeaderDialect:
    """``"native"`` is OpenAI's on chat completions and Anthropic's on ``/v1/messages``."""
    if dialect != "native":
        return dialect
    return "anthropic" if api == "anthropic" else "openai"


def rfc3339(wall: float) -> str:
    """Unix time *wall* rounded up to the second, as ``2025-08-21T12:40:59Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(wall - 1e-9)))


def _h(name: str, value: object) -> tuple[bytes, bytes]:
    return name.encode(), str(value).encode()


def _openai(limits: KeyLimits, now: float) -> Headers:
    headers: Headers = []
    for suffix in ("requests", "tokens"):
        counter = limits.counters.get(suffix)
        if counter is None:
            continue
        headers.append(_h(f"x-ratelimit-limit-{suffix}", counter.limit))
        headers.append(_h(f"x-ratelimit-remaining-{suffix}", counter.remaining(now)))
        if limits.window != "minute":
            headers.append(_h(f"x-ratelimit-reset-{suffix}", format_reset(counter.reset_s(now))))
    return headers


def _per_minute(limits: KeyLimits) -> list[tuple[str, Counter]]:
    return [
        (suffix, counter)
        for suffix in ("requests", "tokens")
        if (counter := limits.counters.get(suffix)) is not None
    ]


def limit_headers(dialect: HeaderDialect, limits: KeyLimits, now: float, wall: float) -> Headers:
    """The rate-limit headers of a response from a limited key, in *dialect* (resolved).

    Args:
        dialect: a resolved dialect (not ``"native"``).
        limits: the key's counters.
        now: the server's clock.
        wall: Unix time now (for absolute resets).
    """
    if dialect == "openai":
        return _openai(limits, now)
    if dialect == "litellm":
        # v3 (the default limiter): x-ratelimit-{descriptor}-{remaining,limit}-{type};
        # v1 (calendar minutes): x-ratelimit-{remaining,limit}-{type}, never a reset.
        infix = "" if limits.window == "minute" else "api_key-"
        headers: Headers = []
        for suffix, counter in _per_minute(limits):
            headers.append(_h(f"x-ratelimit-{infix}remaining-{suffix}", counter.remaining(now)))
            headers.append(_h(f"x-ratelimit-{infix}limit-{suffix}", counter.limit))
        return headers
    if dialect == "litellm_relay":
        upstream = _openai(limits, now)
        bare = [(name, value) for name, value in upstream if b"-reset-" not in name]
        return bare + [(b"llm_provider-" + name, value) for name, value in upstream]
    if dialect == "groq":
        headers = []
        day = limits.counters.get("requests_day")
        tokens = limits.counters.get("tokens")
        for suffix, maybe in (("requests", day), ("tokens", tokens)):
            if maybe is None:
                continue
            headers.append(_h(f"x-ratelimit-limit-{suffix}", maybe.limit))
            headers.append(_h(f"x-ratelimit-remaining-{suffix}", maybe.remaining(now)))
            headers.append(_h(f"x-ratelimit-reset-{suffix}", format_reset(maybe.reset_s(now))))
        return headers
    if dialect == "anthropic":
        headers = []
        families: tuple[tuple[LimitName, str], ...] = (
            ("requests", "requests"),
            ("tokens", "tokens"),
            ("input_tokens", "input-tokens"),
            ("output_tokens", "output-tokens"),
        )
        for name, family in families:
            found = limits.counters.get(name)
            if found is None:
                continue
            prefix = f"anthropic-ratelimit-{family}"
            headers.append(_h(f"{prefix}-limit", found.limit))
            headers.append(_h(f"{prefix}-remaining", found.remaining(now)))
            headers.append(_h(f"{prefix}-reset", rfc3339(wall + found.reset_s(now))))
        return headers
    if dialect == "azure":
        return [
            _h(f"x-ratelimit-remaining-{suffix}", counter.remaining(now))
            for suffix, counter in _per_minute(limits)
        ]
    return []  # "none"


def _seconds(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))


def retry_headers(
    dialect: HeaderDialect,
    admission: Admission,
    limits: KeyLimits,
    now: float,
    wall: float,
) -> Headers:
    """The headers of a 429 for *admission* (refused by ``limits``), in *dialect* (resolved)."""
    wait_s = admission.wait_s
    if dialect == "openai":
        return [
            _h("retry-after", _seconds(wait_s)),
            # Whole milliseconds, rounded up: retrying at exactly this time is admitted.
            _h("retry-after-ms", max(1, math.ceil(round(wait_s * 1000, 6)))),
            *limit_headers(dialect, limits, now, wall),
        ]
    if dialect == "litellm":
        if limits.window == "minute":
            # v1: headers={"retry-after": str(self.time_to_next_minute())}, a float.
            to_next_minute = 60.0 - (wall % 60.0)
            return [_h("retry-after", str(round(to_next_minute, 6)))]
        # v3: retry-after is the whole window, whatever is left of it; reset_at likewise.
        assert admission.limited_by is not None
        reset_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall + 60.0))
        return [
            _h("retry-after", "60"),
            _h("rate_limit_type", _LITELLM_TYPE[admission.limited_by]),
            _h("reset_at", reset_at),
        ]
    if dialect == "litellm_relay":
        return [
            _h("llm_provider-retry-after", _seconds(wait_s)),
            *limit_headers(dialect, limits, now, wall),
        ]
    if dialect in ("groq", "anthropic", "azure"):
        return [_h("retry-after", _seconds(wait_s)), *limit_headers(dialect, limits, now, wall)]
    return []  # "none"
