"""Every example runs end to end on the built-in mock server, with a small N."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from trio_llm.testing import MockServerConfig, MockServerProcess

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the folder is scripts, not a package)."""
    module_name = f"trio_llm_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before running, so attrs and dataclass-style decorators can find the module.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["arithmetic", "classify_jsonl", "trio_service", "requests_tour"])
def test_example_has_docstring_and_main(name: str) -> None:
    """Each example says how to run it and has a main(argv) entry point."""
    module = _load(name)
    assert module.__doc__ is not None
    assert f"python examples/{name}.py" in module.__doc__
    assert callable(module.main)


@pytest.mark.slow
def test_arithmetic_is_exact_on_the_mock(capsys: pytest.CaptureFixture[str]) -> None:
    """The arithmetic experiment scores 100 % on the mock and reports the rate-limit floor."""
    arithmetic = _load("arithmetic")
    report = arithmetic.main(["--n", "40", "--latency", "0.05"])
    assert report.score.total == 40
    assert report.score.accuracy == 1.0
    assert (report.score.wrong, report.score.format_errors, report.score.failed) == (0, 0, 0)
    assert report.keys == 3
    assert report.floor_s == pytest.approx(40 / (3 * 1200 / 60))
    # The limits hold: the server refused nothing, and the run took at least the time the
    # keys need beyond their first bursts (each starts half full: 10 of its 20 per second).
    assert report.rate_limited == 0
    assert report.wall_s >= (40 - 3 * 10) / (3 * 1200 / 60)
    out = capsys.readouterr().out
    assert "accuracy          100.0% (40/40)" in out
    assert "rate-limit floor" in out


@pytest.mark.slow
def test_classify_writes_one_line_per_input_id(tmp_path: Path) -> None:
    """Classifying a JSONL writes one output line per input id, with its text and a label."""
    classify = _load("classify_jsonl")
    report = classify.main(["--n", "25", "--sample-dir", str(tmp_path), "--latency", "0.02"])
    inputs = [json.loads(line) for line in (tmp_path / "reviews.jsonl").read_text().splitlines()]
    assert report.output_path == tmp_path / "reviews.labeled.jsonl"
    outputs = [json.loads(line) for line in report.output_path.read_text().splitlines()]
    assert sorted(o["id"] for o in outputs) == sorted(i["id"] for i in inputs)
    assert len(outputs) == len(inputs) == report.total == 25
    texts = {i["id"]: i["text"] for i in inputs}
    assert all(o["text"] == texts[o["id"]] and "label" in o for o in outputs)
    # The mock's replies are placeholders, not labels: every one is counted as unparseable.
    assert (report.unparseable, report.failed, report.mock) == (25, 0, True)


@pytest.mark.slow
def test_classify_reads_a_given_file_and_skips_bad_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A given input is labelled beside itself; malformed and duplicate lines are reported."""
    classify = _load("classify_jsonl")
    source = tmp_path / "mine.jsonl"
    lines = [
        {"id": 1, "text": "great"},
        {"id": 2, "text": "awful"},
        {"id": 1, "text": "again"},
        {"text": "no id"},
    ]
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    report = classify.main([str(source), "--latency", "0"])
    assert report.output_path == tmp_path / "mine.labeled.jsonl"
    written = [json.loads(line) for line in report.output_path.read_text().splitlines()]
    assert sorted(o["id"] for o in written) == ["1", "2"]
    err = capsys.readouterr().err
    assert "mine.jsonl:3: skipped (duplicate id '1')" in err
    assert "mine.jsonl:4: skipped (KeyError" in err


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("positive", "positive"),
        ("Negative.", "negative"),
        ("  NEUTRAL\n", "neutral"),
        ("The sentiment is positive!", "positive"),
        ("positive or negative", None),
        ("mock-3f2a9c1b0d4e alpha bravo cedar", None),
        ("", None),
    ],
)
def test_parse_label(reply: str, label: str | None) -> None:
    """A reply yields the one label it names, in any case and punctuation, else None."""
    assert _load("classify_jsonl").parse_label(reply) == label


@pytest.mark.slow
def test_service_self_test_shares_one_engine() -> None:
    """N concurrent /ask calls all succeed through one engine; /stats shows its keys and counts."""
    service = _load("trio_service")
    n = 24
    report = service.main(["--self-test", str(n), "--latency", "0.05"])
    assert (report.n, report.ok, report.statuses) == (n, n, {200: n})
    stats = report.stats
    assert stats["service"]["answered"] == n
    assert stats["service"]["peak_active"] > 1  # handlers overlapped...
    assert (stats["in_flight"], stats["waiting"]) == (0, 0)
    # ...on one engine: its three keys (fingerprints, never the secrets) answered them all.
    key_ids = {key["key_id"] for key in stats["keys"]}
    assert len(key_ids) == 3
    assert report.key_ids == key_ids
    assert "mock-key" not in json.dumps(stats)
    assert stats["service"]["asked"] >= report.stats_mid_run["service"]["answered"] >= n // 2


@pytest.mark.slow
async def test_service_routes_and_errors() -> None:
    """The service answers 400 for a bad body, 404 / 405 for unknown routes, 200 for /ask."""
    import httpx
    import trio

    import trio_llm
    from trio_llm.testing import serve_mock

    service = _load("trio_service")
    with trio.fail_after(20):
        async with serve_mock() as mock:
            engine = trio_llm.Engine(
                provider=trio_llm.OpenAICompatible(base_url=mock.base_url, model="mock-gpt"),
                keys=["k1"],
            )
            async with (
                service.run_service(engine) as running,
                httpx.AsyncClient(base_url=running.url) as client,
            ):
                assert (await client.post("/ask", content=b"not json")).status_code == 400
                assert (await client.post("/ask", json={"prompt": 3})).status_code == 400
                assert (await client.get("/ask")).status_code == 405
                assert (await client.get("/nope")).status_code == 404
                answer = await client.post("/ask", json={"prompt": "What is 6 x 7?"})
                assert answer.status_code == 200
                assert json.loads(answer.json()["text"]) == {"answer": 42}
                assert running.app.counters.answered == 1


ENDPOINT_KEYS = ("example-endpoint-key-1", "example-endpoint-key-2")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A mock in its own process standing in for a real endpoint, with two known keys."""
    with MockServerProcess(MockServerConfig(keys=ENDPOINT_KEYS, rpm=6000)) as server:
        yield server.base_url


