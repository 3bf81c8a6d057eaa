"""OpenAI-compatible chat completions (OpenAI, vLLM, SGLang, llama.cpp, Together, ...)."""

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
from ._tools import openai_finish, openai_tool_calls

__all__ = ["ChatStreamDecoder", "OpenAICompatible"]


@final
class OpenAICompatible:
    """A server speaking OpenAI's ``POST {base_url}/chat/completions``.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1`` or
            ``http://127.0.0.1:8000/v1``.
        model: the model every request uses unless its body names another.
        name: a label for events and summaries.
        headers: extra headers sent with every request (e.g. an ``OpenAI-Organization``).
    """

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        model: str = "gpt-4o-mini",
        *,
        name: str = "openai",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = checked_base_url(
            base_url, model, "OpenAICompatible(base_url='http://127.0.0.1:8000/v1', model=...)"
        )
        self._model = model
        self._name = name
        self._url = f"{self.base_url}/chat/completions"
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": f"trio-llm/{__version__}",
            **(headers or {}),
        }

    def __repr__(self) -> str:
        return f"OpenAICompatible(base_url={self.base_url!r}, model={self._model!r})"

    @property
    def name(self) -> str:
        """A label for events and summaries."""
        return self._name

    @property
    def model(self) -> str:
        """The default model."""
        return self._model

    def build_body(self, request: Request) -> dict[str, Any]:
        """The JSON body: the request's params untouched, its messages, the default model."""
        body: dict[str, Any] = {"model": self._model}
        body.update(request.params)
        body["messages"] = list(request.messages)
        if body.get("stream") is True:
            # Usage comes on the last chunk only when asked for; the token accounting needs it.
            options = body.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, Mapping) else {}),
                "include_usage": True,
            }
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    def build_request(self, request: Request, api_key: str) -> HttpRequest:
        """POST the body to ``/chat/completions`` with a bearer key."""
        headers = dict(self._headers)
        headers["authorization"] = f"Bearer {api_key}"
        body = self.build_body(request)
        stream = body.get("stream") is True
        if stream:
            headers["accept"] = "text/event-stream"
        return HttpRequest(
            method="POST", url=self._url, headers=headers, content=dump_json(body), stream=stream
        )

    def stream_decoder(self, headers: Mapping[str, str]) -> ChatStreamDecoder:
        """A decoder for a streamed chat completion (``chat.completion.chunk`` events)."""
        return ChatStreamDecoder(headers.get("x-request-id"))

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        """The first choice's content, finish reason and usage; errors as ``ProviderError``.

        A refusal (``content: null`` and ``refusal: "..."``) is a ``refused`` error carrying
        the model's words; ``content`` given as a list of parts is joined into one text.
        """
        if not 200 <= status < 300:
            raise error_from_response(status, headers, body)
        request_id = headers.get("x-request-id")
        try:
            data = load_json(body)
            choices = data["choices"]
            if not choices:
                raise ValueError("no choices")
            choice = choices[0]
            message = choice["message"]
            refusal = message.get("refusal")
            text = _content_text(message.get("content"))
            usage = _usage(data.get("usage"))
            finish = openai_finish(choice.get("finish_reason"), refused=bool(refusal))
            tool_calls = openai_tool_calls(message)
        except PARSE_ERRORS as exc:
            raise malformed(status, request_id, "a chat completion", exc) from None
        if refusal and not text and not tool_calls:
            raise ProviderError(
                ErrorKind.REFUSED,
                f"the model refused: {refusal}",
                status=status,
                request_id=request_id,
                code="refusal",
            )
        return Completion(
            text=text,
            finish_reason=finish,
            usage=usage,
            request_id=request_id,
            raw=data,
            tool_calls=tool_calls,
        )

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """OpenAI-style ``x-ratelimit-*`` headers and Retry-After."""
        return parse_rate_limit_headers(headers)


