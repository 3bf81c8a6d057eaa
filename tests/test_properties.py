"""The engine's promises as properties, over servers, clocks and stops drawn by hypothesis.

Each example runs a whole ``Engine.map`` on trio's ``MockClock`` against a ``MockTransport``
whose latencies, usage, 429s (with or without Retry-After and headers), 5xx, malformed bodies,
dropped connections and hangs are drawn at random, with a random deadline, budget or caller
cancellation. Whatever happens:

(a) every input ends as exactly one Result, indices exactly ``range(n)``;
(b) per key and per provider, no window holds more sends than ``rate x window + burst``;
(c) nothing stays held after the run: no request in flight, no waiter, and the buckets fill up
    again to their capacity.
"""

from __future__ import annotations

import collections
import json
from typing import Any

import httpx
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_llm
from trio_llm import Limits, ModelPrice, PriceTable, RetryPolicy

Behaviour = tuple[Any, ...]

behaviours = st.one_of(
    st.tuples(
        st.just("ok"),
        st.floats(0, 3, allow_nan=False),
        st.integers(0, 3000),
        st.booleans(),  # with rate-limit headers
    ),
    st.tuples(
        st.just("429"),
        st.one_of(st.none(), st.floats(0, 30, allow_nan=False)),
        st.booleans(),  # with rate-limit headers
    ),
    st.tuples(st.just("500"), st.floats(0, 2, allow_nan=False)),
    st.tuples(st.just("malformed")),
    st.tuples(st.just("drop")),
    st.tuples(st.just("hang")),
)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """One server, one engine configuration and one way for the run to end."""
    return {
        "n": draw(st.integers(1, 40)),
        "keys": draw(st.integers(1, 3)),
        "rpm": draw(st.sampled_from([60, 300, 1200])),
        "tpm": draw(st.sampled_from([None, 50_000, 200_000])),
        "provider_rpm": draw(st.sampled_from([None, 90])),
        "concurrency": draw(st.integers(1, 12)),
        "behaviours": draw(st.lists(behaviours, min_size=1, max_size=25)),
        "stop": draw(st.sampled_from(["none", "deadline", "budget", "cancel"])),
        "stop_at": draw(st.floats(0.5, 60, allow_nan=False)),
    }


def _server(scenario: dict[str, Any], sends: list[tuple[float, str]]) -> Any:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        behaviour: Behaviour = scenario["behaviours"][calls % len(scenario["behaviours"])]
        calls += 1
        sends.append((trio.current_time(), request.headers["authorization"][-4:]))
        kind = behaviour[0]
        if kind == "ok":
            _, latency, tokens, headers = behaviour
            await trio.sleep(latency)
            return httpx.Response(
                200,
                content=json.dumps(
                    {
                        "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": tokens, "completion_tokens": 5},
                    }
                ).encode(),
                headers={"x-ratelimit-limit-requests": str(scenario["rpm"])} if headers else {},
            )
        if kind == "429":
            _, retry_after, headers = behaviour
            extra = {} if retry_after is None else {"retry-after": f"{retry_after:.3f}"}
            if headers:
                extra["x-ratelimit-limit-requests"] = str(scenario["rpm"])
                extra["x-ratelimit-remaining-requests"] = "0"
            return httpx.Response(429, json={"error": {"message": "slow"}}, headers=extra)
        if kind == "500":
            await trio.sleep(behaviour[1])
            return httpx.Response(500, json={"error": {"message": "boom"}})
        if kind == "malformed":
            return httpx.Response(200, content=b'{"choices": [')
        if kind == "drop":
            raise httpx.RemoteProtocolError("server disconnected")
        await trio.sleep_forever()  # hang
        raise AssertionError("unreachable")

    return handler


def _busiest(times: list[float], window: float) -> int:
    times = sorted(times)
    most, end = 0, 0
    for start_index, start in enumerate(times):
        while end < len(times) and times[end] < start + window:
            end += 1
        most = max(most, end - start_index)
    return most


async def _run(scenario: dict[str, Any]) -> None:
    sends: list[tuple[float, str]] = []
    keys = [f"sk-property-key-{i:04d}" for i in range(scenario["keys"])]
    provider_limits = (
        None if scenario["provider_rpm"] is None else Limits(rpm=scenario["provider_rpm"])
    )
    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://llm.test/v1", model="gpt-4o-mini"),
        keys=keys,
        limits=Limits(rpm=scenario["rpm"], tpm=scenario["tpm"]),
        provider_limits=provider_limits,
        concurrency=scenario["concurrency"],
        timeout=5.0,
        retry=RetryPolicy(attempts=4, wait_initial=0.1, wait_max=1.0, max_retry_after=20.0),
        prices=PriceTable({"gpt-4o-mini": ModelPrice(input_per_m=1.0, output_per_m=1.0)}),
        transport=httpx.MockTransport(_server(scenario, sends)),
    )
    prompts = [f"prompt {i}" for i in range(scenario["n"])]
    results: list[trio_llm.Result] | None = None
    stop, at = scenario["stop"], scenario["stop_at"]
    async with engine:
        start = trio.current_time()
        if stop == "cancel":
            with trio.move_on_after(at):
                results = await engine.map(prompts)
        elif stop == "deadline":
            results = await engine.map(prompts, deadline=at)
        elif stop == "budget":
            results = await engine.map(prompts, budget_usd=at / 10_000)
        else:
            results = await engine.map(prompts)
        # (a) exactly one Result per input, in order.
        if results is not None:
            assert [r.index for r in results] == list(range(len(prompts)))
            assert all((r.error is None) == r.ok for r in results)
        if stop == "deadline":
            assert trio.current_time() - start <= at + 1e-6
        # (c) nothing held: no request in flight or waiting, and every bucket refills whole.
        stats = engine.statistics()
        assert (stats.in_flight, stats.scheduled, stats.waiting) == (0, 0, 0)
        scheduler = engine._scheduler_now()
        assert all(len(queue) == 0 for s in scheduler._slots for queue in s.queues.values())
        await trio.sleep(10_000)
        for slot in scheduler._slots:
            for rates in slot.models.values():
                for bucket in (rates.requests, rates.tokens):
                    if bucket.rate is not None:
                        assert abs(bucket.level - bucket.capacity) < 1e-6, (bucket, slot.key)
        for endpoint in scheduler._endpoints:
            for bucket in (endpoint.requests, endpoint.tokens):
                if bucket.rate is not None:
                    assert abs(bucket.level - bucket.capacity) < 1e-6
    # (b) per key and per provider: no window holds more than rate x window + burst.
    per_key: dict[str, list[float]] = collections.defaultdict(list)
    for when, key in sends:
        per_key[key].append(when)
    for rate_per_minute, times in [
        *((scenario["rpm"], times) for times in per_key.values()),
        *(
            [(scenario["provider_rpm"], [when for when, _ in sends])]
            if scenario["provider_rpm"] is not None
            else []
        ),
    ]:
        rate = rate_per_minute / 60.0
        burst = max(1.0, rate)  # burst_s = 1
        for window in (1.0, 10.0):
            assert _busiest(times, window) <= rate * window + burst + 1e-6, (window, times)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(scenarios())
def test_every_input_ends_as_one_result_within_the_limits(scenario: dict[str, Any]) -> None:
    """Whatever the server, the clock and the stop do: one Result per input, the limits held
    on every key and the provider, and nothing left held after the run."""
    trio.run(_run, scenario, clock=trio.testing.MockClock(autojump_threshold=0))
