"""Anthropic's Messages API (``POST {base_url}/messages``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

from .._errors import ProviderError
from .._headers import RateLimitInfo, parse_rate_limit_headers
from .._models import Request, Usage
from .._policy import ErrorKind
from .._sse import ServerSentEvent
from ._base import (
    PARSE_ERRORS,
    Completion,
    HttpRequest,
    checked_base_url,
    dump_json,
    error_from_response,
    load_json,
    malformed,
    stream_cut,
    stream_error,
    token_count,
)
from ._tools import anthropic_finish, anthropic_tool_calls

__all__ = ["AnthropicMessages", "MessagesStreamDecoder"]

#: The API version sent with every request.
ANTHROPIC_VERSION = "2023-06-01"


@final
class AnthropicMessages:
    """Anthropic's Messages API.

    The same ``Request`` as for OpenAI-compatible servers: system messages become the
    ``system`` field, ``max_tokens`` (required by Anthropic) defaults to ``default_max_tokens``,
    and other body fields pass through untouched. Rate limits come from the
    ``anthropic-ratelimit-*`` headers; 529 ``overloaded_error`` is an overload.

    Args:
        base_url: the API root, ``https://api.anthropic.com/v1`` by default.
        model: the model every request uses unless its params name another.
        default_max_tokens: ``max_tokens`` for requests that set none.
        name: a label for events and summaries.
    """

    def __init__(
        self,
        base_url: str = "https://api.anthropic.com/v1",
        model: str = "claude-haiku-4-5",
        *,
        default_max_tokens: int = 1024,
        name: str = "anthropic",
    ) -> None:
        self.base_url = checked_base_url(
            base_url, model, "AnthropicMessages(base_url='https://api.anthropic.com/v1', model=...)"
        )
        self._model = model
        self._name = name
        self._url = f"{self.base_url}/messages"
        self.default_max_tokens = default_max_tokens

    def __repr__(self) -> str:
        return f"AnthropicMessages(base_url={self.base_url!r}, model={self._model!r})"

    @property
    def name(self) -> str:
        """A label for events and summaries."""
        return self._name

    @property
    def model(self) -> str:
        """The default model."""
        return self._model

    def build_body(self, request: Request) -> dict[str, Any]:
        """The Messages API body for ``request``."""
        body: dict[str, Any] = {"model": self._model, "max_tokens": self.default_max_tokens}
        params = dict(request.params)
        if "max_completion_tokens" in params:
            params["max_tokens"] = params.pop("max_completion_tokens")
        for unsupported in ("stream_options", "n"):
            params.pop(unsupported, None)
        if params.get("stream") is not True:
            params.pop("stream", None)
        body.update(params)
        system = [m["content"] for m in request.messages if m.get("role") == "system"]
        if system and "system" not in body:
            body["system"] = "\n\n".join(str(part) for part in system)
        body["messages"] = [dict(m) for m in request.messages if m.get("role") != "system"]
        return body

    def build_request(self, request: Request, api_key: str) -> HttpRequest:
        """POST the body to ``/messages`` with an ``x-api-key``."""
        body = self.build_body(request)
        stream = body.get("stream") is True
        return HttpRequest(
            method="POST",
            url=self._url,
            headers={
                "content-type": "application/json",
                "accept": "text/event-stream" if stream else "application/json",
                "x-api-key": api_key,
                "anthropic-version": ANTHROPIC_VERSION,
            },
            content=dump_json(body),
            stream=stream,
        )

    def stream_decoder(self, headers: Mapping[str, str]) -> MessagesStreamDecoder:
        """A decoder for a streamed Messages answer."""
        return MessagesStreamDecoder(headers.get("request-id") or headers.get("x-request-id"))

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        """The text blocks, stop reason and usage; errors as ``ProviderError``."""
        if not 200 <= status < 300:
            raise error_from_response(status, headers, body)
        request_id = headers.get("request-id") or headers.get("x-request-id")
        try:
            data = load_json(body)
            blocks = data["content"]
            text = "".join(
                block["text"]
                for block in blocks
                if isinstance(block, Mapping) and block.get("type") == "text"
            )
            usage = _usage(data.get("usage") or {})
            stop = data.get("stop_reason")
            tool_calls = anthropic_tool_calls(blocks)
        except PARSE_ERRORS as exc:
            raise malformed(status, request_id, "a Messages response", exc) from None
        if stop == "refusal" and not text and not tool_calls:
            raise ProviderError(
                ErrorKind.REFUSED,
                "the model refused (stop_reason: refusal)",
                status=status,
                request_id=request_id,
                code="refusal",
            )
        return Completion(
            text=text,
            finish_reason=anthropic_finish(stop),
            usage=usage,
            request_id=request_id,
            raw=data,
            tool_calls=tool_calls,
        )

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """``anthropic-ratelimit-*`` headers and Retry-After."""
        return parse_rate_limit_headers(headers)


@final
class MessagesStreamDecoder:
    """Assembles a streamed Messages answer: ``message_start`` (the id and input usage),
    ``content_block_delta`` (``text_delta``), ``message_delta`` (stop reason, output usage),
    ``message_stop``. An ``error`` event (``overloaded_error`` after the 200) raises a
    ``stream_error``; a stream without ``message_stop`` is cut off."""

    __slots__ = ("_done", "_message", "_parts", "_request_id", "_stop", "_usage", "started")

    def __init__(self, request_id: str | None) -> None:
        self._request_id = request_id
        self._message: dict[str, Any] = {}
        self._parts: list[str] = []
        self._usage: dict[str, Any] = {}
        self._stop: str | None = None
        self._done = False
        self.started = False

    def feed(self, event: ServerSentEvent) -> bool:
        """Take one event; ``True`` at ``message_stop``."""
        try:
            data = load_json(event.data)
            kind = data.get("type", event.event)
            if kind == "error":
                raise stream_error(data.get("error"), self._request_id)
            if kind == "message_start":
                self._message = dict(data["message"])
                self._usage.update(self._message.get("usage") or {})
            elif kind == "content_block_delta":
                delta = data["delta"]
                if delta.get("type") == "text_delta":
                    text = delta["text"]
                    if not isinstance(text, str):
                        raise TypeError("text_delta.text is not a string")
                    if text:
                        self._parts.append(text)
                        self.started = True
            elif kind == "message_delta":
                stop = (data.get("delta") or {}).get("stop_reason")
                if isinstance(stop, str):
                    self._stop = stop
                self._usage.update(data.get("usage") or {})
            elif kind == "message_stop":
                self._done = True
                return True
        except PARSE_ERRORS as exc:
            raise malformed(200, self._request_id, "a Messages stream event", exc) from None
        return False

    def finish(self) -> Completion:
        """The assembled answer (its ``raw`` in the shape of a whole Messages response)."""
        if not self._done:
            raise stream_cut(self._request_id, "message_stop")
        text = "".join(self._parts)
        try:
            usage = _usage(self._usage)
        except ValueError as exc:
            raise malformed(200, self._request_id, "a Messages stream event", exc) from None
        if self._stop == "refusal" and not text:
            raise ProviderError(
                ErrorKind.REFUSED,
                "the model refused (stop_reason: refusal)",
                status=200,
                request_id=self._request_id,
                code="refusal",
            )
        raw = {
            **self._message,
            "content": [{"type": "text", "text": text}],
            "stop_reason": self._stop,
            "usage": self._usage,
        }
        return Completion(
            text=text,
            finish_reason=self._stop,
            usage=usage,
            request_id=self._request_id,
            raw=raw,
        )


def _usage(data: Mapping[str, Any]) -> Usage:
    """Anthropic's ``usage``: ``input_tokens`` excludes the prompt cache's reads and writes,
    which are added in (they are input too, and priced apart)."""
    fresh = token_count(data.get("input_tokens"), "input_tokens")
    written = token_count(data.get("cache_creation_input_tokens"), "cache_creation_input_tokens")
    read = token_count(data.get("cache_read_input_tokens"), "cache_read_input_tokens")
    return Usage(
        prompt_tokens=fresh + written + read,
        completion_tokens=token_count(data.get("output_tokens"), "output_tokens"),
        cached_tokens=read,
        cache_write_tokens=written,
    )
