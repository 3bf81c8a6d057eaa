"""Routes: one engine over several endpoints (two OpenAI-compatible deployments, say), each
with its own keys and limits. Each attempt goes to the endpoint whose keys can send soonest
and whose circuit breaker is closed, so the load follows the capacity (``trio_llm._scheduler``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from ._config import Limits
from ._errors import ConfigurationError
from ._keys import KeyPool
from ._providers import Provider
from ._secrets import ApiKey

__all__ = ["Route"]


def _check_provider(_: Any, __: Any, provider: Any) -> None:
    if not isinstance(provider, Provider):
        raise ConfigurationError(
            f"provider must be a trio_llm provider, got {type(provider).__name__}\n"
            "HINT: Engine(provider=trio_llm.OpenAICompatible(base_url=..., model=...), ...)"
        )


def _check_keys(_: Any, __: Any, keys: Any) -> None:
    if isinstance(keys, str):
        raise ConfigurationError(
            "keys must be a list of keys, not one string\nHINT: keys=['sk-...'] or "
            "keys=trio_llm.KeyPool.from_env('OPENAI_API_KEY')"
        )


def _check_limits(_: Any, attribute: attrs.Attribute[Any], limits: Any) -> None:
    if limits is not None and not isinstance(limits, Limits):
        raise ConfigurationError(
            f"{attribute.name} must be a trio_llm.Limits, got {type(limits).__name__}\n"
            "HINT: limits=trio_llm.Limits(rpm=500, tpm=200_000)"
        )


@attrs.frozen(kw_only=True)
class Route:
    """One endpoint an engine may send to.

    Attributes:
        provider: the endpoint (``OpenAICompatible(base_url=..., model=...)``).
        keys: its API keys, or a ``KeyPool``.
        limits: per-key limits here; ``None`` takes the engine's ``limits``.
        provider_limits: limits shared by all of this endpoint's keys.
        name: how results and events name it (default: the provider's name and model).
        model: send every request here to this model, whatever the request names (a fallback
            to a longer-context or stronger model); ``None`` keeps the request's own model.
    """

    provider: Provider = attrs.field(validator=_check_provider)
    keys: KeyPool | Iterable[str | ApiKey] = attrs.field(validator=_check_keys)
    limits: Limits | None = attrs.field(default=None, validator=_check_limits)
    provider_limits: Limits | None = attrs.field(default=None, validator=_check_limits)
    name: str | None = None
    model: str | None = None

    @property
    def label(self) -> str:
        """The route's name in results and events."""
        return self.name or f"{self.provider.name}/{self.model or self.provider.model}"

    def pool(self) -> KeyPool:
        """The route's keys as a ``KeyPool`` (checked)."""
        return self.keys if isinstance(self.keys, KeyPool) else KeyPool(self.keys)
