"""The key pool: which API key sends the next request, and when.

Every key has a requests bucket and a tokens bucket (``TokenBucket``); optional provider limits
add one more pair shared by all keys of the account. A request takes the key that can send
*soonest* — not blind round-robin — so uneven keys are each used to their own limit.

Feedback from each response keeps the buckets true:

* rate-limit headers lower a bucket whose level we over-estimated, and teach the limits when
  none were configured (``Limits()``);
* a 429 cools that key down for the server's Retry-After while the others carry on, and lowers
  its rate a little (recovering gradually), so a limit set too high costs a few 429s, not a storm;
* 401/403/``insufficient_quota`` drops the key for the run; when every key is gone, ``acquire``
  raises ``NoKeysLeftError`` at once.

The bucket state sits behind ``TokenBucket``'s small interface (reserve / refund / charge /
lower_to / set_rate), which a shared store (Redis) can implement for many processes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import final

import attrs
import trio

from . import _events as ev
from ._breaker import BreakerPolicy, BreakerState, CircuitBreaker, announce
from ._config import Limits
from ._errors import ConfigurationError, NoKeysLeftError
from ._headers import RateLimitInfo
from ._limiter import TokenBucket
from ._models import ErrorKind
from ._secrets import ApiKey

__all__ = ["KeyPool", "KeyStatistics", "Lease"]

# A key's rate drops by this factor after a 429 it did not see coming (at most once per
# _DECREASE_INTERVAL_S) and climbs back by _RECOVERY_PER_S of its ceiling each second.
_DECREASE_FACTOR = 0.75
_DECREASE_INTERVAL_S = 1.0
_RECOVERY_PER_S = 0.02
_MIN_FACTOR = 0.05
# Without Retry-After, a 429 cools its key this long.
_DEFAULT_COOLDOWN_S = 1.0
# Requests wait this much longer than our buckets say: the server's bucket runs on its own
# clock with its own rounding, and being a hair early costs a 429 while a hair late costs
# nothing (the reservations behind are not shifted by it).
SEND_MARGIN_S = 0.002
_START_LEVEL = 0.5
# Token counts from headers may trail ours by this share of the bucket before we correct
# (estimates and the server's own counting differ a little).
_TOKEN_SLACK = 0.02
# A token refund larger than this share of the bucket re-times the key's sleepers.
_RESCHEDULE_REFUND = 0.01
# A capacity learned from headers must drop this much before it replaces the last one (the
# estimate jitters with the time a response spends in flight).
_CAPACITY_CHANGE = 0.9


@attrs.frozen(kw_only=True)
class KeyStatistics:
    """A snapshot of one key, for programs and the progress display (never the secret).

    Attributes:
        key_id: the key's fingerprint.
        in_flight: requests sent on it and not answered yet.
        rpm / tpm: the limits in force now (configured, learned or lowered), ``None`` unknown.
        requests_left / tokens_left: what its buckets hold now.
        cooling_s: seconds until it may send again after a 429 (0 when not cooling).
        dropped: why it was dropped for the run, or ``None``.
    """

    key_id: str
    in_flight: int
    rpm: float | None
    tpm: float | None
    requests_left: float | None
    tokens_left: float | None
    cooling_s: float
    dropped: str | None


@final
class _KeyState:
    """One key's mutable state inside the pool."""

    def __init__(self, key: ApiKey, limits: Limits, breaker: BreakerPolicy | None) -> None:
        self.key = key
        self.limits = limits
        self.breaker = None if breaker is None else CircuitBreaker(breaker, key.fingerprint)
        self.learned_rpm: float | None = None
        self.learned_tpm: float | None = None
        self.learned_requests_capacity: float | None = None
        self.learned_tokens_capacity: float | None = None
        self.factor = 1.0
        self.factor_stamp = 0.0
        self.last_decrease = -math.inf
        self.requests = TokenBucket(None)
        self.tokens = TokenBucket(None)
        self.cooling_until = -math.inf
        self.dropped: str | None = None
        self.in_flight = 0
        self.granted = 0  # when it was last granted (a pool-wide sequence number)
        self.has_rate_headers = False  # did the server ever send rate-limit headers?
        # Tasks in ``acquire`` waiting for their reserved moment on this key, in arrival order.
        self.sleepers: list[_Sleeper] = []
        # Everything we have charged on this key (granted, minus given back, plus or minus
        # reconciliations): what a response's remaining count says, minus what went out after
        # it, is where the server's bucket stands now.
        self.requests_ledger = 0.0
        self.tokens_ledger = 0.0
        self.pending_requests = 0.0  # units reserved by those sleepers, not yet sent
        self.pending_tokens = 0.0

    def ceiling(self) -> tuple[float | None, float | None]:
        """(rpm, tpm) before the 429 back-off factor: the stricter of configured and learned."""

        def stricter(configured: float | None, learned: float | None) -> float | None:
            if configured is None:
                return learned
            return configured if learned is None else min(configured, learned)

        return (
            stricter(self.limits.rpm, self.learned_rpm),
            stricter(self.limits.tpm, self.learned_tpm),
        )

    def apply_rates(self) -> None:
        """Push the current ceiling times the back-off factor into the buckets."""
        rpm, tpm = self.ceiling()
        for bucket, per_minute, learned_capacity in (
            (self.requests, rpm, self.learned_requests_capacity),
            (self.tokens, tpm, self.learned_tokens_capacity),
        ):
            if per_minute is None:
                bucket.set_rate(None)
                continue
            rate = per_minute / 60.0 * self.factor
            capacity = max(1.0, rate * self.limits.burst_s)
            if learned_capacity is not None:
                capacity = min(capacity, learned_capacity)
            was_unlimited = bucket.rate is None
            bucket.set_rate(rate, capacity)
            if was_unlimited:
                # Start half full. Our bucket drains when a request is scheduled, the server's
                # when it arrives; until then the server's full bucket wastes its refill. The
                # first burst is where that lag is largest (connections are being opened), so
                # it leaves room for it. The floor N / (keys x rate) is not affected.
                bucket.lower_to(capacity * _START_LEVEL)


