"""HTTP layers for trio-llm: zero-latency cost, 10,000 in flight, JSON, and a profile.

    python -m benchmarks.http_backends [--quick] [--n N] [--runs K] [--json PATH]
        [--parts overhead,concurrency,json,profile] [--skip-10k]

Every candidate runs in a child process of its own, one run per child, in turn (A B C ... A B
C ...), against mock servers in processes of their own; medians are reported. The child
times only the sending part (imports and set-up excluded) and reports its own CPU seconds, so
"CPU us / request" holds even when the server, not the client, bounds the rate.

Parts:

1. ``overhead``: zero latency, 64 in flight, N requests: req/s and client CPU per request of
   each HTTP layer (``benchmarks/_backends.py``) in a plain trio worker loop, of aiohttp on
   asyncio + uvloop (the yardstick), and of ``trio_llm.Engine.map`` on several of them.
   HTTP/1.1 goes to the mock on uvicorn + httptools (``MockServerProcess``); HTTP/2 (h2c, prior
   knowledge) needs hypercorn (``benchmarks/_h2c_server.py``, asyncio + uvloop), which is
   slower than uvicorn, so the same loops also run h1 on that hypercorn as the control.
2. ``concurrency``: 1,000 in flight at 2 s latency (4,000 requests) and 10,000 in flight at
   10 s latency (40,000 requests, ideal 40 s): achieved / ideal, peak RSS, most open files of
   the client and of the server. The children raise RLIMIT_NOFILE themselves; the servers
   inherit the limit this process raises.
3. ``json``: ``json`` vs ``orjson`` on our real request bodies (``OpenAICompatible``) and the
   mock's response bodies, per call, interleaved.
4. ``profile``: the engine at 64 in flight, zero latency, under py-spy (categories: HTTP
   library, trio I/O, trio scheduling, engine, events, keys, JSON...) and under cProfile (top
   entries by own and cumulative time).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import timeit
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from trio_llm.testing import MockServerConfig, MockServerProcess

from ._backends import raise_nofile
from ._harness import RESULTS_DIR, markdown_table, median, parse_options, report
from ._profile_split import (
    CATEGORIES,
    cumulative_functions,
    pstats_tops,
    split_raw,
    top_functions,
)

try:
    import psutil  # type: ignore[import-untyped]
except ImportError:  # the `bench` extra brings it
    psutil = None

PARTS = ("overhead", "concurrency", "json", "profile")
CONCURRENCY = 64
#: HTTP/2 streams per connection: what the h2c server allows, and what httpcore uses at most
#: (it caps the server's setting at its own 100).
H2_STREAMS = 100


def _extra(parser: Any) -> None:
    parser.add_argument("--parts", default=",".join(PARTS), help=f"among {', '.join(PARTS)}")
    parser.add_argument("--skip-10k", action="store_true", help="concurrency: 1,000 only")
    parser.add_argument("--only-10k", action="store_true", help="concurrency: 10,000 only")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated substrings: race only the candidates whose label has one "
        "(the aiohttp yardstick always runs)",
    )


# --- servers --------------------------------------------------------------------------------


class H2cServer:
    """``benchmarks/_h2c_server.py`` in a child process: the mock on hypercorn, h1 + h2c."""

    def __init__(self, config: MockServerConfig, streams: int = H2_STREAMS) -> None:
        self.config = config
        self.streams = streams
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def __enter__(self) -> H2cServer:
        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._h2c_server", "--streams", str(self.streams)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(self.config.to_json())
        self.process.stdin.close()
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.__exit__()
            raise RuntimeError(f"h2c server did not start: {line!r}")
        self.base_url = line.removeprefix("listening on ").strip()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None


class _ServerWatch:
    """CPU seconds and the most open files of a server process while a child runs."""

    def __init__(self, pid: int | None) -> None:
        self.proc = psutil.Process(pid) if (psutil is not None and pid) else None
        self.max_fds = 0
        self.cpu_s = 0.0
        self._stop = threading.Event()

    def _cpu(self) -> float:
        if self.proc is None:
            return 0.0
        times = self.proc.cpu_times()
        return float(times.user + times.system)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.max_fds = max(self.max_fds, self.proc.num_fds())
            self._stop.wait(0.1)

    @contextlib.contextmanager
    def watching(self) -> Iterator[_ServerWatch]:
        start = self._cpu()
        thread = threading.Thread(target=self._run, daemon=True)
        if self.proc is not None:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            if self.proc is not None:
                thread.join()
            self.cpu_s = self._cpu() - start


# --- running one child ------------------------------------------------------------------------


def run_child(
    spec: dict[str, Any],
    server_pid: int | None,
    *,
    timeout: float,
    prefix: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ``python -m benchmarks._backends SPEC`` (under ``prefix``, e.g. py-spy); its figures."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    watch = _ServerWatch(server_pid)
    with watch.watching():
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "benchmarks._backends", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    out["server_cpu_s"] = watch.cpu_s
    out["server_cpu_pct"] = 100 * watch.cpu_s / out["wall_s"] if out["wall_s"] else 0.0
    out["server_max_fds"] = watch.max_fds
    return out


#: (label, loop, backend, server, extra spec). Servers: "uvicorn" (h1), "hypercorn" (h1 + h2c).
OVERHEAD_CANDIDATES: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("aiohttp + asyncio + uvloop (yardstick)", "aiohttp", "-", "uvicorn", {}),
    ("HttpPool today: httpx transports, 8 conns/shard", "loop", "httppool", "uvicorn", {}),
    ("httpx2 transports, 8 conns/shard", "loop", "httpx2", "uvicorn", {}),
    ("httpcore pools, 8 conns/shard, no httpx models", "loop", "httpcore", "uvicorn", {}),
    ("httpcore connection per slot (no pool)", "loop", "conn", "uvicorn", {}),
    ("engine on HttpPool (today)", "engine", "httppool", "uvicorn", {}),
    ("engine on httpx2", "engine", "httpx2", "uvicorn", {}),
    ("engine on httpcore connection per slot", "engine", "conn", "uvicorn", {}),
    ("httpcore2 connection per slot (no pool)", "loop", "conn2", "uvicorn", {}),
    ("aiohttp in a uvloop thread, bridged to trio", "loop", "aiohttp-thread", "uvicorn", {}),
    ("engine on aiohttp in a uvloop thread", "engine", "aiohttp-thread", "uvicorn", {}),
    ("[hypercorn] aiohttp h1", "aiohttp", "-", "hypercorn", {}),
    ("[hypercorn] HttpPool h1", "loop", "httppool", "hypercorn", {}),
    ("[hypercorn] httpcore connection per slot h1", "loop", "conn", "hypercorn", {}),
    ("[hypercorn] httpx h2c, 1 connection", "loop", "h2", "hypercorn", {"connections": 1}),
    ("[hypercorn] httpx h2c, 4 connections", "loop", "h2", "hypercorn", {"connections": 4}),
    ("[hypercorn] engine on h2c, 1 connection", "engine", "h2", "hypercorn", {"connections": 1}),
)


def _selected(
    candidates: Sequence[tuple[str, str, str, str, dict[str, Any]]], only: str
) -> tuple[tuple[str, str, str, str, dict[str, Any]], ...]:
    """The candidates named by ``--only`` (all when empty), the yardsticks always."""
    words = [w.strip().lower() for w in only.split(",") if w.strip()]
    if not words:
        return tuple(candidates)
    return tuple(
        c for c in candidates if c[1] == "aiohttp" or any(w in c[0].lower() for w in words)
    )


def _uptime() -> str:
    with contextlib.suppress(OSError):
        load = os.getloadavg()
        return f"load average {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"
    return "load average unknown"


def _race(
    candidates: Sequence[tuple[str, str, str, str, dict[str, Any]]],
    *,
    n: int,
    concurrency: int,
    latency: float,
    runs: int,
    timeout: float,
    progress: Callable[[str], None],
) -> dict[str, list[dict[str, Any]]]:
    """Every candidate ``runs`` times, in turn; the raw figures of each run."""
    config = MockServerConfig(latency=latency)
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in candidates}
    need = {server for *_, server, _extra in candidates}
    with contextlib.ExitStack() as stack:
        servers: dict[str, tuple[str, int | None]] = {}
        if "uvicorn" in need:
            uv = stack.enter_context(MockServerProcess(config))
            servers["uvicorn"] = (uv.base_url, uv.pid)
        if "hypercorn" in need:
            hc = stack.enter_context(H2cServer(config))
            servers["hypercorn"] = (hc.base_url, hc.pid)
        for run in range(runs):
            for label, loop, backend, server, extra in candidates:
                base_url, pid = servers[server]
                spec = {
                    "loop": loop,
                    "backend": backend,
                    "base_url": base_url,
                    "n": n,
                    "concurrency": concurrency,
                    "latency": latency,
                    "streams": H2_STREAMS,
                    **extra,
                }
                try:
                    out = run_child(spec, pid, timeout=timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    out = {"error": str(exc)[-500:]}
                results[label].append(out)
                progress(
                    f"  run {run + 1}/{runs} {label}: "
                    + (
                        f"{out['req_per_s']:,.0f} req/s, {out['cpu_us_per_req']:.0f} us CPU/req, "
                        f"server {out['server_cpu_pct']:.0f}% CPU, ok {out['ok']}/{n}"
                        if "error" not in out
                        else f"FAILED {out['error'][:200]}"
                    )
                )
    return results


def _med(runs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in runs if key in r]
    return median(values) if values else float("nan")


# --- part 1 ---------------------------------------------------------------------------------


def part_overhead(n: int, runs: int, quick: bool, only: str = "") -> dict[str, Any]:
    load_before = _uptime()
    candidates = _selected(OVERHEAD_CANDIDATES, only)
    raw = _race(
        candidates,
        n=n,
        concurrency=CONCURRENCY,
        latency=0.0,
        runs=runs,
        timeout=300,
        progress=lambda s: print(s, flush=True),
    )
    load_after = _uptime()
    yard = {
        "uvicorn": raw.get("aiohttp + asyncio + uvloop (yardstick)", []),
        "hypercorn": raw.get("[hypercorn] aiohttp h1", []),
    }
    rows = []
    for label, _loop, _backend, server, _extra in candidates:
        runs_ = raw[label]
        rps, cpu = _med(runs_, "req_per_s"), _med(runs_, "cpu_us_per_req")
        y_rps, y_cpu = _med(yard[server], "req_per_s"), _med(yard[server], "cpu_us_per_req")
        rows.append(
            [
                label,
                rps,
                rps / y_rps,
                cpu,
                cpu / y_cpu,
                _med(runs_, "server_cpu_pct"),
                int(_med(runs_, "max_fds")),
                sum(r.get("failed", 0) for r in runs_),
            ]
        )
    return {
        "title": f"Zero latency, {CONCURRENCY} in flight, {n} requests per run, median of {runs} "
        f"runs (before: {load_before}; after: {load_after})",
        "headers": [
            "client",
            "req/s",
            "x aiohttp (same server)",
            "client CPU us/req",
            "CPU x aiohttp",
            "server CPU %",
            "client fds",
            "failed",
        ],
        "rows": rows,
        "raw": raw,
    }


# --- part 2 ---------------------------------------------------------------------------------

CONCURRENCY_CANDIDATES: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("aiohttp + asyncio + uvloop", "aiohttp", "-", "uvicorn", {}),
    ("HttpPool today (httpx, 8 conns/shard)", "loop", "httppool", "uvicorn", {}),
    ("httpx2 transports, 8 conns/shard", "loop", "httpx2", "uvicorn", {}),
    ("httpcore connection per slot", "loop", "conn", "uvicorn", {}),
    ("engine on HttpPool (today)", "engine", "httppool", "uvicorn", {}),
    ("engine on httpcore connection per slot", "engine", "conn", "uvicorn", {}),
    ("aiohttp in a uvloop thread, bridged to trio", "loop", "aiohttp-thread", "uvicorn", {}),
    ("engine on aiohttp in a uvloop thread", "engine", "aiohttp-thread", "uvicorn", {}),
    ("[hypercorn] httpx h2c, 100 streams/conn", "loop", "h2", "hypercorn", {}),
    ("[hypercorn] engine on h2c, 100 streams/conn", "engine", "h2", "hypercorn", {}),
)


def part_concurrency(
    runs: int, quick: bool, skip_10k: bool, only_10k: bool = False, only: str = ""
) -> list[dict[str, Any]]:
    scenarios = [(250, 1.0, 1000), (2500, 2.0, 10000)] if quick else [(1000, 2.0, 4000)]
    if not quick and not skip_10k:
        scenarios.append((10000, 10.0, 40000))
    if only_10k and not quick:
        scenarios = [(10000, 10.0, 40000)]
    candidates = _selected(CONCURRENCY_CANDIDATES, only)
    tables = []
    for concurrency, latency, n in scenarios:
        ideal = n / concurrency * latency
        load_before = _uptime()
        print(f"\n{concurrency} in flight, {latency:g} s latency, {n} requests", flush=True)
        raw = _race(
            candidates,
            n=n,
            concurrency=concurrency,
            latency=latency,
            runs=runs,
            timeout=ideal * 5 + 120,
            progress=lambda s: print(s, flush=True),
        )
        load_after = _uptime()
        rows = []
        for label, *_ in candidates:
            runs_ = raw[label]
            wall = _med(runs_, "wall_s")
            rows.append(
                [
                    label,
                    wall,
                    ideal / wall,
                    _med(runs_, "peak_rss_mb"),
                    int(_med(runs_, "max_fds")),
                    int(_med(runs_, "server_max_fds")),
                    _med(runs_, "cpu_us_per_req"),
                    _med(runs_, "server_cpu_pct"),
                    sum(r.get("failed", 0) for r in runs_) + sum("error" in r for r in runs_),
                ]
            )
        tables.append(
            {
                "title": f"{concurrency:,} in flight, {latency:g} s latency, {n:,} requests "
                f"(ideal {ideal:g} s), median of {runs} (before: {load_before}; after: "
                f"{load_after})",
                "headers": [
                    "client",
                    "wall s",
                    "achieved / ideal",
                    "peak RSS MB",
                    "client fds",
                    "server fds",
                    "client CPU us/req",
                    "server CPU %",
                    "failed",
                ],
                "rows": rows,
                "raw": raw,
                "ideal_s": ideal,
            }
        )
    return tables


# --- part 3 ---------------------------------------------------------------------------------


def _bodies() -> dict[str, tuple[Any, bytes]]:
    """Our request bodies (as the provider builds them) and the mock's response bodies."""
    import httpx

    import trio_llm
    from trio_llm._models import to_request
    from trio_llm.testing._mock_server import MockApp

    provider = trio_llm.OpenAICompatible(base_url="http://127.0.0.1:1/v1", model="gpt-4o-mini")
    system = "You are a careful assistant. Answer in one short paragraph. " * 4
    long_text = ("Summarise the following passage. " + "lorem ipsum dolor sit amet " * 40) * 4
    prompts = {
        "short prompt": "hello 12345",
        "1 KB prompt + system": [
            {"role": "system", "content": system},
            {"role": "user", "content": long_text[:1000]},
        ],
        "8-turn chat, ~20 KB": [
            {"role": "system", "content": system},
            *[
                {"role": "user" if i % 2 == 0 else "assistant", "content": long_text[:2500]}
                for i in range(8)
            ],
        ],
    }
    out: dict[str, tuple[Any, bytes]] = {}
    transport = httpx.ASGITransport(app=MockApp())  # type: ignore[arg-type]

    async def fetch(content: bytes) -> bytes:
        async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
            response = await client.post(
                "/v1/chat/completions",
                content=content,
                headers={"authorization": "Bearer x", "content-type": "application/json"},
            )
            return response.content

    import trio

    for name, prompt in prompts.items():
        request = to_request(prompt, line=None)
        body = provider.build_body(request)
        http = provider.build_request(request, "sk-x")
        response = trio.run(fetch, http.content)
        out[f"request: {name}"] = (body, http.content)
        out[f"response to: {name}"] = (json.loads(response), response)
    # A response with a longer answer (2 KB of content), as real models give.
    data = json.loads(out["response to: short prompt"][1])
    data["choices"][0]["message"]["content"] = "The answer is long. " * 100
    response = json.dumps(data).encode()
    out["response with 2 KB answer"] = (data, response)
    return out


