"""The mock's Batch APIs: OpenAI's ``/v1/files`` + ``/v1/batches`` and Anthropic's Message
Batches (``/v1/messages/batches``), with completion fast-forwarded.

A batch is ``in_progress`` until its ``MockServerConfig.batch_polls``-th status read (or until
``batch_after_s`` seconds after its creation); at that read it completes: every line is
answered as the chat endpoint would answer it (the same deterministic replies), and the output
and error files (OpenAI) or the results (Anthropic) are ready. Lines whose prompt holds
``[[batch:expired]]`` expire, ``[[batch:failed]]`` fail with a 500 in the error file (add
``*N`` to do so only the first N times that prompt is in a batch); a line whose body the chat
endpoint would refuse gets that refusal (a 400) as its result.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

import anyio
import attrs

from ._mock_content import prompt_digest
from ._mock_stats import key_fingerprint

if TYPE_CHECKING:
    from ._mock_server import MockApp

__all__ = ["MockBatches"]

Send = Callable[[int, Any], Any]

#: The largest file or batch body accepted (Anthropic's limit; OpenAI's is 200 MB).
MAX_BATCH_BYTES: Final = 256 * 1024 * 1024
_DIRECTIVE = re.compile(r"\[\[batch:(expired|failed)(?:\*(\d+))?\]\]")


@attrs.define
class _Batch:
    id: str
    api: str
    key: str
    created: float
    created_unix: int
    lines: list[tuple[str, Any]]  # (custom_id, body)
    input_file_id: str | None = None
    metadata: dict[str, Any] | None = None
    polls: int = 0
    done: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    results: bytes = b""
    counts: dict[str, int] = attrs.field(factory=dict)


class MockBatches:
    """The batch endpoints of one ``MockApp``."""

    def __init__(self, app: MockApp) -> None:
        self._app = app
        self._files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._batches: dict[str, _Batch] = {}
        self._seen: dict[bytes, int] = {}
        self._sequence = 0

    def _next_id(self, prefix: str) -> str:
        self._sequence += 1
        return f"{prefix}{self._app._id_prefix}{self._sequence:08x}"

    async def handle(
        self, scope: MutableMapping[str, Any], body: bytes, path: str, method: str, send: Send
    ) -> None:
        """Answer one request under ``/v1/files``, ``/v1/batches`` or
        ``/v1/messages/batches``; ``send(status, json_value_or_bytes)``."""
        from ._mock_server import _api_key, _HTTPError

        api = "anthropic" if path.startswith("/v1/messages/batches") else "openai"
        key = _api_key(scope)
        rid = self._next_id("req_")
        try:
            self._app._authenticate(key, key_fingerprint(key), api, rid)  # type: ignore[arg-type]
        except _HTTPError as error:
            await send(error.status, error.body_for(api, rid))  # type: ignore[arg-type]
            return
        assert key is not None
        query = parse_qs(scope.get("query_string", b"").decode())
        parts = path.strip("/").split("/")
        if api == "openai" and parts[1] == "files":
            await self._files_route(parts[2:], method, scope, body, query, send)
        elif api == "openai":
            await self._openai_batches(parts[2:], method, body, key, send)
        else:
            await self._anthropic_batches(parts[3:], method, body, key, query, send)

    # --- OpenAI ----------------------------------------------------------------------------
    async def _files_route(
        self,
        rest: list[str],
        method: str,
        scope: Mapping[str, Any],
        body: bytes,
        query: dict[str, list[str]],
        send: Send,
    ) -> None:
        if not rest and method == "POST":
            fields = _multipart(scope, body)
            if "file" not in fields:
                await send(400, _openai_error("Missing file.", "file"))
                return
            filename, content = fields["file"]
            file: dict[str, Any] = {
                "id": self._next_id("file-"),
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": filename or "upload.jsonl",
                "purpose": (fields.get("purpose") or ("", b"batch"))[1].decode(),
            }
            self._files[file["id"]] = (file, content)
            self._app._stats.files_uploaded += 1
            await send(200, file)
        elif not rest and method == "GET":
            purpose = query["purpose"][0] if query.get("purpose") else None
            data = [f for f, _ in self._files.values() if purpose in (None, f["purpose"])]
            await send(200, {"object": "list", "data": data, "has_more": False})
        elif len(rest) == 2 and rest[1] == "content" and method == "GET":
            found = self._files.get(rest[0])
            if found is None:
                await send(404, _openai_error(f"No such File object: {rest[0]}", "id"))
            else:
                await send(200, found[1])
        else:
            await send(404, _openai_error("Unknown files route.", None))

    async def _openai_batches(
        self, rest: list[str], method: str, body: bytes, key: str, send: Send
    ) -> None:
        if not rest and method == "POST":
            try:
                request = json.loads(body)
                file_id = request["input_file_id"]
            except (ValueError, KeyError, TypeError):
                await send(400, _openai_error("input_file_id is required.", "input_file_id"))
                return
            found = self._files.get(file_id)
            if found is None:
                await send(404, _openai_error(f"No such File object: {file_id}", "input_file_id"))
                return
            lines = []
            for raw in found[1].splitlines():
                if raw.strip():
                    line = json.loads(raw)
                    lines.append((str(line["custom_id"]), line.get("body")))
            batch = self._new_batch("openai", key, lines)
            batch.input_file_id = file_id
            batch.metadata = request.get("metadata")
            await send(200, self._openai_object(batch))
        elif not rest and method == "GET":
            data = [self._openai_object(b) for b in reversed(self._batches.values())]
            data = [b for b in data if b["id"].startswith("batch_")]
            await send(200, {"object": "list", "data": data, "has_more": False})
        elif len(rest) == 1 and method == "GET":
            found_batch = self._batches.get(rest[0])
            if found_batch is None or found_batch.api != "openai":
                await send(404, _openai_error(f"No batch found with id '{rest[0]}'.", "id"))
                return
            self._poll(found_batch)
            await send(200, self._openai_object(found_batch))
        else:
            await send(404, _openai_error("Unknown batches route.", None))

    def _openai_object(self, batch: _Batch) -> dict[str, Any]:
        total = len(batch.lines)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": "completed" if batch.done else "in_progress",
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": batch.created_unix,
            "completed_at": batch.created_unix if batch.done else None,
            "request_counts": {
                "total": total,
                "completed": batch.counts.get("succeeded", 0),
                "failed": total - batch.counts.get("succeeded", 0) if batch.done else 0,
            },
            "metadata": batch.metadata,
        }

    # --- Anthropic -------------------------------------------------------------------------
    async def _anthropic_batches(
        self,
        rest: list[str],
        method: str,
        body: bytes,
        key: str,
        query: dict[str, list[str]],
        send: Send,
    ) -> None:
        if not rest and method == "POST":
            try:
                requests = json.loads(body)["requests"]
                lines = [(str(r["custom_id"]), r["params"]) for r in requests]
            except (ValueError, KeyError, TypeError):
                await send(400, _anthropic_error("requests: Field required"))
                return
            await send(200, self._anthropic_object(self._new_batch("anthropic", key, lines)))
        elif not rest and method == "GET":
            data = [
                self._anthropic_object(b) for b in reversed(self._batches.values())
                if b.api == "anthropic"
            ]  # fmt: skip
            await send(200, {"data": data, "has_more": False})
        elif rest and method == "GET":
            batch = self._batches.get(rest[0])
            if batch is None or batch.api != "anthropic":
                await send(404, _anthropic_error(f"No batch {rest[0]}", "not_found_error"))
                return
            if len(rest) == 2 and rest[1] == "results":
                if not batch.done:
                    await send(404, _anthropic_error("The batch has not ended yet."))
                else:
                    await send(200, batch.results)
                return
            self._poll(batch)
            await send(200, self._anthropic_object(batch))
        else:
            await send(404, _anthropic_error("Unknown route.", "not_found_error"))

    def _anthropic_object(self, batch: _Batch) -> dict[str, Any]:
        counts = {"processing": 0 if batch.done else len(batch.lines), "succeeded": 0,
                  "errored": 0, "canceled": 0, "expired": 0}  # fmt: skip
        for name in ("succeeded", "errored", "expired"):
            counts[name] = batch.counts.get(name, 0)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(batch.created_unix))
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if batch.done else "in_progress",
            "request_counts": counts,
            "created_at": created,
            "ended_at": created if batch.done else None,
            "expires_at": None,
            "cancel_initiated_at": None,
            "results_url": f"/v1/messages/batches/{batch.id}/results" if batch.done else None,
        }

    # --- both ------------------------------------------------------------------------------
    def _new_batch(self, api: str, key: str, lines: list[tuple[str, Any]]) -> _Batch:
        prefix = "batch_" if api == "openai" else "msgbatch_"
        batch = _Batch(
            id=self._next_id(prefix),
            api=api,
            key=key,
            created=anyio.current_time(),
            created_unix=int(time.time()),
            lines=lines,
        )
        self._batches[batch.id] = batch
        stats = self._app._stats
        stats.batch_creates += 1
        stats.batch_lines += len(lines)
        return batch

    def _poll(self, batch: _Batch) -> None:
        batch.polls += 1
        config = self._app.config
        after = config.batch_after_s
        if not batch.done and (
            batch.polls >= config.batch_polls
            or (after is not None and anyio.current_time() - batch.created >= after)
        ):
            self._complete(batch)

    def _complete(self, batch: _Batch) -> None:
        outputs: list[bytes] = []
        errors: list[bytes] = []
        counts = batch.counts
        for custom_id, body in batch.lines:
            status, payload = self._answer(batch.api, body)
            if batch.api == "anthropic":
                if status == 0:
                    result: dict[str, Any] = {"type": "expired"}
                    counts["expired"] = counts.get("expired", 0) + 1
                elif status == 200:
                    result = {"type": "succeeded", "message": payload}
                    counts["succeeded"] = counts.get("succeeded", 0) + 1
                else:
                    result = {"type": "errored", "error": payload}
                    counts["errored"] = counts.get("errored", 0) + 1
                outputs.append(_line({"custom_id": custom_id, "result": result}))
                continue
            line: dict[str, Any] = {"id": self._next_id("batch_req_"), "custom_id": custom_id}
            if status == 0:
                line["response"] = None
                line["error"] = {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion "
                    "window expired.",
                }
                errors.append(_line(line))
                continue
            line["response"] = {"status_code": status, "request_id": line["id"], "body": payload}
            line["error"] = None
            if status == 200:
                counts["succeeded"] = counts.get("succeeded", 0) + 1
                outputs.append(_line(line))
            else:
                errors.append(_line(line))
        if batch.api == "anthropic":
            batch.results = b"".join(outputs)
        else:
            batch.output_file_id = self._store(f"{batch.id}_output.jsonl", b"".join(outputs))
            if errors:
                batch.error_file_id = self._store(f"{batch.id}_error.jsonl", b"".join(errors))
        batch.done = True

    def _store(self, name: str, content: bytes) -> str:
        file: dict[str, Any] = {
            "id": self._next_id("file-"),
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": "batch_output",
        }
        self._files[file["id"]] = (file, content)
        return str(file["id"])

    def _answer(self, api: str, body: Any) -> tuple[int, Any]:
        """(status, body) for one line; status 0 means it expired."""
        from ._mock_server import _Chat, _HTTPError

        app = self._app
        rid = self._next_id("req_")
        try:
            chat = _Chat(body, app.config.model, api)  # type: ignore[arg-type]
        except _HTTPError as error:
            return error.status, error.body_for(api, rid)  # type: ignore[arg-type]
        match = _DIRECTIVE.search(chat.prompt)
        if match is not None:
            seen = self._seen.get(chat.digest, 0)
            self._seen[chat.digest] = seen + 1
            if match.group(2) is None or seen < int(match.group(2)):
                if match.group(1) == "expired":
                    return 0, None
                if api == "anthropic":
                    return 500, _anthropic_error("Internal server error", "api_error")
                return 500, _openai_error("The server had an error processing your request.", None)
        chat.completion_id = ("msg_" if api == "anthropic" else "chatcmpl-") + rid[4:]
        stats = app._stats
        stats.successes += 1
        prompt_id = int.from_bytes(prompt_digest(chat.prompt)[:8], "big")
        if prompt_id in stats.succeeded_prompts:
            stats.duplicate_successes += 1
        else:
            stats.succeeded_prompts.add(prompt_id)
        return 200, app._message(chat) if api == "anthropic" else app._completion(chat)


def _line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


def _openai_error(message: str, param: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param,
                      "code": None}}  # fmt: skip


def _anthropic_error(message: str, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def _multipart(scope: Mapping[str, Any], body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, content)."""
    content_type = ""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-type":
            content_type = value.decode("latin-1")
    match = re.search(r"boundary=\"?([^\";]+)\"?", content_type)
    if match is None:
        return {}
    boundary = b"--" + match.group(1).encode()
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.partition(b"\r\n\r\n")
        disposition = head.decode("utf-8", "replace")
        name = re.search(r'name="([^"]*)"', disposition)
        filename = re.search(r'filename="([^"]*)"', disposition)
        if name is not None:
            fields[name.group(1)] = (
                None if filename is None else filename.group(1),
                content.removesuffix(b"\r\n"),
            )
    return fields
