"""OpenTelemetry spans: one per item, attempts and retries as events; on only when configured."""

from __future__ import annotations

import httpx
import pytest
import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import trio_llm
from trio_llm._tracing import OtelConsumer, configured_tracer_provider


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _engine(**kwargs: object) -> trio_llm.Engine:
    """Prompt 'flaky' fails once with a 500, 'bad' for good with a 400; the rest answer."""
    seen: set[str] = set()

    async def handler(request: httpx.Request) -> httpx.Response:
        body = request.read().decode()
        if "bad" in body:
            return httpx.Response(400, json={"error": {"message": "no", "type": "invalid"}})
        if "flaky" in body and "flaky" not in seen:
            seen.add("flaky")
            return httpx.Response(500, json={"error": {"message": "oops"}})
        return httpx.Response(
            200,
            json={
                "choices": [{"message": {"content": "4"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            },
        )

    return trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://test/v1", model="gpt-4o-mini"),
        keys=["sk-tracing-test-key-1234"],
        transport=httpx.MockTransport(handler),
        retry=trio_llm.RetryPolicy(wait_initial=0.1, wait_jitter=0.0),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_one_span_per_item_with_attempts_as_events(autojump_clock: trio.abc.Clock) -> None:
    """Each item is one CLIENT span named after the model, its attempts and retries are span
    events, usage and attempts are attributes, and a failure has an error status."""
    provider, exporter = _provider()
    engine = _engine(consumers=[OtelConsumer(provider)])
    results = await engine.map(["2+2", "flaky 2+2", "bad"])
    assert [r.ok for r in results] == [True, True, False]
    spans = {span.attributes["trio_llm.index"]: span for span in exporter.get_finished_spans()}
    assert sorted(spans) == [0, 1, 2]
    ok, flaky, bad = spans[0], spans[1], spans[2]
    assert ok.name == "chat gpt-4o-mini"
    assert ok.kind is trace.SpanKind.CLIENT
    assert ok.attributes["gen_ai.system"] == "openai"
    assert ok.attributes["gen_ai.usage.input_tokens"] == 5
    assert ok.attributes["gen_ai.usage.output_tokens"] == 1
    assert ok.attributes["trio_llm.key_id"] == "sk-…1234"
    assert [e.name for e in ok.events] == ["attempt"]
    assert [e.name for e in flaky.events] == ["attempt", "retry", "attempt"]
    assert flaky.events[1].attributes["kind"] == "server_error"
    assert flaky.attributes["trio_llm.attempts"] == 2
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.attributes["error.type"] == "bad_request"
    assert ok.status.status_code is StatusCode.UNSET
    assert "sk-tracing-test-key-1234" not in repr([s.to_json() for s in spans.values()])


async def test_spans_are_on_by_themselves_once_a_provider_is_set(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No provider configured: no consumer; a global SDK provider: spans, with no consumer
    given, and only one consumer however many runs follow."""
    assert configured_tracer_provider() is None  # the API's default is a proxy
    engine = _engine()
    await engine.map(["2+2"])
    assert engine.events.consumers == ()
    provider, exporter = _provider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    await engine.map(["2+2"])
    await engine.map(["2+2"])
    assert len(engine.events.consumers) == 1
    assert len(exporter.get_finished_spans()) == 2


async def test_a_given_consumer_is_not_doubled(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OtelConsumer passed in keeps the engine from adding its own: one span per item."""
    provider, exporter = _provider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    engine = _engine(consumers=[OtelConsumer(provider)])
    await engine.map(["2+2"])
    assert len(exporter.get_finished_spans()) == 1
