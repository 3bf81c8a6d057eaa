"""Rate limits: does a batch finish in about N / (keys x rate), with almost no 429s?

Each scenario runs trio-llm and the popular recipe (``asyncio.gather`` + a semaphore + a fixed
1 s retry sleep, keys round-robin) against the mock server in its own process, which enforces
per-key RPM/TPM with OpenAI's 429s and headers. The floor is ``N / (keys x rate)`` plus one
mean latency (the last response still has to come back); achieved/floor = floor / wall.

Scenarios (goals from the issue):

1. RPM-bound: 3 keys x 1,800 RPM, 0.3 s latency, 1,800 requests: wall <= 1.03 x floor,
   429s <= 0.5 %.
2. TPM-bound: 2 keys, mixed prompt lengths, tokens/min binding: >= 0.95 of the floor.
3. Limits not given (``Limits()``), learned from headers: >= 0.9 of the floor after 5 s.
4. Configured limit 2 x too high: completes, 429s <= 5 %.
5. One key with half the others' limit: each key used to its own limit.
6. ``trio-llm run`` on scenario 1's batch, timed as a whole process (start-up included):
   >= 0.97 of the floor, no 429s.
7. A server that answers 429 with no header at all for its first 50 s (LiteLLM's router,
   Azure), then recovers: no item fails, >= 0.9 of the limit within 10 s of recovery.
8. Every key's window used up at the start (another process spent it) and the limits
   configured 10 x too high: done within 1.5 x the floor.
9. Two models with different limits on the same keys (the mock enforces them per key and
   model, as providers do), limits learned from headers: each model at >= 0.95 of its own
   floor, <= 1 % 429s.

    python -m benchmarks.rate_limits [--quick] [--n 1800] [--runs 3] [--only-mixed-models]
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

import trio_llm
from trio_llm.testing import MockServerConfig, MockServerProcess, count_tokens, mock_reply

from ._charts import cumulative_chart
from ._clients import ClientRun, asyncio_gather_semaphore, engine_run, prompts
from ._harness import median, parse_options, report

KEYS3 = ("bench-key-1", "bench-key-2", "bench-key-3")
KEYS2 = KEYS3[:2]
LATENCY = 0.3
CONCURRENCY = 64


@attrs.frozen(kw_only=True)
class Outcome:
    """One client on one scenario."""

    wall_s: float
    ok: int
    status_429: int
    sent: int
    extra: dict[str, Any] = attrs.field(factory=dict)


def _tokens(prompt: str) -> int:
    """What the mock charges for a prompt with no max_tokens: prompt + its completion."""
    return count_tokens(prompt) + 3 + count_tokens(mock_reply(prompt))


def _mixed_prompts(n: int) -> list[str]:
    sizes = [20, 200, 800, 2000]  # characters: ~5 to ~500 tokens
    return [f"item {i}: " + "lorem ipsum " * (sizes[i % len(sizes)] // 12) for i in range(n)]


def _engine(
    base_url: str,
    keys: tuple[str, ...],
    items: list[str],
    limits: trio_llm.Limits | None,
    *,
    timeline: bool = False,
) -> Outcome:
    finished: list[float] = []

    def on_event(_logger: Any, _method: str, event: Any) -> Any:
        if timeline and event["event"] == "request.succeeded":
            finished.append(time.perf_counter())
        return event

    started = time.perf_counter()
    run, results = engine_run(
        base_url, keys, items, concurrency=CONCURRENCY, limits=limits, consumers=[on_event]
    )
    per_key = collections.Counter(r.key_id for r in results if r.ok)
    sent = sum(r.attempts for r in results)
    return Outcome(
        wall_s=run.wall_s,
        ok=run.ok,
        status_429=run.status_429,
        sent=sent,
        extra={"finished": [t - started for t in finished], "per_key": dict(per_key)},
    )


def _recipe(base_url: str, keys: tuple[str, ...], items: list[str]) -> Outcome:
    run: ClientRun = asyncio_gather_semaphore(base_url, keys, items, concurrency=CONCURRENCY)
    return Outcome(
        wall_s=run.wall_s,
        ok=run.ok,
        status_429=run.status_429,
        sent=run.ok + run.failed + run.status_429,
    )


def _scenario(
    config: MockServerConfig,
    runs: int,
    engine: Callable[[str], Outcome],
    recipe: Callable[[str], Outcome] | None,
) -> tuple[list[Outcome], list[Outcome]]:
    engine_runs: list[Outcome] = []
    recipe_runs: list[Outcome] = []
    for _ in range(runs):
        # A fresh server per run: every run starts with full buckets, as a real batch would.
        with MockServerProcess(config) as server:
            engine_runs.append(engine(server.base_url))
        if recipe is not None:
            with MockServerProcess(config) as server:
                recipe_runs.append(recipe(server.base_url))
    return engine_runs, recipe_runs


def _row(name: str, client: str, runs: list[Outcome], floor: float, n: int) -> list[object]:
    wall = median([r.wall_s for r in runs])
    share = median([r.status_429 / n for r in runs])
    ok = min(r.ok for r in runs)
    return [name, client, f"{ok}/{n}", wall, floor, floor / wall, f"{share:.2%}"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=3, extra=_extra_flags)
    quick = options.quick
    rows: list[list[object]] = []
    summary: dict[str, Any] = {}
    if options.extra.only_mixed_models:
        return _report(rows + _mixed_models_scenario(options, summary), options, summary)

    # 1. RPM-bound.
    rpm = 1800
    n = options.n or (450 if quick else 1800)
    items = prompts(n, "rpm")
    floor = n / (len(KEYS3) * rpm / 60) + LATENCY
    config = MockServerConfig(keys=KEYS3, rpm=rpm, latency=LATENCY, latency_sigma=0.3)
    engine_runs, recipe_runs = _scenario(
        config,
        options.runs,
        lambda url: _engine(url, KEYS3, items, trio_llm.Limits(rpm=rpm), timeline=True),
        lambda url: _recipe(url, KEYS3, items),
    )
    cumulative_chart(
        "rate_limits",
        f"{n} requests, 3 keys x {rpm} rpm: trio-llm follows the limit",
        [("trio-llm", engine_runs[0].extra["finished"])],
        rate=len(KEYS3) * rpm / 60,
    )
    rows.append(_row("1. RPM-bound, 3 keys x 1800 rpm", "trio-llm", engine_runs, floor, n))
    rows.append(_row("", "asyncio.gather + semaphore", recipe_runs, floor, n))
    summary["rpm_bound"] = {
        "wall_over_floor": median([r.wall_s for r in engine_runs]) / floor,
        "share_429": median([r.status_429 / n for r in engine_runs]),
    }

    # 2. TPM-bound: 2 keys, mixed prompt lengths.
    tpm = 30_000
    mixed = _mixed_prompts(48 if quick else 300)
    total_tokens = sum(_tokens(p) for p in mixed)
    floor = total_tokens / (len(KEYS2) * tpm / 60) + LATENCY
    config = MockServerConfig(keys=KEYS2, rpm=10_000, tpm=tpm, latency=LATENCY)
    engine_runs, recipe_runs = _scenario(
        config,
        options.runs,
        lambda url: _engine(url, KEYS2, mixed, trio_llm.Limits(rpm=10_000, tpm=tpm)),
        lambda url: _recipe(url, KEYS2, mixed),
    )
    label = f"2. TPM-bound, 2 keys x {tpm} tpm, {total_tokens} tokens"
    rows.append(_row(label, "trio-llm", engine_runs, floor, len(mixed)))
    rows.append(_row("", "asyncio.gather + semaphore", recipe_runs, floor, len(mixed)))
    summary["tpm_bound"] = {"achieved_over_floor": floor / median([r.wall_s for r in engine_runs])}

    # 3. Limits not given: learned from headers. Throughput after the first 5 s.
    n3 = n if quick else 2700
    items3 = prompts(n3, "learn")
    floor = n3 / (len(KEYS3) * rpm / 60) + LATENCY
    config = MockServerConfig(keys=KEYS3, rpm=rpm, latency=LATENCY, latency_sigma=0.3)
    engine_runs, _ = _scenario(
        config,
        options.runs,
        lambda url: _engine(url, KEYS3, items3, trio_llm.Limits(), timeline=True),
        None,
    )
    rates = []
    warmup = 2.0 if quick else 5.0
    for run in engine_runs:
        finished = run.extra["finished"]
        late = [t for t in finished if t >= warmup]
        if late:
            rates.append(len(late) / (max(late) - warmup) / (len(KEYS3) * rpm / 60))
    after_warmup = median(rates) if rates else 0.0
    row = _row("3. limits not given (learned)", "trio-llm", engine_runs, floor, n3)
    row.append(f"{after_warmup:.3f} of the rate after {warmup:g} s")
    rows.append(row)
    summary["learned"] = {"rate_after_warmup": after_warmup}

    # 4. Configured 2 x too high.
    engine_runs, _ = _scenario(
        MockServerConfig(keys=KEYS3, rpm=rpm, latency=LATENCY, latency_sigma=0.3),
        options.runs,
        lambda url: _engine(url, KEYS3, items, trio_llm.Limits(rpm=2 * rpm)),
        None,
    )
    floor = n / (len(KEYS3) * rpm / 60) + LATENCY
    rows.append(_row("4. configured 2x too high", "trio-llm", engine_runs, floor, n))
    summary["too_high"] = {"share_429": median([r.status_429 / n for r in engine_runs])}

    # 5. One key with half the others' limit.
    key_rpm = {KEYS3[0]: rpm, KEYS3[1]: rpm, KEYS3[2]: rpm // 2}
    total_rate = sum(key_rpm.values()) / 60
    floor = n / total_rate + LATENCY
    config = MockServerConfig(keys=KEYS3, rpm=rpm, key_rpm=key_rpm, latency=LATENCY)
    engine_runs, _ = _scenario(
        config,
        options.runs,
        lambda url: _engine(url, KEYS3, items, trio_llm.Limits()),
        None,
    )
    row = _row("5. uneven keys (1800/1800/900 rpm, learned)", "trio-llm", engine_runs, floor, n)
    per_key = engine_runs[len(engine_runs) // 2].extra["per_key"]
    row.append(" / ".join(str(per_key.get(k, 0)) for k in sorted(per_key)))
    rows.append(row)
    summary["uneven"] = {
        "achieved_over_floor": floor / median([r.wall_s for r in engine_runs]),
        "per_key": per_key,
    }

    # 6. trio-llm run as a whole process, start-up included.
    n6 = n
    walls = []
    status_429 = []
    config = MockServerConfig(keys=KEYS3, rpm=rpm, latency=LATENCY, latency_sigma=0.3)
    for _ in range(options.runs):
        with MockServerProcess(config) as server, tempfile.TemporaryDirectory() as tmp:
            wall, refused = _cli_run(server, Path(tmp), prompts(n6, "cli"), rpm)
        walls.append(wall)
        status_429.append(refused)
    floor = n6 / (len(KEYS3) * rpm / 60) + LATENCY
    wall = median(walls)
    rows.append(
        [
            "6. trio-llm run, process start included",
            "trio-llm run",
            f"{n6}/{n6}",
            wall,
            floor,
            floor / wall,
            f"{median(status_429) / n6:.2%}",
        ]
    )
    summary["cli_rpm_bound"] = {"achieved_over_floor": floor / wall, "status_429": status_429}

    # 7. 429s without any header for the first seconds of the server's life, then recovery.
    outage = 20.0 if quick else 50.0
    after = 15.0 if quick else 25.0
    rate7 = 600  # one key: 10/s
    n7 = int((outage + after) * rate7 / 60)
    config = MockServerConfig(
        keys=KEYS3[:1], rpm=rate7, latency=LATENCY, latency_sigma=0.3, outage=outage
    )
    recoveries: list[float] = []
    failed7 = []
    walls7 = []
    for _ in range(options.runs):
        with MockServerProcess(config) as server:
            run = _engine(
                server.base_url,
                KEYS3[:1],
                prompts(n7, "outage"),
                trio_llm.Limits(rpm=rate7),
                timeline=True,
            )
        failed7.append(n7 - run.ok)
        walls7.append(run.wall_s)
        if not recoveries:
            cumulative_chart(
                "rate_limits_outage",
                f"429s with no header for {outage:g} s, then recovery (1 key x {rate7} rpm)",
                [("trio-llm", run.extra["finished"])],
                rate=rate7 / 60,
                start_s=outage,
                marks=[(outage, "server recovers")],
            )
        recoveries.append(_recovered_after(run.extra["finished"], outage, rate7 / 60))
    recovered = median(recoveries)
    rows.append(
        [
            f"7. header-less 429s for {outage:g} s, then recovery",
            "trio-llm",
            f"{n7 - max(failed7)}/{n7}",
            median(walls7),
            "",
            "",
            "",
            f"back at >= 0.9 of the limit {recovered:.1f} s after recovery",
        ]
    )
    summary["outage"] = {"recovered_after_s": recoveries, "failed": failed7}

    # 8. Every window used up at start, limits configured 10 x too high.
    config = MockServerConfig(
        keys=KEYS3, rpm=rpm, latency=LATENCY, latency_sigma=0.3, start_exhausted=True
    )
    engine_runs, _ = _scenario(
        config,
        options.runs,
        lambda url: _engine(url, KEYS3, items, trio_llm.Limits(rpm=10 * rpm)),
        None,
    )
    # The floor counts the minute already spent: the window refills before the batch starts.
    floor = n / (len(KEYS3) * rpm / 60) + LATENCY
    rows.append(
        _row("8. windows used up at start, limits 10x too high", "trio-llm", engine_runs, floor, n)
    )
    summary["exhausted_start"] = {
        "wall_over_floor": median([r.wall_s for r in engine_runs]) / floor
    }

    # 9. Two models with different limits on the same keys.
    rows.extend(_mixed_models_scenario(options, summary))

    return _report(rows, options, summary)


def _extra_flags(parser: Any) -> None:
    parser.add_argument(
        "--only-mixed-models", action="store_true", help="run scenario 9 alone (two models)"
    )


def _report(rows: list[list[object]], options: Any, summary: dict[str, Any]) -> dict[str, Any]:
    for r in rows:
        while len(r) < 8:
            r.append("")
    return report(
        "rate_limits",
        f"Rate limits against the mock server in its own process (median of {options.runs})",
        ["scenario", "client", "ok", "wall s", "floor s", "achieved/floor", "429 share", "notes"],
        rows,
        options,
        summary=summary,
        notes=["floor = N / (keys x rate) + one mean latency; achieved/floor = floor / wall"],
    )


#: Scenario 9's models and their per-key rpm (the mock keeps a bucket per key and model).
MODEL_RPM = {"gpt-4o": 300, "gpt-4o-mini": 3000}


def _mixed_models(base_url: str, keys: tuple[str, ...], items: list[dict[str, Any]]) -> Outcome:
    """One engine, learning each model's limits on each key from that model's headers; the
    time each model's last answer arrived."""
    status_429 = 0

    def count_429(_logger: Any, _method: str, event: Any) -> Any:
        nonlocal status_429
        if event.get("status") == 429 and event["event"] in ("request.retrying", "request.failed"):
            status_429 += 1
        return event

    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url=base_url, model="gpt-4o-mini"),
        keys=list(keys),
        limits=trio_llm.Limits(),
        concurrency=CONCURRENCY,
        consumers=[count_429],
    )
    last: dict[str, float] = {}
    ok = 0

    async def run() -> None:
        nonlocal ok
        async with engine.stream(items) as results:
            async for result in results:
                if result.ok:
                    ok += 1
                    model = result.model or "?"
                    last[model] = time.perf_counter() - started

    started = time.perf_counter()
    trio.run(run)
    return Outcome(
        wall_s=time.perf_counter() - started,
        ok=ok,
        status_429=status_429,
        sent=len(items),
        extra={"last": last},
    )


