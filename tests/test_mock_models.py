"""The mock server keeps limits per key and model (issue 11), as providers enforce them."""

from __future__ import annotations

import httpx

from trio_llm.testing import MockApp, MockServerConfig


def _chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_model_with_its_own_limits_has_buckets_of_its_own() -> None:
    """With model_rpm, one model's requests use up its own bucket on the key, not the
    others'; its headers report its own limit."""
    app = MockApp(MockServerConfig(rpm=1000, model_rpm={"big": 1}, burst_s=1.0))
    headers = {"authorization": "Bearer sk-a"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://mock"
    ) as client:
        first = await client.post("/v1/chat/completions", json=_chat("big"), headers=headers)
        second = await client.post("/v1/chat/completions", json=_chat("big"), headers=headers)
        small = await client.post("/v1/chat/completions", json=_chat("small"), headers=headers)
        other_key = await client.post(
            "/v1/chat/completions", json=_chat("big"), headers={"authorization": "Bearer sk-b"}
        )
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert second.status_code == 429
    assert small.status_code == 200
    assert small.headers["x-ratelimit-limit-requests"] == "1000"
    assert other_key.status_code == 200
    assert app.stats().by_model == {"big": 3, "small": 1}
