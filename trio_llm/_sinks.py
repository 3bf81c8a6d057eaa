"""Batch files: read JSONL input lazily, append results to OUTPUT as they arrive, resume.

OUTPUT is the journal (``_journal``): locked while a run writes it, recognised by the
``trio_llm_input`` field every line starts with, repaired after a crash. On start, ids
already answered in OUTPUT are skipped, so a completed request is never paid twice; failed
lines whose failure may pass another time (``POLICY[kind].rerun``) are dropped and their items
run again; failures another try cannot fix (``bad_request``...) stay, and keep the exit status
at 1, until their input line changes.

Each answer records the hash of its input. When a rerun's INPUT has a different request under
an id already answered, the run is refused before anything is sent (``InputChangedError``:
the id, INPUT:line and OUTPUT:line), unless ``force``: then the changed items are sent again
and their new lines replace the old ones (on the next open, an id's last line wins).

Duplicate ids in the input are reported (and written to the failed file), never merged or
sent, on every run. Failed items go to ``--failed FILE`` as their original input lines, so
``trio-llm run FILE`` retries exactly them.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import attrs
import trio

from ._convert import (
    InputFormat,
    id_key,
    invalid_output_line,
    line_hash,
    output_line,
    parse_input_line,
    raw_hash,
)
from ._engine import Engine
from ._errors import ConfigurationError, InputError
from ._journal import JournalError, OutputJournal, State
from ._models import ErrorInfo, Request
from ._offload import BatchOffload, Offload, open_batches, state_path
from ._policy import POLICY

if TYPE_CHECKING:
    from ._split import ResultSource
    from ._summary import RunSummary

__all__ = ["FileRunReport", "InputChangedError", "OutputJournal", "run_file"]

#: How many invalid-line and duplicate-id messages a report keeps (the counts are exact).
PROBLEMS_SHOWN: Final = 5
_UTF8_BOM: Final = b"\xef\xbb\xbf"


class InputChangedError(JournalError):
    """INPUT has a different request under an id OUTPUT already answers (exit 2 in the CLI)."""


@attrs.frozen(kw_only=True)
class FileRunReport:
    """What a file run did.

    Attributes:
        read: input lines with an item (blank lines skipped).
        skipped: items already answered in OUTPUT (resume).
        succeeded / failed: items answered in this run.
        duplicates: input lines whose id appeared earlier in the input.
        invalid: input lines that could not become a request.
        kept_failed: items whose failure in OUTPUT another try cannot fix (``bad_request``...):
            not sent again until their input changes.
        changed: items sent again because their input changed (``force``).
        problems: the first few invalid-line and duplicate-id messages (file:line: what).
        stopped: why the run stopped early (``deadline``, ``cancelled``, ``budget``...), if so.
    """

    read: int
    skipped: int
    succeeded: int
    failed: int
    duplicates: int
    invalid: int
    kept_failed: int = 0
    changed: int = 0
    problems: tuple[str, ...] = ()
    stopped: str | None = None

    @property
    def all_succeeded(self) -> bool:
        """True when every item is answered successfully (exit code 0)."""
        return (
            self.failed == 0 and self.duplicates == 0 and self.invalid == 0 and not self.kept_failed
        )


@attrs.define(eq=False)
class _Pending:
    """What a sent item needs when its result comes back."""

    fmt: InputFormat
    raw: bytes
    id: object
    hash: str


def _open_input(path: str | Path) -> IO[bytes]:
    if str(path) == "-":
        return sys.stdin.buffer
    if Path(path).is_dir():
        raise ConfigurationError(f"cannot read the input file {path}: it is a directory")
    try:
        return Path(path).open("rb")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the input file {path}: {exc.strerror}") from None


def _open_failed(path: str | Path | None) -> IO[bytes] | None:
    if path is None:
        return None
    if Path(path).is_dir():
        raise ConfigurationError(f"cannot write the failed file {path}: it is a directory")
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
        # Abandoned on cancel: a silent stdin must not hold back Ctrl-C or a stop (the thread
        # stays blocked in read until the process ends, which it is about to).
        chunk = await trio.to_thread.run_sync(
            os.read, handle.fileno(), 1 << 16, abandon_on_cancel=True
        )
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


def _is_regular(handle: IO[bytes]) -> bool:
    return stat.S_ISREG(os.fstat(handle.fileno()).st_mode)


def _line_data(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    """The id key and the JSON object of a raw input line, cheaply (``None`` if it has no id)."""
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    try:
        data = json.loads(raw.decode())
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(data, dict):
        return None
    value = data.get("custom_id") if "custom_id" in data else data.get("id")
    if value is None or isinstance(value, (bool, list, dict)):
        return None
    return id_key(value), data


def _survey(handle: IO[bytes], journal: OutputJournal, source: str, *, check: bool) -> int:
    """Count INPUT's items (for the progress bar) and, when ``check``, refuse before anything
    is sent if an answered id's input changed. Leaves the file at its start."""
    items = 0
    for number, raw in enumerate(handle, 1):
        if not raw.strip():
            continue
        items += 1
        if not check:
            continue
        found = _line_data(raw)
        answered = None if found is None else journal.index.answered_hash(found[0])
        if found is None or answered is None:
            continue  # not answered, or a kept failure: its changed input runs again
        if line_hash(found[1]) != answered and not _seen_before(handle, found[0], number):
            answer = journal.answer(found[0])
            assert answer is not None
            raw_id = found[1].get("custom_id", found[1].get("id"))
            raise _changed(source, number, raw_id, journal, answer.line)
    handle.seek(0)
    return items


