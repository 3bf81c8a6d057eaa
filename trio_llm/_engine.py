"""The engine: a nursery of workers that turns prompts into results at the rate limits allow.

::

    source ─► producer ─► bounded channel ─► N workers ─► results channel ─► map / stream
                                               │ per attempt: CapacityLimiter → endpoint and
                                               │ key (rate reservation) → cancel scope →
                                               │ HTTP → classify → feedback to the buckets

The producer reads the source lazily into a channel a few times the number of workers, so
memory stays flat for millions of inputs. Every input ends as exactly one ``Result``.

The concurrency slot is taken *before* the key's rate reservation (the design notes list them
the other way round): a request then leaves the moment its reservation is due, instead of
reserving while every slot is busy and leaving late, together with others, as a burst.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from types import TracebackType
from typing import TypeAlias, final

import attrs
import httpx
import stamina
import trio

from . import _events as ev
from ._breaker import BreakerPolicy, CircuitBreaker, announce
from ._config import Limits, RetryPolicy
from ._errors import ConfigurationError, InputError, NoKeysLeftError, ProviderError
from ._events import EventConsumer, EventHub
from ._http import BodyError, HttpPool
from ._keys import KeyPool, KeyStatistics
from ._models import ErrorInfo, ErrorKind, Prompt, Request, Result, Usage, to_request
from ._policy import KeyAction, Retry, rule_for
from ._pricing import PriceTable
from ._providers import Completion, Provider
from ._routes import Endpoint, Route
from ._secrets import ApiKey
from ._tokens import CharEstimator, Estimator

__all__ = ["Engine", "EngineStatistics", "ResultStream"]

Source: TypeAlias = Iterable[Prompt] | AsyncIterable[Prompt]

_run_ids = itertools.count(1)

#: How often a run reports every key's state (``keys.updated``) for progress displays.
KEYS_EVENT_INTERVAL_S = 1.0


@attrs.frozen(kw_only=True)
class EngineStatistics:
    """A snapshot of an engine.

    Attributes:
        in_flight: requests sent and not answered yet.
        scheduled: requests holding a concurrency slot, waiting for their key's moment.
        waiting: requests ready to go but held back by the concurrency cap.
        keys: every key's state.
    """

    in_flight: int
    scheduled: int
    waiting: int
    keys: tuple[KeyStatistics, ...]


@attrs.define(eq=False)
class _Item:
    """One input item on its way through a worker."""

    index: int
    request: Request | None
    problem: InputError | None = None


@attrs.define(eq=False)
class _Attempts:
    """What happened to one item across its attempts."""

    count: int = 0
    first_sent: float | None = None
    key_id: str | None = None
    model: str = ""  # the model the last attempt went to (for its price)


@attrs.define(eq=False)
class _Budget:
    """Money for one run: what was spent, and what requests in flight may still cost."""

    limit_usd: float
    spent_usd: float = 0.0
    reserved_usd: float = 0.0

    def try_reserve(self, cost: float) -> bool:
        """Hold ``cost`` for a request about to go, if the budget allows it."""
        if self.spent_usd + self.reserved_usd + cost > self.limit_usd:
            return False
        self.reserved_usd += cost
        return True

    def settle(self, held: float, spent: float) -> None:
        """A request ended: release what was held, count what it really cost."""
        self.reserved_usd -= held
        self.spent_usd += spent


@final
class _Run:
    """One map / stream call: its id, its stop switch, its counters."""

    def __init__(
        self,
        total: int | None,
        *,
        deadline: float | None = None,
        budget_usd: float | None = None,
    ) -> None:
        self.id = f"run-{next(_run_ids)}"
        self.total = total
        self.deadline = deadline
        self.budget = None if budget_usd is None else _Budget(limit_usd=budget_usd)
        self.stopped: ErrorInfo | None = None
        self.read = 0
        self.abandoned = False
        self._item_scopes: set[trio.CancelScope] = set()

    def stop(self, kind: ErrorKind, message: str, *, cancel_in_flight: bool = True) -> None:
        """End the run softly: queued items (and in-flight ones, if ``cancel_in_flight``)
        become failed results of ``kind``; nothing more is sent."""
        if self.stopped is None:
            self.stopped = ErrorInfo(kind=kind, message=message)
            if cancel_in_flight:
                for scope in self._item_scopes:
                    scope.cancel()

    @contextlib.contextmanager
    def item_scope(self, timeout: float | None) -> Iterator[trio.CancelScope]:
        """A cancel scope for one item, cancelled when the run stops or after ``timeout``."""
        scope = (
            trio.CancelScope()
            if timeout is None
            else trio.CancelScope(deadline=trio.current_time() + timeout)
        )
        if self.stopped is not None:
            scope.cancel()
        self._item_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._item_scopes.discard(scope)


@final
class Engine:
    """Sends many chat requests concurrently, within every rate limit, losing none.

    Args:
        provider: the API, e.g. ``OpenAICompatible(base_url=..., model=...)``.
        keys: API keys, or a ``KeyPool`` (``KeyPool.from_env("OPENAI_API_KEY")``).
        limits: per-key limits; ``Limits()`` (unknown) learns them from response headers.
        provider_limits: limits shared by all keys of the account, if any.
        concurrency: the most requests in flight, shared by every caller of this engine.
        timeout: seconds per attempt (a trio cancel scope).
        retry: the retry policy (attempts, backoff, Retry-After ceiling, per-item deadline).
        transport: an httpx transport (``httpx.MockTransport`` in tests).
        estimator: ``Request -> tokens`` used to reserve tokens/min before sending.
        prices: the price table for ``Result.cost_usd`` (defaults to common models).
        keep_raw: keep each response body on ``Result.raw``.
        consumers: structlog processors that receive every event (see ``trio_llm._events``).
        http2: negotiate HTTP/2 where the server offers it (needs ``h2``).
        breaker: when to stop sending to a failing key or provider (``None``: never).

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
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        estimator: Estimator | None = None,
        prices: PriceTable | None = None,
        keep_raw: bool = False,
        consumers: Iterable[EventConsumer] = (),
        http2: bool = False,
        breaker: BreakerPolicy | None = BreakerPolicy(),  # noqa: B008 - frozen value
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
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be a positive integer, got {concurrency!r}")
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be positive seconds, got {timeout!r}")
        self.events = EventHub(tuple(consumers))
        self.breaker = breaker
        self._endpoints = [
            Endpoint(route, self.events, limits or Limits(), breaker) for route in routes
        ]

        self.concurrency = concurrency
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.prices = prices if prices is not None else PriceTable.default()
        self.keep_raw = keep_raw
        self._transport = transport
        self._http2 = http2
        self._estimator: Estimator = estimator or CharEstimator()
        # Shared by every caller: the priority lane of a later version would replace this one
        # admission point (interactive calls first) without touching the workers.
        self._limiter = trio.CapacityLimiter(concurrency)
        self._http: HttpPool | None = None
        self._service: trio.Nursery | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def provider(self) -> Provider:
        """The (first) route's provider."""
        return self._endpoints[0].provider

    @property
    def pool(self) -> KeyPool:
        """The (first) route's key pool."""
        return self._endpoints[0].pool

    def __repr__(self) -> str:
        where = ", ".join(f"{e.provider!r} with {e.pool!r}" for e in self._endpoints)
        return f"Engine({where}, concurrency={self.concurrency}, timeout={self.timeout})"

    # --- lifetime ------------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
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
        return HttpPool(self.concurrency, transport=self._transport, http2=self._http2)

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
        """
        run = self._new_run(prompts, deadline, budget_usd)
        results: list[Result | None] = []
        async with self._session() as http, trio.open_nursery() as nursery:
            send, receive = trio.open_memory_channel[Result](self.concurrency)
            nursery.start_soon(self._run, run, http, prompts, send)
            async with receive:
                async for result in receive:
                    if result.index >= len(results):
                        results.extend([None] * (result.index + 1 - len(results)))
                    results[result.index] = result
        complete = [r for r in results if r is not None]
        assert len(complete) == len(results), "every read input has exactly one result"
        return complete

    def stream(
        self,
        prompts: Source,
        *,
        deadline: float | None = None,
        budget_usd: float | None = None,
    ) -> ResultStream:
        """Results in completion order (``deadline`` and ``budget_usd`` as in ``map``).

        Use it as ``async for r in engine.stream(prompts)`` inside ``async with engine:``, or
        anywhere as ``async with engine.stream(prompts) as results: async for r in results``.
        """
        return ResultStream(self, prompts, self._new_run(prompts, deadline, budget_usd))

    def _new_run(self, prompts: Source, deadline: float | None, budget_usd: float | None) -> _Run:
        if deadline is not None and not deadline > 0:
            raise ConfigurationError(f"deadline must be positive seconds, got {deadline!r}")
        if budget_usd is not None:
            if not budget_usd > 0:
                raise ConfigurationError(f"budget_usd must be positive, got {budget_usd!r}")
            unpriced = [
                e.provider.model
                for e in self._endpoints
                if self.prices.price(e.provider.model) is None
            ]
            if unpriced:
                raise ConfigurationError(
                    f"a budget needs the price of {unpriced[0]!r}, which is not in the "
                    "price table\nHINT: Engine(prices=trio_llm.PriceTable.load('prices.toml')) "
                    "or `trio-llm run --prices prices.toml`"
                )
        return _Run(_length(prompts), deadline=deadline, budget_usd=budget_usd)

    async def complete(self, prompt: Prompt) -> Result:
        """Send one request (with retries) and return its result: for a service's handlers."""
        request = to_request(prompt)
        run = _Run(1)
        async with self._session() as http:
            return await self._process(run, http, _Item(0, request))

    # --- the run ---------------------------------------------------------------------------
    async def _run(
        self,
        run: _Run,
        http: HttpPool,
        source: Source,
        results: trio.MemorySendChannel[Result],
    ) -> None:
        started = trio.current_time()
        deadline = run.deadline
        counts = {"succeeded": 0, "failed": 0}
        self.events.emit(
            ev.RUN_STARTED,
            run_id=run.id,
            total=run.total,
            keys=sum(len(e.pool) for e in self._endpoints),
            concurrency=self.concurrency,
        )
        workers = self.concurrency
        if run.total is not None:
            workers = max(1, min(workers, run.total))

        async def deliver(result: Result) -> None:
            counts["succeeded" if result.ok else "failed"] += 1
            try:
                await results.send(result)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The consumer left (a stream's loop ended early): stop the whole run.
                run.abandoned = True
                everything.cancel()

        async with results:
            with trio.CancelScope() as everything:
                async with trio.open_nursery() as watchers:
                    if deadline is not None:
                        watchers.start_soon(self._stop_at, run, deadline)
                    watchers.start_soon(self._report_keys_every, KEYS_EVENT_INTERVAL_S)
                    async with trio.open_nursery() as nursery:
                        items_send, items_receive = trio.open_memory_channel[_Item](2 * workers)
                        async with items_receive:
                            for _ in range(workers):
                                nursery.start_soon(
                                    self._work, run, http, items_receive.clone(), deliver
                                )
                        await self._produce(run, source, items_send)
                    watchers.cancel_scope.cancel()
                if run.stopped is not None and run.total is not None:
                    # Items never read from a sized source are reported too: none goes missing.
                    for index in range(run.read, run.total):
                        await deliver(self._not_done(run, index))
        self._report_keys()
        self.events.emit(
            ev.RUN_FINISHED,
            run_id=run.id,
            wall_s=trio.current_time() - started,
            stopped=None if run.stopped is None else run.stopped.kind.value,
            abandoned=run.abandoned,
            **counts,
        )

    def _report_keys(self) -> None:
        stats = self._key_statistics()
        self.events.emit(
            ev.KEYS_UPDATED,
            keys=[attrs.asdict(s) for s in stats],
            in_flight=sum(s.in_flight for s in stats),
        )

    async def _report_keys_every(self, interval: float) -> None:
        while True:
            self._report_keys()
            await trio.sleep(interval)

    def statistics(self) -> EngineStatistics:
        """A snapshot: requests in flight, and every key's state."""
        keys = self._key_statistics()
        sent = sum(k.in_flight for k in keys)
        return EngineStatistics(
            in_flight=sent,
            scheduled=max(0, self._limiter.borrowed_tokens - sent),
            waiting=self._limiter.statistics().tasks_waiting,
            keys=keys,
        )

    def _key_statistics(self) -> tuple[KeyStatistics, ...]:
        return tuple(stats for e in self._endpoints for stats in e.pool.statistics())

    async def _stop_at(self, run: _Run, deadline: float) -> None:
        await trio.sleep(deadline)
        run.stop(ErrorKind.DEADLINE, f"the run's deadline of {deadline}s passed")

    async def _produce(
        self, run: _Run, source: Source, items: trio.MemorySendChannel[_Item]
    ) -> None:
        async with items, contextlib.aclosing(_aiter(source)) as prompts:
            async for prompt in prompts:
                if run.stopped is not None:
                    return
                index = run.read
                run.read += 1
                try:
                    item = _Item(index, to_request(prompt, line=None))
                except InputError as exc:
                    item = _Item(index, None, exc)
                await items.send(item)

    async def _work(
        self,
        run: _Run,
        http: HttpPool,
        items: trio.MemoryReceiveChannel[_Item],
        deliver: Callable[[Result], Awaitable[None]],
    ) -> None:
        async with items:
            async for item in items:
                await deliver(await self._process(run, http, item))

    # --- one item --------------------------------------------------------------------------
    def _not_done(
        self, run: _Run, index: int, attempts: int = 0, request_id: str | None = None
    ) -> Result:
        stopped = run.stopped or ErrorInfo(kind=ErrorKind.CANCELLED, message="cancelled")
        return Result(index=index, id=request_id, ok=False, error=stopped, attempts=attempts)

    async def _process(self, run: _Run, http: HttpPool, item: _Item) -> Result:
        if item.request is None:
            assert item.problem is not None
            error = ErrorInfo(kind=ErrorKind.INVALID_INPUT, message=str(item.problem))
            self.events.emit(
                ev.REQUEST_FAILED,
                index=item.index,
                id=item.problem.item_id,
                attempts=0,
                kind=error.kind.value,
                status=None,
                message=error.message,
            )
            return Result(index=item.index, id=item.problem.item_id, ok=False, error=error)
        request = item.request
        attempts = _Attempts()
        if run.stopped is not None:
            return self._not_done(run, item.index, 0, request.id)
        completion: Completion | None = None
        failure: ProviderError | None = None
        item_deadline = self.retry.deadline
        # One cancel scope per item: the run's soft stop cancels it, and it carries the item's
        # own deadline, if any (a scope costs a few microseconds; a million items feel it).
        with run.item_scope(item_deadline) as scope:
            try:
                completion = await self._with_retries(run, http, item.index, request, attempts)
            except ProviderError as exc:
                failure = exc
        if scope.cancelled_caught:
            if run.stopped is not None:
                return self._not_done(run, item.index, attempts.count, request.id)
            failure = ProviderError(
                ErrorKind.DEADLINE, f"gave up after the item's deadline of {item_deadline}s"
            )
        latency = 0.0 if attempts.first_sent is None else trio.current_time() - attempts.first_sent
        if completion is None:
            assert failure is not None
            error = ErrorInfo(
                kind=failure.kind,
                message=failure.message,
                status=failure.status,
                code=failure.code,
                request_id=failure.request_id,
            )
            self.events.emit(
                ev.REQUEST_FAILED,
                index=item.index,
                id=request.id,
                attempts=attempts.count,
                kind=error.kind.value,
                status=error.status,
                message=error.message,
            )
            return Result(
                index=item.index,
                id=request.id,
                ok=False,
                error=error,
                attempts=attempts.count,
                latency=latency,
                key_id=attempts.key_id,
            )
        usage = completion.usage
        cost = None if usage is None else self.prices.cost(attempts.model, usage)
        self.events.emit(
            ev.REQUEST_SUCCEEDED,
            index=item.index,
            id=request.id,
            attempt=attempts.count,
            key_id=attempts.key_id,
            latency_s=latency,
            prompt_tokens=None if usage is None else usage.prompt_tokens,
            completion_tokens=None if usage is None else usage.completion_tokens,
            cost_usd=cost,
        )
        return Result(
            index=item.index,
            id=request.id,
            ok=True,
            text=completion.text,
            finish_reason=completion.finish_reason,
            usage=usage,
            attempts=attempts.count,
            latency=latency,
            key_id=attempts.key_id,
            cost_usd=cost,
            raw=completion.raw if self.keep_raw else None,
        )

    async def _with_retries(
        self, run: _Run, http: HttpPool, index: int, request: Request, attempts: _Attempts
    ) -> Completion:
        estimate = self._estimator(request)
        try:
            # The first attempt runs outside stamina: most succeed, and this keeps the happy
            # path free of the retry machinery's per-call cost.
            return await self._attempt(run, http, index, request, estimate, attempts)
        except ProviderError as exc:
            first_error = exc
            if self._retry_wait(first_error) is False:
                raise

        def hook(exc: Exception) -> bool | float:
            if not isinstance(exc, ProviderError):
                return False
            wait = self._retry_wait(exc)
            if wait is not False:
                self.events.emit(
                    ev.REQUEST_RETRYING,
                    index=index,
                    id=request.id,
                    attempt=attempts.count,
                    kind=exc.kind.value,
                    status=exc.status,
                    key_id=attempts.key_id,
                    wait_s=None if wait is True else wait,
                )
            return wait

        policy = self.retry
        replay: ProviderError | None = first_error
        async for attempt in stamina.retry_context(
            on=hook,
            attempts=policy.attempts,
            timeout=None,  # deadlines are trio cancel scopes; stamina's runs on the wall clock
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
            wait_jitter=policy.wait_jitter,
            wait_exp_base=policy.wait_exp_base,
        ):
            with attempt:
                if replay is not None:
                    # Stamina's attempt 1 is the one that already failed: it schedules the
                    # first backoff exactly as if it had run it.
                    error, replay = replay, None
                    raise error
                return await self._attempt(run, http, index, request, estimate, attempts)
        raise AssertionError("unreachable: stamina re-raises the last error")

    def _retry_wait(self, exc: ProviderError) -> bool | float:
        """False: give up. A float: wait exactly that long. True: stamina's backoff."""
        rule = rule_for(exc.kind, exc.should_retry)
        if exc.kind is ErrorKind.NO_KEYS or rule.retry is Retry.NO:
            return False
        if rule.key is KeyAction.DROP:
            return 0.0  # the key is dropped; the next attempt takes another one at once
        retry_after = exc.retry_after
        if exc.kind is ErrorKind.RATE_LIMITED:
            if (
                retry_after is not None
                and retry_after > self.retry.max_retry_after
                and sum(e.pool.alive for e in self._endpoints) <= 1
            ):
                return False
            return 0.0  # the key cools for Retry-After; the pool picks the soonest key
        if retry_after is not None:
            return False if retry_after > self.retry.max_retry_after else retry_after
        return True

    async def _attempt(
        self,
        run: _Run,
        http: HttpPool,
        index: int,
        request: Request,
        estimate: int,
        attempts: _Attempts,
    ) -> Completion:
        if run.stopped is not None:
            # The run stopped (budget, deadline) between this item's attempts: nothing more
            # is sent for it.
            raise ProviderError(run.stopped.kind, run.stopped.message)
        held = 0.0
        if run.budget is not None:
            held = self._estimated_cost(request, estimate)
            if not run.budget.try_reserve(held):
                run.stop(
                    ErrorKind.BUDGET,
                    f"not sent: the budget of ${run.budget.limit_usd:g} would be exceeded",
                    cancel_in_flight=False,
                )
                assert run.stopped is not None
                raise ProviderError(ErrorKind.BUDGET, run.stopped.message)
        spent = 0.0
        try:
            completion = await self._send_attempt(http, index, request, estimate, attempts)
            if completion.usage is not None:
                spent = self.prices.cost(attempts.model, completion.usage) or 0.0
            return completion
        finally:
            if run.budget is not None:
                run.budget.settle(held, spent)

    def _estimated_cost(self, request: Request, estimate: int) -> float:
        """The most a request may cost, from the token estimate (prompt at the input price
        when the estimator tells the prompt apart, everything else at the output price)."""
        model = str(request.params.get("model", self.provider.model))
        price = self.prices.price(model)
        if price is None:
            return 0.0
        prompt = (
            self._estimator.prompt_tokens(request)
            if isinstance(self._estimator, CharEstimator)
            else 0
        )
        return price.cost(Usage(prompt_tokens=prompt, completion_tokens=max(0, estimate - prompt)))

    async def _send_attempt(
        self, http: HttpPool, index: int, request: Request, estimate: int, attempts: _Attempts
    ) -> Completion:
        breaker: CircuitBreaker | None = None
        succeeded = False
        failure: ErrorKind | None = None
        try:
            # The concurrency slot comes first and the key's reservation second, so a request
            # leaves the moment its reservation is due. The other way round, requests reserved
            # while every slot is busy would leave late and all together: a burst the server's
            # bucket did not refill for.
            async with self._limiter:
                while True:
                    endpoint = await self._choose_endpoint(estimate)
                    try:
                        lease = await endpoint.pool.acquire(estimate, checkpoint=False)
                        break
                    except NoKeysLeftError:
                        # Its last key went while we chose it: another endpoint may remain.
                        if not any(e.pool.alive for e in self._endpoints):
                            raise
                provider, pool, breaker = endpoint.provider, endpoint.pool, endpoint.breaker()
                if breaker is not None:
                    breaker.started()
                attempts.model = str(request.params.get("model", provider.model))
                admitted = False
                info = None
                used: float | None = None
                try:
                    attempts.count += 1
                    attempts.key_id = lease.key.fingerprint
                    if attempts.first_sent is None:
                        attempts.first_sent = trio.current_time()
                    self.events.emit(
                        ev.REQUEST_SENT,
                        index=index,
                        id=request.id,
                        attempt=attempts.count,
                        key_id=lease.key.fingerprint,
                        est_tokens=estimate,
                    )
                    http_request = provider.build_request(request, lease.key.reveal())
                    admitted = True
                    with trio.move_on_after(self.timeout) as timeout_scope:
                        try:
                            response = await http.send(http_request)
                        except BodyError as exc:
                            raise ProviderError(
                                ErrorKind.MALFORMED, f"the response body was cut off ({exc})"
                            ) from None
                        except httpx.TransportError as exc:
                            raise ProviderError(
                                ErrorKind.CONNECTION, f"{exc.__class__.__name__}: {exc}"
                            ) from None
                        except Exception as exc:
                            # A transport that breaks in its own way (a custom one, an ASGI
                            # app that hung up) fails this attempt, never the whole run.
                            raise ProviderError(
                                ErrorKind.CONNECTION,
                                f"the HTTP layer failed: {exc.__class__.__name__}: {exc}",
                            ) from None
                    if timeout_scope.cancelled_caught:
                        raise ProviderError(
                            ErrorKind.TIMEOUT,
                            f"no response within the timeout of {self.timeout}s",
                        )
                    info = provider.rate_limits(response.headers)
                    completion = provider.parse_response(
                        response.status, response.headers, response.body
                    )
                    if completion.usage is not None:
                        used = completion.usage.total_tokens
                        if (
                            isinstance(self._estimator, CharEstimator)
                            and request.max_tokens is None
                        ):
                            self._estimator.observe(completion.usage.completion_tokens)
                    succeeded = True
                    return completion
                except ProviderError as exc:
                    failure = exc.kind
                    if exc.kind is ErrorKind.RATE_LIMITED:
                        admitted = False
                        pool.rate_limited(lease, exc.retry_after, info)
                    elif rule_for(exc.kind).key is KeyAction.DROP:
                        admitted = False
                        pool.drop(lease, f"{exc.kind.value} (HTTP {exc.status})")
                    raise
                finally:
                    pool.release(
                        lease,
                        info=info,
                        used_tokens=used,
                        sent=admitted,
                        succeeded=succeeded,
                        failure=failure,
                    )
        finally:
            if breaker is not None:
                self._provider_outcome(breaker, succeeded, failure)

    async def _choose_endpoint(self, tokens: float) -> Endpoint:
        """The endpoint whose keys can send soonest; while every provider's breaker is open,
        wait for the first to half-open (an overloaded provider pauses all of its keys)."""
        endpoints = self._endpoints
        while True:
            if len(endpoints) == 1:
                best = endpoints[0]
                breaker = best.breaker()
                blocked = 0.0 if breaker is None else breaker.delay()
            else:
                delays = [(e.delay(tokens), e) for e in endpoints]
                soonest, best = min(delays, key=lambda pair: pair[0])
                if soonest == math.inf:
                    raise NoKeysLeftError
                breaker = best.breaker()
                blocked = 0.0 if breaker is None else breaker.delay()
            if blocked <= 0:
                return best
            # Until that breaker's own deadline: when it opens to probes (not a poll).
            await trio.sleep(blocked)

    def _provider_outcome(
        self, breaker: CircuitBreaker, succeeded: bool, failure: ErrorKind | None
    ) -> None:
        changed = breaker.record(succeeded, failure)
        announce(self.events, breaker, changed, scope="provider", key_id=None, failure=failure)


@final
class ResultStream:
    """Results in completion order; see ``Engine.stream``."""

    def __init__(self, engine: Engine, prompts: Source, run: _Run) -> None:
        self._engine = engine
        self._prompts = prompts
        self._run = run
        self._stack: contextlib.AsyncExitStack | None = None
        self._receive: trio.MemoryReceiveChannel[Result] | None = None

    def _start(self, nursery: trio.Nursery, http: HttpPool) -> trio.MemoryReceiveChannel[Result]:
        engine = self._engine
        send, receive = trio.open_memory_channel[Result](engine.concurrency)
        nursery.start_soon(engine._run, self._run, http, self._prompts, send)
        return receive

    async def __aenter__(self) -> trio.MemoryReceiveChannel[Result]:
        stack = contextlib.AsyncExitStack()
        http = await stack.enter_async_context(self._engine._session())
        nursery = await stack.enter_async_context(trio.open_nursery())
        self._stack = stack
        self._receive = self._start(nursery, http)
        return self._receive

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        assert self._receive is not None
        # Leaving early (break, error): stop the workers instead of waiting for all results.
        self._receive.close()
        await self._stack.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> ResultStream:
        engine = self._engine
        if engine._service is None or engine._http is None:
            raise ConfigurationError(
                "engine.stream(...) used as a plain iterator needs an open engine\n"
                "HINT: `async with engine:` around it, or "
                "`async with engine.stream(prompts) as results: async for r in results: ...`"
            )
        if self._receive is None:
            # The run lives in the engine's own nursery, not in this iterator (a nursery must
            # never span a yield).
            self._receive = self._start(engine._service, engine._http)
        return self

    async def __anext__(self) -> Result:
        assert self._receive is not None
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def __del__(self) -> None:
        # Leaving `async for` early drops the last reference: closing the receiving end makes
        # the run stop at its next delivery instead of holding its requests forever.
        receive = getattr(self, "_receive", None)
        if receive is not None:
            receive.close()


async def _aiter(source: Source) -> AsyncGenerator[Prompt, None]:
    if isinstance(source, AsyncIterable):
        iterator = aiter(source)
        try:
            async for item in iterator:
                yield item
        finally:
            # A run that stops early closes the caller's async generator too (an input file
            # it holds open should not wait for the garbage collector).
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
    else:
        # No checkpoint of its own: the producer's channel send is one.
        for item in source:
            yield item


def _length(source: Source) -> int | None:
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None
