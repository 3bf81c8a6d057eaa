"""A run keeps its promise: exactly one Result per input, whatever the server, the input or
the clock does (issue: the core keeps its promise)."""

from __future__ import annotations

import decimal
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from _fakes import completion, error, last_user_text, make_engine

import trio_llm
from trio_llm import BreakerPolicy, ErrorKind, Limits, ModelPrice, PriceTable, RetryPolicy


def sends_per_window(times: list[float], window: float) -> int:
    """The most sends inside any window of ``window`` seconds (starting at a send)."""
    times = sorted(times)
    most = 0
    end = 0
    for start_index, start in enumerate(times):
        while end < len(times) and times[end] < start + window:
            end += 1
        most = max(most, end - start_index)
    return most


# --- 1. one bad response or item fails that item only -------------------------------------


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        # A limit of 0 (division by zero in the bucket, once).
        ({"headers": {"x-ratelimit-limit-requests": "0"}}, None),
        ({"headers": {"x-ratelimit-limit-tokens": "0", "x-ratelimit-remaining-tokens": "0"}}, None),
        (
            {"headers": {"x-ratelimit-limit-requests": "nan", "x-ratelimit-reset-requests": "-1s"}},
            None,
        ),
        (
            {
                "headers": {
                    "x-ratelimit-limit-requests": "10",
                    "x-ratelimit-remaining-requests": "99",
                }
            },
            None,
        ),
        ({"usage": {"prompt_tokens": float("inf"), "completion_tokens": 1}}, ErrorKind.MALFORMED),
        ({"usage": {"prompt_tokens": -5, "completion_tokens": 1}}, ErrorKind.MALFORMED),
        ({"usage": {"prompt_tokens": "12", "completion_tokens": 1}}, ErrorKind.MALFORMED),
        ({"body": b"[" * 100_000 + b"]" * 100_000}, ErrorKind.MALFORMED),
        (
            {"body": b'{"choices": [{"message": ' * 5_000 + b"1" + b"}]}" * 5_000},
            ErrorKind.MALFORMED,
        ),
    ],
)
async def test_one_bad_response_fails_that_item_only(
    autojump_clock: trio.testing.MockClock, bad: dict[str, Any], kind: ErrorKind | None
) -> None:
    """A response with nonsense headers, impossible usage or absurdly deep JSON fails (or not)
    its own item; every other item still gets its answer."""

    async def handler(request: httpx.Request) -> httpx.Response:
        text = last_user_text(request)
        if text != "bad":
            return completion(f"echo: {text}")
        if "body" in bad:
            return httpx.Response(200, content=bad["body"])
        body = {
            "choices": [{"message": {"content": "odd"}, "finish_reason": "stop"}],
            "usage": bad.get("usage", {"prompt_tokens": 1, "completion_tokens": 1}),
        }
        return httpx.Response(200, content=json.dumps(body).encode(), headers=bad.get("headers"))

    prompts = ["a", "b", "bad", "c", "d"]
    results = await make_engine(handler, concurrency=1).map(prompts)
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.text for r in results if r.index != 2] == ["echo: a", "echo: b", "echo: c", "echo: d"]
    odd = results[2]
    if kind is None:
        assert odd.ok
    else:
        assert not odd.ok
        assert odd.error is not None
        assert odd.error.kind is kind


