"""The arithmetic accuracy experiment: N expressions, JSON answers, scored.

Each prompt asks for one integer expression such as ``12 + 7 x 3`` and a reply of exactly
``{"answer": N}``. The script sends them all with ``engine.map``, then reports accuracy, format
errors (replies that aren't that JSON), wrong answers and failed requests, and the wall time
against the rate-limit floor N / (keys x rate): the fastest the keys' limits allow.

With no arguments it starts the built-in mock server in this process (three keys at 1,200 rpm
each, ~0.2 s latency); the mock computes every answer, so accuracy there is 100 % and the run
shows the throughput side. Against a real model the accuracy is the interesting part.

    python examples/arithmetic.py                        # mock server, 300 prompts
    python examples/arithmetic.py --n 1000 --rpm 600     # tighter limits, more prompts
    OPENAI_API_KEY=sk-...,sk-... python examples/arithmetic.py \\
        --base-url https://api.openai.com/v1 --keys-env OPENAI_API_KEY \\
        --model gpt-4o-mini --rpm 500 --n 100
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import MutableMapping, Sequence
from typing import Any

import attrs
import trio

import trio_llm
from trio_llm._arithmetic import ArithmeticScore, make_problems, prompt_for, score
from trio_llm.testing import MockServerConfig, serve_mock


@attrs.frozen(kw_only=True)
class ArithmeticReport:
    """What one run of the experiment measured.

    Attributes:
        score: correct / wrong / format errors / failed, and the accuracy.
        wall_s: seconds from the first request to the last result.
        floor_s: N / (keys x rate), the least time the limits allow; ``None`` if no rpm given.
        keys: how many keys the run used.
        rpm: the per-key requests/min limit, if known.
        retries: attempts that failed and were retried.
        rate_limited: 429 responses received.
        base_url: where the requests went.
    """

    score: ArithmeticScore
    wall_s: float
    floor_s: float | None
    keys: int
    rpm: float | None
    retries: int
    rate_limited: int
    base_url: str

    @property
    def requests_per_s(self) -> float:
        """Prompts per second over the whole run."""
        return self.score.total / self.wall_s if self.wall_s else 0.0


class _RetryCounter:
    """An event consumer (a structlog processor) counting retries and 429s."""

    def __init__(self) -> None:
        self.retries = 0
        self.rate_limited = 0

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        if event["event"] == "request.retrying":
            self.retries += 1
        if event["event"] in ("request.retrying", "request.failed") and event["status"] == 429:
            self.rate_limited += 1
        return event


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="number of prompts (300)")
    parser.add_argument("--seed", type=int, default=0, help="which expressions (0)")
    parser.add_argument("--rpm", type=float, default=None, help="requests/min per key")
    parser.add_argument("--tpm", type=float, default=None, help="tokens/min per key")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (64)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt (60)")
    real = parser.add_argument_group("a real endpoint (default: the built-in mock)")
    real.add_argument("--base-url", help="an OpenAI-compatible base URL, e.g. .../v1")
    real.add_argument("--keys-env", default="OPENAI_API_KEY", help="env var with k1,k2,...")
    real.add_argument("--model", default=None, help="model name (gpt-4o-mini)")
    mock = parser.add_argument_group("the mock server")
    mock.add_argument("--mock-keys", type=int, default=3, help="keys (3)")
    mock.add_argument("--latency", type=float, default=0.2, help="mean latency, s (0.2)")
    return parser


async def run(args: argparse.Namespace) -> ArithmeticReport:
    """Run the experiment as ``args`` say (on the mock unless ``--base-url`` is given)."""
    problems = make_problems(args.n, seed=args.seed)
    prompts = [prompt_for(p) for p in problems]
    counter = _RetryCounter()

    async def experiment(
        base_url: str, model: str, keys: trio_llm.KeyPool | list[str], rpm: float | None
    ) -> ArithmeticReport:
        engine = trio_llm.Engine(
            provider=trio_llm.OpenAICompatible(base_url=base_url, model=model),
            keys=keys,
            limits=trio_llm.Limits(rpm=rpm, tpm=args.tpm),
            concurrency=args.concurrency,
            timeout=args.timeout,
            consumers=[counter],
        )
        started = time.perf_counter()
        results = await engine.map(prompts)
        wall = time.perf_counter() - started
        key_count = len(engine.pool)
        return ArithmeticReport(
            score=score(problems, results),
            wall_s=wall,
            floor_s=None if rpm is None else len(prompts) / (key_count * rpm / 60.0),
            keys=key_count,
            rpm=rpm,
            retries=counter.retries,
            rate_limited=counter.rate_limited,
            base_url=base_url,
        )

    if args.base_url is not None:
        keys = trio_llm.KeyPool.from_env(args.keys_env)
        return await experiment(args.base_url, args.model or "gpt-4o-mini", keys, args.rpm)

    rpm = args.rpm if args.rpm is not None else 1200.0
    mock_keys = [f"mock-key-{i + 1}" for i in range(args.mock_keys)]
    config = MockServerConfig(
        keys=mock_keys,
        rpm=int(rpm),
        tpm=None if args.tpm is None else int(args.tpm),
        latency=args.latency,
        latency_sigma=0.5 if args.latency else 0.0,
        seed=args.seed,
    )
    async with serve_mock(config) as server:
        return await experiment(server.base_url, args.model or config.model, mock_keys, rpm)


def render(report: ArithmeticReport) -> str:
    """The report as a small two-column table."""
    s = report.score
    rows = [
        ("endpoint", report.base_url),
        ("prompts", f"{s.total}"),
        ("accuracy", f"{s.accuracy:.1%} ({s.correct}/{s.total})"),
        ("wrong answers", f"{s.wrong}"),
        ("format errors", f"{s.format_errors}"),
        ("failed requests", f"{s.failed}"),
        ("retries / 429s", f"{report.retries} / {report.rate_limited}"),
        ("wall time", f"{report.wall_s:.2f} s ({report.requests_per_s:.1f} req/s)"),
    ]
    if report.floor_s is not None and report.rpm is not None:
        rate = report.rpm / 60.0
        rows.append(
            (
                "rate-limit floor",
                f"{report.floor_s:.2f} s = {s.total} / ({report.keys} keys x {rate:.1f}/s); "
                f"wall = {report.wall_s / report.floor_s:.2f} x floor",
            )
        )
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: Sequence[str] | None = None) -> ArithmeticReport:
    """Parse ``argv``, run the experiment, print the table, return the report."""
    args = _parser().parse_args(argv)
    report = trio.run(run, args)
    print(render(report))
    return report


if __name__ == "__main__":
    sys.exit(0 if main().score.failed == 0 else 1)
