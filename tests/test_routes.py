"""One engine over several endpoints, each with its own keys and limits."""

from __future__ import annotations

import collections

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
