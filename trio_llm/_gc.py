"""The garbage collector's pace for a process that holds thousands of requests in flight.

Every request in flight keeps a few hundred container objects alive for its whole latency
(its task, coroutine frames, connection, parser state, buffers), and the cyclic collector,
triggered every 700 allocations by default, walks the young ones each time and promotes them
to be walked again. At 10,000 in flight that was a third of the client's CPU (benchmarks/
concurrency.py, ``gc_s``: 7.7 of 21.5 s); collecting every ~50,000 allocations instead cut it
to ~2 s. A process-wide setting, so the library never touches it: the command line (an
application) does, for the run's duration.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["collect_less_often", "young_threshold"]

#: Allocations between young collections per request in flight, and the bounds.
_PER_REQUEST = 10
_CEILING = 50_000


def young_threshold(concurrency: int, current: int) -> int:
    """The first-generation threshold for ``concurrency`` in flight: never below ``current``."""
    return max(current, min(_CEILING, _PER_REQUEST * concurrency))


@contextlib.contextmanager
def collect_less_often(concurrency: int) -> Iterator[None]:
    """Raise the collector's first threshold for ``concurrency`` requests in flight; restore
    the thresholds on the way out."""
    before = gc.get_threshold()
    gc.set_threshold(young_threshold(concurrency, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
