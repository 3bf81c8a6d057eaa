"""Batch files: read JSONL input lazily, append results as they arrive, resume after a crash.

The output file is the journal. Each result is one ``os.write`` of one whole line to a file
opened with ``O_APPEND``, so a ``kill -9`` at any instant leaves at most a torn last line,
which the next run cuts off. On start, the ids already answered in OUTPUT are skipped, so a
completed request is never paid twice; failed lines are dropped from OUTPUT (rewritten
atomically) and their items run again, so no id ever appears twice.

Duplicate ids in the input are reported (and written to the failed file), never merged.
Failed items go to ``--failed FILE`` as their original input lines, so
``trio-llm run FILE`` retries exactly them.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import tempfile
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import IO, Any, final

import attrs
import trio

from ._convert import InputFormat, is_done, output_id, output_line, parse_input_line
from ._engine import Engine
from ._errors import ConfigurationError, InputError
from ._models import ErrorInfo, ErrorKind, Request, Result

__all__ = ["FileRunReport", "OutputJournal", "run_file"]


@attrs.frozen(kw_only=True)
class FileRunReport:
    """What a file run did.

    Attributes:
        read: input lines with an item (blank lines skipped).
        skipped: items already answered in OUTPUT (resume).
        succeeded / failed: items answered in this run.
        duplicates: input lines whose id appeared earlier in the input.
        invalid: input lines that could not become a request.
        stopped: why the run stopped early (``deadline``, ``cancelled``, ``budget``...), if so.
    """

    read: int
    skipped: int
    succeeded: int
    failed: int
    duplicates: int
    invalid: int
    stopped: str | None = None

    @property
    def all_succeeded(self) -> bool:
        """True when every item is answered successfully (exit code 0)."""
        return self.failed == 0 and self.duplicates == 0 and self.invalid == 0


@final
class OutputJournal:
    """The output file: repaired and read on open, appended one whole line per result."""

    def __init__(self, path: str | Path) -> None:
        self.path = None if str(path) == "-" else Path(path)
        self.done_ids: set[str] = set()
        self.repaired_bytes = 0
        self.dropped_failures = 0
        self._fd: int | None = None

    def open(self) -> None:
        """Repair a torn last line, collect answered ids, drop failed lines; open to append."""
        if self.path is None:
            self._fd = sys.stdout.fileno()
            return
        if self.path.exists():
            self._repair()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _repair(self) -> None:
        assert self.path is not None
        with self.path.open("rb+") as file:
            data_end = file.seek(0, os.SEEK_END)
            if data_end:
                # A crash mid-write leaves a last line without its newline: cut it off.
                position = data_end
                while position > 0:
                    step = min(65536, position)
                    file.seek(position - step)
                    chunk = file.read(step)
                    newline = chunk.rfind(b"\n")
                    if newline >= 0:
                        position = position - step + newline + 1
                        break
                    position -= step
                if position != data_end:
                    file.truncate(position)
                    self.repaired_bytes = data_end - position
        keep_all = True
        seen: set[str] = set()
        for raw in self._lines():
            line = json.loads(raw)
            key = output_id(line)
            if key is not None and is_done(line) and key not in seen:
                seen.add(key)
            else:
                keep_all = False
        self.done_ids = seen
        if not keep_all:
            self._rewrite_successes()

    def _lines(self) -> Iterator[bytes]:
        assert self.path is not None
        with self.path.open("rb") as file:
            for raw in file:
                if raw.strip():
                    yield raw

    def _rewrite_successes(self) -> None:
        """Keep each id's first success only; failed items will run again."""
        assert self.path is not None
        kept: set[str] = set()
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        # The rewritten file keeps the permissions the output had (mkstemp makes it 0600).
        os.chmod(temp, stat.S_IMODE(self.path.stat().st_mode))
        try:
            with os.fdopen(fd, "wb") as out:
                for raw in self._lines():
                    line = json.loads(raw)
                    key = output_id(line)
                    if key is not None and is_done(line) and key not in kept:
                        kept.add(key)
                        out.write(raw)
                    else:
                        self.dropped_failures += 1
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def write(self, line: dict[str, Any]) -> None:
        """Append one line with a single write, so a crash can only tear the last one."""
        assert self._fd is not None
        data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    def close(self) -> None:
        """Close the file (not stdout)."""
        if self._fd is not None and self.path is not None:
            os.close(self._fd)
        self._fd = None


@attrs.define(eq=False)
class _Pending:
    """What a sent item needs when its result comes back."""

    fmt: InputFormat
    raw: bytes


def _open_input(path: str | Path) -> IO[bytes]:
    if str(path) == "-":
        return sys.stdin.buffer
    try:
        return Path(path).open("rb")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the input file {path}: {exc.strerror}") from None


def _open_failed(path: str | Path | None) -> IO[bytes] | None:
    if path is None:
        return None
    try:
        # Truncated: every run re-reads the whole input, so this run's failures are all of them.
        return Path(path).open("wb")
    except OSError as exc:
        raise ConfigurationError(f"cannot write the failed file {path}: {exc.strerror}") from None


