"""Prometheus metrics: the event stream counted into series, checked against the Results.

The unit tests feed events to a consumer with a registry of its own; the end-to-end tests
scrape ``/metrics`` over HTTP during a run against the mock server (real sockets, real clock)
and compare the counters with the Results and with the server's own count.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import trio_llm
from trio_llm import _events as ev
from trio_llm._cli import main
from trio_llm._metrics import PrometheusConsumer, serve_metrics
from trio_llm.testing import MockServerConfig, MockServerProcess, serve_mock

FP = "sk-…aaaa"


def feed(consumer: PrometheusConsumer, name: str, **fields: Any) -> None:
    """Hand one event to the consumer the way the engine's EventHub does."""
    consumer(None, ev.LEVELS.get(name, "info"), {"event": name, **fields})


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist)."""
    return registry.get_sample_value(name, labels) or 0.0


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``GET /metrics``, parsed: (sample name, labels) -> value."""
    text = httpx.get(url, timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **want: str):
    """The sum of a sample's values over the series whose labels include ``want``."""
    return sum(v for (n, labels), v in samples.items() if n == name and set(want.items()) <= labels)


def test_results_are_counted_by_provider_model_and_status() -> None:
    """One count per Result: ok or the failure's kind; never-sent items as provider 'none'."""
    registry = CollectorRegistry()
    metrics = PrometheusConsumer(registry)
    where = {"provider": "openai", "model": "gpt-x"}
    feed(metrics, ev.REQUEST_SENT, **where, attempt=1, key_id=FP, queued_s=0.5)
    feed(
        metrics,
        ev.REQUEST_SUCCEEDED,
        **where,
        attempt=1,
        latency_s=1.5,
        prompt_tokens=10,
        completion_tokens=4,
        cost_usd=0.25,
    )
    feed(metrics, ev.REQUEST_FAILED, **where, attempts=1, kind="bad_request", status=400, sent=True)
    feed(metrics, ev.REQUEST_FAILED, provider=None, model=None, attempts=0, kind="deadline")
    requests = "trio_llm_requests_total"
    assert value(registry, requests, **where, status="ok") == 1
    assert value(registry, requests, **where, status="bad_request") == 1
    assert value(registry, requests, provider="none", model="none", status="deadline") == 1
    assert value(registry, "trio_llm_attempts_total", **where) == 1
    assert value(registry, "trio_llm_tokens_total", **where, type="input") == 10
    assert value(registry, "trio_llm_tokens_total", **where, type="output") == 4
    assert value(registry, "trio_llm_cost_usd_total", **where) == 0.25
    assert value(registry, "trio_llm_request_latency_seconds_sum", **where) == 1.5
    assert value(registry, "trio_llm_request_latency_seconds_bucket", **where, le="2.0") == 1
    assert value(registry, "trio_llm_request_latency_seconds_bucket", **where, le="1.0") == 0
    assert value(registry, "trio_llm_queue_wait_seconds_sum", **where) == 0.5


def test_time_to_first_token_is_observed_when_the_event_carries_it() -> None:
    """A success with ``ttft_s`` (a streamed answer) feeds the TTFT histogram; others don't."""
    registry = CollectorRegistry()
    metrics = PrometheusConsumer(registry)
    where = {"provider": "openai", "model": "gpt-x"}
    feed(metrics, ev.REQUEST_SUCCEEDED, **where, latency_s=2.0, ttft_s=0.3)
    feed(metrics, ev.REQUEST_SUCCEEDED, **where, latency_s=2.0)
    assert value(registry, "trio_llm_time_to_first_token_seconds_count", **where) == 1
    assert value(registry, "trio_llm_time_to_first_token_seconds_sum", **where) == 0.3