def _mixed_models_scenario(options: Any, summary: dict[str, Any]) -> list[list[object]]:
    seconds = 10 if options.quick else 30
    keys = KEYS2
    counts = {m: int(rpm / 60 * len(keys) * seconds) for m, rpm in MODEL_RPM.items()}
    small, large = "gpt-4o-mini", "gpt-4o"
    items: list[dict[str, Any]] = []
    ratio = counts[small] // counts[large]
    for i in range(counts[large]):
        items.append({"prompt": f"mixed large {i}", "model": large})
        items.extend(
            {"prompt": f"mixed small {i * ratio + j}", "model": small} for j in range(ratio)
        )
    config = MockServerConfig(
        keys=keys, model_rpm=MODEL_RPM, rpm=10_000, latency=LATENCY, latency_sigma=0.3
    )
    engine_runs, _ = _scenario(
        config, options.runs, lambda url: _mixed_models(url, keys, items), None
    )
    rows: list[list[object]] = []
    result: dict[str, Any] = {"share_429": median([r.status_429 / len(items) for r in engine_runs])}
    for model, rpm in MODEL_RPM.items():
        n = counts[model]
        floor = n / (len(keys) * rpm / 60) + LATENCY
        wall = median([r.extra["last"].get(model, float("inf")) for r in engine_runs])
        rows.append(
            [
                f"9. mixed models: {model} at {rpm} rpm x {len(keys)} keys (learned)",
                "trio-llm",
                f"{min(r.ok for r in engine_runs)}/{len(items)}" if not rows else "",
                wall,
                floor,
                floor / wall,
                f"{result['share_429']:.2%}" if not rows else "",
                f"{n} requests of this model",
            ]
        )
        result[model] = {"achieved_over_floor": floor / wall, "n": n}
    summary["mixed_models"] = result
    return rows


