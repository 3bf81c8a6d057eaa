"""Start-up: how long ``trio-llm --help`` and a 1-item ``trio-llm run`` take, and what they import.

Each command runs ``--runs`` times as a fresh process (the console script of this
environment); the table shows the median and the fastest wall time. The 1-item run talks to the
mock server in its own process (started once, outside the timing). A last run under
``python -X importtime`` lists which of the heavy packages each command loaded: ``--help``
should load none, ``run`` neither the mock server nor hypercorn / uvicorn. Goal: ``--help``
median < 0.25 s.

    python -m benchmarks.startup [--quick] [--runs 15]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._harness import median, parse_options, report

KEY = "bench-startup-key-0001"
#: Packages a command should load only when it needs them.
HEAVY = ("trio", "httpx", "rich", "structlog", "attrs", "cattrs", "stamina", "hypercorn",
         "uvicorn", "trio_llm.testing", "trio_llm._engine", "trio_llm._arithmetic")  # fmt: skip


def _command() -> list[str]:
    script = Path(sys.executable).with_name("trio-llm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "trio_llm"]


def _time(argv: Sequence[str], env: dict[str, str], runs: int) -> list[float]:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    return walls


def _imported(argv: Sequence[str], env: dict[str, str]) -> list[str]:
    """The HEAVY packages a command imports (from ``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trio_llm", *argv],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    return [name for name in HEAVY if name in names]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=15)
    runs = 5 if options.quick and options.runs == 1 else options.runs
    from trio_llm.testing import MockServerConfig, MockServerProcess

    env = {**os.environ, "BENCH_STARTUP_KEYS": KEY}
    rows: list[list[object]] = []
    summary: dict[str, Any] = {}
    temp = Path(tempfile.mkdtemp(prefix="trio-llm-startup-"))
    try:
        source = temp / "in.jsonl"
        source.write_text(json.dumps({"id": "q0", "prompt": "what is 2 + 2?"}) + "\n")
        with MockServerProcess(MockServerConfig(keys=(KEY,))) as server:
            run_args = [
                "run", str(source), "-o", str(temp / "out.jsonl"), "--base-url",
                server.base_url, "--model", "mock-gpt", "--keys-env", "BENCH_STARTUP_KEYS",
                "--no-progress", "--force",
            ]  # fmt: skip
            commands = {"trio-llm --help": ["--help"], "trio-llm run (1 item)": run_args}
            for name, args in commands.items():
                if "run" in args:
                    # Each timed run sends its item: a fresh OUTPUT every time.
                    walls = []
                    for _ in range(runs):
                        (temp / "out.jsonl").unlink(missing_ok=True)
                        walls += _time([*_command(), *args], env, 1)
                else:
                    walls = _time([*_command(), *args], env, runs)
                (temp / "out.jsonl").unlink(missing_ok=True)
                heavy = _imported(args, env)
                rows.append([name, median(walls), min(walls), ", ".join(heavy) or "none"])
                summary[name] = {"median_s": median(walls), "min_s": min(walls), "heavy": heavy}
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    help_median = summary["trio-llm --help"]["median_s"]
    load = os.getloadavg()[0]
    summary["help_median_s"] = help_median
    summary["load_1min"] = load
    return report(
        "startup",
        f"Start-up: wall time of a fresh process, {runs} runs each",
        ["command", "median s", "fastest s", "heavy packages imported"],
        rows,
        options,
        summary=summary,
        notes=[
            f"`trio-llm --help` median {help_median:.3f} s (goal < 0.25 s); "
            f"machine load (1 min) {load:.2f} on {os.cpu_count()} cores"
        ],
    )


if __name__ == "__main__":
    main()
