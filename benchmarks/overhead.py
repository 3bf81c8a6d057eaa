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


#: The bare loops raced against the engine: (label, clients or pools, straight to transports).
BARE = (
    ("bare trio + httpx, 1 client", 1, False),
    ("bare trio + httpx, 4 clients", 4, False),
    ("bare trio + httpx, 8 clients of 8 connections", 8, False),
    ("bare trio + httpx transports (no AsyncClient), 8 pools of 8", 8, True),
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=5)
    n = options.n or (1000 if options.quick else 5000)
    items = prompts(n)
    bare_runs: dict[str, list[float]] = {label: [] for label, _, _ in BARE}
    engine_runs: list[float] = []
    progress_runs: list[float] = []
    with MockServerProcess(MockServerConfig()) as server:
        url = server.base_url
        bare_trio_httpx(url, "warmup", items[:200], concurrency=CONCURRENCY, shards=2)
        for _ in range(options.runs):
            # Side by side, in turn, so that the machine's noise falls on all of them alike.
            for label, shards, transports in BARE:
                run = bare_trio_httpx(
                    url, "k", items, concurrency=CONCURRENCY, shards=shards, transports=transports
                )
                bare_runs[label].append(run.requests_per_s)
            engine, _ = engine_run(url, ["bench-key"], items, concurrency=CONCURRENCY)
            engine_runs.append(engine.requests_per_s)
            progress_runs.append(_engine_with_progress(url, items).requests_per_s)
        server_kind = server.server
    bare = {label: median(values) for label, values in bare_runs.items()}
    best_label = max(bare, key=lambda label: bare[label])
    best_bare = bare[best_label]
    engine_rps = median(engine_runs)
    progress_rps = median(progress_runs)
    rows: list[list[object]] = [[label, rps, rps / best_bare] for label, rps in bare.items()]
    rows.append(["trio-llm engine", engine_rps, engine_rps / best_bare])
    rows.append(["trio-llm engine + progress display", progress_rps, progress_rps / best_bare])
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
            "best_bare": best_label,
        },
        notes=[
            f"engine / best bare loop ({best_label}) = {engine_rps / best_bare:.3f} "
            f"(goal >= 0.9); progress on / off = {progress_rps / engine_rps:.3f} (goal >= 0.95)"
        ],
    )


if __name__ == "__main__":
    main()
