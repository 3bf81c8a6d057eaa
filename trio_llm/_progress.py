"""Live progress in the terminal, and the final summary table.

Both render a ``SummarySnapshot`` — what the event stream says — never the engine's internals.
In a terminal the display is a rich panel redrawn a few times a second by a trio task (so a
million events cost a million counter updates, not a million redraws); anywhere else (CI, a log
file) it is one plain status line every few seconds.
"""

from __future__ import annotations

import contextlib
import math
from types import TracebackType
from typing import Any, TextIO, final

import trio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ._summary import RunSummary, SummarySnapshot

__all__ = ["Progress", "render_plain", "render_summary_table", "render_tty"]


def _duration(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds):
        return "?"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _key_state(key: dict[str, Any]) -> str:
    if key.get("dropped"):
        return f"dropped ({key['dropped']})"
    down = key.get("down")
    if down:
        if down == "unreachable":
            return "endpoint unreachable"
        wait = key.get("down_s") or 0.0
        what = "endpoint down" if down == "endpoint" else "key failing"
        return f"{what}, retrying in {wait:.0f}s" if wait >= 0.5 else f"{what}, probing"
    if key.get("cooling_s"):
        return f"cooling {key['cooling_s']:.1f}s"
    return "ok"


def _percent(snap: SummarySnapshot) -> str:
    fraction = snap.fraction
    return "" if fraction is None else f" ({fraction:.0%})"


def _waiting(snap: SummarySnapshot) -> str:
    if snap.waiting is None:
        return ""
    key_id, left, tokens = snap.waiting
    return f" | a request of ~{tokens:,.0f} tokens waits {_duration(left)} for {key_id}"


def _ttft(snap: SummarySnapshot, sep: str = " | ") -> str:
    """Times to first token of streamed answers, when there are any."""
    if snap.ttft_p50_s is None or snap.ttft_p95_s is None:
        return ""
    return f"{sep}TTFT p50 {snap.ttft_p50_s * 1000:.0f} ms, p95 {snap.ttft_p95_s * 1000:.0f} ms"


def render_plain(snap: SummarySnapshot) -> str:
    """One status line: for logs and pipes."""
    total = "?" if snap.total is None else str(snap.total)
    earlier = f", {snap.skipped} already done" if snap.skipped else ""
    return (
        f"{snap.done}/{total} done{_percent(snap)}{earlier}, {snap.succeeded} ok, "
        f"{snap.failed} failed | "
        f"{snap.requests_per_s:.1f} req/s, {snap.tokens_per_s:.0f} tok/s | "
        f"in flight {snap.in_flight} | retries {snap.retries}, 429s {snap.rate_limited} | "
        f"{snap.cost_text}{_ttft(snap)} | ETA {_duration(snap.eta_s)}{_waiting(snap)}"
    )


def render_tty(snap: SummarySnapshot) -> RenderableType:
    """The live panel: totals, rates, and one line per key."""
    total = snap.total
    fraction = snap.fraction or 0.0
    width = 30
    filled = int(fraction * width)
    bar = Text("█" * filled + "░" * (width - filled), style="green")
    head = Text.assemble(
        bar,
        f" {snap.done}/{'?' if total is None else total}{_percent(snap)}  ",
        (f"{snap.succeeded} ok", "green"),
        "  ",
        (f"{snap.failed} failed", "red" if snap.failed else "dim"),
        f"  ETA {_duration(snap.eta_s)}",
    )
    rates = Text(
        f"{snap.requests_per_s:.1f} req/s  {snap.tokens_per_s:.0f} tok/s  "
        f"in flight {snap.in_flight}  retries {snap.retries}  429s {snap.rate_limited}  "
        f"cost {snap.cost_text}  elapsed {_duration(snap.wall_s)}{_ttft(snap, '  ')}",
        style="dim",
    )
    keys = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for column in ("key", "in flight", "rpm", "tpm", "req left", "tok left", "state"):
        keys.add_column(column, justify="left" if column in ("key", "state") else "right")
    for key in snap.keys:
        keys.add_row(
            str(key.get("key_id")),
            str(key.get("in_flight", 0)),
            _number(key.get("rpm")),
            _number(key.get("tpm")),
            # A negative level is requests already scheduled on the key: nothing is left.
            _number(_left(key.get("requests_left"))),
            _number(_left(key.get("tokens_left"))),
            _key_state(key),
        )
    parts: list[RenderableType] = [head, rates]
    if snap.waiting is not None:
        parts.append(Text(_waiting(snap).removeprefix(" | "), style="yellow"))
    if snap.keys:
        parts.append(keys)
    return Group(*parts)


