"""What real servers send, quoted with where each shape comes from (issue 15).

Each constant is a :class:`RealShape`: the status, the headers that matter and the body a real
server sends, as captured on the wire (issue threads quoting a response) or as the server's own
source code builds it. The docstring under each constant quotes the source and names it (URL, or
repository + path + version/commit). Values that vary per request (ids, token counts, model
names, timestamps) are the ones in the quoted capture; tests compare *shapes* (keys, types, fixed
strings and the wording of messages with their numbers generalised), not those values.

Where a part of a shape could not be confirmed, the docstring says so. Nothing here is invented:
a field missing from the captures is missing here too.

Sections: LiteLLM proxy, Azure OpenAI, Groq, vLLM, Anthropic, OpenAI (and OpenAI-compatible
servers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ANTHROPIC_429",
    "ANTHROPIC_CREDIT_BALANCE",
    "ANTHROPIC_OVERLOADED",
    "ANTHROPIC_PROMPT_TOO_LONG",
    "ANTHROPIC_SUCCESS_HEADERS",
    "ANTHROPIC_USAGE_WITH_CACHE",
    "AZURE_429",
    "AZURE_429_RETRY_AFTER",
    "AZURE_API_KEY_HEADER",
    "AZURE_EMPTY_CHOICES",
    "AZURE_SUCCESS_HEADERS",
    "GROQ_429",
    "GROQ_SUCCESS_HEADERS",
    "LITELLM_DEPLOYMENT_429",
    "LITELLM_FIXED_WINDOW_429",
    "LITELLM_FIXED_WINDOW_SUCCESS_HEADERS",
    "LITELLM_HOLD_MAX_S",
    "LITELLM_KEY_LIMIT_429",
    "LITELLM_KEY_SUCCESS_HEADERS",
    "LITELLM_NO_DEPLOYMENTS_429",
    "LITELLM_PROMPT_CACHING_USAGE",
    "LITELLM_RELAYED_429",
    "LITELLM_UNKNOWN_KEY_400",
    "OPENAI_400_CONTEXT_LENGTH",
    "OPENAI_401_INVALID_API_KEY",
    "OPENAI_429_INSUFFICIENT_QUOTA",
    "OPENAI_429_RATE_LIMIT",
    "OPENAI_500",
    "OPENAI_CONTENT_PARTS",
    "OPENAI_REFUSAL",
    "OPENAI_USAGE_DETAILS",
    "VLLM_CONTEXT_LENGTH",
    "VLLM_CONTEXT_LENGTH_INPUT",
    "VLLM_CONTEXT_LENGTH_LEGACY",
    "RealShape",
]

JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class RealShape:
    """One response as a real server sends it.

    Attributes:
        status: the HTTP status.
        headers: the headers that matter (lower-case names); ``content-type`` when known.
        body: the decoded JSON body, raw bytes, or ``None`` for a header-only shape.
        source: where it comes from (URL, or repository + path + version).
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | bytes | None = None
    source: str = ""


# ---------------------------------------------------------------------------------------------
# LiteLLM proxy
# ---------------------------------------------------------------------------------------------

LITELLM_DEPLOYMENT_429 = RealShape(
    status=429,
    headers=JSON,
    body={
        "error": {
            "message": "litellm.RateLimitError: Deployment over defined rpm limit=2. "
            "current usage=2",
            "type": None,
            "param": None,
            "code": 429,
        }
    },
    source="CRS-Sandbox LiteLLM README (captured body); BerriAI/litellm "
    "litellm/router_strategy/lowest_tpm_rpm_v2.py; litellm/litellm_core_utils/"
    "llm_response_utils/get_headers.py",
)
"""A 429 from LiteLLM's deployment (model-level ``rpm``/``tpm``) limiter: no rate-limit headers,
no ``Retry-After``.

Captured body, quoted from a CRS-Sandbox README ("If you exceed the rpm/tpm limits for this
deployment, you should see:")::

    {"error":{"message":"litellm.RateLimitError: Deployment over defined rpm limit=2.
     current usage=2","type":null,"param":null,"code":429}}

The router raises it from ``litellm/router_strategy/lowest_tpm_rpm_v2.py``
(``pre_call_check``), whose calendar-minute key is ``f"{model_id}:rpm:{current_minute}"`` with
``current_minute = dt.strftime("%H-%M")``::

    raise litellm.RateLimitError(
        message="Deployment over defined rpm limit={}. current usage={}".format(...),
        llm_provider="",
        model=...,
        response=httpx.Response(status_code=429, content="... rpm limit={}. current usage={}",
                                request=httpx.Request(method="tpm_rpm_limits", ...)))

The sync path builds that ``httpx.Response`` with no headers; the async path (newer versions)
adds ``headers={"retry-after": str(60)}``, which the proxy relays only as
``llm_provider-retry-after`` (see :data:`LITELLM_RELAYED_429`): the proxy's exception handler
(``litellm/proxy/common_request_processing.py::_handle_llm_api_exception``) copies
``get_response_headers(dict(e.response.headers))``, and ``get_response_headers`` keeps only the
four ``x-ratelimit-{limit,remaining}-{requests,tokens}`` names bare and prefixes every other one
with ``llm_provider-``. Either way no bare ``retry-after`` and no ``x-ratelimit-*`` reach the
client, which is what issue 15 observed with LiteLLM 1.108.7. LiteLLM adds its own
``x-litellm-*`` headers (call id, version...), which carry no rate-limit information and are
left out here.

``code`` is the integer 429 in this capture; LiteLLM's current docs
(https://docs.litellm.ai/docs/proxy/error_reference) show it as the string ``"429"``. A client
must accept both.
"""

