"""The bodies real servers send, built for one request (issue 15).

Every builder here copies a shape quoted in ``tests/real_shapes.py`` (the tests compare them):
the envelope and the wording are the server's, the numbers are this request's. The OpenAI
success body itself lives with the server (``MockApp._completion``); the variants of it are here.
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

from ._mock_config import HeaderDialect
from ._mock_content import count_tokens
from ._mock_limits import Admission, KeyLimits, LimitName, format_reset

__all__ = [
    "AZURE_PROMPT_FILTER",
    "REFUSAL_TEXT",
    "THINKING_TEXT",
    "anthropic_error",
    "anthropic_rate_limit_message",
    "anthropic_usage",
    "cache_split",
    "litellm_unknown_key",
    "openai_error",
    "outage_body",
    "rate_limit_body",
    "vllm_context",
    "vllm_context_legacy",
]

#: The refusal text of the ``refusal`` fault (OpenAI's recorded refusal, tests/real_shapes.py).
REFUSAL_TEXT: Final = "I'm very sorry, but I can't assist with that."

#: What the ``content_parts`` fault puts in its ``thinking`` part.
THINKING_TEXT: Final = "The mock considers the prompt, then answers it."

#: Azure's prompt-filter results, as in its ``choices: []`` object.
AZURE_PROMPT_FILTER: Final = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            "hate": {"filtered": False, "severity": "safe"},
            "self_harm": {"filtered": False, "severity": "safe"},
            "sexual": {"filtered": False, "severity": "safe"},
            "violence": {"filtered": False, "severity": "safe"},
        },
    }
]

# LiteLLM's v1 limiter reports an unset limit as sys.maxsize.
_MAXSIZE: Final = 9_223_372_036_854_775_807


def openai_error(
    message: str, type_: str | None, code: str | None, param: str | None = None
) -> Any:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic_error(type_: str, message: str, request_id: str) -> Any:
    """Anthropic's error envelope (``{"type": "error", "error": {...}, "request_id": ...}``)."""
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id}


def litellm_unknown_key() -> Any:
    """LiteLLM's 400 for a key that is not the master key when no DB is connected."""
    return {
        "error": {
            "message": "No connected db.",
            "type": "no_db_connection",
            "param": None,
            "code": "400",
        }
    }


def vllm_context_legacy(prompt_tokens: int, max_tokens: int | None) -> Any:
    """vLLM's old flat error for a context overflow (``serving_engine.py`` of v0.5-v0.10)."""
    if max_tokens is None:
        message = (
            f"This model's maximum context length is {prompt_tokens} tokens. However, you "
            f"requested {prompt_tokens} tokens in the messages, Please reduce the length of the "
            "messages."
        )
    else:
        limit = prompt_tokens + max_tokens - 1
        message = (
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} "
            "in the completion). Please reduce the length of the messages or completion."
        )
    return {
        "object": "error",
        "message": message,
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }


def vllm_context(prompt_tokens: int, max_tokens: int | None) -> Any:
    """vLLM's new nested error for a context overflow (``engine/serving.py``, v0.10.1+)."""
    if max_tokens is None:
        message = (
            f"This model's maximum context length is {prompt_tokens} tokens. However, your "
            f"request has {prompt_tokens} input tokens. Please reduce the length of the input "
            "messages."
        )
    else:
        limit = prompt_tokens + max_tokens - 1
        message = (
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
            f"maximum context length is {limit} tokens and your request has {prompt_tokens} "
            f"input tokens ({max_tokens} > {limit} - {prompt_tokens})."
        )
    return {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}


def cache_split(prompt_tokens: int) -> tuple[int, int, int]:
    """Split a prompt into (uncached, cache_creation, cache_read) tokens for the cache faults."""
    creation = prompt_tokens // 4
    read = prompt_tokens // 4
    return prompt_tokens - creation - read, creation, read


def anthropic_usage(prompt_tokens: int, output_tokens: int, *, cached: bool) -> dict[str, int]:
    """A Messages ``usage``; with *cached*, part of the prompt is cache writes and reads.

    ``input_tokens`` counts only the uncached part (Anthropic's semantics).
    """
    if not cached:
        return {
            "input_tokens": prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        }
    uncached, creation, read = cache_split(prompt_tokens)
    return {
        "input_tokens": uncached,
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
        "output_tokens": output_tokens,
    }


def _unit(name: LimitName) -> tuple[str, str, str]:
    """(OpenAI's words, its abbreviation, the error ``type``) for a counter."""
    return {
        "requests": ("requests per min", "RPM", "requests"),
        "tokens": ("tokens per min", "TPM", "tokens"),
        "requests_day": ("requests per day", "RPD", "requests"),
        "input_tokens": ("input tokens per min", "ITPM", "tokens"),
        "output_tokens": ("output tokens per min", "OTPM", "tokens"),
    }[name]


