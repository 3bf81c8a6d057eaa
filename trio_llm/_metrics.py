"""Prometheus metrics: a consumer of the event stream (``Engine(consumers=[...])``).

``PrometheusConsumer`` turns the events the progress display and the run summary read into
Prometheus series; ``serve_metrics`` serves them on ``/metrics`` with prometheus-client's own
HTTP server (a daemon thread), which is what ``trio-llm run --metrics-port`` does. An engine
without the consumer pays nothing for it: events go only to the consumers it was given.

=================================================  ==========================================
series (labels)                                    from
=================================================  ==========================================
``trio_llm_requests_total`` (provider, model,      one per ``Result``: ``status`` is ``ok``,
status)                                            ``cached`` or the failure's kind
                                                   (``request.succeeded`` / ``.cached`` /
                                                   ``request.failed``)
``trio_llm_attempts_total`` (provider, model)      every request sent, retries included
``trio_llm_retries_total`` (provider, model,       every attempt retried, by why it failed
kind)
``trio_llm_rate_limited_total`` (provider, model)  429 responses, each counted once
``trio_llm_request_latency_seconds`` (provider,    first send to answer of each success
model)                                             (histogram; retries included)
``trio_llm_time_to_first_token_seconds``           ``ttft_s`` of a success, when the event
(provider, model)                                  carries it (streamed answers)
``trio_llm_queue_wait_seconds`` (provider, model)  each attempt's wait for a slot and a key
``trio_llm_tokens_total`` (provider, model, type)  ``type="input"`` (prompt) / ``"output"``
``trio_llm_cost_usd_total`` (provider, model)      the price of the answers (known models)
``trio_llm_in_flight``                             requests sent and not answered (every
                                                   second, ``keys.updated``)
``trio_llm_key_in_flight`` (provider, model,       per key, every second: in flight, what its
key_id), ``..._requests_remaining``,               buckets hold, the limits in force, the
``..._tokens_remaining``, ``..._limit_rpm``,       cooldown left after a 429
``..._limit_tpm``, ``..._cooling_seconds``
``trio_llm_key_state`` (provider, model, key_id,   1 for the key's state now, 0 for the
state)                                             others: ``ok``, ``cooling``, ``down`` (a
                                                   breaker), ``dropped``
=================================================  ==========================================

A key's ``..._remaining`` goes below 0 while requests waiting for it have reserved ahead (they
leave as the bucket refills). ``key_id`` is the key's fingerprint (``sk-…a1b2``), never the
key. An item that was never sent (a stop, an invalid input line) is counted with
``provider="none"`` and ``model="none"``.

Several consumers on one registry (several engines in one process) share the same series: the
counters add up, and ``trio_llm_in_flight`` is the sum of what each engine reported last. The
retry library the engine once used (stamina) registered a counter of its own; the engine no
longer uses it, so nothing here is counted twice.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, final

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import _events as ev

__all__ = ["KEY_STATES", "PrometheusConsumer", "serve_metrics"]

#: The states ``trio_llm_key_state`` takes (1 for the current one, 0 for the others).
KEY_STATES: Final = ("ok", "cooling", "down", "dropped")
#: The label value of an item never sent.
NONE: Final = "none"

#: Seconds: LLM answers take from a tenth of a second to minutes.
LATENCY_BUCKETS: Final = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
TTFT_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: A wait at the rate limit is short for most requests and long for a key that cools.
QUEUE_BUCKETS: Final = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

_MODEL = ("provider", "model")
_KEY = ("provider", "model", "key_id")


@final
class _Series:
    """Every series of one registry (shared by the consumers that report to it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = _MODEL) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = _KEY) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, _MODEL, registry=registry, buckets=buckets)

        self.requests = counter(
            "trio_llm_requests_total",
            "Items finished, one per Result: status is ok or the failure's kind.",
            (*_MODEL, "status"),
        )
        self.attempts = counter("trio_llm_attempts_total", "Requests sent, retries included.")
        self.retries = counter(
            "trio_llm_retries_total", "Attempts retried, by why they failed.", (*_MODEL, "kind")
        )
        self.rate_limited = counter("trio_llm_rate_limited_total", "429 responses.")
        self.latency = histogram(
            "trio_llm_request_latency_seconds",
            "Seconds from an item's first send to its answer (successes).",
            LATENCY_BUCKETS,
        )
        self.ttft = histogram(
            "trio_llm_time_to_first_token_seconds",
            "Seconds from sending to the first token of a streamed answer.",
            TTFT_BUCKETS,
        )
        self.queued = histogram(
            "trio_llm_queue_wait_seconds",
            "Seconds each attempt waited for a concurrency slot and its key's moment.",
            QUEUE_BUCKETS,
        )
        self.tokens = counter(
            "trio_llm_tokens_total",
            "Tokens the server reported: type=input (prompt) or output (completion).",
            (*_MODEL, "type"),
        )
        self.cost = counter("trio_llm_cost_usd_total", "USD the answers cost (known prices).")
        self.in_flight = Gauge(
            "trio_llm_in_flight", "Requests sent and not answered yet.", registry=registry
        )
        self.key_in_flight = gauge("trio_llm_key_in_flight", "Requests in flight on the key.")
        self.key_requests = gauge(
            "trio_llm_key_requests_remaining", "Requests the key's bucket holds now."
        )
        self.key_tokens = gauge("trio_llm_key_tokens_remaining", "Tokens the key's bucket holds.")
        self.key_rpm = gauge("trio_llm_key_limit_rpm", "Requests/min in force for the key.")
        self.key_tpm = gauge("trio_llm_key_limit_tpm", "Tokens/min in force for the key.")
        self.key_cooling = gauge(
            "trio_llm_key_cooling_seconds", "Seconds until the key may send again after a 429."
        )
        self.key_state = gauge(
            "trio_llm_key_state",
            "1 for the key's state now (ok, cooling, down, dropped), 0 for the others.",
            (*_KEY, "state"),
        )
        self._lock = threading.Lock()
        self._in_flight_by: dict[int, float] = {}

    def report_in_flight(self, reporter: int, in_flight: float) -> None:
        """One consumer's engine has ``in_flight`` requests out: the gauge is the sum."""
        with self._lock:
            self._in_flight_by[reporter] = in_flight
            self.in_flight.set(sum(self._in_flight_by.values()))


