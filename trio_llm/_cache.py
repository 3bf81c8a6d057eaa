"""The response cache: identical requests answered from disk, at no cost and no rate limit.

::

    Run.process(item)
      └─ claim = await session.claim(request, routes)   one lookup, batched with the others
           hit  → a Result with cached=True, cost 0: no lease, no slot, nothing sent
           miss → the item is sent as usual; a success is stored (claim.store), then
                  claim.release() wakes identical items of this run waiting for it

A request's key is the SHA-256 of the provider's name, the endpoint's URL path, and the body
the provider would send (model included) as canonical JSON (orjson, sorted keys), minus the
fields that do not change the answer (``user``, ``metadata``, ``store``, ``stream``...). The
host is left out on purpose: the same model behind another port or proxy gives the same
answer, and a rerun against a restarted server still hits.

A request that samples (``temperature`` above 0, or unset: OpenAI's and Anthropic's default is
1) is neither looked up nor stored unless the cache is built with ``sampled=True``: its
answer is one draw, and a user asking for variety should not get the same draw back.

Identical requests inside one run are sent once: the first one in goes, the others wait for
it (holding no request slot) and are answered from its result; if it fails, the next one goes.

The store is one SQLite file in WAL mode with a busy timeout, so two runs (processes) may
share it; answers older than ``ttl`` are misses, and the oldest are evicted past ``max_mb``.
SQLite runs in a worker thread, never on the trio loop: lookups and stores from every worker
are gathered into one thread call and one transaction while the previous call runs
(``_Batcher``), so a 10,000-item rerun is a few dozen thread hops, not 10,000.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, final
from urllib.parse import urlsplit

import attrs
import orjson
import trio

from ._errors import ConfigurationError
from ._models import Request
from ._providers import Completion, Provider

__all__ = ["Cache", "CacheClaim", "CacheSession", "CacheStatistics"]

#: Body fields that do not change the answer, left out of the key.
IGNORED_FIELDS: Final = frozenset(
    {
        "user",
        "metadata",
        "store",
        "stream",
        "stream_options",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    }
)

#: Bound parameters per SQL statement (SQLite's default limit is 999 in older builds).
_CHUNK: Final = 500

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS responses ("
    " key TEXT PRIMARY KEY, created REAL NOT NULL, size INTEGER NOT NULL, body BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS responses_created ON responses (created)",
)


@attrs.frozen(kw_only=True)
class CacheStatistics:
    """What a cache did since it was opened (this process only).

    Attributes:
        hits: requests answered from the cache (in-run duplicates included).
        misses: cacheable requests not found (then sent).
        stored: answers written.
        sampled: requests not cached because they sample (``temperature`` > 0 or unset).
        evicted: answers removed to stay under ``max_mb``.
        batches: thread calls made to SQLite (lookups and stores gathered).
        errors: SQLite calls that failed (a lookup counts as a miss, a store is skipped).
    """

    hits: int
    misses: int
    stored: int
    sampled: int
    evicted: int
    batches: int
    errors: int


@attrs.frozen
class _Stored:
    """One cached answer: the provider's response body."""

    body: bytes


