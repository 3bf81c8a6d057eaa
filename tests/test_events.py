"""The event catalogue: documented, named as constants, each with a log level."""

from __future__ import annotations

import re

from trio_llm import _events as ev


def test_every_documented_event_has_a_constant_and_a_level() -> None:
    """The catalogue in the module docs lists exactly the events the engine can emit."""
    assert ev.__doc__ is not None
    documented = set(re.findall(r"^``([a-z_]+\.[a-z_]+)``", ev.__doc__, flags=re.MULTILINE))
    constants = {
        value for name, value in vars(ev).items() if name.isupper() and isinstance(value, str)
    }
    assert documented == constants == set(ev.LEVELS)


def test_consumers_see_every_event_and_may_drop_them() -> None:
    """A consumer gets each event dict; raising structlog.DropEvent stops nothing else."""
    import structlog

    seen: list[str] = []

    def dropper(_logger: object, _method: str, event: dict[str, object]) -> None:
        raise structlog.DropEvent

    hub = ev.EventHub((dropper, lambda _l, _m, event: seen.append(str(event["event"]))))
    hub.emit(ev.RUN_STARTED, run_id="run-1")
    assert seen == ["run.started"]
