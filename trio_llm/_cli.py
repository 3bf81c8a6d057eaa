"""The command line: ``trio-llm demo``, ``trio-llm run``, ``trio-llm mock-server``.

Options of ``run`` come from, in rising precedence: built-in defaults, a TOML file
(``--config``; keys named like the long flags, ``base_url = "..."``), environment variables
(``TRIO_LLM_BASE_URL``, ``TRIO_LLM_RPM``...), and the flags themselves.

Exit codes: 0 every item succeeded; 1 some failed; 2 bad usage or configuration; 130
interrupted (Ctrl-C: in-flight requests are cancelled, finished results are kept, the summary
is printed; a second Ctrl-C exits at once); 141 the reader of ``-o -`` went away (a broken
pipe, as in ``| head -1``: the run stops quietly).

Everyday mistakes (a wrong path, a bad option, a file that is not ours) end with exit code 2
and one line saying what is wrong and where, never a traceback.

Start-up imports only what a command needs: ``--help`` loads no engine, and ``run`` never
loads the mock server, hypercorn or the arithmetic demo.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TextIO, TypeVar

from ._gc import collect_less_often
from ._version import __version__

if TYPE_CHECKING:
    import trio

    from ._events import EventConsumer
    from ._keys import KeyPool
    from ._sinks import FileRunReport
    from ._summary import SummarySnapshot

__all__ = ["main"]

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED_ITEMS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
#: How many invalid-line / duplicate-id messages are printed (the counts are exact).
PROBLEMS_SHOWN: Final = 5

RUN_EXAMPLES = """\
examples:
  trio-llm run prompts.jsonl -o answers.jsonl --base-url https://api.openai.com/v1 \\
      --model gpt-4o-mini --keys-env OPENAI_API_KEY --rpm 500 --tpm 200000
  trio-llm run batch_input.jsonl -o batch_output.jsonl --failed failed.jsonl   # Batch API lines
  trio-llm run failed.jsonl -o batch_output.jsonl                              # retry the failures
  cat prompts.jsonl | trio-llm run - -o - --config trio-llm.toml > answers.jsonl

input lines: {"id": "q1", "prompt": "..."} or {"id": "q1", "messages": [...]} or OpenAI Batch
API lines {"custom_id": ..., "method": "POST", "url": "/v1/chat/completions", "body": {...}}.
Rerunning the same command resumes: ids already answered in OUTPUT are skipped, failures
that may pass another time run again. OUTPUT lines record a hash of their input: a rerun
whose INPUT changed under an answered id is refused unless --force.
"""

DEMO_EXAMPLES = """\
examples:
  trio-llm demo                                  # 1,000 prompts, 3 mock keys x 1,200 rpm
  trio-llm demo --n 200 --key-count 1 --rpm 600  # one key: the run takes 20 s (the floor)
  trio-llm demo --latency 2 --concurrency 500    # slow answers: many requests in flight
  OPENAI_API_KEY=sk-... trio-llm demo --base-url https://api.openai.com/v1 --n 20 --rpm 60

The summary compares the wall time with the rate-limit floor N / (keys x rpm / 60): the
shortest time the limits allow. The mock server runs in this process: no key, no network.
"""

MOCK_EXAMPLES = """\
examples:
  trio-llm mock-server --port 8000 --rpm 600 --latency 0.2
  trio-llm mock-server --port 8000 --keys k1,k2 --rpm 60 --tpm 20000 --error-rate 0.05
  trio-llm mock-server --port 0            # a free port: the first line printed names it

then, in another shell:
  OPENAI_API_KEY=k1,k2 trio-llm run prompts.jsonl -o answers.jsonl \\
      --base-url http://127.0.0.1:8000/v1 --model mock-gpt --rpm 60

