"""Token estimates made before sending, so the tokens/min bucket can be charged up front.

The estimate is reconciled with the response's real ``usage`` afterwards (the key pool refunds
or charges the difference), so it only needs to be cheap and roughly right. For exact counts
plug in a tokenizer: ``Engine(estimator=lambda request: len(enc.encode(request.prompt_text())))``
with tiktoken, where its encoding is available offline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import final

from ._models import Request

__all__ = ["CharEstimator", "Estimator"]

#: Anything that maps a request to the tokens it will consume (prompt + completion).
Estimator = Callable[[Request], int]

# Chat formats add a few tokens per message for roles and separators.
_PER_MESSAGE = 3


@final
class CharEstimator:
    """About four characters per token for the prompt, plus the completion.

    The completion counts as ``max_tokens`` when the request sets it (that is what providers
    reserve). Otherwise it is a high guess from the completions seen so far in this run (fed by
    ``observe``): their mean plus three times their mean deviation, starting at
    ``default_completion``. Guessing high costs little (the difference comes back when the
    response arrives); guessing low sends requests the server then refuses with a 429.
    """

    __slots__ = ("_completions", "_deviation", "_mean", "default_completion")

    def __init__(self, default_completion: int = 256) -> None:
        self.default_completion = default_completion
        self._completions = 0
        self._mean = 0.0
        self._deviation = 0.0

    def prompt_tokens(self, request: Request) -> int:
        """The prompt's tokens: characters / 4, plus a few per message."""
        chars = len(request.prompt_text())
        return max(1, -(-chars // 4)) + _PER_MESSAGE * len(request.messages)

    def completion_tokens(self, request: Request) -> int:
        """The completion's expected tokens (none for an embedding: it generates nothing)."""
        if request.is_embedding:
            return 0
        cap = request.max_tokens
        if cap is not None:
            return cap
        if self._completions:
            return math.ceil(self._mean + 3 * self._deviation)
        return self.default_completion

    def __call__(self, request: Request) -> int:
        return self.prompt_tokens(request) + self.completion_tokens(request)

    def observe(self, completion_tokens: int) -> None:
        """Learn from a real completion length (used when requests set no ``max_tokens``)."""
        # Running mean and mean absolute deviation; after the first few, an exponential average
        # so that a change in the answers' length is followed.
        self._completions += 1
        weight = max(1 / self._completions, 0.02)
        error = completion_tokens - self._mean
        self._mean += weight * error
        self._deviation += weight * (abs(error) - self._deviation)
