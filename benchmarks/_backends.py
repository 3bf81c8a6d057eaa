"""HTTP layers raced in ``benchmarks/http_backends.py``, and the child process that runs one.

Every trio candidate has ``trio_llm._http.HttpPool``'s interface (``async with``, then
``await send(HttpRequest) -> RawResponse``), so the same worker loop drives each of them and
the engine can run on any of them (``Engine._new_http`` swapped in the child). The candidates:

* ``httppool``: ``HttpPool`` as the engine uses it (since this research: a connection per
  slot, as ``conn`` below).
* ``httpx-shards``: ``HttpPool`` before: shards of 8 connections, each an
  ``httpx.AsyncHTTPTransport``; ``httpx.Request`` in, ``httpx.Response`` out.
* ``httpx2``: the same code on ``httpx2`` / ``httpcore2`` (the fork the openai SDK moved to).
* ``h2``: ``httpx.AsyncHTTPTransport(http1=False, http2=True)`` (h2c, prior knowledge): a few
  connections, each carrying many streams (httpcore puts every request of a pool on its first
  HTTP/2 connection, so several connections means several single-connection transports).
  httpcore allows at most 100 streams per connection (its own MAX_CONCURRENT_STREAMS setting
  caps the server's), so by default there is one connection per 100 requests in flight.
* ``httpcore``: ``httpcore.AsyncConnectionPool`` shards of 8 used directly: no httpx models.
* ``conn``: one ``httpcore.AsyncHTTPConnection`` per request in flight, kept on a free list:
  httpcore still parses HTTP (h11) and owns each connection; only the pool above it goes
  (httpcore's pool walks its connections and its queue on every request and every release).
* ``conn2``: the same on ``httpcore2`` (httpx2's core).
* ``aiohttp-thread``: aiohttp on uvloop in a thread of its own, bridged to trio (one park and
  one wake per request): maintained libraries do all the HTTP; trio-llm's engine stays trio.
* ``aiohttp``: the yardstick: ``aiohttp.ClientSession`` on asyncio + uvloop.

A child (``python -m benchmarks._backends SPEC_JSON``) runs one candidate once and prints one
JSON line: wall and CPU seconds of the sending part (imports and set-up excluded), peak RSS,
the most file descriptors it had open, and how many requests succeeded. One process per run:
peak RSS is per process, and no run inherits another's heap or sockets.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import httpx

from trio_llm._http import HttpPool, HttpxTransports, RawResponse
from trio_llm._providers import HttpRequest

#: Connections per shard for the sharded HTTP/1.1 candidates (as ``HttpPool``).
PER_SHARD = 8


def raise_nofile(want: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE toward ``want`` (never above the hard limit); return it.

    Raising the hard limit needs CAP_SYS_RESOURCE, which this sandbox does not grant (root
    or not): here soft = hard = 20,000, enough for 10,000 connections a side.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def chat_body(i: int) -> dict[str, Any]:
    """The body every loop sends (distinct prompts, as in a real batch)."""
    return {"model": "mock-gpt", "messages": [{"role": "user", "content": f"hello {i}"}]}


class _Sharded:
    """Requests to the least busy of several transports (``HttpPool``'s rule)."""

    def __init__(self, transports: list[Any]) -> None:
        self._transports = transports
        self._in_flight = [0] * len(transports)
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Any:
        for transport in self._transports:
            await self._stack.enter_async_context(transport)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def _pick(self) -> int:
        in_flight = self._in_flight
        return in_flight.index(min(in_flight)) if len(in_flight) > 1 else 0


class HttpxLikePool(_Sharded):
    """``HttpPool``'s code on any httpx-shaped module (``httpx2``), or on h2 transports."""

    def __init__(
        self,
        module: Any,
        concurrency: int,
        *,
        per_shard: int = PER_SHARD,
        http1: bool = True,
        http2: bool = False,
        shards: int | None = None,
    ) -> None:
        self._module = module
        shards = shards or math.ceil(concurrency / per_shard)
        per = math.ceil(concurrency / shards) if http1 else 1
        limits = module.Limits(max_connections=per, max_keepalive_connections=per)
        super().__init__(
            [
                module.AsyncHTTPTransport(limits=limits, http1=http1, http2=http2)
                for _ in range(shards)
            ]
        )
        self._urls: dict[str, Any] = {}

    async def send(self, request: HttpRequest) -> RawResponse:
        shard = self._pick()
        self._in_flight[shard] += 1
        try:
            url = self._urls.get(request.url)
            if url is None:
                url = self._urls[request.url] = self._module.URL(request.url)
            response = await self._transports[shard].handle_async_request(
                self._module.Request(
                    request.method, url, headers=request.headers, content=request.content
                )
            )
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers.raw
            }
            return RawResponse(response.status_code, headers, body)
        finally:
            self._in_flight[shard] -= 1


