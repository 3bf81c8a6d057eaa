"""Batch API offload: a file run sent through the provider's Batch API, at half price.

::

    run_file(..., offload=BatchOffload())          the same reader, journal and OUTPUT lines
      └─ Offload.results(requests)                  instead of engine.stream(requests)
           read every request → split into batches within the provider's limits
           → (state file) → upload + create → poll with backoff → download output and errors
           → one Result per request, merged into OUTPUT by the journal

OpenAI: a JSONL file of ``{custom_id, method, url, body}`` lines uploaded to ``/v1/files``
(purpose ``batch``), then ``POST /v1/batches``; at most 50,000 requests and 200 MB per file.
Anthropic: ``POST /v1/messages/batches`` with ``{custom_id, params}`` requests; at most
100,000 requests and 256 MB. A request's ``custom_id`` is a hash of its input id, so it is the
same on every rerun.

Resume, and never twice: every batch is recorded in a state file beside OUTPUT
(``OUTPUT.batches.json``, replaced atomically) *before* its upload, after the upload (its file
id) and after its creation (its batch id). A rerun reattaches to the batches recorded there;
one interrupted between upload and creation is looked up first — the file by its name, the
OpenAI batch by its ``metadata.trio_llm_batch``, an Anthropic batch (which has no metadata)
by its size among those created since it was recorded — and created only if none is found.
A batch is marked merged once all its lines are in OUTPUT; items answered there are skipped
by the journal as in any resumed run, so a merge interrupted halfway writes nothing twice.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final, final
from urllib.parse import urlsplit

import attrs
import httpx
import orjson
import trio

from . import _events as ev
from ._errors import ConfigurationError, ProviderError
from ._models import ErrorInfo, ErrorKind, Request, Result
from ._providers import AnthropicMessages, Completion, OpenAICompatible, Provider
from ._providers._base import error_from_response

__all__ = ["BatchOffload", "Offload", "state_path"]

#: (requests, bytes) per batch.
OPENAI_LIMITS: Final = (50_000, 200 * 1024 * 1024)
ANTHROPIC_LIMITS: Final = (100_000, 256 * 1024 * 1024)
#: Batch API prices are half the synchronous ones (OpenAI and Anthropic alike).
DISCOUNT: Final = 0.5
#: ``auto``: the Batch API for inputs of at least this many items...
AUTO_MIN_ITEMS: Final = 1_000
#: ...when there is no deadline, or one at least as long as the providers' completion window.
COMPLETION_WINDOW_S: Final = 24 * 3600.0
_STATE_VERSION: Final = 1
_SUBMIT_ATTEMPTS: Final = 6


@attrs.frozen(kw_only=True)
class BatchOffload:
    """How a file run uses the Batch API.

    Attributes:
        auto: decide by the input (``--batch-api auto``): the Batch API when the input has at
            least ``AUTO_MIN_ITEMS`` items and no deadline shorter than the 24 h completion
            window, or when batches of an earlier run are still open; else a normal run.
        size: requests per batch (at most the provider's limit, the default).
        poll_s: the first wait between status reads; each next one is 1.5 x longer...
        max_poll_s: ...up to this.
    """

    auto: bool = False
    size: int | None = attrs.field(default=None)
    poll_s: float = 30.0
    max_poll_s: float = 300.0

    @size.validator
    def _check_size(self, _: Any, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ConfigurationError(f"--batch-size must be at least 1, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if not self.poll_s > 0 or not self.max_poll_s > 0:
            raise ConfigurationError(f"--batch-poll must be positive, got {self.poll_s!r}")

    def wanted(self, items: int | None, deadline: float | None, output: str | Path) -> bool:
        """Whether a run of ``items`` goes through the Batch API (see ``auto``)."""
        if not self.auto or open_batches(state_path(output)):
            return True
        long_enough = deadline is None or deadline >= COMPLETION_WINDOW_S
        return items is not None and items >= AUTO_MIN_ITEMS and long_enough


def state_path(output: str | Path) -> Path:
    """Where the batches of a run writing ``output`` are recorded."""
    return Path(f"{output}.batches.json")


def open_batches(path: Path) -> int:
    """How many batches recorded in the state file at ``path`` are not merged yet."""
    try:
        state = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return 0
    return sum(1 for chunk in state.get("chunks", ()) if not chunk.get("merged"))


def custom_id(item_id: str | None, index: int) -> str:
    """A request's id in a batch: stable across reruns, ``[A-Za-z0-9_-]{1,64}`` as Anthropic
    requires."""
    source = item_id if item_id is not None else f"#{index}"
    return "r" + hashlib.sha256(source.encode()).hexdigest()[:40]


@attrs.define(eq=False)
class _Chunk:
    """One batch as recorded in the state file."""

    name: str
    ids: list[str]
    file_id: str | None = None
    batch_id: str | None = None
    recorded_at: float = 0.0
    merged: bool = False


@attrs.define(eq=False)
class _State:
    """The state file: the batches of one OUTPUT."""

    path: Path
    api: str
    token: str
    chunks: list[_Chunk]
    next_chunk: int = 1

    @classmethod
    def load(cls, path: Path, api: str) -> _State:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls(path=path, api=api, token=secrets.token_hex(4), chunks=[])
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigurationError(f"cannot read the batch state file {path}: {exc}") from None
        if data.get("version") != _STATE_VERSION or data.get("api") != api:
            raise ConfigurationError(
                f"{path} records batches of the {data.get('api')!r} Batch API, not {api!r}\n"
                "HINT: rerun with the provider of the earlier run, or use another -o"
            )
        chunks = [_Chunk(**chunk) for chunk in data["chunks"]]
        return cls(path, api, data["token"], chunks, data.get("next_chunk", len(chunks) + 1))

    def save(self) -> None:
        """Replace the file atomically (a kill leaves the old or the new one, never half)."""
        data = {
            "version": _STATE_VERSION,
            "api": self.api,
            "token": self.token,
            "next_chunk": self.next_chunk,
            "chunks": [attrs.asdict(chunk) for chunk in self.chunks],
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as file:
            file.write(orjson.dumps(data))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

    def new_chunk(self, ids: list[str]) -> _Chunk:
        chunk = _Chunk(
            name=f"trio-llm-{self.token}-{self.next_chunk:04d}.jsonl",
            ids=ids,
            recorded_at=time.time(),
        )
        self.next_chunk += 1
        self.chunks.append(chunk)
        return chunk


@attrs.frozen
class _Line:
    """How one request of a batch ended: a body (``status`` 200), an error body, or none
    (expired: ``status`` 0, or cancelled: -1)."""

    status: int
    body: bytes | None = None
    message: str = ""


class _Api:
    """One provider's Batch API (the HTTP calls; ``Offload`` does the bookkeeping)."""

    kind: str
    limits: tuple[int, int]

    def __init__(self, provider: Provider, client: httpx.AsyncClient) -> None:
        self.provider = provider
        self.client = client

    def entry(self, cid: str, request: Request) -> bytes:
        raise NotImplementedError

    async def submit(self, chunk: _Chunk, entries: list[bytes], state: _State) -> None:
        raise NotImplementedError

    async def ended(self, chunk: _Chunk) -> bool:
        raise NotImplementedError

    async def lines(self, chunk: _Chunk) -> dict[str, _Line]:
        raise NotImplementedError

    async def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP call, tried again after transport errors and 429/5xx (backoff 1-30 s)."""
        for attempt in range(_SUBMIT_ATTEMPTS):
            try:
                response = await self.client.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                error = error_from_response(
                    response.status_code, response.headers, response.content
                )
                if response.status_code != 429 and response.status_code < 500:
                    raise ConfigurationError(
                        f"the Batch API refused {method} {url}: {error} (rerun to resume)"
                    )
                problem = str(error)
            await trio.sleep(min(30.0, 2.0**attempt))
        raise ConfigurationError(
            f"the Batch API kept failing on {method} {url}: {problem}\n"
            "HINT: rerun the same command later; the batches already created are kept"
        )


class _OpenAIBatches(_Api):
    kind = "openai"
    limits = OPENAI_LIMITS

    def entry(self, cid: str, request: Request) -> bytes:
        http = self.provider.build_request(request, "")
        body = orjson.loads(http.content)
        line = {"custom_id": cid, "method": "POST", "url": urlsplit(http.url).path, "body": body}
        return orjson.dumps(line) + b"\n"

    async def submit(self, chunk: _Chunk, entries: list[bytes], state: _State) -> None:
        if chunk.file_id is None:
            listed = (await self.call("GET", "/files", params={"purpose": "batch"})).json()
            found = [f["id"] for f in listed.get("data", ()) if f.get("filename") == chunk.name]
            if found:
                chunk.file_id = found[0]
            else:
                files = {"file": (chunk.name, b"".join(entries), "application/jsonl")}
                response = await self.call("POST", "/files", data={"purpose": "batch"}, files=files)
                chunk.file_id = str(response.json()["id"])
            state.save()
        if chunk.batch_id is None:
            listed = (await self.call("GET", "/batches", params={"limit": 100})).json()
            found = [
                b["id"]
                for b in listed.get("data", ())
                if (b.get("metadata") or {}).get("trio_llm_batch") == chunk.name
            ]
            if found:
                chunk.batch_id = found[0]
            else:
                path = urlsplit(str(self.provider.build_request(Request.from_prompt(""), "").url))
                created = await self.call(
                    "POST",
                    "/batches",
                    json={
                        "input_file_id": chunk.file_id,
                        "endpoint": path.path,
                        "completion_window": "24h",
                        "metadata": {"trio_llm_batch": chunk.name},
                    },
                )
                chunk.batch_id = str(created.json()["id"])
            state.save()

    async def ended(self, chunk: _Chunk) -> bool:
        batch = (await self.call("GET", f"/batches/{chunk.batch_id}")).json()
        return bool(batch.get("status") in ("completed", "failed", "expired", "cancelled"))

    async def lines(self, chunk: _Chunk) -> dict[str, _Line]:
        batch = (await self.call("GET", f"/batches/{chunk.batch_id}")).json()
        found: dict[str, _Line] = {}
        for field in ("output_file_id", "error_file_id"):
            file_id = batch.get(field)
            if not file_id:
                continue
            content = (await self.call("GET", f"/files/{file_id}/content")).content
            for raw in content.splitlines():
                if not raw.strip():
                    continue
                line = orjson.loads(raw)
                response = line.get("response")
                error = line.get("error")
                if response is not None:
                    found[line["custom_id"]] = _Line(
                        int(response.get("status_code", 500)), orjson.dumps(response.get("body"))
                    )
                else:
                    message = (error or {}).get("message") or "no result"
                    code = (error or {}).get("code") or ""
                    found[line["custom_id"]] = _Line(0, None, f"{code}: {message}")
        return found


class _AnthropicBatches(_Api):
    kind = "anthropic"
    limits = ANTHROPIC_LIMITS

    def entry(self, cid: str, request: Request) -> bytes:
        params = orjson.loads(self.provider.build_request(request, "").content)
        return orjson.dumps({"custom_id": cid, "params": params})

    async def submit(self, chunk: _Chunk, entries: list[bytes], state: _State) -> None:
        if chunk.batch_id is not None:
            return
        if chunk.file_id == "creating":
            # Killed while creating it: one of the batches created since, of the same size,
            # is it (Anthropic batches carry no metadata to name them by).
            listed = (await self.call("GET", "/messages/batches", params={"limit": 100})).json()
            taken = {c.batch_id for c in state.chunks}
            for batch in listed.get("data", ()):
                created = _unix(batch.get("created_at"))
                total = sum((batch.get("request_counts") or {}).values())
                if (
                    batch["id"] not in taken
                    and total == len(chunk.ids)
                    and created >= chunk.recorded_at - 120
                ):
                    chunk.batch_id = str(batch["id"])
                    state.save()
                    return
        chunk.file_id = "creating"
        state.save()
        body = b'{"requests":[' + b",".join(entries) + b"]}"
        created_batch = await self.call(
            "POST",
            "/messages/batches",
            content=body,
            headers={"content-type": "application/json"},
        )
        chunk.batch_id = str(created_batch.json()["id"])
        state.save()

    async def ended(self, chunk: _Chunk) -> bool:
        batch = (await self.call("GET", f"/messages/batches/{chunk.batch_id}")).json()
        return bool(batch.get("processing_status") == "ended")

    async def lines(self, chunk: _Chunk) -> dict[str, _Line]:
        content = (await self.call("GET", f"/messages/batches/{chunk.batch_id}/results")).content
        found: dict[str, _Line] = {}
        for raw in content.splitlines():
            if not raw.strip():
                continue
            line = orjson.loads(raw)
            result = line.get("result") or {}
            kind = result.get("type")
            if kind == "succeeded":
                found[line["custom_id"]] = _Line(200, orjson.dumps(result.get("message")))
            elif kind == "errored":
                error = result.get("error") or {}
                inner = error.get("error") or {}
                status = 400 if inner.get("type") == "invalid_request_error" else 500
                found[line["custom_id"]] = _Line(status, orjson.dumps(error))
            else:
                found[line["custom_id"]] = _Line(-1 if kind == "canceled" else 0, None, kind or "")
        return found


def _unix(text: object) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


@final
class Offload:
    """One file run through the Batch API (see the module docs)."""

    def __init__(
        self,
        settings: BatchOffload,
        engine: Any,
        output: str | Path,
        *,
        deadline: float | None = None,
    ) -> None:
        if str(output) == "-":
            raise ConfigurationError(
                "--batch-api needs an OUTPUT file: its batches are recorded beside it\n"
                "HINT: -o answers.jsonl"
            )
        provider = engine.provider
        if not isinstance(provider, (OpenAICompatible, AnthropicMessages)):
            raise ConfigurationError(
                f"--batch-api works with OpenAI and Anthropic, not {type(provider).__name__}"
            )
        self.settings = settings
        self.engine = engine
        self.provider = provider
        self.deadline = deadline
        self.state_path = state_path(output)
        self._kind = "anthropic" if isinstance(provider, AnthropicMessages) else "openai"

    def _client(self) -> httpx.AsyncClient:
        key = self.engine.pool.keys[0]
        if self._kind == "anthropic":
            headers = {"x-api-key": key.reveal(), "anthropic-version": "2023-06-01"}
        else:
            headers = {"authorization": f"Bearer {key.reveal()}"}
        kwargs: dict[str, Any] = {}
        if self.engine._transport is not None:
            kwargs["transport"] = self.engine._transport
        return httpx.AsyncClient(
            base_url=self.provider.base_url,
            headers=headers,
            # A 200 MB upload may take minutes; every other call is small.
            timeout=httpx.Timeout(120.0, write=1800.0),
            **kwargs,
        )

    async def results(self, requests: AsyncIterator[Request]) -> AsyncGenerator[Result, None]:
        """One Result per request (``index`` = its position in ``requests``)."""
        items: dict[str, tuple[int, Request]] = {}
        async for request in requests:
            index = len(items)
            items[custom_id(request.id, index)] = (index, request)
        if not items:
            return
        async with self._client() as client:
            api: _Api = (_AnthropicBatches if self._kind == "anthropic" else _OpenAIBatches)(
                self.provider, client
            )
            state = _State.load(self.state_path, api.kind)
            waiting = self._plan(state, api, items)
            state.save()
            events = self.engine.events
            for chunk in waiting:
                if chunk.batch_id is None:
                    entries = [api.entry(cid, items[cid][1]) for cid in chunk.ids if cid in items]
                    await api.submit(chunk, entries, state)
                    events.emit(
                        ev.BATCH_SUBMITTED,
                        batch_id=chunk.batch_id,
                        name=chunk.name,
                        requests=len(chunk.ids),
                    )
            stop_at = trio.current_time() + (
                self.deadline if self.deadline is not None else float("inf")
            )
            async for result in self._collect(api, state, waiting, items, stop_at):
                yield result
            for _cid, (index, request) in sorted(items.items(), key=lambda kv: kv[1][0]):
                # Only after the deadline: every batch ended otherwise.
                late = _failed(
                    index,
                    request,
                    ErrorInfo(
                        kind=ErrorKind.DEADLINE,
                        message=f"the run's deadline of {self.deadline}s passed while its "
                        "batch was running; rerun to collect it",
                    ),
                )
                self._report(late)
                yield late
            items.clear()

    def _plan(
        self, state: _State, api: _Api, items: dict[str, tuple[int, Request]]
    ) -> list[_Chunk]:
        """The batches this run waits for: the open ones holding its items, then new ones."""
        waiting: list[_Chunk] = []
        claimed: set[str] = set()
        for chunk in state.chunks:
            if chunk.merged:
                continue
            mine = [cid for cid in chunk.ids if cid in items]
            if not mine:
                chunk.merged = True  # every item of it is answered in OUTPUT already
                continue
            if chunk.batch_id is None and chunk.file_id is None:
                chunk.ids = mine  # not sent yet: only what is still to do
            waiting.append(chunk)
            claimed.update(chunk.ids)
        most, most_bytes = api.limits
        if self.settings.size is not None:
            most = min(most, self.settings.size)
        ids: list[str] = []
        size = 0
        for cid, (_, request) in items.items():
            if cid in claimed:
                continue
            length = len(api.entry(cid, request)) + 1
            if ids and (len(ids) >= most or size + length > most_bytes - 1024):
                waiting.append(state.new_chunk(ids))
                ids, size = [], 0
            ids.append(cid)
            size += length
        if ids:
            waiting.append(state.new_chunk(ids))
        return waiting

    async def _collect(
        self,
        api: _Api,
        state: _State,
        waiting: list[_Chunk],
        items: dict[str, tuple[int, Request]],
        stop_at: float,
    ) -> AsyncIterator[Result]:
        """Poll until every batch ended (or ``stop_at``), merging each as it ends."""
        open_chunks = list(waiting)
        pause = self.settings.poll_s
        while open_chunks and trio.current_time() < stop_at:
            for chunk in list(open_chunks):
                if not await api.ended(chunk):
                    continue
                lines = await api.lines(chunk)
                succeeded = failed = 0
                for cid in chunk.ids:
                    found = items.pop(cid, None)
                    if found is None:
                        continue  # answered in OUTPUT already (a merge cut short)
                    result = self._result(found[0], found[1], lines.get(cid))
                    succeeded += result.ok
                    failed += not result.ok
                    self._report(result)
                    yield result
                chunk.merged = True
                state.save()
                open_chunks.remove(chunk)
                self.engine.events.emit(
                    ev.BATCH_FINISHED,
                    batch_id=chunk.batch_id,
                    succeeded=succeeded,
                    failed=failed,
                )
            if open_chunks:
                await trio.sleep(min(pause, max(0.0, stop_at - trio.current_time())))
                pause = min(self.settings.max_poll_s, pause * 1.5)

    def _report(self, result: Result) -> None:
        """The item's event, as a normal run emits it (summaries count tokens and cost)."""
        events = self.engine.events
        if result.ok:
            usage = result.usage
            events.emit(
                ev.REQUEST_SUCCEEDED,
                index=result.index,
                id=result.id,
                attempt=1,
                key_id=result.key_id,
                latency_s=0.0,
                prompt_tokens=None if usage is None else usage.prompt_tokens,
                completion_tokens=None if usage is None else usage.completion_tokens,
                cost_usd=result.cost_usd,
            )
        else:
            assert result.error is not None
            events.emit(
                ev.REQUEST_FAILED,
                index=result.index,
                id=result.id,
                attempts=1,
                kind=result.error.kind.value,
                status=result.error.status,
                message=result.error.message,
            )

    def _result(self, index: int, request: Request, line: _Line | None) -> Result:
        provider = self.provider
        model = request.model or provider.model
        if line is None:
            info = ErrorInfo(kind=ErrorKind.SERVER_ERROR, message="the batch returned no result")
            return _failed(index, request, info)
        if line.status <= 0:
            kind = ErrorKind.TIMEOUT if line.status == 0 else ErrorKind.CANCELLED
            message = f"the Batch API did not run it ({line.message or 'expired'})"
            info = ErrorInfo(kind=kind, message=message, code="batch_expired")
            return _failed(index, request, info)
        body = line.body or b"null"
        try:
            completion: Completion = provider.parse_response(line.status, {}, body)
        except ProviderError as exc:
            info = ErrorInfo(kind=exc.kind, message=str(exc), status=exc.status, code=exc.code)
            return _failed(index, request, info)
        usage = completion.usage
        prices = self.engine.prices
        cost = None if usage is None else prices.cost(model, usage)
        return Result(
            index=index,
            id=request.id,
            ok=True,
            text=completion.text,
            finish_reason=completion.finish_reason,
            usage=usage,
            attempts=1,
            key_id=self.engine.pool.keys[0].fingerprint,
            cost_usd=None if cost is None else cost * DISCOUNT,
            raw=completion.raw,
            model=model,
        )


def _failed(index: int, request: Request, error: ErrorInfo) -> Result:
    return Result(index=index, id=request.id, ok=False, error=error, attempts=1)
