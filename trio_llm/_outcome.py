"""How one attempt ended: one value, built in one place.

An ``Outcome`` is a completion, or a failure of one ``ErrorKind`` with what the server said
(status, message, code, request id, Retry-After) — and, either way, what its headers said about
our rate limits. The attempt builds it from a response with ``outcome_of``, or directly for
what never became a response (a transport failure, our timeout, no key available); the key's
lease settles it, the policy table decides what follows. Nothing else interprets a response.
"""

from __future__ import annotations

import re

import attrs

from ._errors import ProviderError
from ._headers import RateLimitInfo
from ._http import RawResponse, TransportFailure
from ._models import ErrorInfo, Usage
from ._policy import ErrorKind
from ._providers import Completion, Provider
from ._secrets import ApiKey

__all__ = ["NO_LIMITS", "Outcome", "failure_outcome", "outcome_of", "redact", "transport_outcome"]

#: What a response without rate-limit headers says about the limits: nothing.
NO_LIMITS = RateLimitInfo()


@attrs.frozen(kw_only=True)
class Outcome:
    """The result of one attempt.

    Attributes:
        kind: why it failed, or ``None`` for a completion.
        completion: the parsed answer, when it succeeded.
        message: the server's words or ours (keys redacted).
        status: the HTTP status, when a response arrived.
        code: the provider's error code (``rate_limit_exceeded``...), if any.
        request_id: the server's request id.
        retry_after: seconds the server asked us to wait.
        limits: what the response's headers said about the rate limits.
        should_retry: the server's ``x-should-retry``, which overrides the policy table.
        sent: whether a request went out (a refusal before sending is not an attempt).
        ttft_s: for a streamed answer, seconds from sending to its first output token.
        generation_s: for a streamed answer, seconds from its first output token to its end.
    """

    kind: ErrorKind | None = None
    completion: Completion | None = None
    message: str = ""
    status: int | None = None
    code: str | None = None
    request_id: str | None = None
    retry_after: float | None = None
    limits: RateLimitInfo = NO_LIMITS
    should_retry: bool | None = None
    sent: bool = True
    ttft_s: float | None = None
    generation_s: float | None = None

    @property
    def ok(self) -> bool:
        """Whether a completion arrived."""
        return self.kind is None

    @property
    def usage(self) -> Usage | None:
        """The tokens the server reported, if a completion arrived with them."""
        return None if self.completion is None else self.completion.usage

    def error(self) -> ErrorInfo:
        """The failure as a ``Result`` carries it."""
        assert self.kind is not None
        return ErrorInfo(
            kind=self.kind,
            message=self.message,
            status=self.status,
            code=self.code,
            request_id=self.request_id,
        )


_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")


def redact(text: str, key: ApiKey) -> str:
    """``text`` with ``key`` (and any bearer token) replaced by the key's fingerprint: servers
    echo what they were sent into their error messages."""
    secret = key.reveal()
    if secret and secret in text:
        text = text.replace(secret, key.fingerprint)
    return _BEARER.sub(lambda match: match.group(1) + key.fingerprint, text)


def outcome_of(provider: Provider, response: RawResponse, key: ApiKey) -> Outcome:
    """The outcome of a response: the provider parses it, this turns that into one value."""
    limits = provider.rate_limits(response.headers)
    try:
        completion = provider.parse_response(response.status, response.headers, response.body)
    except ProviderError as exc:
        return failure_outcome(exc, response.status, limits, key)
    return Outcome(
        completion=completion,
        status=response.status,
        request_id=completion.request_id,
        limits=limits,
    )


def failure_outcome(exc: ProviderError, status: int, limits: RateLimitInfo, key: ApiKey) -> Outcome:
    """The outcome of a response the provider refused (an error answer, or an error event in
    a stream), with what its headers said."""
    return Outcome(
        kind=exc.kind,
        message=redact(exc.message, key),
        status=exc.status if exc.status is not None else status,
        code=exc.code,
        request_id=exc.request_id,
        retry_after=exc.retry_after if exc.retry_after is not None else limits.retry_after_s,
        limits=limits,
        should_retry=exc.should_retry if exc.should_retry is not None else limits.should_retry,
    )


def transport_outcome(failure: TransportFailure) -> Outcome:
    """The outcome of an exchange that got no (whole) response."""
    return Outcome(
        kind=failure.kind,
        message=failure.message,
        code="connect_error" if failure.connect else None,
    )
