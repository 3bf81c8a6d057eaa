"""One engine over several endpoints, each with its own keys and limits."""

from __future__ import annotations

import collections
import json

import httpx
import pytest
import trio
import trio.testing
from _fakes import completion, error

import trio_llm
from trio_llm import Limits, Route


def _engine(handler: object, **kwargs: object) -> trio_llm.Engine:
    return trio_llm.Engine(
        routes=[
            Route(
                provider=trio_llm.OpenAICompatible(base_url="http://east.test/v1", model="m"),
                keys=["sk-east-key-00000001"],
                limits=Limits(rpm=60),
            ),
            Route(
                provider=trio_llm.OpenAICompatible(base_url="http://west.test/v1", model="m"),
                keys=["sk-west-key-00000001", "sk-west-key-00000002"],
                limits=Limits(rpm=60),
            ),
        ],
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


async def test_load_follows_each_endpoints_capacity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With 1 key east and 2 keys west at the same limit, west carries about twice the load."""
    hosts: collections.Counter[str] = collections.Counter()

    async def handler(request: httpx.Request) -> httpx.Response:
        hosts[request.url.host] += 1
        return completion("ok")

    results = await _engine(handler).map([str(i) for i in range(300)])
    assert all(r.ok for r in results)
    assert hosts["west.test"] / hosts["east.test"] == pytest.approx(2.0, rel=0.1)
    # 3 keys at 1/s each: 300 requests in about 100 s (less the first half bursts).
    assert trio.current_time() == pytest.approx(100, abs=3)


async def test_a_dead_endpoint_sends_everything_to_the_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When every key of one endpoint is refused, the other endpoint answers everything."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "east.test":
            return error(401, "revoked", code="invalid_api_key")
        return completion("ok")

    engine = _engine(handler)
    results = await engine.map([str(i) for i in range(20)])
    assert all(r.ok for r in results)
    keys = engine.statistics().keys
    assert [k.dropped is not None for k in keys] == [True, False, False]


def test_routes_or_provider_not_both() -> None:
    """An engine takes a provider and keys, or routes: not both, not neither."""
    provider = trio_llm.OpenAICompatible(base_url="http://x.test/v1", model="m")
    with pytest.raises(trio_llm.ConfigurationError, match="HINT"):
        trio_llm.Engine()
    with pytest.raises(trio_llm.ConfigurationError, match="not both"):
        trio_llm.Engine(
            provider=provider, keys=["k"], routes=[Route(provider=provider, keys=["k"])]
        )
    with pytest.raises(trio_llm.ConfigurationError, match="HINT"):
        Route(provider=provider, keys="sk-one-string")


async def test_the_example_split_follows_capacity_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The example's two endpoints (2 keys x 600 rpm east, 3 keys x 1,200 rpm west): west,
    with 3x the capacity, carries 3x the load, and the run takes the floor N / total rate."""
    hosts: collections.Counter[str] = collections.Counter()

    async def handler(request: httpx.Request) -> httpx.Response:
        hosts[request.url.host] += 1
        await trio.sleep(0.2)
        return completion("ok")

    engine = trio_llm.Engine(
        routes=[
            Route(
                provider=trio_llm.OpenAICompatible(base_url="http://east.test/v1", model="m"),
                keys=[f"sk-east-key-0000000{i}" for i in range(2)],
                limits=Limits(rpm=600),
            ),
            Route(
                provider=trio_llm.OpenAICompatible(base_url="http://west.test/v1", model="m"),
                keys=[f"sk-west-key-0000000{i}" for i in range(3)],
                limits=Limits(rpm=1200),
            ),
        ],
        transport=httpx.MockTransport(handler),
    )
    results = await engine.map([str(i) for i in range(1600)])
    assert all(r.ok for r in results)
    assert hosts["west.test"] / hosts["east.test"] == pytest.approx(3.0, rel=0.05)
    assert trio.current_time() == pytest.approx(1600 / (2 * 10 + 3 * 20), rel=0.05)


def _chain(handler: object, **kwargs: object) -> trio_llm.Engine:
    """A chain: a small-context model first, a larger one on another endpoint after it."""
    return trio_llm.Engine(
        routes=[
            Route(
                provider=trio_llm.OpenAICompatible(base_url="http://small.test/v1", model="small"),
                keys=["sk-small-key-0000001"],
                name="small",
            ),
            Route(
                provider=trio_llm.OpenAICompatible(base_url="http://big.test/v1", model="small"),
                keys=["sk-big-key-000000001"],
                model="big",
                name="big",
            ),
        ],
        limits=Limits(rpm=60_000),
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
        **{"fallback_on": True, **kwargs},  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("refusal", "kind"),
    [
        (error(400, "maximum context length is 8192 tokens", code="context_length_exceeded"),
         "context_length"),
        (error(404, "The model `small` does not exist", code="model_not_found"), "not_found"),
    ],
)  # fmt: skip
async def test_a_chain_moves_an_item_down_when_its_route_cannot_serve_it(
    autojump_clock: trio.testing.MockClock, refusal: httpx.Response, kind: str
) -> None:
    """With a fallback chain, an item the first route refuses (context too long, model not
    found) goes to the next route, with that route's model; the Result says which route and
    model answered and why it moved."""
    bodies: list[dict[str, object]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if request.url.host == "small.test" and "long" in body["messages"][0]["content"]:
            return refusal
        return completion(f"from {body['model']}")

    results = await _chain(handler).map(["short", "long one", "short too"])
    assert [r.text for r in results] == ["from small", "from big", "from small"]
    moved = results[1]
    assert (moved.route, moved.model) == ("big", "big")
    assert moved.rerouted == (f"small: {kind}",)
    assert (results[0].route, results[0].rerouted) == ("small", ())


async def test_a_chain_moves_on_when_the_first_routes_retries_are_spent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A route that keeps failing (500) spends the item's attempts there, then the item moves
    on; the next route's answer is the Result."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "small.test":
            return error(500, "boom")
        return completion("saved")

    retry = trio_llm.RetryPolicy(attempts=2, wait_initial=0.1, wait_jitter=0.0)
    [result] = await _chain(handler, retry=retry).map(["x"])
    assert result.text == "saved"
    assert result.rerouted == ("small: server_error",)


async def test_a_chain_does_not_move_on_the_inputs_own_fault(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 400 that is the request's fault fails the item on the first route: the next route
    would refuse it too."""
    hosts: collections.Counter[str] = collections.Counter()

    async def handler(request: httpx.Request) -> httpx.Response:
        hosts[request.url.host] += 1
        return error(400, "temperature must be <= 2", code="invalid_value")

    [result] = await _chain(handler).map(["x"])
    assert result.error is not None
    assert result.error.kind is trio_llm.ErrorKind.BAD_REQUEST
    assert hosts == {"small.test": 1}


def test_fallback_on_takes_error_kinds() -> None:
    """fallback_on={"context_length"} (a string) is refused with a HINT."""
    with pytest.raises(trio_llm.ConfigurationError, match="HINT: fallback_on"):
        _chain(completion, fallback_on={"context_length"})