def _left(value: float | None) -> float | None:
    return None if value is None else max(0.0, value)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render_summary_table(snap: SummarySnapshot, *, title: str = "Run summary") -> Table:
    """The table printed at the end of every run."""
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("items", "?" if snap.total is None else str(snap.total))
    if snap.skipped:
        table.add_row("already done", str(snap.skipped))
    table.add_row("succeeded", str(snap.succeeded))
    table.add_row("failed", str(snap.failed))
    for kind, count in sorted(snap.failed_by_kind.items()):
        table.add_row(f"  {kind}", str(count))
    if snap.kept_failed:
        table.add_row("failed earlier (kept)", str(snap.kept_failed))
    if snap.invalid:
        table.add_row("invalid", str(snap.invalid))
    if snap.duplicates:
        table.add_row("duplicate ids", str(snap.duplicates))
    table.add_row("requests sent", str(snap.sent))
    table.add_row("retries", str(snap.retries))
    table.add_row("429 responses", str(snap.rate_limited))
    if snap.slow:
        table.add_row("slow answers (30 s or more)", str(snap.slow))
    table.add_row(
        "tokens (prompt + completion)", f"{snap.prompt_tokens} + {snap.completion_tokens}"
    )
    table.add_row("cost", snap.cost_text)
    table.add_row("wall time", f"{snap.wall_s:.2f}s")
    table.add_row("requests/s", f"{snap.requests_per_s:.1f}")
    if snap.ttft_p50_s is not None and snap.ttft_p95_s is not None:
        table.add_row("streamed answers", str(snap.streamed))
        table.add_row(
            "time to first token p50 / p95",
            f"{snap.ttft_p50_s * 1000:.0f} / {snap.ttft_p95_s * 1000:.0f} ms",
        )
    for dropped in snap.dropped_keys:
        table.add_row("dropped key", dropped)
    if snap.stopped:
        table.add_row("stopped early", snap.stopped)
    return table


@final
class Progress:
    """Shows a run's progress while the ``async with`` block runs.

    Args:
        summary: the event consumer to read from.
        console: where to draw (stderr by default).
        enabled: False shows nothing (``--no-progress``).
        plain_interval_s: seconds between status lines when not in a terminal.
    """

    def __init__(
        self,
        summary: RunSummary,
        *,
        console: Console | None = None,
        enabled: bool = True,
        plain_interval_s: float = 5.0,
        file: TextIO | None = None,
    ) -> None:
        self.summary = summary
        self.console = console or Console(stderr=True, file=file)
        self.enabled = enabled
        self.plain_interval_s = plain_interval_s
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Progress:
        stack = contextlib.AsyncExitStack()
        if self.enabled:
            nursery = await stack.enter_async_context(trio.open_nursery())
            nursery.start_soon(self._draw)
            stack.callback(nursery.cancel_scope.cancel)
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        await self._stack.__aexit__(exc_type, exc, tb)

    async def _draw(self) -> None:
        if self.console.is_terminal:
            await self._draw_live()
            return
        while True:
            await trio.sleep(self.plain_interval_s)
            self.console.print(render_plain(self.summary.snapshot()), highlight=False)

    async def _draw_live(self) -> None:
        with Live(
            render_tty(self.summary.snapshot()),
            console=self.console,
            auto_refresh=False,
            transient=False,
        ) as live:
            try:
                while True:
                    await trio.sleep(0.25)
                    live.update(render_tty(self.summary.snapshot()), refresh=True)
            finally:
                live.update(render_tty(self.summary.snapshot()), refresh=True)
