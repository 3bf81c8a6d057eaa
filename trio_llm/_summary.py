"""The run summary: a consumer of the event stream that counts what happened.

It is a structlog processor (``summary(None, "info", event_dict)``), fed by the engine like any
other consumer; the CLI's progress display and final table read it, never the engine's
internals.
"""

from __future__ import annotations

import collections
import time
from collections.abc import MutableMapping
from typing import Any, final

import attrs

from . import _events as ev

__all__ = ["RunSummary", "SummarySnapshot"]


@attrs.frozen(kw_only=True)
class SummarySnapshot:
    """What a run has done so far."""

    total: int | None
    succeeded: int
    failed: int
    failed_by_kind: dict[str, int]
    sent: int
    retries: int
    rate_limited: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    priced: bool  # False when no answer had a known price (the model is not in the table)
    in_flight: int
    wall_s: float
    keys: tuple[dict[str, Any], ...]
    dropped_keys: tuple[str, ...]
    stopped: str | None

    @property
    def cost_text(self) -> str:
        """The cost so far, or ``n/a`` when the model's price is unknown."""
        return f"${self.cost_usd:.4f}" if self.priced or not self.succeeded else "n/a"

    @property
    def done(self) -> int:
        """Items with a result."""
        return self.succeeded + self.failed

    @property
    def requests_per_s(self) -> float:
        """Completed items per second of wall time."""
        return self.done / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Tokens (prompt + completion) per second of wall time."""
        tokens = self.prompt_tokens + self.completion_tokens
        return tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current pace, if the total is known."""
        if self.total is None or self.done == 0:
            return None
        return max(0, self.total - self.done) / max(self.requests_per_s, 1e-9)


@final
class RunSummary:
    """Counts events into a ``SummarySnapshot``. Wall time is the process's monotonic clock,
    since a summary describes the real run (events carry trio-clock durations themselves)."""

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self._started: float | None = None
        self._finished: float | None = None
        self._succeeded = 0
        self._failed: collections.Counter[str] = collections.Counter()
        self._sent = 0
        self._retries = 0
        self._rate_limited = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._cost = 0.0
        self._priced = False
        self._in_flight = 0
        self._keys: tuple[dict[str, Any], ...] = ()
        self._dropped: list[str] = []
        self._stopped: str | None = None

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        """Take one event (the structlog processor signature)."""
        name = event_dict["event"]
        if name == ev.REQUEST_SENT:
            self._sent += 1
            if self._started is None:
                self._started = time.monotonic()
        elif name == ev.REQUEST_SUCCEEDED:
            self._succeeded += 1
            self._prompt_tokens += event_dict.get("prompt_tokens") or 0
            self._completion_tokens += event_dict.get("completion_tokens") or 0
            cost = event_dict.get("cost_usd")
            if cost is not None:
                self._cost += cost
                self._priced = True
        elif name == ev.REQUEST_RETRYING:
            self._retries += 1
            if event_dict.get("status") == 429:
                self._rate_limited += 1
        elif name == ev.REQUEST_FAILED:
            self._failed[event_dict.get("kind", "unknown")] += 1
            if event_dict.get("status") == 429:
                self._rate_limited += 1
        elif name == ev.KEYS_UPDATED:
            self._keys = tuple(event_dict.get("keys", ()))
            self._in_flight = event_dict.get("in_flight", 0)
        elif name == ev.KEY_DROPPED:
            self._dropped.append(f"{event_dict.get('key_id')}: {event_dict.get('reason')}")
        elif name == ev.RUN_STARTED:
            if self._started is None:
                self._started = time.monotonic()
            if self.total is None:
                self.total = event_dict.get("total")
        elif name == ev.RUN_FINISHED:
            self._finished = time.monotonic()
            self._stopped = event_dict.get("stopped")
        return event_dict

    def snapshot(self) -> SummarySnapshot:
        """The counts so far."""
        end = self._finished if self._finished is not None else time.monotonic()
        wall = 0.0 if self._started is None else end - self._started
        return SummarySnapshot(
            total=self.total,
            succeeded=self._succeeded,
            failed=sum(self._failed.values()),
            failed_by_kind=dict(self._failed),
            sent=self._sent,
            retries=self._retries,
            rate_limited=self._rate_limited,
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._completion_tokens,
            cost_usd=self._cost,
            priced=self._priced,
            in_flight=self._in_flight,
            wall_s=wall,
            keys=self._keys,
            dropped_keys=tuple(self._dropped),
            stopped=self._stopped,
        )
