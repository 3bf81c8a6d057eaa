"""Embeddings: many short inputs packed per request against one input per request.

The mock server in its own process answers ``/v1/embeddings`` (deterministic vectors, 0.1 s
latency, no limits); trio-llm embeds the same inputs twice: packed (``OpenAIEmbeddings``'
defaults, up to 2,048 inputs and 300,000 tokens per request) and one input per request
(``max_inputs=1``). Reported: requests the server saw, wall time, inputs/s, and that every
input got its own vector (checked against the mock's function).

    python -m benchmarks.embeddings [--quick] [--n 100000] [--runs 1]
"""

from __future__ import annotations

import time
from typing import Any

import trio

import trio_llm
from trio_llm.testing import MockServerConfig, MockServerProcess
from trio_llm.testing._mock_embeddings import embedding_of

from ._harness import median, parse_options, report

LATENCY = 0.1
CONCURRENCY = 64
KEY = "bench-key-1"


def _embed(base_url: str, texts: list[str], max_inputs: int) -> tuple[float, list[Any]]:
    engine = trio_llm.Engine(
        provider=trio_llm.OpenAIEmbeddings(base_url=base_url, max_inputs=max_inputs),
        keys=[KEY],
        limits=trio_llm.Limits(rpm=10**7, tpm=10**10),
        concurrency=CONCURRENCY,
    )
    started = time.perf_counter()
    results = trio.run(engine.embed, texts)
    return time.perf_counter() - started, results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=1)
    n = options.n or (10_000 if options.quick else 100_000)
    texts = [f"short input number {i}" for i in range(n)]
    rows: list[list[object]] = []
    summary: dict[str, Any] = {"n": n}
    config = MockServerConfig(keys=(KEY,), latency=LATENCY)
    for label, max_inputs in (("packed (2048 per request)", 2048), ("one per request", 1)):
        walls, requests, right = [], [], []
        for _ in range(options.runs):
            with MockServerProcess(config) as server:
                wall, results = _embed(server.base_url, texts, max_inputs)
                stats = server.stats()
            walls.append(wall)
            requests.append(stats.total_requests)
            right.append(
                sum(
                    r.ok and list(r.embedding or ()) == embedding_of(t)
                    for r, t in zip(results, texts, strict=True)
                )
            )
        wall = median(walls)
        rows.append([label, f"{min(right)}/{n}", median(requests), wall, n / wall])
        summary["packed" if max_inputs > 1 else "single"] = {
            "requests": median(requests),
            "wall_s": wall,
            "inputs_per_s": n / wall,
            "right": min(right),
        }
    packed, single = summary["packed"], summary["single"]
    summary["requests_ratio"] = packed["requests"] / single["requests"]
    summary["speedup"] = single["wall_s"] / packed["wall_s"]
    return report(
        "embeddings",
        f"{n:,} short inputs to /v1/embeddings, mock in its own process, "
        f"{LATENCY:g} s latency, {CONCURRENCY} in flight (median of {options.runs})",
        ["mode", "right vectors", "requests sent", "wall s", "inputs/s"],
        rows,
        options,
        summary=summary,
        notes=[
            f"packing sent {summary['requests_ratio']:.4f} of the requests and was "
            f"{summary['speedup']:.1f}x faster"
        ],
    )


if __name__ == "__main__":
    main()
