"""One run: the items of one ``map`` / ``stream`` / ``complete`` call, each to exactly one Result.

::

    source ─► producer ─► bounded channel ─► N workers ─► deliver(result)
                 │ (numbers items, coerces        │ per item: attempts until the policy table
                 │  them, stops on a stop)        │ says stop; one cancel scope per item

Every item taken from the source ends as exactly one ``Result``: succeeded, failed with a reason,
or — when the run stops (deadline, budget, Ctrl-C, the caller leaving) — failed with the stop's
kind. Any exception inside one item fails that item alone (``internal``); only cancellation and
a failing *source* leave the run (the source's error is kept for the caller to raise as a
``SourceError`` once what was read is finished).
"""

from __future__ import annotations

import contextlib
import itertools
import traceback
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeAlias, final

import attrs
import trio

from . import _events as ev
from ._attempt import Sender
from ._cache import CacheClaim, CacheSession
from ._config import RetryPolicy
from ._errors import InputError
from ._events import EventHub
from ._models import ErrorInfo, Prompt, Request, Result, Usage, to_request
from ._outcome import Outcome
from ._packer import pack_items
from ._policy import ErrorKind, Retry, rule_for
from ._pricing import PriceTable
from ._providers import Completion, PackLimits
from ._scheduler import Lease, Scheduler
from ._structured import OutputSchema, check_output, schema_of_request
from ._tokens import CharEstimator, Estimator

__all__ = ["Item", "Run", "RunParts", "Source"]

Source: TypeAlias = Iterable[Prompt] | AsyncIterable[Prompt]
Deliver: TypeAlias = Callable[[Result], Awaitable[None]]

_run_ids = itertools.count(1)

#: How often a run reports every key's state (``keys.updated``) for progress displays.
KEYS_EVENT_INTERVAL_S = 1.0


@attrs.frozen(kw_only=True)
class RunParts:
    """What every run of an engine shares: its scheduler, HTTP layer, limiter and settings."""

    scheduler: Scheduler
    sender: Sender
    limiter: trio.CapacityLimiter
    events: EventHub
    retry: RetryPolicy
    estimator: Estimator
    prices: PriceTable
    keep_raw: bool
    concurrency: int
    keys: int
    #: Every route's name, in order.
    routes: tuple[str, ...] = ()
    #: When set, the routes are a chain: an item moves on when it fails for one of these.
    fallback_on: frozenset[ErrorKind] | None = None
    #: An interactive call: its own slots, and it reserves ahead of the batch.
    urgent: bool = False
    #: The response cache, if the engine has one.
    cache: CacheSession | None = None
    #: Embeddings: pack many items into each request (``trio_llm._packer``), up to these.
    packing: PackLimits | None = None


@attrs.define(eq=False)
class Item:
    """One input item: its position, and its request (or why it has none)."""

    index: int
    request: Request | None
    problem: InputError | None = None


@attrs.define(eq=False)
class _Progress:
    """What happened to one item across its attempts."""

    sent: int = 0
    first_sent: float | None = None
    key_id: str | None = None
    provider: str = ""
    model: str = ""
    held_usd: float = 0.0
    route: str | None = None
    route_index: int = 0
    rerouted: list[str] = attrs.field(factory=list)
    parsed: Any = None


@attrs.define(eq=False)
class _Budget:
    """Money for one run: what was spent, and what requests in flight may still cost."""

    limit_usd: float
    spent_usd: float = 0.0
    held_usd: float = 0.0