LITELLM_NO_DEPLOYMENTS_429 = RealShape(
    status=429,
    headers=JSON,
    body={
        "error": {
            "message": "No deployments available for selected model, Try again in 60 seconds. "
            "Passed model=fake-openai-endpoint-rate-limits. pre-call-checks=False, "
            "allowed_model_region=n/a",
            "type": "None",
            "param": "None",
            "code": 429,
        }
    },
    source="CRS-Sandbox LiteLLM README (captured body); BerriAI/litellm "
    "litellm/types/router.py RouterRateLimitError",
)
"""The router's follow-up 429 once every deployment of the group is cooling down.

Captured right after :data:`LITELLM_DEPLOYMENT_429` ("followed by: ... for subsequent
attempts"), in the same CRS-Sandbox README::

    {"error":{"message":"No deployments available for selected model, Try again in 60 seconds.
     Passed model=fake-openai-endpoint-rate-limits. pre-call-checks=False,
     allowed_model_region=n/a","type":"None","param":"None","code":429}}

Built by ``RouterRateLimitError`` (``litellm/types/router.py``, a ``ValueError`` with no
headers): ``f"{RouterErrors.no_deployments_available.value}, Try again in {cooldown_time}
seconds. Passed model={model}. pre-call-checks={enable_pre_call_checks},
cooldown_list={cooldown_list}"`` (newer versions say ``cooldown_list=`` where this capture says
``allowed_model_region=``). The "Try again in 60 seconds" is in the text only: no header.
"""

LITELLM_KEY_LIMIT_429 = RealShape(
    status=429,
    headers={
        **JSON,
        "retry-after": "60",
        "rate_limit_type": "requests",
        "reset_at": "2026-07-12 08:05:00 UTC",
    },
    body={
        "error": {
            "message": "Rate limit exceeded for api_key: hashed-key-1a2b3c. Limit type: requests. "
            "Current limit: 5, Remaining: 0. Limit resets at: 2026-07-12 08:05:00 UTC",
            "type": "None",
            "param": "None",
            "code": "429",
        }
    },
    source="BerriAI/litellm litellm/proxy/hooks/parallel_request_limiter_v3.py "
    "(async_pre_call_hook)",
)
"""A 429 from LiteLLM's per-key limiter (v3, the default ``parallel_request_limiter_v3``).

``litellm/proxy/hooks/parallel_request_limiter_v3.py``::

    detail = (
        f"Rate limit exceeded for {descriptor['key']}: {descriptor['value']}. "
        f"Limit type: {rate_limit_type}. "
        f"Current limit: {current_limit}, Remaining: {remaining_display}. "
        f"Limit resets at: {reset_time_formatted}"
    )
    raise ParallelRequestLimitError(
        message=detail,
        headers={
            "retry-after": str(self.window_size),
            "rate_limit_type": str(status["rate_limit_type"]),
            "reset_at": reset_time_formatted,
        },
    )

with ``self.window_size = int(os.getenv("LITELLM_RATE_LIMIT_WINDOW_SIZE", 60))`` and
``reset_time_formatted = datetime.fromtimestamp(now + window_size).strftime("%Y-%m-%d %H:%M:%S
UTC")`` ("Conservative estimate": always a full window, whatever is left of it). The window is
fixed and starts at the key's first request (``window_start`` in the Lua script), not at a
calendar minute. A third-party test quotes the same message for the tokens limit
(``Limit type: tokens``).

The body's ``type``/``param`` are the proxy's generic mapping of an ``HTTPException``
(``type=getattr(e, "type", "None")``, ``param=getattr(e, "param", "None")``, code as a string);
the exact ``type`` on the wire was not confirmed by a capture.
"""

LITELLM_KEY_SUCCESS_HEADERS = RealShape(
    status=200,
    headers={
        "x-ratelimit-api_key-limit-requests": "5",
        "x-ratelimit-api_key-remaining-requests": "4",
        "x-ratelimit-api_key-limit-tokens": "100000",
        "x-ratelimit-api_key-remaining-tokens": "99950",
    },
    source="BerriAI/litellm litellm/proxy/hooks/_rate_limit_headers.py and "
    "parallel_request_limiter_v3.py (async_post_call_success_hook)",
)
"""The per-key headers LiteLLM's v3 limiter puts on an admitted response.

``litellm/proxy/hooks/_rate_limit_headers.py``: "Populate x-ratelimit-* entries ... in
``x-ratelimit-{descriptor}-{remaining,limit}-{type}`` form"::

    prefix = f"x-ratelimit-{descriptor_key}"
    headers.setdefault(f"{prefix}-remaining-{rate_limit_type}", status.get("limit_remaining"))
    headers.setdefault(f"{prefix}-limit-{rate_limit_type}", status.get("current_limit"))

``descriptor_key`` is ``api_key`` for a key's limits (also ``user``, ``team``, ``team_member``,
``end_user``, ``model_per_key``). There is no ``reset`` header in this family. A third-party
quota test asserts "first call against rpm_limit=5 must leave 4 remaining" with these names
(the values above). ``max_parallel_requests`` gets the same pair
(``x-ratelimit-api_key-limit-max_parallel_requests``).
"""

LITELLM_RELAYED_429 = RealShape(
    status=429,
    headers={
        **JSON,
        "llm_provider-retry-after": "7",
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "llm_provider-x-ratelimit-limit-requests": "3",
        "llm_provider-x-ratelimit-remaining-requests": "0",
        "llm_provider-x-ratelimit-reset-requests": "20s",
    },
    body={
        "error": {
            "message": "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit "
            "reached for gpt-4o-mini in organization org-abc on requests per min (RPM): "
            "Limit 3, Used 3.",
            "type": "throttling_error",
            "param": None,
            "code": "429",
        }
    },
    source="BerriAI/litellm litellm/litellm_core_utils/llm_response_utils/get_headers.py; "
    "https://docs.litellm.ai/docs/proxy/error_reference",
)
"""An upstream provider's 429 relayed by the LiteLLM proxy: ``Retry-After`` becomes
``llm_provider-retry-after``.

``get_headers.py`` ("Sets the Appropriate OpenAI headers for the response and forward all
headers as llm_provider-{header}")::

    if "x-ratelimit-limit-requests" in _response_headers: openai_headers[...] = ...
    ... (the same for remaining-requests, limit-tokens, remaining-tokens)
    for k, v in response_headers.items():
        if "llm_provider" not in k:
            llm_provider_headers["{}-{}".format("llm_provider", k)] = v

So the upstream ``retry-after: 7`` reaches the client only as ``llm_provider-retry-after: 7``
(a third-party gateway test asserts exactly that), the four limit/remaining headers also come
bare, and ``x-ratelimit-reset-*`` only prefixed. Body from LiteLLM's Error Reference ("The error
payload"): ``{"error": {"message": "litellm.RateLimitError: RateLimitError: OpenAIException -
Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM): Limit 3,
Used 3.", "type": "throttling_error", "param": null, "code": "429"}}``. The upstream header
values above are illustrative (the upstream is any OpenAI-style server).
"""

