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


# --- providers (--provider, inferred from the url) -----------------------------------------


def test_provider_anthropic_speaks_messages(mock: MockServerProcess, tmp_path: Path) -> None:
    """--provider anthropic sends Messages requests; usage and content come back."""
    items = [{"id": "a", "prompt": f"what is 2 + 3? {tmp_path.name}", "max_tokens": 50}]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    before = mock.stats()
    args = run_args(mock, source, tmp_path / "out.jsonl", "--provider", "anthropic")
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [line] = read_jsonl(tmp_path / "out.jsonl")
    assert line["content"] == '{"answer": 5}'
    assert line["finish_reason"] == "stop"
    assert line["usage"]["prompt_tokens"] > 0
    assert line["cost_usd"] is not None  # claude-haiku-4-5 is priced
    after = mock.stats()
    assert (
        after.by_model.get("claude-haiku-4-5", 0) == before.by_model.get("claude-haiku-4-5", 0) + 1
    )


def test_messages_batch_lines_run_on_anthropic(mock: MockServerProcess, tmp_path: Path) -> None:
    """Batch API lines with url /v1/messages pick Anthropic with no flag; the output body is
    Anthropic's message."""
    body = {"model": "claude-sonnet-4-5", "max_tokens": 40,
            "system": "be brief", "messages": [{"role": "user", "content": "6 x 7"}]}  # fmt: skip
    items = [{"custom_id": "m1", "method": "POST", "url": "/v1/messages", "body": body}]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [line] = read_jsonl(tmp_path / "out.jsonl")
    assert line["error"] is None
    answer = line["response"]["body"]
    assert answer["type"] == "message"
    assert answer["content"][0]["text"] == '{"answer": 42}'
    assert answer["model"] == "claude-sonnet-4-5"


def test_provider_azure_uses_deployment_urls(mock: MockServerProcess, tmp_path: Path) -> None:
    """--provider azure sends to the deployment's URL with api-version and an api-key header,
    for chat and for embeddings lines."""
    endpoint = mock.base_url.removesuffix("/v1")
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"id": "c", "prompt": f"1 + 1 {tmp_path.name}"}])
    extra = ("--provider", "azure", "--model", "my-gpt", "--api-version", "2024-10-21")
    args = run_args(mock, chat, tmp_path / "chat-out.jsonl", *extra)
    args[args.index("--base-url") + 1] = endpoint
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [line] = read_jsonl(tmp_path / "chat-out.jsonl")
    assert line["content"] == '{"answer": 2}'
    embeds = write_jsonl(
        tmp_path / "emb.jsonl", [{"id": f"e{i}", "input": f"v{i}"} for i in range(5)]
    )
    args = run_args(mock, embeds, tmp_path / "emb-out.jsonl", *extra)
    args[args.index("--base-url") + 1] = endpoint
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = {x["id"]: x for x in read_jsonl(tmp_path / "emb-out.jsonl")}
    assert lines["e3"]["embedding"] == pytest.approx(embedding_of("v3"))


def test_provider_azure_without_an_endpoint_exits_2(tmp_path: Path) -> None:
    """--provider azure with OpenAI's default URL is refused in one line, exit 2."""
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "c", "prompt": "x"}])
    done = cli("run", str(source), "-o", str(tmp_path / "o.jsonl"), "--provider", "azure",
               "--keys", "k", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "--provider azure needs the resource's endpoint as --base-url" in done.stderr
    assert "Traceback" not in done.stderr
