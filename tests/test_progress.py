"""The progress renderer and run summary, fed a synthetic event stream (no engine, no sockets)."""

from __future__ import annotations

import io
import types
from typing import Any

import pytest
import trio
import trio.testing
from rich.console import Console
from rich.text import Text

import trio_llm._summary
from trio_llm import ErrorInfo, ErrorKind, Result
from trio_llm import _events as ev
from trio_llm._progress import Progress, render_plain, render_summary_table, render_tty
from trio_llm._summary import RunSummary, SummarySnapshot

FP_A = "sk-…aaaa"
FP_B = "sk-…bbbb"
FP_C = "sk-…cccc"


class FakeMonotonic:
    """Stands in for ``time`` inside ``_summary``, so wall time is exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    """The summary's wall clock, under the test's control."""
    fake = FakeMonotonic()
    monkeypatch.setattr(trio_llm._summary, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


def feed(summary: RunSummary, name: str, **fields: Any) -> None:
    """Hand one event to the summary the way the engine's EventHub does."""
    summary(None, ev.LEVELS.get(name, "info"), {"event": name, **fields})


def key(key_id: str, **overrides: Any) -> dict[str, Any]:
    """One key's dict as ``keys.updated`` carries it."""
    base: dict[str, Any] = {
        "key_id": key_id,
        "in_flight": 0,
        "rpm": 500.0,
        "tpm": 200_000.0,
        "requests_left": 480.0,
        "tokens_left": 190_000.0,
        "cooling_s": 0.0,
        "dropped": None,
    }
    base.update(overrides)
    return base


def synthetic_run(summary: RunSummary, wall: FakeMonotonic) -> None:
    """10 items: 4 succeed, 1 fails for good, one 429 retry, one key cooling, one dropped."""
    feed(summary, ev.RUN_STARTED, run_id="run-1", total=10, keys=3)
    for index in range(6):
        feed(summary, ev.REQUEST_SENT, index=index, attempt=1, key_id=FP_A, est_tokens=50)
    feed(summary, ev.REQUEST_RETRYING, index=5, attempt=1, kind="rate_limited", status=429)
    feed(summary, ev.REQUEST_RETRYING, index=4, attempt=1, kind="server_error", status=500)
    for index in (4, 5):  # the two retries
        feed(summary, ev.REQUEST_SENT, index=index, attempt=2, key_id=FP_A, est_tokens=50)
    for index in range(4):
        feed(
            summary,
            ev.REQUEST_SUCCEEDED,
            index=index,
            attempt=1,
            key_id=FP_A,
            latency_s=0.5,
            prompt_tokens=100,
            completion_tokens=25,
            cost_usd=0.0025,
        )
    feed(summary, ev.REQUEST_FAILED, index=4, attempts=2, kind="context_length", status=400)
    feed(
        summary,
        ev.KEYS_UPDATED,
        keys=[
            key(FP_A, in_flight=2),
            key(FP_B, cooling_s=2.5, requests_left=0.0),
            key(FP_C, dropped="auth", rpm=None, tpm=None, requests_left=None, tokens_left=None),
        ],
        in_flight=2,
    )
    feed(summary, ev.KEY_DROPPED, key_id=FP_C, reason="auth")
    wall.now += 4.0


def plain_text_of(renderable: Any, *, terminal: bool = True) -> str:
    """What a 120-column console shows for ``renderable``, with styles stripped."""
    out = io.StringIO()
    Console(file=out, force_terminal=terminal, width=120).print(renderable)
    return Text.from_ansi(out.getvalue()).plain


async def test_summary_counts_the_event_stream(wall: FakeMonotonic) -> None:
    """The summary counts successes, failures by kind, retries, 429s, tokens, cost and keys."""
    summary = RunSummary()
    synthetic_run(summary, wall)
    snap = summary.snapshot()
    assert snap.total == 10
    assert (snap.succeeded, snap.failed, snap.done) == (4, 1, 5)
    assert snap.failed_by_kind == {"context_length": 1}
    assert (snap.sent, snap.retries, snap.rate_limited) == (8, 2, 1)
    assert (snap.prompt_tokens, snap.completion_tokens) == (400, 100)
    assert snap.cost_usd == pytest.approx(0.01)
    assert snap.in_flight == 2
    assert [k["key_id"] for k in snap.keys] == [FP_A, FP_B, FP_C]
    assert snap.dropped_keys == (f"{FP_C}: auth",)
    assert snap.wall_s == 4.0
    assert snap.requests_per_s == 5 / 4
    assert snap.eta_s == 4.0  # 5 items left at 1.25 items/s


