"""Limits shared by many engines: a bucket store every process checks before it sends.

An engine alone keeps its buckets in memory (``trio_llm._scheduler``). Engines in several
processes or hosts that use the same keys give one of them a store: before a request leaves,
the scheduler *takes* its units from the store's buckets for the same keys, atomically; if the
store says "not yet, in N seconds", the request waits that long and asks again. The local
buckets still order and pace each process's own requests; the store makes the sum of all
processes hold the limit.

::

    process A ─┐  take(key's requests, tokens; provider's) ─► 0: go   | N: wait N s, ask again
    process B ─┼─► store (one atomic step: refill by the store's own clock, check, take)
    process C ─┘  ... with what each learned since: refunds, cooldowns, dropped keys

The store has no reservations to leak: units are taken only when a request leaves, so a
process that dies takes nothing with it. What a process learns on its own — a usage smaller
than the estimate (a refund), a 429's cooldown, a dropped key — rides along with its next
take, and every process sees cooldowns and drops at its next take.

Two stores: ``MemoryStore`` (engines in one process: tests, or several engines in one
service) and ``RedisStore`` (processes and hosts: Lua on the Redis server, with the server's
own clock, so hosts whose clocks differ still agree). Names in the store are hashes of the
keys, never the keys.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, Protocol, final, runtime_checkable

import attrs
import trio

__all__ = ["LimitsStore", "MemoryStore", "RedisStore", "StoreBucket", "StoreReply"]


@attrs.frozen
class StoreBucket:
    """One bucket to take from: its name in the store, the units, and its rate and size."""

    name: str
    amount: float
    rate: float
    capacity: float


@attrs.frozen
class StoreReply:
    """What a take answered.

    Attributes:
        wait_s: 0 when the units were taken; else how long until they may be (nothing taken).
        dropped: the keys (by name) that some process dropped for good, with the reason.
    """

    wait_s: float
    dropped: tuple[tuple[str, str], ...] = ()


@runtime_checkable
class LimitsStore(Protocol):
    """Where the buckets of keys shared by several engines live."""

    async def take(
        self,
        buckets: Sequence[StoreBucket],
        *,
        cooling: Sequence[str] = (),
        refunds: Sequence[StoreBucket] = (),
        cool: Sequence[tuple[str, float]] = (),
        drop: Sequence[tuple[str, str]] = (),
        dropped_of: Sequence[str] = (),
    ) -> StoreReply:
        """Take every bucket's ``amount``, or none.

        First apply what this process learned: ``refunds`` (units given back), ``cool``
        (name, seconds: a cooldown every process must wait out), ``drop`` (key name, reason).
        Then wait for none of ``cooling`` (cooldown names) to be on, and for every bucket to
        hold its units; take them all. ``dropped_of``: key names whose drop to report.
        """
        ...

    async def aclose(self) -> None:
        """Let go of connections."""
        ...


def store_name(*parts: str) -> str:
    """A short name for a key, model or endpoint in the store (never the secret itself)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


#: Float dust: a level this close to what is needed is enough (else a wait of 1e-15 s, which
#: no clock can sleep, would be asked again and again).
_DUST = 1e-9


@attrs.define
class _Level:
    level: float
    stamp: float


