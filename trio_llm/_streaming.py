"""Reading one streamed answer: server-sent events through the provider's decoder.

::

    http.stream(request)          headers in: an error status is read whole, as ever
      └─ chunks ─► SSEDecoder ─► provider's StreamDecoder ─► one Completion
                                   (an error event, or an end before the last event: a failure)

Two clocks run here besides the attempt's timeout (a cancel scope around the whole attempt):
the *idle timeout*, one cancel scope whose deadline moves on with every chunk, so a stream
that stalls fails in S seconds however long the answer is; and the time to the first output
token (``ttft_s``), then the time the rest took (``generation_s``), both on trio's clock.

A half-streamed text is never a success: the completion exists only once the decoder saw the
stream's last event.
"""

from __future__ import annotations

import math

import trio

from ._errors import ProviderError
from ._http import HttpPool, RawResponse, TransportFailure
from ._outcome import NO_LIMITS, Outcome, failure_outcome, outcome_of, transport_outcome
from ._policy import ErrorKind
from ._providers import HttpRequest, Provider, StreamDecoder, StreamingProvider
from ._secrets import ApiKey
from ._sse import SSEDecoder

__all__ = ["read_stream"]


async def read_stream(
    http: HttpPool,
    provider: Provider,
    request: HttpRequest,
    key: ApiKey,
    idle_timeout_s: float | None,
) -> Outcome:
    """Send ``request`` and read its streamed answer into one outcome.

    Raises:
        Nothing of its own: transport failures, error events, cut streams and the idle
        timeout all become failed outcomes.
    """
    sent = trio.current_time()
    idle = math.inf if idle_timeout_s is None else idle_timeout_s
    first: float | None = None
    last = sent
    done = False
    status: int | None = None
    limits = NO_LIMITS
    decoder: StreamDecoder | None = None
    refused: ProviderError | None = None
    broken: TransportFailure | None = None
    with trio.CancelScope(deadline=sent + idle) as idle_scope:
        try:
            async with http.stream(request) as response:
                status = response.status
                limits = provider.rate_limits(response.headers)
                event_stream = response.headers.get("content-type", "").startswith(
                    "text/event-stream"
                )
                if (
                    not 200 <= status < 300
                    or not event_stream
                    or not isinstance(provider, StreamingProvider)
                ):
                    # An error answer (or a server that ignored "stream"): one whole body.
                    body = await response.read()
                    return outcome_of(provider, RawResponse(status, response.headers, body), key)
                decoder = provider.stream_decoder(response.headers)
                events = SSEDecoder()
                async for chunk in response.chunks():
                    now = trio.current_time()
                    idle_scope.deadline = now + idle
                    if done or refused is not None:
                        # Read on to the end rather than leave: the connection goes back to
                        # the pool, and no half-read iterator is left behind.
                        continue
                    try:
                        for event in events.feed(chunk):
                            done = decoder.feed(event)
                            if first is None and decoder.started:
                                first = now
                            if done:
                                last = now
                                break
                    except ProviderError as exc:  # an error event, or a malformed one
                        refused = exc
                events.close()
        except TransportFailure as failure:
            # Whether what came before the break is a whole answer is the decoder's to say.
            broken = failure
    if refused is not None:
        return failure_outcome(refused, status or 200, limits, key)
    if broken is not None and decoder is None:
        return transport_outcome(broken)
    if decoder is None or (idle_scope.cancelled_caught and not done):
        return Outcome(
            kind=ErrorKind.TIMEOUT,
            message=f"no data for {idle:g}s (the idle timeout)"
            + ("" if status is None else f" after HTTP {status}"),
            status=status,
        )
    try:
        completion = decoder.finish()
    except ProviderError as exc:
        if broken is not None:
            return transport_outcome(broken)
        return failure_outcome(exc, status or 200, limits, key)
    return Outcome(
        completion=completion,
        status=status,
        request_id=completion.request_id,
        limits=limits,
        ttft_s=None if first is None else first - sent,
        generation_s=None if first is None else last - first,
    )
