"""One harness for every benchmark: the same options, the same markdown table, JSON results.

Every benchmark takes ``--quick`` (a small run for the test suite and ``python -m benchmarks``),
``--n`` (the size of the main run), ``--runs`` (repetitions; medians are reported) and
``--json PATH`` (where to save the results; by default ``benchmarks/results/<name>.json``).
The machine is shared and noisy, so figures are ratios measured side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import structlog

RESULTS_DIR = Path(__file__).parent / "results"


@attrs.define
class Options:
    """The options every benchmark understands."""

    quick: bool
    n: int | None
    runs: int
    json: Path | None
    extra: argparse.Namespace


def parse_options(
    description: str,
    argv: Sequence[str] | None = None,
    *,
    runs: int = 3,
    extra: Any = None,
) -> Options:
    """Parse the common options (plus any ``extra(parser)`` adds)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a small, fast run")
    parser.add_argument("--n", type=int, default=None, help="requests in the main run")
    parser.add_argument("--runs", type=int, default=None, help=f"repetitions (default {runs})")
    parser.add_argument("--json", type=Path, default=None, help="save results here")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    quiet_logs()
    return Options(
        quick=args.quick,
        n=args.n,
        runs=args.runs if args.runs is not None else (1 if args.quick else runs),
        json=args.json,
        extra=args,
    )


def quiet_logs() -> None:
    """A benchmark is an application: it may configure structlog, and keeps other libraries'
    log lines out of its tables (retries are counted from trio-llm's own events)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        cache_logger_on_first_use=True,
    )


def median(values: Sequence[float]) -> float:
    """The median (a single value is its own median)."""
    return statistics.median(values)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; floats with 3 significant decimals."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(
    name: str,
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    options: Options,
    *,
    summary: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Print the table (and notes) and save everything as JSON; return the JSON document."""
    print(f"\n### {title}\n")
    print(markdown_table(headers, rows))
    for note in notes:
        print(f"\n{note}")
    document = {
        "benchmark": name,
        "title": title,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()}",
        "command": " ".join([Path(sys.executable).name, "-m", f"benchmarks.{name}", *sys.argv[1:]]),
        "options": {"quick": options.quick, "n": options.n, "runs": options.runs},
        "headers": list(headers),
        "rows": [list(row) for row in rows],
        "summary": summary or {},
    }
    path = options.json or RESULTS_DIR / f"{name}{'-quick' if options.quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\n(saved {path})")
    return document
