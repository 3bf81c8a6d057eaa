"""The values that flow through trio-llm: requests in, results out.

All are frozen attrs classes; (un)structuring to JSON goes through the one converter in
``_convert``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import attrs

from ._errors import InputError
from ._policy import POLICY, ErrorKind

__all__ = [
    "ErrorInfo",
    "ErrorKind",
    "Prompt",
    "Request",
    "Result",
    "ToolCall",
    "Usage",
    "to_request",
]


@attrs.frozen(kw_only=True)
class Usage:
    """Tokens a response consumed, as the server reported them.

    Attributes:
        prompt_tokens: every input token, cached ones included (Anthropic's cache reads and
            writes are added in, as OpenAI counts them).
        completion_tokens: every output token, reasoning ones included.
        cached_tokens: input tokens read from the provider's prompt cache (billed lower).
        cache_write_tokens: input tokens written to the cache (Anthropic bills them higher).
        reasoning_tokens: output tokens spent on hidden reasoning (billed as output).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen(kw_only=True)
class ToolCall:
    """A tool the model asked to call (the same shape from every API).

    Attributes:
        id: the call's id, to answer it with a ``tool`` message.
        name: the tool's (function's) name.
        arguments: its arguments as the JSON text the model wrote (it may not parse: models
            write what they write); ``json.loads`` it to use it.
    """

    id: str
    name: str
    arguments: str


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """Why an item failed: enough to act on without reading logs.

    Attributes:
        kind: the failure class (``ErrorKind``).
        message: the server's message or ours.
        status: the HTTP status of the last attempt, if a response arrived.
        code: the provider's error code (``context_length_exceeded``...), if any.
        request_id: the server's request id, for a support ticket.
    """

    kind: ErrorKind
    message: str
    status: int | None = None
    code: str | None = None
    request_id: str | None = None

    @property
    def retryable(self) -> bool:
        """Whether running the item again later may succeed (it was not the input's fault)."""
        return POLICY[self.kind].rerun


def _freeze_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


@attrs.frozen(kw_only=True, eq=False)
class Request:
    """One chat request, provider-neutral.

    Build one with ``Request.from_prompt("...")``, ``Request.from_messages([...])`` or
    ``Request.from_body({...})``; ``Engine.map`` does this for you for strings, message lists and
    body dicts.

    Attributes:
        messages: the chat messages (``{"role": ..., "content": ...}`` dicts).
        params: every other body field (``max_tokens``, ``temperature``, unknown ones too); they
            pass through to the provider untouched.
        id: the caller's id for this item (a JSONL ``id`` / ``custom_id``), echoed on the result.
    """

    messages: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    id: str | None = None

    @classmethod
    def from_prompt(cls, prompt: str, *, id: str | None = None, **params: Any) -> Request:
        """A single user message."""
        return cls(messages=({"role": "user", "content": prompt},), params=params, id=id)

    @classmethod
    def from_messages(
        cls,
        messages: list[Mapping[str, Any]] | tuple[Mapping[str, Any], ...],
        *,
        id: str | None = None,
        **params: Any,
    ) -> Request:
        """A chat history, as the OpenAI ``messages`` field."""
        return cls(messages=tuple(messages), params=params, id=id)

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, id: str | None = None) -> Request:
        """An OpenAI request body; every field but ``messages`` passes through untouched."""
        params = {k: v for k, v in body.items() if k != "messages"}
        return cls(messages=tuple(body["messages"]), params=params, id=id)

    @property
    def model(self) -> str | None:
        """The model the request names, if any (else the provider's default is used)."""
        value = self.params.get("model")
        return value if isinstance(value, str) and value else None

    def with_model(self, model: str) -> Request:
        """The same request for another model."""
        return attrs.evolve(self, params={**self.params, "model": model})

    @property
    def max_tokens(self) -> int | None:
        """The completion cap the request asks for, if any."""
        value = self.params.get("max_completion_tokens", self.params.get("max_tokens"))
        return value if isinstance(value, int) else None

    # --- embeddings (issue 11): a request with an ``input`` and no messages ---------------
    @classmethod
    def from_input(cls, text: str, *, id: str | None = None, **params: Any) -> Request:
        """One input to embed (``/v1/embeddings``); the engine packs many into one request."""
        return cls(messages=(), params={**params, "input": text}, id=id)

    @property
    def is_embedding(self) -> bool:
        """Whether this is an embeddings request: an ``input`` and no messages."""
        return not self.messages and "input" in self.params

    def prompt_text(self) -> str:
        """All message text joined (an embedding's input text); what token estimators and the
        mock server read."""
        parts: list[str] = []
        if self.is_embedding:
            value = self.params["input"]
            texts = [value] if isinstance(value, str) else value
            if isinstance(texts, list):
                parts.extend(t for t in texts if isinstance(t, str))
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(
                    str(part.get("text", "")) for part in content if isinstance(part, Mapping)
                )
        return "\n".join(parts)


