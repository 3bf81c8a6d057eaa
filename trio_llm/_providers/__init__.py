"""Providers turn a ``Request`` into an HTTP request and a response into a ``Completion``."""

from ._anthropic import AnthropicMessages
from ._azure import AzureOpenAI
from ._base import (
    Completion,
    HttpRequest,
    Provider,
    StreamDecoder,
    StreamingProvider,
    error_from_response,
)
from ._embeddings import OpenAIEmbeddings, PackLimits
from ._openai import OpenAICompatible
from ._responses import OpenAIResponses

__all__ = [
    "AnthropicMessages",
    "AzureOpenAI",
    "Completion",
    "HttpRequest",
    "OpenAICompatible",
    "OpenAIEmbeddings",
    "OpenAIResponses",
    "PackLimits",
    "Provider",
    "StreamDecoder",
    "StreamingProvider",
    "error_from_response",
]
