"""What the mock "model" says: a deterministic function of the prompt.

Every reply is computed from the prompt alone, so a test can predict each result and tell that it
belongs to its own input even when thousands of requests finish out of order:

- a prompt containing an integer arithmetic expression (``12 + 7 x 3``) gets the right answer
  as ``{"answer": 33}``, so a demo can check that answers are correct and not only present;
- any other prompt gets ``mock-<first 12 hex of sha256(prompt)>`` and filler words, for a
  length of 8..40 mock tokens chosen by the same hash.

The mock's token count is ``ceil(len(text) / 4)`` (at least 1): close enough to a real
tokenizer for rate limiting, and trivially predictable in tests.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from fractions import Fraction

__all__ = [
    "count_tokens",
    "evaluate_arithmetic",
    "mock_reply",
    "prompt_digest",
    "truncate_to_tokens",
]

_CHARS_PER_TOKEN = 4
_MIN_REPLY_TOKENS = 8
_MAX_REPLY_TOKENS = 40

# Enough variety to look like text in a log, few enough to keep replies cheap to build.
_FILLER_WORDS = (
    "alpha", "bravo", "cedar", "delta", "ember", "fjord", "gamma", "harbor", "iris", "juniper",
    "kelp", "lumen", "maple", "nectar", "onyx", "prism", "quartz", "river", "sierra", "tundra",
    "umber", "velvet", "willow", "xenon", "yarrow", "zephyr",
)  # fmt: skip

# A run of characters that can belong to an arithmetic expression. A lone "x" counts as "times"
# only when no letter touches it, so "max" or "0x1f" words don't turn into multiplications.
_EXPRESSION_RUN = re.compile("(?:[0-9()+\\-*/\u00d7\u00f7\\s]|(?<![A-Za-z])x(?![A-Za-z]))+")
_TOKEN = re.compile(r"\s*(?:(\d+)|(.))", re.DOTALL)
# Caps the work (and the size of the answer) for a hostile prompt.
_MAX_EXPRESSION_CHARS = 256
_MAX_DIGITS = 64


def count_tokens(text: str) -> int:
    """Return the mock's token count for *text*: ``ceil(len(text) / 4)``, at least 1."""
    return max(1, -(-len(text) // _CHARS_PER_TOKEN))


def prompt_digest(prompt: str) -> bytes:
    """Return sha256 of the prompt, the root of everything the mock derives from it."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()


def mock_reply(prompt: str) -> str:
    """Return the mock's full reply to *prompt* (what it answers when no ``max_tokens`` is set).

    Args:
        prompt: the text of the last user message.

    Returns:
        ``{"answer": N}`` when the prompt contains an integer arithmetic expression, otherwise
        ``mock-<first 12 hex of sha256(prompt)>`` followed by filler words, 8 to 40 mock tokens
        long.
    """
    answer = evaluate_arithmetic(prompt)
    if answer is not None:
        return json.dumps({"answer": answer})
    return _hash_reply(prompt_digest(prompt))


def _hash_reply(digest: bytes) -> str:
    n_tokens = _MIN_REPLY_TOKENS + digest[6] % (_MAX_REPLY_TOKENS - _MIN_REPLY_TOKENS + 1)
    n_chars = n_tokens * _CHARS_PER_TOKEN
    words = random.Random(digest).choices(_FILLER_WORDS, k=n_chars // 3)
    text = f"mock-{digest.hex()[:12]} " + " ".join(words)
    # Cut to exactly n_tokens * 4 characters; a trailing space is dropped, which leaves the
    # ceil(len / 4) count unchanged.
    return text[:n_chars].rstrip()


def evaluate_arithmetic(text: str) -> int | float | None:
    """Evaluate the first integer arithmetic expression found in *text*.

    Operators are ``+ - * x /``, the times and divide signs (U+00D7, U+00F7) and parentheses,
    with the usual precedence. Division is exact (fractions), so ``7 / 2`` is ``3.5`` and
    ``6 / 3`` is ``2``. Nothing is passed to ``eval``.

    Returns:
        The value (an ``int`` when exact), or ``None`` when *text* holds no expression with at
        least one operator, or the expression divides by zero.
    """
    for match in _EXPRESSION_RUN.finditer(text):
        run = match.group().strip()
        if not any(c.isdigit() for c in run) or len(run) > _MAX_EXPRESSION_CHARS:
            continue
        # A run may carry an unmatched bracket from the surrounding prose, "(see 2 + 2": try the
        # run as is, then with stray outer brackets stripped.
        for candidate in (run, run.strip("() \t\n")):
            value = _parse(candidate)
            if value is not None:
                return int(value) if value.denominator == 1 else float(value)
    return None


def _tokenize(text: str) -> list[str] | None:
    tokens: list[str] = []
    for number, symbol in _TOKEN.findall(text):
        if number:
            if len(number) > _MAX_DIGITS:
                return None
            tokens.append(number)
        elif symbol.isspace() or not symbol:
            continue
        else:
            tokens.append({"x": "*", "\u00d7": "*", "\u00f7": "/"}.get(symbol, symbol))
    return tokens


def _parse(text: str) -> Fraction | None:
    tokens = _tokenize(text)
    if not tokens or not any(t in "+-*/" for t in tokens):
        return None
    parser = _Parser(tokens)
    try:
        value = parser.expression()
    except (_ParseError, ZeroDivisionError):
        return None
    if parser.pos != len(tokens) or not parser.saw_binary_operator:
        return None
    return value


class _ParseError(Exception):
    pass


class _Parser:
    """Recursive descent over ``expr := term (+|- term)*; term := factor (*|/ factor)*``."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        # "-5" alone is a number, not arithmetic: require one binary operator.
        self.saw_binary_operator = False

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise _ParseError
        self.pos += 1
        return token

    def expression(self) -> Fraction:
        value = self._term()
        while self._peek() in ("+", "-"):
            operator = self._take()
            self.saw_binary_operator = True
            rhs = self._term()
            value = value + rhs if operator == "+" else value - rhs
        return value

    def _term(self) -> Fraction:
        value = self._factor()
        while self._peek() in ("*", "/"):
            operator = self._take()
            self.saw_binary_operator = True
            rhs = self._factor()
            value = value * rhs if operator == "*" else value / rhs
        return value

    def _factor(self) -> Fraction:
        item = self._take()
        if item == "-":
            return -self._factor()
        if item == "+":
            return self._factor()
        if item == "(":
            value = self.expression()
            if self._take() != ")":
                raise _ParseError
            return value
        if item.isdigit():
            return Fraction(int(item))
        raise _ParseError


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """Return the first *max_tokens* mock tokens of *text* (``4 * max_tokens`` characters)."""
    return text[: max_tokens * _CHARS_PER_TOKEN]