@attrs.frozen(kw_only=True)
class Result:
    """The outcome of one input item: exactly one per input, succeeded or failed.

    Attributes:
        index: the item's 0-based position in the input.
        id: the caller's id for the item, if it had one.
        ok: whether a completion arrived.
        text: the completion text (``None`` when failed).
        finish_reason: why generation stopped, in the same words for every API: ``stop``,
            ``length``, ``tool_calls``, ``content_filter``, ``refusal`` (another reason passes
            through as the server said it).
        usage: the tokens the server reported.
        error: why the item failed (``None`` when ok).
        attempts: how many requests were sent for it (0 if never sent).
        latency: seconds from the first attempt to the result, on trio's clock.
        key_id: fingerprint of the key that answered (never the key itself).
        cost_usd: the price of ``usage`` for the model, if the model's price is known.
        raw: the provider's response body, when the engine was asked to keep it.
        route: the route that answered (or was tried last), when the engine has routes.
        model: the model that answered (or was tried last).
        rerouted: each move down a fallback chain, as ``"route: kind"`` (why it moved).
        ttft_s: for a streamed answer (``"stream": true``), seconds from sending the
            answering attempt to its first output token, on trio's clock.
        output_tokens_per_s: for a streamed answer, its output tokens over the seconds from
            the first token to the last event (``None`` when it came in one piece).
        cached: answered from the response cache (``Engine(cache=...)``): nothing was sent,
            ``cost_usd`` is 0 and ``usage`` is what the original answer reported.
        tool_calls: the tools the model asked to call (``ToolCall``: id, name, arguments).
        parsed: for a request with a schema (``response_format``, or ``schema=`` in Python),
            the answer parsed and validated: the JSON value, or an instance of the class.
        embedding: for an embeddings request, the input's vector (sent packed with others).
    """

    index: int
    id: str | None = None
    ok: bool
    text: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None
    attempts: int = 0
    latency: float = 0.0
    key_id: str | None = None
    cost_usd: float | None = None
    raw: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    route: str | None = None
    model: str | None = None
    rerouted: tuple[str, ...] = ()
    # Streaming (issue 11): the timing of the answering attempt's stream.
    ttft_s: float | None = None
    output_tokens_per_s: float | None = None
    cached: bool = False
    # Tools and structured output (issue 11).
    tool_calls: tuple[ToolCall, ...] = ()
    parsed: Any = attrs.field(default=None, repr=False)
    # Embeddings (issue 11): the input's vector, for an embeddings request.
    embedding: Sequence[float] | None = attrs.field(default=None, repr=False)


#: What ``map`` and ``stream`` accept per item: a prompt string, a ``messages`` list, a
#: ``Request``, or a dict in the shape of an OpenAI request body (or ``{"id", "prompt"}``).
Prompt: TypeAlias = str | Request | Sequence[Mapping[str, Any]] | Mapping[str, Any]


