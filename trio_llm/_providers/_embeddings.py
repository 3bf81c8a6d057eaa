"""OpenAI-compatible embeddings (``POST {base_url}/embeddings``), many inputs per request.

The engine packs inputs (``trio_llm._packer``): the request this provider sends has a list
``input``, and its ``Completion`` carries one vector per input, in the order sent (the
response's ``data[].index`` says which is which; the order of ``data`` is not trusted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, final

import attrs

from .._errors import ConfigurationError
from .._headers import RateLimitInfo, parse_rate_limit_headers
from .._models import Request, Usage
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
    token_count,
)

__all__ = ["OpenAIEmbeddings", "PackLimits"]


@attrs.frozen(kw_only=True)
class PackLimits:
    """How many inputs one embeddings request may carry.

    Attributes:
        max_inputs: inputs per request (OpenAI: 2048).
        max_tokens: tokens per request, as estimated before sending (OpenAI: 300,000).
    """

    max_inputs: int = 2048
    max_tokens: int = 300_000

    def __attrs_post_init__(self) -> None:
        for name in ("max_inputs", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")


@final
class OpenAIEmbeddings:
    """A server speaking OpenAI's ``POST {base_url}/embeddings``.

    Give it to an ``Engine`` and map inputs (``engine.embed(texts)``, or ``engine.map`` of
    ``{"input": "..."}`` items): the engine packs up to ``max_inputs`` inputs and
    ``max_tokens`` estimated tokens into each request, and every input gets its own
    ``Result`` with ``Result.embedding``.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1``.
        model: the embedding model unless an item names another.
        max_inputs: inputs per request (OpenAI's limit: 2048).
        max_tokens: estimated tokens per request (OpenAI's limit: 300,000).
        name: a label for events and summaries.
        headers: extra headers sent with every request.
    """

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        model: str = "text-embedding-3-small",
        *,
        max_inputs: int = 2048,
        max_tokens: int = 300_000,
        name: str = "openai-embeddings",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = checked_base_url(
            base_url, model, "OpenAIEmbeddings(base_url='https://api.openai.com/v1', model=...)"
        )
        self._model = model
        self._name = name
        self._url = f"{self.base_url}/embeddings"
        self.packing = PackLimits(max_inputs=max_inputs, max_tokens=max_tokens)
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": f"trio-llm/{__version__}",
            **(headers or {}),
        }

    def __repr__(self) -> str:
        return f"OpenAIEmbeddings(base_url={self.base_url!r}, model={self._model!r})"

    @property
    def name(self) -> str:
        """A label for events and summaries."""
        return self._name

    @property
    def model(self) -> str:
        """The default model."""
        return self._model

    def build_body(self, request: Request) -> dict[str, Any]:
        """The body: the request's params (its ``input`` packed as a list) and the model."""
        body: dict[str, Any] = {"model": self._model}
        body.update(request.params)
        return body

    def build_request(self, request: Request, api_key: str) -> HttpRequest:
        """POST the body to ``/embeddings`` with a bearer key."""
        headers = dict(self._headers)
        headers["authorization"] = f"Bearer {api_key}"
        return HttpRequest(
            method="POST",
            url=self._url,
            headers=headers,
            content=dump_json(self.build_body(request)),
        )

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        """One vector per input, by ``data[].index``; a response that does not have exactly
        one for each index is malformed (no input is answered with another's vector)."""
        if not 200 <= status < 300:
            raise error_from_response(status, headers, body)
        request_id = headers.get("x-request-id")
        try:
            data = load_json(body)
            vectors = _vectors(data["data"])
            usage_data = data.get("usage")
            usage = None
            if isinstance(usage_data, Mapping):
                prompt = token_count(usage_data.get("prompt_tokens"), "prompt_tokens")
                usage = Usage(prompt_tokens=prompt)
        except PARSE_ERRORS as exc:
            raise malformed(status, request_id, "an embeddings response", exc) from None
        return Completion(
            text="",
            finish_reason=None,
            usage=usage,
            request_id=request_id,
            raw=data,
            embeddings=vectors,
        )

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """OpenAI-style ``x-ratelimit-*`` headers and Retry-After."""
        return parse_rate_limit_headers(headers)


def _vectors(data: object) -> tuple[Sequence[float], ...]:
    if not isinstance(data, list) or not data:
        raise ValueError("no data")
    by_index: dict[int, Sequence[float]] = {}
    for entry in data:
        index = entry["index"]
        vector = entry["embedding"]
        if isinstance(index, bool) or not isinstance(index, int) or index in by_index:
            raise ValueError("a bad or repeated index")
        if not isinstance(vector, list):
            raise TypeError("embedding is not a list of numbers")
        by_index[index] = vector
    if sorted(by_index) != list(range(len(by_index))):
        raise ValueError("indexes are not 0..n-1")
    return tuple(by_index[i] for i in range(len(by_index)))
