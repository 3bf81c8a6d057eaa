"""High concurrency: 1,000 in flight at 2 s latency, and 10,000 in flight at 10 s latency.

4,000 requests at 1,000 in flight take 4 waves x 2 s = 8 s at best; 40,000 at 10,000 in
flight take 40 s. Reported for each: achieved / ideal rate (goal >= 0.9), peak RSS, the most
open files of client and server, client CPU per request; the engine beside aiohttp +
asyncio + uvloop in the same run, each run in a child process of its own (peak RSS is per
process), in turn, medians of ``--runs``. The mock server (uvicorn) runs in its own process
with room for 10,000 connects at once and keeps idle connections 120 s.

    python -m benchmarks.concurrency [--quick] [--runs 3] [--only 1k|10k]
"""

from __future__ import annotations

from typing import Any

from ._backends import raise_nofile
from ._harness import parse_options, report
from .http_backends import _med, _race, _uptime

CANDIDATES: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("trio-llm engine", "engine", "httppool", "uvicorn", {}),
    ("aiohttp + asyncio + uvloop", "aiohttp", "-", "uvicorn", {}),
    # The collector paced as `trio-llm run` paces it (trio_llm/_gc.py); the library never does.
    (
        "trio-llm engine, GC paced as `trio-llm run`",
        "engine",
        "httppool",
        "uvicorn",
        {"gc_paced": 1},
    ),
)


def _extra(parser: Any) -> None:
    parser.add_argument("--only", choices=["1k", "10k"], default=None, help="one scenario")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=3, extra=_extra)
    # (name, in flight, latency s, requests)
    scenarios = (
        [("1k", 250, 1.0, 1000), ("10k", 1000, 2.0, 4000)]
        if options.quick
        else [("1k", 1000, 2.0, 4000), ("10k", 10_000, 10.0, 40_000)]
    )
    if options.extra.only:
        scenarios = [s for s in scenarios if s[0] == options.extra.only]
    if options.n:
        scenarios = [(name, c, lat, options.n) for name, c, lat, _ in scenarios]
    # The server is our child: it inherits the raised limit (a socket per client each side).
    raise_nofile(65536)
    rows: list[list[object]] = []
    summary: dict[str, Any] = {"loads": []}
    for name, concurrency, latency, n in scenarios:
        ideal = n / concurrency * latency
        before = _uptime()
        print(f"\n{concurrency} in flight, {latency:g} s latency, {n} requests", flush=True)
        raw = _race(
            CANDIDATES,
            n=n,
            concurrency=concurrency,
            latency=latency,
            runs=options.runs,
            timeout=ideal * 5 + 120,
            progress=lambda line: print(line, flush=True),
        )
        summary["loads"].append({"scenario": name, "before": before, "after": _uptime()})
        for label, *_ in CANDIDATES:
            wall = _med(raw[label], "wall_s")
            rows.append(
                [
                    f"{concurrency:,} in flight @{latency:g} s, {n:,} req",
                    label,
                    wall,
                    ideal / wall,
                    _med(raw[label], "peak_rss_mb"),
                    int(_med(raw[label], "max_fds")),
                    int(_med(raw[label], "server_max_fds")),
                    _med(raw[label], "cpu_us_per_req"),
                    _med(raw[label], "gc_s"),
                    sum(r.get("failed", 0) for r in raw[label])
                    + sum("error" in r for r in raw[label]),
                ]
            )
        engine = ideal / _med(raw[CANDIDATES[0][0]], "wall_s")
        aiohttp = ideal / _med(raw[CANDIDATES[1][0]], "wall_s")
        summary[f"engine_vs_ideal_{name}"] = engine
        summary[f"aiohttp_vs_ideal_{name}"] = aiohttp
        summary[f"engine_peak_rss_mb_{name}"] = _med(raw[CANDIDATES[0][0]], "peak_rss_mb")
        summary[f"engine_gc_paced_vs_ideal_{name}"] = ideal / _med(raw[CANDIDATES[2][0]], "wall_s")
        summary[f"raw_{name}"] = raw
    # The headline of `python -m benchmarks` (the first scenario).
    first = scenarios[0][0]
    summary["engine_vs_ideal"] = summary[f"engine_vs_ideal_{first}"]
    summary["aiohttp_vs_ideal"] = summary[f"aiohttp_vs_ideal_{first}"]
    loads = "; ".join(f"{x['scenario']}: {x['before']} -> {x['after']}" for x in summary["loads"])
    return report(
        "concurrency",
        f"High concurrency, mock server (uvicorn) in its own process; median of {options.runs} "
        f"({loads})",
        [
            "scenario",
            "client",
            "wall s",
            "achieved / ideal",
            "peak RSS MB",
            "client fds",
            "server fds",
            "client CPU us/req",
            "client GC s",
            "failed",
        ],
        rows,
        options,
        summary=summary,
        notes=[
            f"{name}: engine {summary[f'engine_vs_ideal_{name}']:.2f} of ideal (goal >= 0.9), "
            f"aiohttp {summary[f'aiohttp_vs_ideal_{name}']:.2f}, engine with the collector paced "
            f"as `trio-llm run` {summary[f'engine_gc_paced_vs_ideal_{name}']:.2f}"
            for name, *_ in scenarios
        ],
    )


if __name__ == "__main__":
    main()
