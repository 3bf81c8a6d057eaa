"""``MockStats``: what the mock server counted, as a frozen snapshot (and ``GET /stats``)."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Mapping
from typing import Any, cast

import attrs

from .._secrets import fingerprint

__all__ = ["MockStats", "StatsCounter", "key_fingerprint"]


def key_fingerprint(key: str | None) -> str:
    """Return a key's fingerprint for stats and logs, never the key.

    A key of 12 characters or more shows its last 4 (``sk-…a1b2``); the tail of a shorter key
    would be most of it, so it shows a hash instead (``key#3f2a9c``).
    """
    return "(none)" if not key else fingerprint(key)


@attrs.frozen(kw_only=True)
class MockStats:
    """A snapshot of the mock server's counters since start or the last reset.

    Attributes:
        total_requests: chat completion requests received (any outcome).
        by_status: responses by HTTP status; a ``hang`` fault sends no status and isn't counted
            here, a ``drop`` counts as the 200 it started.
        by_key: requests by key fingerprint (``sk-…a1b2``), never by key.
        busiest_second: per key fingerprint, the most requests that arrived within any one
            second (a sliding window): what a combined rate across many clients came to.
        faults: injected faults by kind.
        successes: complete, well-formed 200 responses.
        duplicate_successes: successes for a prompt that already had one: with distinct prompts,
            0 proves nothing was paid for twice.
        tokens_charged: tokens charged to the keys' budgets, net of refunds.
        in_flight: chat completion requests being handled now.
        max_in_flight: the most handled at once.
        held: over-limit requests held back (``hold_s``) rather than refused at once.
        batch_creates: Batch API batches created (OpenAI and Anthropic).
        batch_lines: requests in them.
        files_uploaded: files uploaded to ``/v1/files``.
        embedded_inputs: inputs answered with a vector by ``/v1/embeddings``.
        by_model: requests by the model they named.
    """

    total_requests: int = 0
    by_status: Mapping[int, int] = attrs.field(factory=dict)
    by_key: Mapping[str, int] = attrs.field(factory=dict)
    busiest_second: Mapping[str, int] = attrs.field(factory=dict)
    faults: Mapping[str, int] = attrs.field(factory=dict)
    successes: int = 0
    duplicate_successes: int = 0
    tokens_charged: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    held: int = 0
    batch_creates: int = 0
    batch_lines: int = 0
    files_uploaded: int = 0
    embedded_inputs: int = 0
    by_model: Mapping[str, int] = attrs.field(factory=dict)

    def to_json(self) -> str:
        """Return the JSON served by ``GET /stats`` (status codes become string keys)."""
        data = attrs.asdict(self)
        data["by_status"] = {str(k): n for k, n in sorted(self.by_status.items())}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> MockStats:
        """Parse the JSON served by ``GET /stats``."""
        data = cast("dict[str, Any]", json.loads(text))
        data["by_status"] = {int(k): n for k, n in data["by_status"].items()}
        return cls(**data)


class StatsCounter:
    """The server's live, mutable counters (single-threaded: one event loop touches them)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zero the counters; requests in flight stay counted as in flight."""
        self.total_requests = 0
        self.by_status: dict[int, int] = {}
        self.by_key: dict[str, int] = {}
        self.busiest_second: dict[str, int] = {}
        self._last_second: dict[str, collections.deque[float]] = {}
        self.faults: dict[str, int] = {}
        self.successes = 0
        self.duplicate_successes = 0
        self.tokens_charged = 0
        self.max_in_flight = self.in_flight
        self.held = 0
        self.batch_creates = 0
        self.batch_lines = 0
        self.files_uploaded = 0
        self.embedded_inputs = 0
        self.by_model: dict[str, int] = {}
        # 8 bytes of each succeeded prompt's sha256: a million prompts cost ~100 MB, not ~300.
        self.succeeded_prompts: set[int] = set()

    def arrived(self, fingerprint: str) -> None:
        """Count a request of the key ``fingerprint``, now."""
        self.by_key[fingerprint] = self.by_key.get(fingerprint, 0) + 1
        now = time.monotonic()
        window = self._last_second.setdefault(fingerprint, collections.deque())
        window.append(now)
        while window[0] <= now - 1.0:
            window.popleft()
        if len(window) > self.busiest_second.get(fingerprint, 0):
            self.busiest_second[fingerprint] = len(window)

    def snapshot(self) -> MockStats:
        """Return a frozen copy."""
        return MockStats(
            total_requests=self.total_requests,
            by_status=dict(self.by_status),
            by_key=dict(self.by_key),
            busiest_second=dict(self.busiest_second),
            faults=dict(self.faults),
            successes=self.successes,
            duplicate_successes=self.duplicate_successes,
            tokens_charged=self.tokens_charged,
            in_flight=self.in_flight,
            max_in_flight=self.max_in_flight,
            held=self.held,
            batch_creates=self.batch_creates,
            batch_lines=self.batch_lines,
            files_uploaded=self.files_uploaded,
            embedded_inputs=self.embedded_inputs,
            by_model=dict(self.by_model),
        )