async def test_a_parameter_json_cannot_encode_fails_its_item_as_invalid_input(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Decimal in the request body cannot be sent: that item fails as invalid_input, unsent;
    the rest of the run goes on."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return completion("ok")

    prompts: list[Any] = [
        "a",
        {"messages": [{"role": "user", "content": "b"}], "temperature": decimal.Decimal("0.5")},
        "c",
    ]
    results = await make_engine(handler).map(prompts)
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error is not None
    assert results[1].error.kind is ErrorKind.INVALID_INPUT
    assert "Decimal" in results[1].error.message
    assert results[1].attempts == 0


async def test_an_unexpected_error_fails_its_item_as_internal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An exception no table foresaw (a broken custom transport) fails that item as `internal`,
    naming the exception; the run and the other items go on."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if last_user_text(request) == "boom":
            raise RuntimeError("the transport broke in its own way")
        return completion("ok")

    results = await make_engine(handler, concurrency=2).map(["a", "boom", "b"])
    assert [r.ok for r in results] == [True, False, True]
    error_info = results[1].error
    assert error_info is not None
    assert error_info.kind is ErrorKind.INTERNAL
    assert "RuntimeError: the transport broke in its own way" in error_info.message
    assert results[1].attempts == 1


# --- 2. the Retry-After cap holds for every item -------------------------------------------


@pytest.mark.parametrize("keys", [1, 2, 3])
async def test_a_retry_after_beyond_the_cap_fails_items_at_once_on_any_number_of_keys(
    autojump_clock: trio.testing.MockClock, keys: int
) -> None:
    """With a Retry-After of 3600 s (cap 120 s) on every key, every item fails at once as
    rate_limited, naming the server's Retry-After: none sleeps out a cooldown."""
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        return error(429, "slow down", code="rate_limit_exceeded", headers={"retry-after": "3600"})

    engine = make_engine(handler, keys=[f"sk-key-{i:016d}" for i in range(keys)], concurrency=8)
    results = await engine.map([str(i) for i in range(20)])
    assert trio.current_time() < 1
    assert sent <= keys + 8  # one refusal per key, and what was in flight with it
    assert all(not r.ok for r in results)
    assert {r.error.kind for r in results if r.error} == {ErrorKind.RATE_LIMITED}
    assert all("3600" in r.error.message for r in results if r.error)


async def test_a_429_moves_the_request_to_another_key_and_the_cooled_key_rests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 429 sends the request on to the other key at once, and the refused key is not used
    again until its Retry-After is over."""
    sends: list[tuple[float, str]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"][-4:]
        sends.append((trio.current_time(), key))
        if key == "0001" and trio.current_time() < 30:
            return error(429, "slow", code="rate_limit_exceeded", headers={"retry-after": "30"})
        await trio.sleep(1)
        return completion("ok")

    engine = make_engine(handler, keys=["sk-key-00000000001", "sk-key-00000000002"], concurrency=2)
    results = await engine.map([str(i) for i in range(80)])
    assert all(r.ok for r in results)
    on_first = [t for t, key in sends if key == "0001"]
    assert on_first[0] == 0.0
    assert len(on_first) > 1  # used again once rested...
    assert all(t >= 30 for t in on_first[1:])  # ...and not before its Retry-After
    refused_item = min(t for t, key in sends if key == "0002")
    assert refused_item == 0.0  # moved at once, not after a backoff


# --- 3. no burst when a cooldown ends -------------------------------------------------------


async def test_after_a_cooldown_the_key_resumes_at_its_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When a key's Retry-After ends, its waiting requests go at the key's rate: no second
    holds more than the limit and one burst (today: 64 sends within 1 ms)."""
    sends: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        now = trio.current_time()
        sends.append(now)
        if len(sends) == 1:
            return error(429, "slow", code="rate_limit_exceeded", headers={"retry-after": "10"})
        await trio.sleep(0.5)
        return completion("ok")

    engine = make_engine(handler, limits=Limits(rpm=1200), concurrency=64)  # 20/s
    results = await engine.map([str(i) for i in range(200)])
    assert all(r.ok for r in results)
    after = [t for t in sends if t >= 10]
    assert sends_per_window(after, 1.0) <= 20 + 1
    assert sends_per_window(after, 0.1) <= 3


# --- 5. stops end the run promptly, even with an idle source --------------------------------


async def idle_after(first: list[str]) -> AsyncIterator[str]:
    """Yields ``first``, then waits (an hour) before the next: a silent source."""
    for prompt in first:
        yield prompt
    await trio.sleep(3600)
    yield "late"


async def test_the_run_deadline_stops_an_idle_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """map(deadline=5) over a source that goes silent returns at 5 s, with a Result for
    every item it read (not after the source's hour)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1)
        return completion("ok")

    results = await make_engine(handler).map(idle_after(["a", "b"]), deadline=5)
    assert trio.current_time() == pytest.approx(5.0)
    assert [r.ok for r in results] == [True, True]


async def test_a_budget_stop_ends_the_run_even_with_an_idle_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A budget spent while the source is silent ends the run at once (nothing more could be
    sent), not when the source next yields."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1)
        return completion("ok", prompt_tokens=1_000_000, completion_tokens=0)

    async def source() -> AsyncIterator[str]:
        yield "a"
        await trio.sleep(2)
        yield "b"
        await trio.sleep(3600)
        yield "c"

    prices = PriceTable({"gpt-4o-mini": ModelPrice(input_per_m=1.0, output_per_m=1.0)})
    results = await make_engine(handler, prices=prices).map(source(), budget_usd=1.5)
    assert trio.current_time() == pytest.approx(3.0)
    assert [r.ok for r in results] == [True, True]


async def test_cancelling_the_caller_ends_the_run_with_an_idle_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling the caller (Ctrl-C, a service shutting down) leaves at once, holding
    nothing, even while the source is silent."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1)
        return completion("ok")

    engine = make_engine(handler)
    with trio.move_on_after(3):
        async with engine:
            await engine.map(idle_after(["a"]))
    assert trio.current_time() == pytest.approx(3.0)
    assert engine.statistics().in_flight == 0


async def test_an_item_taken_from_the_source_at_a_stop_still_gets_a_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Items read while the channel was full and the run stopped still end as Results."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(100)
        return completion("ok")

    read = 0

    async def source() -> AsyncIterator[str]:
        nonlocal read
        for i in range(100):
            read += 1
            yield str(i)

    results = await make_engine(handler, concurrency=2).map(source(), deadline=5)
    assert len(results) == read
    assert [r.index for r in results] == list(range(read))
    assert {r.error.kind for r in results if r.error} == {ErrorKind.DEADLINE}


# --- 6. leaving a stream early cancels at once ----------------------------------------------


async def test_leaving_a_stream_block_early_cancels_in_flight_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Breaking out of `async with engine.stream(...)` cancels what is in flight at once and
    sends nothing more (not after the next completion, 50 s later)."""
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        await trio.sleep(1 if last_user_text(request) == "0" else 50)
        return completion("ok")

    engine = make_engine(handler, concurrency=4)
    async with engine.stream(str(i) for i in range(100)) as results:
        async for _ in results:
            break
    assert trio.current_time() == pytest.approx(1.0)
    assert sent <= 5


async def test_an_error_in_the_callers_loop_cancels_the_stream_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An exception in the body of the consuming loop ends the stream promptly and is raised
    as itself (not buried in exception groups)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1 if last_user_text(request) == "0" else 3600)
        return completion("ok")

    async def consume() -> None:
        async with make_engine(handler, concurrency=4).stream(
            str(i) for i in range(100)
        ) as results:
            async for _ in results:
                raise KeyError("the caller's own bug")

    with pytest.raises(KeyError):
        await consume()
    assert trio.current_time() == pytest.approx(1.0)