class _Targets:
    """Parsed URLs and encoded headers, cached: the engine sends to a handful of URLs with a
    handful of header sets, so httpcore's models can be built from ready bytes."""

    def __init__(self, module: Any = None) -> None:
        if module is None:
            import httpcore as module
        self._module = module
        self._urls: dict[str, Any] = {}
        self._hosts: dict[tuple[bytes, int | None], bytes] = {}

    def url(self, url: str) -> Any:
        parsed = self._urls.get(url)
        if parsed is None:
            u = httpx.URL(url)
            parsed = self._urls[url] = self._module.URL(
                scheme=u.raw_scheme, host=u.raw_host, port=u.port, target=u.raw_path
            )
            self._hosts[parsed.host, parsed.port] = u.netloc
        return parsed

    def headers(self, request: HttpRequest, url: Any) -> list[tuple[bytes, bytes]]:
        content = request.content
        host = self._hosts[url.host, url.port]
        out = [(b"host", host), (b"content-length", str(len(content)).encode())]
        out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
        return out


def _raw_response(status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> RawResponse:
    return RawResponse(
        status, {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}, body
    )


class HttpcorePool(_Sharded):
    """``httpcore.AsyncConnectionPool`` shards, used without httpx's Request/Response."""

    def __init__(self, concurrency: int, *, per_shard: int = PER_SHARD) -> None:
        import httpcore

        shards = math.ceil(concurrency / per_shard)
        per = math.ceil(concurrency / shards)
        super().__init__(
            [
                httpcore.AsyncConnectionPool(max_connections=per, max_keepalive_connections=per)
                for _ in range(shards)
            ]
        )
        self._targets = _Targets()
        self._request = httpcore.Request

    async def send(self, request: HttpRequest) -> RawResponse:
        shard = self._pick()
        self._in_flight[shard] += 1
        try:
            url = self._targets.url(request.url)
            response = await self._transports[shard].handle_async_request(
                self._request(
                    request.method.encode(),
                    url,
                    headers=self._targets.headers(request, url),
                    content=request.content,
                )
            )
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            return _raw_response(response.status, response.headers, body)
        finally:
            self._in_flight[shard] -= 1


class ConnectionPerSlot:
    """One ``httpcore.AsyncHTTPConnection`` per request in flight, on a free list.

    The callers bound the requests in flight (the engine's ``CapacityLimiter``), so the list
    never holds more connections than that. A connection the server closed is dropped and a
    new one opened (httpcore reconnects nothing by itself on a bare connection).
    """

    def __init__(self, concurrency: int, module: Any = None) -> None:
        if module is None:
            import httpcore as module
        self._httpcore = module
        self._idle: list[Any] = []
        self._all: set[Any] = set()
        self._targets = _Targets(module)

    async def __aenter__(self) -> ConnectionPerSlot:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in list(self._all):
            await conn.aclose()

    async def send(self, request: HttpRequest) -> RawResponse:
        hc = self._httpcore
        url = self._targets.url(request.url)
        idle = self._idle
        conn = None
        while idle:
            candidate = idle.pop()
            if candidate.is_idle() and not candidate.has_expired():
                conn = candidate
                break
            self._all.discard(candidate)
            await candidate.aclose()
        if conn is None:
            conn = hc.AsyncHTTPConnection(hc.Origin(url.scheme, url.host, url.port))
            self._all.add(conn)
        reusable = False
        try:
            response = await conn.handle_async_request(
                hc.Request(
                    request.method.encode(),
                    url,
                    headers=self._targets.headers(request, url),
                    content=request.content,
                )
            )
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            reusable = True
            return _raw_response(response.status, response.headers, body)
        finally:
            if reusable and not conn.is_closed():
                idle.append(conn)
            else:
                self._all.discard(conn)
                with contextlib.suppress(Exception):
                    await conn.aclose()


class AiohttpThread:
    """aiohttp on a uvloop event loop in a thread of its own, behind ``HttpPool``'s interface.

    ``send`` hands the request to the loop (``run_coroutine_threadsafe``) and parks the trio
    task; the loop's done-callback wakes it through the trio token. HTTP parsing, pooling and
    socket I/O all run in aiohttp/uvloop (C), so trio schedules one park and one wake per
    request. Both threads share the GIL, so this is one core's worth of Python, split.
    Cancelling the trio task cancels the aiohttp request.
    """

    def __init__(self, concurrency: int) -> None:
        self._concurrency = concurrency
        self._loop: Any = None
        self._session: Any = None
        self._thread: threading.Thread | None = None
        self._token: Any = None

    async def __aenter__(self) -> AiohttpThread:
        import asyncio

        import aiohttp
        import trio
        import uvloop

        self._token = trio.lowlevel.current_trio_token()
        loop = uvloop.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="aiohttp-loop", daemon=True)
        self._thread.start()
        await trio.to_thread.run_sync(ready.wait)
        self._loop = loop

        async def open_session() -> Any:
            connector = aiohttp.TCPConnector(limit=self._concurrency, limit_per_host=0)
            return aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("user-agent",),
            )

        future = asyncio.run_coroutine_threadsafe(open_session(), loop)
        self._session = await trio.to_thread.run_sync(future.result)
        return self

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        import trio

        future = asyncio.run_coroutine_threadsafe(self._session.close(), self._loop)
        await trio.to_thread.run_sync(future.result)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        await trio.to_thread.run_sync(self._thread.join)
        self._loop.close()

    async def _request(self, request: HttpRequest) -> RawResponse:
        async with self._session.request(
            request.method, request.url, data=request.content, headers=request.headers
        ) as response:
            body = await response.read()
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.raw_headers
            }
            return RawResponse(response.status, headers, body)

    async def send(self, request: HttpRequest) -> RawResponse:
        import asyncio

        import outcome
        import trio

        task = trio.lowlevel.current_task()
        token = self._token
        state = {"aborted": False}
        future = asyncio.run_coroutine_threadsafe(self._request(request), self._loop)

        def wake(result: Any) -> None:  # in the trio thread
            if not state["aborted"]:
                trio.lowlevel.reschedule(task, result)

        def done(f: Any) -> None:  # in the loop's thread
            token.run_sync_soon(wake, outcome.capture(f.result))

        future.add_done_callback(done)

        def abort(_raise_cancel: Any) -> Any:
            state["aborted"] = True
            future.cancel()
            return trio.lowlevel.Abort.SUCCEEDED

        result: RawResponse = await trio.lowlevel.wait_task_rescheduled(abort)
        return result