def test_each_429_is_counted_once() -> None:
    """A 429 retried counts once; a failure that repeats it (not sent) adds nothing; a 429 that
    spends the last attempt counts."""
    registry = CollectorRegistry()
    metrics = PrometheusConsumer(registry)
    where = {"provider": "openai", "model": "gpt-x"}
    feed(metrics, ev.REQUEST_RETRYING, **where, attempt=1, kind="rate_limited", status=429)
    feed(
        metrics, ev.REQUEST_FAILED, **where, attempts=1, kind="rate_limited", status=429, sent=False
    )
    feed(
        metrics, ev.REQUEST_FAILED, **where, attempts=8, kind="rate_limited", status=429, sent=True
    )
    feed(metrics, ev.REQUEST_RETRYING, **where, attempt=1, kind="server_error", status=500)
    assert value(registry, "trio_llm_rate_limited_total", **where) == 2
    assert value(registry, "trio_llm_retries_total", **where, kind="rate_limited") == 1
    assert value(registry, "trio_llm_retries_total", **where, kind="server_error") == 1


def test_key_gauges_carry_the_fingerprint_and_one_state() -> None:
    """Per-key gauges are labelled with the fingerprint; exactly one state is 1."""
    registry = CollectorRegistry()
    metrics = PrometheusConsumer(registry)
    base = {"provider": "openai", "model": "gpt-x", "in_flight": 2, "tpm": None}
    keys = [
        {**base, "key_id": FP, "rpm": 600.0, "requests_left": 7.5, "cooling_s": 3.0},
        {**base, "key_id": "sk-…bbbb", "rpm": 600.0, "dropped": "401 invalid key"},
        {**base, "key_id": "sk-…cccc", "rpm": None, "down": "endpoint"},
    ]
    feed(metrics, ev.KEYS_UPDATED, keys=keys, in_flight=4)
    labels = {"provider": "openai", "model": "gpt-x"}
    assert value(registry, "trio_llm_in_flight") == 4
    assert value(registry, "trio_llm_key_in_flight", **labels, key_id=FP) == 2
    assert value(registry, "trio_llm_key_requests_remaining", **labels, key_id=FP) == 7.5
    assert value(registry, "trio_llm_key_limit_rpm", **labels, key_id=FP) == 600
    assert value(registry, "trio_llm_key_cooling_seconds", **labels, key_id=FP) == 3
    # Unknown limits have no sample rather than a made-up number.
    assert registry.get_sample_value("trio_llm_key_limit_tpm", {**labels, "key_id": FP}) is None
    states = {
        key["key_id"]: [
            s
            for s in ("ok", "cooling", "down", "dropped")
            if value(registry, "trio_llm_key_state", **labels, key_id=key["key_id"], state=s)
        ]
        for key in keys
    }
    assert states == {FP: ["cooling"], "sk-…bbbb": ["dropped"], "sk-…cccc": ["down"]}


def test_consumers_on_one_registry_share_its_series() -> None:
    """Two engines' consumers on one registry: counters add up, in flight is the sum."""
    registry = CollectorRegistry()
    first, second = PrometheusConsumer(registry), PrometheusConsumer(registry)
    where = {"provider": "openai", "model": "m"}
    for consumer, in_flight in ((first, 3), (second, 5), (first, 1)):
        feed(consumer, ev.REQUEST_SUCCEEDED, **where, latency_s=0.1)
        feed(consumer, ev.KEYS_UPDATED, keys=[], in_flight=in_flight)
    assert value(registry, "trio_llm_requests_total", **where, status="ok") == 3
    assert value(registry, "trio_llm_in_flight") == 6