@final
class ChatStreamDecoder:
    """Assembles a streamed chat completion: ``chat.completion.chunk`` events, the usage chunk
    (``stream_options.include_usage``), then ``data: [DONE]``.

    A chunk ``{"error": {...}}`` (OpenAI, vLLM and LiteLLM send one when the model fails after
    the 200) raises a ``stream_error``; a stream that ends before ``[DONE]`` is cut off, unless
    its ``finish_reason`` and usage chunks both came.
    """

    __slots__ = (
        "_done",
        "_finish",
        "_id",
        "_model",
        "_parts",
        "_refusal",
        "_request_id",
        "_usage",
        "started",
    )

    def __init__(self, request_id: str | None) -> None:
        self._request_id = request_id
        self._parts: list[str] = []
        self._refusal: list[str] = []
        self._finish: str | None = None
        self._usage: Mapping[str, Any] | None = None
        self._id: str | None = None
        self._model: str | None = None
        self._done = False
        self.started = False

    def feed(self, event: ServerSentEvent) -> bool:
        """Take one chunk; ``True`` at ``[DONE]``."""
        if event.data == "[DONE]":
            self._done = True
            return True
        try:
            chunk = load_json(event.data)
        except PARSE_ERRORS as exc:
            raise malformed(200, self._request_id, "a chat completion chunk", exc) from None
        if not isinstance(chunk, Mapping):
            raise malformed(200, self._request_id, "a chat completion chunk", TypeError())
        if chunk.get("error") is not None:
            raise stream_error(chunk["error"], self._request_id)
        self._id = self._id or chunk.get("id")
        self._model = self._model or chunk.get("model")
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self._usage = usage
        choices = chunk.get("choices")
        if not choices:
            return False
        try:
            choice = choices[0]
            delta = choice.get("delta") or {}
            text = _content_text(delta.get("content"))
            refusal = delta.get("refusal")
            finish = choice.get("finish_reason")
        except PARSE_ERRORS as exc:
            raise malformed(200, self._request_id, "a chat completion chunk", exc) from None
        if text:
            self._parts.append(text)
            self.started = True
        if isinstance(refusal, str) and refusal:
            self._refusal.append(refusal)
            self.started = True
        if isinstance(finish, str):
            self._finish = finish
        return False

    def finish(self) -> Completion:
        """The assembled completion (its ``raw`` in the shape of a whole ``chat.completion``)."""
        if not self._done and (self._finish is None or self._usage is None):
            # No [DONE]: whole only if both the finish and the usage chunk came (a server may
            # close right after them); else the text or its token count may be short.
            raise stream_cut(self._request_id, "[DONE]")
        text = "".join(self._parts)
        refusal = "".join(self._refusal)
        try:
            usage = _usage(self._usage)
        except ValueError as exc:
            raise malformed(200, self._request_id, "a chat completion chunk", exc) from None
        if refusal and not text:
            raise ProviderError(
                ErrorKind.REFUSED,
                f"the model refused: {refusal}",
                status=200,
                request_id=self._request_id,
                code="refusal",
            )
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        raw = {
            "id": self._id,
            "object": "chat.completion",
            "model": self._model,
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish}],
            "usage": None if self._usage is None else dict(self._usage),
        }
        return Completion(
            text=text,
            finish_reason=self._finish,
            usage=usage,
            request_id=self._request_id,
            raw=raw,
        )


def _content_text(content: object) -> str:
    """A message's text: a string, or the text parts of a list (tool calls leave it empty)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    raise TypeError("content is neither text nor a list of parts")


def _usage(data: object) -> Usage | None:
    """OpenAI's ``usage``, with its cached and reasoning token details."""
    if not isinstance(data, Mapping):
        return None
    prompt_details = data.get("prompt_tokens_details")
    completion_details = data.get("completion_tokens_details")
    return Usage(
        prompt_tokens=token_count(data.get("prompt_tokens"), "prompt_tokens"),
        completion_tokens=token_count(data.get("completion_tokens"), "completion_tokens"),
        cached_tokens=token_count(
            prompt_details.get("cached_tokens") if isinstance(prompt_details, Mapping) else None,
            "prompt_tokens_details.cached_tokens",
        ),
        reasoning_tokens=token_count(
            completion_details.get("reasoning_tokens")
            if isinstance(completion_details, Mapping)
            else None,
            "completion_tokens_details.reasoning_tokens",
        ),
    )