@pytest.mark.slow
def test_arithmetic_against_an_endpoint_with_keys_from_env(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--base-url, --keys-env and --model send the experiment there with the env's keys."""
    monkeypatch.setenv("EXAMPLE_KEYS", ",".join(ENDPOINT_KEYS))
    arithmetic = _load("arithmetic")
    argv = ["--n", "20", "--base-url", endpoint, "--keys-env", "EXAMPLE_KEYS", "--model", "m"]
    report = arithmetic.main([*argv, "--rpm", "6000"])
    assert (report.base_url, report.keys, report.score.correct) == (endpoint, 2, 20)
    assert report.floor_s == pytest.approx(20 / (2 * 100))


@pytest.mark.slow
def test_classify_against_an_endpoint_with_keys_from_env(
    endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The classifier runs against --base-url with keys from --keys-env; no mock note."""
    monkeypatch.setenv("EXAMPLE_KEYS", ",".join(ENDPOINT_KEYS))
    classify = _load("classify_jsonl")
    argv = ["--n", "10", "--sample-dir", str(tmp_path), "--base-url", endpoint]
    report = classify.main([*argv, "--keys-env", "EXAMPLE_KEYS"])
    assert (report.total, report.failed, report.mock) == (10, 0, False)


def test_examples_refuse_a_missing_keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without keys in --keys-env a real-endpoint run stops before sending, with a hint."""
    import trio_llm

    monkeypatch.delenv("EXAMPLE_NO_KEYS", raising=False)
    arithmetic = _load("arithmetic")
    argv = ["--base-url", "http://127.0.0.1:9/v1", "--keys-env", "EXAMPLE_NO_KEYS"]
    with pytest.raises(trio_llm.ConfigurationError, match="HINT: export EXAMPLE_NO_KEYS="):
        arithmetic.main(argv)


def test_the_requests_tour_shows_each_kind_of_request(capsys: pytest.CaptureFixture[str]) -> None:
    """Every stop of the README's tour does what it says on the mock: a streamed text with its
    time to first token, a parsed instance, a tool call, packed embeddings, a move down the
    fallback chain, and an interactive call answered while a batch runs."""
    tour = _load("requests_tour")
    seen = tour.main([])
    text, ttft, rate = seen.stream
    assert text
    assert 0.05 <= ttft < 5  # the mock's 50 ms before the first token, and then some
    assert rate > 0
    assert isinstance(seen.parsed, tour.Weather)
    assert seen.tool_calls == ("tool_calls", ["get_weather"])
    assert seen.embeddings == (500, 1)
    assert seen.fallback == (True, "long-context", ("small: context_length",))
    assert seen.interactive[0] is True
    assert seen.batch == 60
    assert "5. fallback: ok=True, answered by 'long-context'" in capsys.readouterr().out
