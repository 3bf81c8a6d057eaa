"""The clients trio-llm is compared with, written as their users write them.

* ``bare_trio_httpx``: the best plain trio + httpx worker loop (N workers over a shared
  counter, clients sharded like the engine's) — the overhead baseline.
* ``asyncio_gather_semaphore``: the tutorial recipe: ``asyncio.gather`` over every prompt, an
  ``asyncio.Semaphore``, one key per request round-robin, retry after a fixed sleep on 429/5xx.
* ``sequential_httpx``: one ``httpx.Client`` request after another.
* ``engine_run``: trio-llm itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import attrs
import httpx
import trio

import trio_llm


@attrs.frozen(kw_only=True)
class ClientRun:
    """What one client did."""

    wall_s: float
    ok: int
    failed: int
    status_429: int = 0

    @property
    def requests_per_s(self) -> float:
        """Successful requests per second."""
        return self.ok / self.wall_s if self.wall_s else 0.0


def _body(prompt: str) -> dict[str, Any]:
    return {"model": "mock-gpt", "messages": [{"role": "user", "content": prompt}]}


def prompts(n: int, prefix: str = "hello") -> list[str]:
    """``n`` distinct prompts."""
    return [f"{prefix} {i}" for i in range(n)]


def bare_trio_httpx(
    base_url: str,
    key: str,
    items: Sequence[str],
    *,
    concurrency: int,
    shards: int,
    transports: bool = False,
) -> ClientRun:
    """A plain trio + httpx worker loop: no limits, no retries, no events.

    With ``transports``, requests go straight to ``httpx.AsyncHTTPTransport`` shards (as the
    engine's HTTP layer does) instead of through ``AsyncClient.post``.
    """
    url = f"{base_url}/chat/completions"
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    ok = failed = 0

    async def main() -> None:
        nonlocal ok, failed
        per_shard = math.ceil(concurrency / shards)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        clients = [httpx.AsyncClient(limits=limits, timeout=60) for _ in range(shards)]
        pools = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(shards)]
        parsed = httpx.URL(url)
        counter = iter(range(len(items)))

        async def worker(shard: int) -> None:
            nonlocal ok, failed
            client, pool = clients[shard], pools[shard]
            for index in counter:
                content = json.dumps(_body(items[index])).encode()
                try:
                    if transports:
                        response = await pool.handle_async_request(
                            httpx.Request("POST", parsed, headers=headers, content=content)
                        )
                        await response.aread()
                        await response.aclose()
                    else:
                        response = await client.post(url, content=content, headers=headers)
                except httpx.TransportError:
                    failed += 1  # a bare loop has no retries: the request is lost
                    continue
                if response.status_code == 200:
                    response.json()
                    ok += 1
                else:
                    failed += 1

        try:
            async with trio.open_nursery() as nursery:
                for i in range(concurrency):
                    nursery.start_soon(worker, i % shards)
        finally:
            for client in clients:
                await client.aclose()
            for pool in pools:
                await pool.aclose()

    started = time.perf_counter()
    trio.run(main)
    return ClientRun(wall_s=time.perf_counter() - started, ok=ok, failed=failed)


def asyncio_gather_semaphore(
    base_url: str,
    keys: Sequence[str],
    items: Sequence[str],
    *,
    concurrency: int,
    retries: int = 8,
    retry_sleep_s: float = 1.0,
) -> ClientRun:
    """The popular recipe: gather + semaphore + a fixed-sleep retry, keys round-robin."""
    url = f"{base_url}/chat/completions"
    ok = failed = rate_limited = 0
    key_cycle = itertools.cycle(keys)

    async def main() -> None:
        semaphore = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:

            async def one(prompt: str) -> None:
                nonlocal ok, failed, rate_limited
                async with semaphore:
                    for _ in range(retries):
                        headers = {"authorization": f"Bearer {next(key_cycle)}"}
                        response = await client.post(url, json=_body(prompt), headers=headers)
                        if response.status_code == 200:
                            ok += 1
                            return
                        if response.status_code == 429:
                            rate_limited += 1
                        await asyncio.sleep(retry_sleep_s)
                    failed += 1

            await asyncio.gather(*(one(p) for p in items))

    started = time.perf_counter()
    asyncio.run(main())
    return ClientRun(
        wall_s=time.perf_counter() - started, ok=ok, failed=failed, status_429=rate_limited
    )


def sequential_httpx(base_url: str, key: str, items: Sequence[str]) -> ClientRun:
    """One request after another with a sync client."""
    url = f"{base_url}/chat/completions"
    ok = failed = 0
    started = time.perf_counter()
    with httpx.Client(timeout=60, headers={"authorization": f"Bearer {key}"}) as client:
        for prompt in items:
            if client.post(url, json=_body(prompt)).status_code == 200:
                ok += 1
            else:
                failed += 1
    return ClientRun(wall_s=time.perf_counter() - started, ok=ok, failed=failed)


def engine_run(
    base_url: str,
    keys: Sequence[str],
    items: Sequence[Any],
    *,
    concurrency: int,
    limits: trio_llm.Limits | None = None,
    consumers: Sequence[Any] = (),
) -> tuple[ClientRun, list[trio_llm.Result]]:
    """trio-llm's engine over ``items``; also returns the results."""
    status_429 = 0

    def count_429(_logger: Any, _method: str, event: Any) -> Any:
        nonlocal status_429
        if event.get("status") == 429 and event["event"] in ("request.retrying", "request.failed"):
            status_429 += 1
        return event

    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url=base_url, model="mock-gpt"),
        keys=list(keys),
        limits=limits,
        concurrency=concurrency,
        consumers=[count_429, *consumers],
    )
    started = time.perf_counter()
    results = trio.run(engine.map, list(items))
    wall = time.perf_counter() - started
    ok = sum(r.ok for r in results)
    return ClientRun(wall_s=wall, ok=ok, failed=len(results) - ok, status_429=status_429), results
