"""JSONL line shapes: simple and OpenAI Batch API, in and out."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_llm import ErrorInfo, ErrorKind, InputError, Request, Result, Usage
from trio_llm._convert import (
    MARKER,
    InputFormat,
    InputLine,
    LineError,
    id_key,
    input_hash,
    invalid_output_line,
    is_done,
    line_hash,
    output_id,
    output_line,
    parse_input_line,
)


def _parse(line: object, number: int = 3) -> InputLine:
    raw = line if isinstance(line, bytes) else json.dumps(line).encode()
    return parse_input_line(raw, source="in.jsonl", line=number)


def test_simple_prompt_line() -> None:
    """{"id", "prompt"} becomes a request with that id; extra fields go to the body."""
    parsed = _parse({"id": "q1", "prompt": "hi", "max_tokens": 9})
    assert parsed.fmt is InputFormat.SIMPLE
    assert parsed.request.id == "q1"
    assert parsed.request.params == {"max_tokens": 9}


def test_simple_messages_line_with_numeric_id() -> None:
    """A numeric id keeps its JSON type (the request carries it as a string)."""
    parsed = _parse({"id": 7, "messages": [{"role": "user", "content": "x"}]})
    assert parsed.request.id == "7"
    assert parsed.id == 7
    assert parsed.key == "7"


def test_ids_keep_their_json_type() -> None:
    """1 and "1" are two ids; 1.0 is the number 1."""
    assert id_key(1) == id_key(1.0) == "1"
    assert id_key("1") == '"1"'
    assert _parse({"id": 1.0, "prompt": "x"}).key == "1"
    assert _parse({"id": 2.5, "prompt": "x"}).id == 2.5
    line = output_line(Result(index=0, id="1", ok=True, text="a"), InputFormat.SIMPLE, item_id=1)
    assert line["id"] == 1


def test_a_utf8_bom_before_the_first_line_is_ignored() -> None:
    """A file saved with a byte order mark parses; a BOM on a later line is still an error."""
    raw = b"\xef\xbb\xbf" + json.dumps({"id": "a", "prompt": "x"}).encode()
    assert parse_input_line(raw, source="in.jsonl", line=1).id == "a"
    with pytest.raises(InputError, match="not JSON"):
        parse_input_line(raw, source="in.jsonl", line=2)


def test_input_hash_is_the_canonical_request() -> None:
    """Key order and prompt-vs-messages do not change the hash; any sent field does."""
    a = _parse(b'{"id": "a", "prompt": "x", "temperature": 0, "max_tokens": 5}').hash
    b = _parse(b'{"max_tokens": 5, "temperature": 0, "prompt": "x", "id": "b"}').hash
    c = _parse(
        {"id": "c", "messages": [{"role": "user", "content": "x"}], "temperature": 0,
         "max_tokens": 5}
    ).hash  # fmt: skip
    assert a == b == c
    assert len(a) == 16
    assert _parse({"id": "a", "prompt": "x", "temperature": 1, "max_tokens": 5}).hash != a
    assert input_hash(Request.from_prompt("y")) != input_hash(Request.from_prompt("x"))


@pytest.mark.parametrize(
    "line",
    [
        {"id": "a", "prompt": "x", "temperature": 0},
        {"id": "a", "messages": [{"role": "user", "content": "x"}], "n": 2},
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        },
    ],
    ids=["prompt", "messages", "batch"],
)
def test_the_quick_line_hash_is_the_request_hash(line: dict[str, object]) -> None:
    """Resume's look-ahead hashes the parsed JSON without building a request: the same hash."""
    assert line_hash(line) == _parse(line).hash


def test_batch_api_line() -> None:
    """A Batch API line uses custom_id and its body."""
    parsed = _parse(
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
    assert parsed.fmt is InputFormat.BATCH
    assert parsed.request.id == "req-1"
    assert parsed.request.params["model"] == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("line", "where"),
    [
        (b"{not json", "in.jsonl:3: not JSON"),
        (b"\xff\xfe{}", "in.jsonl:3: not UTF-8"),
        ([1, 2], "in.jsonl:3: a line must be a JSON object"),
        ({"prompt": "no id"}, "in.jsonl:3 $.id: field missing"),
        ({"id": "a", "prompt": 5}, "in.jsonl:3 $.prompt: prompt must be a string"),
        ({"id": "a"}, "in.jsonl:3 $.prompt: needs a prompt, messages or an input (embeddings)"),
        ({"id": "a", "messages": "hi"}, "in.jsonl:3 $.messages: messages must be"),
        ({"id": "a", "messages": [{"content": "x"}]}, "in.jsonl:3 $.messages[0].role: field"),
        ({"id": "a", "messages": [1, 2]}, "in.jsonl:3 $.messages[0]: each message must be"),
        ({"id": "a", "messages": [{"role": "user"}]}, "$.messages[0].content: field missing"),
        ({"id": "a", "messages": [{"role": 1, "content": "x"}]}, "[0].role: role must be a str"),
        ({"id": "a", "messages": [{"role": "user", "content": 5}]}, "[0].content: content must"),
        ({"id": True, "prompt": "x"}, "in.jsonl:3 $.id: id must be a string or a number"),
        ({"id": None, "prompt": "x"}, "in.jsonl:3 $.id: id must be a string or a number"),
        ({"custom_id": "c", "method": "POST", "url": "/v1/chat/completions"}, "$.body: field"),
        ({"custom_id": 5, "url": "/v1/chat/completions", "body": {}}, "$.custom_id: custom_id"),
        (
            {"custom_id": "c", "url": "/v1/chat/completions", "body": {"model": "m"}},
            "$.body.messages",
        ),
        (
            {
                "custom_id": "c",
                "method": "POST",
                "url": "/v1/files",
                "body": {"messages": [{"role": "user", "content": "x"}]},
            },
            "$.url: POST /v1/files is not an endpoint trio-llm serves",
        ),
        (
            {"custom_id": "e", "url": "/v1/embeddings", "body": {"input": ["a", "b"]}},
            "$.body.input: input must be one non-empty string",
        ),
    ],
)
def test_bad_lines_name_file_line_and_field(line: object, where: str) -> None:
    """A bad line raises InputError naming the file, the line and the field."""
    with pytest.raises(InputError) as caught:
        _parse(line)
    assert where in str(caught.value)


def test_a_message_with_tool_calls_may_have_null_content() -> None:
    """An assistant message carrying tool_calls has content null, as the API allows."""
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]},
        {"role": "tool", "tool_call_id": "t", "content": "4"},
    ]
    assert len(_parse({"id": "a", "messages": messages}).request.messages) == 3


def test_a_bad_batch_line_keeps_its_custom_id() -> None:
    """A Batch API line with no body gets a Batch API error line carrying its custom_id."""
    with pytest.raises(LineError) as caught:
        _parse({"custom_id": "c7", "method": "POST", "url": "/v1/chat/completions"})
    line = invalid_output_line(caught.value, line=3, hash="0" * 16)
    assert next(iter(line)) == MARKER
    assert line["custom_id"] == "c7"
    assert line["response"] is None
    assert line["error"]["trio_llm"]["kind"] == "invalid_input"
    assert line["error"]["message"] == "in.jsonl:3 $.body: field missing"
    with pytest.raises(LineError) as simple:
        _parse({"id": 9, "prompt": 5})
    assert invalid_output_line(simple.value, line=3, hash="0" * 16)["id"] == 9


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
    assert output_id(line) == '"q2"'
    marked = output_line(failed, InputFormat.SIMPLE, hash="ab" * 8)
    assert next(iter(marked)) == MARKER


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
    assert output_id(line) == '"c2"'