LITELLM_FIXED_WINDOW_SUCCESS_HEADERS = RealShape(
    status=200,
    headers={"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0"},
    source="LiteLLM proxy/hooks/parallel_request_limiter.py (v1), as vendored in "
    "stanfordnlp/dspy@52fdfd6 test_before_pypi/lib/python3.9/site-packages/litellm",
)
"""LiteLLM's v1 per-key limiter: a calendar-minute window, ``remaining`` without a reset header.

``async_pre_call_hook`` keys the counters by calendar minute::

    current_date = datetime.now().strftime("%Y-%m-%d")
    current_hour = datetime.now().strftime("%H")
    current_minute = datetime.now().strftime("%M")
    precise_minute = f"{current_date}-{current_hour}-{current_minute}"
    request_count_api_key = f"{api_key}::{precise_minute}::request_count"

and ``async_post_call_success_hook`` ("Retrieve the key's remaining rate limits.") sets only::

    _additional_headers["x-ratelimit-remaining-requests"] = key_remaining_rpm_limit
    _additional_headers["x-ratelimit-limit-requests"] = key_rpm_limit
    _additional_headers["x-ratelimit-remaining-tokens"] = key_remaining_tpm_limit
    _additional_headers["x-ratelimit-limit-tokens"] = key_tpm_limit

so ``remaining: 0`` comes with no ``x-ratelimit-reset-*``: the count resets at the next calendar
minute. The router's deployment counters (:data:`LITELLM_DEPLOYMENT_429`) use the same
calendar-minute keys (``dt.strftime("%H-%M")``).
"""

LITELLM_FIXED_WINDOW_429 = RealShape(
    status=429,
    headers={**JSON, "retry-after": "37.512345"},
    body={
        "error": {
            "message": "LiteLLM Rate Limit Handler for rate limit type = key. Max parallel request "
            "limit reached. current rpm: 61, rpm limit: 60, current tpm: 100, tpm limit: 8000, "
            "current max_parallel_requests: 1, max_parallel_requests: 10",
            "type": "None",
            "param": "None",
            "code": "429",
        }
    },
    source="LiteLLM proxy/hooks/parallel_request_limiter.py (v1), as vendored in "
    "stanfordnlp/dspy@52fdfd6",
)
"""The v1 limiter's 429: ``Retry-After`` is the float seconds to the next calendar minute.

``check_key_in_limits``::

    raise HTTPException(
        status_code=429,
        detail=f"LiteLLM Rate Limit Handler for rate limit type = {rate_limit_type}. "
               f"{CommonProxyErrors.max_parallel_request_limit_reached.value}. current rpm: "
               f"{current['current_rpm']}, rpm limit: {rpm_limit}, current tpm: ..., tpm limit: "
               f"..., current max_parallel_requests: ..., max_parallel_requests: ...",
        headers={"retry-after": str(self.time_to_next_minute())},
    )

where ``time_to_next_minute()`` returns ``(next_minute - now).total_seconds()`` (a float, so
``str()`` gives e.g. ``"37.512345"``). The message text is the one a third-party test quotes
"verbatim ... from BerriAI/litellm source". ``type``/``param``/``code`` as in
:data:`LITELLM_KEY_LIMIT_429` (the proxy's ``HTTPException`` mapping; not captured).
"""

LITELLM_HOLD_MAX_S = 60.0
"""How long LiteLLM's proxy holds an over-limit request (retrying it itself) before answering.

``litellm/proxy/proxy_server.py``::

    if global_max_parallel_request_retries_env is None:
        global_max_parallel_request_retries: int = 3
    ...
    if global_max_parallel_request_retry_timeout_env is None:
        global_max_parallel_request_retry_timeout: float = 60.0

(``LITELLM_GLOBAL_MAX_PARALLEL_REQUEST_RETRIES`` / ``..._RETRY_TIMEOUT`` in the config docs:
"Maximum retries for parallel requests" / "Timeout for retries of parallel requests"). The
chat route is wrapped in ``backoff.on_exception(backoff.expo, ..., max_tries=...,
max_time=...)`` whose ``giveup`` retries only a ``ProxyException`` whose message contains "Max
parallel request limit reached" (the v1 limiter's 429, :data:`LITELLM_FIXED_WINDOW_429`); the
config doc lists ``disable_retry_on_max_parallel_request_limit_error: boolean # turn off retries
when max parallel request limit is reached``. Issue 14801 on BerriAI/litellm describes the
result: "After a cooldown period, LiteLLM will try to process the 20 remaining requests, 10 will
succeed" -- the client waits and then gets a 200. Not a wire shape: a behaviour, so this is the
hold's upper bound in seconds.
"""

