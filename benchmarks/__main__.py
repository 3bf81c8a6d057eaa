"""Run the quick version of every benchmark, one after another, and sum them up.

    python -m benchmarks                          # every benchmark present, quick mode
    python -m benchmarks --only sync_vs_async,memory
    python -m benchmarks --list                   # which benchmarks exist here

Each benchmark module runs in this process through its ``main(["--quick"])``, prints its own
table and saves its JSON (``benchmarks/results/<name>-quick.json``, or under ``--json-dir``).
Modules not present in this checkout are skipped with a note. At the end, one line per
benchmark: ok / failed / skipped, seconds, and its headline figures. The exit status is 1 if
any benchmark failed. The whole quick suite takes about 2.5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._harness import RESULTS_DIR

#: Every benchmark, in the order they run (cheap and independent first).
BENCHMARKS: tuple[str, ...] = (
    "overhead",
    "concurrency",
    "memory",
    "rate_limits",
    "sync_vs_async",
    "mock_capacity",
    "faults",
    "resume",
    "cache",
    "offload",
    "embeddings",
    "streaming",
    "scale_out",
)


@attrs.frozen(kw_only=True)
class Outcome:
    """How one benchmark went.

    Attributes:
        name: the module name.
        status: ``"ok"``, ``"failed"`` or ``"skipped"``.
        seconds: wall time of its quick run (0 when skipped).
        headline: its key figures in one line, or why it failed or was skipped.
    """

    name: str
    status: str
    seconds: float = 0.0
    headline: str = ""

    def line(self) -> str:
        """The one-line summary."""
        return f"{self.name:<14} {self.status:<7} {self.seconds:6.1f} s  {self.headline}"


def _f(value: Any, spec: str = ".2f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "?"


def _overhead(s: Mapping[str, Any]) -> str:
    return (
        f"engine {_f(s['engine_rps'], '.0f')} req/s = {_f(s['engine_vs_aiohttp'])} x aiohttp "
        f"(goal >= 0.7); progress on/off {_f(s['progress_on_vs_off'])} (goal >= 0.95)"
    )


def _concurrency(s: Mapping[str, Any]) -> str:
    return (
        f"achieved / ideal: engine {_f(s['engine_vs_ideal'])} (goal >= 0.9), "
        f"aiohttp {_f(s['aiohttp_vs_ideal'])}"
    )


def _memory(s: Mapping[str, Any]) -> str:
    return f"growth {_f(s['growth_mb'], '+.1f')} MB (goal <= 20), peak {_f(s['peak_mb'], '.1f')} MB"


def _rate_limits(s: Mapping[str, Any]) -> str:
    return (
        f"rpm-bound wall/floor {_f(s['rpm_bound']['wall_over_floor'])} "
        f"(429s {_f(s['rpm_bound']['share_429'], '.1%')}); "
        f"tpm-bound {_f(s['tpm_bound']['achieved_over_floor'])} of floor; "
        f"learned {_f(s['learned']['rate_after_warmup'])}; "
        f"uneven keys {_f(s['uneven']['achieved_over_floor'])}; "
        f"mixed models {_f(s['mixed_models']['gpt-4o']['achieved_over_floor'])} / "
        f"{_f(s['mixed_models']['gpt-4o-mini']['achieved_over_floor'])} of their floors "
        f"(goal >= 0.95, 429s {_f(s['mixed_models']['share_429'], '.1%')})"
    )


def _embeddings(s: Mapping[str, Any]) -> str:
    return (
        f"{s['n']:,} inputs: packed {_f(s['packed']['requests'], '.0f')} requests in "
        f"{_f(s['packed']['wall_s'], '.1f')} s, one per request "
        f"{_f(s['single']['requests'], '.0f')} in {_f(s['single']['wall_s'], '.1f')} s"
    )


def _streaming(s: Mapping[str, Any]) -> str:
    return (
        f"TTFT overhead p50 {_f(s['ttft_overhead_p50_ms'], '.1f')} ms (goal < 5), "
        f"streamed / whole throughput {_f(s['throughput_streamed_vs_whole'])} (goal >= 0.9)"
    )


def _sync_vs_async(s: Mapping[str, Any]) -> str:
    speedup = s["speedup_vs_sequential"]
    return (
        f"vs sequential: trio-llm {_f(speedup['trio-llm'], '.1f')}x, asyncio "
        f"{_f(speedup['asyncio'], '.1f')}x; 3 keys vs 1: {_f(s['keys_speedup_limited'])}x "
        f"under per-key limits, {_f(s['keys_speedup_unlimited'])}x without"
    )


def _mock_capacity(s: Mapping[str, Any]) -> str:
    return ", ".join(f"{r['server']} {r['generator']} {r['req_per_s']:,} req/s" for r in s["rows"])


def _cache(s: Mapping[str, Any]) -> str:
    return (
        f"rerun of {s['n']:,}: {s['rerun_requests']} requests sent (goal 0), engine.map "
        f"{_f(s['map_rerun_s'])} s, trio-llm run {_f(s['cli_rerun_s'])} s (goal < 2 s at 10,000)"
    )


def _offload(s: Mapping[str, Any]) -> str:
    return (
        f"{s['n']:,} lines: {s['batches']} batches ({s['batches_after_kill']} with a kill -9 "
        f"while polling), {s['lost']} lost, {s['duplicated']} duplicated, "
        f"{s['duplicate_successes']} answered twice (goals 0)"
    )


def _scale_out(s: Mapping[str, Any]) -> str:
    limited = ", ".join(
        f"{mode} {_f(row['wall_over_floor'])}x floor {_f(100 * row['share_429'], '.1f')}% 429"
        for mode, row in s["limited"].items()
    )
    unlimited = ", ".join(f"{m} {_f(x)}x" for m, x in s["unlimited_vs_aiohttp"].items())
    return f"{limited}; vs aiohttp: {unlimited}"


#: Headline figures per known benchmark; others get their summary's scalar values.
HEADLINES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "overhead": _overhead,
    "concurrency": _concurrency,
    "memory": _memory,
    "rate_limits": _rate_limits,
    "sync_vs_async": _sync_vs_async,
    "mock_capacity": _mock_capacity,
    "cache": _cache,
    "offload": _offload,
    "embeddings": _embeddings,
    "streaming": _streaming,
    "scale_out": _scale_out,
}


def headline(name: str, summary: Mapping[str, Any]) -> str:
    """A benchmark's key figures in one line (its own format, or its scalar values)."""
    formatter = HEADLINES.get(name)
    if formatter is not None:
        try:
            return formatter(summary)
        except (KeyError, TypeError, IndexError, ValueError):
            pass  # a changed summary shape: fall back to the generic line
    scalars = [f"{k}={_f(v, '.3g')}" for k, v in summary.items() if isinstance(v, (int, float))]
    return ", ".join(scalars[:5]) or "(no scalar figures in its summary)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the quick version of every benchmark and print a summary.",
    )
    parser.add_argument("--only", help=f"comma-separated names among: {', '.join(BENCHMARKS)}")
    parser.add_argument("--list", action="store_true", help="list benchmarks and exit")
    parser.add_argument(
        "--json-dir", type=Path, default=None, help=f"save results here (default {RESULTS_DIR})"
    )
    return parser


