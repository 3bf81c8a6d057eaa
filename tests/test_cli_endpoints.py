"""trio-llm run for the endpoints of issue 11 (embeddings...), end to end: a real subprocess
against the mock server process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import SECRET, cli, read_jsonl, run_args, write_jsonl

from trio_llm.testing import MockServerConfig, MockServerProcess
from trio_llm.testing._mock_embeddings import embedding_of


@pytest.fixture(scope="module")
def mock() -> Iterator[MockServerProcess]:
    """The mock server, accepting only SECRET, for the whole module."""
    with MockServerProcess(MockServerConfig(keys=(SECRET,), latency=0.05)) as server:
        yield server


def test_embedding_lines_get_vectors_in_few_requests(
    mock: MockServerProcess, tmp_path: Path
) -> None:
    """{"id", "input"} lines get {"id", "embedding", "usage"} lines, packed into few requests."""
    texts = {f"e{i}": f"embed me {i} {tmp_path.name}" for i in range(300)}
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": k, "input": t} for k, t in texts.items()])
    before = mock.stats()
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    after = mock.stats()
    assert done.returncode == 0, done.stderr
    lines = {line["id"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    assert set(lines) == set(texts)
    for key, text in texts.items():
        assert lines[key]["embedding"] == pytest.approx(embedding_of(text))
        assert lines[key]["usage"]["prompt_tokens"] >= 1
        assert "content" not in lines[key]
    assert after.embedded_inputs - before.embedded_inputs == 300
    assert after.total_requests - before.total_requests <= 5
    assert after.by_model.get("text-embedding-3-small", 0) > before.by_model.get(
        "text-embedding-3-small", 0
    )


def test_batch_api_embedding_lines_get_batch_output(
    mock: MockServerProcess, tmp_path: Path
) -> None:
    """Batch API lines with url /v1/embeddings get Batch API output, each its own body."""
    items = [
        {"custom_id": f"b{i}", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "text-embedding-3-large", "input": f"batch {i} {tmp_path.name}",
                  "dimensions": 4}}
        for i in range(20)
    ]  # fmt: skip
    source = write_jsonl(tmp_path / "in.jsonl", items)
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = {line["custom_id"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    for item in items:
        line = lines[item["custom_id"]]
        assert line["error"] is None
        body = line["response"]["body"]
        assert body["model"] == "text-embedding-3-large"
        [entry] = body["data"]
        assert entry["embedding"] == pytest.approx(embedding_of(item["body"]["input"], 4))
    # A rerun finds everything done.
    again = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "20 already done" in again.stderr
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])


def test_tool_calls_are_kept_in_simple_output(mock: MockServerProcess, tmp_path: Path) -> None:
    """A line offering tools gets its tool calls and finish_reason in the output line."""
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    items = [{"id": "t", "prompt": f"look it up {tmp_path.name}", "tools": [tool]}]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [line] = read_jsonl(tmp_path / "out.jsonl")
    assert line["finish_reason"] == "tool_calls"
    [call] = line["tool_calls"]
    assert call["name"] == "lookup"
    assert set(json.loads(call["arguments"])) == {"q"}
    assert call["id"].startswith("call_")