@final
class MemoryStore:
    """A store in this process, on trio's clock: for several engines in one program (and for
    tests of what many processes do together)."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Level] = {}
        self._cooling: dict[str, float] = {}
        self._dropped: dict[str, str] = {}

    def _refilled(self, bucket: StoreBucket, now: float) -> _Level:
        state = self._buckets.get(bucket.name)
        if state is None:
            state = self._buckets[bucket.name] = _Level(bucket.capacity, now)
        state.level = min(bucket.capacity, state.level + (now - state.stamp) * bucket.rate)
        state.stamp = now
        return state

    async def take(
        self,
        buckets: Sequence[StoreBucket],
        *,
        cooling: Sequence[str] = (),
        refunds: Sequence[StoreBucket] = (),
        cool: Sequence[tuple[str, float]] = (),
        drop: Sequence[tuple[str, str]] = (),
        dropped_of: Sequence[str] = (),
    ) -> StoreReply:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        for bucket in refunds:
            state = self._refilled(bucket, now)
            state.level = min(bucket.capacity, state.level + bucket.amount)
        for name, seconds in cool:
            self._cooling[name] = max(self._cooling.get(name, -math.inf), now + seconds)
        for name, reason in drop:
            self._dropped.setdefault(name, reason)
        dropped = tuple((n, self._dropped[n]) for n in dropped_of if n in self._dropped)
        wait = max((self._cooling.get(name, -math.inf) - now for name in cooling), default=0.0)
        states = [self._refilled(bucket, now) for bucket in buckets]
        for bucket, state in zip(buckets, states, strict=True):
            need = min(bucket.amount, bucket.capacity)
            if state.level < need - _DUST:
                wait = max(wait, (need - state.level) / bucket.rate)
        if wait > 0:
            return StoreReply(wait_s=wait, dropped=dropped)
        for bucket, state in zip(buckets, states, strict=True):
            state.level -= bucket.amount
        return StoreReply(wait_s=0.0, dropped=dropped)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


# One atomic step on the Redis server, on its own clock (TIME).
# KEYS: the buckets to take, then the refunds' buckets.
# ARGV: prefix, n_take, n_refund, n_cooling, n_cool, n_drop, n_dropped_of, then per take
# bucket amount, rate, capacity; per refund amount, rate, capacity; cooling names; cool
# (name, seconds) pairs; drop (name, reason) pairs; names whose drop to report.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local prefix = ARGV[1]
local n_take, n_refund = tonumber(ARGV[2]), tonumber(ARGV[3])
local n_cooling, n_cool = tonumber(ARGV[4]), tonumber(ARGV[5])
local n_drop, n_dropped_of = tonumber(ARGV[6]), tonumber(ARGV[7])
local a = 8

local function level_of(key, rate, capacity)
  local state = redis.call('HMGET', key, 'level', 'stamp')
  local level = tonumber(state[1]) or capacity
  local stamp = tonumber(state[2]) or now
  return math.min(capacity, level + (now - stamp) * rate)
end

local function save(key, level, rate, capacity)
  redis.call('HSET', key, 'level', tostring(level), 'stamp', tostring(now))
  -- Full again after (capacity - level) / rate: forgotten a minute after that.
  local full_in = math.max(0, (capacity - level) / rate)
  redis.call('PEXPIRE', key, math.ceil((full_in + 60) * 1000))
end

local takes = {}
for i = 1, n_take do
  takes[i] = {KEYS[i], tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])}
  a = a + 3
end
for i = 1, n_refund do
  local key = KEYS[n_take + i]
  local amount, rate, capacity = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  save(key, math.min(capacity, level_of(key, rate, capacity) + amount), rate, capacity)
end
local wait = 0
for i = 1, n_cooling do
  local ttl = redis.call('PTTL', prefix .. 'cool:' .. ARGV[a])
  if ttl > 0 then wait = math.max(wait, ttl / 1000) end
  a = a + 1
end
for i = 1, n_cool do
  local key = prefix .. 'cool:' .. ARGV[a]
  local ms = math.ceil(tonumber(ARGV[a + 1]) * 1000)
  if ms > 0 and redis.call('PTTL', key) < ms then
    redis.call('SET', key, '1', 'PX', ms)
  end
  a = a + 2
end
for i = 1, n_drop do
  redis.call('HSETNX', prefix .. 'dropped', ARGV[a], ARGV[a + 1])
  a = a + 2
end
local dropped = {}
for i = 1, n_dropped_of do
  local reason = redis.call('HGET', prefix .. 'dropped', ARGV[a])
  if reason then
    table.insert(dropped, ARGV[a])
    table.insert(dropped, reason)
  end
  a = a + 1
end
local levels = {}
for i, b in ipairs(takes) do
  local level = level_of(b[1], b[3], b[4])
  levels[i] = level
  local need = math.min(b[2], b[4])
  if level < need - 1e-9 then wait = math.max(wait, (need - level) / b[3]) end
end
if wait > 0 then
  return {tostring(wait), dropped}
end
for i, b in ipairs(takes) do
  save(b[1], levels[i] - b[2], b[3], b[4])
end
return {'0', dropped}
"""