def part_json(quick: bool) -> dict[str, Any]:
    import orjson

    repeats = 3 if quick else 9
    rows = []
    for name, (value, raw) in _bodies().items():
        assert orjson.loads(raw) == json.loads(raw)
        encode = {
            "json": lambda v=value: json.dumps(v, separators=(",", ":")).encode(),
            "orjson": lambda v=value: orjson.dumps(v),
        }
        decode = {
            "json": lambda r=raw: json.loads(r),
            "orjson": lambda r=raw: orjson.loads(r),
        }
        timings: dict[str, list[float]] = {
            f"{op} {lib}": [] for op in ("encode", "decode") for lib in ("json", "orjson")
        }
        for _ in range(repeats):  # interleaved: json, orjson, json, orjson...
            for op, funcs in (("encode", encode), ("decode", decode)):
                for lib, func in funcs.items():
                    number = 2000 if len(raw) < 4000 else 200
                    seconds = timeit.timeit(func, number=number)
                    timings[f"{op} {lib}"].append(seconds / number * 1e6)
        med = {k: median(v) for k, v in timings.items()}
        rows.append(
            [
                name,
                len(raw),
                med["encode json"],
                med["encode orjson"],
                med["encode json"] / med["encode orjson"],
                med["decode json"],
                med["decode orjson"],
                med["decode json"] / med["decode orjson"],
            ]
        )
    return {
        "title": f"JSON per call, microseconds, median of {repeats} interleaved repeats "
        f"({_uptime()}); request encode is `json.dumps(body, separators=(',', ':')).encode()`",
        "headers": [
            "body",
            "bytes",
            "encode json us",
            "encode orjson us",
            "encode speed-up",
            "decode json us",
            "decode orjson us",
            "decode speed-up",
        ],
        "rows": rows,
    }


