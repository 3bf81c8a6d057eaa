"""What the mock answers to ``tools`` and to a ``response_format``: deterministic, valid shapes.

- With ``tools`` (and no ``tool_choice: "none"``), unless the conversation's last message is a
  tool's result, the answer is one call of the first tool (or the one ``tool_choice`` names),
  with arguments built from its parameters' JSON schema; finish reason ``tool_calls``
  (Anthropic: a ``tool_use`` block, stop reason ``tool_use``).
- With ``response_format`` ``json_schema``, the answer is a JSON value built from the schema
  (every property, the first enum value, numbers from the prompt's hash); with
  ``json_object``, ``{"answer": <the usual reply>}``. The fault ``invalid_json`` cuts that JSON
  in half, as a model that ran out of patience does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["ToolPlan", "json_answer", "plan_tool_call", "value_for"]

_MAX_DEPTH = 8


class ToolPlan:
    """One tool call the mock will answer with."""

    __slots__ = ("arguments", "id", "name")

    def __init__(self, name: str, arguments: dict[str, Any] | Any, call_id: str) -> None:
        self.name = name
        self.arguments = arguments
        self.id = call_id

    def openai(self) -> dict[str, Any]:
        """As an entry of ``message.tool_calls``."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }

    def anthropic(self) -> dict[str, Any]:
        """As a ``tool_use`` content block."""
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": self.arguments}


def plan_tool_call(body: Mapping[str, Any], digest: bytes, api: str) -> ToolPlan | None:
    """The tool call the request gets, if it offers tools and has not just had a result."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none" or (isinstance(choice, Mapping) and choice.get("type") == "none"):
        return None
    messages = body.get("messages")
    if isinstance(messages, list) and messages and _is_tool_result(messages[-1]):
        return None
    wanted = None
    if isinstance(choice, Mapping):
        function = choice.get("function")
        wanted = function.get("name") if isinstance(function, Mapping) else choice.get("name")
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function") if api == "openai" else tool
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        if wanted is not None and function["name"] != wanted:
            continue
        schema = function.get("parameters" if api == "openai" else "input_schema")
        arguments = value_for(schema if isinstance(schema, Mapping) else {}, digest)
        prefix = "call_" if api == "openai" else "toolu_"
        return ToolPlan(function["name"], arguments, prefix + digest[:12].hex())
    return None


def _is_tool_result(message: object) -> bool:
    if not isinstance(message, Mapping):
        return False
    if message.get("role") == "tool":
        return True
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(part, Mapping) and part.get("type") == "tool_result" for part in content
    )


def json_answer(body: Mapping[str, Any], digest: bytes, reply: str) -> str | None:
    """The JSON text a ``response_format`` asks for, or ``None`` when it asks for none."""
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping):
        return None
    if fmt.get("type") == "json_object":
        return json.dumps({"answer": reply})
    if fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    value = value_for(schema if isinstance(schema, Mapping) else {}, digest)
    return json.dumps(value)


def value_for(schema: Mapping[str, Any], digest: bytes, root: Mapping[str, Any] | None = None,
              depth: int = 0) -> Any:  # fmt: skip
    """A value valid for ``schema`` (the JSON Schema most tools and models use), derived from
    ``digest``."""
    root = schema if root is None else root
    if depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return value_for(target, digest, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[digest[depth % len(digest)] % len(enum)]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], Mapping):
            return value_for(options[0], digest, root, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    number = int.from_bytes(digest[depth : depth + 2], "big")
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        return {
            name: value_for(sub if isinstance(sub, Mapping) else {}, digest, root, depth + 1)
            for name, sub in properties.items()
        }
    if kind == "array":
        items = schema.get("items")
        count = max(1, int(schema.get("minItems", 1) or 1))
        return [
            value_for(items if isinstance(items, Mapping) else {}, digest, root, depth + 1)
            for _ in range(count)
        ]
    if kind == "integer":
        low = schema.get("minimum", 0)
        high = schema.get("maximum", low + 100)
        return int(low) + number % (int(high) - int(low) + 1)
    if kind == "number":
        return float(schema.get("minimum", 0)) + (number % 1000) / 10
    if kind == "boolean":
        return number % 2 == 0
    if kind == "null":
        return None
    return f"mock-{digest[:4].hex()}"
