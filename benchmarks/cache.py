"""The response cache: a rerun of a finished run sends nothing and takes little time.

One mock server process (no latency, no limits) serves the benchmark. N distinct prompts at
temperature 0 are run once with a fresh cache file (the fill), then again with a new engine
and the same file (the rerun), both through ``engine.map`` in this process and through
``trio-llm run IN -o OUT --cache FILE`` as a process (the rerun writes a new OUTPUT, so that
the journal's resume does not skip the items before the cache sees them). From the mock's
counters: requests the rerun sent (goal 0); wall time of the rerun (goal < 2 s for 10,000
items; the CLI's figure includes starting Python and reading INPUT).

    python -m benchmarks.cache [--quick] [--n 10000] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import trio

import trio_llm
from trio_llm.testing import MockServerConfig, MockServerProcess

from ._harness import median, parse_options, report

KEY_ENV = "TRIO_LLM_BENCH_KEY"
CONCURRENCY = 64
GOAL_S = 2.0


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", action="store_true", help="profile the engine.map rerun (top 20 by time)"
    )


def items(n: int) -> list[dict[str, Any]]:
    """N distinct prompts at temperature 0 (a fresh tag, so no earlier cache can answer)."""
    tag = uuid.uuid4().hex[:12]
    return [
        {"id": f"item-{i:06d}", "prompt": f"[{tag}] {i}: {i} + 7 = ?", "temperature": 0}
        for i in range(n)
    ]


def engine(base_url: str, path: Path | None) -> trio_llm.Engine:
    return trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url=base_url, model="mock-gpt"),
        keys=["sk-bench-cache-0001"],
        concurrency=CONCURRENCY,
        cache=None if path is None else trio_llm.Cache(path),
    )


def timed_map(
    base_url: str, path: Path | None, prompts: list[dict[str, Any]]
) -> tuple[float, int, int]:
    """Wall seconds of one ``engine.map``, how many results were cached, and how many thread
    calls SQLite took."""
    run = engine(base_url, path)
    started = time.perf_counter()
    results = trio.run(run.map, prompts)
    wall = time.perf_counter() - started
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    calls = 0 if run.cache is None else run.cache.statistics().batches
    return wall, sum(r.cached for r in results), calls


def timed_cli(base_url: str, source: Path, out: Path, cache: Path) -> float:
    """Wall seconds of one ``trio-llm run --cache`` process."""
    env = {**os.environ, KEY_ENV: "sk-bench-cache-0001"}
    argv = [
        sys.executable, "-m", "trio_llm", "run", str(source), "-o", str(out),
        "--base-url", base_url, "--model", "mock-gpt", "--keys-env", KEY_ENV,
        "--concurrency", str(CONCURRENCY), "--no-progress", "--cache", str(cache),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"trio-llm run failed: {done.stderr.decode()[-2000:]}")
    return wall


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=3, extra=_extra)
    n = options.n or (1000 if options.quick else 10_000)
    rows: list[list[object]] = []
    fills: dict[str, list[float]] = {"map": [], "cli": []}
    reruns: dict[str, list[float]] = {"map": [], "cli": []}
    sent: dict[str, list[int]] = {"map": [], "cli": []}
    cached: list[int] = []
    plain: list[float] = []
    calls: dict[str, list[int]] = {"fill": [], "rerun": []}
    with (
        MockServerProcess(MockServerConfig()) as server,
        tempfile.TemporaryDirectory(prefix="trio-llm-cache-") as tmp,
    ):
        for run in range(options.runs):
            prompts = items(n)
            path = Path(tmp) / f"map-{run}.sqlite"
            plain.append(timed_map(server.base_url, None, items(n))[0])
            fill, _, fill_calls = timed_map(server.base_url, path, prompts)
            fills["map"].append(fill)
            calls["fill"].append(fill_calls)
            before = server.stats().total_requests
            if options.extra.profile and run == 0:
                profile = cProfile.Profile()
                profile.enable()
            wall, hits, rerun_calls = timed_map(server.base_url, path, prompts)
            calls["rerun"].append(rerun_calls)
            if options.extra.profile and run == 0:
                profile.disable()
                pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(20)
            reruns["map"].append(wall)
            cached.append(hits)
            sent["map"].append(server.stats().total_requests - before)

            source = Path(tmp) / f"in-{run}.jsonl"
            source.write_text("".join(json.dumps(p) + "\n" for p in items(n)), encoding="utf-8")
            cache = Path(tmp) / f"cli-{run}.sqlite"
            fills["cli"].append(timed_cli(server.base_url, source, Path(tmp) / f"a{run}", cache))
            before = server.stats().total_requests
            out = Path(tmp) / f"b{run}.jsonl"
            reruns["cli"].append(timed_cli(server.base_url, source, out, cache))
            sent["cli"].append(server.stats().total_requests - before)
            marked = sum(b'"cached":true' in line for line in out.read_bytes().splitlines())
            assert marked == n, f"{marked} of {n} OUTPUT lines marked cached"
            print(f"run {run + 1}/{options.runs}: map {wall:.2f} s, cli {reruns['cli'][-1]:.2f} s")
    rows.append(["engine.map, no cache", n, n, 0, "-", median(plain)])
    for what, label in (("map", "engine.map"), ("cli", "trio-llm run --cache (a process)")):
        fill_calls = median(calls["fill"]) if what == "map" else "-"
        rerun_calls = median(calls["rerun"]) if what == "map" else "-"
        rows.append([f"{label}: fill", n, n, 0, fill_calls, median(fills[what])])
        rows.append([f"{label}: rerun", n, max(sent[what]), n, rerun_calls, median(reruns[what])])
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return report(
        "cache",
        f"Response cache: {n} distinct prompts at temperature 0, concurrency {CONCURRENCY}, "
        f"mock in its own process; {options.runs} run(s), medians",
        [
            "run",
            "items",
            "requests sent",
            "answered from cache",
            "SQLite thread calls",
            "wall s (median)",
        ],
        rows,
        options,
        summary={
            "n": n,
            "map_rerun_s": median(reruns["map"]),
            "cli_rerun_s": median(reruns["cli"]),
            "map_fill_s": median(fills["map"]),
            "map_no_cache_s": median(plain),
            "sqlite_calls_rerun": median(calls["rerun"]),
            "cli_fill_s": median(fills["cli"]),
            "rerun_requests": max(sent["map"] + sent["cli"]),
            "rerun_cached": min(cached),
            "goal_s": GOAL_S,
            "load": load,
        },
        notes=[
            f"Goal: the rerun sends 0 requests and takes < {GOAL_S} s for 10,000 items. The CLI "
            "figure includes starting the interpreter and reading INPUT."
        ],
    )


if __name__ == "__main__":
    main()
