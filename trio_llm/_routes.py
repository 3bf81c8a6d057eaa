"""Routes: one engine over several endpoints (two OpenAI-compatible deployments, say), each
with its own keys and limits. Each attempt goes to the endpoint whose keys can send soonest
and whose circuit breaker is closed, so the load follows the capacity.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, final

import attrs
import trio

from ._breaker import BreakerPolicy, CircuitBreaker
from ._config import Limits
from ._errors import ConfigurationError
from ._events import EventHub
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


@attrs.frozen(kw_only=True)
class Route:
    """One endpoint an engine may send to.

    Attributes:
        provider: the endpoint (``OpenAICompatible(base_url=..., model=...)``).
        keys: its API keys, or a ``KeyPool``.
        limits: per-key limits here; ``None`` takes the engine's ``limits``.
        provider_limits: limits shared by all of this endpoint's keys.
    """

    provider: Provider = attrs.field(validator=_check_provider)
    keys: KeyPool | Iterable[str | ApiKey] = attrs.field(validator=_check_keys)
    limits: Limits | None = None
    provider_limits: Limits | None = None


@final
class Endpoint:
    """A route at work: its provider, its key pool and its provider-wide breaker."""

    def __init__(
        self, route: Route, events: EventHub, limits: Limits, breaker: BreakerPolicy | None
    ) -> None:
        self.provider = route.provider
        keys = route.keys
        self.pool = keys if isinstance(keys, KeyPool) else KeyPool(keys)
        self.pool.attach(events, route.limits or limits, route.provider_limits, breaker)
        self._breaker_policy = breaker
        self._breaker: CircuitBreaker | None = None
        self._breaker_run: object = None

    def breaker(self) -> CircuitBreaker | None:
        """The provider's breaker, anew for each trio run (it reads trio's clock)."""
        if self._breaker_policy is None:
            return None
        run = trio.lowlevel.current_root_task()
        if self._breaker is None or self._breaker_run is not run:
            self._breaker = CircuitBreaker(self._breaker_policy, self.provider.name)
            self._breaker_run = run
        return self._breaker

    def delay(self, tokens: float) -> float:
        """Seconds until this endpoint could send a request of ``tokens`` (inf: no keys)."""
        breaker = self.breaker()
        blocked = 0.0 if breaker is None else breaker.delay()
        return max(self.pool.soonest(tokens), blocked)

    def __repr__(self) -> str:
        return f"Endpoint({self.provider!r}, {self.pool!r})"