def make_pool(name: str, concurrency: int, spec: Mapping[str, Any]) -> Any:
    """The HTTP layer called ``name`` (see the module docstring)."""
    if name == "httppool":
        return HttpPool(concurrency)
    if name == "httpx-shards":  # HttpPool before it kept a connection per slot
        return HttpPool(concurrency, backend=HttpxTransports.sharded(concurrency))
    if name == "httpx2":
        import httpx2

        return HttpxLikePool(httpx2, concurrency)
    if name == "h2":
        # httpcore caps a connection at min(server's MAX_CONCURRENT_STREAMS, its own 100).
        streams = min(100, int(spec.get("streams", 100)))
        connections = int(spec.get("connections") or max(1, math.ceil(concurrency / streams)))
        return HttpxLikePool(httpx, concurrency, http1=False, http2=True, shards=connections)
    if name == "httpcore":
        return HttpcorePool(concurrency)
    if name == "conn":
        return ConnectionPerSlot(concurrency)
    if name == "conn2":
        import httpcore2

        return ConnectionPerSlot(concurrency, httpcore2)
    if name == "aiohttp-thread":
        return AiohttpThread(concurrency)
    raise ValueError(f"unknown HTTP layer {name!r}")


# --- the child: one candidate, one run ----------------------------------------------------