LITELLM_UNKNOWN_KEY_400 = RealShape(
    status=400,
    headers=JSON,
    body={
        "error": {
            "message": "No connected db.",
            "type": "no_db_connection",
            "param": None,
            "code": "400",
        }
    },
    source="BerriAI/litellm litellm/proxy/auth/user_api_key_auth.py",
)
"""LiteLLM's answer to a key that is not the master key when no database is connected.

``user_api_key_auth.py``::

    ## Check DB
    if (
        prisma_client is None
    ):  # if both master key + user key submitted, and user key != master key, and no db
        # connected, raise an error
        raise ProxyException(
            message="No connected db.",
            type=ProxyErrorTypes.no_db_connection,
            code=400,
            param=None,
        )

``ProxyException`` stores the code as a string (LiteLLM's ``core_helpers`` notes "ProxyException
stores the status on .code (as a str)"), so the wire ``code`` is ``"400"``. Issue 15 observed
this 400 from LiteLLM 1.108.7; newer auth handlers may turn other database errors into 503s.
"""

LITELLM_PROMPT_CACHING_USAGE = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920},
    "completion_tokens_details": {"reasoning_tokens": 0},
    "cache_creation_input_tokens": 0,
}
"""The OpenAI-format ``usage`` LiteLLM returns for Anthropic models, with Anthropic's cache field.

https://docs.litellm.ai/docs/completion/prompt_caching: "For the supported providers, LiteLLM
follows the OpenAI prompt caching usage object format" (this object, with ``# ANTHROPIC_ONLY #
"cache_creation_input_tokens": 0``). "prompt_tokens: These are all prompt tokens including
cache-miss and cache-hit input tokens ... cached_tokens: Tokens that were a cache-hit for that
call ... ANTHROPIC_ONLY: cache_creation_input_tokens are the number of tokens that were written to
cache. (Anthropic charges for this)."
"""

# ---------------------------------------------------------------------------------------------
# Azure OpenAI
# ---------------------------------------------------------------------------------------------

AZURE_API_KEY_HEADER = "api-key"
"""Azure OpenAI's key header (instead of ``Authorization: Bearer``).

openai/openai-python 3.3.1 ``src/openai/lib/azure.py``: ``return {"api-key": self.api_key}`` and
"Expected either api_key, azure_ad_token or azure_ad_token_provider to be set. Or for one of the
`Authorization` or `api-key` headers to be explicitly supplied".
"""

AZURE_429 = RealShape(
    status=429,
    headers={
        **JSON,
        "x-rate-limit-reset-tokens": "55",
        "policy-id": "DeploymentRatelimit-Token",
        "x-ms-region": "West US",
    },
    body={
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
            "version 2024-02-15-preview have exceeded token rate limit of your current OpenAI "
            "S0 pricing tier. Please retry after 3 seconds. Please go here: "
            "https://aka.ms/oai/quotaincrease if you would like to further increase the "
            "default rate limit.",
        }
    },
    source="openai/openai-python issue 937 (captured headers, 2023-12); message as quoted in "
    "Microsoft Q&A and Tencent Cloud captures",
)
"""An Azure OpenAI 429 without ``Retry-After`` (issue openai-python#937).

"recently the Azure API stopped returning the `Retry-After` header in case of limit errors and
now return `x-rate-limit-reset-tokens`". Captured headers (as the issue quotes them)::

    (b'Content-Length', b'329'), (b'Content-Type', b'application/json'),
    (b'x-rate-limit-reset-tokens', b'55'), (b'apim-request-id', b'<uuid>'),
    (b'Strict-Transport-Security', ...), (b'x-content-type-options', b'nosniff'),
    (b'policy-id', b'DeploymentRatelimit-Token'), (b'x-ms-region', b'West US'),
    (b'x-ratelimit-remaining-requests', b...

(the excerpt ends inside ``x-ratelimit-remaining-requests``: its value could not be read, so it
is left out here). Body: Azure's own error object has ``code`` and ``message`` only (no
``type``/``param``): ``{"error":{"code":"429","message": "Requests to the ... Operation under
Azure OpenAI API version ... have exceeded token rate limit of your current OpenAI S0 pricing
tier. Please retry after 1 second. Please go here: https://aka.ms/oai/quotaincrease if you would
like to further increase the default rate limit."}}`` (a Tencent Cloud capture; Microsoft Q&A
quotes the same sentence for ``ChatCompletions_Create``). Another capture
(Azure-Samples/graphrag-accelerator#129) shows ``{'error': {'code': '429', 'message': 'Rate limit
is exceeded. Try again in 50 seconds.'}}``.
"""

AZURE_429_RETRY_AFTER = RealShape(
    status=429,
    headers={
        **JSON,
        "retry-after": "45",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-remaining-tokens": "0",
    },
    body=AZURE_429.body,
    source="icereed/paperless-gpt issue 814 (2025-12); Azure/azure-rest-api-specs issue 26884",
)
"""An Azure OpenAI 429 with ``Retry-After`` and the two ``remaining`` headers only.

paperless-gpt#814 (2025-12, Azure ``gpt-4.1-nano``): "Azure does respond with an header in case
of status code 429 `Retry-After: <seconds>`" ("... Please retry after 45 seconds."). Which limit
headers Azure sends: azure-rest-api-specs#26884 (2024-04): "the only headers that are available
are `x-ratelimit-remaining-requests` and `x-ratelimit-remaining-tokens`" -- no ``limit`` and no
``reset`` headers. The ``0`` values are illustrative.
"""

AZURE_SUCCESS_HEADERS = RealShape(
    status=200,
    headers={
        **JSON,
        "x-ms-region": "North Central US",
        "x-ratelimit-remaining-requests": "79",
        "x-ratelimit-remaining-tokens": "61353",
    },
    source="EvolvingPrograms/oaib issue 11 (captured headers, 2024-03)",
)
"""The rate-limit headers of an Azure OpenAI 200: ``remaining`` only, no limit, no reset.

Captured: ``{'cache-control': 'no-cache, must-revalidate', 'content-length': '831',
'content-type': 'application/json', 'access-control-allow-origin': '*', 'apim-request-id':
'bb94...', 'x-ms-region': 'North Central US', 'x-ratelimit-remaining-requests': '79',
'x-ratelimit-remaining-tokens': '61353', 'x-accel-buffering': 'no', 'x-request-id': '3a8b...',
'x-ms-client-request-id': 'bb94...', 'azureml-model-session': 'd008-20240215231538', ...}``.
(In 2025-11 users also reported ``x-ratelimit-limit-tokens: -1`` / ``remaining-tokens: -1`` /
``reset-tokens: 0`` on Azure's Responses API: openai/openai-dotnet#838.)
"""

