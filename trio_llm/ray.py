"""Ray Data: an engine per actor, for ``Dataset.map_batches``.

::

    ds.map_batches(
        trio_llm.ray.LLMPredictor,
        fn_constructor_kwargs={"engine_factory": make_engine},   # runs in each actor
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=500,
    )

Each actor builds its engine once (``engine_factory()``, a picklable function: Ray sends it to
the actor) and keeps one trio loop in a thread of its own for its whole life: the engine stays
open (one HTTP pool, one scheduler, one connection to the limits store) and Ray's synchronous
``__call__`` hands each batch to it with ``trio.from_thread.run`` and waits for its results.
Actors share one key pool's limits when the factory gives the engine
``limits_store=trio_llm.RedisStore(url)``: then all of them together stay within the limits.

Every row gets an answer or an error, never neither: the prompt column is read as ``map``
reads prompts (strings, messages lists, request dicts) and two columns are added,
``output_column`` (the text, or ``None``) and ``error_column`` (``"kind: message"``, or
``None``). Batches come as numpy dicts (Ray's default) or pandas frames
(``batch_format="pandas"``); they go back the same way. Ray itself is not imported here: the
``ray`` extra installs it for the pipelines that use this.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, final

import trio

from ._engine import Engine
from ._errors import ConfigurationError
from ._models import Prompt, Result

__all__ = ["LLMPredictor"]


@final
class _Loop:
    """A trio loop in a daemon thread, holding ``engine`` open until ``close``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="trio-llm engine", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to the constructor or the next call
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        engine = self._engine
        self._stop = trio.Event()
        async with contextlib.AsyncExitStack() as stack:
            store = engine.limits_store
            if store is not None:
                # Connected here, in the loop's own task: a connection opened by whichever
                # worker first needs it would leave its task group inside that worker's
                # cancel scope (coredis is anyio), and trio's scope stack would break.
                enter = getattr(store, "__aenter__", None)
                if enter is not None:
                    await enter()
                stack.push_async_callback(store.aclose)
            await stack.enter_async_context(engine)
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    def map(self, prompts: Sequence[Prompt]) -> list[Result]:
        if self._token is None or not self._thread.is_alive():
            raise RuntimeError(f"the actor's engine loop has stopped ({self._error!r})")
        return trio.from_thread.run(self._engine.map, prompts, trio_token=self._token)

    def close(self) -> None:
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):  # it ended on its own
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            self._thread.join(30)


@final
class LLMPredictor:
    """A callable class for ``Dataset.map_batches``: one long-lived engine per actor.

    Args:
        engine_factory: builds the actor's ``Engine`` (called once, in the actor). Give the
            engine ``limits_store=trio_llm.RedisStore(url)`` so that the actors share limits.
        prompt_column: the column holding each row's prompt (a string, a messages list or a
            request dict).
        output_column: the column the answer's text goes to (``None`` for a failed row).
        error_column: the column a failed row's ``"kind: message"`` goes to (``None`` when it
            succeeded).
    """

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        *,
        prompt_column: str = "prompt",
        output_column: str = "response",
        error_column: str = "error",
    ) -> None:
        if not callable(engine_factory):
            raise ConfigurationError(
                "engine_factory must be a function that returns an Engine\n"
                "HINT: LLMPredictor(engine_factory=make_engine), with `def make_engine(): "
                "return trio_llm.Engine(...)` at module level (Ray pickles it)"
            )
        engine = engine_factory()
        if not isinstance(engine, Engine):
            raise ConfigurationError(
                f"engine_factory returned {type(engine).__name__}, not a trio_llm.Engine"
            )
        self.prompt_column = prompt_column
        self.output_column = output_column
        self.error_column = error_column
        self._loop = _Loop(engine)

    def __call__(self, batch: Any) -> Any:
        """Send the batch's prompts; return the batch with the answer and error columns."""
        try:
            column = batch[self.prompt_column]
        except (KeyError, IndexError):
            raise ConfigurationError(
                f"the batch has no column {self.prompt_column!r}\n"
                "HINT: LLMPredictor(..., prompt_column='<the column holding the prompts>')"
            ) from None
        prompts = [_plain(value) for value in column]
        results = self._loop.map(prompts)
        texts = [r.text if r.ok else None for r in results]
        errors = [
            None if r.ok or r.error is None else f"{r.error.kind.value}: {r.error.message}"
            for r in results
        ]
        if hasattr(batch, "columns") and hasattr(batch, "copy"):  # a pandas DataFrame
            out = batch.copy()
            out[self.output_column] = texts
            out[self.error_column] = errors
            return out
        if isinstance(batch, Mapping):  # numpy arrays by column, Ray's default
            import numpy as np

            answered = dict(batch)
            answered[self.output_column] = np.array(texts, dtype=object)
            answered[self.error_column] = np.array(errors, dtype=object)
            return answered
        raise ConfigurationError(
            f"cannot add columns to a batch of type {type(batch).__name__}\n"
            "HINT: map_batches(..., batch_format='numpy') or batch_format='pandas'"
        )

    def close(self) -> None:
        """Stop the actor's loop: the engine and its limits store are closed."""
        self._loop.close()

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.close()


def _plain(value: Any) -> Prompt:
    """A prompt as ``map`` reads it: numpy arrays (Ray's lists) and scalars made plain."""
    tolist = getattr(value, "tolist", None)
    return tolist() if tolist is not None else value  # type: ignore[no-any-return]
