"""trio-llm: thousands to millions of LLM API calls at the providers' rate limits, on trio."""

from ._breaker import BreakerPolicy as BreakerPolicy
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
from ._models import ErrorInfo as ErrorInfo
from ._models import ErrorKind as ErrorKind
from ._models import Request as Request
from ._models import Result as Result
from ._models import Usage as Usage
from ._pricing import ModelPrice as ModelPrice
from ._pricing import PriceTable as PriceTable
from ._providers import AnthropicMessages as AnthropicMessages
from ._providers import Completion as Completion
from ._providers import HttpRequest as HttpRequest
from ._providers import OpenAICompatible as OpenAICompatible
from ._providers import Provider as Provider
from ._routes import Route as Route
from ._scheduler import KeyStatistics as KeyStatistics
from ._secrets import ApiKey as ApiKey
from ._tokens import CharEstimator as CharEstimator
from ._version import __version__ as __version__

__all__ = [
    "AnthropicMessages",
    "ApiKey",
    "BreakerPolicy",
    "BucketStatistics",
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
    "ModelPrice",
    "OpenAICompatible",
    "PriceTable",
    "Provider",
    "ProviderError",
    "Request",
    "Result",
    "ResultStream",
    "RetryPolicy",
    "Route",
    "SourceError",
    "TokenBucket",
    "TrioLLMError",
    "Usage",
]
