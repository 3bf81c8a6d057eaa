"""JSON in and out: the one cattrs converter, and the JSONL line shapes.

Input lines come in two shapes:

* simple: ``{"id": "q1", "prompt": "..."}`` or ``{"id": "q1", "messages": [...], ...}`` — any
  other field (``max_tokens``, ``temperature``...) passes into the request body;
* OpenAI Batch API: ``{"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
  "body": {...}}``, or ``"url": "/v1/responses"`` with a Responses body (``input``,
  ``instructions``, ``max_output_tokens``...): its ``input`` becomes the request's messages
  (a string is one user message), the rest passes through.
* embeddings: ``{"id": "e1", "input": "text"}`` or a Batch API line with ``"url":
  "/v1/embeddings"``; the output line has ``"embedding": [...]`` where a chat line has
  ``content`` (Batch API output: the embeddings response body for that one input).

Output lines carry the same id, with its JSON type (``1`` stays ``1``; ``1`` and ``"1"`` are
different ids): ``{"id", "content", "finish_reason", "usage", "cost_usd"}`` or
``{"id", "error": {...}}``, and for Batch API input the Batch API output shape
``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``.

Every output line starts with the field ``trio_llm_input``: a short hash of the request it
answers (``input_hash``: the canonical JSON of the messages and every other body field). It
marks the file as trio-llm's (resume refuses to touch a file without it) and lets a rerun see
that an id's input changed since its answer was written.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import cattrs

from ._errors import InputError
from ._models import ErrorInfo, ErrorKind, Request, Result, Usage, to_request
from ._providers._responses import responses_input_messages

__all__ = [
    "MARKER",
    "InputFormat",
    "InputLine",
    "LineError",
    "converter",
    "failure_kind",
    "id_key",
    "input_endpoint",
    "input_hash",
    "invalid_output_line",
    "is_done",
    "line_hash",
    "output_id",
    "output_line",
    "parse_input_line",
    "raw_hash",
]

#: The Batch API urls trio-llm serves, by how they end.
CHAT_URL: Final = "chat/completions"
RESPONSES_URL: Final = "responses"

#: The field every output line starts with: the hash of the input it answers.
MARKER: Final = "trio_llm_input"
#: How every journal line starts (the journal writes compact JSON, marker first), so that even
#: a line torn by a crash is recognised as trio-llm's.
MARKER_PREFIX: Final = b'{"' + MARKER.encode() + b'":'
_UTF8_BOM: Final = b"\xef\xbb\xbf"


class InputFormat(enum.Enum):
    """Which shape an input line has (and so which shape its output line gets)."""

    SIMPLE = "simple"
    BATCH = "batch"


#: The one converter trio-llm uses (never cattrs' global one).
converter = cattrs.Converter(forbid_extra_keys=False)


def _usage(usage: Usage) -> dict[str, int]:
    line = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    # The details only where the server reported them (most answers have none).
    for name in ("cached_tokens", "cache_write_tokens", "reasoning_tokens"):
        value = getattr(usage, name)
        if value:
            line[name] = value
    return line


converter.register_unstructure_hook(Usage, _usage)
converter.register_unstructure_hook(
    ErrorInfo,
    lambda error: {
        k: v
        for k, v in {
            "kind": error.kind.value,
            "message": error.message,
            "status": error.status,
            "code": error.code,
            "request_id": error.request_id,
            "retryable": error.retryable,
        }.items()
        if v is not None
    },
)


@attrs.frozen(kw_only=True)
class _BatchBody:
    """The part of a Batch API body we need; the rest passes through untouched."""

    messages: list[dict[str, Any]]


@attrs.frozen(kw_only=True)
class _BatchLine:
    method: str = "POST"
    url: str
    body: _BatchBody


@attrs.frozen(kw_only=True)
class _EmbeddingsLine:
    method: str = "POST"
    url: str
    body: dict[str, Any]


class LineError(InputError):
    """An input line that cannot become a request, with what its output line needs.

    Attributes:
        fmt: the line's shape, when it got far enough to show one (Batch API lines are
            answered in the Batch API shape, with their ``custom_id``).
        raw_id: the line's id as it was in the JSON, if it had a usable one.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str,
        line: int,
        field: str = "",
        fmt: InputFormat = InputFormat.SIMPLE,
        raw_id: object = None,
    ) -> None:
        super().__init__(message, source=source, line=line, field=field)
        self.fmt = fmt
        self.raw_id = raw_id if _valid_id(raw_id) else None
        self.item_id = None if self.raw_id is None else str(self.raw_id)


