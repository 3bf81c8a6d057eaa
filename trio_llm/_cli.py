"""The command line: ``trio-llm demo``, ``trio-llm run``, ``trio-llm mock-server``.

Options of ``run`` come from, in rising precedence: built-in defaults, a TOML file
(``--config``; keys named like the long flags, ``base_url = "..."``), environment variables
(``TRIO_LLM_BASE_URL``, ``TRIO_LLM_RPM``...), and the flags themselves.

Exit codes: 0 every item succeeded; 1 some failed; 2 bad usage or configuration; 130
interrupted (Ctrl-C: in-flight requests are cancelled, finished results are kept, the summary
is printed; a second Ctrl-C exits at once).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

import structlog
import trio
from rich.console import Console

from . import __version__
from ._arithmetic import make_problems, prompt_for, score
from ._config import Limits, RetryPolicy
from ._engine import Engine
from ._errors import ConfigurationError, TrioLLMError
from ._events import EventConsumer
from ._keys import KeyPool
from ._pricing import PriceTable
from ._progress import Progress, render_summary_table
from ._providers import OpenAICompatible
from ._sinks import run_file
from ._summary import RunSummary

__all__ = ["main"]

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED_ITEMS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

RUN_EXAMPLES = """\
examples:
  trio-llm run prompts.jsonl -o answers.jsonl --base-url https://api.openai.com/v1 \\
      --model gpt-4o-mini --keys-env OPENAI_API_KEY --rpm 500 --tpm 200000
  trio-llm run batch_input.jsonl -o batch_output.jsonl --failed failed.jsonl   # Batch API lines
  trio-llm run failed.jsonl -o batch_output.jsonl                              # retry the failures
  cat prompts.jsonl | trio-llm run - -o - --config trio-llm.toml > answers.jsonl

