"""The values that flow through trio-llm: requests in, results out.

All are frozen attrs classes; (un)structuring to JSON goes through the one converter in
``_convert``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ErrorInfo", "ErrorKind", "Request", "Result", "Usage"]


class ErrorKind(enum.StrEnum):
    """Why an attempt or an item failed. ``_retry.classify`` maps every failure to one kind.

    The taxonomy (what the engine does with each kind) is documented in ``_retry``.
    """

    RATE_LIMITED = "rate_limited"  # 429 rate_limit_exceeded
    OVERLOADED = "overloaded"  # 529, 503: the provider as a whole is busy
    SERVER_ERROR = "server_error"  # other 5xx, 409
    TIMEOUT = "timeout"  # our per-attempt timeout, or 408 from the server
    CONNECTION = "connection"  # connect error, reset, dropped mid-response
    MALFORMED = "malformed"  # a 200 whose body is not the JSON we expect
    BAD_REQUEST = "bad_request"  # 400 and other 4xx not listed here
    CONTEXT_LENGTH = "context_length"  # 400 context_length_exceeded
    NOT_FOUND = "not_found"  # 404 (wrong model or URL)
    UNPROCESSABLE = "unprocessable"  # 422
    AUTH = "auth"  # 401 / 403: the key is bad
    QUOTA = "quota"  # 429 insufficient_quota: the key has no money left
    # Items that were never (fully) sent:
    NO_KEYS = "no_keys"  # every key was dropped
    DEADLINE = "deadline"  # the request's or the run's deadline passed
    CANCELLED = "cancelled"  # the run was cancelled (Ctrl-C, caller left)
    BUDGET = "budget"  # --budget reached before this item was sent
    INVALID_INPUT = "invalid_input"  # the input item could not become a request


@attrs.frozen(kw_only=True)
class Usage:
    """Tokens a response consumed, as the server reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """Why an item failed: enough to act on without reading logs.

    Attributes:
        kind: the failure class (``ErrorKind``).
        message: the server's message or ours.
        status: the HTTP status of the last attempt, if a response arrived.
        code: the provider's error code (``context_length_exceeded``...), if any.
        request_id: the server's request id, for a support ticket.
    """

    kind: ErrorKind
    message: str
    status: int | None = None
    code: str | None = None
    request_id: str | None = None

    @property
    def retryable(self) -> bool:
        """Whether running the item again later may succeed (it was not the input's fault)."""
        return self.kind not in _NOT_RETRYABLE


_NOT_RETRYABLE = frozenset(
    {
        ErrorKind.BAD_REQUEST,
        ErrorKind.CONTEXT_LENGTH,
        ErrorKind.NOT_FOUND,
        ErrorKind.UNPROCESSABLE,
        ErrorKind.INVALID_INPUT,
    }
)


def _freeze_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


@attrs.frozen(kw_only=True, eq=False)
class Request:
    """One chat request, provider-neutral.

    Build one with ``Request.from_prompt("...")``, ``Request.from_messages([...])`` or
    ``Request.from_body({...})``; ``Engine.map`` does this for you for strings, message lists and
    body dicts.

    Attributes:
        messages: the chat messages (``{"role": ..., "content": ...}`` dicts).
        params: every other body field (``max_tokens``, ``temperature``, unknown ones too); they
            pass through to the provider untouched.
        id: the caller's id for this item (a JSONL ``id`` / ``custom_id``), echoed on the result.
    """

    messages: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    id: str | None = None

    @classmethod
    def from_prompt(cls, prompt: str, *, id: str | None = None, **params: Any) -> Request:
        """A single user message."""
        return cls(messages=({"role": "user", "content": prompt},), params=params, id=id)

    @classmethod
    def from_messages(
        cls,
        messages: list[Mapping[str, Any]] | tuple[Mapping[str, Any], ...],
        *,
        id: str | None = None,
        **params: Any,
    ) -> Request:
        """A chat history, as the OpenAI ``messages`` field."""
        return cls(messages=tuple(messages), params=params, id=id)

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, id: str | None = None) -> Request:
        """An OpenAI request body; every field but ``messages`` passes through untouched."""
        params = {k: v for k, v in body.items() if k != "messages"}
        return cls(messages=tuple(body["messages"]), params=params, id=id)

    @property
    def max_tokens(self) -> int | None:
        """The completion cap the request asks for, if any."""
        value = self.params.get("max_completion_tokens", self.params.get("max_tokens"))
        return value if isinstance(value, int) else None

    def prompt_text(self) -> str:
        """All message text joined; what token estimators and the mock server read."""
        parts: list[str] = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(
                    str(part.get("text", "")) for part in content if isinstance(part, Mapping)
                )
        return "\n".join(parts)


@attrs.frozen(kw_only=True)
class Result:
    """The outcome of one input item: exactly one per input, succeeded or failed.

    Attributes:
        index: the item's 0-based position in the input.
        id: the caller's id for the item, if it had one.
        ok: whether a completion arrived.
        text: the completion text (``None`` when failed).
        finish_reason: why generation stopped (``stop``, ``length``...).
        usage: the tokens the server reported.
        error: why the item failed (``None`` when ok).
        attempts: how many requests were sent for it (0 if never sent).
        latency: seconds from the first attempt to the result, on trio's clock.
        key_id: fingerprint of the key that answered (never the key itself).
        cost_usd: the price of ``usage`` for the model, if the model's price is known.
        raw: the provider's response body, when the engine was asked to keep it.
    """

    index: int
    id: str | None = None
    ok: bool
    text: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None
    attempts: int = 0
    latency: float = 0.0
    key_id: str | None = None
    cost_usd: float | None = None
    raw: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
