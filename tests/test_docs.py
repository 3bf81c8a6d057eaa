"""The reference pages in docs/ agree with the code: generated from it, or checked against it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from trio_llm import _cli, _policy
from trio_llm._policy import POLICY, KeyAction, Retry
from trio_llm.testing import _mock_main

ROOT = Path(__file__).resolve().parent.parent
HAND_WRITTEN = [ROOT / "README.md", ROOT / "docs" / "batch-files.md"]


def generator() -> ModuleType:
    """docs/generate.py, imported from its path."""
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["errors.md", "events.md", "cli.md"])
def test_generated_pages_are_what_the_code_says(page: str) -> None:
    """errors.md, events.md and cli.md are exactly what docs/generate.py makes from the code."""
    text = generator().PAGES[page]()
    assert (ROOT / "docs" / page).read_text(encoding="utf-8") == text, (
        "out of date: run python docs/generate.py"
    )


def test_the_policy_docstring_table_is_the_policy() -> None:
    """The table in _policy's docstring (the descriptions errors.md shows) says what POLICY does."""
    lines = (_policy.__doc__ or "").splitlines()
    borders = [i for i, line in enumerate(lines) if line.startswith("=====")]
    spans = [m.span() for m in re.finditer(r"=+", lines[borders[0]])]
    retry = {
        "-": Retry.NO,
        "yes": Retry.BACKOFF,
        "queue": Retry.QUEUE,
        "move": Retry.MOVE,
        "again": Retry.AGAIN,
    }
    key = {"-": KeyAction.NONE, "cool": KeyAction.COOL, "drop": KeyAction.DROP}
    seen = set()
    for line in lines[borders[1] + 1 : borders[2]]:
        cells = [line[a:b].strip() if b < len(line) else line[a:].strip() for a, b in spans]
        cells[-1] = line[spans[-1][0] :].strip()
        kind = cells[0].strip("`")
        rule = POLICY[_policy.ErrorKind(kind)]
        assert retry[cells[2]] is rule.retry, kind
        assert key[cells[3]] is rule.key, kind
        assert (cells[4] == "yes") is rule.breaker, kind
        assert (cells[5] == "yes") is rule.rerun, kind
        assert (cells[6] == "yes") is rule.stops_run, kind
        seen.add(kind)
    assert seen == {kind.value for kind in POLICY}


def _flags() -> set[str]:
    _, commands = _cli._parsers()
    parsers = [*commands.values(), _mock_main._parser()]
    return {flag for p in parsers for action in p._actions for flag in action.option_strings}


@pytest.mark.parametrize("path", HAND_WRITTEN, ids=lambda p: p.name)
def test_hand_written_pages_name_only_real_flags_and_files(path: Path) -> None:
    """Every --flag the README and batch-files.md mention exists; every linked page exists."""
    text = path.read_text(encoding="utf-8")
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", text))
    assert mentioned - _flags() == set()
    for link in re.findall(r"\]\(([^)#:]+)\)", text):
        assert (path.parent / link).exists(), link