async def test_scraped_counters_match_the_results_and_the_servers_count() -> None:
    """/metrics during a run grows towards the Results, and at the end equals them: items by
    status, attempts, retries, tokens, cost, and the server's own count of 429s."""
    n = 120
    registry = CollectorRegistry()
    metrics = PrometheusConsumer(registry)
    host, port = serve_metrics(0, "127.0.0.1", registry=registry)
    url = f"http://{host}:{port}/metrics"
    # The configured limit is twice the server's and the server's burst is 10: the first 16
    # requests leave together, before any header says so, and some get 429s; some get 5xx.
    config = MockServerConfig(rpm=1200, burst_s=0.5, latency=0.02, error_rate=0.15, seed=3)
    prompts = [f"What is {i}+1?" for i in range(n)]
    prompts[7] = "[[fault:context_length]] What is 7+1?"  # fails for good: a failure kind
    async with serve_mock(config) as server:
        engine = trio_llm.Engine(
            provider=trio_llm.OpenAICompatible(base_url=server.base_url, model="mock-gpt"),
            keys=["sk-metrics-test-key-aaaa"],
            limits=trio_llm.Limits(rpm=2400),
            concurrency=16,
            retry=trio_llm.RetryPolicy(wait_initial=0.05, wait_max=0.2, wait_jitter=0.05),
            consumers=[metrics],
        )
        results: list[trio_llm.Result] = []
        mid: dict[tuple[str, frozenset[tuple[str, str]]], float] | None = None
        with trio.fail_after(60):
            async with engine.stream(prompts) as stream:
                async for result in stream:
                    results.append(result)
                    if len(results) == n // 2:
                        mid = await trio.to_thread.run_sync(scrape, url)
        stats = await server.stats()
    assert len(results) == n
    assert mid is not None
    # Half-way, the counters have seen at least what was delivered, and not everything.
    assert n // 2 <= total(mid, "trio_llm_requests_total") < n
    final = await trio.to_thread.run_sync(scrape, url)
    where = {"provider": "openai", "model": "mock-gpt"}
    by_status = collections.Counter("ok" if r.ok else r.error.kind.value for r in results)  # type: ignore[union-attr]
    assert by_status["ok"] < n  # the faults were real
    assert {
        status: total(final, "trio_llm_requests_total", **where, status=status)
        for status in by_status
    } == by_status
    assert total(final, "trio_llm_requests_total") == n
    assert total(final, "trio_llm_attempts_total", **where) == sum(r.attempts for r in results)
    assert total(final, "trio_llm_attempts_total") == stats.total_requests
    assert total(final, "trio_llm_retries_total", **where) == sum(
        r.attempts - 1 for r in results if r.attempts
    )
    assert stats.by_status.get(429, 0) > 0
    assert total(final, "trio_llm_rate_limited_total", **where) == stats.by_status[429]
    usage = [r.usage for r in results if r.usage is not None]
    assert total(final, "trio_llm_tokens_total", type="input") == sum(
        u.prompt_tokens for u in usage
    )
    assert total(final, "trio_llm_tokens_total", type="output") == sum(
        u.completion_tokens for u in usage
    )
    cost = sum(r.cost_usd or 0.0 for r in results)
    assert total(final, "trio_llm_cost_usd_total") == pytest.approx(cost)
    assert total(final, "trio_llm_request_latency_seconds_count") == by_status["ok"]
    # The key shows by its fingerprint, never the key.
    text = await trio.to_thread.run_sync(lambda: httpx.get(url).text)
    assert "sk-metrics-test-key-aaaa" not in text
    assert total(final, "trio_llm_key_state", key_id="sk-…aaaa", state="ok") == 1


@pytest.fixture(scope="module")
def mock() -> Any:
    """A mock server in its own process, one key at 1,200 requests/min."""
    config = MockServerConfig(keys=("sk-cli-metrics-key-1111",), rpm=1200, latency=0.02)
    with MockServerProcess(config) as server:
        yield server


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trio_llm", *args]


def test_run_serves_metrics_while_it_lasts(mock: MockServerProcess, tmp_path: Path) -> None:
    """`trio-llm run --metrics-port` prints where /metrics is; a scrape during the run shows
    it in progress, and its counts never pass what OUTPUT holds at the end."""
    n = 80  # 4 s at the key's 1,200/min
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"q{i}", "prompt": f"{i}+1?"}) + "\n" for i in range(n))
    )
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": "sk-cli-metrics-key-1111"}
    command = _cli(
        "run", str(source), "-o", str(out), "--base-url", mock.base_url, "--model", "mock-gpt",
        "--rpm", "1200", "--no-progress", "--metrics-port", "127.0.0.1:0",
    )  # fmt: skip
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    assert process.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline:
            url = next((line.split()[-1] for line in lines if "/metrics" in line), None)
            time.sleep(0.05)
        assert url is not None, lines
        seen = 0.0
        while seen == 0 and time.monotonic() < deadline:
            seen = total(scrape(url), "trio_llm_requests_total", status="ok")
            time.sleep(0.1)
        assert 0 < seen < n  # a run in progress
        assert process.wait(60) == 0
    finally:
        process.kill()
        process.wait()
        reader.join(10)
        process.stderr.close()
    answered = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(answered) == n
    assert seen <= sum("content" in line for line in answered)
    assert url.startswith("http://127.0.0.1:")