@attrs.frozen(kw_only=True)
class InputLine:
    """One input line that became a request.

    Attributes:
        fmt: its shape (and so the shape of its output line).
        request: the request (its ``id`` is the id as a string).
        id: the id as it was in the JSON (``"q1"``, ``7``), written back unchanged.
        key: the id's canonical form (``id_key``): what resume and the duplicate check compare.
        hash: ``input_hash(request)``.
    """

    fmt: InputFormat
    request: Request
    id: str | int | float
    key: str
    hash: str


def id_key(value: object) -> str:
    """An id's canonical form: its JSON, with a whole number written as an integer.

    So ``1`` and ``1.0`` are one id, and ``1`` and ``"1"`` are two.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, ensure_ascii=False)


def input_hash(request: Request) -> str:
    """A short hash of what is sent: the canonical JSON of the messages and the other fields.

    A prompt line and the messages line it stands for hash the same.
    """
    if request.is_embedding:
        return _body_hash(dict(request.params))
    return _body_hash({**request.params, "messages": list(request.messages)})


def line_hash(data: Mapping[str, Any]) -> str | None:
    """``input_hash`` of the request a parsed input line stands for, without building it (the
    quick path of resume's look-ahead); ``None`` for a line that is not a request."""
    if "custom_id" in data:
        body = data.get("body")
        if isinstance(body, Mapping) and _is_responses_url(data.get("url")):
            try:
                return _body_hash(_responses_as_chat(body))
            except ValueError:
                return None
        if isinstance(body, Mapping) and "messages" not in body and "input" in body:
            return _body_hash({k: v for k, v in body.items() if k != "id"})  # embeddings
        if not isinstance(body, Mapping) or "messages" not in body:
            return None
        return _body_hash({k: v for k, v in body.items() if k != "id"})
    if "messages" in data:
        return _body_hash({k: v for k, v in data.items() if k != "id"})
    if "prompt" in data:
        body = {k: v for k, v in data.items() if k not in ("id", "prompt")}
        body["messages"] = [{"role": "user", "content": data["prompt"]}]
        return _body_hash(body)
    if "input" in data:  # embeddings
        return _body_hash({k: v for k, v in data.items() if k != "id"})
    return None


def _body_hash(body: Mapping[str, Any]) -> str:
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON (a Request made in Python): hash its repr
        text = repr(sorted((str(k), repr(v)) for k, v in body.items()))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def raw_hash(raw: bytes) -> str:
    """The hash recorded for an input line that could not become a request."""
    return hashlib.sha256(raw.strip()).hexdigest()[:16]


def _valid_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int))


def parse_input_line(raw: bytes, *, source: str, line: int) -> InputLine:
    """One JSONL line as a request, or ``InputError`` naming the file, line and field.

    A UTF-8 byte order mark before the first line is ignored.
    """
    if line == 1 and raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"not UTF-8 (byte {exc.start})", source=source, line=line) from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise LineError(f"not JSON ({exc})", source=source, line=line) from None
    if not isinstance(data, Mapping):
        raise LineError("a line must be a JSON object", source=source, line=line)
    if "custom_id" in data:
        return _parse_batch_line(data, source=source, line=line)
    raw_id = data.get("id")
    if "id" not in data:
        raise LineError("field missing", source=source, line=line, field="$.id")
    if not _valid_id(raw_id) or not isinstance(raw_id, (str, int, float)):
        message = "id must be a string or a number"
        raise LineError(message, source=source, line=line, field="$.id")
    try:
        request = to_request(data, source=source, line=line)
    except InputError as exc:
        raise LineError(
            exc.reason, source=source, line=line, field=exc.field, raw_id=raw_id
        ) from None
    return InputLine(
        fmt=InputFormat.SIMPLE,
        request=request,
        id=raw_id,
        key=id_key(raw_id),
        hash=input_hash(request),
    )


