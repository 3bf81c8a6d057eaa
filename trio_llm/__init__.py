"""trio-llm: thousands to millions of LLM API calls at the providers' rate limits, on trio.

Public names are imported on first use (PEP 562): ``import trio_llm`` and ``trio-llm --help``
load no engine, no HTTP stack and no trio until a name that needs them is used.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from ._version import __version__ as __version__

if _typing.TYPE_CHECKING:
    from ._breaker import BreakerPolicy as BreakerPolicy
    from ._cache import Cache as Cache
    from ._cache import CacheStatistics as CacheStatistics
    from ._config import Limits as Limits
    from ._config import RetryPolicy as RetryPolicy
    from ._engine import Engine as Engine
    from ._engine import EngineStatistics as EngineStatistics
    from ._engine import ResultStream as ResultStream
    from ._errors import ConfigurationError as ConfigurationError
    from ._errors import InputError as InputError
    from ._errors import ProviderError as ProviderError
    from ._errors import SourceError as SourceError
    from ._errors import TrioLLMError as TrioLLMError
    from ._keys import KeyPool as KeyPool
    from ._limiter import BucketStatistics as BucketStatistics
    from ._limiter import TokenBucket as TokenBucket
    from ._metrics import PrometheusConsumer as PrometheusConsumer
    from ._metrics import serve_metrics as serve_metrics
    from ._models import ErrorInfo as ErrorInfo
    from ._models import ErrorKind as ErrorKind
    from ._models import Request as Request
    from ._models import Result as Result
    from ._models import ToolCall as ToolCall
    from ._models import Usage as Usage
    from ._pricing import ModelPrice as ModelPrice
    from ._pricing import PriceTable as PriceTable
    from ._providers import AnthropicMessages as AnthropicMessages
    from ._providers import AzureOpenAI as AzureOpenAI
    from ._providers import Completion as Completion
    from ._providers import HttpRequest as HttpRequest
    from ._providers import OpenAICompatible as OpenAICompatible
    from ._providers import OpenAIEmbeddings as OpenAIEmbeddings
    from ._providers import OpenAIResponses as OpenAIResponses
    from ._providers import PackLimits as PackLimits
    from ._providers import Provider as Provider
    from ._routes import Route as Route
    from ._scheduler import KeyStatistics as KeyStatistics
    from ._secrets import ApiKey as ApiKey
    from ._store import LimitsStore as LimitsStore
    from ._store import MemoryStore as MemoryStore
    from ._store import RedisStore as RedisStore
    from ._tokens import CharEstimator as CharEstimator
    from ._tracing import OtelConsumer as OtelConsumer

#: Where each public name lives.
_SOURCES: dict[str, str] = {
    "BreakerPolicy": "._breaker",
    "Cache": "._cache",
    "CacheStatistics": "._cache",
    "Limits": "._config",
    "RetryPolicy": "._config",
    "Engine": "._engine",
    "EngineStatistics": "._engine",
    "ResultStream": "._engine",
    "ConfigurationError": "._errors",
    "InputError": "._errors",
    "ProviderError": "._errors",
    "SourceError": "._errors",
    "TrioLLMError": "._errors",
    "KeyPool": "._keys",
    "KeyStatistics": "._scheduler",
    "BucketStatistics": "._limiter",
    "TokenBucket": "._limiter",
    "PrometheusConsumer": "._metrics",
    "serve_metrics": "._metrics",
    "ErrorInfo": "._models",
    "ErrorKind": "._models",
    "Request": "._models",
    "Result": "._models",
    "ToolCall": "._models",
    "Usage": "._models",
    "ModelPrice": "._pricing",
    "PriceTable": "._pricing",
    "AnthropicMessages": "._providers",
    "AzureOpenAI": "._providers",
    "Completion": "._providers",
    "HttpRequest": "._providers",
    "OpenAICompatible": "._providers",
    "OpenAIResponses": "._providers",
    "OpenAIEmbeddings": "._providers",
    "PackLimits": "._providers",
    "Provider": "._providers",
    "Route": "._routes",
    "ApiKey": "._secrets",
    "LimitsStore": "._store",
    "MemoryStore": "._store",
    "RedisStore": "._store",
    "CharEstimator": "._tokens",
    "OtelConsumer": "._tracing",
}

__all__ = [
    "AnthropicMessages",
    "ApiKey",
    "AzureOpenAI",
    "BreakerPolicy",
    "BucketStatistics",
    "Cache",
    "CacheStatistics",
    "CharEstimator",
    "Completion",
    "ConfigurationError",
    "Engine",
    "EngineStatistics",
    "ErrorInfo",
    "ErrorKind",
    "HttpRequest",
    "InputError",
    "KeyPool",
    "KeyStatistics",
    "Limits",
    "LimitsStore",
    "MemoryStore",
    "ModelPrice",
    "OpenAICompatible",
    "OpenAIEmbeddings",
    "OpenAIResponses",
    "OtelConsumer",
    "PackLimits",
    "PriceTable",
    "PrometheusConsumer",
    "Provider",
    "ProviderError",
    "RedisStore",
    "Request",
    "Result",
    "ResultStream",
    "RetryPolicy",
    "Route",
    "SourceError",
    "TokenBucket",
    "ToolCall",
    "TrioLLMError",
    "Usage",
    "serve_metrics",
]


def __getattr__(name: str) -> _typing.Any:
    """Import a public name on first use, and keep it (the next use is a plain lookup)."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'trio_llm' has no attribute {name!r}")
    value = getattr(_importlib.import_module(source, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
