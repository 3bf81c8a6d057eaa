"""Circuit breakers: a failing key or provider is set aside, then probed (on MockClock)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
import trio.testing
from _fakes import completion, error, make_engine

from trio_llm import ErrorKind, RetryPolicy
from trio_llm._breaker import BreakerPolicy, BreakerState, CircuitBreaker

POLICY = BreakerPolicy(failures=3, cool_off_s=10.0, max_cool_off_s=40.0, probes=1)


async def test_opens_after_consecutive_failures(autojump_clock: trio.testing.MockClock) -> None:
    """Three endpoint failures in a row open the breaker for the cool-off."""
    breaker = CircuitBreaker(POLICY)
    for _ in range(2):
        breaker.started()
        assert breaker.failed(ErrorKind.SERVER_ERROR) is None
    breaker.started()
    assert breaker.failed(ErrorKind.TIMEOUT) is BreakerState.OPEN
    assert breaker.delay() == pytest.approx(10.0)


async def test_a_success_resets_the_count(autojump_clock: trio.testing.MockClock) -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker = CircuitBreaker(POLICY)
    for kind in (ErrorKind.SERVER_ERROR, ErrorKind.SERVER_ERROR):
        breaker.failed(kind)
    breaker.succeeded()
    breaker.failed(ErrorKind.SERVER_ERROR)
    breaker.failed(ErrorKind.SERVER_ERROR)
    assert breaker.state is BreakerState.CLOSED


async def test_client_errors_and_429s_do_not_count(autojump_clock: trio.testing.MockClock) -> None:
    """A 400 or a 429 says nothing about the endpoint's health."""
    breaker = CircuitBreaker(POLICY)
    for kind in (ErrorKind.BAD_REQUEST, ErrorKind.RATE_LIMITED, ErrorKind.CONTEXT_LENGTH) * 3:
        assert breaker.failed(kind) is None
    assert breaker.state is BreakerState.CLOSED


async def test_half_open_probe_closes_or_reopens_longer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After the cool-off one probe goes; its failure doubles the cool-off, success closes."""
    breaker = CircuitBreaker(POLICY)
    for _ in range(3):
        breaker.failed(ErrorKind.OVERLOADED)
    await trio.sleep(10.0)
    assert breaker.delay() == 0.0
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.started()
    assert breaker.delay() > 0  # the one probe is out: others hold off
    assert breaker.failed(ErrorKind.CONNECTION) is BreakerState.OPEN
    assert breaker.delay() == pytest.approx(20.0)
    await trio.sleep(20.0)
    breaker.delay()
    breaker.started()
    assert breaker.succeeded() is BreakerState.CLOSED
    assert breaker.delay() == 0.0


def _engine_events(handler: Any, **kwargs: Any) -> tuple[Any, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    engine = make_engine(
        handler,
        breaker=POLICY,
        retry=RetryPolicy(attempts=10, wait_initial=0.1, wait_jitter=0.0),
        consumers=[lambda _l, _m, event: seen.append(dict(event))],
        **kwargs,
    )
    return engine, seen


async def test_a_failing_key_is_set_aside_while_the_other_carries_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A key whose endpoint keeps failing is left alone; its requests go to the good key."""
    sent_by_key: dict[str, int] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"][-4:]
        sent_by_key[key] = sent_by_key.get(key, 0) + 1
        await trio.sleep(0.1)
        return error(502, "bad gateway") if key == "0bad" else completion("ok")

    engine, seen = _engine_events(
        handler, keys=["sk-key-one-0bad", "sk-key-two-good"], concurrency=1
    )
    results = await engine.map([str(i) for i in range(30)])
    assert all(r.ok for r in results)
    opened = [e for e in seen if e["event"] == "breaker.opened"]
    assert opened
    assert opened[0]["scope"] == "key"
    assert opened[0]["key_id"] == "sk-…0bad"
    # Three failures open it; while open (10 s, far longer than the run) nothing more goes there.
    assert sent_by_key["0bad"] == 3


async def test_a_failing_provider_pauses_every_key(autojump_clock: trio.testing.MockClock) -> None:
    """When the provider is overloaded, all keys stop for the cool-off, then a probe goes."""
    times: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if len(times) <= 3:
            return error(529, "overloaded")
        return completion("ok")

    engine, seen = _engine_events(
        handler, keys=["sk-key-one-aaaa", "sk-key-two-bbbb"], concurrency=1
    )
    results = await engine.map(["x"])
    assert results[0].ok
    assert "provider" in {e["scope"] for e in seen if e["event"] == "breaker.opened"}
    # The fourth attempt waited for the provider breaker's 10 s cool-off.
    assert times[3] - times[2] >= 10.0
    assert any(e["event"] == "breaker.closed" for e in seen)
