"""Start-up: `trio-llm --help` and `trio-llm run` import only what they need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trio_llm.testing import MockServerConfig, MockServerProcess

KEY = "sk-startup-test-key-0001"


def imported(*args: str, cwd: Path, env: dict[str, str] | None = None) -> set[str]:
    """The modules ``python -m trio_llm ARGS`` imports (from ``-X importtime``)."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-X", "importtime", "-m", "trio_llm", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["--version"]])
def test_help_loads_no_engine_and_no_http_stack(tmp_path: Path, args: list[str]) -> None:
    """--help and --version import neither trio nor httpx, rich, structlog, attrs or hypercorn."""
    modules = imported(*args, cwd=tmp_path)
    heavy = {"trio", "httpx", "rich", "structlog", "attrs", "cattrs", "stamina", "hypercorn"}
    assert modules & heavy == set()
    assert "trio_llm._engine" not in modules


def test_a_run_loads_neither_the_mock_server_nor_its_servers(tmp_path: Path) -> None:
    """A 1-item `trio-llm run` never imports the mock server, hypercorn, uvicorn or the demo."""
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "q0", "prompt": "what is 2 + 2?"}) + "\n")
    env = {**os.environ, "STARTUP_TEST_KEYS": KEY}
    with MockServerProcess(MockServerConfig(keys=(KEY,))) as server:
        modules = imported(
            "run", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url",
            server.base_url, "--keys-env", "STARTUP_TEST_KEYS", "--no-progress",
            cwd=tmp_path, env=env,
        )  # fmt: skip
    assert "trio_llm._engine" in modules  # it did run
    unwanted = {"hypercorn", "uvicorn", "trio_llm.testing", "trio_llm._arithmetic"}
    assert modules & unwanted == set()
    assert json.loads((tmp_path / "out.jsonl").read_text())["content"]