@final
class RedisStore:
    """A store in Redis (or Valkey), for engines in many processes and on many hosts.

    Args:
        url: ``redis://host:port/db``.
        namespace: keeps the buckets of different teams or jobs apart on one server.

    Needs the ``redis`` extra (``coredis``, which runs under trio).
    """

    def __init__(self, url: str, *, namespace: str = "trio-llm") -> None:
        self.url = url
        self.namespace = namespace
        self._prefix = f"{namespace}:"
        self._script: Any = None
        self._run: object = None
        self._opening: trio.Event | None = None
        self._close: trio.Event | None = None
        self._closed: trio.Event | None = None
        self._error: Exception | None = None

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, namespace={self.namespace!r})"

    async def __aenter__(self) -> RedisStore:
        await self._ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _ready(self) -> Any:
        # A connection belongs to one trio run: a store used again in another run connects
        # anew (the old one went with its run). The client is entered and left by one system
        # task of its own, because coredis opens a nursery in __aenter__: entered from
        # whichever worker asked first and left from another task (or never), that nursery
        # would corrupt trio's cancel-scope stack.
        run = trio.lowlevel.current_root_task()
        while self._run is not run or self._script is None:
            if self._run is run and self._opening is not None:
                await self._opening.wait()  # another task is connecting for this run
                self._raise_if_not_connected()
                continue
            try:
                import coredis
            except ImportError as exc:  # pragma: no cover - the extra is missing
                from ._errors import ConfigurationError

                raise ConfigurationError(
                    "RedisStore needs coredis\nHINT: pip install 'trio-llm[redis]'"
                ) from exc
            self._run, self._script = run, None
            self._opening, self._close, self._closed = trio.Event(), trio.Event(), trio.Event()
            client = coredis.Redis.from_url(self.url, decode_responses=True)
            trio.lowlevel.spawn_system_task(
                self._hold, client, self._opening, self._close, self._closed
            )
            await self._opening.wait()
            self._raise_if_not_connected()
        return self._script

    def _raise_if_not_connected(self) -> None:
        if self._script is None:
            error, self._error = self._error, None
            self._run = None  # the next call tries again
            raise ConnectionError(f"could not connect to {self.url}") from error

    async def _hold(
        self, client: Any, opened: trio.Event, close: trio.Event, closed: trio.Event
    ) -> None:
        """Own ``client`` from entry to exit: until aclose(), or until the run ends (system
        tasks are cancelled then)."""
        try:
            async with client:
                self._script = client.register_script(_TAKE)
                opened.set()
                await close.wait()
        except Exception as exc:  # the caller waiting on ``opened`` raises it
            self._error = exc
        finally:
            self._script = None
            opened.set()
            closed.set()

    async def take(
        self,
        buckets: Sequence[StoreBucket],
        *,
        cooling: Sequence[str] = (),
        refunds: Sequence[StoreBucket] = (),
        cool: Sequence[tuple[str, float]] = (),
        drop: Sequence[tuple[str, str]] = (),
        dropped_of: Sequence[str] = (),
    ) -> StoreReply:
        script = await self._ready()
        prefix = self._prefix
        keys = [prefix + b.name for b in (*buckets, *refunds)]
        args: list[str | float] = [
            prefix,
            len(buckets),
            len(refunds),
            len(cooling),
            len(cool),
            len(drop),
            len(dropped_of),
        ]
        for bucket in (*buckets, *refunds):
            args += [repr(bucket.amount), repr(bucket.rate), repr(bucket.capacity)]
        args += list(cooling)
        for name, seconds in cool:
            args += [name, repr(seconds)]
        for name, reason in drop:
            args += [name, reason]
        args += list(dropped_of)
        wait, dropped = await script(keys=keys, args=[str(a) for a in args])
        pairs = tuple((str(dropped[i]), str(dropped[i + 1])) for i in range(0, len(dropped), 2))
        return StoreReply(wait_s=float(wait), dropped=pairs)

    async def aclose(self) -> None:
        close, closed = self._close, self._closed
        if (
            close is not None
            and closed is not None
            and self._run is trio.lowlevel.current_root_task()
        ):
            close.set()
            await closed.wait()
        self._run = self._opening = self._close = self._closed = None
