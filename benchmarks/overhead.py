"""Engine overhead: trio-llm against the best bare trio + httpx loop at the same concurrency.

The mock server runs in its own process with zero latency and no limits, so the client's own
cost per request is what is measured. Runs alternate (bare 1 client, bare 4 clients, engine,
engine with the progress display) and medians are reported. The figure: engine / best bare
loop (goal >= 0.9), and progress on / off (goal >= 0.95).

    python -m benchmarks.overhead [--quick] [--n 5000] [--runs 5]
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from trio_llm._progress import Progress
from trio_llm._summary import RunSummary
from trio_llm.testing import MockServerConfig, MockServerProcess

from ._clients import ClientRun, bare_trio_httpx, engine_run, prompts
from ._harness import median, parse_options, report

CONCURRENCY = 64


def _engine_with_progress(base_url: str, items: list[str]) -> ClientRun:
    """The engine with the CLI's consumers: the summary and a live (terminal) display."""
    import trio

    summary = RunSummary(total=len(items))
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    engine_holder: dict[str, Any] = {}

    async def main() -> None:
        import time

        import trio_llm

        engine = trio_llm.Engine(
            provider=trio_llm.OpenAICompatible(base_url=base_url, model="mock-gpt"),
            keys=["bench-key"],
            concurrency=CONCURRENCY,
            consumers=[summary],
        )
        started = time.perf_counter()
        async with Progress(summary, console=console):
            results = await engine.map(items)
        engine_holder["run"] = ClientRun(
            wall_s=time.perf_counter() - started,
            ok=sum(r.ok for r in results),
            failed=sum(not r.ok for r in results),
        )

    trio.run(main)
    run: ClientRun = engine_holder["run"]
    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=5)
    n = options.n or (1000 if options.quick else 5000)
    items = prompts(n)
    runs: dict[str, list[float]] = {
        k: [] for k in ("bare1", "bare4", "transport4", "engine", "progress")
    }
    with MockServerProcess(MockServerConfig()) as server:
        url = server.base_url
        bare_trio_httpx(url, "warmup", items[:200], concurrency=CONCURRENCY, shards=2)
        for _ in range(options.runs):
            runs["bare1"].append(
                bare_trio_httpx(url, "k", items, concurrency=CONCURRENCY, shards=1).requests_per_s
            )
            runs["bare4"].append(
                bare_trio_httpx(url, "k", items, concurrency=CONCURRENCY, shards=4).requests_per_s
            )
            runs["transport4"].append(
                bare_trio_httpx(
                    url, "k", items, concurrency=CONCURRENCY, shards=4, transports=True
                ).requests_per_s
            )
            engine, _ = engine_run(url, ["bench-key"], items, concurrency=CONCURRENCY)
            runs["engine"].append(engine.requests_per_s)
            runs["progress"].append(_engine_with_progress(url, items).requests_per_s)
        server_kind = server.server
    best_bare = max(median(runs["bare1"]), median(runs["bare4"]))
    transport_rps = median(runs["transport4"])
    engine_rps = median(runs["engine"])
    progress_rps = median(runs["progress"])
    rows = [
        ["bare trio + httpx, 1 client", median(runs["bare1"]), median(runs["bare1"]) / best_bare],
        ["bare trio + httpx, 4 clients", median(runs["bare4"]), median(runs["bare4"]) / best_bare],
        [
            "bare trio + httpx transports (no AsyncClient), 4 pools",
            transport_rps,
            transport_rps / best_bare,
        ],
        ["trio-llm engine", engine_rps, engine_rps / best_bare],
        ["trio-llm engine + progress display", progress_rps, progress_rps / best_bare],
    ]
    return report(
        "overhead",
        f"Overhead: {n} requests, concurrency {CONCURRENCY}, mock server ({server_kind}) in its "
        f"own process, zero latency; median of {options.runs} runs",
        ["client", "req/s", "x best bare loop"],
        rows,
        options,
        summary={
            "engine_vs_best_bare": engine_rps / best_bare,
            "progress_on_vs_off": progress_rps / engine_rps,
            "engine_rps": engine_rps,
            "best_bare_rps": best_bare,
            "engine_vs_bare_transports": engine_rps / transport_rps,
        },
        notes=[
            f"engine / best bare loop = {engine_rps / best_bare:.3f} (goal >= 0.9); "
            f"progress on / off = {progress_rps / engine_rps:.3f} (goal >= 0.95)"
        ],
    )


if __name__ == "__main__":
    main()