def run_one(package: str, name: str, json_dir: Path | None) -> Outcome:
    """Run ``<package>.<name>``'s quick ``main`` and describe how it went."""
    module_name = f"{package}.{name}"
    if importlib.util.find_spec(module_name) is None:
        return Outcome(name=name, status="skipped", headline="not in this checkout")
    json_path = (json_dir or RESULTS_DIR) / f"{name}-quick.json"
    argv = ["--quick"] if json_dir is None else ["--quick", "--json", str(json_path)]
    print(f"\n## {name}: {module_name}.main({argv})", flush=True)
    saved_before = _mtime(json_path)
    started = time.perf_counter()
    try:
        module = importlib.import_module(module_name)
        document = module.main(argv)
    except Exception as exc:  # one failed benchmark must not stop the others
        traceback.print_exc()
        message = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:160]
        return Outcome(
            name=name, status="failed", seconds=time.perf_counter() - started, headline=message
        )
    seconds = time.perf_counter() - started
    if not isinstance(document, Mapping):
        # A main that returns an exit status: read the JSON it just saved instead.
        if isinstance(document, int) and document != 0:
            return Outcome(
                name=name, status="failed", seconds=seconds, headline=f"exit status {document}"
            )
        document = {}
        # Unreadable JSON costs the summary line its figures, not the run its "ok".
        if _mtime(json_path) != saved_before:
            with contextlib.suppress(OSError, ValueError):
                document = json.loads(json_path.read_text(encoding="utf-8"))
    summary = document.get("summary", {})
    return Outcome(name=name, status="ok", seconds=seconds, headline=headline(name, summary))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return None


def main(argv: Sequence[str] | None = None, *, package: str = "benchmarks") -> int:
    """Run the selected benchmarks' quick mode; print one line each; 1 if any failed."""
    args = _parser().parse_args(argv)
    names = list(BENCHMARKS)
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in names if name not in BENCHMARKS]
        if unknown:
            print(
                f"unknown benchmark(s): {', '.join(unknown)}\n"
                f"HINT: --only takes names among {', '.join(BENCHMARKS)}",
                file=sys.stderr,
            )
            return 2
    if args.list:
        for name in names:
            present = importlib.util.find_spec(f"{package}.{name}") is not None
            print(f"{name:<14} {'present' if present else 'not in this checkout'}")
        return 0
    if args.json_dir is not None:
        args.json_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    outcomes = [run_one(package, name, args.json_dir) for name in names]
    print(f"\n## Summary ({time.perf_counter() - started:.0f} s in all, quick mode)\n")
    for outcome in outcomes:
        print(outcome.line())
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
