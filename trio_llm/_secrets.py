"""API keys that cannot leak: the secret is only reachable on purpose, everything else shows a
short fingerprint such as ``sk-…a1b2``.
"""

from __future__ import annotations

import hashlib
from typing import final

__all__ = ["ApiKey", "fingerprint"]


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible name for a key, safe for logs and output files.

    Long keys show their prefix and last four characters (``sk-…a1b2``), as provider dashboards
    do. Short keys (test keys such as ``k1``) would be shown whole that way, so they get a hash.
    """
    if len(secret) >= 12:
        prefix = "sk-" if secret.startswith("sk-") else ""
        return f"{prefix}…{secret[-4:]}"
    digest = hashlib.sha256(secret.encode()).hexdigest()[:6]
    return f"key#{digest}"


@final
class ApiKey:
    """An API key whose ``repr`` and ``str`` show only its fingerprint."""

    __slots__ = ("_secret", "fingerprint")

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self.fingerprint = fingerprint(secret)

    def reveal(self) -> str:
        """The secret itself; call it only to build the HTTP header."""
        return self._secret

    def __repr__(self) -> str:
        return f"ApiKey({self.fingerprint!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._secret == self._secret

    def __hash__(self) -> int:
        return hash(self._secret)
