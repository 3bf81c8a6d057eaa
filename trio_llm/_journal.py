"""OUTPUT as the journal of a file run: its lock, its marker, its repair, its index.

The output file is the journal. Each result is one ``os.write`` of one whole line to a file
opened with ``O_APPEND``, so a ``kill -9`` at any instant leaves at most a torn last line,
which the next run cuts off. Every line starts with the ``trio_llm_input`` field (the hash of
the input it answers), which is how a file is known to be trio-llm's: a non-empty OUTPUT
whose lines lack it is refused, never rewritten, unless the caller passes ``force``.

On open, for each id the *last* line wins (a later line was written for a later input), and
its outcome decides what happens to the item on this run (``POLICY[kind].rerun``):

* a success, or a failure that running again cannot fix (``bad_request``...): done, kept;
* a failure that may pass another time (``server_error``, ``deadline``...): the line is
  dropped and the item runs again;
* an ``invalid_input`` line: dropped; the input line is parsed (and reported) again.

When lines are dropped the file is rewritten atomically, keeping its permissions.

The index of answered ids lives in a private temporary SQLite database (deleted when the
journal closes), not in Python objects, so a run's memory stays flat at millions of lines;
the duplicate-id check of the input uses the same database.

Two runs on one OUTPUT would send everything twice: ``open`` takes an advisory lock
(``flock``) on a lock file beside OUTPUT (``.NAME.lock``) and refuses when another process
holds it. The kernel drops the lock when its process dies, so a ``kill -9`` never leaves a
stale lock behind.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import sqlite3
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, final

import attrs

from ._convert import MARKER, MARKER_PREFIX, failure_kind, is_done, output_id
from ._errors import ConfigurationError
from ._policy import POLICY, ErrorKind

__all__ = ["Answer", "IdIndex", "JournalError", "OutputJournal", "OutputLock", "State"]

_BATCH_ROWS: Final = 10_000
_NOT_OURS_HINT: Final = "use another -o or --force"


class JournalError(ConfigurationError):
    """OUTPUT cannot be used as this run's journal (exit code 2 in the CLI)."""


class State(enum.IntEnum):
    """What the last line of an id in OUTPUT means for this run."""

    OK = 0  # answered: skipped
    FAILED = 1  # failed in a way another try cannot fix: kept, skipped, counted as failed
    RERUN = 2  # failed, may pass another time: the line is dropped, the item runs again


@attrs.frozen
class Answer:
    """An id's line in OUTPUT: its input hash, its line number, its ``State``."""

    hash: str
    line: int
    state: State


