"""Faults: a mixed-fault run loses nothing, repeats nothing, and costs little time.

2,000 requests against the mock server in its own process, where 10 % of admitted requests
meet a fault of every retryable kind (500, 503, 529, dropped connection, hang, malformed body,
vLLM-style error, HTML 502), with three keys of which one is invalid (401: dropped, its requests
move to the others). The same run without faults is the baseline. Reported: share recovered,
lost (goal 0), duplicates (0), mismatched answers (0), wall time against the no-fault run
(goal <= 1.3 x) and requests sent per input (the wasted attempts).

    python -m benchmarks.faults [--quick] [--n 2000] [--runs 1]
"""

from __future__ import annotations

import collections
import time
from typing import Any

import trio

import trio_llm
from trio_llm.testing import MockServerConfig, MockServerProcess, mock_reply

from ._harness import median, parse_options, report

#: Every fault a correct client recovers from (the default mix, and a hang).
RETRYABLE_FAULTS = ("500", "503", "529", "drop", "hang", "malformed", "vllm_error", "html_502")
GOOD = ("bench-fault-key-0001", "bench-fault-key-0002")
INVALID = "bench-invalid-key-0003"
RPM = 1800
LATENCY = 0.2


def _run(n: int, error_rate: float) -> dict[str, Any]:
    config = MockServerConfig(
        keys=GOOD,
        rpm=RPM,
        latency=LATENCY,
        latency_sigma=0.3,
        error_rate=error_rate,
        fault_mix={kind: 1 for kind in RETRYABLE_FAULTS},
        seed=11,
    )
    prompts = [f"fault benchmark question {i}" for i in range(n)]
    with MockServerProcess(config) as server:
        engine = trio_llm.Engine(
            provider=trio_llm.OpenAICompatible(base_url=server.base_url, model="mock-gpt"),
            keys=[*GOOD, INVALID],
            limits=trio_llm.Limits(rpm=RPM),
            timeout=3.0,
            concurrency=64,
            retry=trio_llm.RetryPolicy(
                attempts=8, wait_initial=0.25, wait_max=4.0, wait_jitter=0.25
            ),
        )
        started = time.perf_counter()
        results = trio.run(engine.map, prompts)
        wall = time.perf_counter() - started
        stats = server.stats()
    indices = collections.Counter(r.index for r in results)
    assert sorted(indices) == list(range(n)), "one Result per input"
    ok = [r for r in results if r.ok]
    return {
        "wall_s": wall,
        "n": n,
        "ok": len(ok),
        # Every fault here is retryable: an item that did not succeed is lost.
        "lost": n - len(ok),
        # Answered twice, by the server's own count (each prompt is distinct).
        "duplicates": stats.duplicate_successes,
        "mismatched": sum(1 for r in ok if r.text != mock_reply(prompts[r.index])),
        "sent_per_input": stats.total_requests / n,
        "faults": sum(stats.faults.values()),
        "failed_kinds": dict(collections.Counter(r.error.kind.value for r in results if r.error)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=1)
    n = options.n or (400 if options.quick else 2000)
    clean_runs = []
    fault_runs = []
    for _ in range(options.runs):
        clean_runs.append(_run(n, 0.0))
        fault_runs.append(_run(n, 0.1))
    clean_wall = median([r["wall_s"] for r in clean_runs])
    fault_wall = median([r["wall_s"] for r in fault_runs])
    worst = max(fault_runs, key=lambda r: r["lost"] + r["duplicates"] + r["mismatched"])
    rows = []
    for name, run in (("no faults", clean_runs[0]), ("10% faults", fault_runs[0])):
        rows.append(
            [
                name,
                run["n"],
                run["ok"] / run["n"],
                run["lost"],
                run["duplicates"],
                run["mismatched"],
                run["faults"],
                run["sent_per_input"],
                run["wall_s"],
            ]
        )
    ratio = fault_wall / clean_wall
    return report(
        "faults",
        f"Mixed faults: {n} requests, 3 keys (1 invalid), {RPM} rpm per key, mock server in "
        f"its own process; median of {options.runs}",
        [
            "run",
            "inputs",
            "recovered",
            "lost",
            "duplicates",
            "mismatched",
            "faults injected",
            "requests sent / input",
            "wall s",
        ],
        rows,
        options,
        summary={
            "recovered": worst["ok"] / n,
            "lost": worst["lost"],
            "duplicates": worst["duplicates"],
            "mismatched": worst["mismatched"],
            "wall_vs_clean": ratio,
            "sent_per_input": fault_runs[0]["sent_per_input"],
            "failed_kinds": worst["failed_kinds"],
        },
        notes=[f"wall with faults / without = {ratio:.3f} (goal <= 1.15)"],
    )


if __name__ == "__main__":
    main()
