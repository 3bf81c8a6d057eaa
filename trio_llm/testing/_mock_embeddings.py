"""The mock's ``POST /v1/embeddings``: deterministic vectors, the same keys, limits and faults.

Each input's vector is a pure function of its text (sha256, spread over ``[-1, 1)`` and
normalised to length 1), ``dimensions`` long (8 unless the body asks): a test can tell each
vector belongs to its own input even when packs finish out of order. A request is charged one
request and the tokens of every input (``ceil(len / 4)``); ``[[fault:KIND]]`` in any input
applies to the whole request, as a real server fails a request, not an input.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from typing import TYPE_CHECKING, Any, Final

import anyio

from ._mock_content import count_tokens, prompt_digest
from ._mock_headers import limit_headers, resolve_dialect

if TYPE_CHECKING:
    from ._mock_server import MockApp, Receive, Scope, Send

__all__ = ["DEFAULT_DIMENSIONS", "Embed", "embedding_of", "handle_embeddings"]

DEFAULT_DIMENSIONS: Final = 8
_MAX_INPUTS: Final = 2048


def embedding_of(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The mock's vector for ``text``: deterministic, of length 1."""
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{block}\0{text}".encode("utf-8", "surrogatepass")).digest()
        for (word,) in struct.iter_unpack(">I", digest):
            values.append(word / 2**31 - 1.0)
        block += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class Embed:
    """One parsed, priced embeddings request (the fields the server's admission reads)."""

    api: Final = "openai"
    max_tokens: Final = None

    def __init__(self, body: Any, default_model: str) -> None:
        from ._mock_server import _bad_request

        if not isinstance(body, dict):
            raise _bad_request("The request body must be a JSON object.")
        value = body.get("input")
        inputs = [value] if isinstance(value, str) else value
        if not isinstance(inputs, list) or not inputs:
            raise _bad_request("'input' must be a string or a non-empty array.", "input")
        if len(inputs) > _MAX_INPUTS:
            raise _bad_request(f"'input' must have at most {_MAX_INPUTS} items.", "input")
        texts: list[str] = []
        for entry in inputs:
            if isinstance(entry, str) and entry:
                texts.append(entry)
            elif isinstance(entry, list) and all(isinstance(t, int) for t in entry) and entry:
                texts.append(" ".join(str(t) for t in entry))
            else:
                raise _bad_request("Each input must be a non-empty string or token array.", "input")
        dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise _bad_request("'dimensions' must be a positive integer.", "dimensions")
        self.model = str(body.get("model") or default_model)
        self.texts = texts
        self.dimensions = dimensions
        self.prompt = "\n".join(texts)
        self.digest = prompt_digest(self.prompt)
        self.prompt_tokens = sum(count_tokens(t) for t in texts)
        self.token_cost = self.prompt_tokens

    def costs(self) -> dict[str, float]:
        """What admission charges each counter."""
        return {
            "requests": 1,
            "requests_day": 1,
            "tokens": self.token_cost,
            "input_tokens": self.prompt_tokens,
            "output_tokens": 0,
        }

    def payload(self) -> dict[str, Any]:
        """OpenAI's embeddings response."""
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": embedding_of(t, self.dimensions)}
                for i, t in enumerate(self.texts)
            ],
            "model": self.model,
            "usage": {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens},
        }


async def handle_embeddings(app: MockApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one ``POST /v1/embeddings``."""
    from ._mock_server import _HTTPError, _read_body, _send_bytes, _send_json
    from ._mock_stats import key_fingerprint

    stats = app._stats
    stats.total_requests += 1
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    app._sequence += 1
    rid = f"req_{app._id_prefix}{app._sequence:012x}"
    id_header = (b"x-request-id", rid.encode())
    key = _key(scope)
    fingerprint = key_fingerprint(key)
    stats.by_key[fingerprint] = stats.by_key.get(fingerprint, 0) + 1
    try:
        try:
            raw = await _read_body(receive)
            if raw is None:
                return
            app._authenticate(key, fingerprint, "openai", rid)
            try:
                model = scope.get("azure_deployment") or app.config.embedding_model
                embed = Embed(json.loads(raw), model)
            except ValueError as exc:
                from ._mock_server import _bad_request

                raise _bad_request(f"The body is not valid JSON: {exc}") from None
            stats.by_model[embed.model] = stats.by_model.get(embed.model, 0) + 1
            fault = app._directive_fault(embed)  # type: ignore[arg-type]
            assert key is not None
            headers = [id_header]
            if app.config.limited:
                limits = app._limits_for(key, anyio.current_time(), embed.model)
                admission = limits.admit(embed.costs(), anyio.current_time())  # type: ignore[arg-type]
                if admission.limited_by is not None:
                    raise app._rate_limited(embed, limits, admission, fingerprint, rid)  # type: ignore[arg-type]
                dialect = resolve_dialect(app.config.headers, "openai")
                now = anyio.current_time()
                headers += limit_headers(dialect, limits, now, app._wall())
        except _HTTPError as refused:
            stats.by_status[refused.status] = stats.by_status.get(refused.status, 0) + 1
            await _send_json(send, refused.status, refused.body_for("openai", rid),
                             [id_header, *refused.headers])  # fmt: skip
            return
        prompt_id = int.from_bytes(embed.digest[:8], "big")
        n = app._seen.get(prompt_id, 0)
        app._seen[prompt_id] = n + 1
        if fault is None or (fault[1] is not None and n >= fault[1]):
            kind = None if fault is not None else app._random_fault(embed.digest, n)
        else:
            kind = fault[0]
        if kind is not None:
            stats.faults[kind] = stats.faults.get(kind, 0) + 1
            error = app._error_fault(kind, embed, rid)  # type: ignore[arg-type]
            if error is None:  # the body faults of chat: a server error here
                error = (500, {"error": {"message": "mock fault", "type": "server_error",
                                         "param": None, "code": None}}, [])  # fmt: skip
            status, body, extra = error
            app._count_status(status)
            await _send_json(send, status, body, [*extra, *headers])
            return
        latency = app._draw_latency()
        if latency > 0:
            await anyio.sleep(latency)
        stats.tokens_charged += embed.token_cost
        stats.by_status[200] = stats.by_status.get(200, 0) + 1
        stats.successes += 1
        stats.embedded_inputs += len(embed.texts)
        body = json.dumps(embed.payload()).encode()
        await _send_bytes(send, 200, body, [(b"content-type", b"application/json"), *headers])
    finally:
        stats.in_flight -= 1


def _key(scope: Scope) -> str | None:
    from ._mock_server import _api_key

    return _api_key(scope)
