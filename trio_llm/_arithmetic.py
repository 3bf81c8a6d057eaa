"""The arithmetic accuracy experiment: N expressions such as ``12 + 7 x 3``, answered as JSON,
scored for accuracy, format errors and wrong answers. ``trio-llm demo`` and
``examples/arithmetic.py`` run it.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

import attrs

from ._models import Result
from .testing._mock_content import evaluate_arithmetic

__all__ = ["ArithmeticScore", "make_problems", "prompt_for", "score"]

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


@attrs.frozen(kw_only=True)
class Problem:
    """One expression and its true value."""

    expression: str
    answer: int


def make_problems(n: int, *, seed: int = 0) -> list[Problem]:
    """``n`` integer expressions of 2 to 4 operands with ``+``, ``-`` and ``x``."""
    rng = random.Random(seed)
    problems = []
    for _ in range(n):
        operands = [rng.randint(1, 20) for _ in range(rng.randint(2, 4))]
        expression = str(operands[0])
        for operand in operands[1:]:
            expression += f" {rng.choice('+-x')} {operand}"
        value = evaluate_arithmetic(expression)
        assert isinstance(value, int)
        problems.append(Problem(expression=expression, answer=value))
    return problems


def prompt_for(problem: Problem) -> str:
    """The prompt: the expression, and the JSON shape the answer must have."""
    return (
        f"Compute {problem.expression}. Reply with JSON only, exactly like "
        '{"answer": 42}. Here x means multiply, with the usual precedence.'
    )


@attrs.frozen(kw_only=True)
class ArithmeticScore:
    """How the answers scored."""

    total: int
    correct: int
    wrong: int
    format_errors: int
    failed: int

    @property
    def accuracy(self) -> float:
        """Correct answers over all problems."""
        return self.correct / self.total if self.total else 0.0


def parse_answer(text: str) -> int | None:
    """The integer in ``{"answer": N}`` (code fences allowed), or ``None`` if malformed."""
    try:
        data = json.loads(_FENCE.sub("", text.strip()))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    answer = data.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return None
    return int(answer) if float(answer).is_integer() else None


def score(problems: Sequence[Problem], results: Sequence[Result]) -> ArithmeticScore:
    """Score ``results`` (in input order) against ``problems``."""
    correct = wrong = format_errors = failed = 0
    for problem, result in zip(problems, results, strict=True):
        if not result.ok or result.text is None:
            failed += 1
            continue
        answer = parse_answer(result.text)
        if answer is None:
            format_errors += 1
        elif answer == problem.answer:
            correct += 1
        else:
            wrong += 1
    return ArithmeticScore(
        total=len(problems),
        correct=correct,
        wrong=wrong,
        format_errors=format_errors,
        failed=failed,
    )
