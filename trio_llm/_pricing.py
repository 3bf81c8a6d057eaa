"""Prices per million tokens, for the cost of each result and of a run.

The defaults are list prices for common models (USD per 1M tokens: input, cached input,
output) as published by the providers; override or extend them from a TOML or JSON file with
``PriceTable.load(path)``. A model not in the table has no cost (``None``), never a guess.

Prompt-cache tokens are priced apart: OpenAI bills cached input at a lower rate (half, a
quarter or a tenth, by model), Anthropic bills cache reads at a tenth of the input price and
cache writes at 1.25 times it. Hidden reasoning tokens are output tokens and billed so.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import final

import attrs

from ._errors import ConfigurationError
from ._models import Usage

__all__ = ["ModelPrice", "PriceTable"]


@attrs.frozen(kw_only=True)
class ModelPrice:
    """USD per one million tokens.

    Attributes:
        input_per_m: input tokens.
        output_per_m: output tokens (reasoning included).
        cached_input_per_m: input tokens read from the prompt cache (``None``: as input).
        cache_write_per_m: input tokens written to the cache (``None``: as input).
    """

    input_per_m: float
    output_per_m: float
    cached_input_per_m: float | None = None
    cache_write_per_m: float | None = None

    def cost(self, usage: Usage) -> float:
        """The price of ``usage``."""
        cached = usage.cached_tokens
        written = usage.cache_write_tokens
        fresh = max(0, usage.prompt_tokens - cached - written)
        read_price = (
            self.input_per_m if self.cached_input_per_m is None else self.cached_input_per_m
        )
        write_price = self.input_per_m if self.cache_write_per_m is None else self.cache_write_per_m
        return (
            fresh * self.input_per_m
            + cached * read_price
            + written * write_price
            + usage.completion_tokens * self.output_per_m
        ) / 1_000_000


# (input, cached input, output) per 1M tokens; Anthropic's cache writes cost 1.25 x input.
_DEFAULTS: dict[str, tuple[float, float, float]] = {
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4.1": (2.00, 0.50, 8.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "gpt-5": (1.25, 0.125, 10.00),
    "gpt-5-mini": (0.25, 0.025, 2.00),
    "gpt-5-nano": (0.05, 0.005, 0.40),
    "o3": (2.00, 0.50, 8.00),
    "o4-mini": (1.10, 0.275, 4.40),
    "gpt-3.5-turbo": (0.50, 0.50, 1.50),
    "claude-3-5-haiku": (0.80, 0.08, 4.00),
    "claude-haiku-4-5": (1.00, 0.10, 5.00),
    "claude-sonnet-4": (3.00, 0.30, 15.00),
    "claude-sonnet-4-5": (3.00, 0.30, 15.00),
    "claude-opus-4": (15.00, 1.50, 75.00),
    # Embeddings: input only (OpenAI's list prices).
    "text-embedding-3-small": (0.02, 0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.13, 0.0),
    "text-embedding-ada-002": (0.10, 0.10, 0.0),
}


@final
class PriceTable:
    """Model name → price. Dated model names (``gpt-4o-mini-2024-07-18``) match their base."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = dict(prices)
        self._cache: dict[str, ModelPrice | None] = {}

    @classmethod
    def default(cls) -> PriceTable:
        """The built-in table."""
        return cls(
            {
                name: ModelPrice(
                    input_per_m=i,
                    output_per_m=o,
                    cached_input_per_m=c,
                    cache_write_per_m=i * 1.25 if name.startswith("claude") else None,
                )
                for name, (i, c, o) in _DEFAULTS.items()
            }
        )

    @classmethod
    def load(cls, path: str | Path, *, base: PriceTable | None = None) -> PriceTable:
        """The built-in table (or ``base``) overridden by a file of
        ``{"model": {"input_per_m": 0.15, "output_per_m": 0.6}}`` (JSON or TOML)."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
            data = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the price file {file}: {exc}") from None
        prices = dict((base or cls.default())._prices)
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{file}: expected a table of models")
        for model, entry in data.items():
            try:
                optional = {
                    name: float(entry[name])
                    for name in ("cached_input_per_m", "cache_write_per_m")
                    if name in entry
                }
                prices[str(model)] = ModelPrice(
                    input_per_m=float(entry["input_per_m"]),
                    output_per_m=float(entry["output_per_m"]),
                    **optional,
                )
            except (TypeError, KeyError, ValueError):
                raise ConfigurationError(
                    f"{file}: {model} needs numbers input_per_m and output_per_m "
                    "(and, if given, cached_input_per_m, cache_write_per_m)"
                ) from None
        return cls(prices)

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model``, or of the longest known name it starts with."""
        if model in self._cache:
            return self._cache[model]
        found = self._prices.get(model)
        if found is None:
            candidates = [name for name in self._prices if model.startswith(name + "-")]
            if candidates:
                found = self._prices[max(candidates, key=len)]
        self._cache[model] = found
        return found

    def cost(self, model: str, usage: Usage) -> float | None:
        """The price of ``usage`` on ``model``, or ``None`` if the model's price is unknown."""
        price = self.price(model)
        return None if price is None else price.cost(usage)
