"""ApiKey and fingerprint: a key never shows its secret except through ``reveal()``."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from trio_llm import ApiKey, KeyPool
from trio_llm._secrets import fingerprint

LONG = "sk-proj-test-0123-4567-89ab-cdef-wxyz"  # fake, and not shaped like a real key


def test_fingerprint_of_long_key_shows_prefix_and_last_four() -> None:
    """A long key is shown like provider dashboards do: its prefix and last four characters."""
    assert fingerprint(LONG) == "sk-…wxyz"


def test_fingerprint_of_twelve_character_key_shows_last_four() -> None:
    """Twelve characters is long enough to show the last four; only ``sk-`` is kept in front."""
    assert fingerprint("abcdefghijkl") == "…ijkl"
    assert fingerprint("sk-abcdefghi") == "sk-…fghi"
    assert fingerprint("abcdefghijk").startswith("key#")


def test_fingerprint_of_short_key_is_hashed() -> None:
    """A short key (which the prefix form would show whole) gets a hash instead."""
    digest = hashlib.sha256(b"k1").hexdigest()[:6]
    assert fingerprint("k1") == f"key#{digest}"
    assert "k1" not in fingerprint("k1").removeprefix("key#")


def test_fingerprint_shows_no_prefix_but_sk() -> None:
    """Other prefixes are not shown (they may be part of the secret): only the last four."""
    assert fingerprint("ant-0123456789abcdef") == "…cdef"
    assert fingerprint("ключ-0123456789abcdef") == "…cdef"


def test_fingerprint_is_stable_and_distinguishes_keys() -> None:
    """The same key always gets the same fingerprint; different short keys get different ones."""
    assert fingerprint("k1") == fingerprint("k1")
    assert fingerprint("k1") != fingerprint("k2")


@given(st.text(min_size=1, max_size=64))
def test_fingerprint_never_contains_a_short_secret(secret: str) -> None:
    """A fingerprint reveals at most seven characters, and never a short key whole."""
    shown = fingerprint(secret)
    if len(secret) < 12:
        assert shown.startswith("key#")
        assert len(shown) == 10
    else:
        assert shown.endswith(secret[-4:])
        assert len(shown) <= 8


def test_api_key_repr_and_str_show_only_the_fingerprint() -> None:
    """repr() and str() of an ApiKey show the fingerprint, never the secret."""
    key = ApiKey(LONG)
    assert repr(key) == "ApiKey('sk-…wxyz')"
    assert str(key) == repr(key)
    assert LONG not in repr(key)
    assert LONG not in f"{key}"
    assert LONG not in repr([key])
    assert key.fingerprint == "sk-…wxyz"


def test_api_key_reveal_returns_the_secret() -> None:
    """reveal() is the one way to get the secret back (to build the HTTP header)."""
    assert ApiKey(LONG).reveal() == LONG


def test_api_keys_compare_and_hash_by_secret() -> None:
    """Two ApiKeys with the same secret are equal and collapse in a set."""
    assert ApiKey("k1") == ApiKey("k1")
    assert ApiKey("k1") != ApiKey("k2")
    assert ApiKey("k1") != "k1"
    assert len({ApiKey("k1"), ApiKey("k1"), ApiKey("k2")}) == 2


def test_key_pool_repr_shows_fingerprints_only() -> None:
    """repr() of a KeyPool lists fingerprints, never the secrets."""
    other = "sk-ant-api03-zyxwvutsrqponmlkjihgfedcba9876"
    pool = KeyPool([LONG, other, "k1"])
    text = repr(pool)
    assert text == f"KeyPool([sk-…wxyz, sk-…9876, {fingerprint('k1')}])"
    for secret in (LONG, other):
        assert secret not in text
        assert secret not in repr(pool.keys)
