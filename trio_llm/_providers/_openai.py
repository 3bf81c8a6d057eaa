"""OpenAI-compatible chat completions (OpenAI, vLLM, SGLang, llama.cpp, Together, ...)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, final

from .._headers import RateLimitInfo, parse_rate_limit_headers
from .._models import Request, Usage
from .._version import __version__
from ._base import Completion, HttpRequest, checked_base_url, error_from_response, malformed

__all__ = ["OpenAICompatible"]


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
        # The engine reads whole responses; a streamed body would be parsed as malformed.
        body.pop("stream", None)
        body.pop("stream_options", None)
        return body

    def build_request(self, request: Request, api_key: str) -> HttpRequest:
        """POST the body to ``/chat/completions`` with a bearer key."""
        headers = dict(self._headers)
        headers["authorization"] = f"Bearer {api_key}"
        return HttpRequest(
            method="POST",
            url=self._url,
            headers=headers,
            content=json.dumps(self.build_body(request), separators=(",", ":")).encode(),
        )

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        """The first choice's content, finish reason and usage; errors as ``ProviderError``."""
        if not 200 <= status < 300:
            raise error_from_response(status, headers, body)
        request_id = headers.get("x-request-id")
        try:
            data = json.loads(body)
            choice = data["choices"][0]
            message = choice["message"]
            text = message.get("content")
            if text is None:
                # Tool calls and refusals leave content empty; keep the rest in ``raw``.
                text = message.get("refusal") or ""
            if not isinstance(text, str):
                raise TypeError("content is not a string")
            usage_data = data.get("usage")
            usage = (
                Usage(
                    prompt_tokens=int(usage_data.get("prompt_tokens") or 0),
                    completion_tokens=int(usage_data.get("completion_tokens") or 0),
                )
                if isinstance(usage_data, Mapping)
                else None
            )
            finish = choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise malformed(status, request_id, "a chat completion", exc) from None
        return Completion(
            text=text,
            finish_reason=finish if isinstance(finish, str) else None,
            usage=usage,
            request_id=request_id,
            raw=data,
        )

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """OpenAI-style ``x-ratelimit-*`` headers and Retry-After."""
        return parse_rate_limit_headers(headers)
