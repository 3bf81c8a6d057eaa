"""The run summary: a consumer of the event stream that counts what happened.

It is a structlog processor (``summary(None, "info", event_dict)``), fed by the engine like any
other consumer; the CLI's progress display and final table read it, never the engine's
internals.

A collector that sees every ``Result`` (``run_file``) also hands them to ``record``: then the
outcome counts come from the results, so the table agrees with the collector's own count even
for items a stop left unsent (they get a result but no ``request.failed`` event). It also
tells ``set_total`` and ``count_line`` about input lines that never reach the engine (already
answered, invalid, duplicate), so a file run's bar and ETA cover the whole file.

A retry is a send of an item after its first (``request.sent`` with ``attempt`` > 1), so a
failed attempt that is not tried again (``--max-attempts 1``) is no retry.

Streamed answers carry their time to first token (``ttft_s`` on ``request.succeeded``): the
summary keeps a uniform sample of them (``TTFT_SAMPLE`` at most, so memory stays flat over
millions of items) for the p50 / p95 it shows.
"""

from __future__ import annotations

import collections
import math
import random
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, final

import attrs

from . import _events as ev

if TYPE_CHECKING:
    from ._models import Result

__all__ = ["RunSummary", "SummarySnapshot"]


#: An answer this slow is counted apart: a proxy held the request (LiteLLM holds one that is
#: over its limit for up to a minute) or the model is slow. Either way, an attempt timeout
#: below such times would pay for the request twice.
SLOW_ANSWER_S = 30.0
#: At most this many times to first token are kept (a reservoir sample) for the percentiles.
TTFT_SAMPLE = 10_000


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
    #: The latest long wait for a key: (key_id, seconds, estimated tokens), if one is on.
    waiting: tuple[str, float, float] | None = None
    #: The first message of each kind of failure, to say why without reading OUTPUT.
    failure_examples: dict[str, str] = attrs.field(factory=dict)
    slow: int = 0  # answers that took SLOW_ANSWER_S or more (a proxy holding them, a slow model)
    skipped: int = 0
    invalid: int = 0
    duplicates: int = 0
    kept_failed: int = 0
    # Streaming (issue 11): how many answers were streamed, and their times to first token.
    streamed: int = 0
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    cached: int = 0  # answered from the response cache (nothing sent)

    @property
    def cost_text(self) -> str:
        """The cost so far, or ``n/a`` when the model's price is unknown."""
        return f"${self.cost_usd:.4f}" if self.priced or not self.succeeded else "n/a"

    @property
    def finished(self) -> int:
        """Items with a result from this run."""
        return self.succeeded + self.failed

    @property
    def done(self) -> int:
        """Items dealt with: a result, or already answered, invalid, a duplicate."""
        return self.finished + self.skipped + self.invalid + self.duplicates + self.kept_failed

    @property
    def fraction(self) -> float | None:
        """``done / total``, if the total is known."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    @property
    def requests_per_s(self) -> float:
        """Items finished by this run per second of wall time."""
        return self.finished / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Tokens (prompt + completion) per second of wall time."""
        tokens = self.prompt_tokens + self.completion_tokens
        return tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current pace, if the total is known."""
        if self.total is None or self.finished == 0:
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
        self._cached = 0
        self._slow = 0
        self._examples: dict[str, str] = {}
        self._waiting: tuple[str, float, float, float] | None = None  # ..., until (monotonic)
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
        self._lines: collections.Counter[str] = collections.Counter()
        self._recorded: collections.Counter[str] | None = None
        self._streamed = 0
        self._ttft: list[float] = []
        self._ttft_random = random.Random(0)  # the sample's choice, not anything secret

    def set_total(self, total: int) -> None:
        """The number of items the run will deal with (a file run counts its lines first)."""
        self.total = total

    def count_line(self, outcome: str) -> None:
        """An input line dealt with without the engine: ``skipped`` (already answered),
        ``kept_failed``, ``invalid`` or ``duplicates``."""
        self._lines[outcome] += 1

    def record(self, result: Result) -> None:
        """A ``Result`` as the collector received it; outcome counts come from these."""
        if self._recorded is None:
            self._recorded = collections.Counter()
        if result.ok:
            self._recorded[""] += 1
        else:
            kind = "unknown" if result.error is None else str(result.error.kind.value)
            self._recorded[kind] += 1

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        """Take one event (the structlog processor signature)."""
        name = event_dict["event"]
        if name == ev.REQUEST_SENT:
            self._sent += 1
            if (event_dict.get("attempt") or 1) > 1:
                self._retries += 1
            if self._started is None:
                self._started = time.monotonic()
        elif name == ev.REQUEST_SUCCEEDED:
            self._succeeded += 1
            if (event_dict.get("latency_s") or 0.0) >= SLOW_ANSWER_S:
                self._slow += 1
            self._prompt_tokens += event_dict.get("prompt_tokens") or 0
            self._completion_tokens += event_dict.get("completion_tokens") or 0
            ttft = event_dict.get("ttft_s")
            if ttft is not None:
                self._sample_ttft(float(ttft))
            cost = event_dict.get("cost_usd")
            if cost is not None:
                self._cost += cost
                self._priced = True
        elif name == ev.REQUEST_CACHED:
            self._succeeded += 1
            self._cached += 1
        elif name == ev.REQUEST_RETRYING:
            if event_dict.get("status") == 429:
                self._rate_limited += 1
        elif name == ev.REQUEST_FAILED:
            kind = event_dict.get("kind", "unknown")
            self._failed[kind] += 1
            self._examples.setdefault(kind, str(event_dict.get("message") or ""))
            # A failure not sent repeats an answer already reported (the key's 429 it gave up
            # waiting out): one response, counted once.
            if event_dict.get("status") == 429 and event_dict.get("sent"):
                self._rate_limited += 1
        elif name == ev.REQUEST_WAITING:
            wait = float(event_dict.get("wait_s") or 0.0)
            self._waiting = (
                str(event_dict.get("key_id")),
                wait,
                float(event_dict.get("est_tokens") or 0.0),
                time.monotonic() + wait,
            )
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

    def _sample_ttft(self, ttft: float) -> None:
        # Reservoir sampling (Vitter's algorithm R): each answer equally likely to be kept.
        self._streamed += 1
        if len(self._ttft) < TTFT_SAMPLE:
            self._ttft.append(ttft)
            return
        slot = self._ttft_random.randrange(self._streamed)
        if slot < TTFT_SAMPLE:
            self._ttft[slot] = ttft

    def _waiting_now(self) -> tuple[str, float, float] | None:
        if self._waiting is None:
            return None
        key_id, _, tokens, until = self._waiting
        left = until - time.monotonic()
        return None if left <= 0 else (key_id, left, tokens)

    def snapshot(self) -> SummarySnapshot:
        """The counts so far."""
        end = self._finished if self._finished is not None else time.monotonic()
        wall = 0.0 if self._started is None else end - self._started
        succeeded, failed = self._succeeded, self._failed
        if self._recorded is not None:
            succeeded = self._recorded[""]
            failed = collections.Counter({k: v for k, v in self._recorded.items() if k})
        ttft = sorted(self._ttft)
        return SummarySnapshot(
            streamed=self._streamed,
            ttft_p50_s=_quantile(ttft, 0.50),
            ttft_p95_s=_quantile(ttft, 0.95),
            total=self.total,
            succeeded=succeeded,
            failed=sum(failed.values()),
            failed_by_kind=dict(failed),
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
            slow=self._slow,
            failure_examples=dict(self._examples),
            waiting=self._waiting_now(),
            skipped=self._lines["skipped"],
            invalid=self._lines["invalid"],
            duplicates=self._lines["duplicates"],
            kept_failed=self._lines["kept_failed"],
            cached=self._cached,
        )


def _quantile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values (nearest rank), ``None`` for none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