# --- 7. a failing source is an error, not a normal end --------------------------------------


def failing_source(good: int) -> Any:
    """A generator of ``good`` prompts that then raises."""
    for i in range(good):
        yield str(i)
    raise ValueError("the input file is corrupt")


async def test_map_raises_source_error_and_keeps_what_finished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When the caller's iterator raises, map raises SourceError (the cause chained) and the
    results of what was read are on the exception."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1)
        return completion(f"echo: {last_user_text(request)}")

    with pytest.raises(trio_llm.SourceError) as info:
        await make_engine(handler).map(failing_source(5))
    assert isinstance(info.value.__cause__, ValueError)
    assert "corrupt" in str(info.value)
    assert [r.text for r in info.value.results] == [f"echo: {i}" for i in range(5)]


async def test_stream_raises_source_error_after_the_last_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """async for over a stream yields every result of what was read, then raises
    SourceError: it does not just end as if the input were complete."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return completion("ok")

    got = 0

    async def consume() -> None:
        nonlocal got
        async with make_engine(handler).stream(failing_source(3)) as results:
            async for _ in results:
                got += 1

    with pytest.raises(trio_llm.SourceError) as info:
        await consume()
    assert got == 3
    assert info.value.read == 3
    assert isinstance(info.value.__cause__, ValueError)


# --- 8. dead keys do not eat an item's attempts ---------------------------------------------


async def test_revoked_keys_do_not_use_up_an_items_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With 10 revoked keys and 1 good one (3 attempts allowed), every item succeeds: moving
    off a key that was just dropped is not a retry of the item."""
    good = "sk-good-key-000000001"

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"].endswith(good):
            return completion("ok")
        return error(401, "revoked", code="invalid_api_key")

    keys = [f"sk-revoked-{i:010d}" for i in range(10)] + [good]
    engine = make_engine(handler, keys=keys, retry=RetryPolicy(attempts=3), concurrency=4)
    results = await engine.map([str(i) for i in range(30)])
    assert all(r.ok for r in results)
    assert sum(k.dropped is not None for k in engine.statistics().keys) == 10


