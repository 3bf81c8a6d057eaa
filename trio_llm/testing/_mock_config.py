"""``MockServerConfig``: everything the mock server can be told, as one frozen value."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeAlias, cast, get_args

import attrs
from attrs import validators as v

__all__ = ["DEFAULT_FAULT_MIX", "FAULT_KINDS", "FaultKind", "MockServerConfig"]

FaultKind: TypeAlias = Literal[
    "500", "503", "529", "drop", "hang", "malformed", "context_length", "vllm_error", "html_502"
]
"""A kind of injected fault. See :class:`MockServerConfig` for what the client sees."""

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

    Attributes:
        model: the model id listed by ``GET /v1/models`` and used when a request names none.
        keys: the valid API keys; ``None`` accepts any ``Authorization: Bearer <key>``.
        quota_exhausted_keys: keys that authenticate but always get 429 ``insufficient_quota``.
        rpm: requests per minute per key; ``None`` is unlimited.
        tpm: tokens per minute per key; ``None`` is unlimited.
        key_rpm: per-key overrides of ``rpm`` (uneven keys: one on a lower tier).
        key_tpm: per-key overrides of ``tpm``.
        burst_s: bucket capacity, in seconds of refill (``capacity = limit / 60 * burst_s``).
        latency: mean seconds before the response starts.
        latency_sigma: sigma of a lognormal latency with mean ``latency``; 0 means fixed.
        latency_per_token: extra seconds per completion token (spread over chunks when
            streaming).
        error_rate: probability (0..1) that an admitted request gets a fault.
        fault_mix: weights over fault kinds for the random faults (a mapping or pairs).
        fault_retry_after: seconds for ``retry-after`` on 500/503/529 faults; ``None`` sends
            none.
        seed: seeds the latency draws and the fault decisions.
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

    @property
    def limited(self) -> bool:
        """Whether keys have any rate limit (and so responses carry rate-limit headers)."""
        return bool(self.rpm is not None or self.tpm is not None or self.key_rpm or self.key_tpm)

    def limits_of(self, key: str) -> tuple[int | None, int | None]:
        """The (rpm, tpm) of one key: its override, else the default."""
        return self.key_rpm.get(key, self.rpm), self.key_tpm.get(key, self.tpm)

    def to_json(self) -> str:
        """Serialize to JSON (how :class:`MockServerProcess` hands the config to its child)."""
        data = attrs.asdict(self)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> MockServerConfig:
        """Build a config from :meth:`to_json`'s output."""
        data = cast("dict[str, Any]", json.loads(text))
        data["fault_mix"] = [tuple(pair) for pair in data["fault_mix"]]
        return cls(**data)
