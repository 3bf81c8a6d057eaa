"""``MockServerConfig``: everything the mock server can be told, as one frozen value."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeAlias, cast, get_args

import attrs
from attrs import validators as v

__all__ = [
    "DEFAULT_FAULT_MIX",
    "FAULT_KINDS",
    "HEADER_DIALECTS",
    "FaultKind",
    "HeaderDialect",
    "LimitWindow",
    "MockServerConfig",
    "UnknownKeyError",
]

FaultKind: TypeAlias = Literal[
    "500",
    "503",
    "529",
    "drop",
    "hang",
    "malformed",
    "context_length",
    "vllm_error",
    "html_502",
    # Real servers' shapes (issue 15; each quoted in tests/real_shapes.py).
    "refusal",
    "content_parts",
    "empty_choices",
    "openai_usage_details",
    "anthropic_cache_usage",
    "vllm_context_legacy",
    "vllm_context",
    "anthropic_prompt_too_long",
    "anthropic_overloaded",
    "anthropic_credit_balance",
    "litellm_unknown_key",
    # Streamed answers (issue 11).
    "stream_error",
    "stream_stall",
    # Issue 11: an answer to a response_format cut in half (not valid JSON).
    "invalid_json",
]
"""A kind of injected fault. See :class:`MockServerConfig` for what the client sees."""

HeaderDialect: TypeAlias = Literal[
    "native", "openai", "none", "litellm", "litellm_relay", "groq", "anthropic", "azure"
]
"""Which server's rate-limit headers (and 429 bodies) the mock imitates; see
:class:`MockServerConfig`."""

HEADER_DIALECTS: tuple[HeaderDialect, ...] = get_args(HeaderDialect)
"""Every header dialect, in a fixed order."""

LimitWindow: TypeAlias = Literal["bucket", "minute"]
"""How a limit is counted: a continuously refilled bucket, or a fixed calendar-minute window."""

UnknownKeyError: TypeAlias = Literal["openai", "litellm"]
"""How an unknown key is refused: OpenAI's 401 ``invalid_api_key`` or LiteLLM's 400
``no_db_connection``."""

FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
"""Every fault kind, in a fixed order."""

# Only faults that a correct client retries, and that cost it no timeout: a random `hang` would
# stall a client until its own deadline and `context_length` is fatal by nature, so both are
# opt-in (through `fault_mix` or a `[[fault:KIND]]` directive).
DEFAULT_FAULT_MIX: tuple[tuple[FaultKind, float], ...] = (
    ("500", 3.0),
    ("503", 2.0),
    ("529", 1.0),
    ("drop", 1.0),
    ("malformed", 1.0),
    ("vllm_error", 1.0),
    ("html_502", 1.0),
)
"""The default weights over fault kinds: retryable faults only."""


def _to_str_tuple(value: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        # "k1,k2" as typed on a command line; a single key is a 1-tuple, not its characters.
        return tuple(k for k in value.split(",") if k)
    return tuple(value)


def _to_quota_keys(value: Iterable[str] | str) -> tuple[str, ...]:
    return _to_str_tuple(value) or ()


def _to_fault_mix(
    value: Mapping[str, float] | Iterable[tuple[str, float]],
) -> tuple[tuple[FaultKind, float], ...]:
    pairs = value.items() if isinstance(value, Mapping) else value
    weights: dict[str, float] = {}
    for kind, weight in pairs:
        kind = str(kind)
        if kind not in FAULT_KINDS:
            msg = f"unknown fault kind {kind!r}; HINT: use one of {', '.join(FAULT_KINDS)}"
            raise ValueError(msg)
        if not weight >= 0:
            msg = f"fault weight for {kind!r} must be >= 0, got {weight!r}"
            raise ValueError(msg)
        weights[kind] = float(weight)
    # Canonical order, so equal mixes compare equal and the draw doesn't depend on dict order.
    return tuple((k, weights[k]) for k in FAULT_KINDS if weights.get(k, 0.0) > 0)


def _to_outage(value: float | str | Iterable[float] | None) -> tuple[float, float] | None:
    """``S`` (the first S seconds), ``"A:B"`` / ``(A, B)`` (from A to B s), or ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        start, sep, end = value.partition(":")
        pair = (float(start), float(end)) if sep else (0.0, float(start))
    elif isinstance(value, int | float):
        pair = (0.0, float(value))
    else:
        start_s, end_s = value
        pair = (float(start_s), float(end_s))
    if not 0 <= pair[0] <= pair[1]:
        msg = f"outage must be 0 <= start <= end seconds, got {pair!r}; HINT: outage=50 or (10, 60)"
        raise ValueError(msg)
    return pair


