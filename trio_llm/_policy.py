"""What happens after each kind of failure: the one table every module reads.

An attempt ends in an outcome of one ``ErrorKind`` (or a completion). This module says, for
each kind, whether the item is tried again, what happens to the key, whether the failure
counts against a circuit breaker, whether a failed line is run again on resume, and whether it
stops the whole run. Nothing else in trio-llm decides these things.

======================  ===================================  =====  ======  =======  =====  ====
kind                    failure                              retry  key     breaker  rerun  stop
======================  ===================================  =====  ======  =======  =====  ====
``rate_limited``        429 ``rate_limit_exceeded``          queue  cool    -        yes    -
``quota``               429 ``insufficient_quota``, no credit move   drop    -        yes    -
``auth``                401, 403                             move   drop    -        yes    -
``overloaded``          529, 503                             yes    -       yes      yes    -
``server_error``        500, 502, 504, other 5xx, 409        yes    -       yes      yes    -
``timeout``             408, our per-attempt timeout         yes    -       yes      yes    -
``connection``          connect error, reset, dropped        yes    -       yes      yes    -
``malformed``           2xx with a bad or truncated body     yes    -       -        yes    -
``bad_request``         400, other 4xx                       -      -       -        -      -
``context_length``      400 context too long                 -      -       -        -      -
``not_found``           404                                  -      -       -        -      -
``unprocessable``       422                                  -      -       -        -      -
``refused``             the model declined (``refusal``)     -      -       -        -      -
``invalid_output``      the answer fails its schema          again  -       -        yes    -
``no_keys``             every key was dropped                -      -       -        yes    -
``deadline``            the item's or the run's deadline     -      -       -        yes    yes
``cancelled``           Ctrl-C, the caller left              -      -       -        yes    yes
``budget``              ``--budget`` reached                 -      -       -        yes    yes
``invalid_input``       the input cannot become a request    -      -       -        -      -
``internal``            an unexpected error in one item      -      -       -        yes    -
======================  ===================================  =====  ======  =======  =====  ====

Retry ``yes`` waits a jittered exponential backoff (or the server's Retry-After) and counts
against ``RetryPolicy.attempts``. ``queue`` goes back to the key scheduler at once: the cooled
key waits out the server's Retry-After while other keys carry on. ``move`` takes another key at
once and does not count against the attempts: the key was the problem, not the item.
``again`` asks once more at once, up to ``RetryPolicy.invalid_output_attempts`` (counted apart
from the transport's attempts): the server did its job, the model's answer did not parse or
validate against the request's schema.

A server's ``x-should-retry: true|false`` header overrides the retry column, except for key
problems.

An error event in a streamed answer after its 200 (Anthropic's ``overloaded_error``, a
Responses ``response.failed``) is classified by its error type as the status that type stands
for (``classify_stream_error``); a type we do not know is a ``server_error``: the server began
to answer, then failed. A stream that ends before its last event is a ``connection`` failure.
Either way the half-streamed text is dropped.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

__all__ = [
    "POLICY",
    "ErrorKind",
    "KeyAction",
    "Retry",
    "Rule",
    "classify_status",
    "classify_stream_error",
    "rule_for",
]


class ErrorKind(enum.StrEnum):
    """Why an attempt or an item failed; see the table in ``trio_llm._policy``."""

    RATE_LIMITED = "rate_limited"
    QUOTA = "quota"
    AUTH = "auth"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    MALFORMED = "malformed"
    BAD_REQUEST = "bad_request"
    CONTEXT_LENGTH = "context_length"
    NOT_FOUND = "not_found"
    UNPROCESSABLE = "unprocessable"
    REFUSED = "refused"
    INVALID_OUTPUT = "invalid_output"
    NO_KEYS = "no_keys"
    DEADLINE = "deadline"
    CANCELLED = "cancelled"
    BUDGET = "budget"
    INVALID_INPUT = "invalid_input"
    INTERNAL = "internal"


class Retry(enum.Enum):
    """Whether and how an item is tried again after a failure of some kind."""

    NO = "no"
    BACKOFF = "backoff"  # wait a jittered exponential backoff (or Retry-After); counts
    QUEUE = "queue"  # back to the scheduler at once (the key cools); counts
    MOVE = "move"  # another key at once; does not count (the key was dropped)
    AGAIN = "again"  # ask again at once; counts against RetryPolicy.invalid_output_attempts


class KeyAction(enum.Enum):
    """What a failure does to the key that sent the request."""

    NONE = "none"
    COOL = "cool"  # wait out the server's Retry-After on this key
    DROP = "drop"  # out for the rest of the run


@attrs.frozen(kw_only=True)
class Rule:
    """The row of the table for one kind.

    Attributes:
        retry: whether and how the item is tried again.
        key: what happens to the key that sent it.
        breaker: counts as a failure of the endpoint for the key's and provider's breakers.
        rerun: a failed line of this kind is run again when a file run resumes (the failure
            was not the input's fault).
        stops_run: the run stops: nothing more is sent, the rest fail with this kind.
    """

    retry: Retry = Retry.NO
    key: KeyAction = KeyAction.NONE
    breaker: bool = False
    rerun: bool = False
    stops_run: bool = False

    @property
    def retryable(self) -> bool:
        """Whether another attempt may succeed."""
        return self.retry is not Retry.NO


_K = ErrorKind
_ENDPOINT_FAILURE = Rule(retry=Retry.BACKOFF, breaker=True, rerun=True)
_KEY_PROBLEM = Rule(retry=Retry.MOVE, key=KeyAction.DROP, rerun=True)
_FINAL = Rule()
_STOP = Rule(rerun=True, stops_run=True)

#: The table: ``ErrorKind -> Rule``.
POLICY: Final[Mapping[ErrorKind, Rule]] = MappingProxyType(
    {
        _K.RATE_LIMITED: Rule(retry=Retry.QUEUE, key=KeyAction.COOL, rerun=True),
        _K.QUOTA: _KEY_PROBLEM,
        _K.AUTH: _KEY_PROBLEM,
        _K.OVERLOADED: _ENDPOINT_FAILURE,
        _K.SERVER_ERROR: _ENDPOINT_FAILURE,
        _K.TIMEOUT: _ENDPOINT_FAILURE,
        _K.CONNECTION: _ENDPOINT_FAILURE,
        _K.MALFORMED: Rule(retry=Retry.BACKOFF, rerun=True),
        _K.BAD_REQUEST: _FINAL,
        _K.CONTEXT_LENGTH: _FINAL,
        _K.NOT_FOUND: _FINAL,
        _K.UNPROCESSABLE: _FINAL,
        _K.REFUSED: _FINAL,
        _K.INVALID_OUTPUT: Rule(retry=Retry.AGAIN, rerun=True),
        _K.NO_KEYS: Rule(rerun=True),
        _K.DEADLINE: _STOP,
        _K.CANCELLED: _STOP,
        _K.BUDGET: _STOP,
        _K.INVALID_INPUT: _FINAL,
        _K.INTERNAL: Rule(rerun=True),
    }
)


def rule_for(kind: ErrorKind, should_retry: bool | None = None) -> Rule:
    """The rule for ``kind``, with a server's ``x-should-retry`` header applied."""
    rule = POLICY[kind]
    if should_retry is None or rule.key is KeyAction.DROP:
        return rule
    if should_retry and rule.retry is Retry.NO:
        return attrs.evolve(rule, retry=Retry.BACKOFF)
    if not should_retry and rule.retry is not Retry.NO:
        return attrs.evolve(rule, retry=Retry.NO)
    return rule


_QUOTA_MARKERS = frozenset({"insufficient_quota", "billing_error"})
_CONTEXT_MARKERS = frozenset({"context_length_exceeded", "string_above_max_length"})
# What servers say in the message when they have no code for it (vLLM, Anthropic, LiteLLM).
_CONTEXT_WORDS = (
    "maximum context length",
    "context length",
    "context window",
    "prompt is too long",
    "input is too long",
)
_QUOTA_WORDS = ("credit balance is too low", "exceeded your current quota")
_AUTH_WORDS = ("invalid api key", "incorrect api key", "no_db_connection", "authentication")


def classify_status(
    status: int, code: str | None = None, error_type: str | None = None, message: str = ""
) -> ErrorKind:
    """The kind of a failed HTTP response, from its status, the provider's error code and type,
    and (for servers that give neither) the words of its message."""
    markers = {code or "", error_type or ""}
    words = message.lower()
    if status == 429:
        quota = markers & _QUOTA_MARKERS or any(w in words for w in _QUOTA_WORDS)
        return _K.QUOTA if quota else _K.RATE_LIMITED
    if status in (401, 403):
        return _K.AUTH
    if status in (503, 529) or "overloaded_error" in markers:
        return _K.OVERLOADED
    if status == 408:
        return _K.TIMEOUT
    if status in (501, 505):
        return _K.NOT_FOUND  # the server does not serve this API at all: a wrong base URL
    if status >= 500 or status == 409:
        return _K.SERVER_ERROR
    if status == 404:
        return _K.NOT_FOUND
    if status == 422:
        return _K.UNPROCESSABLE
    if markers & _QUOTA_MARKERS or any(w in words for w in _QUOTA_WORDS):
        return _K.QUOTA
    if markers & _CONTEXT_MARKERS or any(w in words for w in _CONTEXT_WORDS):
        return _K.CONTEXT_LENGTH
    if status == 400 and ("no_db_connection" in markers or any(w in words for w in _AUTH_WORDS)):
        return _K.AUTH
    return _K.BAD_REQUEST


#: The status each error type of an error event stands for (Anthropic's and OpenAI's types).
_STREAM_ERROR_STATUS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "invalid_request_error": 400,
        "authentication_error": 401,
        "permission_error": 403,
        "not_found_error": 404,
        "request_too_large": 413,
        "rate_limit_error": 429,
        "rate_limit_exceeded": 429,
        "insufficient_quota": 429,
        "api_error": 500,
        "server_error": 500,
        "overloaded_error": 529,
    }
)


def classify_stream_error(
    code: str | None = None, error_type: str | None = None, message: str = ""
) -> ErrorKind:
    """The kind of an error event that arrived mid-stream, after a 200: its type (or code)
    read as the status it stands for; unknown ones are server errors (retryable)."""
    status = _STREAM_ERROR_STATUS.get(error_type or "") or _STREAM_ERROR_STATUS.get(code or "")
    return classify_status(status or 500, code, error_type, message)