@final
class Cache:
    """An SQLite file of answers, shared by every run (and process) that opens it.

    Args:
        path: the SQLite file (created if missing).
        ttl: seconds an answer stays valid (``None``: forever). Ages are wall-clock seconds,
            since a cache outlives the runs (and trio clocks) that fill it.
        max_mb: the most megabytes (10**6 bytes) of answers kept; the oldest go first.
        sampled: cache requests that sample too (``temperature`` > 0, or unset).
        clock: the wall clock (seconds); tests pass a fake one.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        ttl: float | None = None,
        max_mb: float | None = None,
        sampled: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("ttl", ttl), ("max_mb", max_mb)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
            ):
                raise ConfigurationError(f"cache {name} must be a positive number, got {value!r}")
        self.path = Path(path)
        self.ttl = None if ttl is None else float(ttl)
        self.max_bytes = None if max_mb is None else int(max_mb * 1_000_000)
        self.sampled = bool(sampled)
        self._clock = clock
        self._lock = threading.Lock()  # one SQLite call at a time on the one connection
        self._counts = dict.fromkeys(
            ("hits", "misses", "stored", "sampled", "evicted", "batches", "errors"), 0
        )
        self._db = self._connect()
        self._bytes = self._size()

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, ttl={self.ttl}, max_bytes={self.max_bytes})"

    def _connect(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise ConfigurationError(f"cannot use the cache file {self.path}: it is a directory")
        try:
            db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            for statement in _SCHEMA:
                db.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(f"cannot use the cache file {self.path}: {exc}") from None
        return db

    def _size(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the file (a closed cache must not be used again)."""
        with self._lock:
            self._db.close()

    def statistics(self) -> CacheStatistics:
        """A snapshot of the counts."""
        return CacheStatistics(**self._counts)

    # --- keys ----------------------------------------------------------------------------
    def samples(self, body: Mapping[str, Any]) -> bool:
        """Whether a body asks for a sampled answer (``temperature`` > 0 or unset)."""
        temperature = body.get("temperature")
        return not (isinstance(temperature, (int, float)) and temperature <= 0)

    def key(self, provider: Provider, request: Request) -> str | None:
        """The request's key with ``provider``, or ``None`` when it must not be cached."""
        # The body exactly as the provider would send it (its defaults, renames, model).
        http = provider.build_request(request, "")
        body = orjson.loads(http.content)
        if not self.sampled and self.samples(body):
            return None
        for field in IGNORED_FIELDS:
            body.pop(field, None)
        canonical = orjson.dumps(
            [provider.name, urlsplit(http.url).path, body],
            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        )
        return hashlib.sha256(canonical).hexdigest()

    # --- the file (in a worker thread) ---------------------------------------------------
    def run_batch(self, ops: Sequence[tuple[str, bytes | None] | tuple[str, None]]) -> list[Any]:
        """Do a batch of lookups (``(key, None)``) and stores (``(key, body)``): the stores
        in one transaction, then the lookups; one answer per op (``None`` for stores and
        misses). Blocking: call it from a worker thread."""
        with self._lock:
            self._counts["batches"] += 1
            now = self._clock()
            puts = [(key, now, len(body), body) for key, body in ops if body is not None]
            if puts:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO responses (key, created, size, body) "
                        "VALUES (?, ?, ?, ?)",
                        puts,
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._counts["stored"] += len(puts)
                self._bytes += sum(put[2] for put in puts)
                if self.max_bytes is not None and self._bytes > self.max_bytes:
                    self._evict()
            wanted = [key for key, body in ops if body is None]
            found: dict[str, bytes] = {}
            oldest = -1.0 if self.ttl is None else now - self.ttl
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, body FROM responses WHERE key IN ({marks}) AND created >= ?",  # noqa: S608 - only ? marks
                    (*chunk, oldest),
                )
                found.update((key, bytes(body)) for key, body in rows)
            return [found.get(key) if body is None else None for key, body in ops]

    def _evict(self) -> None:
        """Drop expired answers, then the oldest, until a tenth under the cap."""
        assert self.max_bytes is not None
        db = self._db
        if self.ttl is not None:
            db.execute("DELETE FROM responses WHERE created < ?", (self._clock() - self.ttl,))
        self._bytes = self._size()  # other processes write here too
        excess = self._bytes - int(self.max_bytes * 0.9)
        if self._bytes <= self.max_bytes or excess <= 0:
            return
        freed = 0
        cutoff: float | None = None
        for created, size in db.execute("SELECT created, size FROM responses ORDER BY created"):
            freed += size
            cutoff = created
            if freed >= excess:
                break
        if cutoff is not None:
            gone = db.execute("DELETE FROM responses WHERE created <= ?", (cutoff,)).rowcount
            self._counts["evicted"] += gone
            self._bytes = self._size()

    def count(self, what: str, n: int = 1) -> None:
        """Add to a statistics count."""
        self._counts[what] += n


@attrs.define(eq=False)
class _Call:
    """One op waiting in a ``_Batcher``."""

    op: tuple[str, bytes | None]
    done: bool = False
    answer: Any = None
    error: BaseException | None = None
    leads: bool = False
    woken: trio.Event = attrs.field(factory=trio.Event)


