"""The key pool: API keys and their limits, as configuration.

A ``KeyPool`` says which keys an endpoint has and what limits each key (and the account as a
whole) is known to have. It holds no run state: the engine's scheduler (``trio_llm._scheduler``)
turns it into buckets, leases and breakers for each trio run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import final

from ._config import Limits
from ._errors import ConfigurationError
from ._secrets import ApiKey

__all__ = ["KeyPool"]


def _checked_key(key: object, position: int) -> str:
    """A key as sent in a header: a non-empty string of visible ASCII characters."""
    if not isinstance(key, str):
        raise ConfigurationError(
            f"API key #{position + 1} must be a string, got {type(key).__name__}\n"
            "HINT: keys=['sk-...'], or keys=trio_llm.KeyPool.from_env('OPENAI_API_KEY')"
        )
    secret = key.strip()
    if not secret:
        raise ConfigurationError(f"API key #{position + 1} is empty")
    bad = next((c for c in secret if not 33 <= ord(c) <= 126), None)
    if bad is not None:
        # Never echo the key: name the position and the kind of character only.
        what = "a space or control character" if ord(bad) < 128 else "a non-ASCII character"
        raise ConfigurationError(
            f"API key #{position + 1} contains {what}, which no HTTP header can carry; "
            "check how it was copied"
        )
    return secret


@final
class KeyPool:
    """API keys with their limits, chosen per request by who can send soonest.

    Args:
        keys: the secrets (at least one).
        limits: per-key limits; ``None`` leaves them to the engine's ``limits`` argument.
        provider_limits: limits shared by all keys (one account or deployment), or ``None``.

    Build one from the environment with ``KeyPool.from_env("OPENAI_API_KEY")`` (comma-separated
    keys) or from a ``.env`` file with ``KeyPool.from_dotenv(".env", "OPENAI_API_KEY")``.
    """

    def __init__(
        self,
        keys: Iterable[str | ApiKey],
        *,
        limits: Limits | None = None,
        provider_limits: Limits | None = None,
    ) -> None:
        if isinstance(keys, str):
            raise ConfigurationError(
                "keys must be a list of keys, not one string\nHINT: keys=['sk-...'] or "
                "keys=trio_llm.KeyPool.from_env('OPENAI_API_KEY')"
            )
        api_keys: list[ApiKey] = []
        for position, key in enumerate(keys):
            api_key = key if isinstance(key, ApiKey) else ApiKey(_checked_key(key, position))
            if api_key not in api_keys:
                api_keys.append(api_key)
        if not api_keys:
            raise ConfigurationError(
                "no API keys given\nHINT: pass keys=['sk-...'] or "
                "keys=trio_llm.KeyPool.from_env('OPENAI_API_KEY')"
            )
        for name, value in (("limits", limits), ("provider_limits", provider_limits)):
            if value is not None and not isinstance(value, Limits):
                raise ConfigurationError(
                    f"{name} must be a trio_llm.Limits, got {type(value).__name__}\n"
                    "HINT: limits=trio_llm.Limits(rpm=500, tpm=200_000)"
                )
        self._api_keys = tuple(api_keys)
        self.limits = limits
        self.provider_limits = provider_limits

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_env(cls, name: str = "OPENAI_API_KEY", *, limits: Limits | None = None) -> KeyPool:
        """Keys from a comma-separated environment variable."""
        value = os.environ.get(name, "")
        keys = [part.strip() for part in value.split(",") if part.strip()]
        if not keys:
            raise ConfigurationError(
                f"environment variable {name} is empty or unset\n"
                f"HINT: export {name}=sk-...,sk-... (comma-separated), or pass keys=[...]"
            )
        return cls(keys, limits=limits)

    @classmethod
    def from_dotenv(
        cls,
        path: str | os.PathLike[str],
        name: str = "OPENAI_API_KEY",
        *,
        limits: Limits | None = None,
    ) -> KeyPool:
        """Keys from ``NAME=k1,k2`` in a ``.env`` file (``export`` and quotes allowed)."""
        file = Path(path)
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {file}: {exc.strerror}") from None
        for line in lines:
            stripped = line.strip().removeprefix("export ").strip()
            if stripped.startswith("#") or "=" not in stripped:
                continue
            var, _, value = stripped.partition("=")
            if var.strip() == name:
                value = value.strip()
                if value[:1] in ("'", '"') and value[0] in value[1:]:
                    value = value[1 : value.index(value[0], 1)]  # quoted: up to the close
                else:
                    value = value.split(" #", 1)[0]  # unquoted: " # ..." is a comment
                keys = [part.strip() for part in value.split(",") if part.strip()]
                if keys:
                    return cls(keys, limits=limits)
        raise ConfigurationError(f"{file} sets no {name}=...")

    def __repr__(self) -> str:
        return f"KeyPool([{', '.join(k.fingerprint for k in self._api_keys)}])"

    def __len__(self) -> int:
        return len(self._api_keys)

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        """The keys (each shows only its fingerprint)."""
        return self._api_keys