def _seen_before(handle: IO[bytes], key: str, line: int) -> bool:
    """Whether ``key`` is on an input line before ``line`` (then this line is a duplicate, which
    the run reports as such). Only asked on a mismatch, so it may read the file again."""
    position = handle.tell()
    handle.seek(0)
    try:
        for number, raw in enumerate(handle, 1):
            if number >= line:
                return False
            found = _line_data(raw) if raw.strip() else None
            if found is not None and found[0] == key:
                return True
        return False
    finally:
        handle.seek(position)


def _changed(
    source: str, line: int, item_id: object, journal: OutputJournal, out_line: int
) -> InputChangedError:
    return InputChangedError(
        f"{source}:{line}: the input of id {item_id!r} changed since its answer was written "
        f"({journal.path}:{out_line})\nHINT: rerun with --force to send the changed items again "
        "(their old answers are replaced), or use another -o"
    )


def _offloader(
    offload: BatchOffload | None,
    engine: Engine | ResultSource,
    output_path: str | Path,
    total: int | None,
    deadline: float | None,
    budget_usd: float | None,
) -> Offload | None:
    """The Batch API run, if this run is one; refuses a plain run over open batches."""
    if offload is None or not offload.wanted(total, deadline, output_path):
        open_ones = 0 if str(output_path) == "-" else open_batches(state_path(output_path))
        if open_ones:
            raise ConfigurationError(
                f"{state_path(output_path)} records {open_ones} Batch API batches still open "
                "for this OUTPUT; sending their items again would pay twice\n"
                "HINT: rerun with --batch-api to collect them"
            )
        return None
    if budget_usd is not None:
        raise ConfigurationError("--budget does not apply to --batch-api (its cost is known after)")
    if not isinstance(engine, Engine):
        # The provider's batches do the work: there is nothing to split across processes.
        raise ConfigurationError(
            "--batch-api sends the file from one process\n"
            "HINT: drop --processes / --workers / --join, or drop --batch-api"
        )
    return Offload(offload, engine, output_path, deadline=deadline)


