"""The benchmarks: every module loads, the cheap ones run small, the runner sums them up."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import benchmarks.__main__ as runner

PRESENT = [name for name in runner.BENCHMARKS if importlib.util.find_spec(f"benchmarks.{name}")]


def test_the_known_benchmarks_are_present() -> None:
    """The benchmarks the suite is built around exist in this checkout."""
    assert {"overhead", "concurrency", "memory", "rate_limits", "sync_vs_async"} <= set(PRESENT)


@pytest.mark.parametrize("name", PRESENT)
def test_benchmark_module_has_a_quick_main(name: str) -> None:
    """Each benchmark imports cleanly, documents --quick and has main(argv)."""
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main)
    assert module.__doc__ is not None
    assert "--quick" in module.__doc__


@pytest.mark.slow
def test_sync_vs_async_claims(tmp_path: Path) -> None:
    """trio-llm beats the sequential loop; 3 keys beat 1 under per-key limits, not without."""
    from benchmarks import sync_vs_async

    n = 40
    document = sync_vs_async.main(
        ["--quick", "--n", str(n), "--latency", "0.1", "--json", str(tmp_path / "s.json")]
    )
    summary = document["summary"]
    wall, floor = summary["wall_s"], summary["floor_s"]
    assert (tmp_path / "s.json").exists()
    assert [row[0] for row in document["rows"]] == [
        "sequential httpx.Client loop",
        "asyncio.gather + Semaphore(50)",
        "trio-llm (concurrency 50)",
    ]
    # Nobody beats their own floor (the limited runs may by their initial burst: 1 s of rate).
    assert wall["sequential"] >= floor["sequential"] == pytest.approx(n * 0.1)
    assert wall["trio-llm"] >= floor["concurrent"] == pytest.approx(0.1)
    assert wall["limited-1"] >= floor["limited-1"] - 1.0
    # The claims.
    assert summary["speedup_vs_sequential"]["trio-llm"] > 3
    assert summary["keys_speedup_limited"] > 2
    assert 0.5 < summary["keys_speedup_unlimited"] < 2
    assert summary["status_429"]["limited-1"] == 0
    assert summary["keys_table"]["rows"][0][0] == "600 rpm per key, 1 key"


@pytest.mark.slow
def test_memory_stays_flat_small(tmp_path: Path) -> None:
    """The memory benchmark runs small and reports growth and peak in MB."""
    from benchmarks import memory

    document = memory.main(["--quick", "--n", "5000", "--json", str(tmp_path / "m.json")])
    summary = document["summary"]
    assert [row[0] for row in document["rows"]] == [500, 5000]
    assert 0 < summary["peak_mb"] < 150
    assert summary["growth_mb"] < 20


@pytest.mark.slow
def test_overhead_runs_small(tmp_path: Path) -> None:
    """The overhead benchmark runs small and reports the engine against aiohttp."""
    from benchmarks import overhead

    document = overhead.main(
        ["--quick", "--n", "300", "--runs", "1", "--json", str(tmp_path / "o.json")]
    )
    summary = document["summary"]
    assert len(document["rows"]) == 5
    assert summary["engine_rps"] > 0
    assert summary["engine_vs_aiohttp"] > 0
    assert summary["progress_on_vs_off"] > 0


@pytest.mark.slow
def test_scale_out_runs_small(tmp_path: Path) -> None:
    """The scale-out benchmark runs small: every split mode answers each id once, the
    server's busiest second per key stays near rate + burst, throughput is reported, and a
    worker killed mid-run costs no id and writes none twice."""
    from benchmarks import scale_out

    document = scale_out.main(
        ["--quick", "--n", "120", "--rpm", "1200", "--unlimited-n", "300", "--json",
         str(tmp_path / "s.json")]
    )  # fmt: skip
    summary = document["summary"]
    assert {"--processes 1", "--processes 2", "--processes 4"} <= set(summary["limited"])
    for row in summary["limited"].values():
        assert row["lost"] == 0
        assert row["duplicated"] == 0
        assert row["busiest_second_per_key"] <= row["allowed_per_second"] + 2
    assert summary["unlimited_req_per_s"]["--processes 2"] > 0
    assert "processes" in summary["killed_mid_run"]
    for killed in summary["killed_mid_run"].values():
        assert killed["killed_at"] > 0
        assert killed["exit_status"] == 0, killed["stderr_tail"]
        assert killed["lost"] == 0
        assert killed["duplicated"] == 0


# --- python -m benchmarks -------------------------------------------------------------------


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package with a passing ``overhead``, a failing ``memory`` and an exit-status one."""
    package = tmp_path / "fakebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "overhead.py").write_text(
        "def main(argv):\n"
        "    assert argv[0] == '--quick'\n"
        "    return {'summary': {'engine_rps': 1000.0, 'engine_vs_aiohttp': 0.95,"
        " 'progress_on_vs_off': 0.99}}\n"
    )
    (package / "memory.py").write_text("def main(argv):\n    raise RuntimeError('out of luck')\n")
    (package / "mock_capacity.py").write_text(
        "import json, pathlib\n"
        "def main(argv):\n"
        "    path = pathlib.Path(argv[argv.index('--json') + 1])\n"
        "    rows = [{'server': 'uvicorn', 'generator': 'raw', 'req_per_s': 5000}]\n"
        "    path.write_text(json.dumps({'summary': {'rows': rows}}))\n"
        "    return 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fakebench"
    for name in [m for m in sys.modules if m.startswith("fakebench")]:
        del sys.modules[name]


def test_runner_sums_up_ok_failed_and_missing(
    fake_package: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runner runs what exists, keeps going past a failure, skips what is missing."""
    status = runner.main(["--json-dir", str(tmp_path / "out")], package=fake_package)
    assert status == 1
    out = capsys.readouterr().out
    summary = out.split("## Summary")[1]
    lines = {line.split()[0]: line for line in summary.splitlines() if line.strip()[:1].isalpha()}
    assert lines["overhead"].split()[1] == "ok"
    assert "0.95 x aiohttp" in lines["overhead"]
    assert lines["memory"].split()[1] == "failed"
    assert "RuntimeError: out of luck" in lines["memory"]
    assert "uvicorn raw 5,000 req/s" in lines["mock_capacity"]
    for missing in ("concurrency", "rate_limits", "sync_vs_async", "faults", "resume"):
        assert lines[missing].split()[1] == "skipped"


def test_runner_only_picks_and_rejects_unknown_names(
    fake_package: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--only runs just the named benchmarks; an unknown name is refused with a hint."""
    assert (
        runner.main(["--only", "overhead", "--json-dir", str(tmp_path)], package=fake_package) == 0
    )
    out = capsys.readouterr().out
    assert "memory" not in out.split("## Summary")[1]
    assert runner.main(["--only", "overhead,nope"], package=fake_package) == 2
    assert "HINT: --only takes names among" in capsys.readouterr().err


def test_headline_falls_back_to_scalar_figures() -> None:
    """An unknown benchmark, or a changed summary shape, is summed up by its scalar values."""
    summary: dict[str, Any] = {"lost": 0, "recovered": 0.999, "nested": {"x": 1}}
    assert runner.headline("a_new_benchmark", summary) == "lost=0, recovered=0.999"
    assert runner.headline("memory", summary) == "lost=0, recovered=0.999"


def test_cache_rerun_sends_nothing_small(tmp_path: Path) -> None:
    """benchmarks.cache --quick: the rerun is answered from the cache, both ways."""
    from benchmarks import cache

    document = cache.main(["--quick", "--n", "200", "--json", str(tmp_path / "c.json")])
    summary = document["summary"]
    assert summary["rerun_requests"] == 0
    assert summary["rerun_cached"] == 200


def test_offload_submits_nothing_twice_small(tmp_path: Path) -> None:
    """benchmarks.offload --quick: 4 batches with or without a kill -9, nothing lost."""
    from benchmarks import offload

    document = offload.main(["--quick", "--n", "200", "--json", str(tmp_path / "o.json")])
    summary = document["summary"]
    assert summary["batches"] == summary["batches_after_kill"] == 4
    assert summary["lost"] == summary["duplicated"] == summary["duplicate_successes"] == 0


@pytest.mark.slow
def test_embeddings_packing_runs_small(tmp_path: Path) -> None:
    """The embeddings benchmark: packing needs a handful of requests, one per input needs n,
    and every input gets its own vector either way."""
    from benchmarks import embeddings

    document = embeddings.main(["--quick", "--n", "300", "--json", str(tmp_path / "e.json")])
    summary = document["summary"]
    assert summary["packed"]["requests"] == 1
    assert summary["single"]["requests"] == 300
    assert summary["packed"]["right"] == summary["single"]["right"] == 300


@pytest.mark.slow
def test_streaming_benchmark_measures_ttft_against_the_mock(tmp_path: Path) -> None:
    """The streaming benchmark: every item answered in both modes, streamed answers' TTFT at
    least the mock's (it is measured from sending), whole answers none."""
    from benchmarks import streaming

    document = streaming.main(
        ["--quick", "--n", "60", "--concurrency", "30", "--json", str(tmp_path / "s.json")]
    )
    summary = document["summary"]
    assert [row[1] for row in document["rows"]] == ["60/60", "60/60"]
    assert summary["ttft_p50_s"] >= streaming.TTFT
    assert summary["ttft_overhead_p50_ms"] >= 0
    assert summary["throughput_streamed_vs_whole"] > 0


@pytest.mark.slow
def test_mixed_models_scenario_runs(tmp_path: Path) -> None:
    """Scenario 9 of rate_limits: two models with their own limits on the same keys, each
    near its own floor (the mock enforces them per key and model)."""
    from benchmarks import rate_limits

    document = rate_limits.main(
        ["--quick", "--only-mixed-models", "--json", str(tmp_path / "r.json")]
    )
    mixed = document["summary"]["mixed_models"]
    # A loose bound for a loaded test machine; the benchmark's goal is 0.95.
    assert mixed["gpt-4o"]["achieved_over_floor"] > 0.8
    assert mixed["gpt-4o-mini"]["achieved_over_floor"] > 0.8
    assert mixed["share_429"] <= 0.01