class _Sampler:
    """The most file descriptors this process had open, sampled every 50 ms in a thread."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.max_fds = 0
        self._enabled = enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.max_fds = max(self.max_fds, len(os.listdir("/proc/self/fd")))
            self._stop.wait(0.05)

    def __enter__(self) -> _Sampler:
        if self._enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._enabled:
            self._thread.join()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _trio_loop(spec: Mapping[str, Any]) -> dict[str, Any]:
    """N workers over a shared counter, each: encode, send, decode (no engine)."""
    import trio

    n, concurrency = int(spec["n"]), int(spec["concurrency"])
    url = spec["base_url"] + "/chat/completions"
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "authorization": "Bearer sk-bench",
    }
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []
    timing: dict[str, float] = {}

    async def main() -> None:
        async with make_pool(spec["backend"], concurrency, spec) as pool:
            counter = iter(range(n))

            async def worker() -> None:
                for i in counter:
                    request = HttpRequest(
                        method="POST",
                        url=url,
                        headers=headers,
                        content=json.dumps(chat_body(i), separators=(",", ":")).encode(),
                    )
                    try:
                        response = await pool.send(request)
                    except Exception as exc:  # a bare loop has no retries: count and go on
                        counts["failed"] += 1
                        if len(errors) < 5:
                            errors.append(f"{exc.__class__.__name__}: {exc}")
                        continue
                    if response.status == 200:
                        json.loads(response.body)
                        counts["ok"] += 1
                    else:
                        counts["failed"] += 1

            timing["cpu0"], timing["t0"] = _cpu(), time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
            timing["t1"], timing["cpu1"] = time.perf_counter(), _cpu()

    trio.run(main)
    return {**counts, **timing, "errors": errors}


def _engine(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``trio_llm.Engine.map`` over N prompts, on the named HTTP layer."""
    import trio

    import trio_llm

    n, concurrency = int(spec["n"]), int(spec["concurrency"])
    consumers: list[Any] = []
    if spec.get("progress"):
        # What `trio-llm run` adds: the run summary fed by every event, a live display.
        from trio_llm._summary import RunSummary

        consumers.append(RunSummary(total=n))
    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url=spec["base_url"], model="mock-gpt"),
        keys=["sk-bench"],
        concurrency=concurrency,
        timeout=max(60.0, 4 * float(spec.get("latency", 0))),
        consumers=consumers,
    )
    backend = spec["backend"]
    if backend != "httppool":
        engine._new_http = lambda: make_pool(backend, concurrency, spec)  # type: ignore[method-assign]
    prompts = [f"hello {i}" for i in range(n)]
    timing: dict[str, float] = {}

    async def main() -> list[Any]:
        display: Any = contextlib.nullcontext()
        paced: Any = contextlib.nullcontext()
        if spec.get("gc_paced"):
            # As `trio-llm run` does (trio_llm/_gc.py).
            from trio_llm._gc import collect_less_often

            paced = collect_less_often(concurrency)
        if consumers:
            import io

            from rich.console import Console

            from trio_llm._progress import Progress

            console = Console(file=io.StringIO(), force_terminal=True, width=120)
            display = Progress(consumers[0], console=console)
        timing["cpu0"], timing["t0"] = _cpu(), time.perf_counter()
        with paced:
            async with display:
                results = await engine.map(prompts)
        timing["t1"], timing["cpu1"] = time.perf_counter(), _cpu()
        return results

    results = trio.run(main)
    ok = sum(r.ok for r in results)
    errors = [f"{r.error.kind}: {r.error.message}" for r in results if r.error][:5]
    return {"ok": ok, "failed": len(results) - ok, **timing, "errors": errors}


