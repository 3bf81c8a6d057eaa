"""One attempt: a lease on a key, one HTTP exchange, one outcome.

::

    lease = await scheduler.lease(tokens)      waits in the key's fair queue
    raw   = await http.send(request)           transport failures mapped at the HTTP boundary
    outcome = outcome_of(provider, raw)        the one place a response is interpreted
      (or read_stream(http, ...) for a streamed answer: trio_llm._streaming)
    lease.settle(outcome)                      refunds, learning, cooling, dropping, breakers

The attempt has no policy of its own: whether to try again, and how, is the policy table's
business (``trio_llm._policy``), read by the run.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from ._http import HttpPool, TransportFailure
from ._models import Request
from ._outcome import Outcome, outcome_of, transport_outcome
from ._policy import ErrorKind
from ._scheduler import Lease, Scheduler, Unavailable
from ._streaming import read_stream

__all__ = ["Admission", "Sender"]

#: Called with the lease just before sending: ``None`` lets the request go; an ``Outcome``
#: refuses it (the run's budget), and nothing is sent.
Admission = Callable[[Lease], Outcome | None]


@attrs.frozen(kw_only=True)
class Sender:
    """What every attempt of an engine's session uses.

    Attributes:
        scheduler: the keys and their limits.
        http: the HTTP layer.
        timeout_s: the most an HTTP exchange may take (a cancel scope around it alone: the
            wait for a key is not part of it).
        max_blocked_s: the longest a request waits for keys that may not send at all (cooling
            after a 429, an open breaker).
        idle_timeout_s: the longest a streamed answer may go without a chunk (``None``: no
            limit but the attempt's timeout).
    """

    scheduler: Scheduler
    http: HttpPool
    timeout_s: float
    max_blocked_s: float
    idle_timeout_s: float | None = None

    async def attempt(
        self,
        request: Request,
        *,
        tokens: float,
        admit: Admission,
        on_sent: Callable[[Lease], None],
        route: int | None = None,
        urgent: bool = False,
    ) -> Outcome:
        """Send ``request`` once, on the key that can send it soonest (of ``route`` only, if
        given); return how it ended.

        ``on_sent`` is told the moment the request leaves (for events and the item's clock).
        """
        try:
            lease = await self.scheduler.lease(
                tokens, request.model, max_blocked=self.max_blocked_s, route=route, urgent=urgent
            )
        except Unavailable as exc:
            return exc.outcome
        if lease.overrides_model:
            request = request.with_model(lease.model)
        with lease:
            refusal = admit(lease)
            if refusal is not None:
                return refusal
            provider = lease.provider
            try:
                http_request = provider.build_request(request, lease.key.reveal())
            except (TypeError, ValueError) as exc:
                # A parameter JSON cannot encode (a Decimal, a set): the input's fault.
                outcome = Outcome(
                    kind=ErrorKind.INVALID_INPUT,
                    message=f"the request body cannot be encoded as JSON: {exc}",
                    sent=False,
                )
                lease.settle(outcome)
                return outcome
            lease.sending()
            on_sent(lease)
            with trio.move_on_after(self.timeout_s) as deadline:
                if http_request.stream:
                    outcome = await read_stream(
                        self.http, provider, http_request, lease.key, self.idle_timeout_s
                    )
                else:
                    try:
                        raw = await self.http.send(http_request)
                    except TransportFailure as failure:
                        outcome = transport_outcome(failure)
                    else:
                        outcome = outcome_of(provider, raw, lease.key)
            if deadline.cancelled_caught:
                outcome = Outcome(
                    kind=ErrorKind.TIMEOUT,
                    message=f"no response within the timeout of {self.timeout_s:g}s",
                )
            lease.settle(outcome)
        return outcome