def _parse_batch_line(data: Mapping[str, Any], *, source: str, line: int) -> InputLine:
    raw_id = data["custom_id"]

    def fail(message: str, field: str = "") -> LineError:
        return LineError(
            message, source=source, line=line, field=field, fmt=InputFormat.BATCH, raw_id=raw_id
        )

    if not isinstance(raw_id, str) or not raw_id:
        raise fail("custom_id must be a non-empty string", "$.custom_id")
    if "body" not in data:
        raise fail("field missing", "$.body")
    if _is_responses_url(data.get("url")):
        return _parse_responses_line(data, raw_id, fail)
    url = data.get("url")
    embeds = isinstance(url, str) and url.rstrip("/").endswith(EMBEDDINGS_URL)
    try:
        # An embeddings body has an input, not messages: the coercion checks it.
        batch: _BatchLine | _EmbeddingsLine = (
            converter.structure(data, _EmbeddingsLine)
            if embeds
            else converter.structure(data, _BatchLine)
        )
    except cattrs.BaseValidationError as exc:
        problems = cattrs.transform_error(exc, path="$")
        raise fail("; ".join(problems)) from None
    url = batch.url.rstrip("/")
    served = ("chat/completions", EMBEDDINGS_URL, "/" + MESSAGES_URL)
    if batch.method.upper() != "POST" or not url.endswith(served):
        raise fail(
            f"{batch.method} {batch.url} is not an endpoint trio-llm serves: "
            "Batch API lines must be POST /v1/chat/completions, /v1/responses, "
            "/v1/embeddings or /v1/messages",
            "$.url",
        )
    body = data["body"]
    if not isinstance(body, Mapping):
        raise fail("body must be an object", "$.body")
    if embeds and "input" not in body:
        raise fail("field missing (an embeddings body has an input)", "$.body.input")
    try:
        request = to_request(body, source=source, line=line)
    except InputError as exc:
        raise fail(exc.reason, exc.field.replace("$", "$.body", 1)) from None
    request = attrs.evolve(request, id=raw_id)
    return InputLine(
        fmt=InputFormat.BATCH,
        request=request,
        id=raw_id,
        key=id_key(raw_id),
        hash=input_hash(request),
    )


def _is_responses_url(url: object) -> bool:
    return isinstance(url, str) and url.rstrip("/").endswith(RESPONSES_URL)


