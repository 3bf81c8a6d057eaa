"""Embeddings (issue 11): many inputs packed per request, one Result per input with its vector."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_llm
from trio_llm import ErrorKind, Limits, OpenAIEmbeddings, RetryPolicy
from trio_llm.testing import MockServerConfig, serve_mock
from trio_llm.testing._mock_embeddings import embedding_of

FAST_RETRY = RetryPolicy(
    attempts=4, wait_initial=0.01, wait_max=0.05, wait_jitter=0.0, rate_limit_window=0
)


def _vector(text: str) -> list[float]:
    return embedding_of(text, 4)


def answer(body: dict[str, Any], *, status: int = 200) -> httpx.Response:
    """The embeddings response to ``body``: each input's vector, usage of chars/4."""
    inputs = body["input"]
    tokens = sum(max(1, -(-len(t) // 4)) for t in inputs)
    data = [
        {"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(inputs)
    ]
    data.reverse()  # the order of data is not to be trusted: index says which is which
    return httpx.Response(
        status,
        json={"object": "list", "data": data, "model": body["model"],
              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
    )  # fmt: skip


def make_engine(handler: Any, **kwargs: Any) -> trio_llm.Engine:
    provider_args = {k: kwargs.pop(k) for k in ("max_inputs", "max_tokens") if k in kwargs}
    kwargs.setdefault("limits", Limits(rpm=600_000, tpm=10**9))
    kwargs.setdefault("retry", FAST_RETRY)
    return trio_llm.Engine(
        provider=OpenAIEmbeddings(base_url="http://llm.test/v1", **provider_args),
        keys=["sk-test-1"],
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


async def test_inputs_are_packed_up_to_the_inputs_per_request(autojump_clock: Any) -> None:
    """1,000 inputs with 256 per request go in 4 requests; each Result has its own vector."""
    sizes: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sizes.append(len(body["input"]))
        await trio.sleep(0.1)
        return answer(body)

    texts = [f"text number {i}" for i in range(1000)]
    engine = make_engine(handler, max_inputs=256)
    results = await engine.embed(texts)
    assert sorted(sizes) == [232, 256, 256, 256]
    assert [r.index for r in results] == list(range(1000))
    assert all(r.ok for r in results)
    assert [r.embedding for r in results] == [_vector(t) for t in texts]
    assert all(r.attempts == 1 for r in results)
    # The usage of each pack is shared out: the inputs' usages add up to the server's.
    assert sum(r.usage.prompt_tokens for r in results if r.usage) == sum(
        max(1, -(-len(t) // 4)) for t in texts
    )


async def test_packs_stop_at_the_tokens_per_request(autojump_clock: Any) -> None:
    """No request carries more estimated tokens than max_tokens (100 tokens: 10 inputs of 10)."""
    sizes: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sizes.append(len(body["input"]))
        return answer(body)

    texts = ["x" * 40 for _ in range(95)]  # 10 tokens each
    results = await make_engine(handler, max_tokens=100).embed(texts)
    assert all(r.ok for r in results)
    assert max(sizes) == 10
    assert sum(sizes) == 95


async def test_items_of_different_models_are_not_packed_together(autojump_clock: Any) -> None:
    """Each request names one model and carries only that model's inputs."""
    seen: list[tuple[str, list[str]]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((body["model"], body["input"]))
        return answer(body)

    items = [{"input": f"t{i}", "model": "small" if i % 2 else "large"} for i in range(20)]
    results = await make_engine(handler).map(items)
    assert all(r.ok for r in results)
    for model, inputs in seen:
        assert all((int(t[1:]) % 2 == 1) == (model == "small") for t in inputs)


async def test_one_bad_input_fails_alone(autojump_clock: Any) -> None:
    """A 400 for a pack is split until the input that caused it fails alone."""

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "BAD" in body["input"]:
            return httpx.Response(400, json={"error": {"message": "bad input", "code": None}})
        return answer(body)

    texts = [f"t{i}" for i in range(50)]
    texts[17] = "BAD"
    results = await make_engine(handler).embed(texts)
    assert [r.index for r in results if not r.ok] == [17]
    assert results[17].error is not None
    assert results[17].error.kind is ErrorKind.BAD_REQUEST
    assert all(r.embedding == _vector(t) for r, t in zip(results, texts, strict=True) if r.ok)


async def test_a_failed_pack_is_retried_whole(autojump_clock: Any) -> None:
    """A 500 on a pack retries the pack: every input answered once, with two attempts."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(500, json={"error": {"message": "boom"}})
        return answer(json.loads(request.content))

    results = await make_engine(handler).embed([f"t{i}" for i in range(30)])
    assert calls == 2
    assert all(r.ok and r.attempts == 2 for r in results)


async def test_a_short_answer_fails_its_pack_as_malformed(autojump_clock: Any) -> None:
    """An answer with fewer vectors than inputs answers none of them with another's vector."""

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return answer({**body, "input": body["input"][:-1]})

    results = await make_engine(handler, retry=RetryPolicy(attempts=1)).embed(["a", "b", "c"])
    assert all(not r.ok for r in results)
    assert all(r.error is not None and r.error.kind is ErrorKind.MALFORMED for r in results)


def test_an_input_list_is_refused_with_a_hint() -> None:
    """A list of strings in one item is refused: one input per item, the engine packs."""
    with pytest.raises(trio_llm.InputError, match="one input per item"):
        trio_llm._models.to_request({"input": ["a", "b"]})


async def test_embed_needs_an_embeddings_provider() -> None:
    """engine.embed on a chat provider says which provider to use."""
    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://llm.test/v1"), keys=["k"]
    )
    with pytest.raises(trio_llm.ConfigurationError, match="OpenAIEmbeddings"):
        await engine.embed(["a"])


# --- the promise: every input exactly one Result, whatever fails -------------------------

_FAILURES = [
    None,
    None,
    (500, None),
    (429, "rate_limit_exceeded"),
    (400, None),
    (503, None),
    ("malformed", None),
]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    count=st.integers(1, 120),
    max_inputs=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
async def test_every_input_gets_exactly_one_result(
    autojump_clock: Any, count: int, max_inputs: int, seed: int
) -> None:
    """Whatever packs fail, and how, every input ends as exactly one Result; a succeeded one
    carries its own input's vector."""
    sent: dict[str, int] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        inputs: list[str] = body["input"]
        key = "\0".join(inputs)
        n = sent.get(key, 0)
        sent[key] = n + 1
        draw = hashlib.sha256(f"{seed}:{key}:{n}".encode()).digest()[0]
        failure = _FAILURES[draw % len(_FAILURES)]
        if failure is None or ("poison" not in key and failure[0] == 400):
            return answer(body)
        if failure[0] == "malformed":
            return httpx.Response(200, content=b'{"data": [')
        return httpx.Response(
            failure[0], json={"error": {"message": "no", "code": failure[1]}},
            headers={"retry-after": "0"},
        )  # fmt: skip

    texts = [f"in-{i}" + (" poison" if i % 13 == 5 else "") for i in range(count)]
    engine = make_engine(handler, max_inputs=max_inputs)
    with trio.fail_after(3600):
        results = await engine.embed(texts)
    assert [r.index for r in results] == list(range(count))
    for result, text in zip(results, texts, strict=True):
        if result.ok:
            assert result.embedding == _vector(text)
        else:
            assert result.error is not None
            assert result.embedding is None


# --- against the mock server, over a socket ----------------------------------------------


async def test_embeddings_against_the_mock_server() -> None:
    """5,000 inputs on the mock server: a handful of requests, each input its own vector, the
    server's tokens shared out exactly."""
    texts = [f"sentence {i} about things" for i in range(5000)]
    with trio.fail_after(60):
        async with serve_mock(MockServerConfig(keys=("sk-test-1",), rpm=6000)) as server:
            engine = trio_llm.Engine(
                provider=OpenAIEmbeddings(base_url=server.base_url),
                keys=["sk-test-1"],
                limits=Limits(rpm=6000, tpm=10**8),
            )
            results = await engine.embed(texts, dimensions=16)
            stats = await server.stats()
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert [r.embedding for r in results] == [embedding_of(t, 16) for t in texts]
    assert stats.embedded_inputs == 5000
    assert stats.total_requests <= 10
    assert sum(r.usage.prompt_tokens for r in results if r.usage) == stats.tokens_charged
