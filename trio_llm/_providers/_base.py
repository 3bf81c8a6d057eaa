"""The provider interface: small on purpose, so a new API slots in without touching the engine.

A provider builds the HTTP request for one ``Request`` with one key, and parses the response
into a ``Completion`` — or raises ``ProviderError`` with the kind from the one taxonomy in
``trio_llm._policy``. The engine does everything else (keys, limits, retries, timeouts).

A provider that can stream (``StreamingProvider``) marks a streamed request
(``HttpRequest.stream``) and gives a ``StreamDecoder`` for its answer: the engine feeds it the
server-sent events as they arrive, and it assembles the one ``Completion`` — or raises
``ProviderError`` for an error event or a stream that ended before its last event, so that a
half-streamed text is never a success.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import orjson

from .._errors import ConfigurationError, ProviderError
from .._headers import RateLimitInfo, parse_rate_limit_headers
from .._models import ErrorKind, Request, ToolCall, Usage
from .._policy import classify_status, classify_stream_error
from .._sse import ServerSentEvent

__all__ = [
    "PARSE_ERRORS",
    "Completion",
    "HttpRequest",
    "Provider",
    "StreamDecoder",
    "StreamingProvider",
    "checked_base_url",
    "dump_json",
    "error_from_response",
    "load_json",
    "malformed",
    "stream_cut",
    "stream_error",
    "token_count",
]

#: What parsing a body that is not the expected JSON can raise: caught and reported as
#: ``malformed`` by every provider (RecursionError: JSON nested deeper than Python recurses).
PARSE_ERRORS = (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError)


def load_json(body: bytes | str) -> Any:
    """The JSON value of a response body (raises one of ``PARSE_ERRORS`` when it is not).

    orjson: 2-11 x faster than the standard library on our bodies (benchmarks/
    HTTP_BACKENDS.md); like it, it refuses what is not JSON (NaN, ``Infinity``).
    """
    return orjson.loads(body)


def dump_json(value: Any) -> bytes:
    """A request body as compact JSON bytes (raises ``TypeError`` for what JSON cannot
    carry, a ``Decimal`` say)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def token_count(value: object, field: str) -> int:
    """A token count from a ``usage`` field: a whole number >= 0 (missing is 0).

    Anything else (a negative count, ``Infinity``, NaN, a string) raises ``ValueError``: such a
    body is malformed, and obeying it would corrupt the token accounting.
    """
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"usage.{field} is not a number")
    if not 0 <= value < 2**53 or value != int(value):
        raise ValueError(f"usage.{field} is not a whole number >= 0")
    return int(value)


@attrs.frozen(kw_only=True)
class HttpRequest:
    """What to send: the engine's HTTP layer sends it as is."""

    method: str
    url: str
    headers: Mapping[str, str]
    content: bytes
    #: The answer comes as server-sent events, read through the provider's stream decoder.
    stream: bool = False


@attrs.frozen(kw_only=True)
class Completion:
    """A successful response, parsed."""

    text: str
    finish_reason: str | None
    usage: Usage | None
    request_id: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    # Tool calls (issue 11): what the model asked to call.
    tool_calls: tuple[ToolCall, ...] = ()
    # Embeddings (issue 11): one vector per input sent, in the order sent.
    embeddings: tuple[Sequence[float], ...] | None = attrs.field(default=None, repr=False)


@runtime_checkable
class Provider(Protocol):
    """An LLM API the engine can send requests to."""

    @property
    def name(self) -> str:
        """A short label for events and summaries (``openai``, ``anthropic``)."""
        ...

    @property
    def model(self) -> str:
        """The model requests go to unless a request body names another."""
        ...

    def build_request(self, request: Request, api_key: str) -> HttpRequest:
        """The HTTP request for ``request``, authenticated with ``api_key``."""
        ...

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        """The completion in a response, or ``ProviderError`` saying why there is none."""
        ...

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """What the response headers say about our rate limits."""
        ...


class StreamDecoder(Protocol):
    """Assembles one streamed answer from its events (one decoder per attempt)."""

    @property
    def started(self) -> bool:
        """Whether the first output token has arrived (the moment of time-to-first-token)."""
        ...

    def feed(self, event: ServerSentEvent) -> bool:
        """Take one event; ``True`` once the stream's last event has arrived.

        Raises:
            ProviderError: the server sent an error event (``stream_error``).
        """
        ...

    def finish(self) -> Completion:
        """The completion, once the body has ended.

        Raises:
            ProviderError: the stream ended before its last event (``stream_cut``), or its
                answer is a refusal or is malformed.
        """
        ...


