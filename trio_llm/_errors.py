"""The exceptions trio-llm raises.

Per-item failures never leave ``Engine.map``: they become ``Result(ok=False, error=...)``.
Exceptions reach the caller only for misuse, for bad input files, and for cancellation::

    TrioLLMError
     ├── ConfigurationError (also ValueError)   bad settings: fix the call, with a HINT
     ├── InputError (also ValueError)           a bad line in an input file: file, line, field
     ├── SourceError                            the caller's input iterator raised; carries the
     │                                          results of what was read before (``results``)
     └── ProviderError                          a provider's way to say a response is a failure
                                                (the engine turns it into a failed Result)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._policy import ErrorKind

if TYPE_CHECKING:
    from ._models import Result

__all__ = [
    "ConfigurationError",
    "InputError",
    "ProviderError",
    "SourceError",
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


class SourceError(TrioLLMError):
    """The caller's input (a generator, an async iterator, a file being read) raised.

    The run stopped reading; what had been read was finished. The original exception is the
    ``__cause__``.

    Attributes:
        results: from ``map``, one ``Result`` per item read before the error, in input order
            (a stream has already handed them out: there it is empty).
        read: how many items were read before the error.
    """

    def __init__(
        self, cause: BaseException, results: Sequence[Result], *, read: int | None = None
    ) -> None:
        self.results = list(results)
        self.read = len(self.results) if read is None else read
        where = "their results are on .results" if self.results else "their results came first"
        super().__init__(
            f"the input source raised {type(cause).__name__}: {cause} "
            f"(after {self.read} items; {where})"
        )


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
