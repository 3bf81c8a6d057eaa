"""Sync vs async, done honestly: the same N requests, each against its own floor.

The mock server runs in its own process with a fixed latency (0.3 s by default) and no
faults, so every client's best possible wall time is known in advance:

- sequential (``httpx.Client``, one request after another): floor = N x latency;
- concurrent (``asyncio.gather`` + a semaphore, and trio-llm), C in flight:
  floor = latency x ceil(N / C).

A speedup over the sequential loop says little on its own (any concurrent client gets one);
what separates clients is how close each gets to its own floor. Sub-second runs repeat at least
3 times (medians are reported), since one slow moment on a shared machine is most of them.

The second table is about keys. With per-key rate limits on the mock (600 rpm per key by
default), one key can send only ``rate`` requests per second, so the floor is
N / (keys x rate): 3 keys should finish about 3 x faster than 1. Without limits the key count
doesn't matter (both are bound by latency and concurrency) and 1 and 3 keys take about as long.
Each run uses fresh keys, so no run inherits a bucket another one drained.

    python -m benchmarks.sync_vs_async [--quick] [--n 100] [--runs 3] [--latency 0.3]
        [--concurrency 50] [--rpm 600]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import trio_llm
from trio_llm.testing import MockServerConfig, MockServerProcess

from ._clients import ClientRun, asyncio_gather_semaphore, engine_run, prompts, sequential_httpx
from ._harness import markdown_table, median, parse_options, report

#: Requests in the quick run: sequential at 0.3 s each is the bulk of its time (~9 s).
QUICK_N = 30
#: The concurrent runs without limits take well under a second, where one slow moment on a
#: shared machine shows: they run at least this many times (cheap), and the median counts.
MIN_CHEAP_RUNS = 3
#: Keys in the "many keys" rows of the second table.
MANY_KEYS = 3


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency", type=float, default=0.3, help="mock latency, s (0.3)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight (50)")
    parser.add_argument("--rpm", type=int, default=600, help="per-key limit, table 2 (600)")


def _keys(tag: str, count: int) -> list[str]:
    """Fresh keys: the mock gives every new key a full bucket of its own."""
    return [f"{tag}-key-{i + 1}" for i in range(count)]


def _median_run(runs: list[ClientRun]) -> ClientRun:
    """The run with the median wall time (its ok / failed / 429 counts stay together)."""
    ordered = sorted(runs, key=lambda r: r.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both comparisons, print two tables, save the JSON; return the JSON document."""
    options = parse_options(__doc__ or "", argv, runs=3, extra=_extra)
    latency: float = options.extra.latency
    concurrency: int = options.extra.concurrency
    rpm: int = options.extra.rpm
    n = options.n or (QUICK_N if options.quick else 100)
    items = prompts(n, prefix="sync-vs-async")
    sequential_floor = n * latency
    concurrent_floor = latency * math.ceil(n / concurrency)

    clients: dict[str, Callable[[str, int], ClientRun]] = {
        "sequential": lambda url, _run: sequential_httpx(url, "bench-key", items),
        "asyncio": lambda url, _run: asyncio_gather_semaphore(
            url, ["bench-key"], items, concurrency=concurrency
        ),
        "trio-llm": lambda url, _run: engine_run(
            url, ["bench-key"], items, concurrency=concurrency
        )[0],
        "unlimited-1": lambda url, run: engine_run(
            url, _keys(f"u1-{run}", 1), items, concurrency=concurrency
        )[0],
        "unlimited-many": lambda url, run: engine_run(
            url, _keys(f"u{MANY_KEYS}-{run}", MANY_KEYS), items, concurrency=concurrency
        )[0],
    }
    limits = trio_llm.Limits(rpm=rpm)
    limited_clients: dict[str, Callable[[str, int], ClientRun]] = {
        "limited-1": lambda url, run: engine_run(
            url, _keys(f"l1-{run}", 1), items, concurrency=concurrency, limits=limits
        )[0],
        "limited-many": lambda url, run: engine_run(
            url, _keys(f"l{MANY_KEYS}-{run}", MANY_KEYS), items, concurrency=concurrency,
            limits=limits,
        )[0],
    }  # fmt: skip
    runs: dict[str, list[ClientRun]] = {name: [] for name in (*clients, *limited_clients)}

    unlimited = MockServerConfig(latency=latency)
    limited = MockServerConfig(latency=latency, rpm=rpm)
    with MockServerProcess(unlimited) as plain, MockServerProcess(limited) as capped:
        # Warm both servers and both event loops (imports, first connections) outside the
        # measured runs.
        engine_run(plain.base_url, ["warmup"], items[:10], concurrency=10)
        asyncio_gather_semaphore(plain.base_url, ["warmup"], items[:10], concurrency=10)
        engine_run(capped.base_url, ["warmup"], items[:5], concurrency=5)
        server_kind = plain.server
        for run in range(max(options.runs, MIN_CHEAP_RUNS)):
            # Interleaved, so a slow spell on the shared machine hits every client alike.
            expensive = run < options.runs
            for name, client in clients.items():
                if expensive or name != "sequential":
                    runs[name].append(client(plain.base_url, run))
            for name, client in limited_clients.items():
                if expensive:
                    runs[name].append(client(capped.base_url, run))

    best = {name: _median_run(client_runs) for name, client_runs in runs.items()}
    wall = {name: median([r.wall_s for r in client_runs]) for name, client_runs in runs.items()}
    for name, median_run in best.items():
        if median_run.failed:
            raise RuntimeError(
                f"{name}: {median_run.failed} of {n} requests failed; see the mock's output"
            )

    sequential = wall["sequential"]
    rows: list[list[object]] = [
        [
            "sequential httpx.Client loop",
            wall["sequential"],
            1.0,
            sequential_floor,
            sequential_floor / wall["sequential"],
        ],
        [
            f"asyncio.gather + Semaphore({concurrency})",
            wall["asyncio"],
            sequential / wall["asyncio"],
            concurrent_floor,
            concurrent_floor / wall["asyncio"],
        ],
        [
            f"trio-llm (concurrency {concurrency})",
            wall["trio-llm"],
            sequential / wall["trio-llm"],
            concurrent_floor,
            concurrent_floor / wall["trio-llm"],
        ],
    ]

    rate = rpm / 60.0
    floors = {
        "limited-1": n / rate,
        "limited-many": n / (MANY_KEYS * rate),
        "unlimited-1": concurrent_floor,
        "unlimited-many": concurrent_floor,
    }
    labels = {
        "limited-1": f"{rpm} rpm per key, 1 key",
        "limited-many": f"{rpm} rpm per key, {MANY_KEYS} keys",
        "unlimited-1": "no limits, 1 key",
        "unlimited-many": f"no limits, {MANY_KEYS} keys",
    }
    key_rows: list[list[object]] = [
        [
            labels[name],
            wall[name],
            floors[name],
            floors[name] / wall[name],
            best[name].status_429,
        ]
        for name in ("limited-1", "limited-many", "unlimited-1", "unlimited-many")
    ]
    key_headers = ["trio-llm", "wall s", "floor s", "floor / wall", "429s"]
    keys_speedup_limited = wall["limited-1"] / wall["limited-many"]
    keys_speedup_unlimited = wall["unlimited-1"] / wall["unlimited-many"]
    keys_title = (
        f"Keys: {n} requests, {latency} s latency, concurrency {concurrency}; "
        f"floor = N / (keys x rate) with limits, latency x ceil(N / C) without"
    )
    notes = [
        f"speedup vs sequential: asyncio {sequential / wall['asyncio']:.1f}x, trio-llm "
        f"{sequential / wall['trio-llm']:.1f}x (ideal {sequential_floor / concurrent_floor:.0f}x)",
        f"### {keys_title}\n\n{markdown_table(key_headers, key_rows)}",
        f"{MANY_KEYS} keys vs 1 key: {keys_speedup_limited:.2f}x faster under per-key limits "
        f"(ideal {MANY_KEYS}x), {keys_speedup_unlimited:.2f}x without limits (ideal 1x). "
        "A key's bucket starts with up to a second's worth of requests, so a limited run can "
        "beat its floor by that much.",
    ]
    return report(
        "sync_vs_async",
        f"Sync vs async: {n} requests, {latency} s latency, mock server ({server_kind}) in its "
        f"own process; median of {options.runs} run(s), of "
        f"{max(options.runs, MIN_CHEAP_RUNS)} for the sub-second ones",
        ["client", "wall s", "speedup vs sequential", "floor s", "floor / wall"],
        rows,
        options,
        summary={
            "n": n,
            "latency_s": latency,
            "concurrency": concurrency,
            "rpm_per_key": rpm,
            "wall_s": wall,
            "floor_s": {
                "sequential": sequential_floor,
                "concurrent": concurrent_floor,
                **floors,
            },
            "speedup_vs_sequential": {
                "asyncio": sequential / wall["asyncio"],
                "trio-llm": sequential / wall["trio-llm"],
            },
            "keys_speedup_limited": keys_speedup_limited,
            "keys_speedup_unlimited": keys_speedup_unlimited,
            "status_429": {name: r.status_429 for name, r in best.items()},
            "keys_table": {"title": keys_title, "headers": key_headers, "rows": key_rows},
        },
        notes=notes,
    )


if __name__ == "__main__":
    main()
