"""High concurrency: 1,000 requests in flight against a server with 2 s latency.

4,000 requests at 1,000 in flight take 4 waves x 2 s = 8 s at best. One httpx client with
1,000 connections falls far short (its pool's bookkeeping grows with its size, httpx issue
#3215); the engine spreads connections over small pools. Reported: achieved / ideal rate
(goal >= 0.9) for the engine and for a bare single-client loop at the same concurrency.

    python -m benchmarks.concurrency [--quick] [--n 4000] [--runs 3]
"""

from __future__ import annotations

from typing import Any

from trio_llm.testing import MockServerConfig, MockServerProcess

from ._clients import bare_trio_httpx, engine_run, prompts
from ._harness import median, parse_options, report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=3)
    concurrency = 250 if options.quick else 1000
    latency = 1.0 if options.quick else 2.0
    n = options.n or 4 * concurrency
    ideal = n / concurrency * latency
    items = prompts(n)
    engine_walls: list[float] = []
    bare_walls: list[float] = []
    with MockServerProcess(MockServerConfig(latency=latency)) as server:
        for _ in range(options.runs):
            run, _results = engine_run(
                server.base_url, ["bench-key"], items, concurrency=concurrency
            )
            assert run.ok == n, f"engine lost requests: {run}"
            engine_walls.append(run.wall_s)
            bare = bare_trio_httpx(
                server.base_url, "bench-key", items, concurrency=concurrency, shards=1
            )
            bare_walls.append(bare.wall_s)
        kind = server.server
    engine_wall = median(engine_walls)
    bare_wall = median(bare_walls)
    rows = [
        ["trio-llm engine", engine_wall, n / engine_wall, ideal / engine_wall],
        ["bare trio + httpx, one client", bare_wall, n / bare_wall, ideal / bare_wall],
    ]
    return report(
        "concurrency",
        f"High concurrency: {n} requests, {concurrency} in flight, {latency:g} s latency, "
        f"mock server ({kind}) in its own process; ideal {ideal:g} s; median of {options.runs}",
        ["client", "wall s", "req/s", "achieved / ideal"],
        rows,
        options,
        summary={"engine_vs_ideal": ideal / engine_wall, "bare_vs_ideal": ideal / bare_wall},
        notes=[f"engine reaches {ideal / engine_wall:.2f} of the ideal rate (goal >= 0.9)"],
    )


if __name__ == "__main__":
    main()
