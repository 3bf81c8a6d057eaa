"""The engine end to end on httpx.MockTransport and trio's MockClock."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import structlog
import trio
import trio.testing
from _fakes import completion, echo, error, last_user_text, make_engine

import trio_llm
from trio_llm import ErrorKind, Limits, RetryPolicy
from trio_llm._rate_model import SEND_MARGIN_S

NO_JITTER = RetryPolicy(attempts=4, wait_initial=1.0, wait_jitter=0.0, wait_max=60.0)


async def test_map_returns_results_in_input_order(autojump_clock: trio.testing.MockClock) -> None:
    """map returns one result per prompt, in input order, whatever order they finish in."""

    async def handler(request: httpx.Request) -> httpx.Response:
        text = last_user_text(request)
        await trio.sleep(10 - int(text))  # later prompts finish first
        return completion(f"answer {text}")

    engine = make_engine(handler, concurrency=10)
    results = await engine.map([str(i) for i in range(10)])
    assert [r.text for r in results] == [f"answer {i}" for i in range(10)]
    assert [r.index for r in results] == list(range(10))
    assert all(r.ok and r.attempts == 1 for r in results)
    assert trio.current_time() == pytest.approx(10.0)


async def test_stream_yields_in_completion_order(autojump_clock: trio.testing.MockClock) -> None:
    """stream yields each result as soon as it finishes."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(10 - int(last_user_text(request)))
        return completion(last_user_text(request))

    engine = make_engine(handler, concurrency=10)
    async with engine:
        seen = [r.text async for r in engine.stream([str(i) for i in range(5)])]
    assert seen == ["4", "3", "2", "1", "0"]


async def test_stream_as_context_manager_without_open_engine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`async with engine.stream(...)` works on an engine that is not open."""
    engine = make_engine(echo(), concurrency=3)
    async with engine.stream(["a", "b", "c"]) as results:
        texts = sorted([r.text async for r in results if r.text])
    assert texts == ["echo: a", "echo: b", "echo: c"]


async def test_plain_stream_on_closed_engine_is_misuse(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Iterating a stream with no open engine raises a ConfigurationError with a hint."""
    engine = make_engine(echo())
    with pytest.raises(trio_llm.ConfigurationError, match="HINT"):
        async for _ in engine.stream(["a"]):
            pass


async def test_leaving_a_stream_early_stops_the_run(autojump_clock: trio.testing.MockClock) -> None:
    """Breaking out of a stream stops its workers: nothing keeps sending."""
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        await trio.sleep(1)
        return completion("x")

    engine = make_engine(handler, concurrency=2)
    async with engine:
        async for _ in engine.stream(str(i) for i in range(1000)):
            break
        await trio.sleep(100)
        assert engine.statistics().in_flight == 0
    assert sent <= 4


async def test_complete_sends_one_request(autojump_clock: trio.testing.MockClock) -> None:
    """complete returns the result of one prompt."""
    engine = make_engine(echo(latency=2))
    result = await engine.complete("hello")
    assert result.ok
    assert result.text == "echo: hello"
    assert result.latency == pytest.approx(2.0)
    assert result.usage == trio_llm.Usage(prompt_tokens=5, completion_tokens=3)


async def test_concurrent_callers_share_the_concurrency_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Many callers on one open engine never exceed its concurrency together."""
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(1)
        in_flight -= 1
        return completion("ok")

    engine = make_engine(handler, concurrency=4)
    async with engine, trio.open_nursery() as nursery:
        for caller in range(3):
            nursery.start_soon(engine.map, [f"{caller}-{i}" for i in range(8)])
        for _ in range(5):
            nursery.start_soon(functools.partial(engine.complete, "single", priority="batch"))
    assert peak == 4
    # 29 requests, 4 at a time, 1 s each.
    assert trio.current_time() == pytest.approx(8.0)


async def test_attempt_timeout_is_a_cancel_scope_and_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An attempt slower than `timeout` is cut at exactly `timeout` and retried."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await trio.sleep(1000 if calls == 1 else 1)
        return completion("late but fine")

    engine = make_engine(handler, timeout=5.0, retry=NO_JITTER)
    result = await engine.complete("slow")
    assert result.ok
    assert result.attempts == 2
    # 5 s timeout + 1 s backoff + 1 s answer
    assert trio.current_time() == pytest.approx(7.0)


async def test_timeout_exhausts_attempts_into_a_failed_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When every attempt times out the item fails with kind `timeout`, not an exception."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1000)
        return completion("never")

    engine = make_engine(handler, timeout=2.0, retry=RetryPolicy(attempts=3, wait_jitter=0))
    [result] = await engine.map(["x"])
    assert not result.ok
    assert result.error is not None
    assert result.error.kind is ErrorKind.TIMEOUT
    assert result.attempts == 3


async def test_cancelling_map_leaves_nothing_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling map cancels in-flight requests and gives their capacity back."""
    started = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal started
        started += 1
        await trio.sleep(10)
        return completion("x")

    engine = make_engine(handler, concurrency=5, limits=Limits(rpm=600, tpm=600_000))
    with trio.move_on_after(3):
        await engine.map([str(i) for i in range(100)])
    assert engine.statistics().in_flight == 0
    assert all(k.in_flight == 0 for k in engine.statistics().keys)
    before = started
    await trio.sleep(60)
    assert started == before  # nothing kept sending after the cancel