@attrs.define(eq=False)
class _Sleeper:
    """One ``acquire`` waiting on a key for the moment its reservation is due."""

    tokens: float
    scope: trio.CancelScope
    given_back: bool = False


@attrs.frozen(kw_only=True)
class Lease:
    """Permission to send one request on one key; give it back with ``KeyPool.release``.

    Attributes:
        key: the key to send with.
        tokens: tokens reserved for the request (the estimate).
        sent_at: when it was granted (the request leaves at once), on trio's clock.
        requests_ledger / tokens_ledger: the key's ledgers just after this lease was charged.
    """

    key: ApiKey
    tokens: float
    sent_at: float
    requests_ledger: float
    tokens_ledger: float
    _state: _KeyState = attrs.field(alias="state", repr=False)


def _bucket_for(per_minute: float | None, burst_s: float) -> TokenBucket:
    if per_minute is None:
        return TokenBucket(None)
    rate = per_minute / 60.0
    return TokenBucket(rate, max(1.0, rate * burst_s))


@final
class KeyPool:
    """API keys with their limits, chosen per request by who can send soonest.

    Args:
        keys: the secrets (at least one).
        limits: per-key limits; ``None`` leaves them to the engine's ``limits`` argument.
        provider_limits: limits shared by all keys (one account or deployment), or ``None``.

    Build one from the environment with ``KeyPool.from_env("OPENAI_API_KEY")`` (comma-separated
    keys) or from a ``.env`` file with ``KeyPool.from_dotenv(".env", "OPENAI_API_KEY")``.
    """

    def __init__(
        self,
        keys: Iterable[str | ApiKey],
        *,
        limits: Limits | None = None,
        provider_limits: Limits | None = None,
    ) -> None:
        api_keys: list[ApiKey] = []
        for key in keys:
            api_key = key if isinstance(key, ApiKey) else ApiKey(str(key).strip())
            if not api_key.reveal():
                raise ConfigurationError("an API key is empty")
            if api_key not in api_keys:
                api_keys.append(api_key)
        if not api_keys:
            raise ConfigurationError(
                "no API keys given\nHINT: pass keys=['sk-...'] or "
                "keys=trio_llm.KeyPool.from_env('OPENAI_API_KEY')"
            )
        self._api_keys = tuple(api_keys)
        self.limits = limits
        self.provider_limits = provider_limits
        self._states: list[_KeyState] = []
        self._provider_requests = TokenBucket(None)
        self._provider_tokens = TokenBucket(None)
        self._run: object = None
        self._events = ev.EventHub()
        self._breaker_policy: BreakerPolicy | None = None
        self._granted = 0

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_env(cls, name: str = "OPENAI_API_KEY", *, limits: Limits | None = None) -> KeyPool:
        """Keys from a comma-separated environment variable."""
        value = os.environ.get(name, "")
        keys = [part.strip() for part in value.split(",") if part.strip()]
        if not keys:
            raise ConfigurationError(
                f"environment variable {name} is empty or unset\n"
                f"HINT: export {name}=sk-...,sk-... (comma-separated), or pass keys=[...]"
            )
        return cls(keys, limits=limits)

    @classmethod
    def from_dotenv(
        cls,
        path: str | os.PathLike[str],
        name: str = "OPENAI_API_KEY",
        *,
        limits: Limits | None = None,
    ) -> KeyPool:
        """Keys from ``NAME=k1,k2`` in a ``.env`` file (``export`` and quotes allowed)."""
        file = Path(path)
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {file}: {exc.strerror}") from None
        for line in lines:
            stripped = line.strip().removeprefix("export ").strip()
            if stripped.startswith("#") or "=" not in stripped:
                continue
            var, _, value = stripped.partition("=")
            if var.strip() == name:
                value = value.strip()
                if value[:1] in ("'", '"') and value[0] in value[1:]:
                    value = value[1 : value.index(value[0], 1)]  # quoted: up to the close
                else:
                    value = value.split(" #", 1)[0]  # unquoted: " # ..." is a comment
                keys = [part.strip() for part in value.split(",") if part.strip()]
                if keys:
                    return cls(keys, limits=limits)
        raise ConfigurationError(f"{file} sets no {name}=...")

    def __repr__(self) -> str:
        return f"KeyPool([{', '.join(k.fingerprint for k in self._api_keys)}])"

    def __len__(self) -> int:
        return len(self._api_keys)

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        """The keys (each shows only its fingerprint)."""
        return self._api_keys

    def attach(
        self,
        events: ev.EventHub,
        limits: Limits,
        provider_limits: Limits | None,
        breaker: BreakerPolicy | None = None,
    ) -> None:
        """Called by the engine: where to send events, the limits if none were given, and the
        circuit breaker policy for each key (``None``: no breakers)."""
        self._events = events
        self._breaker_policy = breaker
        if self.limits is None:
            self.limits = limits
        if self.provider_limits is None:
            self.provider_limits = provider_limits

    # --- state ---------------------------------------------------------------------------
    def _ensure_run(self) -> None:
        """Create bucket state for this trio run (buckets read trio's clock)."""
        run = trio.lowlevel.current_root_task()
        if run is self._run:
            return
        self._run = run
        limits = self.limits or Limits()
        self._states = [_KeyState(key, limits, self._breaker_policy) for key in self._api_keys]
        for state in self._states:
            state.apply_rates()
        provider = self.provider_limits or Limits()
        self._provider_requests = _bucket_for(provider.rpm, provider.burst_s)
        self._provider_tokens = _bucket_for(provider.tpm, provider.burst_s)

    def statistics(self) -> tuple[KeyStatistics, ...]:
        """A snapshot of every key."""
        if not self._states:
            return tuple(
                KeyStatistics(
                    key_id=key.fingerprint,
                    in_flight=0,
                    rpm=None,
                    tpm=None,
                    requests_left=None,
                    tokens_left=None,
                    cooling_s=0.0,
                    dropped=None,
                )
                for key in self._api_keys
            )
        now = trio.current_time()
        stats = []
        for state in self._states:
            rpm, tpm = state.ceiling()
            stats.append(
                KeyStatistics(
                    key_id=state.key.fingerprint,
                    in_flight=state.in_flight,
                    rpm=None if rpm is None else rpm * state.factor,
                    tpm=None if tpm is None else tpm * state.factor,
                    requests_left=None if state.requests.rate is None else state.requests.level,
                    tokens_left=None if state.tokens.rate is None else state.tokens.level,
                    cooling_s=max(0.0, state.cooling_until - now),
                    dropped=state.dropped,
                )
            )
        return tuple(stats)

    @property
    def alive(self) -> int:
        """How many keys are not dropped."""
        self._ensure_run()
        return sum(1 for state in self._states if state.dropped is None)

    # --- choosing ------------------------------------------------------------------------
    def _delay(self, state: _KeyState, tokens: float, now: float) -> float:
        return max(
            state.requests.delay(1, SEND_MARGIN_S),
            state.tokens.delay(tokens, SEND_MARGIN_S),
            state.cooling_until - now,
            0.0 if state.breaker is None else state.breaker.delay(),
        )

    def soonest(self, tokens: float) -> float:
        """Seconds until some key could send a request of ``tokens`` (inf: every key is
        dropped)."""
        self._ensure_run()
        now = trio.current_time()
        return min(
            (self._delay(s, tokens, now) for s in self._states if s.dropped is None),
            default=math.inf,
        )

    def _pick(self, tokens: float) -> _KeyState:
        now = trio.current_time()
        best: _KeyState | None = None
        best_delay = math.inf
        for state in self._states:
            if state.dropped is not None:
                continue
            self._recover(state, now)
            delay = self._delay(state, tokens, now)
            # Ties (unlimited keys, full buckets) go to the key with the fewest requests in
            # flight, then to the one granted least recently: an even spread.
            if (
                best is None
                or delay < best_delay
                or (
                    delay == best_delay
                    and (state.in_flight, state.granted) < (best.in_flight, best.granted)
                )
            ):
                best, best_delay = state, delay
        if best is None:
            raise NoKeysLeftError
        return best

    async def acquire(self, tokens: float, *, checkpoint: bool = True) -> Lease:
        """Wait until some key may send a request of ``tokens`` tokens; return its lease.

        ``checkpoint=False`` skips the schedule point trio's conventions put in a call that
        does not block, for a caller that has just passed one (the engine, right after its
        concurrency slot): at 1,000 requests in flight each task switch counts.

        Raises:
            NoKeysLeftError: every key has been dropped.
        """
        if checkpoint:
            await trio.lowlevel.checkpoint_if_cancelled()
        self._ensure_run()
        while True:
            state = self._pick(tokens)
            now = trio.current_time()
            wait = self._reserve(state, tokens, now)
            if wait > 0:
                sleeper = _Sleeper(tokens, trio.CancelScope(deadline=now + wait))
                state.sleepers.append(sleeper)
                state.pending_requests += 1
                state.pending_tokens += tokens
                try:
                    with sleeper.scope:
                        await trio.sleep_forever()
                except BaseException:
                    if not sleeper.given_back:
                        self._give_back(state, 1, tokens)
                    raise
                finally:
                    state.sleepers.remove(sleeper)
                    if not sleeper.given_back:
                        state.pending_requests -= 1
                        state.pending_tokens -= tokens
                if sleeper.given_back:
                    # The key cooled, was dropped or was re-rated: choose again.
                    continue
                if state.breaker is not None and state.breaker.delay() > 0:
                    # Its breaker opened, or its half-open probes are all out: choose again.
                    self._give_back(state, 1, tokens)
                    continue
            elif checkpoint:
                await trio.lowlevel.cancel_shielded_checkpoint()
            state.in_flight += 1
            self._granted += 1
            state.granted = self._granted
            if state.breaker is not None:
                state.breaker.started()
            state.requests_ledger += 1
            state.tokens_ledger += tokens
            return Lease(
                key=state.key,
                tokens=tokens,
                sent_at=trio.current_time(),
                requests_ledger=state.requests_ledger,
                tokens_ledger=state.tokens_ledger,
                state=state,
            )

    def _reschedule(self, state: _KeyState, *, repick: bool = False) -> None:
        """The key's state changed: re-time every sleeper on it.

        All of their units are given back *before* any is reserved again, so that none counts
        the others' old reservations (which would push them all to the end of the queue and
        then release them together, as a burst). Then either each is reserved again in arrival
        order and its deadline moved (FIFO kept, no task woken), or — ``repick``, for a key
        that cooled or was dropped — all are woken to choose a key again.
        """
        if not state.sleepers:
            return
        now = trio.current_time()
        # A sleeper whose moment has come is already on its way out: leave it be.
        sleepers = [s for s in state.sleepers if not s.given_back and s.scope.deadline > now]
        for sleeper in sleepers:
            self._give_back(state, 1, sleeper.tokens)
        if repick or state.dropped is not None:
            for sleeper in sleepers:
                sleeper.given_back = True
                state.pending_requests -= 1
                state.pending_tokens -= sleeper.tokens
                sleeper.scope.cancel()
            return
        for sleeper in sleepers:
            sleeper.scope.deadline = now + self._reserve(state, sleeper.tokens, now)

    def _reserve(self, state: _KeyState, tokens: float, now: float) -> float:
        """Reserve one request of ``tokens`` on ``state``'s key; return the wait."""
        return max(
            state.requests.reserve(1, SEND_MARGIN_S),
            state.tokens.reserve(tokens, SEND_MARGIN_S),
            self._provider_requests.reserve(1, SEND_MARGIN_S),
            self._provider_tokens.reserve(tokens, SEND_MARGIN_S),
            state.cooling_until - now,
            0.0 if state.breaker is None else state.breaker.delay(),
        )

    def _give_back(self, state: _KeyState, requests: float, tokens: float) -> None:
        state.requests.refund(requests)
        state.tokens.refund(tokens)
        self._provider_requests.refund(requests)
        self._provider_tokens.refund(tokens)

    # --- feedback ------------------------------------------------------------------------
    def release(
        self,
        lease: Lease,
        *,
        info: RateLimitInfo | None = None,
        used_tokens: float | None = None,
        sent: bool = True,
        succeeded: bool = False,
        failure: ErrorKind | None = None,
    ) -> None:
        """Give a lease back after its attempt, with what the server said.

        Args:
            info: the rate-limit headers of the response, if one arrived.
            used_tokens: the tokens the response really consumed (from ``usage``); the
                reservation is reconciled with it: the rest is refunded, an overrun charged.
            sent: False when the request was never admitted (cancelled before it left, or
                refused with a 429): everything reserved is given back.
            succeeded / failure: how the attempt ended, for the key's circuit breaker.
        """
        state = lease._state
        if state not in self._states:  # a lease from an earlier trio run
            return
        state.in_flight -= 1
        if state.breaker is not None:
            self._breaker_outcome(state, succeeded, failure)
        if not sent:
            self._give_back(state, 1, lease.tokens)
            state.requests_ledger -= 1
            state.tokens_ledger -= lease.tokens
        elif used_tokens is not None:
            difference = lease.tokens - used_tokens
            state.tokens_ledger -= difference
            if difference > 0:
                state.tokens.refund(difference)
                self._provider_tokens.refund(difference)
                if difference > _RESCHEDULE_REFUND * state.tokens.capacity:
                    # Sleepers were timed before this refund: let them use it.
                    self._reschedule(state)
            elif difference < 0:
                state.tokens.charge(-difference)
                self._provider_tokens.charge(-difference)
        if info is not None and not info.empty:
            state.has_rate_headers = True
            self._apply_headers(state, lease, info)

    def _apply_headers(self, state: _KeyState, lease: Lease, info: RateLimitInfo) -> None:
        learned = False
        if info.requests_limit is not None and info.requests_limit != state.learned_rpm:
            state.learned_rpm = info.requests_limit
            learned = True
        if info.tokens_limit is not None and info.tokens_limit != state.learned_tpm:
            state.learned_tpm = info.tokens_limit
            learned = True
        # A limit not configured has its burst learned too: a bucket refilling at ``rate``
        # that is full in ``reset`` seconds holds ``remaining + reset * rate`` when full.
        for configured, limit, remaining, reset, attr in (
            (
                state.limits.rpm,
                info.requests_limit,
                info.requests_remaining,
                info.requests_reset_s,
                "learned_requests_capacity",
            ),
            (
                state.limits.tpm,
                info.tokens_limit,
                info.tokens_remaining,
                info.tokens_reset_s,
                "learned_tokens_capacity",
            ),
        ):
            if configured is None and limit and remaining is not None and reset is not None:
                capacity = max(1.0, remaining + reset * limit / 60.0)
                previous = getattr(state, attr)
                if previous is None or capacity < previous * _CAPACITY_CHANGE:
                    setattr(state, attr, capacity)
                    learned = True
        changed = learned
        if learned:
            state.apply_rates()
            rpm, tpm = state.ceiling()
            self._events.emit(
                ev.LIMITS_UPDATED,
                key_id=state.key.fingerprint,
                rpm=rpm,
                tpm=tpm,
                reason="headers",
            )
        # Where the server's buckets stand now, from what this response said: lower ours to
        # that when they are ahead. (Remaining counts are whole units: one unit of slack.)
        if info.requests_remaining is not None:
            changed |= self._align(
                state, lease, requests_after=info.requests_remaining, tolerance=1.0
            )
        if info.tokens_remaining is not None:
            changed |= self._align(
                state,
                lease,
                tokens_after=info.tokens_remaining,
                # Our token charges are estimates until each response reconciles them, and a
                # server may charge otherwise (max_tokens up front, or the real length): allow
                # a request's worth of disagreement.
                tolerance=max(lease.tokens, _TOKEN_SLACK * state.tokens.capacity),
            )
        if changed:
            # Sleepers on this key reserved under the old state: they choose again.
            self._reschedule(state)

    def rate_limited(
        self, lease: Lease, retry_after: float | None, info: RateLimitInfo | None = None
    ) -> None:
        """The server refused ``lease``'s request with a 429: cool its key, slow it a little
        (unless the 429 came with rate-limit headers: then those set the pace)."""
        state = lease._state
        if info is not None and not info.empty:
            state.has_rate_headers = True
            if retry_after is not None:
                self._correct_phase(state, lease, info, retry_after)
        now = trio.current_time()
        cooling = _DEFAULT_COOLDOWN_S if retry_after is None else retry_after
        if now + cooling > state.cooling_until:
            state.cooling_until = now + cooling
            self._events.emit(ev.KEY_COOLING, key_id=state.key.fingerprint, cooling_s=cooling)
        # Slow down only for a server that does not send rate-limit headers: where it does,
        # the headers already set our limits and level, and one unlucky 429 (a request that
        # spent long in flight) should not cost minutes of reduced throughput.
        if (
            not state.has_rate_headers
            and now - state.last_decrease >= _DECREASE_INTERVAL_S
            and state.ceiling() != (None, None)
        ):
            state.last_decrease = now
            state.factor = max(_MIN_FACTOR, state.factor * _DECREASE_FACTOR)
            state.factor_stamp = now
            state.apply_rates()
            rpm, tpm = state.ceiling()
            self._events.emit(
                ev.LIMITS_UPDATED,
                key_id=state.key.fingerprint,
                rpm=None if rpm is None else rpm * state.factor,
                tpm=None if tpm is None else tpm * state.factor,
                reason="rate_limited",
            )
        self._reschedule(state, repick=True)

    def _align(
        self,
        state: _KeyState,
        lease: Lease,
        *,
        requests_after: float | None = None,
        tokens_after: float | None = None,
        tolerance: float,
        own: float = 0.0,
    ) -> bool:
        """Lower one bucket of ``state`` to where the server's stands now; True if lowered.

        ``*_after`` is the server's level just after it handled ``lease``'s request. Since
        then it refilled for the time elapsed and was charged everything we sent after the
        lease (the ledger). Our comparable level counts what sleepers have reserved but not
        sent as still there, plus ``own`` (a refused request's units, about to be given back).
        """
        if requests_after is not None:
            bucket, after = state.requests, requests_after
            sent_since = state.requests_ledger - lease.requests_ledger
            pending = state.pending_requests
        elif tokens_after is not None:
            bucket, after = state.tokens, tokens_after
            sent_since = state.tokens_ledger - lease.tokens_ledger
            pending = state.pending_tokens
        else:
            return False
        rate = bucket.rate
        if rate is None:
            return False
        elapsed = trio.current_time() - lease.sent_at
        server_now = min(bucket.capacity, after + rate * elapsed) - sent_since
        ours = bucket.level + pending + own
        excess = ours - server_now
        if excess > tolerance:
            bucket.lower_to(bucket.level - excess)
            return True
        return False

    def _correct_phase(
        self, state: _KeyState, lease: Lease, info: RateLimitInfo, retry_after: float
    ) -> None:
        """A 429's Retry-After says exactly how far ahead of the server we were: it needs
        ``retry_after`` more seconds of refill to admit the request, so its level was
        ``need - retry_after * rate``. The remaining counts in headers are whole units and
        cannot show an error smaller than one request, which would repeat on every request if
        left alone; this can."""
        requests_rate = state.requests.rate
        if (
            requests_rate is not None
            and info.requests_remaining is not None
            and info.requests_remaining < 1
        ):
            self._align(
                state,
                lease,
                requests_after=1 - retry_after * requests_rate,
                tolerance=0.0,
                own=1.0,
            )
        tokens_rate = state.tokens.rate
        if (
            tokens_rate is not None
            and info.tokens_remaining is not None
            and info.tokens_remaining < lease.tokens
        ):
            need = min(lease.tokens, state.tokens.capacity)
            self._align(
                state,
                lease,
                tokens_after=need - retry_after * tokens_rate,
                tolerance=0.0,
                own=lease.tokens,
            )

    def _breaker_outcome(
        self, state: _KeyState, succeeded: bool, failure: ErrorKind | None
    ) -> None:
        breaker = state.breaker
        assert breaker is not None
        changed = breaker.record(succeeded, failure)
        announce(
            self._events,
            breaker,
            changed,
            scope="key",
            key_id=state.key.fingerprint,
            failure=failure,
        )
        if changed is BreakerState.OPEN:
            self._reschedule(state, repick=True)
        elif changed is BreakerState.CLOSED:
            self._reschedule(state)

    def _recover(self, state: _KeyState, now: float) -> None:
        if state.factor < 1.0 and now > state.factor_stamp:
            factor = min(1.0, state.factor + (now - state.factor_stamp) * _RECOVERY_PER_S)
            if factor - state.factor >= 0.01 or factor == 1.0:
                state.factor = factor
                state.factor_stamp = now
                state.apply_rates()

    def drop(self, lease: Lease, reason: str) -> None:
        """Take ``lease``'s key out of the pool for the rest of the run."""
        state = lease._state
        if state.dropped is None:
            state.dropped = reason
            self._events.emit(ev.KEY_DROPPED, key_id=state.key.fingerprint, reason=reason)
            self._reschedule(state)
