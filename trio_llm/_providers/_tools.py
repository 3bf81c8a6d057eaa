"""Tool calls and finish reasons, read the same way from every API.

A tool call is ``ToolCall(id, name, arguments)`` with ``arguments`` as the JSON text the model
wrote (OpenAI sends it so; Anthropic's ``input`` object is written as JSON). A finish reason is
one of ``stop``, ``length``, ``tool_calls``, ``content_filter``, ``refusal`` whatever the API
called it; a reason we do not know passes through as the server said it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from .._models import ToolCall
from ._base import dump_json

__all__ = ["anthropic_finish", "anthropic_tool_calls", "openai_finish", "openai_tool_calls"]

_OPENAI_FINISH: Final = {"function_call": "tool_calls"}
_ANTHROPIC_FINISH: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "refusal",
}


def openai_finish(value: object, *, refused: bool = False) -> str | None:
    """A chat completion's ``finish_reason`` (``function_call`` is the old ``tool_calls``;
    a message with a ``refusal`` finished as ``refusal``)."""
    if refused:
        return "refusal"
    if not isinstance(value, str):
        return None
    return _OPENAI_FINISH.get(value, value)


def anthropic_finish(value: object) -> str | None:
    """A Messages ``stop_reason`` in OpenAI's words (``end_turn`` -> ``stop``...)."""
    if not isinstance(value, str):
        return None
    return _ANTHROPIC_FINISH.get(value, value)


def openai_tool_calls(message: Mapping[str, object]) -> tuple[ToolCall, ...]:
    """``message.tool_calls`` (and the old single ``function_call``); raises ``KeyError`` /
    ``TypeError`` for a malformed one."""
    calls: list[ToolCall] = []
    raw = message.get("tool_calls")
    if isinstance(raw, list):
        for call in raw:
            function = call["function"]
            arguments = function.get("arguments")
            calls.append(
                ToolCall(
                    id=str(call.get("id") or ""),
                    name=str(function["name"]),
                    arguments=arguments if isinstance(arguments, str) else _json(arguments),
                )
            )
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping) and not calls:
        arguments = legacy.get("arguments")
        calls.append(
            ToolCall(
                id="",
                name=str(legacy["name"]),
                arguments=arguments if isinstance(arguments, str) else _json(arguments),
            )
        )
    return tuple(calls)


def anthropic_tool_calls(blocks: list[object]) -> tuple[ToolCall, ...]:
    """The ``tool_use`` blocks of a Messages response."""
    return tuple(
        ToolCall(id=str(block["id"]), name=str(block["name"]), arguments=_json(block.get("input")))
        for block in blocks
        if isinstance(block, Mapping) and block.get("type") == "tool_use"
    )


def _json(value: object) -> str:
    return dump_json({} if value is None else value).decode()