async def test_run_finished_freezes_wall_time_and_records_why_it_stopped(
    wall: FakeMonotonic,
) -> None:
    """After run.finished the wall time stops growing and the stop reason is kept."""
    summary = RunSummary()
    synthetic_run(summary, wall)
    feed(summary, ev.RUN_FINISHED, run_id="run-1", succeeded=4, failed=1, stopped="deadline")
    wall.now += 100.0
    snap = summary.snapshot()
    assert snap.wall_s == 4.0
    assert snap.stopped == "deadline"


async def test_a_failed_429_counts_as_rate_limited(wall: FakeMonotonic) -> None:
    """A 429 that exhausts the attempts still shows in the 429 count."""
    summary = RunSummary(total=1)
    feed(
        summary, ev.REQUEST_FAILED, index=0, attempts=8, kind="rate_limited", status=429, sent=True
    )
    snap = summary.snapshot()
    assert (snap.failed, snap.rate_limited, snap.retries) == (1, 1, 0)


async def test_a_failed_attempt_not_tried_again_is_no_retry(wall: FakeMonotonic) -> None:
    """--max-attempts 1: a retry event for an attempt that is never sent again counts 0 retries,
    and its 429 is counted once, not again when the item fails."""
    summary = RunSummary(total=1)
    feed(summary, ev.REQUEST_SENT, index=0, attempt=1, key_id=FP_A)
    feed(summary, ev.REQUEST_RETRYING, index=0, attempt=1, kind="rate_limited", status=429)
    feed(
        summary, ev.REQUEST_FAILED, index=0, attempts=1, kind="rate_limited", status=429, sent=False
    )
    snap = summary.snapshot()
    assert (snap.sent, snap.retries, snap.rate_limited, snap.failed) == (1, 0, 1, 1)


async def test_recorded_results_are_the_outcome_counts(wall: FakeMonotonic) -> None:
    """A collector's results win over the events: an item a stop left unsent counts as failed."""
    summary = RunSummary()
    feed(summary, ev.REQUEST_SUCCEEDED, index=0, prompt_tokens=1, completion_tokens=1)
    summary.record(Result(index=0, ok=True, text="a"))
    stopped = ErrorInfo(kind=ErrorKind.DEADLINE, message="the run's deadline passed")
    summary.record(Result(index=1, ok=False, error=stopped))  # no request.failed event
    snap = summary.snapshot()
    assert (snap.succeeded, snap.failed, snap.failed_by_kind) == (1, 1, {"deadline": 1})


async def test_a_file_run_bar_counts_every_line_of_the_file(wall: FakeMonotonic) -> None:
    """Lines already answered, invalid or duplicate count toward the bar; the ETA uses only
    the pace of this run's results."""
    summary = RunSummary()
    summary.set_total(100)
    for outcome, n in (("skipped", 40), ("invalid", 5), ("duplicates", 5)):
        for _ in range(n):
            summary.count_line(outcome)
    feed(summary, ev.RUN_STARTED, run_id="run-1", total=None, keys=1)
    for index in range(10):
        summary.record(Result(index=index, ok=True, text="a"))
    wall.now += 10.0
    snap = summary.snapshot()
    assert (snap.done, snap.total, snap.fraction) == (60, 100, 0.6)
    assert snap.eta_s == 40.0  # 40 left at 1 item/s
    assert render_plain(snap).startswith("60/100 done (60%), 40 already done, 10 ok, 0 failed")
    text = plain_text_of(render_tty(snap))
    assert text.splitlines()[0].startswith("█" * 18 + "░" * 12 + " 60/100 (60%)")
    table = plain_text_of(render_summary_table(snap))
    for row in ("already done", "invalid", "duplicate ids"):
        assert row in table


async def test_explicit_total_wins_over_run_started(wall: FakeMonotonic) -> None:
    """A total given by the caller (the demo knows N) is not replaced by the event's None."""
    summary = RunSummary(total=30)
    feed(summary, ev.RUN_STARTED, run_id="run-1", total=None, keys=1)
    assert summary.snapshot().total == 30


async def test_render_plain_is_one_status_line(wall: FakeMonotonic) -> None:
    """The plain line shows done/total, ok, failed, rates, in flight, retries, 429s, cost, ETA."""
    summary = RunSummary()
    synthetic_run(summary, wall)
    assert render_plain(summary.snapshot()) == (
        "5/10 done (50%), 4 ok, 1 failed | 1.2 req/s, 125 tok/s | in flight 2 | "
        "retries 2, 429s 1 | $0.0100 | ETA 4s"
    )


async def test_render_plain_before_anything_happened() -> None:
    """An empty run shows an unknown total and an unknown ETA, not a division by zero."""
    assert render_plain(RunSummary().snapshot()) == (
        "0/? done, 0 ok, 0 failed | 0.0 req/s, 0 tok/s | in flight 0 | "
        "retries 0, 429s 0 | $0.0000 | ETA ?"
    )