def to_request(item: object, *, source: str = "<input>", line: int | None = None) -> Request:
    """Turn one input item into a ``Request``, or raise ``InputError`` saying what is wrong."""
    if isinstance(item, Request):
        return item
    if isinstance(item, str):
        return Request.from_prompt(item)
    if isinstance(item, Mapping):
        try:
            return _request_from_mapping(item, source=source, line=line)
        except InputError as exc:
            raw_id = item.get("id", item.get("custom_id"))
            if _is_id(raw_id):
                exc.item_id = str(raw_id)
            raise
    if isinstance(item, Sequence):
        _check_messages(item, source=source, line=line, field="$")
        return Request.from_messages(tuple(item))
    raise InputError(
        f"cannot make a request from {type(item).__name__}; give a string, a messages list, "
        "a request body dict or a trio_llm.Request",
        source=source,
        line=line,
    )


def _request_from_mapping(item: Mapping[str, Any], *, source: str, line: int | None) -> Request:
    item_id = item.get("id", item.get("custom_id"))
    if item_id is not None and not _is_id(item_id):
        raise InputError("id must be a string or a number", source=source, line=line, field="$.id")
    if isinstance(item_id, float) and item_id.is_integer():
        item_id = int(item_id)  # 1.0 is the number 1
    item_id = None if item_id is None else str(item_id)
    if "messages" in item:
        _check_messages(item["messages"], source=source, line=line, field="$.messages")
        return Request.from_body({k: v for k, v in item.items() if k != "id"}, id=item_id)
    if "prompt" in item:
        prompt = item["prompt"]
        if not isinstance(prompt, str):
            raise InputError("prompt must be a string", source=source, line=line, field="$.prompt")
        params = {k: v for k, v in item.items() if k not in ("id", "prompt")}
        return Request.from_prompt(prompt, id=item_id, **params)
    if "input" in item:
        return _embedding_request(item, item_id, source=source, line=line)
    raise InputError(
        "needs a prompt, messages or an input (embeddings)",
        source=source,
        line=line,
        field="$.prompt",
    )


def _embedding_request(
    item: Mapping[str, Any], item_id: str | None, *, source: str, line: int | None
) -> Request:
    """``{"input": "text", ...}``: one input to embed. One input per item, so that each gets
    its Result; a list of token ids is one input, a list of strings is refused (the engine
    packs items itself)."""
    value = item["input"]
    one_text = isinstance(value, str) and value != ""
    tokens = (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )
    if not (one_text or tokens):
        raise InputError(
            "input must be one non-empty string (or a list of token ids): one input per item; "
            "trio-llm packs many items into each request",
            source=source,
            line=line,
            field="$.input",
        )
    params = {k: v for k, v in item.items() if k not in ("id", "custom_id")}
    return Request(messages=(), params=params, id=item_id)


def _is_id(value: object) -> bool:
    """A JSON string or a finite number (``true`` is not an id, ``NaN`` neither)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int))


def _check_messages(messages: object, *, source: str, line: int | None, field: str) -> None:
    """Each message is an object with a string ``role`` and a ``content``: a string, a list of
    parts, or ``null`` on a message that carries ``tool_calls`` (or ``function_call``)."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise InputError("messages must be a non-empty list", source=source, line=line, field=field)
    for position, message in enumerate(messages):
        where = f"{field}[{position}]"
        if not isinstance(message, Mapping):
            raise InputError(
                "each message must be an object with a role and content",
                source=source,
                line=line,
                field=where,
            )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            problem = "field missing" if "role" not in message else "role must be a string"
            raise InputError(problem, source=source, line=line, field=f"{where}.role")
        content = message.get("content")
        calls = "tool_calls" in message or "function_call" in message
        if "content" not in message and not calls:
            raise InputError("field missing", source=source, line=line, field=f"{where}.content")
        if not (isinstance(content, (str, list)) or (content is None and calls)):
            raise InputError(
                "content must be a string or a list of parts",
                source=source,
                line=line,
                field=f"{where}.content",
            )
