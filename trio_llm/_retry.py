"""What to do when an attempt fails: the error taxonomy, in one place.

====================================  ===================  ===============================
failure                               kind                 the engine
====================================  ===================  ===============================
429 ``rate_limit_exceeded``           RATE_LIMITED         cool the key, retry (any key)
429 ``insufficient_quota``            QUOTA                drop the key, retry on another
401, 403                              AUTH                 drop the key, retry on another
529, 503                              OVERLOADED           back off, retry
500, 502, 504, other 5xx, 409         SERVER_ERROR         back off, retry
408, our per-attempt timeout          TIMEOUT              back off, retry
connect error, reset, dropped         CONNECTION           back off, retry
200 with a bad or truncated body      MALFORMED            back off, retry
400 ``context_length_exceeded``       CONTEXT_LENGTH       fail the item
400, other 4xx                        BAD_REQUEST          fail the item
404                                   NOT_FOUND            fail the item
422                                   UNPROCESSABLE        fail the item
====================================  ===================  ===============================

A server's ``x-should-retry: true|false`` header overrides the table. A Retry-After is honoured
exactly, unless it is longer than ``RetryPolicy.max_retry_after``: then the request moves to
another key, or fails when there is none.
"""

from __future__ import annotations

from ._models import ErrorKind

__all__ = ["KEY_PROBLEMS", "RETRYABLE", "classify_status", "is_retryable"]

#: Kinds worth another attempt.
RETRYABLE = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.OVERLOADED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
        ErrorKind.MALFORMED,
        ErrorKind.AUTH,
        ErrorKind.QUOTA,
    }
)
#: Kinds that say the key, not the request, is the problem: the key is dropped.
KEY_PROBLEMS = frozenset({ErrorKind.AUTH, ErrorKind.QUOTA})


def classify_status(
    status: int, code: str | None = None, error_type: str | None = None
) -> ErrorKind:
    """The kind of a failed HTTP response, from its status and the provider's error code."""
    markers = {code or "", error_type or ""}
    if status == 429:
        return ErrorKind.QUOTA if "insufficient_quota" in markers else ErrorKind.RATE_LIMITED
    if status in (401, 403):
        return ErrorKind.AUTH
    if status in (503, 529) or "overloaded_error" in markers:
        return ErrorKind.OVERLOADED
    if status == 408:
        return ErrorKind.TIMEOUT
    if status >= 500 or status == 409:
        return ErrorKind.SERVER_ERROR
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status == 422:
        return ErrorKind.UNPROCESSABLE
    if "context_length_exceeded" in markers:
        return ErrorKind.CONTEXT_LENGTH
    return ErrorKind.BAD_REQUEST


def is_retryable(kind: ErrorKind, should_retry: bool | None = None) -> bool:
    """Whether an attempt that failed with ``kind`` is worth another one."""
    if should_retry is not None and kind not in KEY_PROBLEMS:
        return should_retry
    return kind in RETRYABLE