# --- 9. breaker recovery wakes everyone -----------------------------------------------------


async def test_after_the_breakers_probe_succeeds_every_worker_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once the half-open probe succeeds, all waiting workers send again at once: the run
    does not idle with one worker busy."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 5:
            return error(503, "overloaded")
        await trio.sleep(1)
        return completion("ok")

    engine = make_engine(
        handler,
        concurrency=10,
        breaker=BreakerPolicy(failures=5, cool_off_s=5.0),
        retry=RetryPolicy(attempts=10, wait_initial=0.1, wait_max=0.1, wait_jitter=0.0),
    )
    results = await engine.map([str(i) for i in range(50)])
    assert all(r.ok for r in results)
    # Open at ~0, probe at 5 s (1 s), then 50 requests over 10 workers: 5 more seconds.
    assert trio.current_time() < 12


# --- 10. the per-item deadline counts from the first attempt --------------------------------


async def test_the_item_deadline_counts_from_its_first_attempt_not_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Items queued behind the rate limit for longer than the per-item deadline are not
    failed unsent: the deadline starts when each is first sent."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(0.1)
        return completion("ok")

    engine = make_engine(
        handler, limits=Limits(rpm=60), concurrency=16, retry=RetryPolicy(deadline=5.0)
    )
    results = await engine.map([str(i) for i in range(100)])
    assert all(r.ok for r in results)
    assert trio.current_time() > 90


async def test_the_item_deadline_still_fails_an_item_that_takes_too_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An item whose attempts run past its deadline fails as `deadline`."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return error(500, "boom")

    engine = make_engine(
        handler, retry=RetryPolicy(attempts=100, deadline=5.0, wait_initial=1, wait_max=1)
    )
    [result] = await engine.map(["x"])
    assert result.error is not None
    assert result.error.kind is ErrorKind.DEADLINE
    assert trio.current_time() == pytest.approx(5.0, abs=1.1)


# --- 11. the budget -------------------------------------------------------------------------


