"""The response cache: identical requests answered from SQLite, at no cost and no rate limit.

The engine talks to the mock server through ``httpx.ASGITransport`` (no sockets); SQLite runs
in worker threads, so these tests run on the real clock with ``trio.fail_after`` guards. The
cache's TTL reads a wall clock the tests pass in.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trio_llm
from trio_llm import Cache, ConfigurationError, Engine, Limits, OpenAICompatible, Request
from trio_llm.testing import MockApp, MockServerConfig

GUARD = 20


class FakeClock:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def engine(app: MockApp, cache: Cache | None, **extra: Any) -> Engine:
    """An engine on the mock app, with ``cache``."""
    return Engine(
        provider=OpenAICompatible(base_url="http://mock/v1", model="mock-gpt"),
        keys=["sk-test-cache-0001"],
        transport=httpx.ASGITransport(app=app),
        cache=cache,
        **extra,
    )


def prompts(n: int, **params: Any) -> list[dict[str, Any]]:
    """n distinct prompts at temperature 0 (cacheable by default)."""
    return [{"prompt": f"what is {i} + 1?", "temperature": 0, **params} for i in range(n)]


async def run(app: MockApp, cache: Cache | None, items: list[Any], **extra: Any) -> list[Any]:
    with trio.fail_after(GUARD):
        return await engine(app, cache, **extra).map(items)


async def test_a_rerun_is_answered_from_the_cache(tmp_path: Path) -> None:
    """A second run of the same prompts sends nothing: cached results, cost 0, same answers."""
    app = MockApp(MockServerConfig())
    first = await run(app, Cache(tmp_path / "c.sqlite"), prompts(30))
    assert app.stats().total_requests == 30
    assert not any(r.cached for r in first)
    events: list[dict[str, Any]] = []
    again = await run(
        app,
        Cache(tmp_path / "c.sqlite"),
        prompts(30),
        consumers=[lambda _l, _m, e: events.append(dict(e))],
    )
    assert app.stats().total_requests == 30
    assert [r.text for r in again] == [r.text for r in first]
    assert all(r.ok and r.cached and r.cost_usd == 0 and r.attempts == 0 for r in again)
    assert [r.usage for r in again] == [r.usage for r in first]
    names = [e["event"] for e in events]
    assert names.count("request.cached") == 30
    assert "request.sent" not in names


async def test_identical_prompts_in_one_run_are_sent_once(tmp_path: Path) -> None:
    """Duplicates inside one run wait for the first and take its answer."""
    app = MockApp(MockServerConfig(latency=0.05))
    items = prompts(5) * 4
    results = await run(app, Cache(tmp_path / "c.sqlite"), items)
    assert app.stats().total_requests == 5
    assert sum(r.cached for r in results) == 15
    assert [r.text for r in results[:5]] * 4 == [r.text for r in results]


async def test_sampled_requests_are_cached_only_when_asked(tmp_path: Path) -> None:
    """Unset temperature (default 1) or > 0 is not cached unless sampled=True."""
    app = MockApp(MockServerConfig())
    items: list[Any] = ["what is 1 + 1?", {"prompt": "what is 2 + 2?", "temperature": 0.7}]
    cache = Cache(tmp_path / "c.sqlite")
    await run(app, cache, items)
    await run(app, cache, items)
    assert app.stats().total_requests == 4
    assert cache.statistics().sampled == 4
    sampled = Cache(tmp_path / "s.sqlite", sampled=True)
    await run(app, sampled, items)
    again = await run(app, sampled, items)
    assert app.stats().total_requests == 6
    assert all(r.cached for r in again)


async def test_failures_are_not_stored(tmp_path: Path) -> None:
    """Only a successful answer is kept: a failed item is sent again next time."""
    app = MockApp(MockServerConfig())
    items = [{"prompt": "[[fault:context_length]] long", "temperature": 0}]
    cache = Cache(tmp_path / "c.sqlite")
    assert not (await run(app, cache, items))[0].ok
    assert not (await run(app, cache, items))[0].ok
    assert app.stats().total_requests == 2
    assert cache.statistics().stored == 0


async def test_a_hit_takes_nothing_from_the_rate_limits(tmp_path: Path) -> None:
    """50 cached answers come back at once where the limit (60 rpm) would allow one a second."""
    app = MockApp(MockServerConfig())
    cache = Cache(tmp_path / "c.sqlite")
    await run(app, cache, prompts(50))
    limited = engine(app, cache, limits=Limits(rpm=60))
    with trio.fail_after(10):  # sent, they would take 50 s
        results = await limited.map(prompts(50))
    assert all(r.cached for r in results)
    assert app.stats().total_requests == 50


async def test_the_ttl_expires_answers(tmp_path: Path) -> None:
    """An answer older than ttl is a miss, and is replaced."""
    app = MockApp(MockServerConfig())
    clock = FakeClock()
    cache = Cache(tmp_path / "c.sqlite", ttl=60, clock=clock)
    await run(app, cache, prompts(3))
    clock.now += 59
    assert all(r.cached for r in await run(app, cache, prompts(3)))
    clock.now += 2
    assert not any(r.cached for r in await run(app, cache, prompts(3)))
    assert app.stats().total_requests == 6


async def test_the_size_cap_evicts_the_oldest(tmp_path: Path) -> None:
    """Past max_mb the oldest answers go; the newest stay."""
    app = MockApp(MockServerConfig())
    clock = FakeClock()
    cache = Cache(tmp_path / "c.sqlite", max_mb=0.002, clock=clock)  # 2,000 bytes
    for item in prompts(20):
        clock.now += 1
        await run(app, cache, [item])
    assert cache.statistics().evicted > 0
    db = sqlite3.connect(tmp_path / "c.sqlite")
    kept = db.execute("SELECT SUM(size), MIN(created) FROM responses").fetchone()
    db.close()
    assert kept[0] <= 2_000
    assert kept[1] > 1_000_001  # the first answer went
    newest = await run(app, cache, prompts(20)[-1:])
    assert newest[0].cached


async def test_two_engines_share_one_file(tmp_path: Path) -> None:
    """Two engines (as two runs would) write one file at once; a third run only reads it."""
    app = MockApp(MockServerConfig(latency=0.01))
    path = tmp_path / "c.sqlite"
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, app, Cache(path), prompts(100)[:60])
            nursery.start_soon(run, app, Cache(path), prompts(100)[40:])
    sent = app.stats().total_requests
    assert 100 <= sent <= 120  # the overlap may be sent by both, never more
    again = await run(app, Cache(path), prompts(100))
    assert all(r.cached for r in again)
    assert app.stats().total_requests == sent


def test_the_key_ignores_what_does_not_change_the_answer(tmp_path: Path) -> None:
    """user/metadata/stream do not split the key; the model and the body do."""
    cache = Cache(tmp_path / "c.sqlite")
    provider = OpenAICompatible(base_url="http://a:1/v1", model="m")
    base = Request.from_prompt("hi", temperature=0)
    key = cache.key(provider, base)
    assert key is not None
    assert cache.key(provider, Request.from_prompt("hi", temperature=0, user="u1")) == key
    assert cache.key(OpenAICompatible(base_url="http://b:2/v1", model="m"), base) == key
    assert cache.key(provider, base.with_model("other")) != key
    assert cache.key(provider, Request.from_prompt("hi", temperature=0, max_tokens=5)) != key
    anthropic = trio_llm.AnthropicMessages(base_url="http://a:1/v1", model="m")
    assert cache.key(anthropic, base) != key


@given(
    st.dictionaries(
        st.sampled_from(["max_tokens", "seed", "top_p", "stop", "n"]), st.integers(0, 9)
    ),
    st.randoms(),
)
def test_the_key_does_not_depend_on_field_order(params: dict[str, int], rnd: Any) -> None:
    """The same body with its fields in any order has one key."""
    cache = Cache(":memory:")
    provider = OpenAICompatible(base_url="http://a:1/v1", model="m")
    items = [*params.items(), ("temperature", 0)]
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert cache.key(provider, Request.from_prompt("x", **dict(items))) == cache.key(
        provider, Request.from_prompt("x", **dict(shuffled))
    )


def test_bad_cache_settings_are_refused(tmp_path: Path) -> None:
    """A bad ttl, a directory, a file that is not SQLite, or not a Cache: ConfigurationError."""
    with pytest.raises(ConfigurationError, match="ttl"):
        Cache(tmp_path / "c.sqlite", ttl=-1)
    with pytest.raises(ConfigurationError, match="directory"):
        Cache(tmp_path)
    (tmp_path / "junk").write_bytes(b"not a database, just some bytes" * 100)
    with pytest.raises(ConfigurationError, match="junk"):
        Cache(tmp_path / "junk")
    with pytest.raises(ConfigurationError, match=r"trio_llm\.Cache"):
        engine(MockApp(), "c.sqlite")  # type: ignore[arg-type]


async def test_a_broken_cache_is_a_miss_not_a_failure(tmp_path: Path) -> None:
    """When SQLite fails, the items are sent and answered all the same."""
    app = MockApp(MockServerConfig())
    cache = Cache(tmp_path / "c.sqlite")
    cache.close()  # every SQLite call now raises sqlite3.ProgrammingError
    results = await run(app, cache, prompts(5))
    assert all(r.ok and not r.cached for r in results)
    assert cache.statistics().errors == 10  # 5 lookups, 5 stores