@final
class Run:
    """One map / stream / complete call: its items, its stop switch, its counters."""

    def __init__(
        self,
        parts: RunParts,
        total: int | None,
        *,
        deadline: float | None = None,
        budget_usd: float | None = None,
        schema: OutputSchema | None = None,
    ) -> None:
        self.id = f"run-{next(_run_ids)}"
        #: What every answer of this run must be (``map(..., schema=...)``).
        self.schema = schema
        self._parts = parts
        self.total = total
        self.deadline = deadline
        self._budget = None if budget_usd is None else _Budget(limit_usd=budget_usd)
        self.stopped: ErrorInfo | None = None
        self.read = 0
        self.abandoned = False
        self.source_error: Exception | None = None
        self._item_scopes: set[trio.CancelScope] = set()
        # Cancelled by a stop (an idle source must not hold the run) and by leaving.
        self._source_scope = trio.CancelScope()
        self._everything = trio.CancelScope()

    # --- stopping ------------------------------------------------------------------------
    def stop(self, kind: ErrorKind, message: str, *, cancel_in_flight: bool = True) -> None:
        """End the run softly: nothing more is read or sent; queued items (and in-flight
        ones, if ``cancel_in_flight``) become failed results of ``kind``."""
        if self.stopped is None:
            self.stopped = ErrorInfo(kind=kind, message=message)
            self._source_scope.cancel()
            if cancel_in_flight:
                for scope in self._item_scopes:
                    scope.cancel()

    def cancel(self) -> None:
        """End the run at once: the caller left (a stream's loop broke off)."""
        self.abandoned = True
        self._everything.cancel()

    # --- the run -------------------------------------------------------------------------
    async def execute(self, source: Source, deliver: Deliver) -> None:
        """Read ``source``, send every item, hand each result to ``deliver``."""
        parts = self._parts
        started = trio.current_time()
        counts = {"succeeded": 0, "failed": 0}
        parts.events.emit(
            ev.RUN_STARTED,
            run_id=self.id,
            total=self.total,
            keys=parts.keys,
            concurrency=parts.concurrency,
        )
        workers = parts.concurrency
        if self.total is not None:
            workers = max(1, min(workers, self.total))

        async def counted(result: Result) -> None:
            counts["succeeded" if result.ok else "failed"] += 1
            await deliver(result)

        with self._everything:
            async with trio.open_nursery() as watchers:
                if self.deadline is not None:
                    watchers.start_soon(self._stop_at, self.deadline)
                watchers.start_soon(self._report_keys_every, KEYS_EVENT_INTERVAL_S)
                async with trio.open_nursery() as nursery:
                    packing = parts.packing
                    room = 2 * workers if packing is None else max(2 * workers, packing.max_inputs)
                    send, receive = trio.open_memory_channel[list[Item]](room)
                    if packing is not None:
                        # source -> producer -> packer -> workers: one request per pack.
                        to_workers, receive_packs = trio.open_memory_channel[list[Item]](0)
                        nursery.start_soon(
                            pack_items, receive, to_workers, packing, parts.estimator
                        )
                        receive = receive_packs
                    async with receive:
                        for _ in range(workers):
                            nursery.start_soon(self._work, receive.clone(), counted)
                    await self._produce(source, send, counted)
                watchers.cancel_scope.cancel()
            if self.stopped is not None and self.total is not None:
                # Items never read from a sized source are reported too: none goes missing.
                for index in range(self.read, self.total):
                    await counted(self._not_done(index, None, 0))
        self._report_keys()
        parts.events.emit(
            ev.RUN_FINISHED,
            run_id=self.id,
            wall_s=trio.current_time() - started,
            stopped=None if self.stopped is None else self.stopped.kind.value,
            abandoned=self.abandoned,
            **counts,
        )

    async def _produce(
        self, source: Source, items: trio.MemorySendChannel[list[Item]], deliver: Deliver
    ) -> None:
        taken: Item | None = None
        async with items:
            with self._source_scope:
                async with contextlib.aclosing(_aiter(source)) as prompts:
                    while True:
                        try:
                            prompt = await anext(prompts)
                        except StopAsyncIteration:
                            break
                        except Exception as exc:  # the caller's source failed, not us
                            self.source_error = exc
                            break
                        taken = self._item(prompt)
                        await items.send([taken])
                        taken = None
        if taken is not None:
            # Taken from the source, then the run stopped before a worker got it.
            await deliver(self._not_done(taken.index, taken.request, 0))

    def _item(self, prompt: Prompt) -> Item:
        index = self.read
        self.read += 1
        try:
            return Item(index, to_request(prompt))
        except InputError as exc:
            return Item(index, None, exc)
        except Exception as exc:  # an item no coercion rule foresaw: it fails alone
            return Item(index, None, InputError(f"cannot read this item ({exc!r})"))

    async def _work(self, packs: trio.MemoryReceiveChannel[list[Item]], deliver: Deliver) -> None:
        async with packs:
            async for pack in packs:
                if len(pack) == 1 and not self._packed(pack[0]):
                    await deliver(await self.process(pack[0]))
                else:
                    for result in await self.process_pack(pack):
                        await deliver(result)

    async def _stop_at(self, deadline: float) -> None:
        await trio.sleep(deadline)
        self.stop(ErrorKind.DEADLINE, f"the run's deadline of {deadline}s passed")

    def _report_keys(self) -> None:
        events = self._parts.events
        if events.listening:
            stats = self._parts.scheduler.statistics()
            events.emit(
                ev.KEYS_UPDATED,
                keys=[attrs.asdict(s) for s in stats],
                in_flight=sum(s.in_flight for s in stats),
            )

    async def _report_keys_every(self, interval: float) -> None:
        while True:
            self._report_keys()
            await trio.sleep(interval)

    # --- one item ------------------------------------------------------------------------
    async def process(self, item: Item) -> Result:
        """Send one item (with retries) and return its one Result."""
        if item.request is None:
            assert item.problem is not None
            invalid = Outcome(kind=ErrorKind.INVALID_INPUT, message=str(item.problem), sent=False)
            return self._failed(item.index, item.problem.item_id, _Progress(), invalid)
        request = item.request
        if self.stopped is not None:
            return self._not_done(item.index, request, 0)
        claim = await self._claim(request)
        try:
            if claim is not None and claim.hit is not None:
                return self._cached(item.index, request, *claim.hit)
            outcome, progress = await self._send(item.index, request)
            if claim is not None and outcome is not None and outcome.ok and outcome.completion:
                await self._store(claim, progress.route_index, outcome.completion)
        finally:
            if claim is not None:
                claim.release()  # identical items waiting for this one go on
        if outcome is None:  # cancelled by the run's stop
            return self._not_done(item.index, request, progress.sent, progress)
        if outcome.ok:
            return self._succeeded(item.index, request, progress, outcome)
        return self._failed(item.index, request.id, progress, outcome)

    async def _claim(self, request: Request) -> CacheClaim | None:
        """The response cache's answer for ``request`` or the right to store one (identical
        requests in flight wait for the first); ``None`` without a cache. The cache only
        saves requests: when it fails (a broken file), the item is sent as if there were none.
        """
        cache = self._parts.cache
        if cache is None:
            return None
        try:
            return await cache.claim(request)
        except Exception:
            return None

    async def _store(self, claim: CacheClaim, route: int, completion: Completion) -> None:
        with contextlib.suppress(Exception):  # as in _claim: an answer is never lost to it
            await claim.store(route, completion)

    async def _send(self, index: int, request: Request) -> tuple[Outcome | None, _Progress]:
        """Send ``request`` with retries: how it ended (``None``: the run's stop cancelled
        it), and what happened on the way."""
        progress = _Progress()
        scope = trio.CancelScope()
        self._item_scopes.add(scope)
        ended: Outcome | None = None
        try:
            with scope:
                try:
                    ended = await self._attempts(index, request, progress, scope)
                except Exception as exc:
                    # A bug, or something no table foresaw, in this item only: it fails alone.
                    ended = Outcome(
                        kind=ErrorKind.INTERNAL,
                        message=f"{type(exc).__name__}: {exc} (at {_where(exc)})",
                        sent=False,
                    )
        finally:
            self._item_scopes.discard(scope)
            self._release_budget(progress, None)
        if ended is not None:
            return ended, progress
        if self.stopped is not None:  # cancelled by the run's stop
            return None, progress
        # The item's own deadline.
        message = f"gave up after the item's deadline of {self._parts.retry.deadline}s"
        return Outcome(kind=ErrorKind.DEADLINE, message=message, sent=False), progress

    # --- packs of items (embeddings) -----------------------------------------------------
    def _packed(self, item: Item) -> bool:
        return (
            self._parts.packing is not None
            and item.request is not None
            and item.request.is_embedding
        )

    async def process_pack(self, pack: list[Item]) -> list[Result]:
        """Send a pack of items as one request (with retries); one Result per item.

        Every item of the pack shares its attempts and its outcome. A final failure that may
        be one input's fault (400, 422, too long) splits the pack in halves, each sent again,
        so that one bad input fails alone.
        """
        unfit = [item for item in pack if not self._packed(item)]
        pack = [item for item in pack if self._packed(item)]
        results = [await self.process(item) for item in unfit]
        if not pack:
            return results
        requests = [item.request for item in pack]
        assert all(r is not None for r in requests)
        first = pack[0].request
        assert first is not None
        if self.stopped is not None:
            return results + [self._not_done(i.index, i.request, 0) for i in pack]
        inputs = [r.params["input"] for r in requests if r is not None]
        combined = Request(messages=(), params={**first.params, "input": inputs}, id=first.id)
        outcome, progress = await self._send(pack[0].index, combined)
        if outcome is None:
            return results + [
                self._not_done(i.index, i.request, progress.sent, progress) for i in pack
            ]
        if outcome.ok:
            return results + self._split(pack, progress, outcome)
        if len(pack) > 1 and outcome.kind in _ONE_INPUTS_FAULT and self.stopped is None:
            half = len(pack) // 2
            return (
                results
                + await self.process_pack(pack[:half])
                + await self.process_pack(pack[half:])
            )
        return results + [
            self._failed(i.index, None if i.request is None else i.request.id, progress, outcome)
            for i in pack
        ]

    def _split(self, pack: list[Item], progress: _Progress, outcome: Outcome) -> list[Result]:
        """A packed answer as one succeeded Result per item: its vector, its share of the
        usage (by its estimate; the shares add up to what the server reported)."""
        completion = outcome.completion
        assert completion is not None
        vectors = completion.embeddings
        if vectors is None or len(vectors) != len(pack):
            got = "no" if vectors is None else len(vectors)
            wrong = Outcome(
                kind=ErrorKind.MALFORMED,
                message=f"{got} vectors in the answer to {len(pack)} inputs",
                status=outcome.status,
                request_id=outcome.request_id,
            )
            return [
                self._failed(i.index, None if i.request is None else i.request.id, progress, wrong)
                for i in pack
            ]
        requests = [i.request for i in pack if i.request is not None]
        usage = completion.usage
        shares = (
            None
            if usage is None
            else _shares(usage.prompt_tokens, [self._parts.estimator(r) for r in requests])
        )
        raw = completion.raw
        results = []
        for position, (item, request) in enumerate(zip(pack, requests, strict=True)):
            own_usage = None if shares is None else Usage(prompt_tokens=shares[position])
            own_raw: dict[str, Any] = {}
            if self._parts.keep_raw:
                # The body this input would have had, sent alone (Batch API output lines).
                used = 0 if own_usage is None else own_usage.prompt_tokens
                own_raw = {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": vectors[position]}],
                    "model": raw.get("model", progress.model),
                    "usage": {"prompt_tokens": used, "total_tokens": used},
                }
            own = Completion(
                text="",
                finish_reason=None,
                usage=own_usage,
                request_id=completion.request_id,
                raw=own_raw,
                embeddings=(vectors[position],),
            )
            results.append(
                self._succeeded(
                    item.index, request, progress, attrs.evolve(outcome, completion=own)
                )
            )
        return results

    async def _attempts(
        self, index: int, request: Request, progress: _Progress, scope: trio.CancelScope
    ) -> Outcome:
        parts = self._parts
        if parts.fallback_on is None:
            return await self._on_route(index, request, progress, scope, None)
        # A fallback chain: each route in turn, with its own attempts, while the item fails
        # for a reason the next route may not have.
        last = len(parts.routes) - 1
        for route in range(last + 1):
            outcome = await self._on_route(index, request, progress, scope, route)
            if outcome.ok or route == last or self.stopped is not None:
                return outcome
            assert outcome.kind is not None
            if outcome.kind not in parts.fallback_on:
                return outcome
            progress.rerouted.append(f"{parts.routes[route]}: {outcome.kind.value}")
            parts.events.emit(
                ev.REQUEST_REROUTED,
                run_id=self.id,
                index=index,
                id=request.id,
                route=parts.routes[route],
                to=parts.routes[route + 1],
                kind=outcome.kind.value,
            )
        raise AssertionError("unreachable: the last route returns")

    async def _on_route(
        self,
        index: int,
        request: Request,
        progress: _Progress,
        scope: trio.CancelScope,
        route: int | None,
    ) -> Outcome:
        """The attempts of one item on ``route`` (``None``: any), until the policy table says
        stop."""
        parts = self._parts
        policy = parts.retry
        schema = self.schema or schema_of_request(request)
        if self.schema is not None and "response_format" not in request.params:
            format_ = self.schema.response_format()
            request = attrs.evolve(request, params={**request.params, "response_format": format_})
        tokens = parts.estimator(request)
        tries = malformed = moves = invalid = 0
        first_refusal: float | None = None

        def admit(lease: Lease) -> Outcome | None:
            if self.stopped is not None:
                return Outcome(kind=self.stopped.kind, message=self.stopped.message, sent=False)
            return self._hold_budget(request, lease, tokens, progress)

        asked = trio.current_time()

        def sent(lease: Lease) -> None:
            now = trio.current_time()
            progress.sent += 1
            progress.key_id = lease.key.fingerprint
            progress.provider = lease.provider.name
            progress.model = lease.model
            progress.route_index = lease.route
            if len(parts.routes) > 1:
                progress.route = parts.routes[lease.route]
            if progress.first_sent is None:
                progress.first_sent = now
                if policy.deadline is not None:
                    # The item's deadline counts from its first attempt, not from the queue.
                    scope.deadline = now + policy.deadline
            if parts.events.listening:
                parts.events.emit(
                    ev.REQUEST_SENT,
                    run_id=self.id,
                    index=index,
                    id=request.id,
                    provider=progress.provider,
                    model=progress.model,
                    attempt=progress.sent,
                    key_id=lease.key.fingerprint,
                    est_tokens=tokens,
                    queued_s=now - asked,
                    priority="interactive" if parts.urgent else "batch",
                )

        while True:
            asked = trio.current_time()
            async with parts.limiter:
                outcome = await parts.sender.attempt(
                    request,
                    tokens=tokens,
                    admit=admit,
                    on_sent=sent,
                    route=route,
                    urgent=parts.urgent,
                )
            self._release_budget(progress, outcome)
            if outcome.ok and schema is not None:
                # Checked on the way back: an answer that fails its schema is asked again.
                outcome, progress.parsed = check_output(outcome, schema)
            if outcome.ok or not outcome.sent:
                # A completion; or nothing could be sent for it (final).
                return outcome
            assert outcome.kind is not None
            rule = rule_for(outcome.kind, outcome.should_retry)
            if rule.retry is Retry.NO:
                return outcome
            if rule.retry is Retry.AGAIN:
                # The model's answer, not the transport: counted apart, asked again at once.
                invalid += 1
                if invalid >= policy.invalid_output_attempts:
                    return outcome
                parts.events.emit(
                    ev.REQUEST_RETRYING,
                    index=index,
                    id=request.id,
                    attempt=progress.sent,
                    kind=outcome.kind.value,
                    status=outcome.status,
                    key_id=progress.key_id,
                    wait_s=0.0,
                )
                continue
            if rule.retry is Retry.MOVE:
                # The key was the problem (and is dropped): another key, at once, not counted.
                moves += 1
                if moves <= parts.keys:
                    continue
                return outcome
            tries += 1
            now = trio.current_time()
            exhausted = tries >= policy.attempts
            if outcome.kind is ErrorKind.RATE_LIMITED:
                # 429s keep an item alive for at least a rate-limit window, so that a server
                # that says nothing of when it will admit us is not given up on in seconds.
                first_refusal = now if first_refusal is None else first_refusal
                exhausted = exhausted and now - first_refusal >= policy.rate_limit_window
            elif outcome.kind is ErrorKind.MALFORMED:
                malformed += 1
                exhausted = exhausted or malformed >= policy.malformed_attempts
            if exhausted:
                return outcome
            wait = 0.0
            if rule.retry is Retry.BACKOFF:
                if outcome.retry_after is not None:
                    if outcome.retry_after > policy.max_retry_after:
                        return outcome
                    wait = outcome.retry_after
                else:
                    wait = policy.backoff(tries)
            parts.events.emit(
                ev.REQUEST_RETRYING,
                run_id=self.id,
                index=index,
                id=request.id,
                provider=progress.provider,
                model=progress.model,
                attempt=progress.sent,
                kind=outcome.kind.value,
                status=outcome.status,
                key_id=progress.key_id,
                wait_s=wait,
            )
            if wait > 0:
                await trio.sleep(wait)

    # --- money ---------------------------------------------------------------------------
    def _hold_budget(
        self, request: Request, lease: Lease, tokens: float, progress: _Progress
    ) -> Outcome | None:
        budget = self._budget
        if budget is None:
            return None
        price = self._parts.prices.price(lease.model)
        if price is None:
            return Outcome(
                kind=ErrorKind.INVALID_INPUT,
                message=f"not sent: a budget is set and the price of model {lease.model!r} is "
                "unknown; add it with --prices FILE (or Engine(prices=...))",
                sent=False,
            )
        estimator = self._parts.estimator
        prompt = estimator.prompt_tokens(request) if isinstance(estimator, CharEstimator) else 0
        cost = price.cost(
            Usage(prompt_tokens=prompt, completion_tokens=max(0, int(tokens) - prompt))
        )
        if budget.spent_usd + budget.held_usd + cost > budget.limit_usd:
            message = f"not sent: the budget of ${budget.limit_usd:g} would be exceeded"
            self.stop(ErrorKind.BUDGET, message, cancel_in_flight=False)
            return Outcome(kind=ErrorKind.BUDGET, message=message, sent=False)
        budget.held_usd += cost
        progress.held_usd = cost
        return None

    def _release_budget(self, progress: _Progress, outcome: Outcome | None) -> None:
        budget = self._budget
        if budget is None or not progress.held_usd:
            return
        budget.held_usd -= progress.held_usd
        progress.held_usd = 0.0
        usage = None if outcome is None else outcome.usage
        if usage is not None:
            budget.spent_usd += self._parts.prices.cost(progress.model, usage) or 0.0
        if budget.spent_usd >= budget.limit_usd:
            # Nothing more can be sent: stop now, not when the next item comes along.
            self.stop(
                ErrorKind.BUDGET,
                f"not sent: the budget of ${budget.limit_usd:g} is spent",
                cancel_in_flight=False,
            )

    # --- results -------------------------------------------------------------------------
    def _not_done(
        self,
        index: int,
        request: Request | None,
        sent: int,
        progress: _Progress | None = None,
    ) -> Result:
        stopped = self.stopped or ErrorInfo(kind=ErrorKind.CANCELLED, message="cancelled")
        item_id = None if request is None else request.id
        # Every failed Result has its event, so that displays and logs count what they see.
        self._parts.events.emit(
            ev.REQUEST_FAILED,
            run_id=self.id,
            index=index,
            id=item_id,
            provider=None if progress is None else progress.provider or None,
            model=None if progress is None else progress.model or None,
            attempts=sent,
            kind=stopped.kind.value,
            status=None,
            sent=False,
            message=stopped.message,
        )
        return Result(
            index=index,
            id=item_id,
            ok=False,
            error=stopped,
            attempts=sent,
            key_id=None if progress is None else progress.key_id,
        )

    def _where(self, progress: _Progress) -> dict[str, Any]:
        """Which route and model answered (or were tried last), and the moves between."""
        return {
            "route": progress.route,
            "model": progress.model or None,
            "rerouted": tuple(progress.rerouted),
        }

    def _latency(self, progress: _Progress) -> float:
        first = progress.first_sent
        return 0.0 if first is None else trio.current_time() - first

    def _succeeded(
        self, index: int, request: Request, progress: _Progress, outcome: Outcome
    ) -> Result:
        parts = self._parts
        completion = outcome.completion
        assert completion is not None
        usage = completion.usage
        cost = None if usage is None else parts.prices.cost(progress.model, usage)
        if (
            usage is not None
            and request.max_tokens is None
            and not request.is_embedding
            and isinstance(parts.estimator, CharEstimator)
        ):
            parts.estimator.observe(usage.completion_tokens)
        latency = self._latency(progress)
        rate = _tokens_per_s(usage, outcome.generation_s)
        if parts.events.listening:
            parts.events.emit(
                ev.REQUEST_SUCCEEDED,
                run_id=self.id,
                index=index,
                id=request.id,
                provider=progress.provider,
                model=progress.model,
                attempt=progress.sent,
                key_id=progress.key_id,
                latency_s=latency,
                prompt_tokens=None if usage is None else usage.prompt_tokens,
                completion_tokens=None if usage is None else usage.completion_tokens,
                cost_usd=cost,
                ttft_s=outcome.ttft_s,
                output_tokens_per_s=rate,
            )
        return Result(
            index=index,
            id=request.id,
            ok=True,
            text=completion.text,
            finish_reason=completion.finish_reason,
            usage=usage,
            attempts=progress.sent,
            latency=latency,
            key_id=progress.key_id,
            cost_usd=cost,
            raw=completion.raw if parts.keep_raw else None,
            **self._where(progress),
            ttft_s=outcome.ttft_s,
            output_tokens_per_s=rate,
            embedding=None if not completion.embeddings else completion.embeddings[0],
            tool_calls=completion.tool_calls,
            parsed=progress.parsed,
        )

    def _cached(self, index: int, request: Request, route: int, completion: Completion) -> Result:
        parts = self._parts
        assert parts.cache is not None
        model = parts.cache.model(route, request)
        label = parts.routes[route] if len(parts.routes) > 1 else None
        parts.events.emit(
            ev.REQUEST_CACHED, run_id=self.id, index=index, id=request.id, route=label, model=model
        )
        return Result(
            index=index,
            id=request.id,
            ok=True,
            text=completion.text,
            finish_reason=completion.finish_reason,
            usage=completion.usage,
            cost_usd=0.0,
            raw=completion.raw if parts.keep_raw else None,
            route=label,
            model=model,
            cached=True,
        )

    def _failed(
        self, index: int, item_id: str | None, progress: _Progress, outcome: Outcome
    ) -> Result:
        error = outcome.error()
        self._parts.events.emit(
            ev.REQUEST_FAILED,
            run_id=self.id,
            index=index,
            id=item_id,
            provider=progress.provider or None,
            model=progress.model or None,
            attempts=progress.sent,
            kind=error.kind.value,
            status=error.status,
            # Whether ``status`` answered this item's last attempt (not a refusal before
            # sending that repeats an earlier answer): counters of responses count it once.
            sent=outcome.sent,
            message=error.message,
        )
        return Result(
            index=index,
            id=item_id,
            ok=False,
            error=error,
            attempts=progress.sent,
            latency=self._latency(progress),
            key_id=progress.key_id,
            **self._where(progress),
        )


def _tokens_per_s(usage: Usage | None, generation_s: float | None) -> float | None:
    """Output tokens per second of a streamed answer, after its first token."""
    if usage is None or not generation_s or generation_s <= 0:
        return None
    return usage.completion_tokens / generation_s


#: Final failures of a pack that one of its inputs may have caused: the pack is split.
_ONE_INPUTS_FAULT = frozenset(
    {ErrorKind.BAD_REQUEST, ErrorKind.CONTEXT_LENGTH, ErrorKind.UNPROCESSABLE}
)


def _shares(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, in whole numbers that add up to it
    (largest remainders first)."""
    weight = sum(weights)
    if weight <= 0:
        weights, weight = [1] * len(weights), len(weights)
    exact = [total * w / weight for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: shares[i] - exact[i])
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _where(exc: BaseException) -> str:
    """Where an exception was raised (file:line of its innermost frame), for a bug report."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}"


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
