"""Streaming: time to first token as the mock set it, and throughput against whole answers.

The mock server in its own process starts every answer ``TTFT`` seconds after the request
(fixed, no jitter) and, streamed, sends one token per chunk ``PER_TOKEN`` seconds apart
(whole answers wait the same total before their one body). trio-llm sends the same prompts
(chat completions, ``"stream": true`` with ``stream_options.include_usage``) streamed and
whole, at ``--concurrency`` in flight, each mode in a fresh child process of its own, in turn,
medians of ``--runs``. Reported: the engine's TTFT (``Result.ttft_s``) p50/p95 and its
overhead over the mock's (goal < 5 ms at p50), wall time and throughput streamed / whole
(goal >= 0.9), client CPU per request, and the load of the machine.

    python -m benchmarks.streaming [--quick] [--n 2000] [--concurrency 1000] [--runs 3]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from ._backends import raise_nofile
from ._harness import median, parse_options, report

TTFT = 0.5
PER_TOKEN = 0.02
KEY = "bench-stream-key"


def _child(base_url: str, n: int, concurrency: int, stream: bool) -> dict[str, Any]:
    """One mode in this (child) process: the engine's figures as JSON."""
    import trio

    import trio_llm

    from ._harness import quiet_logs

    quiet_logs()
    items: list[dict[str, Any]] = [
        {"messages": [{"role": "user", "content": f"stream bench item {i}"}], "stream": stream}
        for i in range(n)
    ]
    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url=base_url, model="mock-gpt"),
        keys=[KEY],
        limits=trio_llm.Limits(rpm=10**8, tpm=10**11),
        concurrency=concurrency,
    )
    cpu = time.process_time()
    started = time.perf_counter()
    results = trio.run(engine.map, items)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    ttfts = sorted(r.ttft_s for r in results if r.ttft_s is not None)
    tokens = sum(r.usage.completion_tokens for r in results if r.usage is not None)

    def at(q: float) -> float | None:
        return ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else None

    return {
        "ok": sum(r.ok for r in results),
        "wall_s": wall,
        "cpu_us_per_request": cpu / n * 1e6,
        "ttft_p50_s": at(0.50),
        "ttft_p95_s": at(0.95),
        "completion_tokens": tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _run_mode(base_url: str, n: int, concurrency: int, stream: bool) -> dict[str, Any]:
    """Run one mode in a fresh child process (its own trio run, its own peak RSS)."""
    code = (
        "import json, sys; from benchmarks.streaming import _child; "
        f"print(json.dumps(_child({base_url!r}, {n}, {concurrency}, {stream})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {'streamed' if stream else 'whole'} run failed:\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _extra(parser: Any) -> None:
    parser.add_argument("--concurrency", type=int, default=None, help="requests in flight")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from trio_llm.testing import MockServerConfig, MockServerProcess

    options = parse_options(__doc__ or "", argv, runs=3, extra=_extra)
    n = options.n or (400 if options.quick else 2000)
    concurrency = options.extra.concurrency or (200 if options.quick else 1000)
    raise_nofile(65536)  # the server is our child: it inherits the raised limit
    config = MockServerConfig(keys=(KEY,), latency=TTFT, latency_per_token=PER_TOKEN)
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    load_before = os.getloadavg()
    with MockServerProcess(config) as server:
        for run in range(options.runs):
            for stream in (True, False):  # in turn, so both see the same machine
                figures = _run_mode(server.base_url, n, concurrency, stream)
                runs[stream].append(figures)
                print(
                    f"  run {run + 1}/{options.runs} {'streamed' if stream else 'whole'}: "
                    f"{figures['wall_s']:.2f} s, ok {figures['ok']}/{n}, "
                    f"TTFT p50 {figures['ttft_p50_s']}",
                    flush=True,
                )
    load_after = os.getloadavg()

    def med(stream: bool, key: str) -> float:
        return median([r[key] for r in runs[stream]])

    streamed_wall, whole_wall = med(True, "wall_s"), med(False, "wall_s")
    p50, p95 = med(True, "ttft_p50_s"), med(True, "ttft_p95_s")
    summary: dict[str, Any] = {
        "n": n,
        "concurrency": concurrency,
        "mock_ttft_s": TTFT,
        "ttft_p50_s": p50,
        "ttft_p95_s": p95,
        "ttft_overhead_p50_ms": (p50 - TTFT) * 1000,
        "ttft_overhead_p95_ms": (p95 - TTFT) * 1000,
        "streamed_wall_s": streamed_wall,
        "whole_wall_s": whole_wall,
        "throughput_streamed_vs_whole": whole_wall / streamed_wall,
        "load_before": load_before,
        "load_after": load_after,
    }
    rows: list[list[object]] = []
    for stream in (True, False):
        rows.append(
            [
                "streamed" if stream else "whole",
                f"{min(r['ok'] for r in runs[stream])}/{n}",
                med(stream, "wall_s"),
                n / med(stream, "wall_s"),
                med(stream, "cpu_us_per_request"),
                "-" if not stream else f"{p50 * 1000:.1f} / {p95 * 1000:.1f}",
                med(stream, "peak_rss_mb"),
            ]
        )
    return report(
        "streaming",
        f"{n:,} chat completions at {concurrency} in flight, mock in its own process: first "
        f"token at {TTFT:g} s, then {PER_TOKEN:g} s per token; each mode in its own process, "
        f"in turn, median of {options.runs} (load {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after)",
        ["mode", "ok", "wall s", "req/s", "client CPU us/req", "TTFT p50 / p95 ms", "peak MB"],
        rows,
        options,
        summary=summary,
        notes=[
            f"TTFT overhead over the mock's {TTFT * 1000:.0f} ms: p50 "
            f"{summary['ttft_overhead_p50_ms']:.1f} ms (goal < 5), p95 "
            f"{summary['ttft_overhead_p95_ms']:.1f} ms",
            f"throughput streamed / whole = {summary['throughput_streamed_vs_whole']:.3f} "
            "(goal >= 0.9)",
        ],
    )


if __name__ == "__main__":
    main()
