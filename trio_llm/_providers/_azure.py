"""Azure OpenAI: OpenAI's API on a deployment URL, with an ``api-key`` header.

``POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`` (and
``/embeddings`` for an embedding deployment). The deployment is the model: a request that
names another model goes to the deployment of that name (fallback routes work unchanged).
Bodies, answers, errors and the ``x-ratelimit-*`` headers are OpenAI's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import final
from urllib.parse import quote

from .._headers import RateLimitInfo
from .._models import Request
from ._base import Completion, HttpRequest, checked_base_url
from ._embeddings import OpenAIEmbeddings
from ._openai import OpenAICompatible

__all__ = ["DEFAULT_AZURE_API_VERSION", "AzureOpenAI"]

#: Azure OpenAI's current GA data-plane API version.
DEFAULT_AZURE_API_VERSION = "2024-10-21"


@final
class AzureOpenAI:
    """An Azure OpenAI resource.

    Args:
        endpoint: the resource, e.g. ``https://my-resource.openai.azure.com``.
        deployment: the deployment requests go to unless their body names another.
        api_version: the ``api-version`` query parameter.
        embeddings: the deployment serves embeddings (``/embeddings``, packed as with
            ``OpenAIEmbeddings``) rather than chat completions.
        name: a label for events and summaries.
    """

    def __init__(
        self,
        endpoint: str,
        deployment: str,
        *,
        api_version: str = DEFAULT_AZURE_API_VERSION,
        embeddings: bool = False,
        name: str = "azure",
    ) -> None:
        self.endpoint = checked_base_url(
            endpoint,
            deployment,
            "AzureOpenAI(endpoint='https://my-resource.openai.azure.com', deployment=...)",
        ).removesuffix("/openai")
        self._deployment = deployment
        self._name = name
        self.api_version = api_version
        self._path = "embeddings" if embeddings else "chat/completions"
        # The body, the answer and the headers are OpenAI's: one of its providers does them.
        self._openai: OpenAICompatible | OpenAIEmbeddings = (
            OpenAIEmbeddings(self.endpoint, deployment, name=name)
            if embeddings
            else OpenAICompatible(self.endpoint, deployment, name=name)
        )
        if isinstance(self._openai, OpenAIEmbeddings):
            self.packing = self._openai.packing

    def __repr__(self) -> str:
        return f"AzureOpenAI(endpoint={self.endpoint!r}, deployment={self._deployment!r})"

    @property
    def name(self) -> str:
        """A label for events and summaries."""
        return self._name

    @property
    def model(self) -> str:
        """The default deployment."""
        return self._deployment

    def url(self, deployment: str) -> str:
        """The URL of a deployment."""
        return (
            f"{self.endpoint}/openai/deployments/{quote(deployment, safe='')}/{self._path}"
            f"?api-version={quote(self.api_version, safe='')}"
        )

    def build_request(self, request: Request, api_key: str) -> HttpRequest:
        """OpenAI's request on the deployment's URL, with an ``api-key`` header."""
        sent = self._openai.build_request(request, api_key)
        headers = {k: v for k, v in sent.headers.items() if k != "authorization"}
        headers["api-key"] = api_key
        return HttpRequest(
            method="POST",
            url=self.url(request.model or self._deployment),
            headers=headers,
            content=sent.content,
        )

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        """As OpenAI's."""
        return self._openai.parse_response(status, headers, body)

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """As OpenAI's (Azure sends ``x-ratelimit-remaining-*`` and Retry-After)."""
        return self._openai.rate_limits(headers)