def test_metrics_port_in_use_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port another program listens on: exit 2, one line naming the flag, nothing sent."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "q1", "prompt": "hi"}\n')
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(
            ["run", str(source), "-o", str(tmp_path / "out.jsonl"), "--no-progress",
             "--base-url", "http://127.0.0.1:9/v1", "--metrics-port", f"127.0.0.1:{port}"]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        f"trio-llm: error: --metrics-port 127.0.0.1:{port}: cannot listen: the port is in use "
        "(another program is listening there); pick another"
    ]
    assert not (tmp_path / "out.jsonl").exists()


def test_the_grafana_dashboard_queries_only_series_that_exist() -> None:
    """examples/grafana_dashboard.json names only series the consumer registers."""
    import re

    registry = CollectorRegistry()
    PrometheusConsumer(registry)
    names = {sample for family in registry.collect() for sample in _sample_names(family)}
    dashboard = json.loads(
        (Path(__file__).resolve().parents[1] / "examples" / "grafana_dashboard.json").read_text()
    )
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"trio_llm_\w+", target["expr"])
    }
    assert queried
    assert queried <= names, queried - names


def _sample_names(family: Any) -> set[str]:
    base = family.name
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {base} | {base + s for s in suffixes.get(family.type, ())}


async def test_streamed_answers_feed_the_ttft_histogram() -> None:
    """Streamed requests against the mock: one TTFT observation per streamed answer, each the
    Result's own ttft_s; whole answers add none."""
    registry = CollectorRegistry()
    config = MockServerConfig(latency=0.05)
    async with serve_mock(config) as server:
        engine = trio_llm.Engine(
            provider=trio_llm.OpenAICompatible(base_url=server.base_url, model="mock-gpt"),
            keys=["sk-ttft-test-key-0000"],
            consumers=[PrometheusConsumer(registry)],
        )
        bodies = [
            {"messages": [{"role": "user", "content": f"What is {i}+1?"}], "stream": i % 2 == 0}
            for i in range(6)
        ]
        with trio.fail_after(30):
            results = await engine.map(bodies)
    streamed = [r.ttft_s for r in results if r.ttft_s is not None]
    assert len(streamed) == 3
    where = {"provider": "openai", "model": "mock-gpt"}
    assert value(registry, "trio_llm_time_to_first_token_seconds_count", **where) == 3
    assert value(registry, "trio_llm_time_to_first_token_seconds_sum", **where) == pytest.approx(
        sum(streamed)
    )


async def test_answers_from_the_response_cache_are_counted_as_cached(tmp_path: Path) -> None:
    """A Result answered from the cache counts once, as ``status="cached"``, and sends nothing:
    the counters still add up to one per Result."""
    from _fakes import echo, make_engine

    registry = CollectorRegistry()
    metrics = PrometheusConsumer(registry)
    cache = trio_llm.Cache(tmp_path / "answers.sqlite")
    prompt = {"messages": [{"role": "user", "content": "same"}], "temperature": 0}
    for _ in range(2):
        engine = make_engine(echo(latency=0), cache=cache, consumers=[metrics])
        [result] = await engine.map([prompt])
        assert result.ok
    requests = "trio_llm_requests_total"
    assert value(registry, requests, provider="none", model="gpt-4o-mini", status="cached") == 1
    assert total_of(registry, requests) == 2
    assert total_of(registry, "trio_llm_attempts_total") == 1


def total_of(registry: CollectorRegistry, name: str) -> float:
    """The sum of a counter over all its series."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    )
