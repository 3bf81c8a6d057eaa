"""JSONL line shapes: simple and OpenAI Batch API, in and out."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_llm import ErrorInfo, ErrorKind, InputError, Result, Usage
from trio_llm._convert import InputFormat, is_done, output_id, output_line, parse_input_line


def _parse(line: object) -> tuple[InputFormat, object]:
    raw = line if isinstance(line, bytes) else json.dumps(line).encode()
    return parse_input_line(raw, source="in.jsonl", line=3)


def test_simple_prompt_line() -> None:
    """{"id", "prompt"} becomes a request with that id; extra fields go to the body."""
    fmt, request = _parse({"id": "q1", "prompt": "hi", "max_tokens": 9})
    assert fmt is InputFormat.SIMPLE
    assert request.id == "q1"  # type: ignore[attr-defined]
    assert request.params == {"max_tokens": 9}  # type: ignore[attr-defined]


def test_simple_messages_line_with_numeric_id() -> None:
    """A numeric id is kept as its string."""
    _, request = _parse({"id": 7, "messages": [{"role": "user", "content": "x"}]})
    assert request.id == "7"  # type: ignore[attr-defined]


def test_batch_api_line() -> None:
    """A Batch API line uses custom_id and its body."""
    fmt, request = _parse(
        {
            "custom_id": "req-1",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 3,
            },
        }
    )
    assert fmt is InputFormat.BATCH
    assert request.id == "req-1"  # type: ignore[attr-defined]
    assert request.params["model"] == "gpt-4o-mini"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("line", "where"),
    [
        (b"{not json", "in.jsonl:3: not JSON"),
        (b"\xff\xfe{}", "in.jsonl:3: not UTF-8"),
        ([1, 2], "in.jsonl:3: a line must be a JSON object"),
        ({"prompt": "no id"}, "in.jsonl:3 $.id: field missing"),
        ({"id": "a", "prompt": 5}, "in.jsonl:3 $.prompt: prompt must be a string"),
        ({"id": "a"}, "in.jsonl:3 $.prompt: needs a prompt or messages"),
        ({"id": "a", "messages": "hi"}, "in.jsonl:3 $.messages: messages must be"),
        ({"id": "a", "messages": [{"content": "x"}]}, "in.jsonl:3 $.messages[0]: each message"),
        (
            {"custom_id": "c", "url": "/v1/chat/completions", "body": {"model": "m"}},
            "$.body.messages",
        ),
        (
            {
                "custom_id": "c",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"messages": [{"role": "user", "content": "x"}]},
            },
            "$.url",
        ),
    ],
)
def test_bad_lines_name_file_line_and_field(line: object, where: str) -> None:
    """A bad line raises InputError naming the file, the line and the field."""
    with pytest.raises(InputError) as caught:
        _parse(line)
    assert where in str(caught.value)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_parser(raw: bytes) -> None:
    """Any bytes either parse or raise InputError — nothing else."""
    problem = None
    try:
        parse_input_line(raw, source="fuzz.jsonl", line=1)
    except InputError as exc:
        problem = str(exc)
    assert problem is None or problem.startswith("fuzz.jsonl:1")


def test_simple_output_lines() -> None:
    """Simple input gets {"id", "content", "usage"} or {"id", "error"} lines."""
    ok = Result(
        index=0,
        id="q1",
        ok=True,
        text="4",
        finish_reason="stop",
        usage=Usage(prompt_tokens=3, completion_tokens=1),
        attempts=1,
    )
    line = output_line(ok, InputFormat.SIMPLE)
    assert line["id"] == "q1"
    assert line["content"] == "4"
    assert line["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert is_done(line)
    failed = Result(
        index=1,
        id="q2",
        ok=False,
        attempts=2,
        error=ErrorInfo(kind=ErrorKind.SERVER_ERROR, message="HTTP 500", status=500),
    )
    line = output_line(failed, InputFormat.SIMPLE)
    assert line["error"] == {
        "kind": "server_error",
        "message": "HTTP 500",
        "status": 500,
        "retryable": True,
    }
    assert not is_done(line)
    assert output_id(line) == "q2"


def test_batch_output_lines() -> None:
    """Batch API input gets Batch API output lines keyed by custom_id."""
    raw = {"id": "chatcmpl-9", "choices": [{"message": {"content": "x"}}]}
    ok = Result(index=4, id="c1", ok=True, text="x", raw=raw, attempts=1)
    line = output_line(ok, InputFormat.BATCH)
    assert line["custom_id"] == "c1"
    assert line["response"] == {"status_code": 200, "request_id": "chatcmpl-9", "body": raw}
    assert line["error"] is None
    assert is_done(line)
    failed = Result(
        index=5,
        id="c2",
        ok=False,
        error=ErrorInfo(
            kind=ErrorKind.CONTEXT_LENGTH, message="too long", code="context_length_exceeded"
        ),
    )
    line = output_line(failed, InputFormat.BATCH)
    assert line["response"] is None
    assert line["error"]["code"] == "context_length_exceeded"
    assert not is_done(line)
    assert output_id(line) == "c2"