AZURE_EMPTY_CHOICES = RealShape(
    status=200,
    headers=JSON,
    body={
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [
            {
                "prompt_index": 0,
                "content_filter_results": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "self_harm": {"filtered": False, "severity": "safe"},
                    "sexual": {"filtered": False, "severity": "safe"},
                    "violence": {"filtered": False, "severity": "safe"},
                },
            }
        ],
    },
    source="madox2/vim-ai issue 72 (Azure, 2023-12); InternLM/MindSearch issue 310 (2025-07)",
)
"""A body with ``choices: []`` (Azure's prompt-filter chunk, seen as a whole response).

vim-ai#72: "the response from the API contains an empty 'choices' array ... Here's an example
response: {'id': '', 'object': '', 'created': 0, 'model': '', 'prompt_filter_results':
[{'prompt_index': 0, 'content_filter_results': {'hate': {'filtered': False, 'severity':
'safe'}, ...}}], 'choices': []}". MindSearch#310 quotes the same object (with an extra
``jailbreak`` result) as a proxied Azure response. Other OpenAI-compatible gateways return
``choices: []`` in a 200 too (pydantic-ai#7909: ``{"id": "123", "choices": [], "created":
1704067200, "model": "gpt-4o-123", "object": "chat.completion"}``).
"""

# ---------------------------------------------------------------------------------------------
# Groq
# ---------------------------------------------------------------------------------------------

GROQ_SUCCESS_HEADERS = RealShape(
    status=200,
    headers={
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-limit-tokens": "18000",
        "x-ratelimit-remaining-requests": "14370",
        "x-ratelimit-remaining-tokens": "17997",
        "x-ratelimit-reset-requests": "2m59.56s",
        "x-ratelimit-reset-tokens": "7.66s",
    },
    source="https://console.groq.com/docs/rate-limits",
)
"""Groq's rate-limit headers: the *requests* family is per day (RPD), the tokens per minute.

console.groq.com/docs/rate-limits: "Rate limits are measured in: RPM: Requests per minute, RPD:
Requests per day, TPM: Tokens per minute, TPD: Tokens per day ..." and the headers table, as a
summary of it puts it: "x-ratelimit-limit-requests: your RPD (requests per day) cap;
x-ratelimit-limit-tokens: TPM cap; x-ratelimit-remaining-requests / -remaining-tokens;
x-ratelimit-reset-requests / -reset-tokens: when the window resets; retry-after: set only on
429s" (the docs: "The retry-after header (in seconds) is set only when a 429 is returned").
The groq_sdk Dart package names the same values ``totalRequestsPerDay``,
``remainingRequestsToday``, ``totalTokensPerMinute``, ``remainingTokensThisMinute``.

The reset values ``2m59.56s`` / ``7.66s`` are the docs' examples (quoted by several independent
parsers: "Parse Groq-style duration strings such as 940ms, 7.66s, or 2m59.56s"). The limit and
remaining numbers are illustrative: the docs' table itself could not be retrieved verbatim.
The RPM limit Groq also enforces appears in no header.
"""

GROQ_429 = RealShape(
    status=429,
    headers={**JSON, "retry-after": "6", **GROQ_SUCCESS_HEADERS.headers},
    body={
        "error": {
            "message": "Rate limit reached for model gemma2-9b-it in organization ... service "
            "tier on_demand on tokens per minute (TPM): Limit 15000, Used 11972, Requested "
            "4351. Please try again in 5.289s. Visit https://console.groq.com/docs/rate-limits "
            "for more information.",
            "type": "tokens",
            "code": "rate_limit_exceeded",
        }
    },
    source="Aider-AI/aider issue 3265 (captured body, via LiteLLM's GroqException)",
)
"""A Groq 429: OpenAI-like body without ``param``, plus ``retry-after`` in seconds.

Captured body: ``b'{"error":{"message":"Rate limit reached for model gemma2-9b-it in
organization ... service tier on_demand on tokens per minute (TPM): Limit 15000, Used 11972,
Requested 4351. Please try again in 5.289s. Visit https://console.groq.com/docs/rate-limits for
more information.","type":"tokens","code":"rate_limit_exceeded"}}\\n'`` (the organization id
was elided in the capture). ``retry-after`` only on 429s, in seconds (docs, see
:data:`GROQ_SUCCESS_HEADERS`); its value here is illustrative.
"""

# ---------------------------------------------------------------------------------------------
# vLLM
# ---------------------------------------------------------------------------------------------