@pytest.mark.parametrize(
    ("wall_s", "shown"),
    [(59.4, "ETA 59s"), (61.0, "ETA 1m01s"), (3 * 3600 + 125.0, "ETA 3h02m")],
)
async def test_render_plain_formats_long_etas(wall_s: float, shown: str) -> None:
    """ETAs read as seconds, minutes or hours."""
    # 1 of 2 done in wall_s: the one left takes wall_s too.
    snap = _snapshot(total=2, succeeded=1, wall_s=wall_s)
    assert render_plain(snap).endswith(shown)


def _snapshot(**overrides: Any) -> SummarySnapshot:
    fields: dict[str, Any] = {
        "total": None,
        "succeeded": 0,
        "failed": 0,
        "failed_by_kind": {},
        "sent": 0,
        "retries": 0,
        "rate_limited": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "priced": True,
        "in_flight": 0,
        "wall_s": 0.0,
        "keys": (),
        "dropped_keys": (),
        "stopped": None,
    }
    fields.update(overrides)
    return SummarySnapshot(**fields)


async def test_render_tty_shows_totals_and_one_line_per_key(wall: FakeMonotonic) -> None:
    """The live panel shows the bar, counts and a row per key with its limits and state."""
    summary = RunSummary()
    synthetic_run(summary, wall)
    text = plain_text_of(render_tty(summary.snapshot()))
    lines = text.splitlines()
    head = lines[0]
    assert head.startswith("█" * 15 + "░" * 15)  # half done
    assert "5/10" in head
    assert "4 ok" in head
    assert "1 failed" in head
    assert "ETA 4s" in head
    assert "1.2 req/s" in lines[1]
    assert "retries 2" in lines[1]
    assert "429s 1" in lines[1]
    assert "cost $0.0100" in lines[1]
    header = lines[2].split()
    assert header[:2] == ["key", "in"]
    assert header[-1] == "state"
    (row_a,) = [line for line in lines if line.startswith(FP_A)]
    (row_b,) = [line for line in lines if line.startswith(FP_B)]
    (row_c,) = [line for line in lines if line.startswith(FP_C)]
    assert row_a.split() == [FP_A, "2", "500", "200,000", "480", "190,000", "ok"]
    assert row_b.split()[-2:] == ["cooling", "2.5s"]
    assert row_b.split()[4] == "0"  # no requests left in its window
    assert row_c.split() == [FP_C, "0", "-", "-", "-", "-", "dropped", "(auth)"]


async def test_render_tty_without_keys_has_no_key_table() -> None:
    """Before the first keys.updated the panel has only the two summary lines."""
    text = plain_text_of(render_tty(_snapshot(total=3)))
    assert len(text.splitlines()) == 2
    assert "0/3" in text


async def test_summary_table_lists_counts_failures_by_kind_and_dropped_keys(
    wall: FakeMonotonic,
) -> None:
    """The final table has items, outcomes, each failure kind, tokens, cost, rates, stops."""
    summary = RunSummary()
    synthetic_run(summary, wall)
    feed(summary, ev.RUN_FINISHED, run_id="run-1", succeeded=4, failed=1, stopped="budget")
    text = plain_text_of(render_summary_table(summary.snapshot(), title="trio-llm run"))
    rows = {
        cells[0]: cells[1]
        for line in text.splitlines()
        if (cells := [c.strip() for c in line.strip("│┃|").split("│")]) and len(cells) == 2
    }
    assert "trio-llm run" in text.splitlines()[0]
    assert rows["items"] == "10"
    assert rows["succeeded"] == "4"
    assert rows["failed"] == "1"
    assert rows["context_length"] == "1"
    assert rows["requests sent"] == "8"
    assert rows["retries"] == "2"
    assert rows["429 responses"] == "1"
    assert rows["tokens (prompt + completion)"] == "400 + 100"
    assert rows["cost"] == "$0.0100"
    assert rows["wall time"] == "4.00s"
    assert rows["requests/s"] == "1.2"
    assert rows["dropped key"] == f"{FP_C}: auth"
    assert rows["stopped early"] == "budget"


async def test_plain_mode_prints_a_status_line_every_interval(
    autojump_clock: trio.testing.MockClock, wall: FakeMonotonic
) -> None:
    """Off a terminal, Progress prints one plain status line per interval, nothing live."""
    summary = RunSummary()
    synthetic_run(summary, wall)
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert not console.is_terminal
    async with Progress(summary, console=console, plain_interval_s=2.0):
        await trio.sleep(5.0)
    assert trio.current_time() == 5.0
    lines = out.getvalue().splitlines()
    assert lines == [render_plain(summary.snapshot())] * 2
    assert "\x1b" not in out.getvalue()