# --- part 4 ---------------------------------------------------------------------------------

PROFILED: tuple[tuple[str, str, str], ...] = (
    ("engine on HttpPool (today)", "engine", "httppool"),
    ("engine on aiohttp in a uvloop thread", "engine", "aiohttp-thread"),
    ("bare loop on httpcore connection per slot", "loop", "conn"),
    ("aiohttp + uvloop", "aiohttp", "-"),
)


def part_profile(n: int, quick: bool, out_dir: Path) -> dict[str, Any]:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    have_pyspy = Path(pyspy).exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    # The client on core 0, the server (and py-spy) on core 1: otherwise a send that wakes the
    # server can be preempted by it, and a wall-clock sampler bills the server's work to send.
    pin = len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") is not None
    document: dict[str, Any] = {"load": _uptime(), "pinned": pin, "pyspy": {}, "cprofile": {}}
    with MockServerProcess(MockServerConfig()) as server:
        if pin and psutil is not None and server.pid is not None:
            psutil.Process(server.pid).cpu_affinity([1])
        for label, loop, backend in PROFILED:
            slug = f"{loop}-{backend}".replace("-", "_").strip("_")
            spec: dict[str, Any] = {
                "loop": loop,
                "backend": backend,
                "base_url": server.base_url,
                "n": n,
                "concurrency": CONCURRENCY,
                "profile": True,
                "pin": 0 if pin else None,
            }
            if have_pyspy:
                raw_path = out_dir / f"pyspy-{slug}.txt"
                prefix = ["taskset", "-c", "1"] if pin else []
                prefix += [pyspy, "record", "-r", "500", "--format", "raw", "-o", str(raw_path)]
                out = run_child(spec, server.pid, timeout=600, prefix=[*prefix, "--"])
                counts = split_raw(raw_path)
                total = sum(counts.values()) or 1
                document["pyspy"][label] = {
                    "cpu_us_per_req": out["cpu_us_per_req"],
                    "req_per_s": out["req_per_s"],
                    "samples": total,
                    "split": {k: counts.get(k, 0) / total for k, _ in CATEGORIES},
                    "top_own": top_functions(raw_path, 25),
                    "top_cumulative": cumulative_functions(raw_path, 25),
                }
            if loop == "engine":
                prof_path = out_dir / f"cprofile-{slug}.prof"
                out = run_child({**spec, "cprofile": str(prof_path)}, server.pid, timeout=600)
                document["cprofile"][label] = {
                    "req_per_s_under_cprofile": out["req_per_s"],
                    "n": n,
                    **pstats_tops(prof_path, 25),
                }
    return document