def _check_fault_mix(
    instance: MockServerConfig, attribute: attrs.Attribute[Any], value: tuple[Any, ...]
) -> None:
    if instance.error_rate > 0 and not value:
        msg = "error_rate > 0 needs at least one fault kind with a positive weight in fault_mix"
        raise ValueError(msg)


_non_negative = v.ge(0.0)


@attrs.frozen(kw_only=True)
class MockServerConfig:
    """How the mock OpenAI-compatible server behaves.

    All randomness (latency draws, the fault draw) derives from ``seed``, and the fault decision
    for a request depends only on ``(seed, prompt, n)``, where ``n`` counts how many times the
    same prompt was admitted before: the same workload sees the same faults in any arrival order,
    and a retry of a faulted prompt is a new draw, so it can succeed.

    Fault kinds (what the client sees):

    - ``"500"``: 500 ``server_error``. ``"503"``: 503 ``server_error`` with
      ``x-should-retry: true``. ``"529"``: Anthropic's "overloaded" status, OpenAI error shape,
      ``x-should-retry: true``. All three carry ``retry-after`` when ``fault_retry_after`` is set.
    - ``"drop"``: a 200 whose headers promise more body than is sent before the connection
      closes (the client sees a protocol / read error).
    - ``"hang"``: no answer at all until the client gives up and disconnects.
    - ``"malformed"``: a 200 with a truncated, invalid JSON body.
    - ``"context_length"``: 400 ``context_length_exceeded`` (not retryable by nature).
    - ``"vllm_error"``: a 500 in vLLM / SGLang's error shape
      (``{"object": "error", "message", "type", "param", "code": 500}``), to check that a client
      reads an error body that isn't OpenAI's. Status 500 (vLLM's shape for internal errors), so
      it is retryable.
    - ``"html_502"``: a 502 with an HTML body, as a proxy in front of a server sends.

    Real servers' shapes (issue 15), each as quoted in ``tests/real_shapes.py``:

    - ``"refusal"``: a 200 with ``content: null`` and ``refusal: "..."`` (OpenAI).
    - ``"content_parts"``: a 200 whose ``content`` is a list of parts, a ``thinking`` part and
      the reply as a ``text`` part (Mistral); streamed, each delta's content is a list too.
    - ``"empty_choices"``: a 200 with ``choices: []`` (Azure's prompt-filter object).
    - ``"openai_usage_details"``: a normal reply whose usage has ``prompt_tokens_details.
      cached_tokens`` (half the prompt) and ``completion_tokens_details.reasoning_tokens``.
    - ``"anthropic_cache_usage"``: a normal reply whose usage carries Anthropic's
      ``cache_creation_input_tokens`` / ``cache_read_input_tokens`` (LiteLLM's OpenAI-format
      usage on chat completions; native usage on ``/v1/messages``).
    - ``"vllm_context_legacy"``: 400 context-length error in vLLM's old flat shape
      (``{"object": "error", ...}``); ``"vllm_context"``: the same in vLLM's new nested shape.
    - ``"anthropic_prompt_too_long"``: Anthropic's 400 "prompt is too long: N tokens > M
      maximum"; ``"anthropic_overloaded"``: Anthropic's 529 ``overloaded_error``;
      ``"anthropic_credit_balance"``: Anthropic's 400 "Your credit balance is too low".
    - ``"litellm_unknown_key"``: LiteLLM's 400 ``no_db_connection`` ("No connected db.").
    - ``"invalid_json"``: a 200 whose answer (JSON for a ``response_format``) is cut in half.

    These are opt-in (never in :data:`DEFAULT_FAULT_MIX`); error bodies keep their server's
    shape on either route.

    Streamed answers (opt-in too):

    - ``"stream_error"``: a 200 stream that breaks off halfway with the API's error event:
      ``data: {"error": {...}}`` on chat completions, ``event: error`` with
      ``overloaded_error`` on ``/v1/messages``, ``response.failed`` on ``/v1/responses``.
      A request that does not stream gets a 500 instead.
    - ``"stream_stall"``: a 200 stream that stops sending halfway and never ends (what an idle
      timeout is for). A request that does not stream hangs instead.

    Rate-limit modes (all off by default):

    - ``headers`` picks whose rate-limit headers and 429 bodies the mock sends: ``"native"``
      (OpenAI's on chat completions, Anthropic's on ``/v1/messages``), ``"openai"``,
      ``"none"`` (no rate-limit header and no Retry-After at all; 429 body of LiteLLM's
      deployment limiter), ``"litellm"`` (the proxy's per-key limiter: with the bucket,
      ``x-ratelimit-api_key-{limit,remaining}-*`` and 429s with ``retry-after: 60``,
      ``rate_limit_type``, ``reset_at``; with ``window="minute"``, the v1 limiter's bare
      ``x-ratelimit-{limit,remaining}-*`` without reset and a float Retry-After to the next
      minute), ``"litellm_relay"`` (an upstream's 429 relayed by LiteLLM: ``llm_provider-
      retry-after``), ``"groq"`` (the requests family is per *day*, from ``rpd``; tokens per
      minute; Retry-After only on 429s), ``"anthropic"`` (``anthropic-ratelimit-*`` with
      RFC 3339 resets, the input/output families from ``itpm``/``otpm``) or ``"azure"``
      (``x-ratelimit-remaining-{requests,tokens}`` only; 429s with Retry-After).
    - ``window="minute"`` counts each limit in fixed calendar minutes instead of the bucket;
      ``remaining`` goes to 0 and no reset header is sent.
    - ``hold_s > 0``: an over-limit request is held (up to that many seconds) until it fits,
      then answered 200, as LiteLLM's proxy does; past that it gets its 429.
    - ``outage=(A, B)``: from A to B seconds after the server's first request every chat
      request gets a 429 with no rate-limit header and no Retry-After, then service resumes.
    - ``start_exhausted``: each key's limits start used up, as if another process had spent
      the window.

    Attributes:
        model: the model id listed by ``GET /v1/models`` and used when a request names none.
        keys: the valid API keys; ``None`` accepts any ``Authorization: Bearer <key>``.
        quota_exhausted_keys: keys that authenticate but always get 429 ``insufficient_quota``
            (on ``/v1/messages``: Anthropic's 400 "credit balance is too low").
        rpm: requests per minute per key; ``None`` is unlimited.
        tpm: tokens per minute per key; ``None`` is unlimited.
        key_rpm: per-key overrides of ``rpm`` (uneven keys: one on a lower tier).
        key_tpm: per-key overrides of ``tpm``.
        burst_s: bucket capacity, in seconds of refill (``capacity = limit / 60 * burst_s``).
        latency: mean seconds before the response starts (a streamed answer's time to first
            token).
        latency_sigma: sigma of a lognormal latency with mean ``latency``; 0 means fixed.
        latency_per_token: extra seconds per completion token (when streaming, the delay between
            one token's chunk and the next).
        error_rate: probability (0..1) that an admitted request gets a fault.
        fault_mix: weights over fault kinds for the random faults (a mapping or pairs).
        fault_retry_after: seconds for ``retry-after`` on 500/503/529 faults; ``None`` sends
            none.
        seed: seeds the latency draws and the fault decisions.
        headers: the rate-limit header dialect (see above).
        window: ``"bucket"`` (default) or ``"minute"`` (fixed calendar-minute counts).
        rpd: requests per day per key (a bucket holding the whole day); ``None`` is unlimited.
            With ``headers="groq"`` the requests headers report it.
        itpm: input tokens per minute per key (Anthropic's ITPM); ``None`` is unlimited.
        otpm: output tokens per minute per key (Anthropic's OTPM, charged at ``max_tokens``
            then refunded to the real length); ``None`` is unlimited.
        hold_s: seconds an over-limit request may be held before it is answered (0: refuse).
        outage: ``(start_s, end_s)`` of a header-less 429 outage, or ``None``; a number ``S``
            means ``(0, S)``.
        start_exhausted: keys start with their limits used up.
        credit_exhausted_keys: keys that authenticate but always get Anthropic's 400 "credit
            balance is too low".
        unknown_key_error: how a key not in ``keys`` is refused: ``"openai"`` (401
            ``invalid_api_key``) or ``"litellm"`` (400 ``no_db_connection``).
        batch_polls: a Batch API batch (OpenAI ``/v1/batches``, Anthropic
            ``/v1/messages/batches``) is done at its ``batch_polls``-th status read:
            completion fast-forwarded, the way a test wants it.
        batch_after_s: or once this many seconds have passed since it was created (on the
            server's clock), whichever comes first.
        embedding_model: the model of ``/v1/embeddings`` when a request names none.
        model_rpm / model_tpm: per-model limits, per key, as providers enforce them: a model
            named here has buckets of its own on every key (and its own headers); other models
            share the key's ``rpm`` / ``tpm``.
    """

    model: str = "mock-gpt"
    keys: tuple[str, ...] | None = attrs.field(default=None, converter=_to_str_tuple)
    quota_exhausted_keys: tuple[str, ...] = attrs.field(default=(), converter=_to_quota_keys)
    rpm: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    tpm: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    key_rpm: Mapping[str, int] = attrs.field(factory=dict, converter=dict)
    key_tpm: Mapping[str, int] = attrs.field(factory=dict, converter=dict)
    burst_s: float = attrs.field(default=1.0, validator=v.gt(0.0))
    latency: float = attrs.field(default=0.0, validator=_non_negative)
    latency_sigma: float = attrs.field(default=0.0, validator=_non_negative)
    latency_per_token: float = attrs.field(default=0.0, validator=_non_negative)
    error_rate: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.le(1.0)])
    fault_mix: tuple[tuple[FaultKind, float], ...] = attrs.field(
        default=DEFAULT_FAULT_MIX, converter=_to_fault_mix, validator=_check_fault_mix
    )
    fault_retry_after: float | None = attrs.field(default=None, validator=v.optional(_non_negative))
    seed: int = 0
    headers: HeaderDialect = attrs.field(default="native", validator=v.in_(HEADER_DIALECTS))
    window: LimitWindow = attrs.field(default="bucket", validator=v.in_(get_args(LimitWindow)))
    rpd: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    itpm: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    otpm: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    hold_s: float = attrs.field(default=0.0, validator=_non_negative)
    outage: tuple[float, float] | None = attrs.field(default=None, converter=_to_outage)
    start_exhausted: bool = False
    credit_exhausted_keys: tuple[str, ...] = attrs.field(default=(), converter=_to_quota_keys)
    unknown_key_error: UnknownKeyError = attrs.field(
        default="openai", validator=v.in_(get_args(UnknownKeyError))
    )
    batch_polls: int = attrs.field(default=2, validator=v.ge(1))
    batch_after_s: float | None = attrs.field(default=None, validator=v.optional(_non_negative))
    # Issue 11: embeddings and per-model limits.
    embedding_model: str = "text-embedding-3-small"
    model_rpm: Mapping[str, int] = attrs.field(factory=dict, converter=dict)
    model_tpm: Mapping[str, int] = attrs.field(factory=dict, converter=dict)

    @property
    def limited(self) -> bool:
        """Whether keys have any rate limit (and so responses carry rate-limit headers)."""
        return bool(
            self.rpm is not None
            or self.tpm is not None
            or self.key_rpm
            or self.key_tpm
            or self.rpd is not None
            or self.itpm is not None
            or self.otpm is not None
            or bool(self.model_rpm)
            or bool(self.model_tpm)
        )

    def limits_of(self, key: str, model: str | None = None) -> tuple[int | None, int | None]:
        """The (rpm, tpm) of one key (for ``model``, if it has limits of its own): its
        override, else the default."""
        rpm, tpm = self.key_rpm.get(key, self.rpm), self.key_tpm.get(key, self.tpm)
        if model is not None and self.has_own_limits(model):
            rpm, tpm = self.model_rpm.get(model, rpm), self.model_tpm.get(model, tpm)
        return rpm, tpm

    def has_own_limits(self, model: str) -> bool:
        """Whether ``model`` has buckets of its own on each key."""
        return model in self.model_rpm or model in self.model_tpm

    def to_json(self) -> str:
        """Serialize to JSON (how :class:`MockServerProcess` hands the config to its child)."""
        data = attrs.asdict(self)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> MockServerConfig:
        """Build a config from :meth:`to_json`'s output."""
        data = cast("dict[str, Any]", json.loads(text))
        data["fault_mix"] = [tuple(pair) for pair in data["fault_mix"]]
        if data.get("outage") is not None:
            data["outage"] = tuple(data["outage"])
        return cls(**data)
