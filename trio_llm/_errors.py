"""The exceptions trio-llm raises.

Per-item failures never leave ``Engine.map``: they become ``Result(ok=False, error=...)``.
Exceptions reach the caller only for misuse, for bad input files, and for cancellation::

    TrioLLMError
     ├── ConfigurationError (also ValueError)   bad settings: fix the call, with a HINT
     ├── InputError (also ValueError)           a bad line in an input file: file, line, field
     └── ProviderError                          one attempt failed (internal; becomes a Result)
          └── NoKeysLeftError                   every key of the pool was dropped
"""

from __future__ import annotations

from ._policy import ErrorKind

__all__ = [
    "ConfigurationError",
    "InputError",
    "NoKeysLeftError",
    "ProviderError",
    "TrioLLMError",
]


class TrioLLMError(Exception):
    """The root of every exception trio-llm raises."""


class ConfigurationError(TrioLLMError, ValueError):
    """The engine, a key pool or the CLI was configured in a way that cannot work.

    The message says what is wrong and, where it helps, ends with a ``HINT:`` naming the right
    call.
    """


class InputError(TrioLLMError, ValueError):
    """One input item cannot become a request.

    Attributes:
        source: where the item came from (a file name, ``<stdin>``, ``<input>``).
        line: 1-based line number in ``source`` (``None`` for in-memory inputs).
        field: the JSON path of the offending field (``$.body.messages``), if known.
    """

    def __init__(
        self, message: str, *, source: str = "<input>", line: int | None = None, field: str = ""
    ) -> None:
        self.source = source
        self.line = line
        self.field = field
        #: The item's own id, when the item got far enough to show one.
        self.item_id: str | None = None
        where = source if line is None else f"{source}:{line}"
        if field:
            where = f"{where} {field}"
        super().__init__(f"{where}: {message}")
        self.reason = message


class ProviderError(TrioLLMError):
    """One attempt at a request failed.

    Raised inside the engine's retry loop and turned into ``Result.error`` (an ``ErrorInfo``),
    so it only reaches user code through custom providers.

    Attributes:
        kind: what went wrong (``ErrorKind``); decides retry, key cooldown or key drop.
        status: the HTTP status, if a response arrived.
        retry_after: seconds the server asked us to wait, if it said so.
        request_id: the server's request id (``x-request-id``), if any.
        code: the provider's error code (``rate_limit_exceeded``, ``insufficient_quota``...).
        should_retry: the server's ``x-should-retry`` header, which overrides the table.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        code: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id
        self.code = code
        self.should_retry = should_retry

    def __repr__(self) -> str:
        return f"ProviderError({self.kind.value!r}, {self.message!r}, status={self.status})"


class NoKeysLeftError(ProviderError):
    """Every key in the pool was dropped (401/403/insufficient_quota): nothing can be sent."""

    def __init__(self, message: str = "every API key was dropped; nothing can be sent") -> None:
        super().__init__(ErrorKind.NO_KEYS, message)
