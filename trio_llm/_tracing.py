"""OpenTelemetry spans: one per item, its attempts and retries as span events.

``OtelConsumer`` is a consumer of the event stream like the progress display: a span opens at
an item's first send (``request.sent``), each attempt and each retry is an event on it, and it
ends with the item's Result (``request.succeeded`` / ``request.failed``), with the GenAI
attributes (``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``...) and
an error status for a failure. The span's parent is the caller's current span: the worker
tasks of a run inherit the caller's context, so a request handler's span holds the calls it
made.

It is on by itself when the application has configured OpenTelemetry: an engine whose run
starts while a real tracer provider is set globally (``opentelemetry.trace.
set_tracer_provider(TracerProvider(...))``, the SDK's) subscribes one. Otherwise nothing is
imported and nothing is done per event. Give ``OtelConsumer(tracer_provider)`` to
``Engine(consumers=[...])`` for a provider that is not the global one.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, final

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from . import _events as ev
from ._version import __version__

__all__ = ["OtelConsumer", "configured_tracer_provider"]


def configured_tracer_provider() -> TracerProvider | None:
    """The application's global tracer provider, if it set a real one (not the API's no-op or
    proxy default); ``None`` without opentelemetry imported at all."""
    module = sys.modules.get("opentelemetry.trace")
    if module is None:
        return None
    provider: TracerProvider = module.get_tracer_provider()
    if isinstance(provider, (module.ProxyTracerProvider, module.NoOpTracerProvider)):
        return None
    return provider


@final
class OtelConsumer:
    """Turns each item's events into one OpenTelemetry span (see ``trio_llm._tracing``).

    Args:
        tracer_provider: where spans go; the global one unless given.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("trio_llm", __version__, tracer_provider=tracer_provider)
        self._spans: dict[tuple[Any, Any], Span] = {}
        self._handlers = {
            ev.REQUEST_SENT: self._sent,
            ev.REQUEST_RETRYING: self._retrying,
            ev.REQUEST_REROUTED: self._rerouted,
            ev.REQUEST_SUCCEEDED: self._succeeded,
            ev.REQUEST_FAILED: self._failed,
        }

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Take one event (the structlog processor signature); pass it on unchanged."""
        handler = self._handlers.get(event_dict["event"])
        if handler is not None:
            handler(event_dict)
        return event_dict

    def _span(self, event: Mapping[str, Any]) -> Span:
        key = (event.get("run_id"), event.get("index"))
        span = self._spans.get(key)
        if span is None:
            model = event.get("model") or ""
            span = self._tracer.start_span(
                f"chat {model}".strip(),
                kind=SpanKind.CLIENT,
                attributes=_attributes(
                    {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.system": event.get("provider"),
                        "gen_ai.request.model": model or None,
                        "trio_llm.run_id": event.get("run_id"),
                        "trio_llm.index": event.get("index"),
                        "trio_llm.id": event.get("id"),
                    }
                ),
            )
            self._spans[key] = span
        return span

    def _end(self, event: Mapping[str, Any]) -> Span:
        span = self._span(event)
        del self._spans[(event.get("run_id"), event.get("index"))]
        return span

    def _sent(self, event: Mapping[str, Any]) -> None:
        self._span(event).add_event(
            "attempt",
            _attributes(
                {
                    "attempt": event.get("attempt"),
                    "key_id": event.get("key_id"),
                    "queued_s": event.get("queued_s"),
                    "est_tokens": event.get("est_tokens"),
                }
            ),
        )

    def _retrying(self, event: Mapping[str, Any]) -> None:
        self._span(event).add_event(
            "retry",
            _attributes(
                {
                    "attempt": event.get("attempt"),
                    "kind": event.get("kind"),
                    "status": event.get("status"),
                    "wait_s": event.get("wait_s"),
                }
            ),
        )

    def _rerouted(self, event: Mapping[str, Any]) -> None:
        self._span(event).add_event(
            "rerouted",
            _attributes(
                {"route": event.get("route"), "to": event.get("to"), "kind": event.get("kind")}
            ),
        )

    def _succeeded(self, event: Mapping[str, Any]) -> None:
        span = self._end(event)
        span.set_attributes(
            _attributes(
                {
                    "gen_ai.response.model": event.get("model"),
                    "gen_ai.usage.input_tokens": event.get("prompt_tokens"),
                    "gen_ai.usage.output_tokens": event.get("completion_tokens"),
                    "trio_llm.attempts": event.get("attempt"),
                    "trio_llm.key_id": event.get("key_id"),
                    "trio_llm.cost_usd": event.get("cost_usd"),
                    "trio_llm.ttft_s": event.get("ttft_s"),
                }
            )
        )
        span.end()

    def _failed(self, event: Mapping[str, Any]) -> None:
        span = self._end(event)
        kind = str(event.get("kind") or "unknown")
        span.set_attributes(
            _attributes(
                {
                    "error.type": kind,
                    "http.response.status_code": event.get("status"),
                    "trio_llm.attempts": event.get("attempts"),
                }
            )
        )
        span.set_status(Status(StatusCode.ERROR, f"{kind}: {event.get('message') or ''}"))
        span.end()


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry takes no ``None`` attribute values: leave those out."""
    return {name: value for name, value in values.items() if value is not None}
