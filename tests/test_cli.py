"""The trio-llm command line, end to end: a real subprocess against the mock server process.

Every test runs ``python -m trio_llm`` as a child process on the real clock, guarded by a
subprocess timeout. One mock server (keys checked, ~50 ms latency) serves the whole module;
prompts carry a per-test tag, so the mock's per-prompt fault counters never leak between tests.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trio_llm.testing import MockServerConfig, MockServerProcess, MockStats, mock_reply

SECRET = "sk-test-SECRET-abcdef123456"
FINGERPRINT = "sk-…3456"
KEY_ENV = "TRIO_LLM_TEST_KEYS"
TIMEOUT = 30.0
# Listens nowhere: a config value that must lose to a higher-precedence one.
DEAD_URL = "http://127.0.0.1:9/v1"


@pytest.fixture(scope="module")
def mock() -> Iterator[MockServerProcess]:
    """The mock server, accepting only SECRET, for the whole module."""
    config = MockServerConfig(keys=(SECRET,), latency=0.05)
    with MockServerProcess(config) as server:
        yield server


@pytest.fixture
def tag() -> str:
    """A tag that makes this test's prompts unique on the shared mock server."""
    return uuid.uuid4().hex[:10]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: ours minus any TRIO_LLM_* or real keys, plus the test key."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRIO_LLM_") and k not in ("OPENAI_API_KEY", "COLUMNS")
    }
    env[KEY_ENV] = SECRET
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def cli(
    *args: str,
    cwd: Path,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trio_llm ARGS`` to completion."""
    process = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "trio_llm", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        env=env if env is not None else child_env(),
        timeout=TIMEOUT,
        check=False,
    )
    return subprocess.CompletedProcess(
        process.args,
        process.returncode,
        process.stdout.decode("utf-8", "replace"),
        process.stderr.decode("utf-8", "replace"),
    )


def run_args(
    mock: MockServerProcess, source: Path | str, out: Path | str, *extra: str
) -> list[str]:
    """``run SOURCE -o OUT`` against the mock, keys from KEY_ENV, no live display."""
    return [
        "run", str(source), "-o", str(out),
        "--base-url", mock.base_url, "--keys-env", KEY_ENV, "--no-progress", *extra,
    ]  # fmt: skip


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    """Write one JSON object per line."""
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse every line (a torn line fails the test)."""
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def prompts(tag: str, n: int, prefix: str = "q") -> list[dict[str, Any]]:
    """n simple input lines with unique arithmetic prompts."""
    return [{"id": f"{prefix}{i}", "prompt": f"[{tag}] what is {i} + {i}?"} for i in range(n)]


def delta(before: MockStats, after: MockStats) -> dict[str, int]:
    """What the server counted between two snapshots."""
    return {
        "requests": after.total_requests - before.total_requests,
        "successes": after.successes - before.successes,
        "duplicate_successes": after.duplicate_successes - before.duplicate_successes,
    }


# --- input and output shapes ------------------------------------------------------------------


def test_simple_lines_get_content_lines(mock: MockServerProcess, tmp_path: Path, tag: str) -> None:
    """Simple prompt/messages lines produce {id, content, usage, ...} lines; exit code 0."""
    items = [
        *prompts(tag, 3),
        {"id": "m", "messages": [{"role": "user", "content": f"[{tag}] 6 x 7"}], "max_tokens": 20},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = {line["id"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    assert set(lines) == {"q0", "q1", "q2", "m"}
    for i in range(3):
        line = lines[f"q{i}"]
        assert line["content"] == json.dumps({"answer": 2 * i})
        assert line["finish_reason"] == "stop"
        assert set(line["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
        assert line["attempts"] == 1
        assert "error" not in line
    assert lines["m"]["content"] == '{"answer": 42}'
    assert "read 4 lines: 0 already done, 4 succeeded, 0 failed" in done.stderr


def test_batch_api_lines_get_batch_api_output(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """Batch API input gets Batch API output lines: custom_id with response or error."""

    def batch(custom_id: str, text: str) -> dict[str, Any]:
        body = {"model": "mock-gpt", "messages": [{"role": "user", "content": text}]}
        return {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body,
        }

    ok_prompt = f"[{tag}] hello batch"
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [batch("r-ok", ok_prompt), batch("r-bad", f"[{tag}] [[fault:context_length]]")],
    )
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = {line["custom_id"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    assert set(lines) == {"r-ok", "r-bad"}
    ok = lines["r-ok"]
    assert ok["id"].startswith("batch_req_")
    assert ok["error"] is None
    assert ok["response"]["status_code"] == 200
    assert ok["response"]["request_id"] == ok["response"]["body"]["id"]
    assert ok["response"]["body"]["choices"][0]["message"]["content"] == mock_reply(ok_prompt)
    bad = lines["r-bad"]
    assert bad["response"] is None
    assert bad["error"]["code"] == "context_length_exceeded"
    assert bad["error"]["trio_llm"]["kind"] == "context_length"


def test_dash_reads_stdin_and_writes_stdout(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """`run - -o -` reads prompts from stdin and writes only result lines to stdout."""
    data = "".join(json.dumps(item) + "\n" for item in prompts(tag, 5)).encode()
    done = cli(*run_args(mock, "-", "-"), cwd=tmp_path, stdin=data)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["id"] for line in lines) == [f"q{i}" for i in range(5)]
    assert "trio-llm run" in done.stderr  # the summary goes to stderr, not into the data
    assert list(tmp_path.iterdir()) == []


def test_rerunning_the_same_command_resumes(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """Rerunning a finished command sends nothing: every id is already answered in OUTPUT."""
    source = write_jsonl(tmp_path / "in.jsonl", prompts(tag, 4))
    command = run_args(mock, source, tmp_path / "out.jsonl")
    assert cli(*command, cwd=tmp_path).returncode == 0
    before = mock.stats()
    again = cli(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert delta(before, mock.stats())["requests"] == 0
    assert "read 4 lines: 4 already done, 0 succeeded" in again.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 4


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml_url", "env_url", "flag_url"),
    [
        pytest.param("RIGHT", None, None, id="toml-over-default"),
        pytest.param(DEAD_URL, "RIGHT", None, id="env-over-toml"),
        pytest.param(DEAD_URL, DEAD_URL, "RIGHT", id="flag-over-env-and-toml"),
    ],
)
def test_config_precedence(
    mock: MockServerProcess,
    tmp_path: Path,
    tag: str,
    toml_url: str,
    env_url: str | None,
    flag_url: str | None,
) -> None:
    """Options come from defaults < --config TOML < TRIO_LLM_* environment < flags."""

    def url(value: str) -> str:
        return mock.base_url if value == "RIGHT" else value

    config = tmp_path / "trio-llm.toml"
    # max-attempts = 1: a run against the wrong URL fails at once instead of retrying.
    config.write_text(
        f'base_url = "{url(toml_url)}"\nmax-attempts = 1\nkeys_env = "{KEY_ENV}"\n',
        encoding="utf-8",
    )
    source = write_jsonl(tmp_path / "in.jsonl", prompts(tag, 2))
    args = ["run", str(source), "-o", str(tmp_path / "out.jsonl"), "--config", str(config)]
    if flag_url is not None:
        args += ["--base-url", url(flag_url)]
    env = child_env(**({} if env_url is None else {"TRIO_LLM_BASE_URL": url(env_url)}))
    done = cli(*args, "--no-progress", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert all("content" in line for line in read_jsonl(tmp_path / "out.jsonl"))


def test_environment_beats_config_file_for_numbers(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """A bad value in the TOML is overridden by a good TRIO_LLM_* variable."""
    config = tmp_path / "c.toml"
    config.write_text("concurrency = 0\n", encoding="utf-8")
    source = write_jsonl(tmp_path / "in.jsonl", prompts(tag, 1))
    command = [*run_args(mock, source, tmp_path / "out.jsonl"), "--config", str(config)]
    refused = cli(*command, cwd=tmp_path)
    assert refused.returncode == 2
    assert "--concurrency must be at least 1" in refused.stderr
    done = cli(*command, cwd=tmp_path, env=child_env(TRIO_LLM_CONCURRENCY="4"))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("extra", "config", "env", "message"),
    [
        (["--rpm", "-1"], None, {}, "--rpm must be positive, got -1"),
        (["--concurrency", "0"], None, {}, "--concurrency must be at least 1"),
        ([], "timeout = 0\n", {}, "--timeout must be positive"),
        ([], "colour = 'red'\n", {}, "unknown option 'colour'"),
        ([], "base_url = \n", {}, "cannot read the config file"),
        ([], None, {"TRIO_LLM_RPM": "lots"}, "TRIO_LLM_RPM='lots' is not a valid float"),
        (["--keys-env", "NO_SUCH_KEYS_VAR"], None, {}, "NO_SUCH_KEYS_VAR is empty or unset"),
        ([], 'rpm = "fast"\n', {}, 'c.toml: rpm must be a number, got "fast"'),
        ([], "timeout = [1, 2]\n", {}, "c.toml: timeout must be a number, got [1, 2]"),
        ([], "rpm = true\n", {}, "c.toml: rpm must be a number, got true"),
        ([], "concurrency = 1.5\n", {}, "c.toml: concurrency must be a whole number, got 1.5"),
        ([], "base_url = 5\n", {}, "c.toml: base-url must be a string, got 5"),
        (["--keys", ",,"], None, {}, "--keys ',,' holds no key\nHINT: --keys sk-a,sk-b"),
        (["--resume"], None, {}, "--resume: OUTPUT"),
    ],
    ids=[
        "rpm",
        "concurrency",
        "toml-timeout",
        "toml-unknown",
        "toml-syntax",
        "env",
        "keys",
        "toml-string-rpm",
        "toml-list",
        "toml-bool",
        "toml-float-int",
        "toml-number-url",
        "empty-keys",
        "resume-without-output",
    ],
)
def test_bad_configuration_exits_2_saying_what_to_fix(
    mock: MockServerProcess,
    tmp_path: Path,
    extra: list[str],
    config: str | None,
    env: dict[str, str],
    message: str,
) -> None:
    """Bad flags, config files, variables or a missing keys variable: exit 2 and one clear line."""
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "never sent"}])
    args = run_args(mock, source, tmp_path / "out.jsonl", *extra)
    if config is not None:
        (tmp_path / "c.toml").write_text(config, encoding="utf-8")
        args += ["--config", str(tmp_path / "c.toml")]
    before = mock.stats()
    done = cli(*args, cwd=tmp_path, env=child_env(**env))
    assert done.returncode == 2
    assert done.stderr.startswith("trio-llm: error: ")
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert delta(before, mock.stats())["requests"] == 0


def test_missing_keys_hint_names_the_variable(tmp_path: Path) -> None:
    """With no key in the environment the error says which variable to export."""
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    done = cli("run", str(source), "-o", str(tmp_path / "o.jsonl"), cwd=tmp_path)
    assert done.returncode == 2
    assert "OPENAI_API_KEY is empty or unset" in done.stderr
    assert "HINT: export OPENAI_API_KEY=" in done.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """A missing -o or an unknown flag is a usage error (exit 2) showing run's own usage."""
    assert cli("run", "in.jsonl", cwd=tmp_path).returncode == 2
    done = cli("run", "in.jsonl", "-o", "o.jsonl", "--no-such-flag", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: trio-llm run ")
    assert "trio-llm run: error: unrecognized arguments: --no-such-flag" in done.stderr


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("nodir/out.jsonl", "cannot write {tmp}/nodir/out.jsonl: the directory {tmp}/nodir does"),
        ("adir", "{tmp}/adir is a directory; -o needs a file"),
        ("/proc/out.jsonl", "cannot write /proc/out.jsonl: No such file or directory"),
        ("log:nodir/e.jsonl", "cannot write the --log-json file {tmp}/nodir/e.jsonl: No such"),
        ("log:adir", "cannot write the --log-json file {tmp}/adir: it is a directory"),
        ("log:/proc/e.jsonl", "cannot write the --log-json file /proc/e.jsonl: No such file"),
        ("failed:adir", "cannot write the failed file {tmp}/adir: it is a directory"),
        ("in:adir", "cannot read the input file {tmp}/adir: it is a directory"),
    ],
    ids=[
        "output-no-dir",
        "output-is-dir",
        "output-unwritable",
        "log-no-dir",
        "log-is-dir",
        "log-unwritable",
        "failed-is-dir",
        "input-is-dir",
    ],
)
def test_unusable_paths_exit_2_naming_the_path(
    mock: MockServerProcess, tmp_path: Path, where: str, message: str
) -> None:
    """OUTPUT, --log-json, --failed or INPUT that cannot be used: exit 2, one line, no traceback."""
    (tmp_path / "adir").mkdir()
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "never sent"}])
    out, extra = tmp_path / "out.jsonl", []
    what, _, path = where.rpartition(":")
    target = path if path.startswith("/") else str(tmp_path / path)
    if what == "log":
        extra = ["--log-json", target]
    elif what == "failed":
        extra = ["--failed", target]
    elif what == "in":
        source = Path(target)
    else:
        out = Path(target)
    before = mock.stats()
    done = cli(*run_args(mock, source, out, *extra), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("trio-llm: error: " + message.format(tmp=tmp_path))
    assert len(done.stderr.splitlines()) == 1
    assert delta(before, mock.stats())["requests"] == 0


def test_a_reader_that_leaves_ends_the_run_quietly(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """`-o - | head -1`: the run stops at the broken pipe with exit 141 and says nothing."""
    source = write_jsonl(tmp_path / "in.jsonl", prompts(tag, 200))
    with subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "trio_llm", *run_args(mock, source, "-")],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # what `head -1` does after its line
        stderr = process.stderr.read().decode("utf-8", "replace")
        process.wait(timeout=TIMEOUT)
    assert json.loads(first)["id"].startswith("q")
    assert process.returncode == 141
    assert stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--n", "0"], "trio-llm demo: error: argument --n: --n must be at least 1, got 0"),
        (["demo", "--key-count", "0"], "--key-count must be at least 1"),
        (["demo", "--latency", "-1"], "--latency must be 0 or more"),
        (["mock-server", "--port", "99999"], "--port must be 0-65535, got '99999'"),
        (["mock-server", "--port=-5"], "--port must be 0-65535, got '-5'"),
    ],
    ids=["demo-n", "demo-keys", "demo-latency", "port-too-big", "port-negative"],
)
def test_bad_demo_and_mock_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    """`demo --n 0` or a port out of range: exit 2 with the reason, no traceback."""
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_mock_server_on_a_port_in_use_exits_2(tmp_path: Path) -> None:
    """A port another server listens on: exit 2 saying so, with both servers."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for server in ("hypercorn", "uvicorn"):
            done = cli("mock-server", "--port", port, "--server", server, cwd=tmp_path)
            assert done.returncode == 2, server
            assert done.stderr == (
                "trio-llm mock-server: error: cannot listen: the port is in use (another "
                "server is listening there); pick another --port\n"
            )


def test_output_must_not_be_the_input(mock: MockServerProcess, tmp_path: Path) -> None:
    """Pointing -o at the input file is refused before anything is written."""
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    original = source.read_bytes()
    done = cli(*run_args(mock, source, tmp_path / "." / "in.jsonl"), cwd=tmp_path)
    assert done.returncode == 2
    assert "OUTPUT must not be the INPUT" in done.stderr
    assert source.read_bytes() == original


def test_missing_input_file_exits_2(mock: MockServerProcess, tmp_path: Path) -> None:
    """A wrong INPUT path is a usage error naming the file, not a traceback."""
    done = cli(*run_args(mock, tmp_path / "nope.jsonl", tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 2
    assert "cannot read the input file" in done.stderr
    assert "nope.jsonl" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("my precious notes\n", id="text"),
        pytest.param("my precious notes, no newline", id="text-no-newline"),
        pytest.param('{"id": "a", "prompt": "an input line"}\n{"id": "b"}\n', id="jsonl-with-ids"),
    ],
)
def test_output_that_is_not_ours_is_refused_untouched(
    mock: MockServerProcess, tmp_path: Path, content: str
) -> None:
    """An OUTPUT without trio-llm's marker (a wrong -o) is refused with exit 2, left untouched."""
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    out = tmp_path / "notes.txt"
    out.write_text(content, encoding="utf-8")
    before = mock.stats()
    done = cli(*run_args(mock, source, out), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        f"trio-llm: error: {out}: not a trio-llm output; use another -o or --force "
        "(line 1 has no 'trio_llm_input' field)\n"
    )
    assert out.read_text(encoding="utf-8") == content
    assert delta(before, mock.stats())["requests"] == 0


def test_force_takes_over_an_output_that_is_not_ours(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """With --force a foreign OUTPUT is taken over: its lines go, every item is answered."""
    source = write_jsonl(tmp_path / "in.jsonl", prompts(tag, 2))
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "q0", "prompt": "not an answer"}\n[1, 2]\n', encoding="utf-8")
    done = cli(*run_args(mock, source, out, "--force"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = read_jsonl(out)
    assert sorted(line["id"] for line in lines) == ["q0", "q1"]
    assert all("content" in line for line in lines)


def test_an_output_line_that_is_not_an_object_is_named(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """A JSON line in our OUTPUT that is not an object: exit 2 naming file:line, no traceback."""
    source = write_jsonl(tmp_path / "in.jsonl", prompts(tag, 2))
    out = tmp_path / "out.jsonl"
    assert cli(*run_args(mock, source, out), cwd=tmp_path).returncode == 0
    with out.open("a", encoding="utf-8") as file:
        file.write("[1, 2]\n")
    original = out.read_bytes()
    done = cli(*run_args(mock, source, out), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        f"trio-llm: error: {out}:3: not a trio-llm output line: JSON but not an object (list); "
        "use another -o or --force\n"
    )
    assert out.read_bytes() == original


def test_demo_and_mock_server_help_teach_with_examples(tmp_path: Path) -> None:
    """`demo --help` and `mock-server --help` show runnable examples, as `run --help` does."""
    demo = cli("demo", "--help", cwd=tmp_path)
    assert demo.returncode == 0
    assert "examples:\n  trio-llm demo " in demo.stdout
    assert "rate-limit floor" in demo.stdout
    mock = cli("mock-server", "--help", cwd=tmp_path)
    assert mock.returncode == 0
    assert "--rpm" in mock.stdout
    assert "examples:\n  trio-llm mock-server --port 8000" in mock.stdout
    assert "[[fault:500*2]]" in mock.stdout


def test_help_shows_examples(tmp_path: Path) -> None:
    """`run --help` shows example commands and both input line shapes."""
    done = cli("run", "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "examples:" in done.stdout
    assert "trio-llm run prompts.jsonl -o answers.jsonl" in done.stdout
    assert "--failed failed.jsonl" in done.stdout
    assert "custom_id" in done.stdout
    top = cli("--help", cwd=tmp_path)
    assert top.returncode == 0
    for command in ("demo", "run", "mock-server"):
        assert command in top.stdout


# --- failures ---------------------------------------------------------------------------------


def test_some_failed_exits_1_and_failed_file_round_trips(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """Failed items go to --failed as their input lines; running that file retries just them."""
    items = prompts(tag, 6)
    # The mock fails these prompts' first attempt only: with one attempt allowed they fail now
    # and succeed when retried.
    items[1]["prompt"] += " [[fault:500*1]]"
    items[4]["prompt"] += " [[fault:503*1]]"
    source = write_jsonl(tmp_path / "in.jsonl", items)
    out, failed = tmp_path / "out.jsonl", tmp_path / "failed.jsonl"
    first = cli(
        *run_args(mock, source, out, "--failed", str(failed), "--max-attempts", "1"),
        cwd=tmp_path,
    )
    assert first.returncode == 1, first.stderr
    original = source.read_text(encoding="utf-8").splitlines()
    assert sorted(failed.read_text(encoding="utf-8").splitlines()) == [original[1], original[4]]
    errors = [line for line in read_jsonl(out) if "error" in line]
    assert sorted(line["id"] for line in errors) == ["q1", "q4"]

    before = mock.stats()
    second = cli(*run_args(mock, failed, out, "--max-attempts", "1"), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert delta(before, mock.stats()) == {"requests": 2, "successes": 2, "duplicate_successes": 0}
    lines = read_jsonl(out)
    counts = collections.Counter(line["id"] for line in lines)
    assert sorted(counts) == [f"q{i}" for i in range(6)]
    assert set(counts.values()) == {1}
    assert all("content" in line for line in lines)


def test_context_length_failure_exits_1(mock: MockServerProcess, tmp_path: Path, tag: str) -> None:
    """A prompt the model refuses for good fails at once (no retries) with its reason; exit 1."""
    items = [*prompts(tag, 2), {"id": "long", "prompt": f"[{tag}] [[fault:context_length]]"}]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 1
    (bad,) = [line for line in read_jsonl(tmp_path / "out.jsonl") if "error" in line]
    assert bad["id"] == "long"
    assert bad["attempts"] == 1
    assert bad["error"]["kind"] == "context_length"
    assert bad["error"]["status"] == 400
    assert bad["error"]["retryable"] is False
    assert "context_length" in done.stderr  # the summary table's failures by kind


def test_bad_input_lines_are_reported_and_the_rest_succeed(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """Not JSON, a non-UTF-8 byte or a missing prompt: an error naming file:line and field."""
    good = [json.dumps(item).encode() for item in prompts(tag, 2)]
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b"\n".join(
            [good[0], b"{oops", b'{"id": "latin", "prompt": "caf\xe9"}', b'{"id": "np"}', good[1]]
        )
        + b"\n"
    )
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 1
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(line["id"] for line in lines if "content" in line) == ["q0", "q1"]
    errors = {line["line"]: line["error"] for line in lines if "error" in line}
    assert errors[2]["message"].startswith(f"{source}:2: not JSON")
    assert errors[3]["message"].startswith(f"{source}:3: not UTF-8")
    assert (
        errors[4]["message"]
        == f"{source}:4 $.prompt: needs a prompt, messages or an input (embeddings)"
    )
    assert {error["kind"] for error in errors.values()} == {"invalid_input"}
    assert "3 invalid" in done.stderr


def summary_rows(stderr: str) -> dict[str, str]:
    """The summary table's rows, as {label: value}."""
    rows = {}
    for line in stderr.splitlines():
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if len(cells) == 2 and cells[0]:
            rows[cells[0]] = cells[1]
    return rows


def test_bad_lines_are_counted_and_reported_once(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """18 bad lines: the summary says invalid 18; stderr has the count and the first 5 only."""
    good = [json.dumps(item) for item in prompts(tag, 2)]
    bad = [json.dumps({"id": f"b{i}", "messages": [{"role": "user"}]}) for i in range(18)]
    source = tmp_path / "in.jsonl"
    # A UTF-8 byte order mark before the first line is not a bad line.
    source.write_bytes(b"\xef\xbb\xbf" + "\n".join([good[0], *bad, good[1]]).encode() + b"\n")
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 1
    rows = summary_rows(done.stderr)
    assert (rows["items"], rows["succeeded"], rows["invalid"]) == ("20", "2", "18")
    assert "18 invalid input lines (written to OUTPUT as invalid_input errors):" in done.stderr
    shown = [line for line in done.stderr.splitlines() if "content: field missing" in line]
    assert shown == [f"  {source}:{n} $.messages[0].content: field missing" for n in range(2, 7)]
    assert "  ... and 13 more" in done.stderr
    again = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert again.returncode == 1
    assert summary_rows(again.stderr)["invalid"] == "18"
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 20  # the bad lines are not piled up


def test_bad_batch_lines_keep_their_custom_id(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """A Batch API line with no body or an endpoint we do not serve gets a Batch API error line
    carrying its custom_id, and the reason; the good line is answered."""
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": f"[{tag}] hi"}]}
    url = "/v1/chat/completions"
    items = [
        {"custom_id": "ok", "method": "POST", "url": url, "body": body},
        {"custom_id": "no-body", "method": "POST", "url": url},
        {"custom_id": "embed", "method": "POST", "url": "/v1/embeddings", "body": body},
        {"custom_id": "files", "method": "POST", "url": "/v1/files", "body": body},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 1
    lines = {line["custom_id"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    assert lines["ok"]["response"]["status_code"] == 200
    assert lines["no-body"]["error"]["message"] == f"{source}:2 $.body: field missing"
    assert lines["embed"]["error"]["message"].startswith(f"{source}:3 $.body.input: field missing")
    assert lines["files"]["error"]["message"].startswith(
        f"{source}:4 $.url: POST /v1/files is not an endpoint trio-llm serves"
    )
    assert {lines[k]["error"]["code"] for k in ("no-body", "embed", "files")} == {"invalid_input"}


def test_file_runs_know_their_total_and_count_failures_once(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """The summary shows the file's item count; its failed count matches the text line even for
    items a deadline left unsent; --max-attempts 1 shows 0 retries."""
    items = [
        *prompts(tag, 3),
        {"id": "flaky", "prompt": f"[{tag}] [[fault:500*1]]"},
        *[{"id": f"hang{i}", "prompt": f"[{tag}] {i} [[fault:hang]]"} for i in range(3)],
        *prompts(tag, 5, prefix="late"),
    ]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    extra = ["--max-attempts", "1", "--deadline", "2", "--concurrency", "4", "--timeout", "20"]
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl", *extra), cwd=tmp_path)
    assert done.returncode == 1
    rows = summary_rows(done.stderr)
    assert rows["items"] == "12"
    assert rows["retries"] == "0"
    lines = read_jsonl(tmp_path / "out.jsonl")
    failed = sum("error" in line for line in lines)
    assert failed >= 4  # the flaky one and the three hanging ones at least
    assert rows["failed"] == str(failed)
    assert f"{failed} failed, 0 invalid" in done.stderr
    assert "stopped early (deadline): rerun the same command to resume" in done.stderr


def test_a_refused_key_is_advice_to_fix_the_key(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """Every key refused (401): the advice is to fix the key, not just to rerun."""
    source = write_jsonl(tmp_path / "in.jsonl", prompts(tag, 3))
    env = child_env(**{KEY_ENV: "sk-wrong-key-000099"})
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert "every API key was refused (sk-…0099: HTTP 401" in done.stderr
    assert (
        f"fix the key (the variable {KEY_ENV}), then rerun the same command to resume"
    ) in done.stderr
    assert "sk-wrong-key-000099" not in done.stderr


def test_duplicate_ids_are_reported_not_sent_twice(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """An id seen earlier in the input is named on stderr and never sent; exit code 1."""
    items = [*prompts(tag, 3), {"id": "q1", "prompt": f"[{tag}] a second q1"}]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    before = mock.stats()
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 1
    assert f"{source}:4: duplicate id 'q1' (first at line 2); not sent" in done.stderr
    assert "1 duplicate ids" in done.stderr
    assert delta(before, mock.stats())["requests"] == 3
    counts = collections.Counter(line["id"] for line in read_jsonl(tmp_path / "out.jsonl"))
    assert counts == {"q0": 1, "q1": 1, "q2": 1}


# --- the journal: lock, input hashes, what runs again --------------------------------------


def test_a_second_run_on_the_same_output_is_refused(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """While a run writes OUTPUT a second one exits 2 naming the lock; once the first is killed
    (kill -9: the lock dies with it) the same command resumes."""
    items = [*prompts(tag, 2), {"id": "hang", "prompt": f"[{tag}] [[fault:hang]]"}]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"
    first = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "trio_llm", *run_args(mock, source, out)],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out.exists() and len(out.read_bytes().splitlines()) >= 2):
            assert first.poll() is None
            assert time.monotonic() < deadline, "the answerable prompts never finished"
            time.sleep(0.05)
        before = mock.stats()
        second = cli(*run_args(mock, source, out), cwd=tmp_path)
        assert second.returncode == 2
        lock = tmp_path / ".out.jsonl.lock"
        assert second.stderr == (
            f"trio-llm: error: another trio-llm run (pid {first.pid}) is writing {out} (it holds "
            f"the lock {lock}); wait for it to finish, or use another -o\n"
        )
        assert delta(before, mock.stats())["requests"] == 0
    finally:
        first.kill()
        first.wait(timeout=10)
    # The hanging prompt is answered by the next run only if it stops hanging: drop it.
    write_jsonl(source, prompts(tag, 2))
    third = cli(*run_args(mock, source, out), cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert "2 already done" in third.stderr
    assert not (tmp_path / ".out.jsonl.lock").exists()


def test_a_changed_input_under_answered_ids_is_refused_unless_force(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """A rerun whose INPUT changed under an answered id exits 2 before sending anything,
    naming the id and both file:lines; with --force just the changed items are sent again."""
    items = prompts(tag, 4)
    source = write_jsonl(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"
    assert cli(*run_args(mock, source, out), cwd=tmp_path).returncode == 0
    out_line = 1 + [line["id"] for line in read_jsonl(out)].index("q2")
    items[2]["prompt"] = f"[{tag}] what is 7 + 7?"
    items.append({"id": "new", "prompt": f"[{tag}] what is 1 + 1?"})
    write_jsonl(source, items)
    original = out.read_bytes()
    before = mock.stats()
    refused = cli(*run_args(mock, source, out), cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        f"trio-llm: error: {source}:3: the input of id 'q2' changed since its answer was "
        f"written ({out}:{out_line})\nHINT: rerun with --force"
    )
    assert delta(before, mock.stats())["requests"] == 0
    assert out.read_bytes() == original

    forced = cli(*run_args(mock, source, out, "--force"), cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert delta(before, mock.stats())["requests"] == 2  # q2 again, and the new one
    assert "1 changed and sent again" in forced.stderr
    again = cli(*run_args(mock, source, out), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    lines = {line["id"]: line for line in read_jsonl(out)}
    assert len(read_jsonl(out)) == 5
    assert lines["q2"]["content"] == json.dumps({"answer": 14})


def test_duplicate_ids_keep_exit_status_1_on_resume(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """The rerun of an input with a duplicate id still reports it and exits 1, sending nothing."""
    items = [*prompts(tag, 2), {"id": "q0", "prompt": f"[{tag}] a second q0"}]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    command = run_args(mock, source, tmp_path / "out.jsonl")
    assert cli(*command, cwd=tmp_path).returncode == 1
    before = mock.stats()
    again = cli(*command, cwd=tmp_path)
    assert again.returncode == 1
    assert f"{source}:3: duplicate id 'q0' (first at line 1); not sent" in again.stderr
    assert delta(before, mock.stats())["requests"] == 0


def test_failures_another_try_cannot_fix_stay_done_until_their_input_changes(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """A context_length failure is not resent on resume (exit 1 still); once its input line is
    fixed it runs again, with no --force needed."""
    items = [*prompts(tag, 2), {"id": "long", "prompt": f"[{tag}] [[fault:context_length]]"}]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    out, failed = tmp_path / "out.jsonl", tmp_path / "failed.jsonl"
    command = run_args(mock, source, out, "--failed", str(failed))
    assert cli(*command, cwd=tmp_path).returncode == 1
    before = mock.stats()
    again = cli(*command, cwd=tmp_path)
    assert again.returncode == 1
    assert delta(before, mock.stats())["requests"] == 0
    assert "1 failed earlier" in again.stderr
    assert failed.read_text(encoding="utf-8").splitlines() == [json.dumps(items[2])]
    items[2]["prompt"] = f"[{tag}] what is 3 + 3?"
    write_jsonl(source, items)
    fixed = cli(*command, cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert delta(before, mock.stats())["requests"] == 1
    assert {line["id"]: "content" in line for line in read_jsonl(out)} == dict.fromkeys(
        ["q0", "q1", "long"], True
    )


def test_ids_keep_their_json_type_in_output(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """Number ids stay numbers in OUTPUT, and 1 and "1" are two different ids."""
    items = [
        {"id": 1, "prompt": f"[{tag}] what is 1 + 1?"},
        {"id": "1", "prompt": f"[{tag}] what is 2 + 2?"},
        {"id": 2.0, "prompt": f"[{tag}] what is 3 + 3?"},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    done = cli(*run_args(mock, source, tmp_path / "out.jsonl"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    answers = {
        json.dumps(line["id"]): line["content"] for line in read_jsonl(tmp_path / "out.jsonl")
    }
    assert answers == {
        "1": json.dumps({"answer": 2}),
        '"1"': json.dumps({"answer": 4}),
        "2.0": json.dumps({"answer": 6}),
    }


# --- interruption -----------------------------------------------------------------------------


def test_sigint_exits_130_keeping_finished_results(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """Ctrl-C cancels what is in flight, keeps what finished, prints the summary, exits 130."""
    items = prompts(tag, 5) + [
        {"id": f"hang{i}", "prompt": f"[{tag}] {i} [[fault:hang]]"} for i in range(3)
    ]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "trio_llm", *run_args(mock, source, out)],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out.exists() and len(out.read_bytes().splitlines()) >= 5):
            assert process.poll() is None, "the run ended although three prompts hang"
            assert time.monotonic() < deadline, "the five answerable prompts never finished"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    text = stderr.decode("utf-8", "replace")
    assert process.returncode == 130, text
    assert "interrupted" in text
    assert "trio-llm run" in text  # the summary table
    assert "rerun the same command to resume" in text
    assert stdout == b""
    lines = read_jsonl(out)
    assert sorted(line["id"] for line in lines if "content" in line) == [f"q{i}" for i in range(5)]


def test_a_second_ctrl_c_exits_at_once_without_a_traceback(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """Two Ctrl-Cs in a row: exit 130 at once, no KeyboardInterrupt traceback."""
    items = [{"id": f"hang{i}", "prompt": f"[{tag}] {i} [[fault:hang]]"} for i in range(4)]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "trio_llm", *run_args(mock, source, out)],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (tmp_path / ".out.jsonl.lock").exists():  # the run has begun
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    text = stderr.decode("utf-8", "replace")
    assert process.returncode == 130, text
    assert "Traceback" not in text
    assert "KeyboardInterrupt" not in text


# --- events and secrets -----------------------------------------------------------------------


def test_log_json_writes_one_event_per_line(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """--log-json FILE gets every event as a JSON object with a timestamp and level."""
    source = write_jsonl(tmp_path / "in.jsonl", prompts(tag, 3))
    log = tmp_path / "events.jsonl"
    done = cli(
        *run_args(mock, source, tmp_path / "out.jsonl", "--log-json", str(log)), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    events = read_jsonl(log)
    names = [event["event"] for event in events]
    assert names[0] == "run.started"
    assert names.count("request.sent") == 3
    assert names.count("request.succeeded") == 3
    assert "run.finished" in names
    assert all(isinstance(event["ts"], float) and "level" in event for event in events)
    assert {e["key_id"] for e in events if e["event"] == "request.succeeded"} == {FINGERPRINT}
    (finished,) = [e for e in events if e["event"] == "run.finished"]
    assert finished["succeeded"] == 3


def test_the_api_key_never_appears_anywhere(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """The key shows nowhere (stdout, stderr, OUTPUT, failed file, JSON log), only sk-…3456."""
    items = [
        *prompts(tag, 3),
        {"id": "bad", "prompt": f"[{tag}] [[fault:context_length]]"},
        {"id": "flaky", "prompt": f"[{tag}] [[fault:500*1]]"},
        {"id": "np"},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    out, failed, log = tmp_path / "out.jsonl", tmp_path / "failed.jsonl", tmp_path / "log.jsonl"
    done = cli(
        *run_args(mock, source, out, "--failed", str(failed), "--log-json", str(log)),
        cwd=tmp_path,
    )
    piped = cli(*run_args(mock, source, "-", "--log-json", str(log)), cwd=tmp_path)
    assert done.returncode == piped.returncode == 1
    texts = {
        "stdout": done.stdout + piped.stdout,
        "stderr": done.stderr + piped.stderr,
        "OUTPUT": out.read_text(encoding="utf-8"),
        "failed": failed.read_text(encoding="utf-8"),
        "log": log.read_text(encoding="utf-8"),
    }
    assert all(texts.values())
    for where, text in texts.items():
        assert SECRET not in text, where
        assert "abcdef123456" not in text, where
    key_ids = {e["key_id"] for e in read_jsonl(log) if "key_id" in e}
    assert key_ids == {FINGERPRINT}


# --- demo -------------------------------------------------------------------------------------


def test_demo_runs_on_its_own_mock_with_full_accuracy(tmp_path: Path) -> None:
    """`trio-llm demo` starts its own mock server and gets every arithmetic answer right."""
    done = cli("demo", "--n", "30", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "accuracy 100.0% (30/30)" in done.stderr
    assert "trio-llm demo" in done.stderr
    assert "rate-limit floor" in done.stderr


def test_ctrl_c_ends_a_run_on_a_silent_stdin(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """`run -` on a stdin that is open but silent still stops on Ctrl-C, keeping what finished."""
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "trio_llm", *run_args(mock, "-", out)],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=child_env(),
    )
    try:
        assert process.stdin is not None
        process.stdin.write((json.dumps({"id": "q0", "prompt": f"[{tag}] first"}) + "\n").encode())
        process.stdin.flush()  # ...and then nothing more, with the pipe kept open
        deadline = time.monotonic() + TIMEOUT
        while not (out.exists() and out.read_bytes().count(b"\n") >= 1):
            assert process.poll() is None
            assert time.monotonic() < deadline, "the first line was never answered"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr.decode("utf-8", "replace")
    assert [line["id"] for line in read_jsonl(out)] == ["q0"]


@pytest.mark.parametrize(
    ("base_url", "words"),
    [
        ("http://127.0.0.1:9/v1", "cannot connect to 127.0.0.1:9"),
        ("http://nonexistent.invalid/v1", "cannot connect to nonexistent.invalid:80"),
    ],
)
def test_a_dead_endpoint_fails_fast_and_says_so(tmp_path: Path, base_url: str, words: str) -> None:
    """A wrong port or an unknown host ends the run within seconds, and stderr says what
    happened and names the host (not 25 minutes of silent backoff)."""
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "x"} for i in range(3)])
    args = [
        "run", str(source), "-o", str(tmp_path / "out.jsonl"),
        "--base-url", base_url, "--keys-env", KEY_ENV, "--no-progress",
    ]  # fmt: skip
    started = time.monotonic()
    done = cli(*args, cwd=tmp_path)
    assert time.monotonic() - started < 15
    assert done.returncode == 1
    assert words in done.stderr
    assert "check the base URL" in done.stderr


def test_fallback_model_takes_what_the_first_model_cannot(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """--fallback-model: a line the first model refuses as too long is answered by the
    fallback model, and its OUTPUT line says which model answered and why it moved."""
    items = [
        {"id": "long", "prompt": f"[{tag}] long [[fault:context_length*1]]"},
        {"id": "short", "prompt": f"[{tag}] short"},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"
    extra = ["--model", "mock-small", "--fallback-model", "mock-large"]
    done = cli(*run_args(mock, source, out, *extra), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = {line["id"]: line for line in read_jsonl(out)}
    assert lines["long"]["model"] == "mock-large"
    assert lines["long"]["rerouted"] == ["mock-small: context_length"]
    assert (lines["short"]["model"], "rerouted" in lines["short"]) == ("mock-small", False)


def test_routes_tables_in_the_config_make_a_chain(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """[[routes]] in the TOML config: each route its own endpoint and model, tried in order;
    a route table with an unknown field is refused naming it (exit 2)."""
    config = tmp_path / "chain.toml"
    config.write_text(
        f'[[routes]]\nbase_url = "{mock.base_url}"\nmodel = "first"\n\n'
        f'[[routes]]\nbase_url = "{mock.base_url}"\nmodel = "second"\nname = "backup"\n',
        encoding="utf-8",
    )
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"id": "x", "prompt": f"[{tag}] x [[fault:context_length*1]]"}]
    )
    out = tmp_path / "out.jsonl"
    done = cli(*run_args(mock, source, out, "--config", str(config)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [line] = read_jsonl(out)
    assert (line["route"], line["model"]) == ("backup", "second")
    config.write_text(
        f'[[routes]]\nbase_url = "{mock.base_url}"\nmodel = "m"\ncolour = "red"\n',
        encoding="utf-8",
    )
    done = cli(
        *run_args(mock, source, tmp_path / "o2.jsonl", "--config", str(config)), cwd=tmp_path
    )
    assert done.returncode == 2
    assert "routes #1: unknown field 'colour'" in done.stderr


# --- the response cache -----------------------------------------------------------------------


def test_cache_answers_a_rerun_into_a_new_output(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """--cache: a second run into another OUTPUT sends nothing; its lines say cached."""
    items = [{**item, "temperature": 0} for item in prompts(tag, 4)]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    cache = str(tmp_path / "answers.sqlite")
    first = cli(*run_args(mock, source, tmp_path / "a.jsonl", "--cache", cache), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "cache: 0 answered" in first.stderr
    before = mock.stats()
    again = cli(*run_args(mock, source, tmp_path / "b.jsonl", "--cache", cache), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert delta(before, mock.stats())["requests"] == 0
    assert "cache: 4 answered" in again.stderr
    lines = {line["id"]: line for line in read_jsonl(tmp_path / "b.jsonl")}
    old = {line["id"]: line for line in read_jsonl(tmp_path / "a.jsonl")}
    assert all(line["cached"] is True and line["cost_usd"] == 0 for line in lines.values())
    assert {k: v["content"] for k, v in lines.items()} == {k: v["content"] for k, v in old.items()}


def test_cache_says_why_sampled_requests_were_not_kept(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """Without a temperature the requests sample: not cached, and the run says so."""
    source = write_jsonl(tmp_path / "in.jsonl", prompts(tag, 2))
    cache = str(tmp_path / "answers.sqlite")
    done = cli(*run_args(mock, source, tmp_path / "a.jsonl", "--cache", cache), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 not cached because they sample" in done.stderr
    sampled = cli(
        *run_args(mock, source, tmp_path / "b.jsonl", "--cache", cache, "--cache-sampled"),
        cwd=tmp_path,
    )
    assert "2 stored" in sampled.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cache", "."], "it is a directory"),
        (["--cache", "c.sqlite", "--cache-ttl", "0"], "--cache-ttl must be positive"),
    ],
)
def test_bad_cache_options_exit_2(
    mock: MockServerProcess, tmp_path: Path, flags: list[str], message: str
) -> None:
    """A directory as --cache, or a ttl of 0: exit 2, one line naming it."""
    source = write_jsonl(tmp_path / "in.jsonl", prompts("x", 1))
    done = cli(*run_args(mock, source, tmp_path / "a.jsonl", *flags), cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


# --- Batch API offload ------------------------------------------------------------------------


def test_batch_api_run_writes_the_same_output(
    mock: MockServerProcess, tmp_path: Path, tag: str
) -> None:
    """--batch-api: batches on the mock, the same OUTPUT lines as a normal run, 0 chat calls."""
    source = write_jsonl(tmp_path / "in.jsonl", prompts(tag, 5))
    before = mock.stats()
    done = cli(
        *run_args(mock, source, tmp_path / "out.jsonl", "--batch-api", "--batch-size", "2"),
        "--batch-poll", "0.05", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    after = mock.stats()
    assert after.batch_creates - before.batch_creates == 3
    assert after.total_requests == before.total_requests
    lines = {line["id"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    assert {k: v["content"] for k, v in lines.items()} == {
        f"q{i}": json.dumps({"answer": 2 * i}) for i in range(5)
    }
    assert "read 5 lines: 0 already done, 5 succeeded" in done.stderr


def test_plain_run_over_open_batches_exits_2(tmp_path: Path) -> None:
    """OUTPUT with batches still open and no --batch-api: exit 2, saying how to collect them."""
    out = tmp_path / "out.jsonl"
    out.with_name("out.jsonl.batches.json").write_text(
        json.dumps({"version": 1, "api": "openai", "token": "t", "chunks": [
            {"name": "n", "ids": ["r1"], "file_id": "f", "batch_id": "b", "merged": False}
        ]}), encoding="utf-8",
    )  # fmt: skip
    source = write_jsonl(tmp_path / "in.jsonl", prompts("x", 1))
    done = cli("run", str(source), "-o", str(out), "--keys", "k", "--no-progress", cwd=tmp_path)
    assert done.returncode == 2
    assert "--batch-api to collect them" in done.stderr
    assert "Traceback" not in done.stderr


def test_kill_9_while_polling_submits_nothing_twice(tmp_path: Path, tag: str) -> None:
    """kill -9 once every batch is created; the rerun reattaches: no batch created twice,
    every id once in OUTPUT, no prompt answered twice."""
    config = MockServerConfig(keys=(SECRET,), batch_polls=8)
    with MockServerProcess(config) as server:
        source = write_jsonl(tmp_path / "in.jsonl", prompts(tag, 40))
        out = tmp_path / "out.jsonl"
        argv = [sys.executable, "-m", "trio_llm",
                *run_args(server, source, out, "--batch-api", "--batch-size", "10",
                          "--batch-poll", "0.05")]  # fmt: skip
        state = out.with_name("out.jsonl.batches.json")
        child = subprocess.Popen(argv, env=child_env(), stderr=subprocess.PIPE)  # noqa: S603
        deadline = time.monotonic() + TIMEOUT
        try:
            while time.monotonic() < deadline:
                try:
                    chunks = json.loads(state.read_text(encoding="utf-8"))["chunks"]
                except (FileNotFoundError, ValueError):
                    chunks = []
                if len(chunks) == 4 and all(c["batch_id"] for c in chunks):
                    break
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait()
            assert child.stderr is not None
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL
        assert server.stats().batch_creates == 4
        done = cli(*run_args(server, source, out, "--batch-api", "--batch-poll", "0.05"),
                   cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        stats = server.stats()
    assert (stats.batch_creates, stats.batch_lines, stats.files_uploaded) == (4, 40, 4)
    assert stats.duplicate_successes == 0
    ids = [line["id"] for line in read_jsonl(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(40))
