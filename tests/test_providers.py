"""The OpenAI-compatible provider: request bodies and every response shape."""

from __future__ import annotations

import json

import httpx
import pytest

from trio_llm import ErrorKind, OpenAICompatible, ProviderError, Request, Usage
from trio_llm._providers import error_from_response

PROVIDER = OpenAICompatible(base_url="http://llm.test/v1/", model="gpt-4o-mini")


def _body(request: Request) -> dict[str, object]:
    built = PROVIDER.build_request(request, "sk-secret")
    assert built.url == "http://llm.test/v1/chat/completions"
    assert built.headers["authorization"] == "Bearer sk-secret"
    return dict(json.loads(built.content))


def _parse(status: int, body: bytes | str, headers: dict[str, str] | None = None) -> object:
    raw = body.encode() if isinstance(body, str) else body
    return PROVIDER.parse_response(status, httpx.Headers(headers or {}), raw)


def test_prompt_becomes_one_user_message() -> None:
    """A prompt string is sent as one user message to the default model."""
    assert _body(Request.from_prompt("hi", max_tokens=5)) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
    }


def test_body_fields_pass_through_untouched() -> None:
    """Unknown body fields and a body's own model pass through as they are."""
    body = {
        "model": "llama-3",
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object"},
        "vendor_extension": [1, 2],
    }
    assert _body(Request.from_body(body)) == body


def test_stream_flag_asks_for_usage_on_the_last_chunk() -> None:
    """ "stream": true is sent, with stream_options.include_usage added (usage arrives last)."""
    body = _body(
        Request.from_body(
            {
                "messages": [{"role": "user", "content": "x"}],
                "stream": True,
                "stream_options": {"continuous_usage_stats": True},
            }
        )
    )
    assert body["stream"] is True
    assert body["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}


def test_stream_false_and_its_options_are_not_sent() -> None:
    """ "stream": false (and stream_options with it) is left out: a whole body is read."""
    body = _body(
        Request.from_body(
            {
                "messages": [{"role": "user", "content": "x"}],
                "stream": False,
                "stream_options": {"include_usage": True},
            }
        )
    )
    assert "stream" not in body
    assert "stream_options" not in body


def test_parses_a_chat_completion() -> None:
    """Content, finish_reason, usage and the request id are read from a 200."""
    completion = _parse(
        200,
        json.dumps(
            {
                "choices": [
                    {"message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
            }
        ),
        {"x-request-id": "req-1"},
    )
    assert completion.text == "4"  # type: ignore[attr-defined]
    assert completion.finish_reason == "stop"  # type: ignore[attr-defined]
    assert completion.usage == Usage(prompt_tokens=9, completion_tokens=1)  # type: ignore[attr-defined]
    assert completion.request_id == "req-1"  # type: ignore[attr-defined]


def test_null_content_is_empty_text() -> None:
    """A tool-call answer with null content is an empty string, not a crash."""
    completion = _parse(
        200, '{"choices": [{"message": {"content": null}, "finish_reason": "tool_calls"}]}'
    )
    assert completion.text == ""  # type: ignore[attr-defined]
    assert completion.usage is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "body",
    [
        b'{"choices": [{"message": {"content": "cut',  # truncated JSON
        b"<html>502</html>",
        b'{"choices": []}',
        b'{"object": "list"}',
        b"\xff\xfe",
    ],
)
def test_malformed_200_is_a_retryable_malformed_error(body: bytes) -> None:
    """A 200 whose body is not a chat completion is MALFORMED (retried), never a crash."""
    with pytest.raises(ProviderError) as caught:
        _parse(200, body)
    assert caught.value.kind is ErrorKind.MALFORMED


def test_openai_error_body() -> None:
    """OpenAI's {"error": {...}} gives message, code and kind."""
    error = error_from_response(
        429,
        httpx.Headers({"retry-after-ms": "1500", "x-request-id": "r9"}),
        json.dumps(
            {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            }
        ).encode(),
    )
    assert error.kind is ErrorKind.RATE_LIMITED
    assert error.message == "HTTP 429: Rate limit reached"
    assert error.code == "rate_limit_exceeded"
    assert error.retry_after == 1.5
    assert error.request_id == "r9"


def test_insufficient_quota_is_a_key_problem() -> None:
    """429 insufficient_quota is QUOTA (drop the key), not a rate limit."""
    error = error_from_response(
        429,
        httpx.Headers(),
        b'{"error": {"message": "no money", "type": "insufficient_quota", '
        b'"code": "insufficient_quota"}}',
    )
    assert error.kind is ErrorKind.QUOTA


def test_vllm_error_body() -> None:
    """vLLM/SGLang's {"object": "error", ...} is understood, its context error included."""
    error = error_from_response(
        400,
        httpx.Headers(),
        b'{"object": "error", "message": "maximum context length is 4096 tokens", '
        b'"type": "BadRequestError", "param": null, "code": 400}',
    )
    assert error.kind is ErrorKind.CONTEXT_LENGTH
    assert "maximum context length" in error.message


def test_html_502_from_a_proxy() -> None:
    """A non-JSON HTML 502 becomes a retryable server error with the text, tags stripped."""
    error = error_from_response(
        502,
        httpx.Headers(),
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
    )
    assert error.kind is ErrorKind.SERVER_ERROR
    assert error.message == "HTTP 502: 502 Bad Gateway nginx"


def test_should_retry_header_is_carried() -> None:
    """x-should-retry is carried to the retry decision."""
    error = error_from_response(400, httpx.Headers({"x-should-retry": "true"}), b"{}")
    assert error.should_retry is True


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (408, None, ErrorKind.TIMEOUT),
        (409, None, ErrorKind.SERVER_ERROR),
        (500, None, ErrorKind.SERVER_ERROR),
        (503, None, ErrorKind.OVERLOADED),
        (529, None, ErrorKind.OVERLOADED),
        (401, None, ErrorKind.AUTH),
        (403, None, ErrorKind.AUTH),
        (404, None, ErrorKind.NOT_FOUND),
        (422, None, ErrorKind.UNPROCESSABLE),
        (400, "context_length_exceeded", ErrorKind.CONTEXT_LENGTH),
        (400, None, ErrorKind.BAD_REQUEST),
    ],
)
def test_status_table(status: int, code: str | None, kind: ErrorKind) -> None:
    """Each status maps to the kind the taxonomy table documents."""
    body = json.dumps({"error": {"message": "m", "code": code}}).encode()
    assert error_from_response(status, httpx.Headers(), body).kind is kind