def _responses_as_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses body as the request it stands for: its ``input`` as the messages, every
    other field as it is (raises ``ValueError`` for an ``input`` that is not one)."""
    if "input" not in body:
        raise ValueError("field missing")
    messages = responses_input_messages(body["input"])
    return {**{k: v for k, v in body.items() if k not in ("input", "id")}, "messages": messages}


def _parse_responses_line(
    data: Mapping[str, Any], raw_id: str, fail: Callable[[str, str], LineError]
) -> InputLine:
    method = data.get("method", "POST")
    if not isinstance(method, str) or method.upper() != "POST":
        raise fail(f"{method} is not a method trio-llm serves: POST /v1/responses", "$.method")
    body = data["body"]
    if not isinstance(body, Mapping):
        raise fail("body must be an object", "$.body")
    try:
        chat = _responses_as_chat(body)
    except ValueError as exc:
        raise fail(str(exc), "$.body.input") from None
    request = Request(messages=tuple(chat.pop("messages")), params=chat, id=raw_id)
    return InputLine(
        fmt=InputFormat.BATCH,
        request=request,
        id=raw_id,
        key=id_key(raw_id),
        hash=input_hash(request),
    )


def _batch_id(item_id: object) -> str:
    # Stable across reruns (resume), like the custom_id it derives from.
    return "batch_req_" + hashlib.sha256(str(item_id).encode()).hexdigest()[:24]


def output_line(
    result: Result,
    fmt: InputFormat,
    *,
    item_id: object = None,
    hash: str | None = None,
) -> dict[str, Any]:
    """The output line for ``result`` in the shape that matches its input line.

    Args:
        result: the item's result.
        fmt: the shape of its input line.
        item_id: the id as it was in the input (default: ``result.id``).
        hash: the input's ``input_hash``; the line starts with it (``MARKER``) when given.
    """
    error = None if result.error is None else converter.unstructure(result.error)
    if item_id is None:
        item_id = result.id
    line: dict[str, Any] = {} if hash is None else {MARKER: hash}
    if fmt is InputFormat.BATCH:
        raw = dict(result.raw) if result.raw is not None else None
        response = None
        if result.ok:
            response = {
                "status_code": 200,
                "request_id": None if raw is None else raw.get("id"),
                "body": raw if raw is not None else _synthetic_body(result),
            }
        line.update(
            {
                "id": _batch_id(item_id),
                "custom_id": item_id,
                "response": response,
                "error": None if error is None else _batch_error(error),
            }
        )
        if result.cached:
            line["cached"] = True
        return line
    line["id"] = item_id
    if result.ok and result.embedding is not None:
        line["embedding"] = list(result.embedding)
        line["usage"] = None if result.usage is None else converter.unstructure(result.usage)
        line["cost_usd"] = result.cost_usd
    elif result.ok:
        line["content"] = result.text
        line["finish_reason"] = result.finish_reason
        if result.tool_calls:
            line["tool_calls"] = [converter.unstructure(call) for call in result.tool_calls]
        line["usage"] = None if result.usage is None else converter.unstructure(result.usage)
        line["cost_usd"] = result.cost_usd
    else:
        line["error"] = error
    line["attempts"] = result.attempts
    if result.cached:
        line["cached"] = True  # answered from the response cache: nothing sent, cost 0
    # Where it was answered, when there was a choice (routes), and why it moved.
    if result.route is not None:
        line["route"] = result.route
        line["model"] = result.model
    if result.rerouted:
        line["rerouted"] = list(result.rerouted)
    return line


def _batch_error(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": error.get("code") or error["kind"],
        "message": error["message"],
        "trio_llm": error,
    }


def invalid_output_line(error: InputError, *, line: int, hash: str) -> dict[str, Any]:
    """The output line for an input line that could not become a request.

    It carries the item's id when the line got far enough to show one, and the Batch API shape
    (with its ``custom_id``) when the line was a Batch API line.
    """
    info = converter.unstructure(ErrorInfo(kind=ErrorKind.INVALID_INPUT, message=str(error)))
    out: dict[str, Any] = {MARKER: hash}
    raw_id = error.raw_id if isinstance(error, LineError) else error.item_id
    if isinstance(error, LineError) and error.fmt is InputFormat.BATCH:
        out.update(
            {
                "id": _batch_id(raw_id),
                "custom_id": raw_id,
                "line": line,
                "response": None,
                "error": _batch_error(info),
            }
        )
        return out
    out.update({"id": raw_id, "line": line, "error": info})
    return out


def _synthetic_body(result: Result) -> dict[str, Any]:
    if result.embedding is not None:
        used = 0 if result.usage is None else result.usage.prompt_tokens
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": list(result.embedding)}],
            "model": result.model,
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }
    return {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text} | _synthetic_calls(result),
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": None if result.usage is None else converter.unstructure(result.usage),
    }


#: The embeddings endpoint, by how its Batch API url ends.
EMBEDDINGS_URL: Final = "embeddings"
#: Anthropic's Messages endpoint: a Batch API line with this url runs on Anthropic.
MESSAGES_URL: Final = "messages"


def input_endpoint(first_line: bytes) -> str | None:
    """``EMBEDDINGS_URL`` when a file's first line asks for embeddings (a Batch API line with
    that url, or a simple line with an ``input``), ``MESSAGES_URL`` for a Batch API line to
    Anthropic's ``/v1/messages``, ``RESPONSES_URL`` for one to ``/v1/responses``, else
    ``None`` (chat completions): a file run speaks one API (the Batch API has one endpoint per
    file)."""
    try:
        data = json.loads(first_line.lstrip(_UTF8_BOM))
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, Mapping):
        return None
    if "custom_id" in data:
        url = data.get("url")
        url = url.rstrip("/") if isinstance(url, str) else ""
        for endpoint in (EMBEDDINGS_URL, MESSAGES_URL, RESPONSES_URL):
            if url.endswith("/" + endpoint):
                return endpoint
        return None
    embeds = "input" in data and "messages" not in data and "prompt" not in data
    return EMBEDDINGS_URL if embeds else None


def _synthetic_calls(result: Result) -> dict[str, Any]:
    if not result.tool_calls:
        return {}
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in result.tool_calls
    ]
    return {"tool_calls": calls}


def is_done(line: Mapping[str, Any]) -> bool:
    """Whether an output line records a success (failed ones are retried on resume)."""
    if "response" in line and "custom_id" in line:
        return line.get("error") is None and line.get("response") is not None
    return "error" not in line or line.get("error") is None


def output_id(line: Mapping[str, Any]) -> str | None:
    """The input id an output line answers, as its ``id_key``."""
    value = line.get("custom_id") if "custom_id" in line else line.get("id")
    return None if value is None else id_key(value)


def failure_kind(line: Mapping[str, Any]) -> ErrorKind | None:
    """The ``ErrorKind`` of a failed output line (``None`` for a success or an unknown kind)."""
    error = line.get("error")
    if not isinstance(error, Mapping):
        return None
    details = error.get("trio_llm", error)
    kind = details.get("kind") if isinstance(details, Mapping) else None
    if not isinstance(kind, str):
        return None
    try:
        return ErrorKind(kind)
    except ValueError:
        return None
