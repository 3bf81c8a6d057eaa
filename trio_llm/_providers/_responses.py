"""OpenAI's Responses API (``POST {base_url}/responses``), the API OpenAI now recommends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

from .._errors import ProviderError
from .._headers import RateLimitInfo, parse_rate_limit_headers
from .._models import Request, Usage
from .._policy import ErrorKind
from .._sse import ServerSentEvent
from .._version import __version__
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

__all__ = ["OpenAIResponses", "ResponsesStreamDecoder", "responses_input_messages"]

#: Chat-completions fields and their Responses names (a chat-shaped input works as is).
_RENAMED = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}
#: Chat-completions fields the Responses API refuses.
_CHAT_ONLY = ("stream_options", "n", "messages")
#: A chat content part's type, as the Responses API names it for a user and an assistant.
_PART_TYPES = {"text": ("input_text", "output_text"), "image_url": ("input_image", "input_image")}


@final
class OpenAIResponses:
    """A server speaking OpenAI's ``POST {base_url}/responses``.

    The same ``Request`` as for chat completions: its messages become ``input`` (chat content
    parts renamed as the Responses API names them), ``max_tokens`` becomes
    ``max_output_tokens``, and other fields (``instructions``, ``reasoning``...) pass through.
    The answer is the text of the ``output_text`` parts of ``output[].content[]``; usage is
    ``input_tokens`` / ``output_tokens`` with their cached and reasoning details. Rate limits
    come from the same ``x-ratelimit-*`` headers as chat completions.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1``.
        model: the model every request uses unless its params name another.
        name: a label for events and summaries.
        headers: extra headers sent with every request.
    """

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        model: str = "gpt-4o-mini",
        *,
        name: str = "openai-responses",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = checked_base_url(
            base_url, model, "OpenAIResponses(base_url='https://api.openai.com/v1', model=...)"
        )
        self._model = model
        self._name = name
        self._url = f"{self.base_url}/responses"
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": f"trio-llm/{__version__}",
            **(headers or {}),
        }

    def __repr__(self) -> str:
        return f"OpenAIResponses(base_url={self.base_url!r}, model={self._model!r})"

    @property
    def name(self) -> str:
        """A label for events and summaries."""
        return self._name

    @property
    def model(self) -> str:
        """The default model."""
        return self._model

    def build_body(self, request: Request) -> dict[str, Any]:
        """The Responses body for ``request``."""
        body: dict[str, Any] = {"model": self._model}
        for name, value in request.params.items():
            if name in _CHAT_ONLY:
                continue
            body[_RENAMED.get(name, name)] = value
        if body.get("stream") is not True:
            body.pop("stream", None)
        body["input"] = [_input_item(m) for m in request.messages]
        return body

    def build_request(self, request: Request, api_key: str) -> HttpRequest:
        """POST the body to ``/responses`` with a bearer key."""
        headers = dict(self._headers)
        headers["authorization"] = f"Bearer {api_key}"
        body = self.build_body(request)
        stream = body.get("stream") is True
        if stream:
            headers["accept"] = "text/event-stream"
        return HttpRequest(
            method="POST", url=self._url, headers=headers, content=dump_json(body), stream=stream
        )

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        """The output text, finish reason and usage; errors as ``ProviderError``.

        A 200 whose response has ``status: failed`` is the failure its ``error`` names.
        """
        if not 200 <= status < 300:
            raise error_from_response(status, headers, body)
        request_id = headers.get("x-request-id")
        try:
            data = load_json(body)
        except PARSE_ERRORS as exc:
            raise malformed(status, request_id, "a response", exc) from None
        return _completion(data, request_id, status)

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """OpenAI-style ``x-ratelimit-*`` headers and Retry-After."""
        return parse_rate_limit_headers(headers)

    def stream_decoder(self, headers: Mapping[str, str]) -> ResponsesStreamDecoder:
        """A decoder for a streamed response (``response.*`` events)."""
        return ResponsesStreamDecoder(headers.get("x-request-id"))


@final
class ResponsesStreamDecoder:
    """Assembles a streamed response: ``response.output_text.delta`` events, then
    ``response.completed`` (or ``response.incomplete``) carrying the whole response and its
    usage. ``response.failed`` and ``error`` raise a ``stream_error``; a stream without its
    terminal event is cut off. (The Responses API sends no ``[DONE]``.)"""

    __slots__ = ("_completion", "_parts", "_request_id", "started")

    def __init__(self, request_id: str | None) -> None:
        self._request_id = request_id
        self._parts: list[str] = []
        self._completion: Completion | None = None
        self.started = False

    def feed(self, event: ServerSentEvent) -> bool:
        """Take one event; ``True`` at the terminal one."""
        try:
            data = load_json(event.data)
            kind = data.get("type", event.event)
            if kind == "response.output_text.delta" or kind == "response.refusal.delta":
                delta = data["delta"]
                if not isinstance(delta, str):
                    raise TypeError("delta is not a string")
                if delta:
                    if kind == "response.output_text.delta":
                        self._parts.append(delta)
                    self.started = True
                return False
            if kind == "error":
                error = data.get("error")
                raise stream_error(error if isinstance(error, Mapping) else data, self._request_id)
            if kind == "response.failed":
                raise stream_error((data.get("response") or {}).get("error"), self._request_id)
            if kind in ("response.completed", "response.incomplete"):
                self._completion = _completion(data["response"], self._request_id, 200)
                return True
        except PARSE_ERRORS as exc:
            raise malformed(200, self._request_id, "a Responses stream event", exc) from None
        return False

    def finish(self) -> Completion:
        """The completion of the terminal event."""
        if self._completion is None:
            raise stream_cut(self._request_id, "response.completed")
        return self._completion


def responses_input_messages(value: object) -> list[Mapping[str, Any]]:
    """A Responses ``input`` as the messages of a ``Request``: a string is one user message,
    a list is its items as they are (the provider sends them back unchanged).

    Raises:
        ValueError: ``input`` is neither a non-empty string nor a non-empty list of objects.
    """
    if isinstance(value, str) and value:
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(isinstance(i, Mapping) for i in value):
        return list(value)
    raise ValueError("input must be a non-empty string or a non-empty list of objects")


def _input_item(message: Mapping[str, Any]) -> Mapping[str, Any]:
    """A chat message as a Responses input item: content parts renamed (``text`` ->
    ``input_text`` / ``output_text``); items already in the Responses shape are unchanged."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    assistant = message.get("role") == "assistant"
    parts: list[Any] = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") in _PART_TYPES:
            renamed = dict(part)
            renamed["type"] = _PART_TYPES[part["type"]][assistant]
            if part["type"] == "image_url":
                image = part.get("image_url")
                renamed["image_url"] = image.get("url") if isinstance(image, Mapping) else image
            parts.append(renamed)
        else:
            parts.append(part)
    return {**message, "content": parts}