def _cli_run(
    server: MockServerProcess, directory: Path, items: list[str], rpm: int
) -> tuple[float, int]:
    """Time ``trio-llm run`` over ``items`` as a process; (wall, 429s the server sent)."""
    source = directory / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(items))
    )
    env = {**os.environ, "BENCH_KEYS": ",".join(KEYS3)}
    command = [
        sys.executable, "-m", "trio_llm", "run", str(source), "-o", str(directory / "out.jsonl"),
        "--base-url", server.base_url, "--model", "mock-gpt", "--keys-env", "BENCH_KEYS",
        "--rpm", str(rpm), "--concurrency", str(CONCURRENCY), "--no-progress",
    ]  # fmt: skip
    before = server.stats().by_status.get(429, 0)
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    return wall, server.stats().by_status.get(429, 0) - before


def _recovered_after(finished: list[float], outage: float, rate: float) -> float:
    """Seconds after ``outage`` until completions run at >= 0.9 of ``rate`` over 2 s."""
    times = sorted(finished)  # seconds since the run (and so the outage) began
    if not times:
        return float("inf")
    step = 0.25
    t = outage
    while t < times[-1]:
        done = sum(t <= x < t + 2.0 for x in times)
        if done >= 0.9 * rate * 2.0:
            return t - outage
        t += step
    return float("inf")


if __name__ == "__main__":
    main()
