"""Frozen configuration values: rate limits and the retry policy.

Validators raise ``ConfigurationError`` at construction, so a bad setting fails before any
request is sent.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from ._errors import ConfigurationError

__all__ = ["Limits", "RetryPolicy"]


def _number(attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"{attribute.name} must be a number, got {type(value).__name__} {value!r}"
        )


def _positive_or_none(_: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None:
        return
    _number(attribute, value)
    if not value > 0:
        raise ConfigurationError(
            f"{attribute.name} must be a positive number or None (unknown), got {value!r}"
        )


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    _number(attribute, value)
    if not value > 0:
        raise ConfigurationError(f"{attribute.name} must be positive, got {value!r}")


def _non_negative(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    _number(attribute, value)
    if not value >= 0:
        raise ConfigurationError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    """Rate limits of one API key (or, as ``provider_limits``, of a whole account).

    ``None`` means unknown: the engine learns the limit from the server's rate-limit headers.

    Attributes:
        rpm: requests per minute.
        tpm: tokens per minute (prompt + completion, as the provider counts them).
        burst_s: how many seconds' worth of the rate may be sent at once. Providers enforce
            their per-minute limits over shorter windows, so a small burst avoids 429s.
    """

    rpm: float | None = attrs.field(default=None, validator=_positive_or_none)
    tpm: float | None = attrs.field(default=None, validator=_positive_or_none)
    burst_s: float = attrs.field(default=1.0, validator=_positive)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How failed attempts are retried.

    The backoff is stamina's formula (exponential, capped, jittered); the loop is trio-llm's own,
    so that it can honour the policy table (a dropped key is not an attempt, a 429 waits in the
    key's queue) and so that a library that never configured logging stays silent (stamina's
    instrumentation is process-wide and would print on every retry).

    Attributes:
        attempts: the most attempts per item, the first included.
        wait_initial: backoff before the first retry, seconds.
        wait_max: the longest backoff, seconds.
        wait_jitter: up to this many random seconds are added to each backoff.
        wait_exp_base: the backoff grows by this factor per attempt.
        max_retry_after: the longest a request waits for keys that may not send at all: a
            server's Retry-After longer than this moves the request to another key, or fails
            it at once if there is none; a breaker that stays open longer fails it too.
        deadline: seconds from an item's first attempt after which it is given up (``None`` =
            no per-item deadline).
        rate_limit_window: an item refused with 429s is not given up before its 429s span
            this many seconds, whatever ``attempts`` says (a server may refuse everything until
            its minute window turns over, saying nothing of when).
        malformed_attempts: the most attempts that may end in a malformed body (a server that
            answers nonsense once mostly does so again).
        invalid_output_attempts: the most answers that may fail their schema (they do not
            parse as JSON or do not validate) before the item fails as ``invalid_output``;
            counted apart from ``attempts``.
    """

    attempts: int = attrs.field(default=8, validator=_positive)
    wait_initial: float = attrs.field(default=0.5, validator=_non_negative)
    wait_max: float = attrs.field(default=30.0, validator=_non_negative)
    wait_jitter: float = attrs.field(default=1.0, validator=_non_negative)
    wait_exp_base: float = attrs.field(default=2.0, validator=_positive)
    max_retry_after: float = attrs.field(default=120.0, validator=_non_negative)
    deadline: float | None = attrs.field(default=None, validator=_positive_or_none)
    rate_limit_window: float = attrs.field(default=60.0, validator=_non_negative)
    malformed_attempts: int = attrs.field(default=2, validator=_positive)
    invalid_output_attempts: int = attrs.field(default=3, validator=_positive)

    def backoff(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1-based): exponential, capped, jittered (the
        formula stamina uses)."""
        try:
            exponential = self.wait_initial * self.wait_exp_base ** (retry - 1)
        except OverflowError:
            exponential = self.wait_max
        return min(self.wait_max, exponential + random.uniform(0, self.wait_jitter))
