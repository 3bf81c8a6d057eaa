"""The event stream: every step of a run is one structlog event.

Events are structlog event dicts (``{"event": "request.succeeded", "index": 3, ...}``). The
engine hands each one to its *consumers* — the progress display, the run summary, metrics, a
JSON log file — which are plain structlog processors ``(logger, method_name, event_dict)``, so
any structlog processor (``structlog.processors.JSONRenderer`` included) can be one.

When the application has configured structlog (``structlog.is_configured()``), every event is
also logged through ``structlog.get_logger("trio_llm")`` at the level listed below, so it lands
in the application's own logs. An application that never configured structlog gets no output
from the library (structlog's default would print every request).

The catalogue (name: when; fields):

=====================  ======================================================================
``run.started``        a map/stream/run_file begins; ``run_id``, ``total`` (or None), ``keys``
``run.finished``       it ended; ``run_id``, ``succeeded``, ``failed``, ``wall_s``, ``stopped``
``request.sent``       an attempt leaves; ``run_id``, ``index``, ``id``, ``provider``,
                       ``model``, ``attempt``, ``key_id``, ``est_tokens``, ``queued_s`` (its
                       wait for a slot and a key), ``priority`` (``batch`` or ``interactive``)
``request.succeeded``  a completion arrived; ``run_id``, ``index``, ``id``, ``provider``,
                       ``model``, ``attempt``, ``key_id``, ``latency_s``, ``prompt_tokens``,
                       ``completion_tokens``, ``cost_usd``, ``ttft_s`` and
                       ``output_tokens_per_s`` (streamed answers; else None)
``request.retrying``   an attempt failed and will be retried; ``run_id``, ``index``, ``id``,
                       ``provider``, ``model``, ``attempt``, ``kind``, ``status``, ``wait_s``,
                       ``key_id``
``request.cached``     an item was answered from the response cache (nothing sent);
                       ``run_id``, ``index``, ``id``, ``route``, ``model``
``request.failed``     the item failed for good; ``run_id``, ``index``, ``id``, ``provider``
                       and ``model`` (None if never sent), ``attempts``, ``kind``, ``status``,
                       ``sent`` (whether ``status`` answers its last attempt, rather than
                       repeating one already reported), ``message``
``request.rerouted``   an item moved down a fallback chain; ``run_id``, ``index``, ``id``,
                       ``route`` (the one it left), ``to``, ``kind`` (why)
``request.waiting``    a request must wait at least 5 s for its key (limits, a cooldown, a
                       request larger than the bucket); ``key_id``, ``wait_s``, ``est_tokens``
``key.cooling``        a key waits out a 429; ``key_id``, ``cooling_s``
``key.dropped``        a key is out for the run; ``key_id``, ``reason``
``limits.updated``     a key's limits (for one model) were learned or lowered; ``key_id``,
                       ``model``, ``rpm``, ``tpm``, ``reason``
``breaker.opened``     an endpoint kept failing: nothing is sent there for a while;
                       ``scope`` (``key`` or ``provider``), ``key_id``, ``open_s``, ``reason``
``breaker.closed``     a probe succeeded: the endpoint is used again; ``scope``, ``key_id``
``batch.submitted``    a Batch API batch was created (``--batch-api``); ``batch_id``, ``name``
                       (its file's), ``requests``
``batch.finished``     a batch ended and its lines are merged into OUTPUT; ``batch_id``,
                       ``succeeded``, ``failed``
``keys.updated``       every second of a run, and at its end: ``keys``, one dict per key
                       (``key_id``, ``in_flight``, ``rpm``, ``tpm``, ``requests_left``,
                       ``tokens_left``, ``cooling_s``, ``dropped``, ``down``, ``down_s``,
                       ``provider``, ``model``) and ``in_flight`` (all)
=====================  ======================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, MutableMapping
from typing import Any, Final, final

import structlog

__all__ = [
    "BATCH_FINISHED",
    "BATCH_SUBMITTED",
    "BREAKER_CLOSED",
    "BREAKER_OPENED",
    "KEYS_UPDATED",
    "KEY_COOLING",
    "KEY_DROPPED",
    "LIMITS_UPDATED",
    "REQUEST_CACHED",
    "REQUEST_FAILED",
    "REQUEST_REROUTED",
    "REQUEST_RETRYING",
    "REQUEST_SENT",
    "REQUEST_SUCCEEDED",
    "REQUEST_WAITING",
    "RUN_FINISHED",
    "RUN_STARTED",
    "EventConsumer",
    "EventHub",
]

RUN_STARTED: Final = "run.started"
RUN_FINISHED: Final = "run.finished"
REQUEST_SENT: Final = "request.sent"
REQUEST_SUCCEEDED: Final = "request.succeeded"
REQUEST_RETRYING: Final = "request.retrying"
REQUEST_REROUTED: Final = "request.rerouted"
REQUEST_FAILED: Final = "request.failed"
REQUEST_CACHED: Final = "request.cached"
REQUEST_WAITING: Final = "request.waiting"
KEY_COOLING: Final = "key.cooling"
KEY_DROPPED: Final = "key.dropped"
LIMITS_UPDATED: Final = "limits.updated"
KEYS_UPDATED: Final = "keys.updated"
BREAKER_OPENED: Final = "breaker.opened"
BREAKER_CLOSED: Final = "breaker.closed"
BATCH_SUBMITTED: Final = "batch.submitted"
BATCH_FINISHED: Final = "batch.finished"

#: The structlog method (level) each event is forwarded at.
LEVELS: Final[dict[str, str]] = {
    RUN_STARTED: "info",
    RUN_FINISHED: "info",
    REQUEST_SENT: "debug",
    REQUEST_SUCCEEDED: "debug",
    REQUEST_RETRYING: "info",
    REQUEST_REROUTED: "info",
    REQUEST_FAILED: "warning",
    REQUEST_CACHED: "debug",
    REQUEST_WAITING: "info",
    KEY_COOLING: "info",
    KEY_DROPPED: "warning",
    LIMITS_UPDATED: "info",
    KEYS_UPDATED: "debug",
    BREAKER_OPENED: "warning",
    BREAKER_CLOSED: "info",
    BATCH_SUBMITTED: "info",
    BATCH_FINISHED: "info",
}

EventDict = MutableMapping[str, Any]
#: A structlog processor: receives every event; its return value is ignored.
EventConsumer = Callable[[Any, str, EventDict], Any]


@final
class EventHub:
    """Fans events out to consumers, and to the application's structlog setup if it has one.

    Emitting is one dict and one call per consumer: cheap enough for the per-request path.
    """

    __slots__ = ("_consumers", "_forward")

    def __init__(self, consumers: tuple[EventConsumer, ...] = ()) -> None:
        self._consumers: list[EventConsumer] = list(consumers)
        self._forward = structlog.get_logger("trio_llm")

    def subscribe(self, consumer: EventConsumer) -> None:
        """Add a consumer; it sees every later event."""
        self._consumers.append(consumer)

    def unsubscribe(self, consumer: EventConsumer) -> None:
        """Remove a consumer added with ``subscribe``."""
        self._consumers.remove(consumer)

    @property
    def consumers(self) -> tuple[EventConsumer, ...]:
        """The consumers now subscribed."""
        return tuple(self._consumers)

    @property
    def listening(self) -> bool:
        """Whether anyone receives events: hot paths skip building them when nobody does."""
        return bool(self._consumers) or structlog.is_configured()

    def emit(self, event: str, **fields: Any) -> None:
        """Send one event to every consumer (and to structlog when it is configured)."""
        method = LEVELS.get(event, "info")
        if self._consumers:
            event_dict: EventDict = {"event": event, **fields}
            for consumer in self._consumers:
                with contextlib.suppress(structlog.DropEvent):
                    consumer(None, method, event_dict)
        if structlog.is_configured():
            getattr(self._forward, method)(event, **fields)
