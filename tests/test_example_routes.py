"""examples/many_keys_many_providers.py runs and splits the load by capacity."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "many_keys_many_providers.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("many_keys_many_providers", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_two_endpoints_share_the_load_by_capacity() -> None:
    """Every prompt is answered over both endpoints (the split by capacity itself is checked
    exactly on trio's clock in test_routes.py)."""
    outcome = _load().main(["--n", "160"])
    assert outcome["ok"] == outcome["n"] == 160
    split = outcome["split"]
    assert split["east"] + split["west"] == 160
    assert split["east"] > 0
    assert split["west"] > split["east"]
