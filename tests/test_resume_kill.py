"""Resume after `kill -9` of a real `trio-llm run`: nothing lost, nothing twice, and no
request whose result was written is ever sent again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from trio_llm.testing import MockServerConfig, MockServerProcess

KEY = "sk-resume-test-key-0001"
N = 300
CONCURRENCY = 16


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    complete = path.read_bytes().split(b"\n")[:-1]  # a torn last line is not a result
    return [json.loads(line) for line in complete if line.strip()]


def _command(server: MockServerProcess, tmp_path: Path, events: Path) -> list[str]:
    return [
        sys.executable, "-m", "trio_llm", "run", str(tmp_path / "in.jsonl"),
        "-o", str(tmp_path / "out.jsonl"), "--base-url", server.base_url,
        "--model", "mock-gpt", "--keys-env", "RESUME_TEST_KEYS",
        "--concurrency", str(CONCURRENCY), "--no-progress", "--log-json", str(events),
    ]  # fmt: skip


@pytest.mark.slow
def test_kill_9_then_rerun_loses_nothing_and_repays_nothing_written(tmp_path: Path) -> None:
    """Killed twice mid-run and rerun: every id once; written ids are never sent again."""
    with (tmp_path / "in.jsonl").open("w") as file:
        for i in range(N):
            file.write(json.dumps({"id": f"q{i}", "prompt": f"resume test {i}"}) + "\n")
    env = {**os.environ, "RESUME_TEST_KEYS": KEY}
    out = tmp_path / "out.jsonl"
    config = MockServerConfig(keys=(KEY,), latency=0.05)
    with MockServerProcess(config) as server:
        for kill, at_least in enumerate((60, 150)):
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
                _command(server, tmp_path, tmp_path / f"events-{kill}.jsonl"),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while len(_lines(out)) < at_least:
                assert process.poll() is None, "the run ended before it could be killed"
                assert time.monotonic() < deadline
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        written_before = {line["id"] for line in _lines(out)}
        final_events = tmp_path / "events-final.jsonl"
        done = subprocess.run(  # noqa: S603 - our own interpreter and CLI
            _command(server, tmp_path, final_events),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        stats = server.stats()
    assert done.returncode == 0, done.stderr
    ids = [line["id"] for line in _lines(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(N))  # none lost, none twice
    sent_after = {
        event["id"]
        for event in map(json.loads, final_events.read_text().splitlines())
        if event["event"] == "request.sent"
    }
    assert not sent_after & written_before
    # Only requests in flight at a kill were answered twice by the server: at most the
    # concurrency per kill.
    assert stats.duplicate_successes <= 2 * CONCURRENCY
    assert stats.successes == N + stats.duplicate_successes