A prompt containing [[fault:500*2]] fails twice with HTTP 500, then succeeds; [[fault:hang]]
never answers; [[fault:context_length]] fails for good.
"""


# (flag name, type, default) for options that may also come from --config and the environment.
# The type is what a value must be: TOML values are checked against it (`rpm = true` and
# `concurrency = 1.5` are errors), environment variables are converted with it.
_RUN_OPTIONS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "base_url": (str, "https://api.openai.com/v1"),
    "model": (str, "gpt-4o-mini"),
    "keys": (str, None),
    "keys_env": (str, "OPENAI_API_KEY"),
    # Issue 11: which API the endpoint speaks.
    "provider": (str, None),
    "api_version": (str, "2024-10-21"),
    "rpm": (float, None),
    "tpm": (float, None),
    "concurrency": (int, 64),
    "timeout": (float, 600.0),
    "idle_timeout": (float, None),
    "max_attempts": (int, 8),
    "budget": (float, None),
    "deadline": (float, None),
    "failed": (str, None),
    "prices": (str, None),
    "log_json": (str, None),
    "cache": (str, None),
    "cache_ttl": (float, None),
    "cache_max_mb": (float, None),
    "redis": (str, None),
    "lease": (float, 10.0),
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
        "--timeout",
        type=float,
        default=default("timeout"),
        help="seconds per attempt (default 600; keep it above any time a proxy may hold a request)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        metavar="S",
        help='a streamed answer ("stream": true) that sends nothing for S seconds fails as a '
        "timeout and is retried (default: only --timeout)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
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
        epilog=DEMO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--n", type=_at_least(1, "--n"), default=1000, help="number of prompts (default 1000)"
    )
    demo.add_argument(
        "--key-count", type=_at_least(1, "--key-count"), default=3, help="mock keys (default 3)"
    )
    demo.add_argument(
        "--latency",
        type=_non_negative("--latency"),
        default=0.2,
        help="mock latency, s (default 0.2)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the prompts and the mock")
    _add_endpoint_flags(demo, defaults=False)
    demo.set_defaults(concurrency=64, timeout=600.0)

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
        "--provider",
        choices=sorted(PROVIDERS),
        default=None,
        help="the API of --base-url: openai (chat completions, embeddings), anthropic "
        "(Messages: x-api-key, keys from ANTHROPIC_API_KEY) or azure (deployment URLs, "
        "api-key header, --model is the deployment, keys from AZURE_OPENAI_API_KEY); "
        "default openai, or anthropic for Batch API lines with url /v1/messages",
    )
    run.add_argument(
        "--api-version",
        default=None,
        metavar="VERSION",
        help="Azure OpenAI's api-version (default 2024-10-21)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="OUTPUT must exist already (a guard against a mistyped -o starting afresh); "
        "without it a run resumes an existing OUTPUT all the same",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="take over an OUTPUT that is not trio-llm's (its lines are removed), and send "
        "again the items whose input changed since their answer (the old answers are replaced)",
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
    run.add_argument(
        "--fallback-model",
        action="append",
        default=None,
        metavar="MODEL",
        help="after --model, try this model for what it could not do (a context too long, "
        "a model not served, failures once its retries are spent); repeat for a chain",
    )
    run.add_argument("--log-json", default=None, help="write every event as JSON lines here")
    run.add_argument(
        "--cache",
        default=None,
        metavar="PATH",
        help="answer identical requests from this SQLite file (shared by runs), and keep new "
        "answers there; only requests with temperature 0 unless --cache-sampled",
    )
    run.add_argument(
        "--cache-ttl", type=float, default=None, metavar="S", help="cached answers expire after S s"
    )
    run.add_argument(
        "--cache-max-mb",
        type=float,
        default=None,
        metavar="MB",
        help="keep at most MB megabytes of cached answers (the oldest go first)",
    )
    run.add_argument(
        "--batch-api",
        nargs="?",
        const="on",
        default=None,
        choices=["on", "auto"],
        metavar="auto",
        help="send INPUT through the provider's Batch API at half price (answers within 24 h; "
        "a rerun collects batches already submitted); 'auto': only for inputs of 1,000 items "
        "or more with no --deadline under 24 h",
    )
    run.add_argument(
        "--batch-size",
        type=_at_least(1, "--batch-size"),
        default=None,
        metavar="N",
        help="requests per batch (default the provider's most: OpenAI 50,000, Anthropic 100,000)",
    )
    run.add_argument(
        "--batch-poll",
        type=float,
        default=30.0,
        metavar="S",
        help="first wait between batch status reads, growing 1.5 x up to 300 s (default 30)",
    )
    run.add_argument(
        "--cache-sampled",
        action="store_true",
        help="cache requests that sample too (temperature > 0 or unset)",
    )
    run.add_argument(
        "--metrics-port",
        default=None,
        type=_metrics_address,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics while the run lasts "
        "(every interface unless HOST is given; 0 picks a free port; needs trio-llm[metrics])",
    )
    split = run.add_argument_group(
        "one run over many processes or hosts",
        "--processes N: N worker processes on this host, limits kept by this one. "
        "--redis URL: limits shared with every run on the same keys through Redis; with "
        "--workers N this command coordinates (reads INPUT, writes OUTPUT) and starts N "
        "workers; the same command with --join on other hosts adds workers to it "
        "(the run is named after OUTPUT's file name). --concurrency is per worker.",
    )
    split.add_argument(
        "--processes", type=int, default=None, help="worker processes on this host (default 1)"
    )
    split.add_argument("--redis", default=None, help="redis://HOST:PORT/DB for shared limits")
    split.add_argument(
        "--workers", type=int, default=None, help="with --redis: worker processes to start here"
    )
    split.add_argument(
        "--join",
        action="store_true",
        help="with --redis: only work for the run a coordinator of the same OUTPUT name runs",
    )
    split.add_argument(
        "--lease",
        type=float,
        default=None,
        help="seconds before the items of a worker that went silent go to another (10)",
    )
    # How a worker process started by its coordinator is told what it is (not for users).
    split.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)
    split.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)

    mock = commands.add_parser(
        "mock-server",
        help="the built-in OpenAI-compatible mock server",
        add_help=False,
    )
    mock.add_argument("args", nargs=argparse.REMAINDER)
    return parser, {"demo": demo, "run": run}


def _at_least(low: int, flag: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be a whole number, got {text!r}"
            ) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{flag} must be at least {low}, got {value}")
        return value

    return convert


def _metrics_address(text: str) -> tuple[str, int]:
    """``--metrics-port``: ``PORT`` or ``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not (port.isdigit() and 0 <= int(port) <= 65535):
        raise argparse.ArgumentTypeError(f"must be a port 0-65535 or HOST:PORT, got {text!r}")
    return host, int(port)


