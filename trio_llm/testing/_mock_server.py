"""``MockApp``: the mock OpenAI-compatible server as a raw ASGI application.

It is written against ``anyio`` and no web framework, so the same object runs under hypercorn's
trio worker in the test process and under uvicorn (asyncio) in a process of its own, and can sit
behind ``httpx.ASGITransport`` with no socket at all.

Routes:

- ``POST /v1/chat/completions`` (and ``/chat/completions``): JSON or SSE (``"stream": true``).
- ``POST /v1/embeddings`` (and ``/embeddings``): deterministic vectors (``_mock_embeddings``).
- ``POST /v1/messages`` (and ``/messages``): Anthropic's Messages API, JSON or SSE, with
  Anthropic's error shapes and (by default) its ``anthropic-ratelimit-*`` headers.
- ``POST /v1/responses`` (and ``/responses``): OpenAI's Responses API, JSON or SSE
  (``response.*`` events), with OpenAI's error shapes and headers.
- ``POST /openai/deployments/{deployment}/chat/completions`` (and ``/embeddings``) with an
  ``api-version`` query: Azure OpenAI (the deployment is the default model; 404 without it).

- ``GET /v1/models``: the configured model.
- ``GET /stats`` / ``POST /stats/reset``: the counters of :class:`MockStats`.

A streamed answer starts ``latency`` after the request (its first token: the time to first
token) and sends one token per chunk, ``latency_per_token`` apart. The ``stream_error`` fault
breaks it off halfway with the API's error event, ``stream_stall`` stops sending halfway.

A key is read from ``Authorization: Bearer``, ``api-key`` (Azure) or ``x-api-key``
(Anthropic).

A chat request goes through: auth → body → outage → rate limits (charged at admission; a
refused request may be held) → fault decision → latency → response (unused tokens refunded).
Only admitted requests count as "seen" for the fault decision, so a 429 doesn't move a prompt's
fault sequence along.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Literal, cast, final

import anyio

from . import _mock_shapes as shapes
from ._mock_batches import MAX_BATCH_BYTES, MockBatches
from ._mock_config import FAULT_KINDS, FaultKind, MockServerConfig
from ._mock_content import count_tokens, mock_reply, prompt_digest, truncate_to_tokens
from ._mock_embeddings import handle_embeddings
from ._mock_headers import Api, limit_headers, resolve_dialect, retry_headers
from ._mock_limits import Admission, KeyLimits, LimitName
from ._mock_stats import MockStats, StatsCounter, key_fingerprint
from ._mock_structured import ToolPlan, json_answer, plan_tool_call

__all__ = ["MockApp", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
#: Which API's body a request has: chat completions, Anthropic messages, or Responses.
Shape = Literal["chat", "messages", "responses"]

_JSON: Final = (b"content-type", b"application/json")

#: Faults answered by the success path with a different body (they still produce a reply).
_BODY_VARIANTS: Final = frozenset(
    {
        "refusal",
        "content_parts",
        "empty_choices",
        "openai_usage_details",
        "anthropic_cache_usage",
        "invalid_json",
    }
)
#: Body variants that are not a usable answer (not counted as successes).
#: Faults of a streamed answer: it starts, then breaks off halfway (for a whole answer: a 500,
#: and no answer at all).
_STREAM_FAULTS: Final = frozenset({"stream_error", "stream_stall"})
_NOT_AN_ANSWER: Final = frozenset({"refusal", "empty_choices", *_STREAM_FAULTS})
#: Variants with no Anthropic Messages shape in the mock.
_OPENAI_ONLY: Final = frozenset(
    {"refusal", "content_parts", "empty_choices", "openai_usage_details"}
)
#: Anthropic's error type for each status of a generic error.
_ANTHROPIC_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
_AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|embeddings)$")
_DIRECTIVE = re.compile(r"\[\[fault:([A-Za-z0-9_]+)(?:\*(\d+))?\]\]")
_HTML_502: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class _HTTPError(Exception):
    """An error response decided before the request is admitted (bad auth, bad body, 429).

    ``native`` bodies are sent as they are; the others are OpenAI-shaped and become
    Anthropic's error envelope on ``/v1/messages``.
    """

    def __init__(
        self,
        status: int,
        body: dict[str, Any],
        headers: Headers | None = None,
        *,
        native: bool = False,
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or []
        self.native = native

    def body_for(self, api: Api, request_id: str) -> Any:
        """The body to send on a route of *api*."""
        if self.native or api == "openai":
            return self.body
        message = str(self.body.get("error", {}).get("message", ""))
        type_ = _ANTHROPIC_TYPES.get(self.status, "invalid_request_error")
        return shapes.anthropic_error(type_, message, request_id)


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _bad_request(message: str, param: str | None = None) -> _HTTPError:
    return _HTTPError(400, _error_body(message, "invalid_request_error", None, param))


def _text_of(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in _TEXT_PARTS
        )
    return ""


#: Content parts that carry text: chat's, and the Responses API's input and output parts.
_TEXT_PARTS: Final = frozenset({"text", "input_text", "output_text"})


@final
class _Chat:
    """One parsed, priced chat completion (or Anthropic Messages) request."""

    __slots__ = (
        "api",
        "completion_id",
        "completion_tokens",
        "content",
        "created",
        "digest",
        "finish_reason",
        "include_usage",
        "max_tokens",
        "model",
        "prompt",
        "prompt_tokens",
        "shape",
        "stream",
        "token_cost",
        "tool_call",
    )

    api: Api
    completion_id: str
    completion_tokens: int
    content: str
    created: int
    digest: bytes
    finish_reason: str
    include_usage: bool
    max_tokens: int | None
    model: str
    prompt: str
    prompt_tokens: int
    shape: Shape
    stream: bool
    token_cost: int
    tool_call: ToolPlan | None

    def __init__(
        self, body: Any, default_model: str, api: Api = "openai", shape: Shape | None = None
    ) -> None:
        if not isinstance(body, dict):
            raise _bad_request("The request body must be a JSON object.")
        self.shape = shape or ("messages" if api == "anthropic" else "chat")
        if self.shape == "responses":
            body = _responses_as_chat(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad_request("'messages' must be a non-empty array.", "messages")
        if not all(isinstance(m, dict) for m in messages):
            raise _bad_request("Each message must be an object.", "messages")
        if api == "anthropic" and "max_tokens" not in body:
            # The Messages API requires max_tokens.
            raise _bad_request("max_tokens: Field required", "max_tokens")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise _bad_request("'max_tokens' must be an integer >= 1.", "max_tokens")
        self.api = api
        self.max_tokens = max_tokens
        self.completion_id = ""  # set by the server once the request is admitted
        self.created = int(time.time())
        self.model = str(body.get("model") or default_model)
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True

        texts = [_text_of(m.get("content")) for m in messages]
        self.prompt = next(
            (t for m, t in zip(reversed(messages), reversed(texts), strict=True)
             if m.get("role") == "user"),
            "",
        )  # fmt: skip
        if api == "anthropic" and body.get("system") is not None:
            texts.append(_text_of(body["system"]))
        if self.shape == "responses" and body.get("instructions") is not None:
            texts.append(_text_of(body["instructions"]))
        self.digest = prompt_digest(self.prompt)
        self.prompt_tokens = sum(count_tokens(t) + 3 for t in texts)
        full = mock_reply(self.prompt)
        full_tokens = count_tokens(full)
        if max_tokens is not None and max_tokens < full_tokens:
            self.content = truncate_to_tokens(full, max_tokens)
            self.completion_tokens = max_tokens
            self.finish_reason = "length"
        else:
            self.content = full
            self.completion_tokens = full_tokens
            self.finish_reason = "stop"
        # Tools and structured output (issue 11): a tool call, or JSON for the schema.
        self.tool_call = plan_tool_call(body, self.digest, api)
        answer = None if self.tool_call is not None else json_answer(body, self.digest, full)
        if self.tool_call is not None:
            self.content = ""
            self.completion_tokens = count_tokens(json.dumps(self.tool_call.arguments))
            self.finish_reason = "tool_calls"
        elif answer is not None:
            self.content = answer
            self.completion_tokens = count_tokens(answer)
            self.finish_reason = "stop"
        # Charged at admission like a provider does: the prompt plus the most it may generate.
        self.token_cost = self.prompt_tokens + self.output_cost

    @property
    def output_cost(self) -> int:
        """Output tokens charged up front: ``max_tokens``, else the reply's length."""
        return self.max_tokens if self.max_tokens is not None else self.completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def costs(self) -> dict[LimitName, float]:
        """What admission charges each counter."""
        return {
            "requests": 1,
            "requests_day": 1,
            "tokens": self.token_cost,
            "input_tokens": self.prompt_tokens,
            "output_tokens": self.output_cost,
        }

    def usage(self, variant: str | None = None) -> dict[str, Any]:
        """OpenAI's usage object, with the details a *variant* fault adds."""
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if variant == "openai_usage_details":
            usage["prompt_tokens_details"] = {
                "cached_tokens": self.prompt_tokens // 2,
                "audio_tokens": 0,
            }
            usage["completion_tokens_details"] = {
                "reasoning_tokens": self.completion_tokens // 2,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
        elif variant == "anthropic_cache_usage":
            # LiteLLM's OpenAI-format usage for Anthropic models: prompt_tokens counts every
            # prompt token, cached_tokens the cache reads, plus Anthropic's cache writes.
            _, creation, read = shapes.cache_split(self.prompt_tokens)
            usage["prompt_tokens_details"] = {"cached_tokens": read}
            usage["completion_tokens_details"] = {"reasoning_tokens": 0}
            usage["cache_creation_input_tokens"] = creation
        return usage


@final
class MockApp:
    """The mock OpenAI-compatible server, as an ASGI 3 application.

    Use :func:`serve_mock` or :class:`MockServerProcess` to run it on a socket; mount it directly
    (``httpx.ASGITransport(app=MockApp(config))``) for socket-free tests, where the ``drop`` and
    ``hang`` faults depend on the transport.

    Args:
        config: how the server behaves; the defaults accept any key with no limits, no latency
            and no faults.
        wall_clock: returns Unix time (default :func:`time.time`); calendar-minute windows,
            LiteLLM's ``reset_at`` and Anthropic's RFC 3339 resets read it. Tests on trio's
            virtual clock pass one that follows it.
    """

    def __init__(
        self,
        config: MockServerConfig | None = None,
        *,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config if config is not None else MockServerConfig()
        self._stats = StatsCounter()
        self._limits: dict[str, KeyLimits] = {}
        # How many times each prompt (8 bytes of its sha256) was admitted: the `n` of the fault
        # decision. Not cleared by a stats reset, so a reset doesn't replay faults.
        self._seen: dict[int, int] = {}
        self._rng = random.Random(self.config.seed)
        self._seed_bytes = str(self.config.seed).encode() + b"\0"
        self._fault_weights = self.config.fault_mix
        self._fault_total = sum(w for _, w in self._fault_weights)
        self._sequence = 0
        # Ids unique across restarts of the server, cheap per request.
        self._id_prefix = os.urandom(4).hex()
        # Unix time, for calendar windows and absolute resets; tests pass a clock of their own.
        self._wall = wall_clock if wall_clock is not None else time.time
        # The server's clock at its first ASGI call: the origin of `outage`.
        self._started: float | None = None
        self._batches = MockBatches(self)

    def stats(self) -> MockStats:
        """Return a snapshot of the counters."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters (rate-limit buckets and the fault sequence are kept)."""
        self._stats.reset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if self._started is None:
            self._started = anyio.current_time()
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/")
        method = scope["method"]
        api: Api | None = None
        shape: Shape = "chat"
        azure = _AZURE_PATH.match(path)
        if azure is not None:
            # Azure OpenAI (issue 11): OpenAI's API on a deployment, with an api-version.
            if b"api-version=" not in scope.get("query_string", b""):
                body = {"error": {"code": "404", "message": "Resource not found"}}
                await _send_json(send, 404, body)
                return
            path = "/v1/" + azure.group(2)
            scope = {**scope, "azure_deployment": azure.group(1)}
        if path in ("/v1/embeddings", "/embeddings") and method == "POST":
            await handle_embeddings(self, scope, receive, send)
            return
        if path in ("/v1/chat/completions", "/chat/completions"):
            api = "openai"
        elif path in ("/v1/messages", "/messages"):
            api, shape = "anthropic", "messages"
        elif path in ("/v1/responses", "/responses"):
            api, shape = "openai", "responses"
        if api is not None:
            if method != "POST":
                error = _HTTPError(405, _error_body("Use POST.", "invalid_request_error", None))
                await _send_json(send, 405, error.body_for(api, "req_mock_405"))
                return
            await self._chat_completions(scope, receive, send, api, shape)
        elif path.startswith(("/v1/files", "/v1/batches", "/v1/messages/batches")):
            await self._batch_api(scope, receive, send, path, method)
        elif path in ("/v1/models", "/models") and method == "GET":
            await _send_json(send, 200, self._models())
        elif path == "/stats" and method == "GET":
            await _send_bytes(send, 200, self._stats.snapshot().to_json().encode(), [_JSON])
        elif path == "/stats/reset" and method == "POST":
            self._stats.reset()
            await _send_bytes(send, 200, self._stats.snapshot().to_json().encode(), [_JSON])
        else:
            body = _error_body(f"Unknown route {method} {path}.", "invalid_request_error", None)
            await _send_json(send, 404, body)

    async def _batch_api(
        self, scope: Scope, receive: Receive, send: Send, path: str, method: str
    ) -> None:
        try:
            body = await _read_body(receive, MAX_BATCH_BYTES)
        except _HTTPError as error:
            await _send_json(send, error.status, error.body)
            return
        if body is None:
            return

        async def answer(status: int, value: Any) -> None:
            if isinstance(value, bytes):
                await _send_bytes(send, status, value, [(b"content-type", b"application/jsonl")])
            else:
                await _send_json(send, status, value)

        await self._batches.handle(scope, body, path, method, answer)

    def _models(self) -> dict[str, Any]:
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "trio-llm"}
        return {"object": "list", "data": [model]}

    async def _chat_completions(
        self, scope: Scope, receive: Receive, send: Send, api: Api, shape: Shape = "chat"
    ) -> None:
        stats = self._stats
        stats.total_requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        self._sequence += 1
        request_id = f"req_{self._id_prefix}{self._sequence:012x}"
        try:
            await self._handle_chat(scope, receive, send, request_id, api, shape)
        finally:
            stats.in_flight -= 1

    async def _handle_chat(
        self, scope: Scope, receive: Receive, send: Send, rid: str, api: Api, shape: Shape
    ) -> None:
        stats = self._stats
        # Anthropic names its request id `request-id`; OpenAI `x-request-id`.
        id_header = (b"request-id" if api == "anthropic" else b"x-request-id", rid.encode())
        key = _api_key(scope)
        fingerprint = key_fingerprint(key)
        stats.arrived(fingerprint)
        limits: KeyLimits | None = None
        try:
            # Read the body first: answering before it is read breaks keep-alive on some servers.
            raw = await _read_body(receive)
            if raw is None:
                return  # the client went away
            self._authenticate(key, fingerprint, api, rid)
            try:
                model = scope.get("azure_deployment") or self.config.model
                chat = _Chat(json.loads(raw), model, api, shape)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise _bad_request(f"The body is not valid JSON: {exc}") from None
            stats.by_model[chat.model] = stats.by_model.get(chat.model, 0) + 1
            fault = self._directive_fault(chat)
            assert key is not None  # _authenticate refused a missing key
            self._check_outage(chat, rid)
            if self.config.limited:
                limits = self._limits_for(key, anyio.current_time(), chat.model)
                admission = limits.admit(chat.costs(), anyio.current_time())
                if admission.limited_by is not None and self.config.hold_s > 0:
                    admission = await self._hold(limits, chat, admission)
                if admission.limited_by is not None:
                    raise self._rate_limited(chat, limits, admission, fingerprint, rid)
                dialect = resolve_dialect(self.config.headers, api)
                now = anyio.current_time()
                headers = [id_header, *limit_headers(dialect, limits, now, self._wall())]
            else:
                headers = [id_header]
        except _HTTPError as error:
            stats.by_status[error.status] = stats.by_status.get(error.status, 0) + 1
            await _send_json(send, error.status, error.body_for(api, rid),
                             [id_header, *error.headers])  # fmt: skip
            return

        stats.tokens_charged += chat.token_cost
        prefix = {"messages": "msg_", "responses": "resp_"}.get(chat.shape, "chatcmpl-")
        chat.completion_id = prefix + rid.removeprefix("req_")
        prompt_id = int.from_bytes(chat.digest[:8], "big")
        n = self._seen.get(prompt_id, 0)
        self._seen[prompt_id] = n + 1
        if fault is None or (fault[1] is not None and n >= fault[1]):
            kind = None if fault is not None else self._random_fault(chat.digest, n)
        else:
            kind = fault[0]
        if kind is not None:
            stats.faults[kind] = stats.faults.get(kind, 0) + 1
        if kind in _STREAM_FAULTS and not chat.stream:
            kind = "500" if kind == "stream_error" else "hang"
        variant = kind if kind in _BODY_VARIANTS or kind in _STREAM_FAULTS else None
        if kind is not None and variant is None:
            # Nothing was generated: a fault costs the request but no tokens.
            stats.tokens_charged -= chat.token_cost
            if limits is not None:
                now = anyio.current_time()
                limits.refund_tokens(chat.token_cost, now)
                limits.refund("input_tokens", chat.prompt_tokens, now)
                limits.refund("output_tokens", chat.output_cost, now)
            await self._send_fault(kind, chat, receive, send, headers, rid)
            return
        if variant is not None and chat.shape != "chat" and variant in _OPENAI_ONLY:
            stats.tokens_charged -= chat.token_cost
            self._count_status(400)
            message = f"The fault {variant!r} has no {chat.shape} shape in the mock."
            if api == "anthropic":
                body = shapes.anthropic_error("invalid_request_error", message, rid)
            else:
                body = _error_body(message, "invalid_request_error", None)
            await _send_json(send, 400, body, headers)
            return
        if variant == "refusal":
            chat.content = shapes.REFUSAL_TEXT
            chat.completion_tokens = shapes.refusal_tokens()
            chat.finish_reason = "stop"
        elif variant == "empty_choices":
            chat.content = ""
            chat.completion_tokens = 0
        elif variant == "invalid_json":
            chat.content = chat.content[: len(chat.content) // 2]

        latency = self._draw_latency()

        def succeeded() -> None:
            # Counted just before the last bytes go out, so a client holding its response sees
            # it in /stats; the refund happens "when the response is produced".
            refund = chat.token_cost - chat.total_tokens
            now = anyio.current_time()
            if refund > 0:
                stats.tokens_charged -= refund
                if limits is not None:
                    limits.refund_tokens(refund, now)
            if limits is not None:
                limits.refund("output_tokens", chat.output_cost - chat.completion_tokens, now)
            stats.by_status[200] = stats.by_status.get(200, 0) + 1
            if variant in _NOT_AN_ANSWER:
                return
            stats.successes += 1
            if prompt_id in stats.succeeded_prompts:
                stats.duplicate_successes += 1
            else:
                stats.succeeded_prompts.add(prompt_id)

        if chat.stream:
            await self._stream(chat, send, headers, latency, succeeded, variant, receive)
        else:
            delay = latency + self.config.latency_per_token * chat.completion_tokens
            if delay > 0:
                await anyio.sleep(delay)
            if chat.shape == "messages":
                payload = self._message(chat, variant)
            elif chat.shape == "responses":
                payload = self._response(chat, variant)
            else:
                payload = self._completion(chat, variant)
            body = json.dumps(payload).encode()
            succeeded()
            await _send_bytes(send, 200, body, [_JSON, *headers])

    # -- admission -------------------------------------------------------------------------

    def _authenticate(self, key: str | None, fingerprint: str, api: Api, rid: str) -> None:
        config = self.config
        if key is None:
            if api == "anthropic":
                body = shapes.anthropic_error(
                    "authentication_error", "x-api-key header is required", rid
                )
                raise _HTTPError(401, body, native=True)
            message = "You didn't provide an API key (Authorization: Bearer <key>)."
            raise _HTTPError(401, _error_body(message, "invalid_request_error", "invalid_api_key"))
        if key in config.credit_exhausted_keys or (
            api == "anthropic" and key in config.quota_exhausted_keys
        ):
            raise _HTTPError(400, self._credit_balance(rid), native=True)
        if key in config.quota_exhausted_keys:
            message = "You exceeded your current quota, please check your plan and billing details."
            raise _HTTPError(429, _error_body(message, "insufficient_quota", "insufficient_quota"))
        if config.keys is not None and key not in config.keys:
            if config.unknown_key_error == "litellm":
                raise _HTTPError(400, shapes.litellm_unknown_key(), native=True)
            if api == "anthropic":
                body = shapes.anthropic_error("authentication_error", "invalid x-api-key", rid)
                raise _HTTPError(401, body, native=True)
            message = f"Incorrect API key provided: {fingerprint}."
            raise _HTTPError(401, _error_body(message, "invalid_request_error", "invalid_api_key"))

    @staticmethod
    def _credit_balance(rid: str) -> Any:
        message = (
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
            "Billing to upgrade or purchase credits."
        )
        return shapes.anthropic_error("invalid_request_error", message, rid)

    def _check_outage(self, chat: _Chat, rid: str) -> None:
        """During ``outage``, refuse with a 429 that has no rate-limit header at all."""
        outage = self.config.outage
        if outage is None:
            return
        assert self._started is not None
        elapsed = anyio.current_time() - self._started
        start, end = outage
        if start <= elapsed < end:
            body = shapes.outage_body(
                chat.api, model=chat.model, remaining_s=end - elapsed, request_id=rid,
                rpm=self.config.rpm,
            )  # fmt: skip
            raise _HTTPError(429, body, native=True)

    def _limits_for(self, key: str, now: float, model: str | None = None) -> KeyLimits:
        # A model with limits of its own has buckets of its own on the key (issue 11).
        own = model is not None and self.config.has_own_limits(model)
        slot = f"{key}\0{model}" if own else key
        limits = self._limits.get(slot)
        if limits is None:
            config = self.config
            rpm, tpm = config.limits_of(key, model)
            limits = KeyLimits(
                {
                    "requests": rpm,
                    "tokens": tpm,
                    "requests_day": config.rpd,
                    "input_tokens": config.itpm,
                    "output_tokens": config.otpm,
                },
                config.burst_s,
                now,
                window=config.window,
                wall_offset=self._wall() - now,
                exhausted=config.start_exhausted,
            )
            self._limits[slot] = limits
        return limits

    async def _hold(self, limits: KeyLimits, chat: _Chat, admission: Admission) -> Admission:
        """Hold a refused request until it fits or ``hold_s`` runs out (LiteLLM's proxy)."""
        deadline = anyio.current_time() + self.config.hold_s
        self._stats.held += 1
        while admission.limited_by is not None:
            left = deadline - anyio.current_time()
            if left <= 0:
                break
            await anyio.sleep(min(admission.wait_s, left))
            admission = limits.admit(chat.costs(), anyio.current_time())
        return admission

    def _rate_limited(
        self, chat: _Chat, limits: KeyLimits, admission: Admission, fingerprint: str, rid: str
    ) -> _HTTPError:
        dialect = resolve_dialect(self.config.headers, chat.api)
        now = anyio.current_time()
        wall = self._wall()
        body = shapes.rate_limit_body(
            dialect, admission, limits, model=chat.model, key_fingerprint=fingerprint,
            request_id=rid, now=now, wall=wall,
        )  # fmt: skip
        headers = retry_headers(dialect, admission, limits, now, wall)
        return _HTTPError(429, body, headers, native=True)

    # -- faults ----------------------------------------------------------------------------

    @staticmethod
    def _directive_fault(chat: _Chat) -> tuple[FaultKind, int | None] | None:
        """``[[fault:KIND]]`` (always) or ``[[fault:KIND*N]]`` (the first N times) in the prompt."""
        match = _DIRECTIVE.search(chat.prompt)
        if match is None:
            return None
        kind = match.group(1)
        if kind not in FAULT_KINDS:
            raise _bad_request(f"Unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}.")
        times = match.group(2)
        return cast("FaultKind", kind), (None if times is None else int(times))

    def _random_fault(self, digest: bytes, n: int) -> FaultKind | None:
        """The fault for the n-th admission of a prompt: a pure function of (seed, prompt, n)."""
        if self.config.error_rate <= 0:
            return None
        draw = hashlib.sha256(self._seed_bytes + digest + n.to_bytes(8, "big")).digest()
        if int.from_bytes(draw[:8], "big") / 2**64 >= self.config.error_rate:
            return None
        point = int.from_bytes(draw[8:16], "big") / 2**64 * self._fault_total
        for kind, weight in self._fault_weights:
            point -= weight
            if point < 0:
                return kind
        return self._fault_weights[-1][0]

    def _error_fault(
        self, kind: FaultKind, chat: _Chat, rid: str
    ) -> tuple[int, Any, Headers] | None:
        """(status, body, extra headers) of an error fault, or ``None`` for the other kinds."""
        anthropic = chat.api == "anthropic"
        if kind in ("500", "503", "529"):
            status = int(kind)
            extra: Headers = []
            if kind != "500":
                extra.append((b"x-should-retry", b"true"))
            if self.config.fault_retry_after is not None:
                retry_after = self.config.fault_retry_after
                extra.append((b"retry-after", str(max(0, math.ceil(retry_after))).encode()))
                extra.append((b"retry-after-ms", str(math.ceil(retry_after * 1000)).encode()))
            if anthropic:
                # Anthropic's own words: "Internal server error" (api_error), "Overloaded".
                type_, message = {
                    "500": ("api_error", "Internal server error"),
                    "503": ("api_error", "Service unavailable"),
                    "529": ("overloaded_error", "Overloaded"),
                }[kind]
                return status, shapes.anthropic_error(type_, message, rid), extra
            message, type_ = {
                "500": ("The server had an error while processing your request.", "server_error"),
                "503": ("The engine is currently overloaded, please try again later.",
                        "server_error"),
                "529": ("Overloaded", "overloaded_error"),
            }[kind]  # fmt: skip
            return status, _error_body(message, type_, None), extra
        if kind == "context_length" and not anthropic:
            message = (
                f"This model's maximum context length is {chat.prompt_tokens - 1} tokens. "
                f"However, your messages resulted in {chat.prompt_tokens} tokens. "
                "Please reduce the length of the messages."
            )
            body = _error_body(message, "invalid_request_error", "context_length_exceeded",
                               "messages")  # fmt: skip
            return 400, body, []
        if kind == "anthropic_prompt_too_long" or kind == "context_length":
            message = (
                f"prompt is too long: {chat.prompt_tokens} tokens > {chat.prompt_tokens - 1} "
                "maximum"
            )
            return 400, shapes.anthropic_error("invalid_request_error", message, rid), []
        if kind == "anthropic_overloaded":
            return 529, shapes.anthropic_error("overloaded_error", "Overloaded", rid), []
        if kind == "anthropic_credit_balance":
            return 400, self._credit_balance(rid), []
        if kind == "litellm_unknown_key":
            return 400, shapes.litellm_unknown_key(), []
        if kind == "vllm_context_legacy":
            return 400, shapes.vllm_context_legacy(chat.prompt_tokens, chat.max_tokens), []
        if kind == "vllm_context":
            return 400, shapes.vllm_context(chat.prompt_tokens, chat.max_tokens), []
        return None

    async def _send_fault(
        self,
        kind: FaultKind,
        chat: _Chat,
        receive: Receive,
        send: Send,
        headers: Headers,
        rid: str,
    ) -> None:
        error = self._error_fault(kind, chat, rid)
        if error is not None:
            status, body, extra = error
            self._count_status(status)
            await _send_json(send, status, body, [*extra, *headers])
            return
        if kind == "vllm_error":
            body = {"object": "error", "message": "Internal server error (mock vLLM).",
                    "type": "InternalServerError", "param": None, "code": 500}  # fmt: skip
            self._count_status(500)
            await _send_json(send, 500, body, headers)
        elif kind == "html_502":
            self._count_status(502)
            await _send_bytes(send, 502, _HTML_502, [(b"content-type", b"text/html"), *headers])
        elif kind == "malformed":
            self._count_status(200)
            if chat.stream:
                events = (
                    f"data: {json.dumps(self._chunk(chat, {'role': 'assistant'}))[:40]}\n\n"
                    "data: [DONE]\n\n"
                ).encode()
                await _send_bytes(send, 200, events, [_SSE, *headers])
            else:
                full = json.dumps(self._payload(chat)).encode()
                await _send_bytes(send, 200, full[: len(full) // 2], [_JSON, *headers])
        elif kind == "drop":
            self._count_status(200)
            await self._drop(chat, send, headers)
        else:  # hang
            await _wait_for_disconnect(receive)

    async def _drop(self, chat: _Chat, send: Send, headers: Headers) -> None:
        # Promise the whole body, send half, and return: hypercorn and uvicorn both close the
        # connection when the app returns mid-body, so the client sees a truncated response
        # (httpx.RemoteProtocolError), as when a proxy or the server dies mid-response.
        if chat.stream:
            start_headers = [_SSE, *headers]
            body = f"data: {json.dumps(self._chunk(chat, {'role': 'assistant'}))}\n\n".encode()
        else:
            full = json.dumps(self._payload(chat)).encode()
            start_headers = [_JSON, (b"content-length", str(len(full)).encode()), *headers]
            body = full[: len(full) // 2]
        await send({"type": "http.response.start", "status": 200, "headers": start_headers})
        await send({"type": "http.response.body", "body": body, "more_body": True})

    def _count_status(self, status: int) -> None:
        self._stats.by_status[status] = self._stats.by_status.get(status, 0) + 1

    # -- success ---------------------------------------------------------------------------

    def _draw_latency(self) -> float:
        mean = self.config.latency
        sigma = self.config.latency_sigma
        if mean <= 0 or sigma <= 0:
            return mean
        # A lognormal with this mu has mean `mean`: E[X] = exp(mu + sigma**2 / 2).
        return self._rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)

    def _payload(self, chat: _Chat) -> dict[str, Any]:
        """The plain success body of the request's API."""
        if chat.shape == "messages":
            return self._message(chat)
        if chat.shape == "responses":
            return self._response(chat)
        return self._completion(chat)

    def _completion(self, chat: _Chat, variant: str | None = None) -> dict[str, Any]:
        if variant == "empty_choices":
            # Azure's prompt-filter object: no choice, no id, no model, no usage.
            return {"choices": [], "created": 0, "id": "", "model": "", "object": "",
                    "prompt_filter_results": shapes.AZURE_PROMPT_FILTER}  # fmt: skip
        message: dict[str, Any]
        if variant == "refusal":
            message = {"role": "assistant", "content": None, "refusal": chat.content}
        elif variant == "content_parts":
            # Mistral's shape: a thinking part, then the answer as a text part.
            message = {"role": "assistant", "tool_calls": None, "content": [
                {"type": "thinking", "thinking": [{"type": "text", "text": shapes.THINKING_TEXT}],
                 "closed": True},
                {"type": "text", "text": chat.content},
            ]}  # fmt: skip
        elif chat.tool_call is not None:
            message = {"role": "assistant", "content": None, "refusal": None,
                       "tool_calls": [chat.tool_call.openai()]}  # fmt: skip
        else:
            message = {"role": "assistant", "content": chat.content, "refusal": None}
        return {
            "id": chat.completion_id,
            "object": "chat.completion",
            "created": chat.created,
            "model": chat.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": chat.finish_reason,
                }
            ],
            "usage": chat.usage(variant),
            "system_fingerprint": "fp_trio_llm_mock",
        }

    def _message(self, chat: _Chat, variant: str | None = None) -> dict[str, Any]:
        """An Anthropic Messages response."""
        return {
            "id": chat.completion_id,
            "type": "message",
            "role": "assistant",
            "model": chat.model,
            "content": [chat.tool_call.anthropic()]
            if chat.tool_call is not None
            else [{"type": "text", "text": chat.content}],
            "stop_reason": {"length": "max_tokens", "tool_calls": "tool_use"}.get(
                chat.finish_reason, "end_turn"
            ),
            "stop_sequence": None,
            "usage": shapes.anthropic_usage(
                chat.prompt_tokens,
                chat.completion_tokens,
                cached=variant == "anthropic_cache_usage",
            ),
        }

    def _chunk(
        self,
        chat: _Chat,
        delta: dict[str, Any] | None,
        finish_reason: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": chat.completion_id,
            "object": "chat.completion.chunk",
            "created": chat.created,
            "model": chat.model,
            "system_fingerprint": "fp_trio_llm_mock",
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if chat.include_usage:
            # OpenAI sends "usage": null on every chunk but the last when usage is requested.
            chunk["usage"] = usage
        return chunk

    def _stream_events(self, chat: _Chat, variant: str | None) -> tuple[list[bytes], int, int]:
        """The encoded events of a stream, the index of the first that carries a token, and how
        many (from there) carry one token each."""
        # One chunk per mock token (4 characters), like a real stream's one-token deltas.
        pieces = [chat.content[i : i + 4] for i in range(0, len(chat.content), 4)]
        if chat.shape == "messages":
            return self._message_events(chat, pieces, variant), 3, len(pieces)
        if chat.shape == "responses":
            return self._response_events(chat, pieces, variant), 4, len(pieces)
        if variant == "empty_choices":
            return [_data(self._completion(chat, variant)), b"data: [DONE]\n\n"], 1, 0
        deltas: list[dict[str, Any]]
        if variant == "refusal":
            first: dict[str, Any] = {"role": "assistant", "content": None, "refusal": ""}
            deltas = [{"refusal": piece} for piece in pieces]
        elif variant == "content_parts":
            first = {"role": "assistant", "content": [
                {"type": "thinking", "thinking": [{"type": "text", "text": shapes.THINKING_TEXT}],
                 "closed": True}]}  # fmt: skip
            deltas = [{"content": [{"type": "text", "text": piece}]} for piece in pieces]
        else:
            first = {"role": "assistant", "content": ""}
            deltas = [{"content": piece} for piece in pieces]
        events = [self._chunk(chat, first)]
        events += [self._chunk(chat, delta) for delta in deltas]
        events.append(self._chunk(chat, {}, chat.finish_reason))
        if chat.include_usage:
            events.append(self._chunk(chat, None, usage=chat.usage(variant)))
        return [*map(_data, events), b"data: [DONE]\n\n"], 1, len(pieces)

    def _message_events(self, chat: _Chat, pieces: list[str], variant: str | None) -> list[bytes]:
        """Anthropic's stream: message_start, a text block of deltas, message_delta, stop."""
        usage = shapes.anthropic_usage(
            chat.prompt_tokens, chat.completion_tokens, cached=variant == "anthropic_cache_usage"
        )
        start = {**self._message(chat, variant), "content": [], "stop_reason": None,
                 "usage": {**usage, "output_tokens": 1}}  # fmt: skip
        events = [
            _event("message_start", {"message": start}),
            _event("content_block_start",
                   {"index": 0, "content_block": {"type": "text", "text": ""}}),
            _event("ping", {}),
        ]  # fmt: skip
        events += [
            _event("content_block_delta",
                   {"index": 0, "delta": {"type": "text_delta", "text": piece}})
            for piece in pieces
        ]  # fmt: skip
        stop = "max_tokens" if chat.finish_reason == "length" else "end_turn"
        events += [
            _event("content_block_stop", {"index": 0}),
            _event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": chat.completion_tokens}}),
            _event("message_stop", {}),
        ]  # fmt: skip
        return events

    def _response_events(self, chat: _Chat, pieces: list[str], variant: str | None) -> list[bytes]:
        """The Responses API's stream: created, in progress, an output message whose text
        comes in deltas, then completed (or incomplete) with the whole response."""
        whole = self._response(chat, variant)
        item = whole["output"][0]
        opened = {**whole, "status": "in_progress", "output": [], "usage": None,
                  "incomplete_details": None}  # fmt: skip
        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": []}
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": opened}),
            ("response.in_progress", {"response": opened}),
            ("response.output_item.added",
             {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}}),
            ("response.content_part.added", {**where, "part": part}),
        ]  # fmt: skip
        events += [
            ("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
            for piece in pieces
        ]
        events += [
            ("response.output_text.done", {**where, "text": chat.content, "logprobs": []}),
            ("response.content_part.done", {**where, "part": item["content"][0]}),
            ("response.output_item.done", {"output_index": 0, "item": item}),
            (f"response.{whole['status']}", {"response": whole}),
        ]
        return [
            _event(name, {**data, "sequence_number": n}) for n, (name, data) in enumerate(events)
        ]

    def _response(self, chat: _Chat, variant: str | None = None) -> dict[str, Any]:
        """A Responses API response object."""
        cached = reasoning = 0
        if variant == "openai_usage_details":
            cached, reasoning = chat.prompt_tokens // 2, chat.completion_tokens // 2
        cut = chat.finish_reason == "length"
        message = {
            "type": "message",
            "id": "msg_" + chat.completion_id.removeprefix("resp_"),
            "status": "incomplete" if cut else "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": chat.content, "annotations": []}],
        }
        return {
            "id": chat.completion_id,
            "object": "response",
            "created_at": chat.created,
            "status": "incomplete" if cut else "completed",
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "model": chat.model,
            "output": [message],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "text": {"format": {"type": "text"}},
            "max_output_tokens": chat.max_tokens,
            "usage": {
                "input_tokens": chat.prompt_tokens,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": chat.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": chat.total_tokens,
            },
        }

    def _stream_error_event(self, chat: _Chat) -> bytes:
        """The API's error event for a stream that fails halfway (after its 200)."""
        if chat.shape == "messages":
            return _event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
        message = "The server had an error while processing your request."
        if chat.shape == "responses":
            failed = {**self._response(chat), "status": "failed", "output": [], "usage": None,
                      "error": {"code": "server_error", "message": message}}  # fmt: skip
            return _event("response.failed", {"response": failed})
        return _data({"error": {"message": message, "type": "server_error", "param": None,
                                "code": None}})  # fmt: skip

    async def _stream(
        self,
        chat: _Chat,
        send: Send,
        headers: Headers,
        latency: float,
        succeeded: Callable[[], None],
        variant: str | None = None,
        receive: Receive | None = None,
    ) -> None:
        if latency > 0:
            await anyio.sleep(latency)  # time to first token
        await send({"type": "http.response.start", "status": 200,
                    "headers": [_SSE, (b"cache-control", b"no-cache"), *headers]})  # fmt: skip
        encoded, first, paced = self._stream_events(chat, variant)
        if variant in _STREAM_FAULTS:
            encoded = encoded[: first + paced // 2]
            if variant == "stream_error":
                encoded.append(self._stream_error_event(chat))
            paced = min(paced, len(encoded) - first)
        per_token = self.config.latency_per_token
        if per_token <= 0 and variant != "stream_stall":
            # No pacing to do: one write is much cheaper for the server than forty.
            if variant is None or variant not in _STREAM_FAULTS:
                succeeded()
            else:
                self._count_status(200)
            await send({"type": "http.response.body", "body": b"".join(encoded)})
            return
        for i, event in enumerate(encoded):
            # The first token goes at once (at the time to first token); each later token,
            # and what follows the last one, a token's time after the one before it.
            if first < i <= first + paced:
                await anyio.sleep(per_token)
            if i == len(encoded) - 1 and variant not in _STREAM_FAULTS:
                succeeded()
            await send({"type": "http.response.body", "body": event, "more_body": True})
        if variant == "stream_stall":
            self._count_status(200)
            if receive is not None:
                await _wait_for_disconnect(receive)
            return
        if variant == "stream_error":
            self._count_status(200)
        await send({"type": "http.response.body", "body": b""})


def _data(payload: Any) -> bytes:
    """One ``data:`` event (chat completions name none)."""
    return f"data: {json.dumps(payload)}\n\n".encode()


def _event(name: str, data: dict[str, Any]) -> bytes:
    """One named event whose data carries its ``type`` (Anthropic's and Responses' streams)."""
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def _responses_as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses request body read as a chat one: ``input`` as messages (a string is one
    user message), ``max_output_tokens`` as ``max_tokens``."""
    value = body.get("input")
    if isinstance(value, str) and value:
        messages: Any = [{"role": "user", "content": value}]
    elif isinstance(value, list) and value:
        messages = [m for m in value if not isinstance(m, dict) or "content" in m] or value
    else:
        raise _bad_request("'input' must be a non-empty string or array.", "input")
    chat = {k: v for k, v in body.items() if k not in ("input", "max_output_tokens")}
    chat["messages"] = messages
    if "max_output_tokens" in body:
        chat["max_tokens"] = body["max_output_tokens"]
    return chat


_SSE: Final = (b"content-type", b"text/event-stream; charset=utf-8")


def _api_key(scope: Scope) -> str | None:
    """The key of ``Authorization: Bearer``, else Azure's ``api-key``, else ``x-api-key``."""
    fallback: str | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            key = key.strip()
            return key if scheme.lower() == "bearer" and key else None
        if name in (b"api-key", b"x-api-key") and fallback is None:
            fallback = value.decode("latin-1").strip() or None
    return fallback


async def _read_body(receive: Receive, limit: int = _MAX_BODY_BYTES) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            text = f"The request body is larger than {limit} bytes."
            raise _HTTPError(413, _error_body(text, "invalid_request_error", None))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _send_bytes(send: Send, status: int, body: bytes, headers: Headers) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, body: Any, headers: Headers | None = None) -> None:
    await _send_bytes(send, status, json.dumps(body).encode(), [_JSON, *(headers or [])])
