"""Shared test setup."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """The CLI configures structlog for its process; tests that run it in-process must not
    leave that configuration to the tests after them."""
    yield
    structlog.reset_defaults()