def _start_metrics(address: tuple[str, int], consumer: Any) -> str:
    """Serve ``consumer``'s registry; the URL, or ``ConfigurationError`` in one line."""
    from ._errors import ConfigurationError
    from ._metrics import serve_metrics

    host, port = address
    try:
        bound_host, bound_port = serve_metrics(port, host, registry=consumer.registry)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is in use (another program is listening there); pick another"
        raise ConfigurationError(
            f"--metrics-port {host + ':' if host else ''}{port}: cannot listen: {reason}"
        ) from None
    shown = "127.0.0.1" if bound_host in ("0.0.0.0", "::") else bound_host  # noqa: S104
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{bound_port}/metrics"


def _non_negative(flag: str) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if not (value >= 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{flag} must be 0 or more, got {text}")
        return value

    return convert


def _configure_structlog() -> None:
    """The CLI owns the process: events reach the user through the progress display, the
    summary and --log-json, so structlog itself prints nothing."""
    import structlog

    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def _json_log(file: TextIO) -> EventConsumer:
    import structlog

    renderer = structlog.processors.JSONRenderer()

    def write(_logger: Any, method: str, event_dict: Any) -> Any:
        line = renderer(None, method, {"ts": time.time(), "level": method, **event_dict})
        file.write(f"{line!s}\n")
        return event_dict

    return write


#: The APIs ``--provider`` names, and the defaults a run takes for each when not given.
PROVIDERS: dict[str, dict[str, str]] = {
    "openai": {},
    "anthropic": {
        "base_url": "https://api.anthropic.com/v1",
        "model": "claude-haiku-4-5",
        "keys_env": "ANTHROPIC_API_KEY",
    },
    "azure": {"keys_env": "AZURE_OPENAI_API_KEY"},
}


def _resolve_provider(options: dict[str, Any], api: str | None) -> None:
    """Settle ``options["provider"]`` (the flag, else what the input's url says, else openai)
    and the provider's defaults for what was left at OpenAI's."""
    from ._convert import MESSAGES_URL
    from ._errors import ConfigurationError

    provider = options.get("provider") or ("anthropic" if api == MESSAGES_URL else "openai")
    if provider not in PROVIDERS:
        raise ConfigurationError(
            f"--provider must be one of {', '.join(PROVIDERS)}, got {provider!r}"
        )
    options["provider"] = provider
    for name, value in PROVIDERS[provider].items():
        if options[name] == _RUN_OPTIONS[name][1]:
            options[name] = value
    if provider == "azure" and options["base_url"] == _RUN_OPTIONS["base_url"][1]:
        raise ConfigurationError(
            "--provider azure needs the resource's endpoint as --base-url\n"
            "HINT: --provider azure --base-url https://my-resource.openai.azure.com "
            "--model my-deployment --api-version 2024-10-21"
        )


def _input_api(path: str) -> str | None:
    """Which API a file run speaks, from its first line (``embeddings``, ``messages``),
    ``None`` for chat completions (or stdin, which cannot be peeked at)."""
    from ._convert import input_endpoint

    if path == "-":
        return None
    try:
        with open(path, "rb") as file:
            for line in file:
                if line.strip():
                    return input_endpoint(line)
    except OSError:
        return None  # the run itself reports an unreadable file
    return None


def _provider(
    api: str | None, base_url: str, model: str, options: dict[str, Any] | None = None
) -> Any:
    """The provider for the run's API and ``--provider``: embeddings for embeddings lines
    (``--model`` is then the embedding model, ``text-embedding-3-small`` by default),
    Anthropic's Messages, Azure OpenAI deployments, the Responses API for
    ``/v1/responses`` lines, else chat completions."""
    from ._convert import EMBEDDINGS_URL, RESPONSES_URL
    from ._providers import (
        AnthropicMessages,
        AzureOpenAI,
        OpenAICompatible,
        OpenAIEmbeddings,
        OpenAIResponses,
    )

    options = options or {}
    provider = options.get("provider") or "openai"
    embeds = api == EMBEDDINGS_URL
    if embeds and model == _RUN_OPTIONS["model"][1]:  # the chat default: not an embedder
        model = "text-embedding-3-small"
    if provider == "anthropic":
        return AnthropicMessages(base_url=base_url, model=model)
    if provider == "azure":
        version = options.get("api_version") or _RUN_OPTIONS["api_version"][1]
        return AzureOpenAI(base_url, model, api_version=version, embeddings=embeds)
    if embeds:
        return OpenAIEmbeddings(base_url=base_url, model=model)
    if api == RESPONSES_URL:
        return OpenAIResponses(base_url=base_url, model=model)
    return OpenAICompatible(base_url=base_url, model=model)


def _routes(
    options: dict[str, Any], fallback_models: list[str], keys: KeyPool, api: str | None = None
) -> list[Any]:
    """The fallback chain of a run: ``--model`` then each ``--fallback-model`` on the same
    endpoint and keys, or the ``[[routes]]`` of the config file (each its own endpoint)."""
    from ._config import Limits
    from ._keys import KeyPool as Pool
    from ._routes import Route

    if options.get("routes"):
        chain = []
        for table in options["routes"]:
            provider = _provider(api, table["base_url"], table["model"], options)
            route_keys = Pool.from_env(table["keys_env"]) if "keys_env" in table else keys
            limits = Limits(rpm=table.get("rpm"), tpm=table.get("tpm"))
            name = table.get("name") or table["model"]
            chain.append(Route(provider=provider, keys=route_keys, limits=limits, name=name))
        return chain
    if not fallback_models:
        return []
    provider = _provider(api, options["base_url"], options["model"], options)
    models = [options["model"], *fallback_models]
    return [Route(provider=provider, keys=keys, model=model, name=model) for model in models]


def _keys_from(args: argparse.Namespace) -> KeyPool:
    from ._errors import ConfigurationError
    from ._keys import KeyPool

    if args.keys is not None:
        keys = [k.strip() for k in args.keys.split(",") if k.strip()]
        if not keys:
            raise ConfigurationError(
                f"--keys {args.keys!r} holds no key\nHINT: --keys sk-a,sk-b (comma-separated), "
                "or --keys-env VAR to read them from an environment variable"
            )
        return KeyPool(keys)
    name = args.keys_env or "OPENAI_API_KEY"
    if not [k for k in os.environ.get(name, "").split(",") if k.strip()]:
        raise ConfigurationError(
            f"environment variable {name} is empty or unset\nHINT: export {name}=sk-...,sk-... "
            "(comma-separated), or --keys-env VAR to read another variable"
        )
    return KeyPool.from_env(name)


def _run_with_interrupts(main: Callable[[trio.CancelScope], Awaitable[T]]) -> tuple[T | None, bool]:
    """Run ``main`` under trio; the first Ctrl-C cancels it (the caller prints what finished),
    the second exits at once. Returns (result, interrupted)."""
    import trio

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
    except KeyboardInterrupt:
        # Ctrl-C before the signal watcher was listening (or after it stopped).
        return None, True
    except BaseExceptionGroup as group:
        # The watcher's nursery wraps whatever `main` raised: hand back that one exception, so
        # `main()` reports a ConfigurationError or a bad OUTPUT as a usage error (exit 2).
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, BaseExceptionGroup):
            pipe = leaf.subgroup(lambda exc: isinstance(exc, BrokenPipeError))
            if pipe is not None:
                raise BrokenPipeError(errno.EPIPE, "broken pipe") from None
            raise
        raise leaf from None
    finally:
        if interrupted:
            # From here on (printing the summary) a second Ctrl-C exits at once, quietly.
            signal.signal(signal.SIGINT, _exit_interrupted)


