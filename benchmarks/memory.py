"""Memory stays flat: N prompts from a generator through ``engine.stream``, and ``trio-llm run``
on files of 200,000 and 2,000,000 lines.

Engine: each size runs in a fresh Python process and reports its peak RSS. The HTTP layer is an
``httpx.MockTransport`` answering at once, so 200,000 requests take seconds, and the figure is
the engine's own memory (channels, tasks, results in flight) rather than a server's. Goal: the
200,000 run within 20 MB of the 20,000 run, and under 150 MB.

``trio-llm run``: the real command, in its own process, against the mock server in another.
OUTPUT already answers all but the last ``--fresh`` lines (a resumed run: the index of
answered ids and the duplicate-id check see every line, the engine sends the rest), so the
2,000,000-line case takes a minute or two rather than the half hour that 2,000,000 requests
would. Peak RSS is the child's own: the kernel's high-water mark of its memory (``VmHWM``),
read as it exits (``ru_maxrss`` is not: Linux carries it over ``exec`` from the forked
parent, so a benchmark started from a big process such as a test session read the parent's
size). Goal: < 100 MB, and the two sizes within
10 MB of each other.

    python -m benchmarks.memory [--quick] [--n 200000] [--run-lines 200000,2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._charts import memory_chart
from ._harness import markdown_table, parse_options, report

CHILD = r"""
import json, sys
import httpx, trio, trio_llm

N = int(sys.argv[1])
BODY = json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 1}}).encode()

def handler(request):
    return httpx.Response(200, content=BODY, headers={"content-type": "application/json"})

def prompts():
    for i in range(N):
        yield f"prompt number {i}: " + "x" * 200

async def main():
    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://llm.test/v1", model="gpt-4o-mini"),
        keys=["bench-key"], concurrency=64, transport=httpx.MockTransport(handler),
        limits=trio_llm.Limits(rpm=10**9, tpm=10**12),
    )
    ok = 0
    async with engine:
        async for result in engine.stream(prompts()):
            ok += result.ok
    return ok

ok = trio.run(main)
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"n": N, "ok": ok, "peak_rss_mb": peak_kb / 1024}))
"""

# ``trio-llm`` run in this process, writing its peak RSS (VmHWM) to a file as it exits.
CLI_CHILD = r"""
import atexit, os, runpy, sys

def report():
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_MEMORY_PEAK"], "w") as out:
        out.write(str(peak_kb))

