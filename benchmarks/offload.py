"""Batch API offload: `trio-llm run --batch-api` on the mock, with and without a kill -9.

One mock server process serves OpenAI's ``/v1/files`` + ``/v1/batches`` with completion
fast-forwarded (a batch is done at its 8th status read). N distinct prompts (20,000; quick
2,000) are run with ``--batch-api --batch-size N/4``: from the mock's counters, the batches
created and their lines, chat requests (goal 0); from OUTPUT, ids lost and ids written twice
(goals 0). Then the same with the process killed with ``kill -9`` while it polls (once every
batch is recorded as created in the state file) and the same command run again: batches
created must still be 4 (nothing submitted twice), no prompt answered twice.

    python -m benchmarks.offload [--quick] [--n 20000] [--runs 1]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import attrs

from trio_llm.testing import MockServerConfig, MockServerProcess

from ._harness import median, parse_options, report

KEY = "sk-bench-offload-0001"
KEY_ENV = "TRIO_LLM_BENCH_KEY"
BATCHES = 4
POLLS = 8
RUN_TIMEOUT_S = 600.0


@attrs.frozen(kw_only=True)
class Scenario:
    """What one offloaded run measured."""

    killed: bool
    batches: int
    batch_lines: int
    chat_requests: int
    lost: int
    duplicated: int
    duplicate_successes: int
    failed: int
    wall_s: float


def write_input(path: Path, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:12]
    ids = [f"item-{i:06d}" for i in range(n)]
    with path.open("w", encoding="utf-8") as file:
        for i, item_id in enumerate(ids):
            file.write(json.dumps({"id": item_id, "prompt": f"[{tag}] {i}: {i} + 7 = ?"}) + "\n")
    return ids


def scenario(server: MockServerProcess, tmp: Path, n: int, *, kill: bool) -> Scenario:
    source = tmp / f"in-{uuid.uuid4().hex[:6]}.jsonl"
    ids = write_input(source, n)
    out = source.with_suffix(".out.jsonl")
    state = Path(f"{out}.batches.json")
    argv = [
        sys.executable, "-m", "trio_llm", "run", str(source), "-o", str(out),
        "--base-url", server.base_url, "--model", "gpt-4o-mini", "--keys-env", KEY_ENV,
        "--batch-api", "--batch-size", str(-(-n // BATCHES)), "--batch-poll", "0.05",
        "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, KEY_ENV: KEY}
    before = server.stats()
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = False
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        if kill:
            try:
                chunks = json.loads(state.read_bytes())["chunks"]
            except (OSError, ValueError):
                chunks = []
            if len(chunks) == BATCHES and all(c["batch_id"] for c in chunks):
                process.send_signal(signal.SIGKILL)
                killed = True
                break
        time.sleep(0.01)
    _, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    if kill and not killed:
        raise RuntimeError("the run ended before it could be killed while polling")
    if killed:
        rerun = subprocess.run(argv, env=env, capture_output=True, check=False)
        stderr = rerun.stderr
        if rerun.returncode not in (0, 1):
            raise RuntimeError(stderr.decode()[-2000:])
    elif process.returncode not in (0, 1):
        raise RuntimeError(stderr.decode()[-2000:])
    wall = time.perf_counter() - started
    after = server.stats()
    lines = [json.loads(line) for line in out.read_bytes().splitlines()]
    written = [line["id"] for line in lines]
    return Scenario(
        killed=killed,
        batches=after.batch_creates - before.batch_creates,
        batch_lines=after.batch_lines - before.batch_lines,
        chat_requests=after.total_requests - before.total_requests,
        lost=len(set(ids) - set(written)),
        duplicated=len(written) - len(set(written)),
        duplicate_successes=after.duplicate_successes - before.duplicate_successes,
        failed=sum(1 for line in lines if line.get("error")),
        wall_s=wall,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=1)
    n = options.n or (2000 if options.quick else 20_000)
    plain: list[Scenario] = []
    killed: list[Scenario] = []
    with (
        MockServerProcess(MockServerConfig(keys=(KEY,), batch_polls=POLLS)) as server,
        tempfile.TemporaryDirectory(prefix="trio-llm-offload-") as tmp,
    ):
        for run in range(options.runs):
            plain.append(scenario(server, Path(tmp), n, kill=False))
            killed.append(scenario(server, Path(tmp), n, kill=True))
            print(f"run {run + 1}/{options.runs}: {attrs.asdict(killed[-1])}", file=sys.stderr)

    def row(label: str, results: list[Scenario]) -> list[object]:
        return [
            label,
            max(r.batches for r in results),
            max(r.batch_lines for r in results),
            max(r.chat_requests for r in results),
            sum(r.lost for r in results),
            sum(r.duplicated for r in results),
            sum(r.duplicate_successes for r in results),
            sum(r.failed for r in results),
            median([r.wall_s for r in results]),
        ]

    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return report(
        "offload",
        f"Batch API offload: {n} prompts in {BATCHES} batches on the mock (done at the "
        f"{POLLS}th status read, polls from 0.05 s); {options.runs} run(s)",
        [
            "scenario",
            "batches created",
            "batch lines",
            "chat requests",
            "lost ids",
            "duplicated ids",
            "duplicate successes",
            "failed lines",
            "wall s (median)",
        ],
        [row("uninterrupted", plain), row("kill -9 while polling, rerun", killed)],
        options,
        summary={
            "n": n,
            "batches": max(r.batches for r in plain),
            "batches_after_kill": max(r.batches for r in killed),
            "lost": sum(r.lost for r in plain + killed),
            "duplicated": sum(r.duplicated for r in plain + killed),
            "duplicate_successes": sum(r.duplicate_successes for r in plain + killed),
            "chat_requests": sum(r.chat_requests for r in plain + killed),
            "wall_s": median([r.wall_s for r in plain]),
            "wall_killed_s": median([r.wall_s for r in killed]),
            "load": load,
        },
        notes=[
            "Goals: batches created = 4 in both scenarios (a rerun reattaches, never "
            "resubmits), 0 lost, 0 duplicated, 0 chat requests."
        ],
    )


if __name__ == "__main__":
    main()
