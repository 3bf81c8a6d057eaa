"""The public API: the names the contract promises, and nothing private leaking."""

from __future__ import annotations

import trio_llm
import trio_llm.testing


def test_all_lists_exactly_the_public_names_sorted() -> None:
    """__all__ is sorted and matches the package's public names (imported on first use in
    trio_llm: dir() lists them all, and each one resolves)."""
    for name in trio_llm.__all__:
        assert getattr(trio_llm, name).__name__ == name
    for module in (trio_llm, trio_llm.testing):
        public = {name for name in dir(module) if not name.startswith("_")}
        public -= {"annotations"}
        # Submodules imported as a side effect are not API.
        public = {name for name in public if not isinstance(getattr(module, name), type(trio_llm))}
        assert module.__all__ == sorted(module.__all__)
        assert set(module.__all__) == public


def test_contract_names_exist() -> None:
    """The names in the design contract are importable from trio_llm."""
    for name in (
        "Engine",
        "OpenAICompatible",
        "KeyPool",
        "Limits",
        "Result",
        "Request",
        "Usage",
        "RetryPolicy",
        "ErrorInfo",
        "ErrorKind",
        "TrioLLMError",
        "ConfigurationError",
    ):
        assert hasattr(trio_llm, name), name
    assert isinstance(trio_llm.__version__, str)
