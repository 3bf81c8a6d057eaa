"""Label a JSONL dataset with a system prompt (sentiment: positive / negative / neutral).

Reads ``{"id": ..., "text": ...}`` lines, sends each text with a system prompt asking for one
label, and writes ``{"id", "text", "label"}`` lines to an output JSONL beside the input
(``reviews.jsonl`` -> ``reviews.labeled.jsonl``) as the results finish: ``engine.stream``
inside ``async with engine``, so the output grows while the batch runs and a line's place in
the file is its completion order, not its input order (the ``id`` ties it to its input).

The input is read lazily and only the texts of requests in flight are held in memory (plus
the ids seen so far, to skip a repeated id), so a large file streams through in little memory.

A reply is parsed leniently (``"Positive."`` -> ``positive``); a reply naming no label, or
more than one, is written with ``"label": null`` and counted as unparseable. Failed requests
get ``"label": null`` and an ``"error"``.

On the built-in mock server (the default: no key, no network) the replies are placeholders
(``mock-3f2a... alpha bravo``) rather than labels, so every label comes out unparseable: the
run shows the plumbing (streaming, ids, the output file), not a classifier. Point it at a real
model for real labels. With no input file it writes a small sample dataset to a temporary
directory first.

    python examples/classify_jsonl.py                          # sample data, mock server
    python examples/classify_jsonl.py reviews.jsonl -o out.jsonl
    OPENAI_API_KEY=sk-... python examples/classify_jsonl.py reviews.jsonl \\
        --base-url https://api.openai.com/v1 --keys-env OPENAI_API_KEY \\
        --model gpt-4o-mini --rpm 500
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

import trio_llm
from trio_llm.testing import MockServerConfig, serve_mock

LABELS = ("positive", "negative", "neutral")

SYSTEM_PROMPT = (
    "You label the sentiment of product reviews. Reply with exactly one word: "
    "positive, negative or neutral."
)

_WORD = re.compile(r"[a-z]+")

_SAMPLE_TEMPLATES = (
    "I love this {thing}, it works perfectly.",
    "The {thing} broke after two days. Very disappointed.",
    "The {thing} arrived on Tuesday in a brown box.",
    "Best {thing} I have bought in years!",
    "Terrible {thing}: noisy, slow and overpriced.",
    "It is a {thing}. It does what a {thing} does.",
)
_SAMPLE_THINGS = ("kettle", "lamp", "backpack", "keyboard", "umbrella", "blender", "chair")


@attrs.frozen(kw_only=True)
class ClassifyReport:
    """What one labelling run did.

    Attributes:
        input_path: the JSONL that was read.
        output_path: the JSONL that was written (one line per input line).
        total: input lines.
        labels: how many lines got each label.
        unparseable: replies that named no label (or more than one).
        failed: requests that failed for good (rate limits, errors...).
        wall_s: seconds for the whole run.
        mock: whether the built-in mock server answered (its labels are placeholders).
    """

    input_path: Path
    output_path: Path
    total: int
    labels: dict[str, int]
    unparseable: int
    failed: int
    wall_s: float
    mock: bool = False


def parse_label(reply: str) -> str | None:
    """The one label a reply names (any case, any punctuation), or ``None``."""
    found = {word for word in _WORD.findall(reply.lower()) if word in LABELS}
    return found.pop() if len(found) == 1 else None


def write_sample(path: Path, n: int) -> Path:
    """Write ``n`` made-up reviews as ``{"id", "text"}`` lines to ``path``."""
    with path.open("w", encoding="utf-8") as file:
        for i in range(n):
            template = _SAMPLE_TEMPLATES[i % len(_SAMPLE_TEMPLATES)]
            thing = _SAMPLE_THINGS[i % len(_SAMPLE_THINGS)]
            line = {"id": f"review-{i + 1}", "text": template.format(thing=thing)}
            file.write(json.dumps(line) + "\n")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("input", nargs="?", type=Path, help='JSONL of {"id", "text"} lines')
    parser.add_argument("-o", "--output", type=Path, help="default: INPUT.labeled.jsonl")
    parser.add_argument("--n", type=int, default=60, help="sample size without INPUT (60)")
    parser.add_argument("--sample-dir", type=Path, help="where the sample goes (a temp dir)")
    parser.add_argument("--rpm", type=float, default=None, help="requests/min per key")
    parser.add_argument("--tpm", type=float, default=None, help="tokens/min per key")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt (60)")
    real = parser.add_argument_group("a real endpoint (default: the built-in mock)")
    real.add_argument("--base-url", help="an OpenAI-compatible base URL, e.g. .../v1")
    real.add_argument("--keys-env", default="OPENAI_API_KEY", help="env var with k1,k2,...")
    real.add_argument("--model", default=None, help="model name (gpt-4o-mini)")
    mock = parser.add_argument_group("the mock server")
    mock.add_argument("--latency", type=float, default=0.1, help="mean latency, s (0.1)")
    return parser


async def _requests(
    path: Path, texts: dict[str, str], problems: list[str]
) -> AsyncIterator[trio_llm.Request]:
    """One request per input line, read lazily; remembers each text until its result lands."""
    seen: set[str] = set()  # every id so far: ids are small, texts can be large
    async with await trio.open_file(path, encoding="utf-8") as file:
        line_no = 0
        async for line in file:
            line_no += 1
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                item_id, text = str(item["id"]), item["text"]
                if not isinstance(text, str):
                    raise TypeError("text is not a string")
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"{path}:{line_no}: skipped ({exc.__class__.__name__}: {exc})")
                continue
            if item_id in seen:
                problems.append(f"{path}:{line_no}: skipped (duplicate id {item_id!r})")
                continue
            seen.add(item_id)
            texts[item_id] = text
            yield trio_llm.Request.from_messages(
                [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}],
                id=item_id,
                max_tokens=5,
                temperature=0,
            )


async def label_file(
    engine: trio_llm.Engine, input_path: Path, output_path: Path
) -> ClassifyReport:
    """Stream every line of ``input_path`` through ``engine``; write labels as they finish."""
    texts: dict[str, str] = {}  # id -> text, for requests in flight only
    problems: list[str] = []
    labels: collections.Counter[str] = collections.Counter()
    unparseable = failed = total = 0
    started = time.perf_counter()
    async with engine, await trio.open_file(output_path, "w", encoding="utf-8") as out:
        async for result in engine.stream(_requests(input_path, texts, problems)):
            assert result.id is not None  # every request above carries its id
            line: dict[str, Any] = {"id": result.id, "text": texts.pop(result.id), "label": None}
            total += 1
            if not result.ok:
                failed += 1
                assert result.error is not None
                line["error"] = {"kind": result.error.kind.value, "message": result.error.message}
            else:
                label = parse_label(result.text or "")
                line["label"] = label
                if label is None:
                    unparseable += 1
                else:
                    labels[label] += 1
            await out.write(json.dumps(line) + "\n")
    for problem in problems:
        print(problem, file=sys.stderr)
    return ClassifyReport(
        input_path=input_path,
        output_path=output_path,
        total=total,
        labels=dict(labels),
        unparseable=unparseable,
        failed=failed,
        wall_s=time.perf_counter() - started,
    )


async def run(args: argparse.Namespace) -> ClassifyReport:
    """Label ``args.input`` (or a fresh sample) on the mock, or on ``--base-url``."""
    input_path: Path = args.input
    if input_path is None:
        directory = args.sample_dir or Path(tempfile.mkdtemp(prefix="trio-llm-classify-"))
        directory.mkdir(parents=True, exist_ok=True)
        input_path = write_sample(directory / "reviews.jsonl", args.n)
    output_path: Path = args.output or input_path.with_name(f"{input_path.stem}.labeled.jsonl")

    def engine_for(
        base_url: str, model: str, keys: trio_llm.KeyPool | list[str]
    ) -> trio_llm.Engine:
        return trio_llm.Engine(
            provider=trio_llm.OpenAICompatible(base_url=base_url, model=model),
            keys=keys,
            limits=trio_llm.Limits(rpm=args.rpm, tpm=args.tpm),
            concurrency=args.concurrency,
            timeout=args.timeout,
        )

    if args.base_url is not None:
        keys = trio_llm.KeyPool.from_env(args.keys_env)
        engine = engine_for(args.base_url, args.model or "gpt-4o-mini", keys)
        return await label_file(engine, input_path, output_path)
    config = MockServerConfig(
        rpm=None if args.rpm is None else int(args.rpm),
        tpm=None if args.tpm is None else int(args.tpm),
        latency=args.latency,
    )
    async with serve_mock(config) as server:
        engine = engine_for(server.base_url, args.model or config.model, ["mock-key"])
        report = await label_file(engine, input_path, output_path)
    return attrs.evolve(report, mock=True)


def render(report: ClassifyReport) -> str:
    """A few lines: where things are, and how the labels came out."""
    counts = ", ".join(f"{label} {report.labels.get(label, 0)}" for label in LABELS)
    return "\n".join(
        [
            f"input        {report.input_path}",
            f"output       {report.output_path}",
            f"lines        {report.total} in {report.wall_s:.2f} s",
            f"labels       {counts}",
            f"unparseable  {report.unparseable}"
            + ("  (all of them on the mock: its replies are placeholders)" if report.mock else ""),
            f"failed       {report.failed}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> ClassifyReport:
    """Parse ``argv``, label the file, print a summary, return the report."""
    args = _parser().parse_args(argv)
    report = trio.run(run, args)
    print(render(report))
    return report


if __name__ == "__main__":
    sys.exit(0 if main().failed == 0 else 1)