def rate_limit_body(
    dialect: HeaderDialect,
    admission: Admission,
    limits: KeyLimits,
    *,
    model: str,
    key_fingerprint: str,
    request_id: str,
    now: float,
    wall: float,
) -> Any:
    """The body of a 429 in *dialect* (resolved), for the counter that refused the request."""
    name = admission.limited_by
    assert name is not None
    counter = limits.counters[name]
    words, abbreviation, type_ = _unit(name)
    requested = math.ceil(admission.requested)
    used = counter.used(now)
    if dialect == "openai":
        # The mock's historical message (unchanged): OpenAI's wording without the organization.
        message = (
            f"Rate limit reached for {model} on {words} ({abbreviation}): "
            f"Limit {counter.limit}, Requested {requested}. "
            f"Please try again in {format_reset(admission.wait_s)}."
        )
        return openai_error(message, type_, "rate_limit_exceeded")
    if dialect == "none":
        # LiteLLM's deployment limiter (lowest_tpm_rpm_v2.py): no headers at all.
        short = "rpm" if type_ == "requests" else "tpm"
        message = (
            f"litellm.RateLimitError: Deployment over defined {short} limit={counter.limit}. "
            f"current usage={counter.limit}"
        )
        return {"error": {"message": message, "type": None, "param": None, "code": 429}}
    if dialect == "litellm":
        if limits.window == "minute":
            rpm, tpm = limits.requests, limits.tokens
            message = (
                "LiteLLM Rate Limit Handler for rate limit type = key. Max parallel request "
                "limit reached. "
                f"current rpm: {rpm.used(now) if rpm else 0}, "
                f"rpm limit: {rpm.limit if rpm else _MAXSIZE}, "
                f"current tpm: {tpm.used(now) if tpm else 0}, "
                f"tpm limit: {tpm.limit if tpm else _MAXSIZE}, "
                f"current max_parallel_requests: 1, max_parallel_requests: {_MAXSIZE}"
            )
        else:
            reset_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall + 60.0))
            message = (
                f"Rate limit exceeded for api_key: {key_fingerprint}. Limit type: {type_}. "
                f"Current limit: {counter.limit}, Remaining: 0. Limit resets at: {reset_at}"
            )
        return {"error": {"message": message, "type": "None", "param": "None", "code": "429"}}
    if dialect == "litellm_relay":
        message = (
            "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for "
            f"{model} in organization org-mock on {words} ({abbreviation}): "
            f"Limit {counter.limit}, Used {used}."
        )
        return {
            "error": {"message": message, "type": "throttling_error", "param": None, "code": "429"}
        }
    if dialect == "groq":
        groq_words = {
            "requests per min": "requests per minute",
            "tokens per min": "tokens per minute",
        }
        message = (
            f"Rate limit reached for model {model} in organization org_mock service tier "
            f"on_demand on {groq_words.get(words, words)} ({abbreviation}): Limit "
            f"{counter.limit}, Used {used}, Requested {requested}. Please try again in "
            f"{format_reset(admission.wait_s)}. Visit https://console.groq.com/docs/rate-limits "
            "for more information."
        )
        return {"error": {"message": message, "type": type_, "code": "rate_limit_exceeded"}}
    if dialect == "anthropic":
        anthropic_words = {
            "requests": "requests",
            "tokens": "tokens",
            "requests_day": "requests",
            "input_tokens": "input tokens",
            "output_tokens": "output tokens",
        }[name]
        period = "day" if name == "requests_day" else "minute"
        message = anthropic_rate_limit_message(counter.limit, anthropic_words, period)
        return anthropic_error("rate_limit_error", message, request_id)
    # azure
    seconds = max(1, math.ceil(admission.wait_s))
    kind = "call" if type_ == "requests" else "token"
    message = (
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
        f"2024-02-15-preview have exceeded {kind} rate limit of your current OpenAI S0 pricing "
        f"tier. Please retry after {seconds} second{'' if seconds == 1 else 's'}. Please go "
        "here: https://aka.ms/oai/quotaincrease if you would like to further increase the "
        "default rate limit."
    )
    return {"error": {"code": "429", "message": message}}


def anthropic_rate_limit_message(limit: int, words: str, period: str = "minute") -> str:
    """Anthropic's 429 wording (captured for input tokens; the same sentence for the others)."""
    return (
        "This request would exceed the rate limit for your organization (mock-org) of "
        f"{limit:,} {words} per {period}. For details, refer to: "
        "https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
        "current usage. Please reduce the prompt length or the maximum tokens requested, or "
        "try again later. You may also contact sales at https://www.anthropic.com/"
        "contact-sales to discuss your options for a rate limit increase."
    )


def outage_body(
    api: str, *, model: str, remaining_s: float, request_id: str, rpm: int | None
) -> Any:
    """The 429 body of an outage: LiteLLM's "No deployments available" or Anthropic's 429."""
    seconds = max(1, math.ceil(remaining_s))
    if api == "anthropic":
        message = anthropic_rate_limit_message(rpm or 0, "requests")
        return anthropic_error("rate_limit_error", message, request_id)
    message = (
        f"No deployments available for selected model, Try again in {seconds} seconds. Passed "
        f"model={model}. pre-call-checks=False, cooldown_list=[]"
    )
    return {"error": {"message": message, "type": "None", "param": "None", "code": 429}}


def refusal_tokens() -> int:
    """The completion tokens of the refusal text."""
    return count_tokens(REFUSAL_TEXT)
