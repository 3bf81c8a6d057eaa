"""Every input ends as exactly one result, whatever the server does (the mock's faults)."""

from __future__ import annotations

import collections
import subprocess
import sys
from typing import Any

import httpx
import pytest
import structlog
import trio
import trio.testing
from _fakes import SocketLikeASGITransport

import trio_llm
from trio_llm import ErrorKind, RetryPolicy
from trio_llm.testing import MockApp, MockServerConfig, mock_reply, serve_mock

GOOD_KEYS = ("sk-good-key-0000000001", "sk-good-key-0000000002")
FAST_RETRY = RetryPolicy(attempts=6, wait_initial=0.05, wait_max=0.5, wait_jitter=0.05)


def _engine(base_url: str, keys: tuple[str, ...], **kwargs: Any) -> trio_llm.Engine:
    return trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url=base_url, model="mock-gpt"),
        keys=list(keys),
        **kwargs,
    )


#: The faults of the original mix: every retryable one, a hang, and one fatal (a 400).
MIXED_FAULTS = ("500", "503", "529", "drop", "hang", "malformed", "vllm_error", "html_502")


async def test_mixed_faults_every_input_accounted_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """2,000 requests with 10% faults of every kind, 429s from limits set twice too high and
    one invalid key: each input ends as exactly one Result, none lost, none answered twice,
    none given another prompt's answer, and only the fatal fault's items fail."""
    config = MockServerConfig(
        keys=GOOD_KEYS,
        rpm=3000,
        headers="none",  # no rate-limit headers to learn from: only 429s tell
        error_rate=0.1,
        fault_mix={**{kind: 1 for kind in MIXED_FAULTS}, "context_length": 1},
        latency=0.2,
        seed=7,
    )
    app = MockApp(config)
    engine = _engine(
        "http://mock.test/v1",
        (*GOOD_KEYS, "sk-invalid-key-000003"),
        transport=SocketLikeASGITransport(app),
        limits=trio_llm.Limits(rpm=6000),  # twice what the mock allows: it will say 429
        timeout=5.0,
        concurrency=64,
    )
    prompts = [f"question number {i}" for i in range(2000)]
    results = await engine.map(prompts)
    stats = app.stats()
    assert stats.by_status.get(429, 0) > 0  # the limits really were exceeded
    assert [r.index for r in results] == list(range(len(prompts)))
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    # None mismatched: each answer is the mock's answer to that very prompt.
    assert all(r.text == mock_reply(prompts[r.index]) for r in ok)
    # None answered twice: the mock served each successful prompt once.
    assert stats.duplicate_successes == 0
    assert stats.successes == len(ok)
    # None lost: every failure is the fatal fault, one item for each time it was served.
    assert {r.error.kind for r in failed if r.error} <= {ErrorKind.CONTEXT_LENGTH}
    assert len(failed) == stats.faults.get("context_length", 0)
    dropped = [k for k in engine.statistics().keys if k.dropped]
    assert [k.key_id for k in dropped] == ["sk-…0003"]


@pytest.mark.parametrize(
    ("kind", "recovers"),
    [
        ("500", True),
        ("503", True),
        ("529", True),
        ("drop", True),
        ("hang", True),
        ("malformed", True),
        ("vllm_error", True),
        ("html_502", True),
        ("context_length", False),
    ],
)
async def test_each_fault_alone_over_real_sockets(kind: str, recovers: bool) -> None:
    """Each fault kind, once, against the real mock server: retried and recovered, or not."""
    with trio.fail_after(20):
        async with serve_mock(MockServerConfig(keys=GOOD_KEYS)) as server:
            engine = _engine(server.base_url, GOOD_KEYS, timeout=0.5, retry=FAST_RETRY)
            prompt = f"[[fault:{kind}*1]] tell me something"
            [result] = await engine.map([prompt])
            stats = await server.stats()
    if recovers:
        assert result.ok, result.error
        assert result.attempts == 2
        assert result.text == mock_reply(prompt)
    else:
        assert not result.ok
        assert result.error is not None
        assert result.error.kind is ErrorKind.CONTEXT_LENGTH
        assert result.error.status == 400
        assert result.attempts == 1
    assert stats.faults == {kind: 1}


async def test_a_recognisable_key_appears_nowhere(tmp_path: Any) -> None:
    """The key is in no log line, event, repr, error message or result; only its fingerprint."""
    secret = "sk-test-SECRET-abcdef123456"
    revoked = "sk-test-REVOKED-zyxwvu987654"
    events: list[str] = []
    with trio.fail_after(20), structlog.testing.capture_logs() as logs:
        async with serve_mock(MockServerConfig(keys=(secret,))) as server:
            engine = _engine(
                server.base_url,
                (secret, revoked),
                retry=FAST_RETRY,
                consumers=[lambda _l, _m, event: events.append(repr(event))],
            )
            results = await engine.map(
                ["hello", "[[fault:500*1]] again", "[[fault:context_length]] long"]
            )
            text = " ".join(
                [
                    repr(engine),
                    repr(engine.pool),
                    repr(engine.statistics()),
                    repr(results),
                    *events,
                    *(repr(log) for log in logs),
                    *(str(r.error) for r in results if r.error),
                ]
            )
    for key in (secret, revoked):
        assert key not in text
        assert key[-12:] not in text  # not even a long tail of it
    assert "sk-…3456" in text
    assert "sk-…7654" in text  # the revoked key is named by fingerprint when dropped


async def test_each_retry_is_one_request_retrying_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each retry is one request.retrying event with the wait, kind and status."""
    calls = collections.Counter[str]()

    async def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        return httpx.Response(
            200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
        )

    seen: list[dict[str, Any]] = []
    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://x.test/v1", model="m"),
        keys=["sk-one-key-000000001"],
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=5, wait_initial=1.0, wait_jitter=0.0),
        consumers=[lambda _l, _m, event: seen.append(dict(event))],
    )
    [result] = await engine.map(["x"])
    assert result.ok
    retrying = [e for e in seen if e["event"] == "request.retrying"]
    assert [(e["attempt"], e["status"], e["kind"]) for e in retrying] == [
        (1, 503, "overloaded"),
        (2, 503, "overloaded"),
    ]


LIBRARY_PROGRAM = """
import httpx, trio, trio_llm

calls = 0

async def handler(request):
    global calls
    calls += 1
    if calls <= 3:
        return httpx.Response(503, json={"error": {"message": "busy"}})
    return httpx.Response(
        200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
    )

engine = trio_llm.Engine(
    provider=trio_llm.OpenAICompatible(base_url="http://x.test/v1", model="m"),
    keys=["sk-one-key-000000001"],
    transport=httpx.MockTransport(handler),
    retry=trio_llm.RetryPolicy(wait_initial=0.01, wait_max=0.01, wait_jitter=0.0),
)
[result] = trio.run(engine.map, ["x"])
assert result.ok and result.attempts == 4, result
"""


def test_a_library_that_never_configured_logging_prints_nothing() -> None:
    """A program that uses the engine and never configures logging gets no output from it,
    not even on retries (stamina's process-wide retry warnings used to reach stderr)."""
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", LIBRARY_PROGRAM],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    assert done.stderr == b""