async def test_a_model_without_a_price_is_refused_under_a_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a budget set, a request naming a model with no known price is not sent (never
    priced at $0), and the error names the model and --prices."""
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        return completion("ok")

    prompts = [
        "priced",
        {"messages": [{"role": "user", "content": "x"}], "model": "mystery-model-9000"},
    ]
    results = await make_engine(handler).map(prompts, budget_usd=10)
    assert results[0].ok
    assert results[1].error is not None
    assert "mystery-model-9000" in results[1].error.message
    assert "--prices" in results[1].error.message
    assert sent == 1


async def test_money_held_by_requests_in_flight_counts_against_the_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At concurrency 10, a budget for 5 requests sends 5, not 10: what requests in flight
    may cost is held until they answer."""
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        await trio.sleep(1)
        return completion("ok", prompt_tokens=100, completion_tokens=100)

    prices = PriceTable({"gpt-4o-mini": ModelPrice(input_per_m=10_000.0, output_per_m=10_000.0)})
    engine = make_engine(handler, prices=prices, concurrency=10)
    prompts = [{"messages": [{"role": "user", "content": "x"}], "max_tokens": 96}] * 20
    # Each request may cost (4 + 96) tokens x $0.01 = $1 (its estimate), so $5.5 holds 5.
    results = await engine.map(prompts, budget_usd=5.5)
    assert sent == 5
    assert sum(r.ok for r in results) == 5
    assert {r.error.kind for r in results if r.error} == {ErrorKind.BUDGET}


# --- the promise, as a property ------------------------------------------------------------


def test_sends_per_window_counts_the_busiest_window() -> None:
    """The helper finds the busiest window (so the rate checks above can fail)."""
    assert sends_per_window([0, 0.5, 0.9, 1.0, 5], 1.0) == 3
    assert sends_per_window([], 1.0) == 0
    assert math.isclose(sends_per_window([1, 1, 1], 0.001), 3)


async def test_an_endpoint_that_keeps_failing_fails_its_items_after_the_wait_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server answering 500 to everything opens the breaker; requests wait for it at most
    max_retry_after, then fail with the server's words, instead of queueing behind one probe
    per cool-off for hours."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return error(500, "the model crashed")

    engine = make_engine(
        handler,
        concurrency=8,
        retry=RetryPolicy(attempts=8, max_retry_after=30.0, wait_initial=0.1, wait_jitter=0.0),
    )
    results = await engine.map([str(i) for i in range(40)])
    assert all(not r.ok for r in results)
    assert trio.current_time() < 200
    errors = [r.error for r in results if r.error]
    assert {e.kind for e in errors} == {ErrorKind.SERVER_ERROR}
    assert all("the model crashed" in e.message for e in errors)


async def test_every_failed_result_has_its_request_failed_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Items the run's stop leaves unsent emit request.failed like any other failure, so a
    display counting events agrees with the Results."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(10)
        return completion("ok")

    seen: list[dict[str, Any]] = []
    engine = make_engine(
        handler, concurrency=2, consumers=[lambda _l, _m, event: seen.append(dict(event))]
    )
    results = await engine.map([str(i) for i in range(10)], deadline=15)
    failed = [r for r in results if not r.ok]
    events = [e for e in seen if e["event"] == "request.failed"]
    assert len(failed) == 8
    assert sorted(e["index"] for e in events) == sorted(r.index for r in failed)


async def test_a_request_waiting_long_for_its_key_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request that must wait long for its key (bigger than the token bucket holds) emits
    request.waiting with the wait and its tokens, and the progress line shows it, instead of
    sitting silent."""
    from trio_llm._progress import render_plain
    from trio_llm._summary import RunSummary

    async def handler(request: httpx.Request) -> httpx.Response:
        return completion("ok", prompt_tokens=4_000, completion_tokens=0)

    summary = RunSummary()
    seen: list[dict[str, Any]] = []
    engine = make_engine(
        handler,
        limits=Limits(rpm=600, tpm=6_000),  # 100 tokens/s
        consumers=[summary, lambda _l, _m, event: seen.append(dict(event))],
    )
    big = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4_000}
    async with engine, trio.open_nursery() as nursery:
        nursery.start_soon(engine.map, [big, big])
        await trio.sleep(1)
        line = render_plain(summary.snapshot())
    waits = [e for e in seen if e["event"] == "request.waiting"]
    assert waits
    assert waits[0]["wait_s"] >= 30
    assert waits[0]["est_tokens"] >= 4_000
    assert "a request of ~4," in line