async def test_producer_reads_ahead_only_a_bounded_amount(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The source is read lazily: only a few items per worker are taken ahead."""
    pulled = 0

    def source() -> Iterator[str]:
        nonlocal pulled
        for i in range(100_000):
            pulled += 1
            yield str(i)

    engine = make_engine(echo(latency=1), concurrency=4)
    async with engine:
        async for _ in engine.stream(source()):
            break
    assert pulled <= 4 + 2 * 4 + 2


async def test_async_iterable_source(autojump_clock: trio.testing.MockClock) -> None:
    """An async iterable is accepted as the source."""

    async def source() -> AsyncIterator[str]:
        for i in range(3):
            yield str(i)

    results = await make_engine(echo()).map(source())
    assert [r.text for r in results] == ["echo: 0", "echo: 1", "echo: 2"]


async def test_input_shapes_become_requests(autojump_clock: trio.testing.MockClock) -> None:
    """Strings, messages, body dicts (extra fields untouched) and Requests are all accepted."""
    bodies: list[dict[str, Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return completion("ok")

    prompts: list[Any] = [
        "plain",
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        {
            "messages": [{"role": "user", "content": "body"}],
            "temperature": 0.2,
            "x_custom": {"a": 1},
            "model": "other-model",
        },
        trio_llm.Request.from_prompt("req", max_tokens=7),
        {"id": "q1", "prompt": "simple line"},
    ]
    results = await make_engine(handler, concurrency=1).map(prompts)
    assert all(r.ok for r in results)
    assert results[4].id == "q1"
    assert bodies[0]["messages"] == [{"role": "user", "content": "plain"}]
    assert bodies[0]["model"] == "gpt-4o-mini"
    assert len(bodies[1]["messages"]) == 2
    assert bodies[2]["temperature"] == 0.2
    assert bodies[2]["x_custom"] == {"a": 1}
    assert bodies[2]["model"] == "other-model"
    assert bodies[3]["max_tokens"] == 7


async def test_invalid_item_is_a_failed_result_not_an_exception(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A bad item becomes an invalid_input result and the others still run."""
    results = await make_engine(echo()).map(["fine", 42, {"id": "x", "prompt": 3}, "also fine"])
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[1].error is not None
    assert results[1].error.kind is ErrorKind.INVALID_INPUT
    assert results[2].error is not None
    assert "$.prompt" in results[2].error.message
    assert results[2].id == "x"


async def test_fatal_error_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    """A 400 fails the item at once with its status, code and message."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error(400, "too long", code="context_length_exceeded")

    [result] = await make_engine(handler, retry=NO_JITTER).map(["x"])
    assert calls == 1
    assert result.error == trio_llm.ErrorInfo(
        kind=ErrorKind.CONTEXT_LENGTH,
        message="HTTP 400: too long",
        status=400,
        code="context_length_exceeded",
    )
    assert result.attempts == 1


async def test_server_error_is_retried_with_backoff(autojump_clock: trio.testing.MockClock) -> None:
    """A 500 is retried after an exponential backoff and then succeeds."""
    times: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        return error(500) if len(times) < 3 else completion("finally")

    [result] = await make_engine(handler, retry=NO_JITTER).map(["x"])
    assert result.ok
    assert result.attempts == 3
    assert times == pytest.approx([0.0, 1.0, 3.0])  # waits 1 s, then 2 s


async def test_retry_after_is_honoured_exactly(autojump_clock: trio.testing.MockClock) -> None:
    """A 503 with Retry-After waits exactly that long before the next attempt."""
    times: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if len(times) == 1:
            return error(503, "busy", headers={"retry-after": "7"})
        return completion("ok")

    [result] = await make_engine(handler, retry=NO_JITTER).map(["x"])
    assert result.ok
    assert times == pytest.approx([0.0, 7.0])


async def test_retry_after_beyond_the_ceiling_is_reported_not_waited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Retry-After longer than max_retry_after fails the item instead of sleeping."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return error(503, "come back tomorrow", headers={"retry-after": "86400"})

    policy = RetryPolicy(attempts=5, max_retry_after=60.0)
    [result] = await make_engine(handler, retry=policy).map(["x"])
    assert not result.ok
    assert result.attempts == 1
    assert trio.current_time() < 1


async def test_every_key_dropped_ends_the_run_promptly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With every key refused (401), all items fail fast, none hangs, and each error keeps
    the server's words and status, with the keys' fingerprints (not a bare "no keys")."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return error(401, "Incorrect API key", code="invalid_api_key")

    engine = make_engine(handler, keys=["bad-key-1", "bad-key-2"], concurrency=4)
    results = await engine.map([str(i) for i in range(20)])
    assert len(results) == 20
    assert not any(r.ok for r in results)
    errors = [r.error for r in results if r.error]
    assert {e.kind for e in errors} == {ErrorKind.AUTH}
    assert {e.status for e in errors} == {401}
    assert all("Incorrect API key" in e.message for e in errors)
    unsent = [r for r in results if r.attempts == 0]
    assert unsent
    fingerprints = [k.key_id for k in engine.statistics().keys]
    assert all(all(f in r.error.message for f in fingerprints) for r in unsent if r.error)
    assert trio.current_time() < 1


async def test_a_dropped_key_moves_its_request_to_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 401 on one key drops it; its request succeeds on the other key."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"].endswith("revoked-key-0001"):
            return error(401, "revoked", code="invalid_api_key")
        return completion("ok")

    engine = make_engine(handler, keys=["revoked-key-0001", "valid-key-000002"])
    results = await engine.map([str(i) for i in range(10)])
    assert all(r.ok for r in results)
    assert [k.dropped is not None for k in engine.statistics().keys] == [True, False]


async def test_run_deadline_keeps_finished_results(autojump_clock: trio.testing.MockClock) -> None:
    """A run deadline keeps what finished and reports the rest as `deadline`."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(float(last_user_text(request)))
        return completion("done")

    engine = make_engine(handler, concurrency=10)
    results = await engine.map(["1", "2", "50", "60"], deadline=10.0)
    assert [r.ok for r in results] == [True, True, False, False]
    assert results[2].error is not None
    assert results[2].error.kind is ErrorKind.DEADLINE
    assert trio.current_time() == pytest.approx(10.0)


async def test_item_deadline_gives_up_on_one_item(autojump_clock: trio.testing.MockClock) -> None:
    """RetryPolicy.deadline bounds the time one item may take across its attempts."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return error(500)

    policy = RetryPolicy(attempts=100, wait_initial=1.0, wait_jitter=0.0, deadline=10.0)
    [result] = await make_engine(handler, retry=policy).map(["x"])
    assert result.error is not None
    assert result.error.kind is ErrorKind.DEADLINE
    assert trio.current_time() == pytest.approx(10.0)


async def test_events_tell_the_story_of_a_run(autojump_clock: trio.testing.MockClock) -> None:
    """A run emits run.started, request.sent/succeeded/retrying and run.finished."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error(500) if calls == 1 else completion("ok")

    seen: list[dict[str, Any]] = []
    engine = make_engine(
        handler, retry=NO_JITTER, consumers=[lambda _l, _m, event: seen.append(dict(event))]
    )
    await engine.map(["x"])
    names = [e["event"] for e in seen if e["event"] != "keys.updated"]
    assert names == [
        "run.started",
        "request.sent",
        "request.retrying",
        "request.sent",
        "request.succeeded",
        "run.finished",
    ]
    retrying = next(e for e in seen if e["event"] == "request.retrying")
    assert retrying["status"] == 500
    assert retrying["kind"] == "server_error"
    finished = seen[-1]
    assert finished["succeeded"] == 1


async def test_events_reach_a_configured_structlog(autojump_clock: trio.testing.MockClock) -> None:
    """With structlog configured, events land in the application's logs."""
    with structlog.testing.capture_logs() as logs:
        await make_engine(echo()).map(["x"])
    assert any(log["event"] == "request.succeeded" for log in logs)


async def test_engine_repr_and_events_never_show_the_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The key appears in no repr and no event, only its fingerprint."""
    secret = "sk-test-SECRET-abcdefghijklmnop-9z9z"
    seen: list[str] = []
    engine = make_engine(
        echo(), keys=[secret], consumers=[lambda _l, _m, event: seen.append(repr(event))]
    )
    results = await engine.map(["x"])
    assert secret not in repr(engine)
    assert secret not in "".join(seen)
    assert secret not in repr(results)
    assert results[0].key_id == "sk-…9z9z"


def test_bad_configuration_fails_at_once() -> None:
    """Bad settings raise ConfigurationError before anything is sent."""
    provider = trio_llm.OpenAICompatible(base_url="http://llm.test/v1", model="m")
    with pytest.raises(trio_llm.ConfigurationError, match="concurrency"):
        trio_llm.Engine(provider=provider, keys=["k"], concurrency=0)
    with pytest.raises(trio_llm.ConfigurationError, match="HINT"):
        trio_llm.Engine(provider=provider, keys=[])
    with pytest.raises(trio_llm.ConfigurationError, match="HINT"):
        trio_llm.Engine(provider=provider, keys="sk-one-string")  # type: ignore[arg-type]
    with pytest.raises(trio_llm.ConfigurationError, match="provider"):
        trio_llm.Engine(provider="openai", keys=["k"])  # type: ignore[arg-type]
    with pytest.raises(trio_llm.ConfigurationError, match="rpm"):
        Limits(rpm=-5)
    with pytest.raises(trio_llm.ConfigurationError, match="base_url"):
        trio_llm.OpenAICompatible(base_url="api.openai.com", model="m")


def test_map_runs_under_plain_trio_run() -> None:
    """`trio.run(engine.map, prompts)` works, twice on the same engine."""
    engine = make_engine(echo(latency=0.5))
    clock = trio.testing.MockClock(autojump_threshold=0)
    first = trio.run(engine.map, ["a", "b"], clock=clock)
    second = trio.run(engine.map, ["c"], clock=trio.testing.MockClock(autojump_threshold=0))
    assert [r.text for r in first + second] == ["echo: a", "echo: b", "echo: c"]


async def test_budget_stops_sending_and_reports_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a budget, requests stop once spent + held would exceed it; the rest are `budget`."""
    engine = make_engine(echo(), concurrency=1)
    # Each answer costs (5 x 0.15 + 3 x 0.60) / 1e6 = $2.55e-6 on gpt-4o-mini.
    prompts = [trio_llm.Request.from_prompt("x", max_tokens=3) for _ in range(20)]
    results = await engine.map(prompts, budget_usd=10 * 2.55e-6)
    assert [r.ok for r in results] == [True] * 10 + [False] * 10
    assert {r.error.kind for r in results if r.error} == {ErrorKind.BUDGET}
    assert all(r.attempts == 0 for r in results[10:])
    assert sum(r.cost_usd or 0 for r in results) == pytest.approx(10 * 2.55e-6)


def test_budget_needs_a_known_price() -> None:
    """A budget on a model with no known price is refused with a hint."""
    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://x.test/v1", model="my-own-model"),
        keys=["k"],
    )
    with pytest.raises(trio_llm.ConfigurationError, match="HINT"):
        engine.stream(["x"], budget_usd=1.0)