async def run_file(
    engine: Engine | ResultSource,
    input_path: str | Path,
    output_path: str | Path,
    *,
    failed_path: str | Path | None = None,
    deadline: float | None = None,
    budget_usd: float | None = None,
    force: bool = False,
    summary: RunSummary | None = None,
    offload: BatchOffload | None = None,
) -> FileRunReport:
    """Run every line of a JSONL file through ``engine``; see the module docs.

    Args:
        engine: the engine to send with (or a ``SplitRun``: workers in other processes).
        input_path: the JSONL input, or ``"-"`` for stdin.
        output_path: the JSONL output (the journal), or ``"-"`` for stdout.
        failed_path: where failed items go, as their input lines.
        deadline / budget_usd: as in ``Engine.map``.
        force: take over an OUTPUT that is not trio-llm's, and send again the items whose input
            changed since their answer was written.
        summary: told the number of items up front and every line's outcome (the progress bar).
        offload: send through the provider's Batch API at half price (``trio_llm._offload``);
            its results go through the same journal, in the same OUTPUT lines.
    """
    for other, what in ((input_path, "INPUT"), (output_path, "OUTPUT")):
        if _same_file(failed_path, other):
            raise ConfigurationError(
                f"the failed file must not be the {what} file\n"
                "HINT: --failed failed-again.jsonl, then run that file"
            )
    # Opened here, not in the producer task, so a wrong path raises ConfigurationError itself
    # rather than an ExceptionGroup from the engine's nursery.
    handle = _open_input(input_path)
    journal = OutputJournal(output_path, force=force)
    source_name = "<stdin>" if str(input_path) == "-" else str(input_path)
    total: int | None = None
    try:
        journal.open()
        verified = False
        if _is_regular(handle):
            verified = bool(journal.index.answers) and not force
            total = _survey(handle, journal, source_name, check=verified)
            if summary is not None:
                summary.set_total(total)
        offloader = _offloader(offload, engine, output_path, total, deadline, budget_usd)
        failed_file = _open_failed(failed_path)
    except BaseException:
        if handle is not sys.stdin.buffer:
            handle.close()
        journal.close()
        raise
    pending: dict[int, _Pending] = {}
    counts = dict.fromkeys(
        ("read", "skipped", "duplicates", "invalid", "ok", "failed", "kept_failed", "changed"), 0
    )
    problems: list[str] = []
    changed: InputChangedError | None = None
    index_counter = 0

    def note(outcome: str) -> None:
        counts[outcome] += 1
        if summary is not None:
            summary.count_line(outcome)

    def problem(message: str) -> None:
        if len(problems) < PROBLEMS_SHOWN:
            problems.append(message)

    def write_failed(raw: bytes) -> None:
        if failed_file is not None:
            failed_file.write(raw if raw.endswith(b"\n") else raw + b"\n")
            failed_file.flush()

    def invalid_line(line_no: int, error: InputError, raw: bytes) -> None:
        note("invalid")
        problem(str(error))
        journal.write(invalid_output_line(error, line=line_no, hash=raw_hash(raw)))
        write_failed(raw)

    async def requests() -> AsyncGenerator[Request, None]:
        nonlocal index_counter, changed
        line_no = 0
        try:
            async with contextlib.aclosing(_input_lines(handle)) as lines:
                async for raw in lines:
                    line_no += 1
                    if not raw.strip():
                        continue
                    counts["read"] += 1
                    if verified:
                        # The look-ahead checked every answered line's input: an answered id
                        # seen for the first time needs no parsing.
                        found = _line_data(raw)
                        if found is not None and journal.index.claim_answered(found[0], line_no):
                            note("skipped")
                            continue
                    try:
                        parsed = parse_input_line(raw, source=source_name, line=line_no)
                    except InputError as exc:
                        invalid_line(line_no, exc, raw)
                        await trio.lowlevel.checkpoint()
                        continue
                    first = journal.index.first_seen(parsed.key, line_no)
                    if first is not None:
                        note("duplicates")
                        problem(
                            f"{source_name}:{line_no}: duplicate id {parsed.id!r} "
                            f"(first at line {first}); not sent"
                        )
                        write_failed(raw)
                        continue
                    answer = journal.answer(parsed.key)
                    if answer is not None and answer.hash == parsed.hash:
                        if answer.state is State.OK:
                            note("skipped")
                        else:
                            note("kept_failed")
                            write_failed(raw)
                        continue
                    if answer is not None and answer.state is State.OK:
                        if not force:
                            # Only when the survey could not look ahead (stdin): stop here.
                            changed = _changed(
                                source_name, line_no, parsed.id, journal, answer.line
                            )
                            return
                        counts["changed"] += 1
                    pending[index_counter] = _Pending(parsed.fmt, raw, parsed.id, parsed.hash)
                    index_counter += 1
                    yield parsed.request
        finally:
            if handle is not sys.stdin.buffer:
                handle.close()

    stopped: ErrorInfo | None = None
    try:
        async with (
            contextlib.aclosing(requests()) as source,
            engine.stream(source, deadline=deadline, budget_usd=budget_usd)
            if offloader is None
            else contextlib.aclosing(offloader.results(source)) as results,
        ):
            async for result in results:
                item = pending.pop(result.index)
                journal.write(output_line(result, item.fmt, item_id=item.id, hash=item.hash))
                if summary is not None:
                    summary.record(result)
                if result.ok:
                    counts["ok"] += 1
                else:
                    counts["failed"] += 1
                    write_failed(item.raw)
                    error = result.error
                    if error is not None and POLICY[error.kind].stops_run:
                        stopped = error
    finally:
        journal.close()
        if failed_file is not None:
            failed_file.close()
    if changed is not None:
        raise changed
    return FileRunReport(
        read=counts["read"],
        skipped=counts["skipped"],
        succeeded=counts["ok"],
        failed=counts["failed"],
        duplicates=counts["duplicates"],
        invalid=counts["invalid"],
        kept_failed=counts["kept_failed"],
        changed=counts["changed"],
        problems=tuple(problems),
        stopped=None if stopped is None else stopped.kind.value,
    )