VLLM_CONTEXT_LENGTH_LEGACY = RealShape(
    status=400,
    headers=JSON,
    body={
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, you requested "
        "4196 tokens (196 in the messages, 4000 in the completion). Please reduce the length "
        "of the messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
    source="vllm-project/vllm@0030b9ff vllm/entrypoints/openai/serving_engine.py and "
    "protocol.py (v0.5-v0.10 era)",
)
"""vLLM's old error shape (flat, ``"object": "error"``) for a context-length overflow.

``protocol.py``::

    class ErrorResponse(OpenAIBaseModel):
        object: str = "error"
        message: str
        type: str
        param: Optional[str] = None
        code: int

``serving_engine.py``: ``create_error_response(message, err_type="BadRequestError",
status_code=HTTPStatus.BAD_REQUEST)`` -> ``ErrorResponse(message=message, type=err_type,
code=status_code.value)``, and ``_validate_prompt_and_tokenize``::

    raise ValueError(
        f"This model's maximum context length is "
        f"{self.max_model_len} tokens. However, you requested "
        f"{request.max_tokens + token_num} tokens "
        f"({token_num} in the messages, "
        f"{request.max_tokens} in the completion). "
        f"Please reduce the length of the messages or completion.", )

(with no ``max_tokens``: "... However, you requested {token_num} tokens in the messages, Please
reduce the length of the messages."). Still the shape of SGLang's ``ErrorResponse``.
"""

VLLM_CONTEXT_LENGTH = RealShape(
    status=400,
    headers=JSON,
    body={
        "error": {
            "message": "'max_tokens' or 'max_completion_tokens' is too large: 3072. This model's "
            "maximum context length is 8192 tokens and your request has 6000 input tokens "
            "(3072 > 8192 - 6000).",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    },
    source="vllm-project/vllm vllm/entrypoints/openai/engine/serving.py and "
    "engine/protocol.py (v0.10.1+); captured body quoted as 'Exact vLLM 0.13'",
)
"""vLLM's new error shape (``{"error": {...}}``) for ``max_tokens`` too large for the context.

``engine/protocol.py``::

    class ErrorInfo(OpenAIBaseModel):
        message: str
        type: str
        param: str | None = None
        code: int

    class ErrorResponse(OpenAIBaseModel):
        error: ErrorInfo

(``code`` "is set to the HTTP status value (``code=status_code.value``)"). The check in
``engine/serving.py``::

    raise VLLMValidationError(
        "'max_tokens' or 'max_completion_tokens' is too large: "
        f"{max_tokens}. This model's maximum context length is "
        f"{self.max_model_len} tokens and your request has "
        f"{token_num} input tokens ({max_tokens} > {self.max_model_len}"
        f" - {token_num}).",
        parameter="max_tokens", value=max_tokens)

The body above is a third-party test's "Exact vLLM 0.13 pre-inference validation error". Some
deployments show the message with `` (parameter=max_tokens, value=16384)`` appended; and another
test dates the two wordings: "v0.10.1, v0.11.0" for this one, "v0.6.6, v0.8.5" for
:data:`VLLM_CONTEXT_LENGTH_LEGACY`.
"""

VLLM_CONTEXT_LENGTH_INPUT = RealShape(
    status=400,
    headers=JSON,
    body={
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, your request "
            "has 9000 input tokens. Please reduce the length of the input messages.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    },
    source="vllm-project/vllm vllm/entrypoints/openai/engine/serving.py",
)
"""vLLM (new shape) when the input alone does not fit.

``engine/serving.py``::

    if token_num >= self.max_model_len:
        raise VLLMValidationError(
            f"This model's maximum context length is "
            f"{self.max_model_len} tokens. However, your request has "
            f"{token_num} input tokens. Please reduce the length of "
            "the input messages.",
            parameter="input_tokens", value=token_num)

The numbers are illustrative; the envelope is :data:`VLLM_CONTEXT_LENGTH`'s. Whether ``param``
carries ``"input_tokens"`` on the wire was not confirmed (the captured 0.13 body has ``null``).
"""

# ---------------------------------------------------------------------------------------------
# Anthropic
# ---------------------------------------------------------------------------------------------

ANTHROPIC_PROMPT_TOO_LONG = RealShape(
    status=400,
    headers=JSON,
    body={
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 208310 tokens > 200000 maximum",
        },
        "request_id": "req_011CVQe1dLrGNMJyE1ghG1av",
    },
    source="anthropics/claude-code issue 12186 (captured body)",
)
"""Anthropic's context-length 400: ``invalid_request_error`` "prompt is too long".

Captured: ``Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"prompt
is too long: 208310 tokens > 200000 maximum"},"request_id":"req_011CVQe1dLrGNMJyE1ghG1av"}``.
The envelope is Anthropic's documented error shape (platform.claude.com/docs/en/api/errors:
"400 - invalid_request_error: There was an issue with the format or content of your request";
anthropic-sdk-python 0.121.0 ``types/shared/error_response.py``: ``error: ErrorObject``,
``request_id: Optional[str]``, ``type: Literal["error"]``).
"""

ANTHROPIC_OVERLOADED = RealShape(
    status=529,
    headers=JSON,
    body={
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_011CdCL7J51rberVrk9z6e45",
    },
    source="https://docs.llmgateway.io/troubleshooting/anthropic-529-overloaded; "
    "anthropic-sdk-python 0.121.0 src/anthropic/_client.py",
)
"""Anthropic's 529 ``overloaded_error``.

``{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}`` (LLM
Gateway's troubleshooting page, and claude-code's "API Error: 529 Overloaded"). The SDK maps the
status: ``if response.status_code == 529: return _exceptions.OverloadedError(...)``; its
``OverloadedError`` model is ``message: str; type: Literal["overloaded_error"]``. Anthropic's
errors page: "The response also includes a request_id" -- the id here is the format of the
captured 500 ``{"type":"error","error":{"type":"api_error","message":"Internal server
error"},"request_id":"req_011CdCL7J51rberVrk9z6e45"}`` (claude-code#79255).
"""

ANTHROPIC_CREDIT_BALANCE = RealShape(
    status=400,
    headers=JSON,
    body={
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "Your credit balance is too low to access the Anthropic API. Please go to "
            "Plans & Billing to upgrade or purchase credits.",
        },
        "request_id": "req_011CbrFTcXhtiMzr3s6EocF7",
    },
    source="anthropics/claude-code issue 66314 (captured body, 2026-06); "
    "anthropics/claude-quickstarts issue 83",
)
"""Anthropic's "credit balance is too low" -- a 400 ``invalid_request_error``, not a 402/429.

Captured: ``Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"Your
credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or
purchase credits."},"request_id":"req_011CbrFTcXhtiMzr3s6EocF7"}``. The same body without
``request_id`` in 2025-07 (claude-code#4684) and 2024-10 (claude-quickstarts#83). A key with this
answer is out of money: every request with it fails the same way.
"""

ANTHROPIC_429 = RealShape(
    status=429,
    headers={**JSON, "retry-after": "13"},
    body={
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "This request would exceed the rate limit for your organization "
            "(0dccdde6-f924-4f1b-bb3b-92ef846e0a5b) of 20,000 input tokens per minute. For "
            "details, refer to: https://docs.anthropic.com/en/api/rate-limits. You can see the "
            "response headers for current usage. Please reduce the prompt length or the maximum "
            "tokens requested, or try again later. You may also contact sales at "
            "https://www.anthropic.com/contact-sales to discuss your options for a rate limit "
            "increase.",
        },
    },
    source="OpenHands/OpenHands issue 9259 (captured body, 2025-06)",
)
"""Anthropic's 429 ``rate_limit_error``, with ``retry-after``.

Captured (via LiteLLM's AnthropicException): ``{"type":"error","error":{"type":
"rate_limit_error","message":"This request would exceed the rate limit for your organization
(0dccdde6-...) of 20,000 input tokens per minute. For details, refer to: https://docs.anthropic
.com/en/api/rate-limits. ..."}}``; 2026 captures link docs.claude.com instead. The errors page:
"429 - rate_limit_error: Your organization has hit a rate limit"; a tier spend-cap 429 has no
``retry-after``. The ``retry-after`` value is illustrative (seconds; see
:data:`ANTHROPIC_SUCCESS_HEADERS`).
"""