@final
class IdIndex:
    """Ids on disk: the answers in OUTPUT, and the ids seen so far in the input.

    A private temporary SQLite database: a few MB of cache whatever the number of ids.
    """

    def __init__(self) -> None:
        # "" is a private on-disk database, deleted when closed; it spills to disk past its
        # page cache, so memory stays flat.
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            PRAGMA cache_size = -4096;
            CREATE TABLE answer (
                key TEXT PRIMARY KEY, hash TEXT, line INTEGER, state INTEGER, seen INTEGER
            ) WITHOUT ROWID;
            CREATE TABLE seen (key TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID;
            """
        )
        self.answers = 0

    def add_answers(self, rows: list[tuple[str, str, int, int]]) -> None:
        """Record (key, hash, line, state) rows, in file order: a later line wins."""
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO answer VALUES (?, ?, ?, ?, NULL) ON CONFLICT(key) DO UPDATE SET "
            "hash = excluded.hash, line = excluded.line, state = excluded.state",
            rows,
        )
        self._db.execute("COMMIT")

    def count_answers(self) -> tuple[int, int]:
        """(ids in OUTPUT, those whose line is kept)."""
        total, kept = self._db.execute(
            "SELECT count(*), coalesce(sum(state != ?), 0) FROM answer", (State.RERUN,)
        ).fetchone()
        self.answers = int(kept)
        return int(total), int(kept)

    def kept_lines(self) -> Iterator[int]:
        """Line numbers of the kept lines, in order."""
        cursor = self._db.execute(
            "SELECT line FROM answer WHERE state != ? ORDER BY line", (State.RERUN,)
        )
        for (line,) in cursor:
            yield int(line)

    def kept_keys(self) -> Iterator[str]:
        """The keys of the kept lines."""
        for (key,) in self._db.execute("SELECT key FROM answer WHERE state != ?", (State.RERUN,)):
            yield str(key)

    def answer(self, key: str) -> Answer | None:
        """The id's kept line in OUTPUT, if any."""
        if not self.answers:
            return None
        row = self._db.execute(
            "SELECT hash, line, state FROM answer WHERE key = ? AND state != ?",
            (key, State.RERUN),
        ).fetchone()
        return None if row is None else Answer(row[0], int(row[1]), State(row[2]))

    def answered_hash(self, key: str) -> str | None:
        """The input hash of the id's answer, if OUTPUT has a success for it."""
        if not self.answers:
            return None
        row = self._db.execute(
            "SELECT hash FROM answer WHERE key = ? AND state = ?", (key, State.OK)
        ).fetchone()
        return None if row is None else str(row[0])

    def claim_answered(self, key: str, line: int) -> bool:
        """One statement for the common line of a resumed run: True when OUTPUT has a success
        for ``key`` and the input had not shown ``key`` before (it is now seen at ``line``)."""
        if not self.answers:
            return False
        cursor = self._db.execute(
            "UPDATE answer SET seen = ? WHERE key = ? AND state = ? AND seen IS NULL",
            (line, key, State.OK),
        )
        return cursor.rowcount == 1

    def first_seen(self, key: str, line: int) -> int | None:
        """Record that the input has ``key`` at ``line``; the earlier line if it had it."""
        if self.answers:
            row = self._db.execute("SELECT seen FROM answer WHERE key = ?", (key,)).fetchone()
            if row is not None:
                if row[0] is not None:
                    return int(row[0])
                self._db.execute("UPDATE answer SET seen = ? WHERE key = ?", (line, key))
                return None
        cursor = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (key, line))
        if cursor.rowcount == 1:
            return None
        (first,) = self._db.execute("SELECT line FROM seen WHERE key = ?", (key,)).fetchone()
        return int(first)

    def close(self) -> None:
        """Close (and so delete) the database."""
        self._db.close()