async def test_cancelling_gives_back_the_rate_limit_capacity_it_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Requests waiting for their key's moment hold capacity; cancelling returns all of it."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(100)
        return completion("late")

    # 10 requests/s, capacity 10, starting half full: 5 go at once, 45 wait their turn.
    engine = make_engine(handler, concurrency=50, limits=Limits(rpm=600))
    with trio.move_on_after(0.05):
        await engine.map([str(i) for i in range(50)])
    [key] = engine.statistics().keys
    assert key.requests_left is not None
    # The 5 sent keep their units; the 45 reservations came back: 0.05 s of refill remains.
    assert key.requests_left == pytest.approx(0.5)
    assert key.in_flight == 0


# --- misuse is told, not guessed ----------------------------------------------------------


@pytest.mark.parametrize("prompts", ["What is 2+2?", b"bytes", {"prompt": "one dict"}])
async def test_one_prompt_where_many_are_expected_is_misuse(prompts: Any) -> None:
    """map("a string") is not one request per character: it is refused with a HINT."""
    engine = make_engine(echo())
    with pytest.raises(trio_llm.ConfigurationError, match=r"HINT: engine\.map\(\["):
        await engine.map(prompts)
    with pytest.raises(trio_llm.ConfigurationError, match="HINT"):
        engine.stream(prompts)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"keys": [None]}, "must be a string"),
        ({"limits": {"rpm": 5}}, "HINT: limits=trio_llm.Limits"),
        ({"retry": {"attempts": 3}}, "HINT: retry=trio_llm.RetryPolicy"),
        ({"concurrency": 1.5}, "concurrency must be a positive integer"),
        ({"timeout": "60"}, "timeout must be positive seconds"),
    ],
)
def test_bad_engine_settings_are_refused_at_construction(
    kwargs: dict[str, Any], words: str
) -> None:
    """Wrong types for keys, limits and settings fail when the engine is built, saying how."""
    with pytest.raises(trio_llm.ConfigurationError, match=re.escape(words)):
        make_engine(echo(), **kwargs)