def _completion(data: Any, request_id: str | None, status: int) -> Completion:
    """The completion in a Responses ``response`` object (whole, or from a terminal event)."""
    try:
        if data.get("status") == "failed" or data.get("error"):
            raise stream_error(data.get("error"), request_id, status=status)
        texts: list[str] = []
        refusals: list[str] = []
        for item in data["output"]:
            if not isinstance(item, Mapping) or item.get("type") != "message":
                continue  # reasoning, tool calls...
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    text = part["text"]
                    if not isinstance(text, str):
                        raise TypeError("output_text.text is not a string")
                    texts.append(text)
                elif part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal", "")))
        usage = _usage(data.get("usage"))
        finish = "stop"
        if data.get("status") == "incomplete":
            reason = (data.get("incomplete_details") or {}).get("reason")
            finish = "length" if reason == "max_output_tokens" else str(reason or "incomplete")
    except PARSE_ERRORS as exc:
        raise malformed(status, request_id, "a response", exc) from None
    text = "".join(texts)
    if refusals and not text:
        raise ProviderError(
            ErrorKind.REFUSED,
            f"the model refused: {''.join(refusals)}",
            status=status,
            request_id=request_id,
            code="refusal",
        )
    return Completion(text=text, finish_reason=finish, usage=usage, request_id=request_id, raw=data)


def _usage(data: object) -> Usage | None:
    """The Responses ``usage``: input and output tokens, cached and reasoning details."""
    if not isinstance(data, Mapping):
        return None
    input_details = data.get("input_tokens_details")
    output_details = data.get("output_tokens_details")
    return Usage(
        prompt_tokens=token_count(data.get("input_tokens"), "input_tokens"),
        completion_tokens=token_count(data.get("output_tokens"), "output_tokens"),
        cached_tokens=token_count(
            input_details.get("cached_tokens") if isinstance(input_details, Mapping) else None,
            "input_tokens_details.cached_tokens",
        ),
        reasoning_tokens=token_count(
            output_details.get("reasoning_tokens") if isinstance(output_details, Mapping) else None,
            "output_tokens_details.reasoning_tokens",
        ),
    )