async def test_plain_mode_lines_follow_the_summary(
    autojump_clock: trio.testing.MockClock, wall: FakeMonotonic
) -> None:
    """Each status line shows the counts at the moment it is printed."""
    summary = RunSummary(total=2)
    out = io.StringIO()
    async with Progress(summary, console=Console(file=out, width=200), plain_interval_s=1.0):
        await trio.sleep(1.5)
        feed(summary, ev.REQUEST_SUCCEEDED, index=0, prompt_tokens=1, completion_tokens=1)
        await trio.sleep(1.0)
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["0/2 done (0%)", "1/2 done (50%)"]


async def test_disabled_progress_prints_nothing(autojump_clock: trio.testing.MockClock) -> None:
    """--no-progress: nothing is drawn, however long the run."""
    out = io.StringIO()
    async with Progress(RunSummary(), console=Console(file=out), enabled=False):
        await trio.sleep(60.0)
    assert out.getvalue() == ""


async def test_terminal_mode_draws_the_live_panel_and_a_final_frame(
    autojump_clock: trio.testing.MockClock, wall: FakeMonotonic
) -> None:
    """In a terminal Progress redraws the panel and leaves the last state on screen."""
    summary = RunSummary()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    async with Progress(summary, console=console):
        await trio.sleep(1.0)
        synthetic_run(summary, wall)
        await trio.sleep(0.1)
    text = Text.from_ansi(out.getvalue()).plain
    assert "0/?" in text  # the first frame, before any event
    final = text[text.rindex("5/10") :]
    assert "4 ok" in final
    assert "cooling 2.5s" in final
    assert "dropped (auth)" in final


def test_cost_is_na_when_the_model_price_is_unknown() -> None:
    """Answers with no known price show the cost as n/a, not as $0."""
    unpriced = _snapshot(succeeded=5, priced=False)
    assert unpriced.cost_text == "n/a"
    assert "n/a" in render_plain(unpriced)
    assert _snapshot(succeeded=5, cost_usd=0.25).cost_text == "$0.2500"


@pytest.mark.parametrize(
    ("key", "state"),
    [
        ({"down": "endpoint", "down_s": 8.2}, "endpoint down, retrying in 8s"),
        ({"down": "key", "down_s": 0.0}, "key failing, probing"),
        ({"down": "unreachable", "down_s": 0.0}, "endpoint unreachable"),
        ({"cooling_s": 2.0}, "cooling 2.0s"),
        ({}, "ok"),
    ],
)
def test_a_key_held_back_by_a_breaker_says_so(key: dict[str, object], state: str) -> None:
    """The key line says "endpoint down, retrying in 8s" while a breaker is open, not "ok"."""
    from trio_llm._progress import _key_state

    assert _key_state(key) == state


def _streamed(summary: RunSummary, index: int, ttft_s: float | None) -> None:
    summary(None, "debug", {"event": ev.REQUEST_SENT, "index": index, "attempt": 1})
    summary(
        None,
        "debug",
        {"event": ev.REQUEST_SUCCEEDED, "index": index, "ttft_s": ttft_s, "latency_s": 1.0},
    )


async def test_streamed_answers_show_ttft_percentiles(wall: FakeMonotonic) -> None:
    """Times to first token of streamed answers show as p50 / p95 in the status line, the
    live panel and the summary table; whole answers add none."""
    summary = RunSummary(total=101)
    _streamed(summary, 0, None)
    for i in range(1, 101):
        _streamed(summary, i, i / 1000)  # 1 ms .. 100 ms
    snap = summary.snapshot()
    assert snap.streamed == 100
    assert snap.ttft_p50_s == pytest.approx(0.050)
    assert snap.ttft_p95_s == pytest.approx(0.095)
    assert "TTFT p50 50 ms, p95 95 ms" in render_plain(snap)
    assert "TTFT p50 50 ms, p95 95 ms" in plain_text_of(render_tty(snap))
    assert "50 / 95 ms" in plain_text_of(render_summary_table(snap))


async def test_no_ttft_without_streamed_answers(wall: FakeMonotonic) -> None:
    """A run with no streamed answer shows no TTFT anywhere."""
    summary = RunSummary()
    _streamed(summary, 0, None)
    snap = summary.snapshot()
    assert snap.ttft_p50_s is None
    assert "TTFT" not in render_plain(snap)
    assert "first token" not in plain_text_of(render_summary_table(snap))


async def test_ttft_sample_stays_bounded(wall: FakeMonotonic, monkeypatch: Any) -> None:
    """Past TTFT_SAMPLE answers the sample stays that size and still spans the run."""
    monkeypatch.setattr(trio_llm._summary, "TTFT_SAMPLE", 50)
    summary = RunSummary()
    for i in range(1000):
        _streamed(summary, i, float(i))
    snap = summary.snapshot()
    assert snap.streamed == 1000
    assert len(summary._ttft) == 50
    assert snap.ttft_p95_s is not None
    assert snap.ttft_p95_s > 500