def test_asyncio_run_is_told_that_trio_llm_runs_on_trio() -> None:
    """asyncio.run(engine.map(...)) gets a message naming trio.run, not an AttributeError."""
    engine = make_engine(echo())
    with pytest.raises(
        trio_llm.ConfigurationError, match=r"(?s)runs on trio, not asyncio.*trio\.run"
    ):
        asyncio.run(engine.map(["x"]))


async def test_a_key_the_server_echoes_is_redacted_everywhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server error that quotes the key (or the Authorization header) is stored with the
    key's fingerprint: not in the Result, the events or the statistics."""
    secret = "sk-live-secret-0123456789abcdef"

    async def handler(request: httpx.Request) -> httpx.Response:
        return error(
            400,
            f"bad request from key {secret} (header was {request.headers['authorization']})",
        )

    seen: list[dict[str, Any]] = []
    engine = make_engine(
        handler, keys=[secret], consumers=[lambda _l, _m, event: seen.append(dict(event))]
    )
    [result] = await engine.map(["x"])
    assert result.error is not None
    text = repr(result) + repr(seen) + repr(engine.statistics())
    assert secret not in text
    assert secret[-12:] not in text
    assert "sk-…cdef" in result.error.message


async def test_an_interactive_call_goes_ahead_of_a_running_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """During a batch at the rate limit, engine.complete() is sent at once (the batch leaves
    it a unit of room: not behind every queued batch request, not even behind the next
    refill), and the batch still runs at the limit."""
    sent: dict[str, float] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        sent[last_user_text(request)] = trio.current_time()
        await trio.sleep(0.5)
        return completion("ok")

    engine = make_engine(handler, limits=Limits(rpm=600), concurrency=64)  # 10/s
    waits: list[float] = []
    async with engine, trio.open_nursery() as nursery:
        nursery.start_soon(engine.map, [f"batch {i}" for i in range(300)])
        await trio.sleep(5)  # the batch has every slot and a queue of reservations
        for n in range(10):
            asked = trio.current_time()
            result = await engine.complete(f"interactive {n}")
            assert result.ok
            waits.append(sent[f"interactive {n}"] - asked)
            await trio.sleep(1)
    assert max(waits) <= SEND_MARGIN_S + 1e-9  # not the 0.1 s of a refill at 10/s
    batch = sorted(t for text, t in sent.items() if text.startswith("batch"))
    assert len(batch) == 300
    # The bucket starts half full (5), then 10/s for the other 295 and the 10 interactive
    # calls: 30.5 s, plus the unit of room the batch leaves (0.1 s) and a send margin.
    assert batch[-1] - batch[0] <= 30.5 + 0.1 + SEND_MARGIN_S + 1e-9


def test_too_many_requests_in_flight_for_the_open_file_limit_fail_at_start() -> None:
    """A concurrency the process cannot open sockets for is refused before the run starts,
    saying how far to lower it, instead of failing requests mid-run with EMFILE."""
    import resource

    from trio_llm._http import ensure_open_files

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    with pytest.raises(trio_llm.ConfigurationError, match="HINT: lower the concurrency"):
        ensure_open_files(hard + 1)
    ensure_open_files(min(1000, hard - 100))  # raises the soft limit when needed
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= min(1000, hard - 100)
