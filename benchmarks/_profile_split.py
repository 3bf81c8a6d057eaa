"""Where a profile's time goes: py-spy stacks and cProfile stats, summed by category.

Used by ``benchmarks/http_backends.py``. A py-spy sample is charged to the innermost frame
whose file belongs to a known category; stdlib glue (``contextlib``, ``abc``, ``typing``,
``functools``...) is skipped over and charged to its caller, so a ``with`` in the engine counts
as the engine, and a C call counts as the Python function that made it (``sock.send`` is trio
I/O, ``json.loads`` is JSON). Samples outside ``trio.run`` / the event loop (imports, start-up)
are left out.
"""

from __future__ import annotations

import pstats
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

#: (category, label) in the order the table lists them.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("http", "httpx / httpcore / h11 / h2 (HTTP library)"),
    ("aiohttp", "aiohttp (HTTP library)"),
    ("trio_io", "trio socket I/O (send/recv/wait_readable/epoll)"),
    ("trio_sched", "trio scheduling (run loop, checkpoints, cancel scopes, channels)"),
    ("asyncio", "asyncio / uvloop"),
    ("engine", "engine bookkeeping (trio_llm._engine, results, attempts)"),
    ("events", "events (EventHub, structlog)"),
    ("keys", "key choice and limits (_keys, _limiter, _breaker)"),
    ("estimates", "estimates and prices (_tokens, _pricing)"),
    ("provider", "provider build / parse (headers, models)"),
    ("json", "JSON encode / decode"),
    ("bench", "benchmark loop"),
    ("other", "other"),
)

_GLUE = re.compile(
    r"(^|/)(contextlib|abc|typing|functools|enum|_weakrefset|weakref|copy|types|dataclasses|"
    r"collections/__init__|<frozen abc>|<string>)\.?p?y?$"
)


def _file_of(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``path/to/file.py``."""
    match = re.search(r"\(([^()]*?)(?::\d+)?\)\s*$", frame)
    return match.group(1) if match else frame


def categorize_file(path: str) -> str | None:
    """The category of a source file, or ``None`` for glue to skip over."""
    p = path.replace("\\", "/")
    if "<attrs generated" in p:
        if "outcome." in p or "trio." in p:
            return "trio_sched"
        if "trio_llm" in p and ("Request" in p or "Completion" in p or "Usage" in p):
            return "provider"
        return "engine" if "trio_llm" in p else None
    for part, category in (
        ("trio_llm/_events", "events"),
        ("structlog/", "events"),
        ("trio_llm/_keys", "keys"),
        ("trio_llm/_limiter", "keys"),
        ("trio_llm/_breaker", "keys"),
        ("trio_llm/_arithmetic", "keys"),
        ("trio_llm/_tokens", "estimates"),
        ("trio_llm/_pricing", "estimates"),
        ("trio_llm/_providers", "provider"),
        ("trio_llm/_headers", "provider"),
        ("trio_llm/_models", "provider"),
        ("trio_llm/_http", "http"),
        ("trio_llm/", "engine"),
        ("stamina/", "engine"),
        ("cattrs/", "engine"),
        ("benchmarks/", "bench"),
        ("httpx/", "http"),
        ("httpx2/", "http"),
        ("httpcore/", "http"),
        ("httpcore2/", "http"),
        ("h11/", "http"),
        ("h2/", "http"),
        ("hpack/", "http"),
        ("hyperframe/", "http"),
        ("aiohttp/", "aiohttp"),
        ("yarl/", "aiohttp"),
        ("multidict/", "aiohttp"),
        ("trio/_socket", "trio_io"),
        ("trio/_highlevel_socket", "trio_io"),
        ("trio/_core/_io_", "trio_io"),
        ("trio/", "trio_sched"),
        ("outcome/", "trio_sched"),
        ("sniffio/", "trio_sched"),
        ("anyio/", "trio_sched"),
        ("uvloop/", "asyncio"),
        ("asyncio/", "asyncio"),
        ("json/", "json"),
        ("orjson", "json"),
    ):
        if part in p:
            return category
    if _GLUE.search(p) or p.startswith("<frozen"):
        return None
    return "other"


#: Samples of the steady state only: inside the event loop, and not importing, not building
#: TLS contexts (set-up that aiohttp and httpx do lazily inside the loop).
_INSIDE = ("trio/_core/_run.py", "asyncio/", "uvloop")
_SETUP = ("importlib", "ssl.py", "threading.py", "attr/_make.py", "dataclasses.py")


def _steady(stack: str) -> bool:
    return any(m in stack for m in _INSIDE) and not any(m in stack for m in _SETUP)


def _samples(path: Path) -> Iterable[tuple[list[str], int]]:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if stack and number.isdigit() and _steady(stack):
            yield stack.split(";"), int(number)


def split_raw(path: Path) -> Counter[str]:
    """Sum a py-spy ``--format raw`` file by category (steady-state samples only)."""
    counts: Counter[str] = Counter()
    for frames, number in _samples(path):
        category = "other"
        for frame in reversed(frames):
            found = categorize_file(_file_of(frame))
            if found is not None:
                category = found
                break
        counts[category] += number
    return counts


def top_functions(path: Path, n: int = 25) -> list[tuple[str, int]]:
    """The ``n`` functions (line numbers dropped) with the most own samples in a raw file."""
    own: Counter[str] = Counter()
    for frames, number in _samples(path):
        own[re.sub(r":\d+\)", ")", frames[-1])] += number
    return own.most_common(n)


def cumulative_functions(path: Path, n: int = 25) -> list[tuple[str, int]]:
    """The ``n`` functions on the most stacks (each counted once per sample)."""
    cum: Counter[str] = Counter()
    for frames, number in _samples(path):
        for name in {re.sub(r":\d+\)", ")", f) for f in frames}:
            cum[name] += number
    return cum.most_common(n)


def pstats_tops(path: Path, n: int = 25) -> dict[str, list[dict[str, object]]]:
    """cProfile's top ``n`` by own time and by cumulative time, as rows."""
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in entries.items():
        short = re.sub(r"^.*/site-packages/", "", file)
        short = re.sub(r"^.*/wt-perf/", "", short)
        rows.append(
            {
                "function": f"{func} ({short}:{line})" if file != "~" else func,
                "calls": ncalls,
                "own_s": tottime,
                "cum_s": cumtime,
                "category": categorize_file(file) or "other",
            }
        )
    by_own = sorted(rows, key=lambda r: -float(r["own_s"]))[:n]  # type: ignore[arg-type]
    by_cum = sorted(rows, key=lambda r: -float(r["cum_s"]))[:n]  # type: ignore[arg-type]
    return {"own": by_own, "cumulative": by_cum}