def _aiohttp(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The yardstick: aiohttp on asyncio + uvloop, N workers over a shared counter."""
    import asyncio

    import aiohttp
    import uvloop

    n, concurrency = int(spec["n"]), int(spec["concurrency"])
    url = spec["base_url"] + "/chat/completions"
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "authorization": "Bearer sk-bench",
    }
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []
    timing: dict[str, float] = {}

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, ttl_dns_cache=None)
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            counter = iter(range(n))

            async def worker() -> None:
                for i in counter:
                    content = json.dumps(chat_body(i), separators=(",", ":")).encode()
                    try:
                        async with session.post(url, data=content, headers=headers) as response:
                            body = await response.read()
                            status = response.status
                    except Exception as exc:
                        counts["failed"] += 1
                        if len(errors) < 5:
                            errors.append(f"{exc.__class__.__name__}: {exc}")
                        continue
                    if status == 200:
                        json.loads(body)
                        counts["ok"] += 1
                    else:
                        counts["failed"] += 1

            timing["cpu0"], timing["t0"] = _cpu(), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            timing["t1"], timing["cpu1"] = time.perf_counter(), _cpu()

    uvloop.run(main())
    return {**counts, **timing, "errors": errors}


LOOPS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "loop": _trio_loop,
    "engine": _engine,
    "aiohttp": _aiohttp,
}


class _GcTimer:
    """Seconds the cyclic garbage collector ran, and how often per generation (gc.callbacks):
    with 10,000 tasks in flight the heap is large, and a full collection walks all of it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1


def child_main(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run one candidate once; return its figures."""
    import gc

    gc_timer = _GcTimer()
    gc.callbacks.append(gc_timer)
    if spec.get("gc_threshold"):
        gc.set_threshold(*spec["gc_threshold"])
    limit = raise_nofile(int(spec.get("nofile", 65536)))
    if spec.get("pin") is not None:
        os.sched_setaffinity(0, {int(spec["pin"])})
    with _Sampler(enabled=not spec.get("profile")) as sampler:
        if spec.get("cprofile"):
            import cProfile

            # Wall time (the default timer): the parent pins this process and the server to
            # different cores, so a send that wakes the server is not preempted by it.
            # (time.process_time as the timer costs a syscall per event: 10x slower.)
            profiler = cProfile.Profile()
            profiler.enable()
            try:
                out = LOOPS[spec["loop"]](spec)
            finally:
                profiler.disable()
                profiler.dump_stats(spec["cprofile"])
        else:
            out = LOOPS[spec["loop"]](spec)
    wall = out.pop("t1") - out.pop("t0")
    cpu = out.pop("cpu1") - out.pop("cpu0")
    return {
        **out,
        "wall_s": wall,
        "cpu_s": cpu,
        "req_per_s": out["ok"] / wall if wall else 0.0,
        "cpu_us_per_req": cpu / max(1, out["ok"]) * 1e6,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "max_fds": sampler.max_fds,
        "gc_s": gc_timer.seconds,
        "gc_collections": gc_timer.collections,
        "nofile": list(limit),
    }


if __name__ == "__main__":
    result = child_main(json.loads(sys.argv[1]))
    print(json.dumps(result), flush=True)