def _exit_interrupted(_signum: int, _frame: object) -> NoReturn:
    os._exit(EXIT_INTERRUPTED)


def _ignore_further_interrupts() -> None:
    """The run is over and the process exits with 130: a Ctrl-C during the interpreter's
    shutdown (which resets Python's own handlers) must not kill it with a different status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ._arithmetic import make_problems, prompt_for, score
    from ._config import Limits
    from ._engine import Engine
    from ._progress import Progress, render_summary_table
    from ._providers import OpenAICompatible
    from ._summary import RunSummary
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
                idle_timeout=args.idle_timeout,
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


def _toml(value: Any) -> str:
    """A value as TOML spells it (``true``, not ``True``)."""
    import json

    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _check_type(name: str, value: Any, where: str) -> Any:
    """A TOML value of the type its option needs (``rpm = true``, ``concurrency = 1.5`` are
    errors, not 1), or ``ConfigurationError`` naming the option and the file."""
    from ._errors import ConfigurationError

    convert = _RUN_OPTIONS[name][0]
    flag = name.replace("_", "-")
    if convert is str:
        if not isinstance(value, str):
            raise ConfigurationError(f"{where}: {flag} must be a string, got {_toml(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a whole number" if convert is int else "a number"
        raise ConfigurationError(f"{where}: {flag} must be {kind}, got {_toml(value)}")
    if convert is int and not isinstance(value, int):
        raise ConfigurationError(f"{where}: {flag} must be a whole number, got {_toml(value)}")
    return value


#: What a ``[[routes]]`` table of the TOML config may say.
_ROUTE_FIELDS = {"base_url", "model", "keys_env", "rpm", "tpm", "name"}


def _check_routes(value: Any, where: str) -> list[dict[str, Any]]:
    """The ``[[routes]]`` tables of a config file: a fallback chain, checked field by field."""
    from ._errors import ConfigurationError

    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value) or not value:
        raise ConfigurationError(
            f"{where}: routes must be [[routes]] tables\nHINT: [[routes]]\n"
            'base_url = "https://api.openai.com/v1"\nmodel = "gpt-4o-mini"'
        )
    routes = []
    for position, table in enumerate(value, start=1):
        unknown = set(table) - _ROUTE_FIELDS
        if unknown:
            raise ConfigurationError(
                f"{where}: routes #{position}: unknown field {sorted(unknown)[0]!r}; "
                f"known: {', '.join(sorted(_ROUTE_FIELDS))}"
            )
        for name in ("base_url", "model"):
            if not isinstance(table.get(name), str):
                raise ConfigurationError(f"{where}: routes #{position}: {name} must be a string")
        for name in ("rpm", "tpm"):
            if name in table:
                _check_type(name, table[name], f"{where}: routes #{position}")
        routes.append(dict(table))
    return routes


def _merged_run_options(args: argparse.Namespace) -> dict[str, Any]:
    """defaults < --config TOML < TRIO_LLM_* environment < flags."""
    import tomllib

    from ._errors import ConfigurationError

    options = {name: default for name, (_, default) in _RUN_OPTIONS.items()}
    if args.config:
        path = Path(args.config)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else exc
            raise ConfigurationError(f"cannot read the config file {path}: {reason}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name == "routes":
                options["routes"] = _check_routes(value, str(path))
                continue
            if name not in _RUN_OPTIONS:
                raise ConfigurationError(
                    f"{path}: unknown option {key!r}; known: {', '.join(sorted(_RUN_OPTIONS))}"
                )
            options[name] = _check_type(name, value, str(path))
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
    for name in (
        "rpm",
        "tpm",
        "budget",
        "deadline",
        "timeout",
        "idle_timeout",
        "cache_ttl",
        "cache_max_mb",
        "lease",
    ):
        value = options[name]
        if value is not None and not (float(value) > 0 and math.isfinite(float(value))):
            raise ConfigurationError(f"--{name.replace('_', '-')} must be positive, got {value}")
    for name in ("concurrency", "max_attempts"):
        if int(options[name]) < 1:
            raise ConfigurationError(f"--{name.replace('_', '-')} must be at least 1")
    return options


def _open_log(path: str) -> TextIO:
    from ._errors import ConfigurationError

    target = Path(path)
    if target.is_dir():
        raise ConfigurationError(f"cannot write the --log-json file {path}: it is a directory")
    try:
        return target.open("a", encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write the --log-json file {path}: {exc.strerror}"
        ) from None


def _print_problems(report: FileRunReport, print_line: Callable[[str], None]) -> None:
    """Bad input lines and duplicate ids: once, with the count and the first few."""
    counted = [
        (report.invalid, "invalid input line", "written to OUTPUT as invalid_input errors"),
        (report.duplicates, "duplicate id", "not sent"),
    ]
    for count, what, fate in counted:
        if count:
            print_line(f"{count} {what}{'s' if count != 1 else ''} ({fate}):")
    for problem in report.problems:
        print_line(f"  {problem}")
    shown = len(report.problems)
    if report.invalid + report.duplicates > shown:
        print_line(f"  ... and {report.invalid + report.duplicates - shown} more")


def _advice(report: FileRunReport | None, snap: SummarySnapshot, keys_hint: str) -> str | None:
    """What to do after a run that stopped early, or whose keys were refused."""
    if report is not None and snap.keys and all(key.get("dropped") for key in snap.keys):
        dropped = "; ".join(snap.dropped_keys) or "no key left"
        return (
            f"every API key was refused ({dropped}): fix the key "
            f"({keys_hint}), then rerun the same command to resume"
        )
    if report is not None and report.stopped:
        return f"stopped early ({report.stopped}): rerun the same command to resume"
    if report is not None and report.kept_failed:
        return (
            f"{report.kept_failed} items failed in an earlier run in a way another try cannot "
            "fix (see their error in OUTPUT); fix their input lines and rerun"
        )
    return None


def _cache_line(cache: Any) -> str:
    """What the response cache did, and why answers were not kept, when that is likely."""
    stats = cache.statistics()
    line = f"cache: {stats.hits} answered from {cache.path}, {stats.stored} stored"
    if stats.sampled:
        line += (
            f", {stats.sampled} not cached because they sample (temperature > 0 or unset; "
            "--cache-sampled caches them too)"
        )
    return line


def _split_mode(args: argparse.Namespace, options: dict[str, Any]) -> str:
    """How this run is split: ``one`` process, ``local`` (--processes), ``redis``
    (--redis --workers: the coordinator), or a worker: ``local-worker``, ``redis-worker``
    (--join); checks that the flags go together."""
    from ._errors import ConfigurationError

    redis = options["redis"]
    if args.worker_fd is not None:
        return "local-worker"
    if args.join and redis is None:
        raise ConfigurationError("--join needs --redis URL (where the coordinator's run is)")
    if args.workers is not None and redis is None:
        raise ConfigurationError(
            "--workers needs --redis URL\nHINT: --processes N splits a run on this host alone"
        )
    if args.workers is not None and args.workers < 1:
        raise ConfigurationError(f"--workers must be at least 1, got {args.workers}")
    if args.processes is not None and args.processes < 1:
        raise ConfigurationError(f"--processes must be at least 1, got {args.processes}")
    if args.processes is not None and args.processes > 1 and redis is not None:
        raise ConfigurationError(
            "--processes keeps the limits in this process; with --redis use --workers N"
        )
    split = args.join or args.workers is not None or (args.processes or 1) > 1
    if split and args.batch_api is not None:
        raise ConfigurationError(
            "--batch-api sends the file from one process (the provider's batches do the work)\n"
            "HINT: drop --processes / --workers / --join, or drop --batch-api"
        )
    if split and options["budget"] is not None:
        raise ConfigurationError(
            "--budget is kept by one process: it cannot be split across workers\n"
            "HINT: drop --budget, or drop --processes / --workers"
        )
    if args.join:
        return "redis-worker"
    if args.workers is not None:
        return "redis"
    return "local" if (args.processes or 1) > 1 else "one"


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """This command as a worker runs it: the same options (so the same engine), no more."""
    return list(args.argv)


def _cache(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    """The response cache ``--cache`` names (each process of a split run opens the file: it is
    safe to share), or ``None``."""
    if not options["cache"]:
        return None
    from ._cache import Cache

    return Cache(
        options["cache"],
        ttl=options["cache_ttl"],
        max_mb=options["cache_max_mb"],
        sampled=args.cache_sampled,
    )


def _engine(
    args: argparse.Namespace,
    options: dict[str, Any],
    keys: KeyPool,
    consumers: list[EventConsumer],
    store: Any = None,
    cache: Any = None,
) -> Any:
    """The engine a run (or each of its workers) sends with."""
    from ._config import Limits, RetryPolicy
    from ._engine import Engine
    from ._pricing import PriceTable
    from ._store import RedisStore

    prices = None if options["prices"] is None else PriceTable.load(options["prices"])
    api = _input_api(str(args.input))
    routes = _routes(options, args.fallback_model or [], keys, api)
    if store is None and options["redis"] is not None:
        store = RedisStore(options["redis"])
    return Engine(
        provider=None if routes else _provider(api, options["base_url"], options["model"], options),
        keys=None if routes else keys,
        routes=routes or None,
        fallback_on=True if routes else None,
        limits=Limits(rpm=options["rpm"], tpm=options["tpm"]),
        concurrency=int(options["concurrency"]),
        timeout=float(options["timeout"]),
        idle_timeout=options["idle_timeout"],
        retry=RetryPolicy(attempts=int(options["max_attempts"])),
        keep_raw=True,
        consumers=consumers,
        prices=prices,
        limits_store=store,
        cache=cache,
    )


def _worker(args: argparse.Namespace, options: dict[str, Any], keys: KeyPool, mode: str) -> int:
    """A worker process: sends what its coordinator hands out, until the run is over."""
    from ._workers import local_worker, redis_worker

    def make(store: Any) -> Any:
        return _engine(args, options, keys, [], store, _cache(args, options))

    if mode == "local-worker":
        return local_worker(args.worker_fd, make)
    return redis_worker(
        options["redis"],
        Path(args.output).name,
        make,
        workers=args.workers or 1,
        lease_s=float(options["lease"]),
        argv=_worker_argv(args),
        exit_with_parent=args.exit_with_parent,
    )


def _run(args: argparse.Namespace) -> int:
    from ._errors import ConfigurationError

    options = _merged_run_options(args)
    api = _input_api(str(args.input))
    _resolve_provider(options, api)
    namespace = argparse.Namespace(**options)
    keys = _keys_from(namespace)
    if (
        str(args.output) != "-"
        and str(args.input) != "-"
        and (Path(args.output).resolve() == Path(args.input).resolve())
    ):
        raise ConfigurationError("OUTPUT must not be the INPUT file")
    if args.resume and str(args.output) != "-" and not Path(args.output).exists():
        raise ConfigurationError(
            f"--resume: OUTPUT {args.output} does not exist; nothing to resume\n"
            "HINT: check the -o path, or drop --resume to start a new run"
        )

    split = _split_mode(args, options)
    if split in ("local-worker", "redis-worker"):
        return _worker(args, options, keys, split)

    from rich.console import Console

    from ._progress import Progress, render_summary_table
    from ._sinks import run_file
    from ._summary import RunSummary

    offload = None
    if args.batch_api is not None:
        from ._offload import BatchOffload

        if not args.batch_poll > 0:
            raise ConfigurationError(f"--batch-poll must be positive, got {args.batch_poll}")
        offload = BatchOffload(
            auto=args.batch_api == "auto",
            size=args.batch_size,
            poll_s=args.batch_poll,
            max_poll_s=max(300.0, args.batch_poll),
        )
    console = Console(stderr=True)
    summary = RunSummary()
    consumers: list[EventConsumer] = [summary]
    log_file = None if not options["log_json"] else _open_log(options["log_json"])
    if log_file is not None:
        consumers.append(_json_log(log_file))
    metrics = None
    if args.metrics_port is not None:
        try:
            from ._metrics import PrometheusConsumer
        except ImportError:
            raise ConfigurationError(
                "--metrics-port needs prometheus-client\nHINT: pip install 'trio-llm[metrics]'"
            ) from None
        metrics = PrometheusConsumer()
        consumers.append(metrics)
    cache = _cache(args, options)
    try:
        engine = _engine(args, options, keys, consumers, cache=cache)
        if metrics is not None:
            console.print(f"metrics on {_start_metrics(args.metrics_port, metrics)}")
    except BaseException:
        if log_file is not None:
            log_file.close()
        if cache is not None:
            cache.close()
        raise

    async def main(_: trio.CancelScope) -> Any:
        from ._workers import coordinate

        async with (
            Progress(summary, console=console, enabled=not args.no_progress),
            coordinate(
                split,
                engine,
                {**options, "processes": args.processes, "workers": args.workers},
                _worker_argv(args),
                output=args.output,
            ) as source,
        ):
            return await run_file(
                source,
                args.input,
                args.output,
                failed_path=options["failed"],
                deadline=options["deadline"],
                budget_usd=options["budget"],
                force=args.force,
                summary=summary,
                offload=offload,
            )

    try:
        # An application may pace the garbage collector; the library never does (_gc).
        with collect_less_often(int(options["concurrency"])):
            report, interrupted = _run_with_interrupts(main)
    finally:
        if log_file is not None:
            log_file.close()
        if cache is not None:
            cache.close()

    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    snap = summary.snapshot()
    console.print(render_summary_table(snap, title="trio-llm run"))
    if report is not None:
        say(
            f"read {report.read} lines: {report.skipped} already done, {report.succeeded} "
            f"succeeded, {report.failed} failed, {report.invalid} invalid, "
            f"{report.duplicates} duplicate ids"
            + (f", {report.kept_failed} failed earlier" if report.kept_failed else "")
            + (f", {report.changed} changed and sent again" if report.changed else "")
        )
        _print_problems(report, say)
    if cache is not None:
        say(_cache_line(cache))
    for kind, count in sorted(snap.failed_by_kind.items()):
        example = snap.failure_examples.get(kind)
        if example:
            say(f"{kind} ({count}): {example}")
    keys_hint = "--keys" if options["keys"] else f"the variable {options['keys_env']}"
    advice = _advice(report, snap, keys_hint)
    if interrupted:
        say("interrupted: rerun the same command to resume")
        return EXIT_INTERRUPTED
    if advice is not None:
        say(advice)
    return EXIT_OK if report is not None and report.all_succeeded else EXIT_FAILED_ITEMS


def _mock_server(argv: list[str]) -> int:
    """``trio-llm mock-server``: the mock's own parser, with examples, and no tracebacks."""
    from .testing import _mock_main

    if any(arg in ("-h", "--help") for arg in argv):
        parser = _mock_main._parser()
        parser.epilog = MOCK_EXAMPLES
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.print_help()
        return EXIT_OK
    for flag, value in zip(argv, [*argv[1:], ""], strict=True):
        text = value if flag == "--port" else flag.removeprefix("--port=")
        is_port = flag == "--port" or flag.startswith("--port=")
        if is_port and not (text.isdigit() and 0 <= int(text) <= 65535):
            print(
                f"trio-llm mock-server: error: --port must be 0-65535, got {text!r}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    try:
        return _mock_main.mock_server_main(argv)
    except KeyboardInterrupt:
        return EXIT_OK
    except (OSError, OverflowError, BaseExceptionGroup) as exc:
        leaf = _leaf(exc)
        if not isinstance(leaf, (OSError, OverflowError)):
            raise
        reason = leaf.strerror if isinstance(leaf, OSError) and leaf.strerror else str(leaf)
        if isinstance(leaf, OSError) and leaf.errno == errno.EADDRINUSE:
            reason = "the port is in use (another server is listening there); pick another --port"
        print(f"trio-llm mock-server: error: cannot listen: {reason}", file=sys.stderr)
        return EXIT_USAGE


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _quiet_broken_pipe() -> int:
    """The reader of stdout left: say nothing, and keep Python from complaining at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """The ``trio-llm`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "mock-server":
            return _mock_server(argv[1:])
        parser, commands = _parsers()
        args, unknown = parser.parse_known_args(argv)
        args.argv = argv  # what a worker process of this run is started with
        if unknown:
            # An unknown flag after `run` is a mistake in `run`'s options: show run's usage.
            commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
        from ._errors import TrioLLMError

        _configure_structlog()
        try:
            code = _demo(args) if args.command == "demo" else _run(args)
        except TrioLLMError as exc:
            print(f"trio-llm: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if code == EXIT_INTERRUPTED:
            _ignore_further_interrupts()
        return code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        _ignore_further_interrupts()
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _quiet_broken_pipe()


if __name__ == "__main__":
    raise SystemExit(main())