def _profile_tables(doc: dict[str, Any]) -> list[tuple[str, list[str], list[list[object]]]]:
    tables = []
    if doc["pyspy"]:
        labels = list(doc["pyspy"])
        headers = ["category", *[f"{label} (share / us per req)" for label in labels]]
        rows: list[list[object]] = []
        for key, name in CATEGORIES:
            row: list[object] = [name]
            for label in labels:
                entry = doc["pyspy"][label]
                share = entry["split"][key]
                row.append(f"{share:.1%} / {share * entry['cpu_us_per_req']:.0f}")
            rows.append(row)
        rows.append(
            [
                "total (client CPU us per request)",
                *[f"{doc['pyspy'][label]['cpu_us_per_req']:.0f}" for label in labels],
            ]
        )
        tables.append(("py-spy: where the client's time goes, by category", headers, rows))
        for label in labels:
            entry = doc["pyspy"][label]
            total = entry["samples"]
            for kind in ("own", "cumulative"):
                tops = [[f, f"{c / total:.1%}"] for f, c in entry[f"top_{kind}"]]
                tables.append(
                    (f"py-spy top 25 by {kind} time: {label}", ["function", "share"], tops)
                )
    for label, entry in doc["cprofile"].items():
        n = entry["n"]
        for kind, key in (("own", "own_s"), ("cumulative", "cum_s")):
            rows = [
                [r["function"], r["calls"], r[key] / n * 1e6, r["category"]] for r in entry[kind]
            ]
            tables.append(
                (
                    f"cProfile top 25 by {kind} time: {label} ({n} requests; "
                    f"{entry['req_per_s_under_cprofile']:.0f} req/s under cProfile)",
                    ["function", "calls", f"{kind} us per request", "category"],
                    rows,
                )
            )
    return tables


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse_options(__doc__ or "", argv, runs=3, extra=_extra)
    parts = [p.strip() for p in options.extra.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown part(s) {sorted(unknown)}; HINT: --parts {','.join(PARTS)}")
    # The servers are children of this process and inherit its limit: 10,000 connections need
    # 10,000 descriptors on each side.
    nofile = raise_nofile(65536)
    n = options.n or (1000 if options.quick else 5000)
    tables: list[tuple[str, list[str], list[list[object]]]] = []
    summary: dict[str, Any] = {"nofile": list(nofile), "parts": {}}
    if "overhead" in parts:
        doc = part_overhead(n, options.runs, options.quick, options.extra.only)
        tables.append((doc["title"], doc["headers"], doc["rows"]))
        summary["parts"]["overhead"] = doc
    if "concurrency" in parts:
        for doc in part_concurrency(
            options.runs,
            options.quick,
            options.extra.skip_10k,
            options.extra.only_10k,
            options.extra.only,
        ):
            tables.append((doc["title"], doc["headers"], doc["rows"]))
            summary["parts"].setdefault("concurrency", []).append(doc)
    if "json" in parts:
        doc = part_json(options.quick)
        tables.append((doc["title"], doc["headers"], doc["rows"]))
        summary["parts"]["json"] = doc
    if "profile" in parts:
        doc = part_profile(n, options.quick, RESULTS_DIR / "http_backends-profiles")
        tables += _profile_tables(doc)
        summary["parts"]["profile"] = doc
    head, *rest = tables or [("nothing measured", ["-"], [])]
    notes = [f"### {title}\n\n{markdown_table(h, rows)}" for title, h, rows in rest]
    name = "http_backends"
    if parts != list(PARTS):
        name = f"http_backends-{'-'.join(parts)}"
    options_json = options.json or RESULTS_DIR / f"{name}{'-quick' if options.quick else ''}.json"
    options.json = options_json
    return report("http_backends", head[0], head[1], head[2], options, summary=summary, notes=notes)


if __name__ == "__main__":
    main()
