"""Several keys over two OpenAI-compatible endpoints, one engine.

Shows `Engine(routes=[...])`: each route is an endpoint with its own keys and per-key limits.
Every request goes to whichever endpoint's keys can send soonest, so the load splits in
proportion to each endpoint's capacity; if one endpoint's keys are all refused or its breaker
opens, the other takes everything.

With no arguments it starts two built-in mock servers ("east": 2 keys x 600 rpm, "west":
3 keys x 1,200 rpm) and prints how the requests split and the wall time against the floor
N / (total rate). Against real endpoints:

    python examples/many_keys_many_providers.py \\
        --route https://a.example/v1,EAST_KEYS --route https://b.example/v1,WEST_KEYS \\
        --model my-model --n 200

where EAST_KEYS and WEST_KEYS name environment variables holding comma-separated keys.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import trio

import trio_llm
from trio_llm.testing import MockServerConfig, serve_mock


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=600, help="prompts (default 600)")
    parser.add_argument(
        "--route",
        action="append",
        default=[],
        help="BASE_URL,KEYS_ENV for a real endpoint (repeat for each)",
    )
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--rpm", type=float, default=None, help="per-key rpm on real routes")
    return parser


async def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the split and the timing (for tests)."""
    args = _parser().parse_args(argv)
    prompts = [f"Summarise document number {i} in one line." for i in range(args.n)]
    async with contextlib.AsyncExitStack() as stack:
        if args.route:
            routes = []
            for spec in args.route:
                base_url, _, env = spec.partition(",")
                routes.append(
                    trio_llm.Route(
                        provider=trio_llm.OpenAICompatible(base_url=base_url, model=args.model),
                        keys=trio_llm.KeyPool.from_env(env),
                        limits=trio_llm.Limits(rpm=args.rpm),
                    )
                )
            floor = None
        else:
            east_keys = tuple(f"sk-demo-key-east-ea0{i}" for i in range(2))
            west_keys = tuple(f"sk-demo-key-west-we0{i}" for i in range(3))
            east = await stack.enter_async_context(
                serve_mock(MockServerConfig(keys=east_keys, rpm=600, latency=0.2))
            )
            west = await stack.enter_async_context(
                serve_mock(MockServerConfig(keys=west_keys, rpm=1200, latency=0.2))
            )
            routes = [
                trio_llm.Route(
                    provider=trio_llm.OpenAICompatible(
                        base_url=east.base_url, model="mock-gpt", name="east"
                    ),
                    keys=east_keys,
                    limits=trio_llm.Limits(rpm=600),
                ),
                trio_llm.Route(
                    provider=trio_llm.OpenAICompatible(
                        base_url=west.base_url, model="mock-gpt", name="west"
                    ),
                    keys=west_keys,
                    limits=trio_llm.Limits(rpm=1200),
                ),
            ]
            total_rate = (2 * 600 + 3 * 1200) / 60
            floor = args.n / total_rate
        engine = trio_llm.Engine(routes=routes, concurrency=64)
        started = time.monotonic()
        results = await engine.map(prompts)
        wall = time.monotonic() - started
    by_key = collections.Counter(r.key_id for r in results if r.ok)
    # Each route's pool knows its own keys (by fingerprint only).
    split = {route.provider.name: 0 for route in routes}
    for route in routes:
        pool = route.keys if isinstance(route.keys, trio_llm.KeyPool) else None
        names = (
            {key.fingerprint for key in pool.keys}
            if pool is not None
            else {trio_llm.ApiKey(str(k)).fingerprint for k in route.keys}
        )
        split[route.provider.name] += sum(by_key[name] for name in names)
    ok = sum(r.ok for r in results)
    print(f"{ok}/{len(results)} answered in {wall:.2f}s", end="")
    if floor is not None:
        print(f" (rate-limit floor {floor:.2f}s: {wall / floor:.2f} x floor)")
    else:
        print()
    print("per key:", dict(sorted(by_key.items())))
    print("per endpoint:", split)
    return {"ok": ok, "n": len(results), "wall_s": wall, "floor_s": floor, "split": split}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point: run under trio."""
    return trio.run(run, argv)


if __name__ == "__main__":
    main()