@runtime_checkable
class StreamingProvider(Provider, Protocol):
    """A provider whose API can stream (``"stream": true`` in the request's params)."""

    def stream_decoder(self, headers: Mapping[str, str]) -> StreamDecoder:
        """A decoder for one streamed answer whose response had these headers."""
        ...


def stream_error(error: object, request_id: str | None, *, status: int = 200) -> ProviderError:
    """A ``ProviderError`` for an error event that arrived after a 200 (Anthropic's ``event:
    error``, OpenAI's ``{"error": {...}}`` chunk, the Responses API's ``response.failed``),
    classified by ``classify_stream_error``."""
    message = "the server sent an error event mid-stream"
    code = error_type = None
    if isinstance(error, Mapping):
        raw_message, raw_code, raw_type = error.get("message"), error.get("code"), error.get("type")
        message = raw_message if isinstance(raw_message, str) and raw_message else message
        code = raw_code if isinstance(raw_code, str) else None
        error_type = raw_type if isinstance(raw_type, str) else None
    return ProviderError(
        classify_stream_error(code, error_type, message),
        f"HTTP {status}, then an error mid-stream: {message}",
        status=status,
        request_id=request_id,
        code=code or error_type,
    )


def stream_cut(request_id: str | None, what: str, *, status: int = 200) -> ProviderError:
    """A ``ProviderError`` for a stream that ended cleanly before ``what`` (its last event):
    the connection was cut, as with a body cut off after the headers."""
    return ProviderError(
        ErrorKind.CONNECTION,
        f"HTTP {status}, then the stream ended before {what}",
        status=status,
        request_id=request_id,
    )


_RETRY_WORDS = re.compile(
    r"(?:retry after|try again in)\s+(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s\b|seconds?)",
    re.IGNORECASE,
)


def retry_after_in_words(message: str) -> float | None:
    """Seconds a message asks to wait ("Please retry after 3 seconds", "try again in 1.2s")."""
    match = _RETRY_WORDS.search(message)
    if match is None:
        return None
    value = float(match.group(1))
    return value / 1000.0 if match.group(2).lower().startswith("m") else value


_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace")
    text = _SPACE.sub(" ", _TAGS.sub(" ", text)).strip()
    return text[:limit] + ("…" if len(text) > limit else "")


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """A ``ProviderError`` for a non-2xx response, whatever shape its body has.

    Understands OpenAI's ``{"error": {...}}``, vLLM/SGLang's ``{"object": "error", ...}``,
    Anthropic's ``{"type": "error", "error": {...}}``, and bodies that are not JSON at all
    (an HTML 502 page from a proxy).
    """
    message: str | None = None
    code: str | None = None
    error_type: str | None = None
    try:
        data = load_json(body)
    except PARSE_ERRORS:
        data = None
    if isinstance(data, Mapping):
        error = data.get("error")
        source: Mapping[str, Any] = error if isinstance(error, Mapping) else data
        if isinstance(error, str):
            message = error
        raw_message = source.get("message")
        if isinstance(raw_message, str):
            message = raw_message
        raw_code = source.get("code")
        if isinstance(raw_code, str):
            code = raw_code
        raw_type = source.get("type")
        if isinstance(raw_type, str):
            error_type = raw_type
    if message is None:
        message = _snippet(body) or "(empty body)"
    info = parse_rate_limit_headers(headers)
    kind = classify_status(status, code, error_type, message)
    retry_after = info.retry_after_s
    if retry_after is None and status in (429, 503, 529):
        # Servers that send no Retry-After often say it in words (Azure, LiteLLM, OpenAI).
        retry_after = retry_after_in_words(message)
    return ProviderError(
        kind,
        f"HTTP {status}: {message}",
        status=status,
        retry_after=retry_after,
        request_id=headers.get("x-request-id") or headers.get("request-id"),
        code=code or error_type,
        should_retry=info.should_retry,
    )


def malformed(status: int, request_id: str | None, what: str, exc: Exception) -> ProviderError:
    """A ``ProviderError`` for a 2xx whose body is not the ``what`` we expected."""
    return ProviderError(
        ErrorKind.MALFORMED,
        f"HTTP {status} with a body that is not {what} ({exc.__class__.__name__})",
        status=status,
        request_id=request_id,
    )


def checked_base_url(base_url: str, model: str, example: str) -> str:
    """``base_url`` without a trailing slash, after checking it and ``model`` (``example`` is
    the right call, shown in the hint)."""
    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"base_url must start with http:// or https://, got {base_url!r}\nHINT: {example}"
        )
    if not model:
        raise ConfigurationError("model must be a non-empty string")
    return base_url.rstrip("/")
