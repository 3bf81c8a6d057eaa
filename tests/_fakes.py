"""Fake OpenAI-compatible endpoints for httpx.MockTransport (no sockets: autojump-safe)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

import trio_llm

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def completion(text: str, *, prompt_tokens: int = 5, completion_tokens: int = 3) -> httpx.Response:
    """A 200 chat completion."""
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        },
    )


def error(
    status: int,
    message: str = "boom",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """An OpenAI-style error response."""
    return httpx.Response(
        status,
        json={"error": {"message": message, "type": "error", "code": code}},
        headers=headers,
    )


def last_user_text(request: httpx.Request) -> str:
    """The last message's content of a chat request."""
    body: dict[str, Any] = json.loads(request.content)
    return str(body["messages"][-1]["content"])


def echo(latency: float = 1.0) -> Handler:
    """Answers ``echo: <prompt>`` after ``latency`` virtual seconds."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(latency)
        return completion(f"echo: {last_user_text(request)}")

    return handler


def make_engine(handler: Handler, **kwargs: Any) -> trio_llm.Engine:
    """An engine on a MockTransport with test keys."""
    kwargs.setdefault("keys", ["test-key-1"])
    # Known, generous limits: with none, the pool would first probe each key alone to learn
    # them from headers, which tests of other behaviour should not have to account for.
    kwargs.setdefault("limits", trio_llm.Limits(rpm=600_000, tpm=10**9))
    return trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://llm.test/v1", model="gpt-4o-mini"),
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


class SocketLikeASGITransport(httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` that fails like a socket when the app hangs up.

    The mock's ``drop`` fault closes the connection without a response: over a real socket
    httpx raises ``RemoteProtocolError``, while ``ASGITransport`` trips an ``assert`` of its
    own. This maps the one to the other, so in-process runs see what real ones do.
    """

    def __init__(self, app: Any) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except AssertionError as exc:
            raise httpx.RemoteProtocolError("server disconnected without a response") from exc