def _same_file(a: str | Path | None, b: str | Path) -> bool:
    return (
        a is not None and str(a) != "-" and str(b) != "-" and Path(a).resolve() == Path(b).resolve()
    )


async def _input_lines(handle: IO[bytes]) -> AsyncGenerator[bytes, None]:
    """Lines of ``handle``. A regular file is read directly (buffered reads from disk are
    quick); a pipe or terminal is read in a worker thread, so that waiting for the producer of
    the input never freezes the requests already in flight."""
    if stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        for raw in handle:
            yield raw
        return
    pending = b""
    while True:
        chunk = await trio.to_thread.run_sync(os.read, handle.fileno(), 1 << 16)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


async def run_file(
    engine: Engine,
    input_path: str | Path,
    output_path: str | Path,
    *,
    failed_path: str | Path | None = None,
    deadline: float | None = None,
    budget_usd: float | None = None,
) -> FileRunReport:
    """Run every line of a JSONL file through ``engine``; see the module docs."""
    for other, what in ((input_path, "INPUT"), (output_path, "OUTPUT")):
        if _same_file(failed_path, other):
            raise ConfigurationError(
                f"the failed file must not be the {what} file\n"
                "HINT: --failed failed-again.jsonl, then run that file"
            )
    # Opened here, not in the producer task, so a wrong path raises ConfigurationError itself
    # rather than an ExceptionGroup from the engine's nursery.
    handle = _open_input(input_path)
    journal = OutputJournal(output_path)
    try:
        journal.open()
        failed_file = _open_failed(failed_path)
    except BaseException:
        if handle is not sys.stdin.buffer:
            handle.close()
        journal.close()
        raise
    source_name = "<stdin>" if str(input_path) == "-" else str(input_path)
    pending: dict[int, _Pending] = {}
    counts = {"read": 0, "skipped": 0, "duplicates": 0, "invalid": 0, "ok": 0, "failed": 0}
    first_line_of: dict[str, int] = {}
    index_counter = 0

    def write_failed(raw: bytes) -> None:
        if failed_file is not None:
            failed_file.write(raw if raw.endswith(b"\n") else raw + b"\n")
            failed_file.flush()

    def invalid_line(line_no: int, error: InputError, raw: bytes) -> None:
        counts["invalid"] += 1
        journal.write(
            {
                "id": error.item_id,
                "line": line_no,
                "error": {
                    "kind": ErrorKind.INVALID_INPUT.value,
                    "message": str(error),
                    "retryable": False,
                },
            }
        )
        write_failed(raw)

    async def requests() -> AsyncGenerator[Request, None]:
        nonlocal index_counter
        line_no = 0
        try:
            async with contextlib.aclosing(_input_lines(handle)) as lines:
                async for raw in lines:
                    line_no += 1
                    if not raw.strip():
                        continue
                    counts["read"] += 1
                    try:
                        fmt, request = parse_input_line(raw, source=source_name, line=line_no)
                    except InputError as exc:
                        invalid_line(line_no, exc, raw)
                        await trio.lowlevel.checkpoint()
                        continue
                    assert request.id is not None
                    if request.id in journal.done_ids:
                        counts["skipped"] += 1
                        continue
                    if request.id in first_line_of:
                        counts["duplicates"] += 1
                        print(
                            f"{source_name}:{line_no}: duplicate id {request.id!r} "
                            f"(first at line {first_line_of[request.id]}); not sent",
                            file=sys.stderr,
                        )
                        write_failed(raw)
                        continue
                    first_line_of[request.id] = line_no
                    pending[index_counter] = _Pending(fmt, raw)
                    index_counter += 1
                    yield request
        finally:
            if handle is not sys.stdin.buffer:
                handle.close()

    stopped: ErrorInfo | None = None
    try:
        async with (
            contextlib.aclosing(requests()) as source,
            engine.stream(source, deadline=deadline, budget_usd=budget_usd) as results,
        ):
            async for result in results:
                item = pending.pop(result.index)
                _record(journal, result, item, counts, write_failed)
                if (
                    not result.ok
                    and result.error is not None
                    and result.error.kind
                    in (
                        ErrorKind.DEADLINE,
                        ErrorKind.CANCELLED,
                        ErrorKind.BUDGET,
                        ErrorKind.NO_KEYS,
                    )
                ):
                    stopped = result.error
    finally:
        journal.close()
        if failed_file is not None:
            failed_file.close()
    return FileRunReport(
        read=counts["read"],
        skipped=counts["skipped"],
        succeeded=counts["ok"],
        failed=counts["failed"],
        duplicates=counts["duplicates"],
        invalid=counts["invalid"],
        stopped=None if stopped is None else stopped.kind.value,
    )


def _record(
    journal: OutputJournal,
    result: Result,
    item: _Pending,
    counts: dict[str, int],
    write_failed: Any,
) -> None:
    journal.write(output_line(result, item.fmt))
    if result.ok:
        counts["ok"] += 1
    else:
        counts["failed"] += 1
        write_failed(item.raw)
