"""JSON in and out: the one cattrs converter, and the JSONL line shapes.

Input lines come in two shapes:

* simple: ``{"id": "q1", "prompt": "..."}`` or ``{"id": "q1", "messages": [...], ...}`` — any
  other field (``max_tokens``, ``temperature``...) passes into the request body;
* OpenAI Batch API: ``{"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
  "body": {...}}``.

Output lines carry the same id: ``{"id", "content", "finish_reason", "usage", "cost_usd"}`` or
``{"id", "error": {...}}``, and for Batch API input the Batch API output shape
``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs

from ._errors import InputError
from ._models import ErrorInfo, Request, Result, Usage, to_request

__all__ = ["InputFormat", "converter", "is_done", "output_id", "output_line", "parse_input_line"]


class InputFormat(enum.Enum):
    """Which shape an input line has (and so which shape its output line gets)."""

    SIMPLE = "simple"
    BATCH = "batch"


#: The one converter trio-llm uses (never cattrs' global one).
converter = cattrs.Converter(forbid_extra_keys=False)
converter.register_unstructure_hook(
    Usage,
    lambda usage: {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    },
)
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
    custom_id: str
    method: str = "POST"
    url: str
    body: _BatchBody


def parse_input_line(raw: bytes, *, source: str, line: int) -> tuple[InputFormat, Request]:
    """One JSONL line as a request, or ``InputError`` naming the file, line and field."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 (byte {exc.start})", source=source, line=line) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"not JSON ({exc})", source=source, line=line) from None
    if not isinstance(data, Mapping):
        raise InputError("a line must be a JSON object", source=source, line=line)
    if "custom_id" in data and "body" in data:
        try:
            batch = converter.structure(data, _BatchLine)
        except cattrs.BaseValidationError as exc:
            problems = cattrs.transform_error(exc, path="$")
            raise InputError("; ".join(problems), source=source, line=line) from None
        if batch.method.upper() != "POST" or not batch.url.rstrip("/").endswith("chat/completions"):
            raise InputError(
                f"only POST /v1/chat/completions is supported, got {batch.method} {batch.url}",
                source=source,
                line=line,
                field="$.url",
            )
        body = data["body"]
        if not isinstance(body, Mapping):
            raise InputError("body must be an object", source=source, line=line, field="$.body")
        request = to_request(body, source=source, line=line)
        return InputFormat.BATCH, attrs.evolve(request, id=batch.custom_id)
    if "id" not in data:
        raise InputError("field missing", source=source, line=line, field="$.id")
    return InputFormat.SIMPLE, to_request(data, source=source, line=line)


def output_line(result: Result, fmt: InputFormat) -> dict[str, Any]:
    """The output line for ``result`` in the shape that matches its input line."""
    error = None if result.error is None else converter.unstructure(result.error)
    if fmt is InputFormat.BATCH:
        raw = dict(result.raw) if result.raw is not None else None
        response = None
        if result.ok:
            response = {
                "status_code": 200,
                "request_id": None if raw is None else raw.get("id"),
                "body": raw if raw is not None else _synthetic_body(result),
            }
        return {
            # Stable across reruns (resume), like the custom_id it derives from.
            "id": "batch_req_" + hashlib.sha256(str(result.id).encode()).hexdigest()[:24],
            "custom_id": result.id,
            "response": response,
            "error": None
            if error is None
            else {
                "code": error.get("code") or error["kind"],
                "message": error["message"],
                "trio_llm": error,
            },
        }
    line: dict[str, Any] = {"id": result.id}
    if result.ok:
        line["content"] = result.text
        line["finish_reason"] = result.finish_reason
        line["usage"] = None if result.usage is None else converter.unstructure(result.usage)
        line["cost_usd"] = result.cost_usd
    else:
        line["error"] = error
    line["attempts"] = result.attempts
    return line


def _synthetic_body(result: Result) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": None if result.usage is None else converter.unstructure(result.usage),
    }


def is_done(line: Mapping[str, Any]) -> bool:
    """Whether an output line records a success (failed ones are retried on resume)."""
    if "response" in line and "custom_id" in line:
        return line.get("error") is None and line.get("response") is not None
    return "error" not in line or line.get("error") is None


def output_id(line: Mapping[str, Any]) -> str | None:
    """The input id an output line answers."""
    value = line.get("custom_id", line.get("id")) if "custom_id" in line else line.get("id")
    return None if value is None else str(value)