ANTHROPIC_SUCCESS_HEADERS = RealShape(
    status=200,
    headers={
        **JSON,
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "80000",
        "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "16000",
        "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:41:00Z",
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "999",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-tokens-limit": "96000",
        "anthropic-ratelimit-tokens-remaining": "96000",
        "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:59Z",
        "request-id": "req_011CSLsW7mFqvHHnzrKdKjAE",
    },
    source="CRAN tidyllm tests/testthat/claude/api.anthropic.com/v1/messages-e050b5-POST.R "
    "(recorded 2025-08-21)",
)
"""Anthropic's ``anthropic-ratelimit-*`` headers on a 200, all four families.

Recorded response headers (``POST https://api.anthropic.com/v1/messages``, status 200):
``anthropic-ratelimit-input-tokens-limit = "80000"``, ``-input-tokens-remaining = "80000"``,
``-input-tokens-reset = "2025-08-21T12:40:59Z"``, ``-output-tokens-limit = "16000"``, ...,
``-requests-limit = "1000"``, ``-requests-remaining = "999"``, ``-requests-reset =
"2025-08-21T12:40:59Z"``, ``-tokens-limit = "96000"``, ..., ``request-id =
"req_011CSLsW7mFqvHHnzrKdKjAE"``. Resets are absolute RFC 3339 times, not durations; the
``tokens`` family is input + output combined (AWS's Claude Platform guide:
"anthropic-ratelimit-tokens-limit -- Maximum combined tokens (input + output) per minute ...
anthropic-ratelimit-requests-reset -- Time when the request limit resets (RFC 3339)").
"""

ANTHROPIC_USAGE_WITH_CACHE = {
    "input_tokens": 21,
    "cache_creation_input_tokens": 1800,
    "cache_read_input_tokens": 0,
    "output_tokens": 393,
}
"""The ``usage`` of an Anthropic Messages response, with the prompt-cache counters.

anthropic-sdk-python 0.121.0 ``src/anthropic/types/usage.py``::

    cache_creation_input_tokens: Optional[int] = None
    \"\"\"The number of input tokens used to create the cache entry.\"\"\"
    cache_read_input_tokens: Optional[int] = None
    \"\"\"The number of input tokens read from the cache.\"\"\"
    input_tokens: int
    \"\"\"The number of input tokens which were used.\"\"\"
    output_tokens: int

``input_tokens`` counts only the uncached part: "Anthropic's input_tokens excludes cached
tokens, so you must add them: total_input = input_tokens + cache_read_input_tokens +
cache_creation_input_tokens" (letta's provider-usage notes; tanstack/ai 0.8.0 changed its
adapter for the same reason). The SDK's own fixtures show the fields with zeros
(``"usage":{"input_tokens":28,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,...``);
the non-zero numbers here are illustrative.
"""

# ---------------------------------------------------------------------------------------------
# OpenAI and OpenAI-compatible servers
# ---------------------------------------------------------------------------------------------

OPENAI_USAGE_DETAILS = {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
"""OpenAI's ``usage`` with ``prompt_tokens_details`` and ``completion_tokens_details``.

The chat completion example in openai/openai-python 3.3.1 ``api_reference/openapi.transformed.yml``
(the API reference's response example), verbatim. ``src/openai/types/completion_usage.py``:
``cached_tokens: "Cached tokens present in the prompt."``, ``reasoning_tokens: "Tokens generated
by the model for reasoning."``; ``prompt_tokens`` includes the cached tokens and
``completion_tokens`` the reasoning ones ("like reasoning tokens, these tokens are still counted
in the total completion tokens for purposes of billing").
"""

OPENAI_REFUSAL = RealShape(
    status=200,
    headers=JSON,
    body={
        "id": "chatcmpl-ABfvwoKVWPQj2UPlAcAKM7s40GsRx",
        "object": "chat.completion",
        "created": 1727346164,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": "I'm very sorry, but I can't assist with that.",
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 79,
            "completion_tokens": 12,
            "total_tokens": 91,
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "system_fingerprint": "fp_5050236cbd",
    },
    source="openai/openai-python 3.3.1 tests/lib/chat/test_completions.py (recorded response)",
)
"""A refusal: ``content: null`` and ``refusal: "..."`` with ``finish_reason: "stop"``.

The recorded API response in openai-python's ``test_completions.py``, verbatim.
``types/chat/chat_completion_message.py``: ``content: Optional[str] = None  # The contents of the
message.`` / ``refusal: Optional[str] = None  # The refusal message generated by the model.``
"""

OPENAI_CONTENT_PARTS = RealShape(
    status=200,
    headers=JSON,
    body={
        "id": "6f23a5ac0e2d4ca3a1ccee9c2215fb63",
        "created": 1784737086,
        "model": "mistral-small-latest",
        "usage": {
            "prompt_tokens": 28,
            "total_tokens": 122,
            "completion_tokens": 94,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "tool_calls": None,
                    "content": [
                        {
                            "type": "thinking",
                            "thinking": [
                                {
                                    "type": "text",
                                    "text": "Okay, the user is asking for the product of 17 and "
                                    "23. Let me calculate that.\n\nFirst, I recall that 17 "
                                    "times 20 is 340. Then, 17 times 3 is 51. Adding those "
                                    "together gives 340 + 51 = 391.\n\nSo, 17 multiplied by 23 "
                                    "equals 391.",
                                }
                            ],
                            "closed": True,
                        },
                        {"type": "text", "text": "391"},
                    ],
                },
            }
        ],
    },
    source="vercel/ai packages/openai-compatible/src/chat/__fixtures__/"
    "issue-13703-mistral-thinking.json (recorded live)",
)
"""``message.content`` as a list of parts (Mistral, a 200 from its OpenAI-compatible API).

vercel/ai PR 17784: "Direct Mistral `mistral-small-latest` requests returned HTTP 200 with
documented array-based `thinking` and `text` content in both non-stream and stream responses ...
Live responses were recorded in ...issue-13703-mistral-thinking.json" (this body, verbatim). The
answer is the ``text`` part; the ``thinking`` part is reasoning.
"""

