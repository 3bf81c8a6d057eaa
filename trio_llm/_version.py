"""The package version (one place: pyproject reads it, the User-Agent sends it)."""

__version__ = "0.1.0"
