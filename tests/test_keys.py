"""KeyPool and the configuration values: keys, where they come from, limits and policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from trio_llm import ConfigurationError, KeyPool, Limits, RetryPolicy
from trio_llm._secrets import ApiKey

A = "sk-test-aaaaaaaaaaaaaaaa1111"
B = "sk-test-bbbbbbbbbbbbbbbb2222"
FP_A = "sk-…1111"
FP_B = "sk-…2222"


# --- construction -------------------------------------------------------------------------


def test_duplicate_keys_are_collapsed() -> None:
    """The same key given twice (even with spaces or as ApiKey) is one key."""
    pool = KeyPool([A, f" {A} ", ApiKey(A), B])
    assert len(pool) == 2
    assert [key.fingerprint for key in pool.keys] == [FP_A, FP_B]


@pytest.mark.parametrize("keys", [[], [""], ["  "], [A, ""]])
def test_no_or_empty_keys_are_a_configuration_error(keys: list[str]) -> None:
    """A pool without keys, or with an empty one, is refused at construction."""
    with pytest.raises(ConfigurationError):
        KeyPool(keys)


def test_no_keys_error_has_a_hint() -> None:
    """The error for an empty key list says how to pass keys."""
    with pytest.raises(ConfigurationError, match="HINT: pass keys="):
        KeyPool([])


def test_from_env_splits_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_env reads comma-separated keys, ignoring blanks and repeats."""
    monkeypatch.setenv("TEST_LLM_KEYS", f" {A} ,, {B},{A}, ")
    pool = KeyPool.from_env("TEST_LLM_KEYS", limits=Limits(rpm=10))
    assert [key.reveal() for key in pool.keys] == [A, B]
    assert pool.limits == Limits(rpm=10)


@pytest.mark.parametrize("value", [None, "", " , ,"])
def test_from_env_empty_is_a_configuration_error_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """An unset or empty variable is refused with a HINT naming the variable."""
    if value is None:
        monkeypatch.delenv("TEST_LLM_KEYS", raising=False)
    else:
        monkeypatch.setenv("TEST_LLM_KEYS", value)
    with pytest.raises(
        ConfigurationError, match=r"TEST_LLM_KEYS[\s\S]*HINT: export TEST_LLM_KEYS="
    ):
        KeyPool.from_env("TEST_LLM_KEYS")


@pytest.mark.parametrize(
    "line",
    [
        f"OPENAI_API_KEY={A},{B}",
        f"export OPENAI_API_KEY={A},{B}",
        f'OPENAI_API_KEY="{A},{B}"',
        f"OPENAI_API_KEY='{A}, {B}'",
        f"  export   OPENAI_API_KEY = {A} , {B}  ",
    ],
)
def test_from_dotenv_reads_the_variable(tmp_path: Path, line: str) -> None:
    """from_dotenv reads NAME=k1,k2 with export, quotes and spaces, skipping comments."""
    env = tmp_path / ".env"
    env.write_text(
        f"# OPENAI_API_KEY=sk-commented-out-key-0000\nOTHER=1\n\n{line}\n", encoding="utf-8"
    )
    pool = KeyPool.from_dotenv(env)
    assert [key.reveal() for key in pool.keys] == [A, B]


def test_from_dotenv_ignores_inline_comments(tmp_path: Path) -> None:
    """A comment after the value (as python-dotenv allows) is not part of the key."""
    env = tmp_path / ".env"
    env.write_text(f"OPENAI_API_KEY={A},{B}  # team keys\n", encoding="utf-8")
    assert [key.reveal() for key in KeyPool.from_dotenv(env).keys] == [A, B]


def test_from_dotenv_without_the_variable_is_a_configuration_error(tmp_path: Path) -> None:
    """A .env file that does not set the variable is refused, naming it."""
    env = tmp_path / ".env"
    env.write_text("# OPENAI_API_KEY=x\nOPENAI_API_KEY=\nOTHER=1\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="sets no OPENAI_API_KEY"):
        KeyPool.from_dotenv(env)


def test_from_dotenv_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A .env file that cannot be read is a ConfigurationError, not an OSError."""
    with pytest.raises(ConfigurationError, match="cannot read"):
        KeyPool.from_dotenv(tmp_path / "missing.env")


# --- configuration values -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (Limits, "rpm", 0),
        (Limits, "rpm", -60),
        (Limits, "tpm", 0.0),
        (Limits, "tpm", float("nan")),
        (Limits, "burst_s", 0),
        (Limits, "burst_s", -1),
        (RetryPolicy, "attempts", 0),
        (RetryPolicy, "wait_initial", -0.5),
        (RetryPolicy, "wait_max", -1),
        (RetryPolicy, "wait_jitter", -1),
        (RetryPolicy, "wait_exp_base", 0),
        (RetryPolicy, "max_retry_after", -1),
        (RetryPolicy, "deadline", 0),
    ],
)
def test_bad_settings_raise_configuration_error_naming_the_field(
    cls: type, field: str, value: float
) -> None:
    """A zero or negative limit or retry setting fails at construction, naming the field."""
    with pytest.raises(ConfigurationError, match=rf"^{field} must be") as info:
        cls(**{field: value})
    assert isinstance(info.value, ValueError)


def test_good_settings_are_accepted() -> None:
    """Positive limits, None (unknown) and zero waits are valid."""
    assert Limits(rpm=None, tpm=None).rpm is None
    assert Limits(rpm=0.5, tpm=1, burst_s=0.1).burst_s == 0.1
    assert RetryPolicy(wait_initial=0, wait_max=0, wait_jitter=0, deadline=None).attempts == 8


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ([None], "must be a string"),
        ([A, 42], "#2 must be a string"),
        (["sk-ünïcode-key-000001"], "non-ASCII"),
        (["sk-with space-00000001"], "space or control"),
        (["sk-tab\tkey-0000000001"], "space or control"),
    ],
)
def test_keys_that_no_header_can_carry_are_refused_at_construction(
    keys: list[object], words: str
) -> None:
    """None, a number, a non-ASCII or spaced key fail at construction, never mid-run, and the
    message names the key's position without echoing it."""
    with pytest.raises(ConfigurationError, match=words) as info:
        KeyPool(keys)  # type: ignore[arg-type]
    for key in keys:
        if isinstance(key, str):
            assert key not in str(info.value)


def test_one_string_instead_of_a_list_of_keys_is_refused() -> None:
    """A single string would be a key per character: refused with a HINT."""
    with pytest.raises(ConfigurationError, match="HINT"):
        KeyPool(A)


@pytest.mark.parametrize("limits", [{"rpm": 5}, 500, "fast"])
def test_limits_that_are_not_limits_are_refused(limits: object) -> None:
    """limits={"rpm": 5} (or a bare number) is refused at construction with a HINT."""
    with pytest.raises(ConfigurationError, match=r"HINT: limits=trio_llm\.Limits"):
        KeyPool([A], limits=limits)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [True, "60", [1]])
def test_limit_values_must_be_numbers(value: object) -> None:
    """rpm=True or rpm="60" is not a number of requests per minute."""
    with pytest.raises(ConfigurationError, match="rpm must be a number"):
        Limits(rpm=value)  # type: ignore[arg-type]
