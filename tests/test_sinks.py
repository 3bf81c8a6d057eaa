"""run_file and OutputJournal: the output file is the journal; resume loses and repeats nothing."""

from __future__ import annotations

import collections
import gc
import json
import os
import random
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from _fakes import completion, echo, error, last_user_text, make_engine

import trio_llm
from trio_llm import ConfigurationError, Request
from trio_llm._convert import MARKER, input_hash, is_done, output_id
from trio_llm._journal import JournalError
from trio_llm._sinks import InputChangedError, OutputJournal, run_file


def simple_lines(ids: list[str]) -> bytes:
    """Simple input lines whose prompt ends with the id (the fake server reads it back)."""
    return b"".join(json.dumps({"id": i, "prompt": f"say {i}"}).encode() + b"\n" for i in ids)


def batch_lines(ids: list[str]) -> bytes:
    """OpenAI Batch API input lines."""
    return b"".join(
        json.dumps(
            {
                "custom_id": i,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"say {i}"}],
                },
            }
        ).encode()
        + b"\n"
        for i in ids
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, parsed (fails on a torn line)."""
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def hash_of(item_id: object, prompt: str | None = None) -> str:
    """The input hash of the line ``simple_lines`` writes for ``item_id``."""
    return input_hash(Request.from_prompt(prompt or f"say {item_id}"))


def journal_line(line: dict[str, Any], item_id: object, prompt: str | None = None) -> bytes:
    """``line`` as run_file writes it: compact, the marker (the input hash) first."""
    marked = {MARKER: hash_of(item_id, prompt), **line}
    return json.dumps(marked, separators=(",", ":")).encode() + b"\n"


def success_line(item_id: str, text: str = "done", prompt: str | None = None) -> bytes:
    """An output line for a success, as run_file writes it."""
    line = {"id": item_id, "content": text, "usage": None, "attempts": 1}
    return journal_line(line, item_id, prompt)


def failure_line(item_id: str, kind: str = "server_error") -> bytes:
    """An output line for a failure, as run_file writes it."""
    line = {"id": item_id, "error": {"kind": kind, "message": "boom"}, "attempts": 8}
    return journal_line(line, item_id)


def one_try(handler: Any, **kwargs: Any) -> trio_llm.Engine:
    """An engine that gives each item one attempt: a failure is written, and rerun later."""
    return make_engine(handler, retry=trio_llm.RetryPolicy(attempts=1), **kwargs)


class Recorder:
    """A fake endpoint answering ``echo: <prompt>`` that records which ids were sent; the ids
    in ``fail_first`` fail their first attempt with ``fail_status``."""

    def __init__(
        self,
        *,
        latency: tuple[float, float] = (1.0, 1.0),
        fail_first: frozenset[str] = frozenset(),
        fail_status: int = 500,
        seed: int = 0,
    ) -> None:
        self.latency = latency
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.sent: collections.Counter[str] = collections.Counter()
        self.forbidden: set[str] = set()
        self.violations: list[str] = []
        self._rng = random.Random(seed)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        prompt = last_user_text(request)
        item_id = prompt.rsplit(" ", 1)[-1]
        self.sent[item_id] += 1
        if item_id in self.forbidden:
            self.violations.append(item_id)
        await trio.sleep(self._rng.uniform(*self.latency))
        if item_id in self.fail_first and self.sent[item_id] == 1:
            return error(self.fail_status, f"HTTP {self.fail_status}, the first time")
        return completion(f"echo: {prompt}")


# --- OutputJournal --------------------------------------------------------------------------


async def test_journal_cuts_a_torn_last_line(tmp_path: Path) -> None:
    """A crash mid-write leaves a partial last line; opening the journal cuts exactly it off."""
    out = tmp_path / "out.jsonl"
    good = success_line("a") + success_line("b")
    torn = success_line("c")[:17]
    out.write_bytes(good + torn)
    journal = OutputJournal(out)
    journal.open()
    done = journal.done_ids
    journal.close()
    assert out.read_bytes() == good
    assert journal.repaired_bytes == len(torn)
    assert done == {"a", "b"}


async def test_journal_cuts_a_file_that_is_one_torn_line(tmp_path: Path) -> None:
    """A file with no complete line at all (killed during the first write) becomes empty."""
    out = tmp_path / "out.jsonl"
    out.write_bytes(success_line("a")[:30])
    journal = OutputJournal(out)
    journal.open()
    done = journal.done_ids
    journal.close()
    assert out.read_bytes() == b""
    assert done == set()


async def test_journal_cuts_a_torn_line_longer_than_its_read_chunk(tmp_path: Path) -> None:
    """A torn line longer than 64 KiB is still cut back to the last newline."""
    out = tmp_path / "out.jsonl"
    good = success_line("a")
    torn = success_line("b", "x" * 200_000)[:-10]
    out.write_bytes(good + torn)
    journal = OutputJournal(out)
    journal.open()
    journal.close()
    assert out.read_bytes() == good


async def test_journal_leaves_a_clean_file_untouched(tmp_path: Path) -> None:
    """A file of complete successes is neither repaired nor rewritten."""
    out = tmp_path / "out.jsonl"
    data = success_line("a") + success_line("b")
    out.write_bytes(data)
    inode = out.stat().st_ino
    journal = OutputJournal(out)
    journal.open()
    journal.close()
    assert out.read_bytes() == data
    assert out.stat().st_ino == inode
    assert (journal.repaired_bytes, journal.dropped_lines) == (0, 0)


async def test_journal_drops_failed_lines_so_they_run_again(tmp_path: Path) -> None:
    """Failed lines are removed from OUTPUT and their ids are not counted as done."""
    out = tmp_path / "out.jsonl"
    out.write_bytes(success_line("a") + failure_line("b") + success_line("c"))
    journal = OutputJournal(out)
    journal.open()
    done = journal.done_ids
    journal.close()
    assert done == {"a", "c"}
    assert journal.dropped_lines == 1
    assert [line["id"] for line in read_jsonl(out)] == ["a", "c"]


async def test_journal_keeps_only_the_last_line_of_an_id(tmp_path: Path) -> None:
    """An id answered twice (its input changed, --force) keeps its last answer only."""
    out = tmp_path / "out.jsonl"
    out.write_bytes(success_line("a", "first") + success_line("b") + success_line("a", "second"))
    journal = OutputJournal(out)
    journal.open()
    journal.close()
    assert [line["content"] for line in read_jsonl(out)] == ["done", "second"]


async def test_journal_reads_batch_api_output_by_custom_id(tmp_path: Path) -> None:
    """Batch API output lines count as done by custom_id when they have a response, no error."""
    out = tmp_path / "out.jsonl"
    ok = {"id": "batch_req_0", "custom_id": "x", "response": {"status_code": 200}, "error": None}
    bad = {"id": "batch_req_1", "custom_id": "y", "response": None, "error": {"code": "e"}}
    out.write_bytes(journal_line(ok, "x") + journal_line(bad, "y"))
    journal = OutputJournal(out)
    journal.open()
    done = journal.done_ids
    journal.close()
    assert done == {"x"}
    assert [line["custom_id"] for line in read_jsonl(out)] == ["x"]


async def test_journal_appends_one_whole_line_per_write(tmp_path: Path) -> None:
    """write() appends compact JSON lines (non-ASCII kept as UTF-8) after the existing ones."""
    out = tmp_path / "out.jsonl"
    out.write_bytes(success_line("a"))
    journal = OutputJournal(out)
    journal.open()
    journal.write({"id": "b", "content": "héllo"})
    journal.close()
    assert out.read_bytes().splitlines()[1] == '{"id":"b","content":"héllo"}'.encode()


# --- run_file -------------------------------------------------------------------------------


async def test_run_file_answers_every_line(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Each simple input line gets one output line with its id, content, usage and attempts."""
    ids = [f"q{i}" for i in range(20)]
    (tmp_path / "in.jsonl").write_bytes(simple_lines(ids))
    engine = make_engine(echo(latency=1.0), concurrency=5)
    report = await run_file(engine, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    assert trio.current_time() == pytest.approx(4.0, abs=0.1)  # 20 items, 5 at a time, 1 s each
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(line["id"] for line in lines) == sorted(ids)
    for line in lines:
        assert line["content"] == f"echo: say {line['id']}"
        assert line["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        assert line["attempts"] == 1
        assert "error" not in line
    assert (report.read, report.succeeded, report.failed, report.skipped) == (20, 20, 0, 0)
    assert report.all_succeeded
    assert report.stopped is None


async def test_run_file_writes_batch_api_output_for_batch_input(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Batch API input lines get Batch API output lines: custom_id, response body, error."""
    (tmp_path / "in.jsonl").write_bytes(batch_lines(["x", "y"]))
    engine = make_engine(echo(latency=0.5), keep_raw=True)
    await run_file(engine, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    lines = {line["custom_id"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    assert set(lines) == {"x", "y"}
    for custom_id, line in lines.items():
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"] == f"echo: say {custom_id}"


async def test_resume_skips_ids_already_answered(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Rerunning on an existing OUTPUT sends only the ids it does not answer yet."""
    ids = [f"q{i}" for i in range(6)]
    (tmp_path / "in.jsonl").write_bytes(simple_lines(ids))
    out = tmp_path / "out.jsonl"
    out.write_bytes(success_line("q0") + success_line("q3"))
    server = Recorder()
    report = await run_file(make_engine(server), tmp_path / "in.jsonl", out)
    assert set(server.sent) == {"q1", "q2", "q4", "q5"}
    assert report.skipped == 2
    assert report.succeeded == 4
    assert sorted(line["id"] for line in read_jsonl(out)) == ids


async def test_resume_repairs_a_torn_line_and_reruns_its_item(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The item whose line was torn by a crash is sent again and answered once."""
    ids = ["q0", "q1", "q2"]
    (tmp_path / "in.jsonl").write_bytes(simple_lines(ids))
    out = tmp_path / "out.jsonl"
    out.write_bytes(success_line("q0") + success_line("q1")[:-9])
    server = Recorder()
    await run_file(make_engine(server), tmp_path / "in.jsonl", out)
    assert set(server.sent) == {"q1", "q2"}
    assert sorted(line["id"] for line in read_jsonl(out)) == ids


async def test_resume_reruns_failed_items_and_keeps_one_line_per_id(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A failed item is retried on the next run; its old error line disappears."""
    (tmp_path / "in.jsonl").write_bytes(simple_lines(["q0", "q1", "q2"]))
    out = tmp_path / "out.jsonl"
    server = Recorder(fail_first=frozenset({"q1"}))
    first = await run_file(one_try(server), tmp_path / "in.jsonl", out)
    assert (first.succeeded, first.failed) == (2, 1)
    assert not first.all_succeeded
    (failed,) = [line for line in read_jsonl(out) if not is_done(line)]
    assert failed["id"] == "q1"
    assert failed["error"]["kind"] == "server_error"
    assert failed["error"]["status"] == 500

    second = await run_file(one_try(server), tmp_path / "in.jsonl", out)
    assert (second.skipped, second.succeeded, second.failed) == (2, 1, 0)
    assert server.sent == {"q0": 1, "q1": 2, "q2": 1}
    lines = read_jsonl(out)
    assert sorted(line["id"] for line in lines) == ["q0", "q1", "q2"]
    assert all(is_done(line) for line in lines)


# Cancelling run_file leaks its input generator to the GC (see test_cancelled_run_closes_its_input).
async def test_interrupted_runs_never_lose_or_repeat_an_id(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Cancelled at random points, with torn lines and failures, reruns end with each id once."""
    ids = [f"q{i}" for i in range(120)]
    (tmp_path / "in.jsonl").write_bytes(simple_lines(ids))
    out = tmp_path / "out.jsonl"
    rng = random.Random(7)
    server = Recorder(
        latency=(0.2, 2.0), fail_first=frozenset(rng.sample(ids, 15)), seed=rng.randrange(1000)
    )
    interrupts = 0
    for _ in range(6):
        if out.exists():
            server.forbidden = {
                output_id(line) or "" for line in read_jsonl_tolerant(out) if is_done(line)
            }
        with trio.move_on_after(rng.uniform(0.5, 4.0)) as scope:
            await run_file(one_try(server, concurrency=10), tmp_path / "in.jsonl", out)
        if scope.cancelled_caught:
            interrupts += 1
            # What a kill -9 in the middle of a write leaves behind.
            with out.open("ab") as file:
                file.write(success_line(rng.choice(ids))[: rng.randrange(1, 30)])
    assert interrupts >= 5
    server.forbidden = {output_id(line) or "" for line in read_jsonl_tolerant(out) if is_done(line)}
    assert 0 < len(server.forbidden) < len(ids)
    # Items whose first (failing) attempt was cut off fail in the next run, and succeed after.
    for _ in range(2):
        report = await run_file(one_try(server, concurrency=10), tmp_path / "in.jsonl", out)
        server.forbidden = {output_id(line) or "" for line in read_jsonl(out) if is_done(line)}
    assert report.all_succeeded
    assert server.violations == []  # nothing answered in OUTPUT was ever sent again
    lines = read_jsonl(out)
    counts = collections.Counter(line["id"] for line in lines)
    assert sorted(counts) == sorted(ids)
    assert set(counts.values()) == {1}
    assert all(line["content"] == f"echo: say {line['id']}" for line in lines)


def read_jsonl_tolerant(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a journal that may end in a torn one."""
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


async def test_bad_lines_become_errors_naming_file_line_and_field(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Not JSON, not UTF-8 or a missing prompt: an error line saying where; the rest succeed."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        simple_lines(["q0"])
        + b"{not json\n"
        + b'{"id": "q2", "prompt": "caf\xe9"}\n'
        + b'{"id": "q3"}\n'
        + b"\n"
        + simple_lines(["q5"])
    )
    report = await run_file(make_engine(echo(0.5)), source, tmp_path / "out.jsonl")
    assert (report.read, report.succeeded, report.invalid) == (5, 2, 3)
    assert not report.all_succeeded
    lines = read_jsonl(tmp_path / "out.jsonl")
    errors = {line["line"]: line for line in lines if "line" in line}
    assert set(errors) == {2, 3, 4}
    assert errors[2]["error"]["message"].startswith(f"{source}:2: not JSON")
    assert errors[3]["error"]["message"].startswith(f"{source}:3: not UTF-8")
    assert (
        errors[4]["error"]["message"]
        == f"{source}:4 $.prompt: needs a prompt, messages or an input (embeddings)"
    )
    assert errors[4]["id"] == "q3"
    assert {e["error"]["kind"] for e in errors.values()} == {"invalid_input"}
    assert sorted(line["id"] for line in lines if is_done(line)) == ["q0", "q5"]


async def test_duplicate_ids_are_reported_and_sent_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A repeated id is not sent: it is counted, named in the report and put in the failed file."""
    source = tmp_path / "in.jsonl"
    dup = b'{"id": "q0", "prompt": "say q0 again"}\n'
    source.write_bytes(simple_lines(["q0", "q1"]) + dup)
    server = Recorder()
    report = await run_file(
        make_engine(server), source, tmp_path / "out.jsonl", failed_path=tmp_path / "failed.jsonl"
    )
    assert server.sent == {"q0": 1, "q1": 1}
    assert report.duplicates == 1
    assert not report.all_succeeded
    assert report.problems == (f"{source}:3: duplicate id 'q0' (first at line 1); not sent",)
    assert (tmp_path / "failed.jsonl").read_bytes() == dup
    assert sorted(line["id"] for line in read_jsonl(tmp_path / "out.jsonl")) == ["q0", "q1"]


async def test_failed_file_holds_the_original_input_lines(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Failed items are written to the failed file byte for byte as they were in the input."""
    source = tmp_path / "in.jsonl"
    odd_line = b'{ "prompt" : "say q1",   "id":"q1", "temperature": 0 }'  # no newline at EOF
    source.write_bytes(simple_lines(["q0"]) + odd_line)
    server = Recorder(fail_first=frozenset({"q1"}))
    await run_file(
        one_try(server), source, tmp_path / "out.jsonl", failed_path=tmp_path / "failed.jsonl"
    )
    assert (tmp_path / "failed.jsonl").read_bytes() == odd_line + b"\n"


async def test_the_failed_file_can_be_run_as_input(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Running the failed file into the same OUTPUT retries exactly the failures."""
    ids = [f"q{i}" for i in range(8)]
    (tmp_path / "in.jsonl").write_bytes(simple_lines(ids))
    out, failed = tmp_path / "out.jsonl", tmp_path / "failed.jsonl"
    server = Recorder(fail_first=frozenset({"q2", "q5"}))
    await run_file(one_try(server), tmp_path / "in.jsonl", out, failed_path=failed)
    before = server.sent.copy()
    report = await run_file(one_try(server), failed, out)
    assert server.sent - before == {"q2": 1, "q5": 1}
    assert report.all_succeeded
    counts = collections.Counter(line["id"] for line in read_jsonl(out))
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}


async def test_rerunning_does_not_pile_up_the_failed_file(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """After the same command runs twice, the failed file lists each failing item once."""
    (tmp_path / "in.jsonl").write_bytes(simple_lines(["q0"]) + b'{"id": "bad"}\n')
    failed = tmp_path / "failed.jsonl"
    for _ in range(2):
        await run_file(
            make_engine(echo(0.5)),
            tmp_path / "in.jsonl",
            tmp_path / "out.jsonl",
            failed_path=failed,
        )
    assert failed.read_bytes() == b'{"id": "bad"}\n'


# Today the run is cut off by fail_after, which leaks its input generator to the GC.
async def test_failed_file_must_not_be_the_input(tmp_path: Path) -> None:
    """Naming the input as the failed file is refused instead of feeding the run its own output."""
    source = tmp_path / "failed.jsonl"
    source.write_bytes(simple_lines(["q0"]) + b"{not json\n")
    with trio.fail_after(1), pytest.raises(ConfigurationError, match="failed"):
        await run_file(make_engine(echo(0.0)), source, tmp_path / "out.jsonl", failed_path=source)


async def test_deadline_stops_the_run_and_a_rerun_finishes_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """--deadline ends a run early with its finished results kept; the rerun does the rest."""
    ids = [f"q{i}" for i in range(10)]
    (tmp_path / "in.jsonl").write_bytes(simple_lines(ids))
    out = tmp_path / "out.jsonl"
    server = Recorder(latency=(1.0, 1.0))
    first = await run_file(
        make_engine(server, concurrency=2), tmp_path / "in.jsonl", out, deadline=2.5
    )
    assert first.stopped == "deadline"
    assert first.succeeded == 4
    assert trio.current_time() == pytest.approx(2.5, abs=0.01)
    second = await run_file(make_engine(server, concurrency=2), tmp_path / "in.jsonl", out)
    assert second.skipped == 4
    assert second.stopped is None
    counts = collections.Counter(line["id"] for line in read_jsonl(out))
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}


async def test_stdout_output_gets_one_line_per_result(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """OUTPUT '-' writes the result lines to stdout (nothing else goes there)."""
    (tmp_path / "in.jsonl").write_bytes(simple_lines(["q0", "q1"]))
    report = await run_file(make_engine(echo(0.5)), tmp_path / "in.jsonl", "-")
    assert report.all_succeeded
    stdout = capfd.readouterr().out
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert sorted(line["id"] for line in lines) == ["q0", "q1"]


async def test_stdin_input_is_read_from_a_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INPUT '-' reads stdin (a pipe, last line without a newline); errors name <stdin>."""
    read_end, write_end = os.pipe()
    os.write(
        write_end, simple_lines(["q0", "q1"]) + b'{"id": "q2"}\n' + b'{"id":"q3","prompt":"x"}'
    )
    os.close(write_end)
    with os.fdopen(read_end, "r") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        with trio.fail_after(10):
            report = await run_file(make_engine(echo(0.0)), "-", tmp_path / "out.jsonl")
    assert (report.read, report.succeeded, report.invalid) == (4, 3, 1)
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(line["id"] for line in lines if is_done(line)) == ["q0", "q1", "q3"]
    (bad,) = [line for line in lines if not is_done(line)]
    assert bad["error"]["message"].startswith("<stdin>:3 $.prompt")


async def test_a_missing_input_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A wrong INPUT path is reported as such (exit code 2 in the CLI), not as a crash."""
    with pytest.raises(ConfigurationError, match="cannot read the input file"):
        await run_file(make_engine(echo(0.0)), tmp_path / "nope.jsonl", tmp_path / "out.jsonl")


async def test_cancelled_run_closes_its_input(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Cancelling run_file (Ctrl-C) closes its input reader at once, not in the GC."""
    (tmp_path / "in.jsonl").write_bytes(simple_lines([f"q{i}" for i in range(50)]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with trio.move_on_after(1.5):
            await run_file(
                make_engine(echo(1.0), concurrency=4), tmp_path / "in.jsonl", tmp_path / "o.jsonl"
            )
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


# --- the journal's rules ----------------------------------------------------------------------


async def test_journal_keeps_failures_another_try_cannot_fix(tmp_path: Path) -> None:
    """POLICY decides: a bad_request line stays (not rerun); server_error, deadline and
    invalid_input lines are dropped, so those items run again."""
    out = tmp_path / "out.jsonl"
    out.write_bytes(
        failure_line("a", "bad_request")
        + failure_line("b", "server_error")
        + failure_line("c", "deadline")
        + failure_line("d", "invalid_input")
        + success_line("e")
    )
    journal = OutputJournal(out)
    journal.open()
    kept = {key: journal.answer(json.dumps(key)) for key in "abcde"}
    journal.close()
    assert {k: None if v is None else v.state.name for k, v in kept.items()} == {
        "a": "FAILED", "b": None, "c": None, "d": None, "e": "OK",
    }  # fmt: skip
    assert [line["id"] for line in read_jsonl(out)] == ["a", "e"]


async def test_a_second_journal_on_the_same_output_is_refused(tmp_path: Path) -> None:
    """While one journal holds OUTPUT, opening another raises naming the lock; after close the
    lock file is gone and OUTPUT opens again."""
    out = tmp_path / "out.jsonl"
    first = OutputJournal(out)
    first.open()
    second = OutputJournal(out)
    with pytest.raises(JournalError, match=r"is writing .*out\.jsonl \(it holds the lock .*\.out"):
        second.open()
    first.close()
    assert not (tmp_path / ".out.jsonl.lock").exists()
    third = OutputJournal(out)
    third.open()
    third.close()


async def test_resume_sends_an_answered_id_with_an_unchanged_input_never(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """On resume an answered id is skipped on the quick path, and a duplicate of it is still
    reported as a duplicate."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(simple_lines(["q0", "q1", "q0"]))
    out = tmp_path / "out.jsonl"
    out.write_bytes(success_line("q0"))
    server = Recorder()
    report = await run_file(make_engine(server), source, out)
    assert server.sent == {"q1": 1}
    assert (report.skipped, report.succeeded, report.duplicates) == (1, 1, 1)
    assert report.problems == (f"{source}:3: duplicate id 'q0' (first at line 1); not sent",)


async def test_a_changed_input_on_stdin_stops_the_run_keeping_what_was_done(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stdin cannot be read ahead: at the first changed input nothing more is sent, what
    finished is written, and InputChangedError names the id and both lines."""
    out = tmp_path / "out.jsonl"
    out.write_bytes(success_line("q1", prompt="the old prompt"))
    read_end, write_end = os.pipe()
    os.write(write_end, simple_lines(["q0", "q1", "q2"]))
    os.close(write_end)
    server = Recorder(latency=(0.0, 0.0))
    with os.fdopen(read_end, "r") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        with pytest.raises(InputChangedError, match=r"<stdin>:2: the input of id 'q1' changed"):
            await run_file(make_engine(server), "-", out)
    assert "q1" not in server.sent
    assert "q2" not in server.sent
    assert sorted(line["id"] for line in read_jsonl(out)) == ["q0", "q1"]


async def test_force_sends_changed_inputs_again_and_the_new_answer_wins(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """With force a changed item is sent again; its old answer is gone on the next open."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(simple_lines(["q0", "q1"]))
    out = tmp_path / "out.jsonl"
    out.write_bytes(success_line("q0", "old", prompt="the old prompt") + success_line("q1"))
    with pytest.raises(InputChangedError, match=r"in\.jsonl:1: the input of id 'q0' changed"):
        await run_file(make_engine(echo(0.5)), source, out)
    report = await run_file(make_engine(echo(0.5)), source, out, force=True)
    assert (report.changed, report.succeeded, report.skipped) == (1, 1, 1)
    again = await run_file(make_engine(echo(0.5)), source, out)
    assert (again.skipped, again.succeeded) == (2, 0)
    assert {line["id"]: line["content"] for line in read_jsonl(out)} == {
        "q0": "echo: say q0",
        "q1": "done",
    }