input lines: {"id": "q1", "prompt": "..."} or {"id": "q1", "messages": [...]} or OpenAI Batch
API lines {"custom_id": ..., "method": "POST", "url": "/v1/chat/completions", "body": {...}}.
Rerunning the same command resumes: ids already answered in OUTPUT are skipped.
"""

# (flag name, type, default) for options that may also come from --config and the environment.
_RUN_OPTIONS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "base_url": (str, "https://api.openai.com/v1"),
    "model": (str, "gpt-4o-mini"),
    "keys": (str, None),
    "keys_env": (str, "OPENAI_API_KEY"),
    "rpm": (float, None),
    "tpm": (float, None),
    "concurrency": (int, 64),
    "timeout": (float, 60.0),
    "max_attempts": (int, 8),
    "budget": (float, None),
    "deadline": (float, None),
    "failed": (str, None),
    "prices": (str, None),
    "log_json": (str, None),
}


def _add_endpoint_flags(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(name: str) -> Any:
        return _RUN_OPTIONS[name][1] if defaults else None

    parser.add_argument(
        "--base-url", default=default("base_url"), help="API root, e.g. https://api.openai.com/v1"
    )
    parser.add_argument("--model", default=default("model"), help="model name")
    parser.add_argument(
        "--keys",
        default=None,
        help="comma-separated API keys (prefer --keys-env: flags show in ps)",
    )
    parser.add_argument(
        "--keys-env",
        default=default("keys_env"),
        help="environment variable holding comma-separated keys (default OPENAI_API_KEY)",
    )
    parser.add_argument("--rpm", type=float, default=None, help="requests/min per key")
    parser.add_argument("--tpm", type=float, default=None, help="tokens/min per key")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=default("concurrency"),
        help="requests in flight (default 64)",
    )
    parser.add_argument(
        "--timeout", type=float, default=default("timeout"), help="seconds per attempt (default 60)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-llm",
        description="Run LLM API calls at the providers' rate limits, with nothing lost.",
        epilog="examples:\n"
        "  trio-llm demo                           # the built-in mock server, no key needed\n"
        "  trio-llm run prompts.jsonl -o answers.jsonl --model gpt-4o-mini --rpm 500\n"
        "  trio-llm mock-server --port 8000 --rpm 600 --latency 0.2\n"
        "see `trio-llm run --help` for the batch options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trio-llm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="the arithmetic experiment on the built-in mock server",
        description="Starts the mock server in-process and runs N arithmetic prompts across "
        "several keys with per-key limits; prints accuracy, wall time against the rate-limit "
        "floor, req/s, retries and 429s. With --base-url (and keys from --keys-env) it runs "
        "against a real endpoint instead.",
    )
    demo.add_argument("--n", type=int, default=1000, help="number of prompts (default 1000)")
    demo.add_argument("--key-count", type=int, default=3, help="mock keys (default 3)")
    demo.add_argument("--latency", type=float, default=0.2, help="mock latency, s (default 0.2)")
    demo.add_argument("--seed", type=int, default=0)
    _add_endpoint_flags(demo, defaults=False)
    demo.set_defaults(concurrency=64, timeout=60.0)

    run = commands.add_parser(
        "run",
        help="run a JSONL file of prompts (simple or OpenAI Batch API lines)",
        description="Sends every line of INPUT and appends results to OUTPUT as they finish.",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("input", help="input JSONL file, or - for stdin")
    run.add_argument("-o", "--output", required=True, help="output JSONL file, or - for stdout")
    _add_endpoint_flags(run, defaults=False)
    run.add_argument(
        "--resume",
        action="store_true",
        help="skip ids already answered in OUTPUT (also the default when OUTPUT exists)",
    )
    run.add_argument(
        "--failed",
        default=None,
        help="write failed items here, as input lines, to retry them later",
    )
    run.add_argument("--max-attempts", type=int, default=None, help="attempts per item (8)")
    run.add_argument(
        "--budget",
        type=float,
        default=None,
        help="stop sending once this many USD would be exceeded",
    )
    run.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="stop the run after this many seconds; resume continues it",
    )
    run.add_argument(
        "--prices",
        default=None,
        help="TOML/JSON price table overriding the built-in one: "
        '{"model": {"input_per_m": 0.15, "output_per_m": 0.6}}',
    )
    run.add_argument("--config", default=None, help="TOML file with option defaults")
    run.add_argument("--log-json", default=None, help="write every event as JSON lines here")

    mock = commands.add_parser(
        "mock-server",
        help="the built-in OpenAI-compatible mock server",
        add_help=False,
    )
    mock.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _configure_structlog() -> None:
    """The CLI owns the process: events reach the user through the progress display, the
    summary and --log-json, so structlog itself prints nothing."""
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def _json_log(file: TextIO) -> EventConsumer:
    renderer = structlog.processors.JSONRenderer()

    def write(_logger: Any, method: str, event_dict: Any) -> Any:
        line = renderer(None, method, {"ts": time.time(), "level": method, **event_dict})
        file.write(f"{line!s}\n")
        return event_dict

    return write


def _keys_from(args: argparse.Namespace) -> KeyPool:
    if args.keys:
        return KeyPool([k for k in args.keys.split(",") if k.strip()])
    return KeyPool.from_env(args.keys_env or "OPENAI_API_KEY")


def _run_with_interrupts(main: Callable[[trio.CancelScope], Awaitable[T]]) -> tuple[T | None, bool]:
    """Run ``main`` under trio; the first Ctrl-C cancels it (the caller prints what finished),
    the second exits at once. Returns (result, interrupted)."""
    interrupted = False

    async def runner() -> T | None:
        nonlocal interrupted
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def watch() -> None:
                nonlocal interrupted
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        if interrupted:
                            os._exit(EXIT_INTERRUPTED)
                        interrupted = True
                        print(
                            "\ninterrupted: cancelling in-flight requests "
                            "(Ctrl-C again to exit at once)",
                            file=sys.stderr,
                        )
                        scope.cancel()

            nursery.start_soon(watch)
            result: T | None = None
            with scope:
                result = await main(scope)
            nursery.cancel_scope.cancel()
            return result

    try:
        return trio.run(runner), interrupted
    except BaseExceptionGroup as group:
        # The watcher's nursery wraps whatever `main` raised: hand back that one exception, so
        # `main()` reports a ConfigurationError or a bad OUTPUT as a usage error (exit 2).
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, BaseExceptionGroup):
            raise
        raise leaf from None


def _demo(args: argparse.Namespace) -> int:
    from .testing import MockServerConfig, serve_mock

    console = Console(stderr=True)
    problems = make_problems(args.n, seed=args.seed)
    prompts = [prompt_for(p) for p in problems]
    real = args.base_url is not None
    rpm = args.rpm if args.rpm is not None else (None if real else 1200.0)
    keys: KeyPool | list[str] = (
        _keys_from(args) if real else [f"mock-key-{i + 1}" for i in range(args.key_count)]
    )
    summary = RunSummary(total=len(prompts))
    outcome: dict[str, Any] = {}

    async def main(_: trio.CancelScope) -> None:
        async def go(base_url: str, model: str) -> None:
            engine = Engine(
                provider=OpenAICompatible(base_url=base_url, model=model),
                keys=keys,
                limits=Limits(rpm=rpm, tpm=args.tpm),
                concurrency=args.concurrency,
                timeout=args.timeout,
                consumers=[summary],
            )
            started = time.monotonic()
            async with Progress(summary, console=console, enabled=not args.no_progress):
                outcome["results"] = await engine.map(prompts)
            outcome["wall"] = time.monotonic() - started

        if real:
            await go(args.base_url, args.model or "gpt-4o-mini")
            return
        config = MockServerConfig(
            keys=tuple(keys) if isinstance(keys, list) else None,
            rpm=None if rpm is None else int(rpm),
            tpm=None if args.tpm is None else int(args.tpm),
            latency=args.latency,
            latency_sigma=0.5 if args.latency else 0.0,
            seed=args.seed,
        )
        async with serve_mock(config) as server:
            console.print(
                f"mock server on {server.base_url}: {len(keys)} keys x "
                f"{rpm:.0f} rpm, latency ~{args.latency}s",
                highlight=False,
            )
            await go(server.base_url, args.model or config.model)

    _, interrupted = _run_with_interrupts(main)
    snap = summary.snapshot()
    console.print(render_summary_table(snap, title="trio-llm demo"))
    if "results" in outcome:
        result_score = score(problems, outcome["results"])
        key_count = len(keys)
        floor = None if rpm is None else len(prompts) / (key_count * rpm / 60.0)
        wall = outcome["wall"]
        console.print(
            f"accuracy {result_score.accuracy:.1%} ({result_score.correct}/{result_score.total}); "
            f"wrong answers {result_score.wrong}, format errors {result_score.format_errors}, "
            f"failed {result_score.failed}",
            highlight=False,
        )
        if floor is not None and rpm is not None:
            console.print(
                f"wall time {wall:.2f}s vs rate-limit floor {floor:.2f}s "
                f"(N / (keys x rate) = {len(prompts)} / ({key_count} x {rpm / 60:.1f}/s)): "
                f"{wall / floor:.3f} x floor; {snap.requests_per_s:.1f} req/s; "
                f"{snap.retries} retries, {snap.rate_limited} 429s",
                highlight=False,
            )
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if snap.failed == 0 else EXIT_FAILED_ITEMS


def _merged_run_options(args: argparse.Namespace) -> dict[str, Any]:
    """defaults < --config TOML < TRIO_LLM_* environment < flags."""
    options = {name: default for name, (_, default) in _RUN_OPTIONS.items()}
    if args.config:
        path = Path(args.config)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read the config file {path}: {exc}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in _RUN_OPTIONS:
                raise ConfigurationError(
                    f"{path}: unknown option {key!r}; known: {', '.join(sorted(_RUN_OPTIONS))}"
                )
            options[name] = value
    for name, (convert, _) in _RUN_OPTIONS.items():
        env = os.environ.get(f"TRIO_LLM_{name.upper()}")
        if env is not None and name != "keys":  # keys come from --keys-env, never this
            try:
                options[name] = convert(env)
            except ValueError:
                raise ConfigurationError(
                    f"environment variable TRIO_LLM_{name.upper()}={env!r} is not a valid "
                    f"{convert.__name__}"
                ) from None
    for name in _RUN_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    for name in ("rpm", "tpm", "budget", "deadline", "timeout"):
        value = options[name]
        if value is not None and not float(value) > 0:
            raise ConfigurationError(f"--{name.replace('_', '-')} must be positive, got {value}")
    for name in ("concurrency", "max_attempts"):
        if int(options[name]) < 1:
            raise ConfigurationError(f"--{name.replace('_', '-')} must be at least 1")
    return options


def _run(args: argparse.Namespace) -> int:
    options = _merged_run_options(args)
    namespace = argparse.Namespace(**options)
    keys = _keys_from(namespace)
    console = Console(stderr=True)
    summary = RunSummary()
    consumers: list[EventConsumer] = [summary]
    log_file = None
    if options["log_json"]:
        log_file = Path(options["log_json"]).open("a", encoding="utf-8")  # noqa: SIM115
        consumers.append(_json_log(log_file))
    engine = Engine(
        provider=OpenAICompatible(base_url=options["base_url"], model=options["model"]),
        keys=keys,
        limits=Limits(rpm=options["rpm"], tpm=options["tpm"]),
        concurrency=int(options["concurrency"]),
        timeout=float(options["timeout"]),
        retry=RetryPolicy(attempts=int(options["max_attempts"])),
        keep_raw=True,
        consumers=consumers,
        prices=None if options["prices"] is None else PriceTable.load(options["prices"]),
    )
    if (
        str(args.output) != "-"
        and str(args.input) != "-"
        and (Path(args.output).resolve() == Path(args.input).resolve())
    ):
        raise ConfigurationError("OUTPUT must not be the INPUT file")

    async def main(_: trio.CancelScope) -> Any:
        async with Progress(summary, console=console, enabled=not args.no_progress):
            return await run_file(
                engine,
                args.input,
                args.output,
                failed_path=options["failed"],
                deadline=options["deadline"],
                budget_usd=options["budget"],
            )

    try:
        report, interrupted = _run_with_interrupts(main)
    finally:
        if log_file is not None:
            log_file.close()
    console.print(render_summary_table(summary.snapshot(), title="trio-llm run"))
    if report is not None:
        console.print(
            f"read {report.read} lines: {report.skipped} already done, {report.succeeded} "
            f"succeeded, {report.failed} failed, {report.invalid} invalid, "
            f"{report.duplicates} duplicate ids",
            highlight=False,
        )
        if report.stopped:
            console.print(
                f"stopped early ({report.stopped}): rerun the same command to resume",
                highlight=False,
            )
    if interrupted:
        console.print("interrupted: rerun the same command to resume", highlight=False)
        return EXIT_INTERRUPTED
    return EXIT_OK if report is not None and report.all_succeeded else EXIT_FAILED_ITEMS


def main(argv: Sequence[str] | None = None) -> int:
    """The ``trio-llm`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "mock-server":
        from .testing import mock_server_main

        return mock_server_main(argv[1:])
    args = _parser().parse_args(argv)
    _configure_structlog()
    try:
        if args.command == "demo":
            return _demo(args)
        return _run(args)
    except TrioLLMError as exc:
        print(f"trio-llm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except json.JSONDecodeError as exc:
        print(f"trio-llm: error: {args.output}: not a JSONL file ({exc})", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