OPENAI_401_INVALID_API_KEY = RealShape(
    status=401,
    headers=JSON,
    body={
        "error": {
            "message": "Incorrect API key provided: sk-VKMIs***************************************"
            "wjh3. You can find your API key at https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    },
    source="chatanywhere/GPT_API_free issue 62 (captured body); "
    "https://platform.openai.com/docs/guides/error-codes",
)
"""OpenAI's 401 ``invalid_api_key``.

Captured: ``{"error":{"message":"Incorrect API key provided: sk-VKMIs***...wjh3. You can find
your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error",
"param":null,"code":"invalid_api_key"}}``. Error codes guide: "401 - Incorrect API key provided
| Cause: The requesting API key is not correct." The envelope is the API reference's
``ErrorResponse`` (openapi.transformed.yml: ``Error`` requires ``type``, ``message``, ``param``,
``code``; ``code`` and ``param`` are string or null).
"""

OPENAI_429_RATE_LIMIT = RealShape(
    status=429,
    headers=JSON,
    body={
        "error": {
            "message": "Rate limit reached for gpt-4o in organization org-78asdf87asdf9aaa8976 on "
            "tokens per min (TPM): Limit 30000, Used 14567, Requested 24754. Please try again "
            "in 18.642s. Visit https://platform.openai.com/account/rate-limits to learn more.",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    },
    source="TheR1D/shell_gpt issue 653 and semanser/codel issue 72 (captures)",
)
"""OpenAI's 429 ``rate_limit_exceeded``; ``type`` names the limit (``tokens`` / ``requests``).

Captures: ``{'error': {'message': 'Request too large for gpt-4o in organization org-78asdf...
on tokens per min (TPM): Limit 30000, Requested 31538. ...', 'type': 'tokens', 'param': None,
'code': 'rate_limit_exceeded'}}`` (shell_gpt#653) and the message "Rate limit reached for gpt-4o
in organization XXXXXXXXX on tokens per min (TPM): Limit 30000, Used 14567, Requested 24754.
Please try again in 18.642s. Visit https://platform.openai.com/account/rate-limits to learn
more." (codel#72). Headers: ``x-ratelimit-*`` and ``retry-after``/``retry-after-ms`` (the SDK
reads ``retry-after-ms`` first: openai-python ``_base_client.py``); not captured with these
bodies, so not listed.
"""

OPENAI_429_INSUFFICIENT_QUOTA = RealShape(
    status=429,
    headers=JSON,
    body={
        "error": {
            "message": "You exceeded your current quota, please check your plan and billing "
            "details. For more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    },
    source="dev-hato/hato-bot PR 4552 (2024-12) and langchain-ai/chat-langchain issue 428 "
    "(2025-04), captured",
)
"""OpenAI's 429 ``insufficient_quota`` -- a 429 that no wait fixes.

Captured: ``openai.RateLimitError: Error code: 429 - {'error': {'message': 'You exceeded your
current quota, please check your plan and billing details. For more information on this error,
read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.', 'type':
'insufficient_quota', 'param': None, 'code': 'insufficient_quota'}}``. Error codes guide: "429 -
You exceeded your current quota ... Cause: You have run out of credits or hit your maximum
monthly spend."
"""

OPENAI_400_CONTEXT_LENGTH = RealShape(
    status=400,
    headers=JSON,
    body={
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 8227 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    },
    source="crewAIInc/crewAI-examples issue 121 (captured, 2024-06)",
)
"""OpenAI's 400 ``context_length_exceeded``.

Captured: ``openai.BadRequestError: Error code: 400 - {'error': {'message': "This model's maximum
context length is 8192 tokens. However, your messages resulted in 8227 tokens. Please reduce the
length of the messages.", 'type': 'invalid_request_error', 'param': 'messages', 'code':
'context_length_exceeded'}}``. Older models said "However, you requested 4130 tokens (3130 in the
messages, 1000 in the completion). Please reduce the length of the messages or completion."
(chatgpt-web#354, same envelope).
"""

OPENAI_500 = RealShape(
    status=500,
    headers=JSON,
    body={
        "error": {
            "message": "The server had an error processing your request. Sorry about that! You can "
            "retry your request, or contact us through our help center at help.openai.com if you "
            "keep seeing this error. (Please include the request ID "
            "e5c949c8ec2c86be225544e5eefcbe4d in your email.)",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    },
    source="ai-genie/chatgpt-vscode issue 100 (captured, 2023-05)",
)
"""OpenAI's 500 ``server_error`` (``code: null``).

Captured verbatim (this body). Error codes guide: "500 - The server had an error while processing
your request | Cause: Issue on our servers. Solution: Retry your request after a brief wait".
"""