atexit.register(report)
sys.argv = ["trio-llm", *sys.argv[1:]]
runpy.run_module("trio_llm", run_name="__main__", alter_sys=True)
"""


def _measure(n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n)], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"] == n, result
    return result


KEY = "bench-memory-key-0001"


def _write_files(directory: Path, lines: int, fresh: int) -> tuple[Path, Path]:
    """INPUT with ``lines`` prompts; OUTPUT answering all but the last ``fresh`` of them, with
    the input hashes a real run writes."""
    from trio_llm import Request
    from trio_llm._convert import MARKER, input_hash

    source, out = directory / "in.jsonl", directory / "out.jsonl"
    with source.open("w", encoding="utf-8") as inp, out.open("w", encoding="utf-8") as outp:
        for i in range(lines):
            prompt = f"memory benchmark prompt number {i}"
            inp.write(f'{{"id": "q{i}", "prompt": "{prompt}"}}\n')
            if i < lines - fresh:
                digest = input_hash(Request.from_prompt(prompt))
                answer = {
                    MARKER: digest, "id": f"q{i}", "content": "mock answer " * 4,
                    "finish_reason": "stop",
                    "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
                    "cost_usd": None, "attempts": 1,
                }  # fmt: skip
                outp.write(json.dumps(answer, separators=(",", ":")) + "\n")
    return source, out


def _measure_run(lines: int, fresh: int, base_url: str) -> dict[str, Any]:
    """``trio-llm run`` on ``lines`` input lines (``fresh`` of them not answered yet)."""
    with tempfile.TemporaryDirectory(prefix="trio-llm-memory-") as temp:
        source, out = _write_files(Path(temp), lines, fresh)
        argv = [
            sys.executable, "-c", CLI_CHILD, "run", str(source), "-o", str(out),
            "--base-url", base_url, "--model", "mock-gpt", "--keys-env", "BENCH_MEMORY_KEYS",
            "--concurrency", "64", "--no-progress",
        ]  # fmt: skip
        peak_file = Path(temp) / "peak"
        env = {**os.environ, "BENCH_MEMORY_KEYS": KEY, "BENCH_MEMORY_PEAK": str(peak_file)}
        started = time.monotonic()
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert process.stderr is not None
        with process.stderr:
            stderr = process.stderr.read().decode("utf-8", "replace")
        process.wait()
        wall = time.monotonic() - started
        if process.returncode != 0:
            raise RuntimeError(f"trio-llm run exited {process.returncode}: {stderr[-2000:]}")
        with out.open("rb") as file:
            answered = sum(1 for _ in file)
        peak_kb = int(peak_file.read_text())
    assert answered == lines, (answered, lines)
    return {
        "lines": lines,
        "sent": fresh,
        "peak_rss_mb": peak_kb / 1024,
        "wall_s": wall,
    }


def _run_scenario(sizes: list[int], fresh: int) -> dict[str, Any]:
    from trio_llm.testing import MockServerConfig, MockServerProcess

    with MockServerProcess(MockServerConfig(keys=(KEY,))) as server:
        runs = [_measure_run(n, fresh, server.base_url) for n in sizes]
    peaks = [r["peak_rss_mb"] for r in runs]
    return {
        "runs": runs,
        "spread_mb": max(peaks) - min(peaks),
        "peak_mb": max(peaks),
    }


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-lines",
        default=None,
        help="comma-separated input sizes for the trio-llm run scenario "
        "(default 200000,2000000; --quick 2000,20000; 0 skips it)",
    )
    parser.add_argument(
        "--fresh", type=int, default=None, help="lines not answered yet (default 5000)"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=1, extra=_extra)
    large = options.n or (20_000 if options.quick else 200_000)
    small = large // 10
    runs = [_measure(small), _measure(large)]
    growth = runs[1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]
    rows = [[r["n"], r["peak_rss_mb"]] for r in runs]
    text = options.extra.run_lines or ("2000,20000" if options.quick else "200000,2000000")
    sizes = [int(n) for n in text.split(",") if int(n) > 0]
    fresh = options.extra.fresh or (500 if options.quick else 5000)
    summary: dict[str, Any] = {"growth_mb": growth, "peak_mb": runs[1]["peak_rss_mb"]}
    notes = [
        f"growth from {small} to {large} prompts: {growth:+.1f} MB (goal within 20 MB); "
        f"peak {runs[1]['peak_rss_mb']:.1f} MB (goal < 150 MB)"
    ]
    if sizes:
        scenario = _run_scenario(sizes, min(fresh, min(sizes)))
        summary["run"] = scenario
        table = markdown_table(
            ["input lines", "sent", "peak RSS MB", "wall s"],
            [[r["lines"], r["sent"], r["peak_rss_mb"], r["wall_s"]] for r in scenario["runs"]],
        )
        notes.append(
            "trio-llm run (resumed: OUTPUT answers all but the sent lines), its own process, "
            f"against the mock server in another:\n\n{table}\n\n"
            f"spread {scenario['spread_mb']:.1f} MB (goal within 10 MB); "
            f"peak {scenario['peak_mb']:.1f} MB (goal < 100 MB)"
        )
    bars = [(f"stream {r['n']:,}", r["peak_rss_mb"]) for r in runs]
    if sizes:
        bars += [(f"run {r['lines']:,} lines", r["peak_rss_mb"]) for r in summary["run"]["runs"]]
    memory_chart("memory", "Peak RSS stays flat as the input grows", bars)
    return report(
        "memory",
        "Memory: prompts from a generator through engine.stream (peak RSS, fresh process each)",
        ["prompts", "peak RSS MB"],
        rows,
        options,
        summary=summary,
        notes=notes,
    )


if __name__ == "__main__":
    main()
