"""Crash and resume: `trio-llm run` killed with SIGKILL at random points, then rerun, loses and
repeats nothing.

One mock server process (~50 ms latency, no limits) serves the whole benchmark. An input file of
N distinct prompts is run with ``python -m trio_llm run IN -o OUT``; the child is killed with
``kill -9`` when OUTPUT reaches a random (seeded) number of lines, and the same command is run
again, which resumes. After the last kill a final run completes. Then, from OUTPUT: ids lost
(in the input, not in OUTPUT) and ids written twice, both goals 0; from the mock's counters:
requests repaid (successes - N: completions paid for and lost with the killed process, because
they were in flight or not yet written) and ``duplicate_successes`` (prompts answered more than
once). An uninterrupted run of the same size is measured first, for the wall-time baseline.

    python -m benchmarks.resume [--quick] [--n 5000] [--runs 1] [--kills 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
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

KEY_ENV = "TRIO_LLM_BENCH_KEY"
CONCURRENCY = 64
POLL_S = 0.01
RUN_TIMEOUT_S = 600.0


@attrs.frozen(kw_only=True)
class Scenario:
    """What one crash-and-resume scenario measured."""

    kills: int
    torn: int
    runs: int
    lost: int
    duplicated: int
    not_ok: int
    repaid: int
    duplicate_successes: int
    server_requests: int
    wall_s: float


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kills", type=int, default=None, help="kills per run (10; quick 3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill points")


def write_input(path: Path, n: int) -> list[str]:
    """N distinct prompts (a fresh tag per scenario, so the mock's duplicate count is exact)."""
    tag = uuid.uuid4().hex[:12]
    ids = [f"item-{i:06d}" for i in range(n)]
    with path.open("w", encoding="utf-8") as file:
        for i, item_id in enumerate(ids):
            file.write(json.dumps({"id": item_id, "prompt": f"[{tag}] {i}: {i} + 7 = ?"}) + "\n")
    return ids


def command(source: Path, out: Path, base_url: str) -> list[str]:
    """The one command every attempt runs: rerunning it resumes."""
    return [
        sys.executable, "-m", "trio_llm", "run", str(source), "-o", str(out),
        "--base-url", base_url, "--keys-env", KEY_ENV,
        "--concurrency", str(CONCURRENCY), "--no-progress",
    ]  # fmt: skip


def lines_in(path: Path) -> int:
    """Complete lines in OUTPUT so far."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def run_once(
    argv: list[str], env: dict[str, str], out: Path, kill_at_lines: int | None, log: Path
) -> bool:
    """Run the command; SIGKILL it once OUTPUT holds ``kill_at_lines`` lines. True if killed."""
    with log.open("ab") as stderr:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while process.poll() is None:
                if kill_at_lines is not None and lines_in(out) >= kill_at_lines:
                    process.kill()
                    process.wait()
                    return True
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the run did not finish in {RUN_TIMEOUT_S}s")
                time.sleep(POLL_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if process.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        errors = [
            line for line in out.read_text(encoding="utf-8").splitlines() if '"error"' in line
        ]
        raise RuntimeError(
            f"the run exited with {process.returncode}; stderr ends:\n{tail}\n"
            f"error lines in OUTPUT ({len(errors)}): {errors[:3]}"
        )
    return False


def scenario(
    server: MockServerProcess, workdir: Path, n: int, kills: int, rng: random.Random
) -> Scenario:
    """Run N prompts to completion through ``kills`` SIGKILLs and reruns; check OUTPUT."""
    source, out, log = workdir / "in.jsonl", workdir / "out.jsonl", workdir / "stderr.log"
    for path in (out, log):
        path.unlink(missing_ok=True)
    ids = write_input(source, n)
    env = dict(os.environ)
    env[KEY_ENV] = "sk-bench-resume-0000000000"
    argv = command(source, out, server.base_url)
    # Kill points: numbers of finished lines, spread over the run and seeded.
    targets = sorted(rng.sample(range(1, n), kills)) if kills else []
    server.reset_stats()
    started = time.perf_counter()
    killed = torn = runs = 0
    for target in targets:
        runs += 1
        # A point the previous run already passed still gets a kill, as soon as there is
        # progress.
        if run_once(argv, env, out, max(target, lines_in(out) + 1), log):
            killed += 1
            data = out.read_bytes() if out.exists() else b""
            torn += bool(data) and not data.endswith(b"\n")
    runs += 1
    run_once(argv, env, out, None, log)
    wall = time.perf_counter() - started
    stats = server.stats()

    lines = [json.loads(line) for line in out.read_bytes().splitlines() if line.strip()]
    counts = collections.Counter(str(line.get("id")) for line in lines)
    return Scenario(
        kills=killed,
        torn=torn,
        runs=runs,
        lost=len(set(ids) - set(counts)),
        duplicated=sum(c - 1 for c in counts.values() if c > 1),
        not_ok=sum(1 for line in lines if line.get("error") is not None),
        repaid=stats.successes - n,
        duplicate_successes=stats.duplicate_successes,
        server_requests=stats.total_requests,
        wall_s=wall,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=1, extra=_extra)
    n = options.n or (500 if options.quick else 5000)
    kills = options.extra.kills if options.extra.kills is not None else (3 if options.quick else 10)
    config = MockServerConfig(latency=0.05, latency_sigma=0.3, seed=options.extra.seed)
    baselines: list[Scenario] = []
    killed: list[Scenario] = []
    with (
        MockServerProcess(config) as server,
        tempfile.TemporaryDirectory(prefix="trio-llm-resume-") as tmp,
    ):
        for run in range(options.runs):
            rng = random.Random(options.extra.seed * 1000 + run)
            baselines.append(scenario(server, Path(tmp), n, 0, rng))
            killed.append(scenario(server, Path(tmp), n, kills, rng))
            print(f"run {run + 1}/{options.runs}: {attrs.asdict(killed[-1])}", file=sys.stderr)
        server_kind = server.server

    def row(label: str, results: list[Scenario]) -> list[object]:
        last = results[-1]
        return [
            label,
            sum(r.kills for r in results),
            sum(r.torn for r in results),
            sum(r.lost for r in results),
            sum(r.duplicated for r in results),
            sum(r.not_ok for r in results),
            sum(r.repaid for r in results),
            sum(r.duplicate_successes for r in results),
            sum(r.server_requests for r in results),
            median([r.wall_s for r in results]),
            last.runs,
        ]

    rows = [row("uninterrupted", baselines), row(f"kill -9 x{kills}, rerun", killed)]
    base_wall = median([r.wall_s for r in baselines])
    kill_wall = median([r.wall_s for r in killed])
    total_kills = sum(r.kills for r in killed)
    repaid = sum(r.repaid for r in killed)
    return report(
        "resume",
        f"Crash and resume: {n} prompts, concurrency {CONCURRENCY}, mock ({server_kind}, "
        f"~50 ms latency) in its own process; {options.runs} run(s), totals over runs",
        [
            "scenario",
            "kills",
            "torn lines",
            "lost ids",
            "duplicated ids",
            "errors in OUT",
            "repaid requests",
            "duplicate successes",
            "server requests",
            "wall s (median)",
            "process runs",
        ],
        rows,
        options,
        summary={
            "n": n,
            "kills": total_kills,
            "lost": sum(r.lost for r in killed),
            "duplicated": sum(r.duplicated for r in killed),
            "repaid": repaid,
            "repaid_per_kill": repaid / total_kills if total_kills else 0.0,
            "duplicate_successes": sum(r.duplicate_successes for r in killed),
            "wall_s": kill_wall,
            "baseline_wall_s": base_wall,
        },
        notes=[
            f"lost = {sum(r.lost for r in killed)} and duplicated = "
            f"{sum(r.duplicated for r in killed)} (goal 0 for both); repaid requests = mock "
            f"successes - N = {repaid} over {total_kills} kills "
            f"({repaid / max(total_kills, 1):.1f} per kill; at most the {CONCURRENCY} in flight "
            f"plus any answered but not yet written); wall {kill_wall:.2f}s vs "
            f"{base_wall:.2f}s uninterrupted (each rerun pays the CLI start-up and the resume "
            "scan of OUTPUT)."
        ],
    )


if __name__ == "__main__":
    main()
