"""A tour of the requests a batch sends besides plain text, each against the built-in mock.

1. A streamed answer (``"stream": true``): the text assembled from its chunks, with its time to
   the first token (``Result.ttft_s``) and output tokens per second.
2. Structured output: ``engine.map(prompts, schema=Weather)`` sends the class's JSON schema as
   ``response_format``, checks each answer against it and hands back ``Result.parsed``, an
   instance of the class (an answer that fails is asked again, then fails as
   ``invalid_output``).
3. Tool calls: ``Result.tool_calls`` and ``Result.finish_reason == "tool_calls"``.
4. Embeddings: ``engine.embed(texts)`` packs many inputs into each request; every input gets
   its own vector (``Result.embedding``).
5. A fallback chain: two routes, the first of which refuses the prompt as too long for its
   model; ``fallback_on=True`` moves the item to the second, and ``Result.route`` and
   ``Result.rerouted`` say where it was answered and why it moved.
6. Priority: an interactive ``engine.complete()`` during a batch on the same keys waits only
   for the next free grant, not behind the batch.

    python examples/requests_tour.py
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import attrs
import trio

import trio_llm
from trio_llm.testing import MockServerConfig, serve_mock

KEY = "sk-tour-0000000000000001"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


@attrs.frozen
class Weather:
    city: str
    days: int


@attrs.define
class Seen:
    """What each stop of the tour returned."""

    stream: tuple[str | None, float | None, float | None] = (None, None, None)
    parsed: object = None
    tool_calls: tuple[str | None, list[str]] = (None, [])
    embeddings: tuple[int, int] = (0, 0)  # vectors, requests sent
    fallback: tuple[bool, str | None, tuple[str, ...]] = (False, None, ())
    interactive: tuple[bool, float] = (False, 0.0)  # ok, seconds end to end
    batch: int = 0  # batch items answered


def chat(base_url: str, **options: object) -> trio_llm.Engine:
    return trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url=base_url, model="mock-gpt"),
        keys=[KEY],
        **options,  # type: ignore[arg-type]
    )


async def tour() -> Seen:
    """Each stop's figures (what ``main`` prints and the tests check)."""
    seen = Seen()
    async with (
        serve_mock(MockServerConfig(latency=0.05, latency_per_token=0.002)) as server,
        serve_mock(
            MockServerConfig(error_rate=1.0, fault_mix={"context_length": 1.0})
        ) as short_context,
    ):
        # 1. Streaming.
        [streamed] = await chat(server.base_url).map(
            [{"messages": [{"role": "user", "content": "Tell me a story."}], "stream": True}]
        )
        seen.stream = (streamed.text, streamed.ttft_s, streamed.output_tokens_per_s)

        # 2. Structured output.
        [forecast] = await chat(server.base_url).map(["Weather in Oslo?"], schema=Weather)
        seen.parsed = forecast.parsed

        # 3. Tool calls.
        [asked] = await chat(server.base_url).map(
            [{"messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER_TOOL]}]
        )
        seen.tool_calls = (asked.finish_reason, [call.name for call in asked.tool_calls])

        # 4. Embeddings, packed.
        embedder = trio_llm.Engine(
            provider=trio_llm.OpenAIEmbeddings(
                base_url=server.base_url, model="text-embedding-3-small"
            ),
            keys=[KEY],
        )
        before = (await server.stats()).total_requests
        vectors = await embedder.embed([f"sentence {i}" for i in range(500)], dimensions=8)
        seen.embeddings = (
            sum(r.embedding is not None for r in vectors),
            (await server.stats()).total_requests - before,
        )

        # 5. A fallback chain.
        chain = trio_llm.Engine(
            routes=[
                trio_llm.Route(
                    provider=trio_llm.OpenAICompatible(
                        base_url=short_context.base_url, model="mock-small"
                    ),
                    keys=[KEY],
                    name="small",
                ),
                trio_llm.Route(
                    provider=trio_llm.OpenAICompatible(base_url=server.base_url, model="mock-gpt"),
                    keys=[KEY],
                    name="long-context",
                ),
            ],
            fallback_on=True,
        )
        [moved] = await chain.map(["A very long document..."])
        seen.fallback = (moved.ok, moved.route, moved.rerouted)

        # 6. Priority: one engine, a batch at the limit, and an interactive call meanwhile.
        service = chat(server.base_url, limits=trio_llm.Limits(rpm=1200), concurrency=8)
        async with service:
            async with trio.open_nursery() as nursery:
                done: list[trio_llm.Result] = []

                async def batch() -> None:
                    done.extend(await service.map([f"batch item {i}" for i in range(60)]))

                nursery.start_soon(batch)
                await trio.sleep(0.5)  # the batch holds the keys' rate by now
                started = trio.current_time()
                answer = await service.complete("Quick question from a user")
                seen.interactive = (answer.ok, trio.current_time() - started)
            seen.batch = sum(r.ok for r in done)
    return seen


def main(argv: Sequence[str] | None = None) -> Seen:
    """Run the tour and print what each stop returned."""
    del argv  # no options
    seen = trio.run(tour)
    text, ttft, rate = seen.stream
    print(f"1. streamed: {(text or '')[:40]!r}... first token after {(ttft or 0) * 1000:.0f} ms,"
          f" {rate or 0:.0f} tok/s")  # fmt: skip
    print(f"2. parsed: {seen.parsed!r}")
    print(f"3. tool calls: finish_reason={seen.tool_calls[0]!r}, {seen.tool_calls[1]}")
    print(f"4. embeddings: {seen.embeddings[0]} vectors in {seen.embeddings[1]} request(s)")
    ok, route, why = seen.fallback
    print(f"5. fallback: ok={ok}, answered by {route!r}, moved: {list(why)}")
    answered, waited = seen.interactive
    print(f"6. interactive call during a batch: ok={answered}, {waited * 1000:.0f} ms end to end;")
    print(f"   the batch finished too: {seen.batch} of 60")
    return seen


if __name__ == "__main__":
    main(sys.argv[1:])
