"""Memory stays flat: N prompts from a generator through ``engine.stream``.

Each size runs in a fresh Python process and reports its peak RSS. The HTTP layer is an
``httpx.MockTransport`` answering at once, so 200,000 requests take seconds, and the figure is
the engine's own memory (channels, tasks, results in flight) rather than a server's. Goal: the
200,000 run within 20 MB of the 20,000 run, and under 150 MB.

    python -m benchmarks.memory [--quick] [--n 200000]
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from ._harness import parse_options, report

CHILD = r"""
import json, resource, sys
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
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": N, "ok": ok, "peak_rss_mb": peak_kb / 1024}))
"""


def _measure(n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n)], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"] == n, result
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=1)
    large = options.n or (20_000 if options.quick else 200_000)
    small = large // 10
    runs = [_measure(small), _measure(large)]
    growth = runs[1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]
    rows = [[r["n"], r["peak_rss_mb"]] for r in runs]
    return report(
        "memory",
        "Memory: prompts from a generator through engine.stream (peak RSS, fresh process each)",
        ["prompts", "peak RSS MB"],
        rows,
        options,
        summary={"growth_mb": growth, "peak_mb": runs[1]["peak_rss_mb"]},
        notes=[
            f"growth from {small} to {large} prompts: {growth:+.1f} MB (goal within 20 MB); "
            f"peak {runs[1]['peak_rss_mb']:.1f} MB (goal < 150 MB)"
        ],
    )


if __name__ == "__main__":
    main()