_registries: weakref.WeakKeyDictionary[CollectorRegistry, _Series] = weakref.WeakKeyDictionary()
_registries_lock = threading.Lock()
_reporters = itertools.count(1)


def _series_of(registry: CollectorRegistry) -> _Series:
    with _registries_lock:
        series = _registries.get(registry)
        if series is None:
            series = _registries[registry] = _Series(registry)
        return series


@final
class _ModelSeries:
    """The labelled children of one (provider, model): looked up once, not per event."""

    __slots__ = (
        "attempts",
        "cost",
        "input_tokens",
        "latency",
        "output_tokens",
        "queued",
        "rate_limited",
        "ttft",
    )

    def __init__(self, series: _Series, provider: str, model: str) -> None:
        self.attempts = series.attempts.labels(provider, model)
        self.rate_limited = series.rate_limited.labels(provider, model)
        self.latency = series.latency.labels(provider, model)
        self.ttft = series.ttft.labels(provider, model)
        self.queued = series.queued.labels(provider, model)
        self.input_tokens = series.tokens.labels(provider, model, "input")
        self.output_tokens = series.tokens.labels(provider, model, "output")
        self.cost = series.cost.labels(provider, model)


@final
class PrometheusConsumer:
    """Counts the event stream into Prometheus series (the table in ``trio_llm._metrics``).

    Give it to an engine, ``Engine(consumers=[PrometheusConsumer()])``, and serve the registry
    (``trio_llm.serve_metrics(9100)``, or the application's own ``/metrics``).

    Args:
        registry: where the series live: prometheus-client's default registry unless given
            (an application's ``/metrics`` shows them then). Consumers on one registry share
            its series.

    Each event costs a dictionary lookup and a few increments; the labelled series of each
    provider and model are looked up once.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = prometheus_client.REGISTRY if registry is None else registry
        self._series = _series_of(self.registry)
        self._reporter = next(_reporters)
        self._models: dict[tuple[str, str], _ModelSeries] = {}
        self._handlers = {
            ev.REQUEST_SENT: self._sent,
            ev.REQUEST_SUCCEEDED: self._succeeded,
            ev.REQUEST_RETRYING: self._retrying,
            ev.REQUEST_FAILED: self._failed,
            ev.REQUEST_CACHED: self._cached,
            ev.KEYS_UPDATED: self._keys,
        }

    def __repr__(self) -> str:
        return f"PrometheusConsumer(registry={self.registry!r})"

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Take one event (the structlog processor signature); pass it on unchanged."""
        handler = self._handlers.get(event_dict["event"])
        if handler is not None:
            handler(event_dict)
        return event_dict

    def _model(self, event: Mapping[str, Any]) -> _ModelSeries:
        key = (event.get("provider") or NONE, event.get("model") or NONE)
        series = self._models.get(key)
        if series is None:
            series = self._models[key] = _ModelSeries(self._series, *key)
        return series

    def _sent(self, event: Mapping[str, Any]) -> None:
        series = self._model(event)
        series.attempts.inc()
        queued = event.get("queued_s")
        if queued is not None:
            series.queued.observe(queued)

    def _cached(self, event: Mapping[str, Any]) -> None:
        # A Result answered from the response cache: nothing was sent, nothing is timed.
        self._series.requests.labels(
            event.get("provider") or NONE, event.get("model") or NONE, "cached"
        ).inc()

    def _succeeded(self, event: Mapping[str, Any]) -> None:
        series = self._model(event)
        self._series.requests.labels(
            event.get("provider") or NONE, event.get("model") or NONE, "ok"
        ).inc()
        latency = event.get("latency_s")
        if latency is not None:
            series.latency.observe(latency)
        ttft = event.get("ttft_s")
        if ttft is not None:
            series.ttft.observe(ttft)
        series.input_tokens.inc(event.get("prompt_tokens") or 0)
        series.output_tokens.inc(event.get("completion_tokens") or 0)
        cost = event.get("cost_usd")
        if cost:
            series.cost.inc(cost)

    def _retrying(self, event: Mapping[str, Any]) -> None:
        provider, model = event.get("provider") or NONE, event.get("model") or NONE
        self._series.retries.labels(provider, model, event.get("kind") or "unknown").inc()
        if event.get("status") == 429:
            self._model(event).rate_limited.inc()

    def _failed(self, event: Mapping[str, Any]) -> None:
        provider, model = event.get("provider") or NONE, event.get("model") or NONE
        self._series.requests.labels(provider, model, event.get("kind") or "unknown").inc()
        # A failure not sent repeats an answer a retry event already counted.
        if event.get("status") == 429 and event.get("sent"):
            self._model(event).rate_limited.inc()

    def _keys(self, event: Mapping[str, Any]) -> None:
        series = self._series
        series.report_in_flight(self._reporter, event.get("in_flight") or 0)
        for key in event.get("keys", ()):
            labels = (key.get("provider") or NONE, key.get("model") or NONE, key["key_id"])
            series.key_in_flight.labels(*labels).set(key.get("in_flight") or 0)
            for gauge, field in (
                (series.key_requests, "requests_left"),
                (series.key_tokens, "tokens_left"),
                (series.key_rpm, "rpm"),
                (series.key_tpm, "tpm"),
            ):
                value = key.get(field)
                # Unknown (no limit learned yet): no sample rather than a made-up number.
                if value is not None:
                    gauge.labels(*labels).set(value)
            series.key_cooling.labels(*labels).set(key.get("cooling_s") or 0.0)
            state = _state(key)
            for name in KEY_STATES:
                series.key_state.labels(*labels, name).set(1.0 if name == state else 0.0)


def _state(key: Mapping[str, Any]) -> str:
    if key.get("dropped"):
        return "dropped"
    if key.get("down"):
        return "down"
    if (key.get("cooling_s") or 0.0) > 0:
        return "cooling"
    return "ok"


def serve_metrics(
    port: int, host: str = "", *, registry: CollectorRegistry | None = None
) -> tuple[str, int]:
    """Serve ``registry`` (the default one) on ``http://HOST:PORT/metrics`` from a daemon thread.

    Args:
        port: the port; 0 picks a free one.
        host: the address to listen on; ``""`` listens on every interface (as exporters do).

    Returns:
        The address and port it listens on (the real port when asked for 0).

    Raises:
        OSError: the port is in use, or the address is not this host's.
    """
    server, _thread = prometheus_client.start_http_server(
        port,
        host or "0.0.0.0",  # noqa: S104 - a scraper elsewhere must reach it, as any exporter
        registry=prometheus_client.REGISTRY if registry is None else registry,
    )
    address = server.server_address
    return str(address[0]), int(address[1])