@final
class _Batcher:
    """Gathers the ops of many tasks into one thread call at a time.

    The first caller while no call runs leads: it takes every op pending and runs them in one
    thread call. Callers arriving meanwhile queue; when the call returns, the leader answers
    them and hands the lead to the first op still pending. No task of its own is needed, so it
    works wherever the run's tasks are (``map``, ``complete``).
    """

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self._pending: list[_Call] = []
        self._busy = False

    async def call(self, op: tuple[str, bytes | None]) -> Any:
        me = _Call(op)
        self._pending.append(me)
        if self._busy:
            try:
                await me.woken.wait()
            except BaseException:
                if me in self._pending:
                    self._pending.remove(me)
                elif me.leads:
                    self._hand_on()  # cancelled with the lead: the next one leads
                raise
            if me.done:
                if me.error is not None:
                    raise me.error
                return me.answer
        self._busy = True
        # One checkpoint first: every task runnable now (workers just handed an item) adds
        # its op to this call rather than waiting for the next one.
        await trio.lowlevel.cancel_shielded_checkpoint()
        batch, self._pending = self._pending, []
        try:
            answers = await trio.to_thread.run_sync(
                self._cache.run_batch, [call.op for call in batch]
            )
        except BaseException as exc:
            for call in batch:
                call.done, call.error = True, exc
            raise
        else:
            for call, answer in zip(batch, answers, strict=True):
                call.done, call.answer = True, answer
        finally:
            for call in batch:
                if call is not me:
                    call.woken.set()
            self._hand_on()
        return me.answer

    def _hand_on(self) -> None:
        if self._pending:
            self._pending[0].leads = True
            self._pending[0].woken.set()
        else:
            self._busy = False


@attrs.define(eq=False)
class _Flight:
    """An item of this run being sent for a key; identical items wait for it."""

    done: trio.Event = attrs.field(factory=trio.Event)
    route: int = 0
    body: bytes | None = None


@attrs.define(eq=False)
class CacheClaim:
    """One item's look at the cache: its keys per route, and the answer if there was one."""

    keys: tuple[str | None, ...]
    hit: tuple[int, Completion] | None = None
    _flight: _Flight | None = None
    _session: CacheSession | None = None

    async def store(self, route: int, completion: Completion) -> None:
        """Keep a successful answer (from ``route``), and hand it to the items waiting."""
        key = self.keys[route]
        body = orjson.dumps(completion.raw)
        if self._flight is not None:
            self._flight.route, self._flight.body = route, body
        if key is not None and self._session is not None:
            self.release()  # the waiters need not wait for the disk
            try:
                await self._session.batcher.call((key, body))
            except sqlite3.Error:
                self._session.cache.count("errors")  # not kept; the answer stands

    def release(self) -> None:
        """End this item's flight (after its answer, or its failure: then the next one goes)."""
        flight, self._flight = self._flight, None
        if flight is not None and self._session is not None:
            primary = self.keys[0]
            if self._session.flights.get(primary) is flight:  # type: ignore[arg-type]
                del self._session.flights[primary]  # type: ignore[arg-type]
            flight.done.set()


@final
class CacheSession:
    """A cache in one trio run: the batcher, and the items of this run in flight per key."""

    def __init__(self, cache: Cache, routes: Sequence[tuple[Provider, str | None]]) -> None:
        """``routes``: each route's provider, and the model it sends everything to (if any)."""
        self.cache = cache
        self.routes = tuple(routes)
        self.batcher = _Batcher(cache)
        self.flights: dict[str, _Flight] = {}

    async def claim(self, request: Request) -> CacheClaim | None:
        """Look ``request`` up on each route in turn; ``None`` when it is not cacheable.

        Waits while an identical request of this run is in flight, then takes its answer.
        """
        cache = self.cache
        keys = tuple(
            cache.key(provider, request if model is None else request.with_model(model))
            for provider, model in self.routes
        )
        primary = keys[0]
        if primary is None:
            cache.count("sampled")
            return None
        while (flight := self.flights.get(primary)) is not None:
            await flight.done.wait()
            hit = None if flight.body is None else self._completion(flight.route, flight.body)
            if hit is not None:
                cache.count("hits")
                return CacheClaim(keys, hit=(flight.route, hit))
        mine = self.flights[primary] = _Flight()
        claim = CacheClaim(keys, flight=mine, session=self)
        try:
            for route, key in enumerate(keys):
                if key is None:
                    continue
                try:
                    body = await self.batcher.call((key, None))
                except sqlite3.Error:
                    cache.count("errors")  # a cache that fails is a miss, never a failure
                    body = None
                hit = None if body is None else self._completion(route, body)
                if hit is not None:
                    cache.count("hits")
                    claim.hit = (route, hit)
                    mine.body = body
                    claim.release()
                    return claim
        except BaseException:
            claim.release()
            raise
        cache.count("misses")
        return claim

    def model(self, route: int, request: Request) -> str:
        """The model ``request`` goes to on ``route``."""
        provider, model = self.routes[route]
        return model or request.model or provider.model

    def _completion(self, route: int, body: bytes) -> Completion | None:
        """The answer in a stored body (``None``, a miss, if it no longer parses)."""
        try:
            return self.routes[route][0].parse_response(200, {}, body)
        except Exception:
            return None
