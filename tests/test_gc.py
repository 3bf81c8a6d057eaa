"""The command line paces the garbage collector for the requests it holds in flight."""

from __future__ import annotations

import gc

import pytest

from trio_llm._gc import collect_less_often, young_threshold


def test_young_threshold_grows_with_concurrency_within_bounds() -> None:
    """Ten allocations per request in flight, never below the current value nor above 50,000."""
    assert young_threshold(64, 700) == 700
    assert young_threshold(1000, 700) == 10_000
    assert young_threshold(10_000, 700) == 50_000
    assert young_threshold(10, 90_000) == 90_000


def test_thresholds_are_restored_after_the_run() -> None:
    """Inside, the first threshold is raised; after (also after an error) all three are back."""
    before = gc.get_threshold()
    inside: list[tuple[int, ...]] = []

    def run() -> None:
        with collect_less_often(10_000):
            inside.append(gc.get_threshold())
            raise RuntimeError("the run failed")

    with pytest.raises(RuntimeError):
        run()
    assert inside == [(50_000, *before[1:])]
    assert gc.get_threshold() == before


def test_the_library_never_paces_the_collector() -> None:
    """Importing and building an engine leaves the collector alone (a process-wide setting)."""
    before = gc.get_threshold()
    import trio_llm

    trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url="http://127.0.0.1:9/v1", model="m"),
        keys=["sk-a"],
        concurrency=10_000,
    )
    assert gc.get_threshold() == before