@final
class OutputLock:
    """An advisory lock on ``.NAME.lock`` beside OUTPUT, held while a run writes OUTPUT."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.with_name(f".{output.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``JournalError`` naming it when another run holds it."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise JournalError(
                    f"cannot write {self.output}: {exc.strerror} (creating its lock file "
                    f"{self.path})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise JournalError(
                    f"another trio-llm run{holder} is writing {self.output} (it holds the lock "
                    f"{self.path}); wait for it to finish, or use another -o"
                ) from None
            # The previous holder may have removed the file between our open and our lock:
            # then we hold a lock on a file nobody else will open. Try again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        if text:
            return f" (pid {int(text)})"
    return ""


@final
class OutputJournal:
    """The output file: locked, checked, repaired and indexed on open; appended per result.

    Args:
        path: the output file, or ``"-"`` for stdout (no lock, no resume).
        force: take over an OUTPUT that is not trio-llm's (its lines are removed).
        index: the id index to fill (a new one by default; ``close`` closes it).
    """

    def __init__(
        self, path: str | Path, *, force: bool = False, index: IdIndex | None = None
    ) -> None:
        self.path = None if str(path) == "-" else Path(path)
        self.force = force
        self.index = index if index is not None else IdIndex()
        self.repaired_bytes = 0
        self.dropped_lines = 0
        self.foreign_lines = 0
        self._lock: OutputLock | None = None
        self._fd: int | None = None

    # --- what the run asks -------------------------------------------------------------------
    @property
    def done_ids(self) -> set[object]:
        """The keys of every kept answer (for tests and small files: a set in memory)."""
        return {json.loads(key) for key in self.index.kept_keys()}

    def answer(self, key: str) -> Answer | None:
        """The id's kept line, if OUTPUT has one."""
        return self.index.answer(key)

    # --- open ----------------------------------------------------------------------------
    def open(self) -> None:
        """Lock, check the marker, repair a torn last line, index the answers, drop what runs
        again; then open to append."""
        if self.path is None:
            self._fd = sys.stdout.fileno()
            return
        if self.path.is_dir():
            raise JournalError(f"{self.path} is a directory; -o needs a file")
        parent = self.path.parent
        if not parent.is_dir():
            raise JournalError(f"cannot write {self.path}: the directory {parent} does not exist")
        self._lock = OutputLock(self.path)
        self._lock.acquire()
        try:
            if self.path.exists():
                self._check_ours()
                self._repair()
                self._scan()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            self._lock.release()
            raise JournalError(f"cannot write {self.path}: {exc.strerror}") from None
        except BaseException:
            self._lock.release()
            raise

    def _check_ours(self) -> None:
        """Refuse a non-empty OUTPUT whose first line is not trio-llm's (before touching it)."""
        assert self.path is not None
        with self.path.open("rb") as file:
            for number, raw in enumerate(file, 1):
                head = raw.lstrip()
                if not head:
                    continue
                ours = head.startswith(MARKER_PREFIX) or (
                    not raw.endswith(b"\n") and MARKER_PREFIX.startswith(head)
                )
                if not ours and not self.force:
                    raise JournalError(
                        f"{self.path}: not a trio-llm output; {_NOT_OURS_HINT} (line {number} "
                        f"has no {MARKER!r} field)"
                    )
                return

    def _repair(self) -> None:
        """A crash mid-write leaves a last line without its newline: cut it off."""
        assert self.path is not None
        with self.path.open("rb+") as file:
            data_end = file.seek(0, os.SEEK_END)
            if not data_end:
                return
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

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        assert self.path is not None
        with self.path.open("rb") as file:
            for number, raw in enumerate(file, 1):
                if raw.strip():
                    yield number, raw

    def _scan(self) -> None:
        """Index every line's id, hash and state; rewrite the file if lines are dropped."""
        assert self.path is not None
        rows: list[tuple[str, str, int, int]] = []
        lines = 0
        for number, raw in self._lines():
            lines += 1
            row = self._row(number, raw)
            if row is not None:
                rows.append(row)
                if len(rows) >= _BATCH_ROWS:
                    self.index.add_answers(rows)
                    rows = []
        if rows:
            self.index.add_answers(rows)
        _, kept = self.index.count_answers()
        if kept != lines:
            self._rewrite(lines - kept)

    def _row(self, number: int, raw: bytes) -> tuple[str, str, int, int] | None:
        """The index row of one line; ``None`` for a line that is dropped outright."""
        try:
            line = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            self._foreign(number, f"not JSON ({exc})")
            return None
        if not isinstance(line, dict):
            self._foreign(number, f"JSON but not an object ({type(line).__name__})")
            return None
        marker = line.get(MARKER)
        if not isinstance(marker, str):
            self._foreign(number, f"no {MARKER!r} field")
            return None
        key = output_id(line)
        kind = failure_kind(line)
        if key is None or kind is ErrorKind.INVALID_INPUT:
            return None  # bad input lines are parsed and reported again on every run
        if is_done(line):
            state = State.OK
        elif kind is not None and not POLICY[kind].rerun:
            state = State.FAILED
        else:
            state = State.RERUN
        return key, marker, number, state

    def _foreign(self, number: int, problem: str) -> None:
        if not self.force:
            raise JournalError(
                f"{self.path}:{number}: not a trio-llm output line: {problem}; {_NOT_OURS_HINT}"
            )
        self.foreign_lines += 1
        return None

    def _rewrite(self, dropped: int) -> None:
        """Keep each id's last line when it is kept; everything else goes."""
        assert self.path is not None
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        # The rewritten file keeps the permissions the output had (mkstemp makes it 0600).
        os.chmod(temp, stat.S_IMODE(self.path.stat().st_mode))
        try:
            with os.fdopen(fd, "wb") as out:
                kept = self.index.kept_lines()
                want = next(kept, None)
                for number, raw in self._lines():
                    if number == want:
                        out.write(raw)
                        want = next(kept, None)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self.dropped_lines = dropped

    # --- write ---------------------------------------------------------------------------
    def write(self, line: dict[str, Any]) -> None:
        """Append one line with a single write, so a crash can only tear the last one."""
        assert self._fd is not None
        data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode(
            "utf-8", "surrogatepass"
        )
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    def close(self) -> None:
        """Close the file (not stdout), drop the lock, delete the index."""
        if self._fd is not None and self.path is not None:
            os.close(self._fd)
        self._fd = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.index.close()
