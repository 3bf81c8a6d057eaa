"""Engine overhead: trio-llm against aiohttp + asyncio + uvloop, zero latency, 64 in flight.

The mock server runs in its own process (uvicorn + httptools) with zero latency and no
limits, so each client's own cost per request is what is measured. Every client runs in a
child process of its own, one run per child, in turn (A B C ... A B C ...), and medians are
reported (``benchmarks/http_backends.py`` runs the children). The figure: the engine's rate /
aiohttp's rate in the same run (goal >= 0.7), and client CPU per request, which holds even
when the server or another engineer's job bounds the rate.

Rows: aiohttp on asyncio + uvloop (the yardstick); the engine; the engine with the CLI's
consumers (run summary + live display: progress on / off, goal >= 0.95); the engine on the
HTTP layer it had before (sharded httpx transports); a bare trio loop on the engine's HTTP
layer (what the engine adds on top of it).

    python -m benchmarks.overhead [--quick] [--n 5000] [--runs 3]
"""

from __future__ import annotations

from typing import Any

from ._harness import parse_options, report
from .http_backends import _med, _race, _uptime

CONCURRENCY = 64

#: (label, loop, backend, server, extra spec): see benchmarks/_backends.py.
CANDIDATES: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("aiohttp + asyncio + uvloop", "aiohttp", "-", "uvicorn", {}),
    ("trio-llm engine", "engine", "httppool", "uvicorn", {}),
    (
        "trio-llm engine + summary and live display",
        "engine",
        "httppool",
        "uvicorn",
        {"progress": 1},
    ),
    ("trio-llm engine on sharded httpx (before)", "engine", "httpx-shards", "uvicorn", {}),
    ("bare trio loop on the engine's HTTP layer", "loop", "httppool", "uvicorn", {}),
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=3)
    n = options.n or (1000 if options.quick else 5000)
    load_before = _uptime()
    raw = _race(
        CANDIDATES,
        n=n,
        concurrency=CONCURRENCY,
        latency=0.0,
        runs=options.runs,
        timeout=600,
        progress=lambda line: print(line, flush=True),
    )
    load_after = _uptime()
    rps = {label: _med(raw[label], "req_per_s") for label, *_ in CANDIDATES}
    cpu = {label: _med(raw[label], "cpu_us_per_req") for label, *_ in CANDIDATES}
    yard = CANDIDATES[0][0]
    rows: list[list[object]] = []
    for label, *_ in CANDIDATES:
        rows.append(
            [
                label,
                rps[label],
                rps[label] / rps[yard],
                cpu[label],
                _med(raw[label], "server_cpu_pct"),
                sum(r.get("failed", 0) for r in raw[label]) + sum("error" in r for r in raw[label]),
            ]
        )
    engine, progress, before = (CANDIDATES[i][0] for i in (1, 2, 3))
    summary = {
        "engine_rps": rps[engine],
        "aiohttp_rps": rps[yard],
        "engine_vs_aiohttp": rps[engine] / rps[yard],
        "engine_cpu_us_per_req": cpu[engine],
        "aiohttp_cpu_us_per_req": cpu[yard],
        "progress_on_vs_off": rps[progress] / rps[engine],
        "engine_vs_before": rps[engine] / rps[before],
        "load_before": load_before,
        "load_after": load_after,
        "raw": raw,
    }
    return report(
        "overhead",
        f"Overhead: {n} requests, concurrency {CONCURRENCY}, mock server (uvicorn) in its own "
        f"process, zero latency; median of {options.runs} runs (before: {load_before}; "
        f"after: {load_after})",
        ["client", "req/s", "x aiohttp", "client CPU us/req", "server CPU %", "failed"],
        rows,
        options,
        summary=summary,
        notes=[
            f"engine / aiohttp = {summary['engine_vs_aiohttp']:.3f} (goal >= 0.7); "
            f"progress on / off = {summary['progress_on_vs_off']:.3f} (goal >= 0.95); "
            f"engine now / before = {summary['engine_vs_before']:.2f}"
        ],
    )


if __name__ == "__main__":
    main()
