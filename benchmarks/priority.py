"""Priority lanes: interactive calls during a batch at the rate limit, on the same keys.

One engine (a service's) runs a 10,000-item batch at the keys' limit while a handler calls
``engine.complete()`` once a second. Reported: the interactive calls' wait before they are
sent (p50 / p99; goal p99 under one request interval of the key pool, 1 / (keys x rate)),
and the batch's throughput against the limit (goal >= 0.8), against the mock server in its
own process. Beside it, the same with the interactive calls queued as batch requests.

    python -m benchmarks.priority [--quick] [--n 10000] [--runs 1]
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import trio

import trio_llm
from trio_llm.testing import MockServerConfig, MockServerProcess

from ._clients import prompts
from ._harness import median, parse_options, report

KEYS = ("prio-key-0001", "prio-key-0002", "prio-key-0003")
RPM = 1800  # per key: 30/s, 90/s for the pool
LATENCY = 0.3


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def _run(base_url: str, n: int, priority: str) -> dict[str, Any]:
    waits: list[float] = []
    batch_done: list[float] = []

    def on_event(_logger: Any, _method: str, event: Any) -> Any:
        if event["event"] == "request.sent" and event.get("id") == "interactive":
            waits.append(event["queued_s"])
        elif event["event"] == "request.succeeded" and event.get("id") != "interactive":
            batch_done.append(time.perf_counter())
        return event

    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url=base_url, model="mock-gpt"),
        keys=list(KEYS),
        limits=trio_llm.Limits(rpm=RPM),
        concurrency=64,
        consumers=[on_event],
    )
    interactive = trio_llm.Request.from_prompt("what time is it?", id="interactive")

    async def main() -> float:
        async with engine, trio.open_nursery() as nursery:
            started = time.perf_counter()

            async def batch() -> None:
                await engine.map(prompts(n, "batch"))
                nursery.cancel_scope.cancel()

            nursery.start_soon(batch)
            await trio.sleep(2)  # the batch holds every slot and a queue of reservations
            while True:
                await engine.complete(interactive, priority=priority)  # type: ignore[arg-type]
                await trio.sleep(1)
        return started

    started = trio.run(main)
    wall = max(batch_done) - started
    return {
        "wait_p50_ms": 1000 * statistics.median(waits),
        "wait_p99_ms": 1000 * _percentile(waits, 0.99),
        "calls": len(waits),
        "batch_rate": len(batch_done) / wall,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=1)
    n = options.n or (1_500 if options.quick else 10_000)
    limit = len(KEYS) * RPM / 60
    interval_ms = 1000 / limit
    config = MockServerConfig(keys=KEYS, rpm=RPM, latency=LATENCY, latency_sigma=0.3)
    rows = []
    summary: dict[str, Any] = {"interval_ms": interval_ms}
    for priority in ("interactive", "batch"):
        runs = []
        for _ in range(options.runs):
            with MockServerProcess(config) as server:
                runs.append(_run(server.base_url, n, priority))
        p50 = median([r["wait_p50_ms"] for r in runs])
        p99 = median([r["wait_p99_ms"] for r in runs])
        rate = median([r["batch_rate"] for r in runs])
        rows.append(
            [
                f"complete(priority={priority!r})",
                runs[0]["calls"],
                p50,
                p99,
                p99 / interval_ms,
                rate / limit,
            ]
        )
        summary[priority] = {"wait_p50_ms": p50, "wait_p99_ms": p99, "batch_share": rate / limit}
    return report(
        "priority",
        f"Interactive calls during a {n}-item batch at the limit "
        f"({len(KEYS)} keys x {RPM} rpm; mock in its own process; median of {options.runs})",
        [
            "interactive calls",
            "calls",
            "wait p50 ms",
            "wait p99 ms",
            "p99 / request interval",
            "batch rate / limit",
        ],
        rows,
        options,
        summary=summary,
        notes=[
            f"request interval of the key pool = 1 / ({len(KEYS)} x {RPM / 60:g}/s) = "
            f"{interval_ms:.1f} ms (goal: interactive p99 below it); batch goal >= 0.8 of the "
            "limit"
        ],
    )


if __name__ == "__main__":
    main()
