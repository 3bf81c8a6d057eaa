"""The engine: prompts in, one Result per prompt out, as fast as the rate limits allow.

An ``Engine`` is configuration plus a *session*: one HTTP layer, one ``trio.CapacityLimiter``
for requests in flight, and one scheduler of keys and limits per trio run, shared by every
caller (``map``, ``stream``, ``complete``, concurrently or one after another). Each call is a
run (``trio_llm._run``); each attempt of each item is ``trio_llm._attempt``.

::

    Engine.map / stream / complete
      └─ Run (producer → channel → workers)          trio_llm._run
           └─ attempt (lease → HTTP → outcome)      trio_llm._attempt
                └─ Scheduler (keys, buckets, waits)  trio_llm._scheduler
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeAlias, final

import attrs
import httpx
import sniffio
import trio

from ._attempt import Sender
from ._breaker import BreakerPolicy
from ._cache import Cache, CacheSession
from ._config import Limits, RetryPolicy
from ._errors import ConfigurationError, SourceError
from ._events import EventConsumer, EventHub
from ._http import HttpPool
from ._keys import KeyPool
from ._models import Prompt, Request, Result, to_request
from ._policy import ErrorKind
from ._pricing import PriceTable
from ._providers import PackLimits, Provider
from ._routes import Route
from ._run import Item, Run, RunParts, Source
from ._scheduler import EndpointSpec, KeyStatistics, Scheduler
from ._secrets import ApiKey
from ._store import LimitsStore
from ._structured import OutputSchema
from ._tokens import CharEstimator, Estimator

__all__ = ["DEFAULT_FALLBACK_ON", "Engine", "EngineStatistics", "Priority", "ResultStream"]

#: Which lane a call goes in: a background ``"batch"``, or ``"interactive"`` (ahead of it).
Priority: TypeAlias = Literal["batch", "interactive"]

#: What moves an item down a fallback chain by default: whatever another endpoint or model
#: may do better (its context is longer, it serves the model, it is up, its keys are good),
#: not the input's own faults.
DEFAULT_FALLBACK_ON: frozenset[ErrorKind] = frozenset(
    {
        ErrorKind.CONTEXT_LENGTH,
        ErrorKind.NOT_FOUND,
        ErrorKind.SERVER_ERROR,
        ErrorKind.OVERLOADED,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
        ErrorKind.MALFORMED,
        ErrorKind.RATE_LIMITED,
        ErrorKind.AUTH,
        ErrorKind.QUOTA,
        ErrorKind.NO_KEYS,
    }
)


@attrs.frozen(kw_only=True)
class EngineStatistics:
    """A snapshot of an engine.

    Attributes:
        in_flight: requests sent and not answered yet.
        scheduled: requests holding a concurrency slot, waiting for their key's moment.
        waiting: requests ready to go but held back by the concurrency cap.
        keys: every key's state.
        interactive_waiting: interactive calls waiting for one of their own slots.
        interactive_in_flight: interactive calls holding one (waiting for a key, or sent).
    """

    in_flight: int
    scheduled: int
    waiting: int
    keys: tuple[KeyStatistics, ...]
    interactive_waiting: int = 0
    interactive_in_flight: int = 0


@final
class Engine:
    """Sends many chat requests concurrently, within every rate limit, losing none.

    Args:
        provider: the API, e.g. ``OpenAICompatible(base_url=..., model=...)``.
        keys: API keys, or a ``KeyPool`` (``KeyPool.from_env("OPENAI_API_KEY")``).
        routes: instead of ``provider`` and ``keys``: several endpoints, each with its keys.
        limits: per-key limits; ``Limits()`` (unknown) learns them from response headers.
        provider_limits: limits shared by all keys of the account, if any.
        concurrency: the most requests in flight, shared by every caller of this engine;
            interactive calls (``complete``, ``priority="interactive"``) have a quarter as many
            more of their own, so that a batch holding every slot never makes them wait.
        timeout: seconds per attempt (a trio cancel scope). The default, ten minutes as in the
            openai and anthropic SDKs, leaves room for slow models and for proxies that hold an
            over-limit request (LiteLLM: up to 60 s) rather than refuse it: an attempt cut off
            while the server still works on it is paid for twice.
        retry: the retry policy (attempts, backoff, Retry-After ceiling, per-item deadline).
        transport: an httpx transport (``httpx.MockTransport`` in tests).
        estimator: ``Request -> tokens`` used to reserve tokens/min before sending.
        prices: the price table for ``Result.cost_usd`` (defaults to common models).
        keep_raw: keep each response body on ``Result.raw``.
        consumers: structlog processors that receive every event (see ``trio_llm._events``).
        http2: negotiate HTTP/2 where the server offers it (needs ``h2``).
        breaker: when to stop sending to a failing key or provider (``None``: never).
        fallback_on: make ``routes`` an ordered chain: an item starts on the first route and
            moves to the next when it fails there for one of these kinds (``True``: the
            kinds in ``trio_llm._engine.DEFAULT_FALLBACK_ON``, whatever another route may do
            better, not the input's own faults). ``None`` (the default) spreads the load
            over the routes by capacity instead.
        limits_store: buckets shared with every other engine (process, host) using the same
            keys: ``trio_llm.RedisStore(url)``; ``None`` keeps them in this engine alone.
        idle_timeout: seconds a streamed answer (``"stream": true``) may go without a chunk
            (from sending to the first, then between chunks) before the attempt fails as a
            ``timeout`` and is retried; apart from ``timeout``, which bounds the whole
            attempt. ``None`` (the default): only ``timeout``.
        cache: answer identical requests from disk: ``trio_llm.Cache("answers.sqlite")``
            (see ``trio_llm._cache``); a hit is a ``Result`` with ``cached=True``, cost 0,
            and takes nothing from the limits.

    Use ``trio.run(engine.map, prompts)`` for a batch, or keep it open with
    ``async with engine:`` in a service so that concurrent callers share one HTTP layer, one
    ``trio.CapacityLimiter`` and the same keys and limits.
    """

    def __init__(
        self,
        provider: Provider | None = None,
        keys: KeyPool | Iterable[str | ApiKey] | None = None,
        *,
        routes: Sequence[Route] | None = None,
        limits: Limits | None = None,
        provider_limits: Limits | None = None,
        concurrency: int = 64,
        timeout: float = 600.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        estimator: Estimator | None = None,
        prices: PriceTable | None = None,
        keep_raw: bool = False,
        consumers: Iterable[EventConsumer] = (),
        http2: bool = False,
        breaker: BreakerPolicy | None = BreakerPolicy(),  # noqa: B008 - frozen value
        fallback_on: Collection[ErrorKind] | bool | None = None,
        limits_store: LimitsStore | None = None,
        idle_timeout: float | None = None,
        cache: Cache | None = None,
    ) -> None:
        if routes is None:
            if provider is None or keys is None:
                raise ConfigurationError(
                    "an engine needs a provider and keys\nHINT: Engine(provider=trio_llm."
                    "OpenAICompatible(base_url=..., model=...), keys=['sk-...']), or "
                    "Engine(routes=[trio_llm.Route(provider=..., keys=[...]), ...])"
                )
            routes = [
                Route(provider=provider, keys=keys, limits=limits, provider_limits=provider_limits)
            ]
        elif provider is not None or keys is not None or not routes:
            raise ConfigurationError(
                "give either provider and keys, or a non-empty list of routes, not both\n"
                "HINT: Engine(routes=[trio_llm.Route(provider=..., keys=[...]), ...])"
            )
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be a positive integer, got {concurrency!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigurationError(f"timeout must be positive seconds, got {timeout!r}")
        if idle_timeout is not None and (
            isinstance(idle_timeout, bool)
            or not isinstance(idle_timeout, (int, float))
            or not idle_timeout > 0
        ):
            raise ConfigurationError(
                f"idle_timeout must be positive seconds or None, got {idle_timeout!r}"
            )
        for name, value, kind in (
            ("limits", limits, Limits),
            ("provider_limits", provider_limits, Limits),
            ("retry", retry, RetryPolicy),
            ("breaker", breaker, BreakerPolicy),
            ("prices", prices, PriceTable),
        ):
            if value is not None and not isinstance(value, kind):
                raise ConfigurationError(
                    f"{name} must be a trio_llm.{kind.__name__}, got {type(value).__name__}\n"
                    f"HINT: {name}=trio_llm.{kind.__name__}(...)"
                )
        if fallback_on is True:
            fallback_on = DEFAULT_FALLBACK_ON
        if fallback_on is not None and fallback_on is not False:
            bad = [k for k in fallback_on if not isinstance(k, ErrorKind)]
            if bad:
                raise ConfigurationError(
                    f"fallback_on takes ErrorKinds, got {bad[0]!r}\n"
                    "HINT: fallback_on={trio_llm.ErrorKind.CONTEXT_LENGTH, ...} or True"
                )
            self.fallback_on: frozenset[ErrorKind] | None = frozenset(fallback_on)
        else:
            self.fallback_on = None
        if limits_store is not None and not isinstance(limits_store, LimitsStore):
            raise ConfigurationError(
                f"limits_store must be a store, got {type(limits_store).__name__}\n"
                "HINT: limits_store=trio_llm.RedisStore('redis://127.0.0.1:6379/0')"
            )
        self.limits_store = limits_store
        if cache is not None and not isinstance(cache, Cache):
            raise ConfigurationError(
                f"cache must be a trio_llm.Cache, got {type(cache).__name__}\n"
                "HINT: cache=trio_llm.Cache('answers.sqlite')"
            )
        self.cache = cache
        self._cache_session: CacheSession | None = None
        self.events = EventHub(tuple(consumers))
        # OpenTelemetry spans are on once the application configured a tracer provider.
        # An OtelConsumer given exists only if its module was imported: no import to check.
        tracing = sys.modules.get(f"{__package__}._tracing")
        self._traced = tracing is not None and any(
            isinstance(c, tracing.OtelConsumer) for c in self.events.consumers
        )
        self.breaker = breaker
        self._routes = tuple(routes)
        self._pools = tuple(route.pool() for route in self._routes)
        default_limits = limits or Limits()
        self._specs = tuple(
            EndpointSpec(
                provider=route.provider,
                keys=pool.keys,
                limits=pool.limits or route.limits or default_limits,
                provider_limits=pool.provider_limits or route.provider_limits or Limits(),
                model=route.model,
            )
            for route, pool in zip(self._routes, self._pools, strict=True)
        )
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.idle_timeout = None if idle_timeout is None else float(idle_timeout)
        self.retry = retry or RetryPolicy()
        self.prices = prices if prices is not None else PriceTable.default()
        self.keep_raw = keep_raw
        self._transport = transport
        self._http2 = http2
        self._estimator: Estimator = estimator or CharEstimator()
        self._packing = _packing(self._specs)
        # Shared by every caller. Interactive calls have slots of their own, so that they
        # never wait for a slot held by a background batch (which may hold all of its own).
        self._limiter = trio.CapacityLimiter(concurrency)
        self._interactive_limiter = trio.CapacityLimiter(max(2, concurrency // 4))
        self._scheduler: Scheduler | None = None
        self._scheduler_run: object = None
        self._http: HttpPool | None = None
        self._service: trio.Nursery | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def provider(self) -> Provider:
        """The (first) route's provider."""
        return self._routes[0].provider

    @property
    def pool(self) -> KeyPool:
        """The (first) route's keys and limits."""
        return self._pools[0]

    def __repr__(self) -> str:
        where = ", ".join(
            f"{route.provider!r} with {pool!r}"
            for route, pool in zip(self._routes, self._pools, strict=True)
        )
        return f"Engine({where}, concurrency={self.concurrency}, timeout={self.timeout})"

    # --- lifetime ------------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
        _check_trio("async with engine")
        if self._stack is not None:
            raise ConfigurationError("this engine is already open; enter `async with` once")
        stack = contextlib.AsyncExitStack()
        self._http = await stack.enter_async_context(self._new_http())
        self._service = await stack.enter_async_context(trio.open_nursery())
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        assert stack is not None
        if self._service is not None:
            # Streams still being consumed elsewhere end with the engine.
            self._service.cancel_scope.cancel()
        self._service = None
        try:
            await stack.__aexit__(exc_type, exc, tb)
        finally:
            self._http = None

    def _new_http(self) -> HttpPool:
        in_flight = self.concurrency + self._interactive_limiter.total_tokens
        return HttpPool(int(in_flight), transport=self._transport, http2=self._http2)

    def _scheduler_now(self) -> Scheduler:
        """This trio run's scheduler (buckets read trio's clock, so each run has its own)."""
        run = trio.lowlevel.current_root_task()
        if self._scheduler is None or self._scheduler_run is not run:
            self._scheduler = Scheduler(
                self._specs, self.events, self.breaker, store=self.limits_store
            )
            self._scheduler_run = run
            self._cache_session = None
        return self._scheduler

    def _cache_now(self) -> CacheSession | None:
        """This trio run's view of the cache (its in-flight items, its batched SQLite calls)."""
        self._scheduler_now()  # a new trio run starts a new session
        if self.cache is not None and self._cache_session is None:
            self._cache_session = CacheSession(
                self.cache, [(route.provider, route.model) for route in self._routes]
            )
        return self._cache_session

    def _parts(self, http: HttpPool, priority: Priority = "batch") -> RunParts:
        if priority not in ("batch", "interactive"):
            raise ConfigurationError(
                f"priority must be 'batch' or 'interactive', got {priority!r}\n"
                "HINT: engine.complete(prompt, priority='interactive')"
            )
        urgent = priority == "interactive"
        if not self._traced and "opentelemetry.trace" in sys.modules:
            self._trace_if_configured()
        scheduler = self._scheduler_now()
        return RunParts(
            scheduler=scheduler,
            sender=Sender(
                scheduler=scheduler,
                http=http,
                timeout_s=self.timeout,
                max_blocked_s=self.retry.max_retry_after,
                idle_timeout_s=self.idle_timeout,
            ),
            limiter=self._interactive_limiter if urgent else self._limiter,
            urgent=urgent,
            events=self.events,
            retry=self.retry,
            estimator=self._estimator,
            prices=self.prices,
            keep_raw=self.keep_raw,
            concurrency=self.concurrency,
            keys=sum(len(spec.keys) for spec in self._specs),
            routes=tuple(route.label for route in self._routes),
            fallback_on=self.fallback_on,
            cache=self._cache_now(),
            packing=self._packing,
        )

    def _trace_if_configured(self) -> None:
        """Subscribe an ``OtelConsumer`` if the application has set a tracer provider (only
        looked for once it imported opentelemetry: nothing is imported or done otherwise)."""
        from ._tracing import OtelConsumer, configured_tracer_provider

        provider = configured_tracer_provider()
        if provider is not None:
            self.events.subscribe(OtelConsumer(provider))
            self._traced = True

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[HttpPool]:
        if self._http is not None:
            yield self._http
            return
        async with self._new_http() as http:
            yield http

    # --- public calls --------------------------------------------------------------------
    async def map(
        self,
        prompts: Source,
        *,
        deadline: float | None = None,
        budget_usd: float | None = None,
        priority: Priority = "batch",
        schema: object = None,
    ) -> list[Result]:
        """Send every prompt; return one ``Result`` per prompt, in input order.

        A failed item is a ``Result`` with ``ok=False``; only misuse and cancellation raise.

        Args:
            prompts: strings, messages lists, ``Request``s or body dicts; any iterable or async
                iterable, read lazily.
            deadline: seconds after which the run stops: finished results are kept, the rest
                are failed results of kind ``deadline``.
            budget_usd: stop sending once what was spent plus what requests in flight may
                cost would exceed this; unsent items are failed results of kind ``budget``.
            priority: ``"batch"``, or ``"interactive"`` to go ahead of batches sharing the
                keys (the batch keeps a fifth of the grants).
            schema: what every answer must be: a pydantic model, an attrs class or a JSON
                schema dict. Sent as ``response_format`` (unless a request has its own) and
                checked on the way back: ``Result.parsed`` holds the value; an answer that
                does not parse or validate is asked again, up to
                ``RetryPolicy.invalid_output_attempts``, then fails as ``invalid_output``.
                A request's own ``response_format`` JSON schema is checked too.

        Raises:
            ConfigurationError: misuse (a single string instead of a list, a bad deadline).
            SourceError: ``prompts`` itself raised; ``.results`` holds what was read before.
        """
        _check_trio("engine.map")
        _check_source(prompts, "map")
        check_run_options(self, deadline, budget_usd)
        results: list[Result | None] = []

        async def deliver(result: Result) -> None:
            if result.index >= len(results):
                results.extend([None] * (result.index + 1 - len(results)))
            results[result.index] = result

        async with self._session() as http:
            run = Run(
                self._parts(http, priority),
                _length(prompts),
                deadline=deadline,
                budget_usd=budget_usd,
                schema=None if schema is None else OutputSchema.of(schema),
            )
            await run.execute(prompts, deliver)
        complete = [r for r in results if r is not None]
        assert len(complete) == len(results), "every read input has exactly one result"
        if run.source_error is not None:
            raise SourceError(run.source_error, complete) from run.source_error
        return complete

    def stream(
        self,
        prompts: Source,
        *,
        deadline: float | None = None,
        budget_usd: float | None = None,
        priority: Priority = "batch",
        schema: object = None,
    ) -> ResultStream:
        """Results in completion order (``deadline`` and ``budget_usd`` as in ``map``).

        Use it as ``async for r in engine.stream(prompts)`` inside ``async with engine:``, or
        anywhere as ``async with engine.stream(prompts) as results: async for r in results``.
        Leaving the loop early cancels the requests in flight and sends nothing more. If
        ``prompts`` raises, the loop raises ``SourceError`` after the last result of what was
        read.
        """
        _check_source(prompts, "stream")
        check_run_options(self, deadline, budget_usd)
        return ResultStream(
            self,
            prompts,
            deadline=deadline,
            budget_usd=budget_usd,
            priority=priority,
            schema=None if schema is None else OutputSchema.of(schema),
        )

    async def embed(
        self,
        texts: Iterable[str],
        *,
        deadline: float | None = None,
        budget_usd: float | None = None,
        **params: Any,
    ) -> list[Result]:
        """Embed every text; one ``Result`` per text, in input order, with its
        ``Result.embedding``.

        The same as ``map`` of ``{"input": text, **params}`` items: an engine whose provider is
        ``OpenAIEmbeddings`` packs them into as few requests as its limits allow (inputs and
        tokens per request). ``params`` go into every request (``model``, ``dimensions``...).

        Raises:
            ConfigurationError: the engine's provider does not serve embeddings.
        """
        if self._packing is None:
            raise ConfigurationError(
                "engine.embed() needs an embeddings provider\nHINT: Engine(provider=trio_llm."
                "OpenAIEmbeddings(base_url=..., model='text-embedding-3-small'), keys=[...])"
            )
        _check_source(texts, "embed")
        requests = (Request.from_input(text, **params) for text in texts)
        return await self.map(
            _Sized(requests, _length(texts)), deadline=deadline, budget_usd=budget_usd
        )

    async def complete(
        self, prompt: Prompt, *, priority: Priority = "interactive", schema: object = None
    ) -> Result:
        """Send one request (with retries) and return its result: for a service's handlers.

        It is interactive by default: it goes ahead of batches running on the same engine
        (``priority="batch"`` queues it with them).
        """
        _check_trio("engine.complete")
        request = to_request(prompt)
        async with self._session() as http:
            output = None if schema is None else OutputSchema.of(schema)
            run = Run(self._parts(http, priority), 1, schema=output)
            return await run.process(Item(0, request))

    # --- reading -------------------------------------------------------------------------
    def statistics(self) -> EngineStatistics:
        """A snapshot: requests in flight, and every key's state."""
        keys = self._key_statistics()
        sent = sum(k.in_flight for k in keys)
        return EngineStatistics(
            in_flight=sent,
            scheduled=max(
                0,
                self._limiter.borrowed_tokens + self._interactive_limiter.borrowed_tokens - sent,
            ),
            waiting=self._limiter.statistics().tasks_waiting,
            keys=keys,
            interactive_waiting=self._interactive_limiter.statistics().tasks_waiting,
            interactive_in_flight=self._interactive_limiter.borrowed_tokens,
        )

    def _key_statistics(self) -> tuple[KeyStatistics, ...]:
        try:
            return self._scheduler_now().statistics()
        except RuntimeError:  # outside trio.run: nothing has happened yet
            return tuple(
                KeyStatistics(
                    key_id=key.fingerprint,
                    in_flight=0,
                    rpm=None,
                    tpm=None,
                    requests_left=None,
                    tokens_left=None,
                    cooling_s=0.0,
                    dropped=None,
                    provider=spec.provider.name,
                    model=spec.model or spec.provider.model,
                )
                for spec in self._specs
                for key in spec.keys
            )


@final
class ResultStream:
    """Results in completion order; see ``Engine.stream``."""

    def __init__(
        self,
        engine: Engine,
        prompts: Source,
        *,
        deadline: float | None,
        budget_usd: float | None,
        priority: Priority = "batch",
        schema: OutputSchema | None = None,
    ) -> None:
        self._engine = engine
        self._priority = priority
        self._schema = schema
        self._prompts = prompts
        self._deadline = deadline
        self._budget = budget_usd
        self._run: Run | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._receive: trio.MemoryReceiveChannel[Result] | None = None

    def _start(self, nursery: trio.Nursery, http: HttpPool) -> trio.MemoryReceiveChannel[Result]:
        engine = self._engine
        run = self._run = Run(
            engine._parts(http, self._priority),
            _length(self._prompts),
            deadline=self._deadline,
            budget_usd=self._budget,
            schema=self._schema,
        )
        send, receive = trio.open_memory_channel[Result](engine.concurrency)

        async def deliver(result: Result) -> None:
            try:
                await send.send(result)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                run.cancel()  # the consumer left: nothing more is sent

        prompts = self._prompts  # not `self`: the task must not keep the stream alive

        async def execute() -> None:
            async with send:
                await run.execute(prompts, deliver)

        nursery.start_soon(execute)
        return receive

    async def __aenter__(self) -> ResultStream:
        _check_trio("engine.stream")
        stack = contextlib.AsyncExitStack()
        http = await stack.enter_async_context(self._engine._session())
        nursery = await stack.enter_async_context(trio.open_nursery())
        self._stack = stack
        self._receive = self._start(nursery, http)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        assert self._receive is not None
        # Leaving early (break, error): cancel what is in flight instead of waiting for it.
        if self._run is not None:
            self._run.cancel()
        self._receive.close()
        # The caller's exception is not the run's: it propagates as itself once the run has
        # ended (handed to the nursery, it would come out wrapped in an ExceptionGroup).
        await self._stack.aclose()

    def __aiter__(self) -> ResultStream:
        if self._receive is None:
            engine = self._engine
            if engine._service is None or engine._http is None:
                raise ConfigurationError(
                    "engine.stream(...) used as a plain iterator needs an open engine\n"
                    "HINT: `async with engine:` around it, or "
                    "`async with engine.stream(prompts) as results: async for r in results: ...`"
                )
            # The run lives in the engine's own nursery, not in this iterator (a nursery must
            # never span a yield).
            self._receive = self._start(engine._service, engine._http)
        return self

    async def __anext__(self) -> Result:
        assert self._receive is not None
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            run = self._run
            if run is not None and run.source_error is not None:
                raise SourceError(run.source_error, [], read=run.read) from run.source_error
            raise StopAsyncIteration from None

    def __del__(self) -> None:
        # Leaving `async for` early drops the last reference: the run is cancelled at once
        # instead of holding its requests until the next delivery.
        run = getattr(self, "_run", None)
        if run is not None:
            run.cancel()
        receive = getattr(self, "_receive", None)
        if receive is not None:
            receive.close()


def check_run_options(engine: Engine, deadline: float | None, budget_usd: float | None) -> None:
    """Refuse a bad deadline or budget before anything is sent."""
    if deadline is not None and not deadline > 0:
        raise ConfigurationError(f"deadline must be positive seconds, got {deadline!r}")
    if budget_usd is not None and not budget_usd > 0:
        raise ConfigurationError(f"budget_usd must be positive, got {budget_usd!r}")
    if budget_usd is not None:
        unpriced = [
            spec.provider.model
            for spec in engine._specs
            if engine.prices.price(spec.provider.model) is None
        ]
        if unpriced:
            raise ConfigurationError(
                f"a budget needs the price of {unpriced[0]!r}, which is not in the price "
                "table\nHINT: Engine(prices=trio_llm.PriceTable.load('prices.toml')) or "
                "`trio-llm run --prices prices.toml`"
            )


def _check_source(prompts: object, call: str) -> None:
    if isinstance(prompts, (str, bytes)):
        raise ConfigurationError(
            f"engine.{call}() takes many prompts, and a string would be one per character\n"
            f"HINT: engine.{call}([prompt]), or engine.complete(prompt) for one"
        )
    if isinstance(prompts, Mapping):
        raise ConfigurationError(
            f"engine.{call}() takes many prompts, got one dict\n"
            f"HINT: engine.{call}([body]), or engine.complete(body) for one"
        )


def _check_trio(call: str) -> None:
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = None
    if library != "trio":
        raise ConfigurationError(
            f"{call} runs on trio, not {library or 'plain Python'}\n"
            "HINT: trio.run(engine.map, prompts), or `await engine.map(prompts)` inside "
            "trio.run(main)"
        )


@final
class _Sized:
    """An iterable that knows its length (so a run of ``embed`` reports a total)."""

    def __init__(self, items: Iterable[Request], length: int | None) -> None:
        self._items = items
        self._length = length

    def __iter__(self) -> Iterator[Request]:
        return iter(self._items)

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("unknown length")
        return self._length


def _packing(specs: Sequence[EndpointSpec]) -> PackLimits | None:
    """How an engine packs inputs: the strictest of its routes' ``PackLimits``, with a route's
    tokens per minute as a cap on tokens per request (a larger request is never sent)."""
    limits = [getattr(spec.provider, "packing", None) for spec in specs]
    if all(not isinstance(limit, PackLimits) for limit in limits):
        return None
    if not all(isinstance(limit, PackLimits) for limit in limits):
        raise ConfigurationError(
            "an engine's routes must all serve embeddings, or none\n"
            "HINT: one Engine for embeddings (OpenAIEmbeddings routes), another for chat"
        )
    packs = [limit for limit in limits if isinstance(limit, PackLimits)]
    tokens = min(limit.max_tokens for limit in packs)
    for spec in specs:
        if spec.limits.tpm is not None:
            tokens = min(tokens, max(1, int(spec.limits.tpm)))
    return PackLimits(max_inputs=min(limit.max_inputs for limit in packs), max_tokens=tokens)


def _length(source: Source) -> int | None:
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None
