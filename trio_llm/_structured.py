"""Structured output: an answer checked against the schema its request asked for.

A schema comes from the request's ``response_format`` (``{"type": "json_schema",
"json_schema": {"schema": {...}}}``, or ``{"type": "json_object"}``) or from Python
(``engine.map(prompts, schema=Model)``): a pydantic model, an attrs class, or a JSON schema
dict. The run checks each answer on its way back, after the key and its limits have settled
the attempt (the server did its job): an answer that does not parse or validate becomes an
``invalid_output`` outcome, asked again up to ``RetryPolicy.invalid_output_attempts`` times;
one that does carries its parsed value to ``Result.parsed``.

JSON schemas are checked with ``jsonschema`` (the reference implementation; the ``schema``
extra), pydantic models with pydantic, attrs classes with a cattrs converter of their own.
"""

from __future__ import annotations

import collections.abc
import functools
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, final

import attrs
import cattrs

from ._errors import ConfigurationError
from ._models import Request
from ._outcome import Outcome
from ._policy import ErrorKind

__all__ = ["OutputSchema", "check_output", "schema_of_request"]


class _Invalid(Exception):
    """The answer does not parse or does not validate; the message says where."""


@final
@attrs.frozen(kw_only=True)
class OutputSchema:
    """What an answer must be, and how to parse it.

    Attributes:
        name: the schema's name (``response_format.json_schema.name``).
        json_schema: the JSON schema sent in ``response_format`` (``None``: any JSON object).
        parse: the answer's text to its value; raises ``_Invalid`` saying what is wrong.
    """

    name: str
    json_schema: Mapping[str, Any] | None
    parse: Callable[[str], Any] = attrs.field(repr=False)

    @classmethod
    def of(cls, spec: object) -> OutputSchema:
        """The schema for a pydantic model, an attrs class or a JSON schema dict.

        Raises:
            ConfigurationError: ``spec`` is none of these (or needs a library not installed).
        """
        if isinstance(spec, OutputSchema):
            return spec
        if isinstance(spec, type) and hasattr(spec, "model_validate_json"):
            return _pydantic(spec)
        if isinstance(spec, type) and attrs.has(spec):
            return _attrs(spec)
        if isinstance(spec, Mapping):
            return cls(
                name=str(spec.get("title") or "answer"),
                json_schema=spec,
                parse=_json_schema_parser(json.dumps(spec, sort_keys=True)),
            )
        raise ConfigurationError(
            f"schema must be a pydantic model, an attrs class or a JSON schema dict, got "
            f"{spec!r}\nHINT: engine.map(prompts, schema=MyModel)"
        )

    def response_format(self) -> dict[str, Any]:
        """The ``response_format`` that asks the model for this schema."""
        if self.json_schema is None:
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": dict(self.json_schema), "strict": True},
        }


def schema_of_request(request: Request) -> OutputSchema | None:
    """The schema a request's own ``response_format`` asks for, if any (built once per
    distinct schema)."""
    value = request.params.get("response_format")
    if not isinstance(value, Mapping):
        return None
    kind = value.get("type")
    if kind == "json_object":
        return _ANY_OBJECT
    if kind != "json_schema":
        return None
    spec = value.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping):
        return _ANY_OBJECT
    return _cached(json.dumps(schema, sort_keys=True), str(spec.get("name") or "answer"))  # type: ignore[union-attr]


@functools.lru_cache(maxsize=64)
def _cached(text: str, name: str) -> OutputSchema:
    return OutputSchema(name=name, json_schema=json.loads(text), parse=_json_schema_parser(text))


def check_output(outcome: Outcome, schema: OutputSchema) -> tuple[Outcome, Any]:
    """The outcome of an answer checked against ``schema``: it as it is with the parsed
    value, or an ``invalid_output`` failure with the validation error. An answer that asks
    for tools instead of answering is not checked (the answer comes after the tools)."""
    completion = outcome.completion
    if completion is None or completion.tool_calls:
        return outcome, None
    try:
        return outcome, schema.parse(completion.text)
    except _Invalid as exc:
        failed = attrs.evolve(
            outcome,
            kind=ErrorKind.INVALID_OUTPUT,
            message=f"the answer does not match the schema {schema.name!r}: {exc}",
            code="invalid_output",
        )
        return failed, None


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _Invalid(f"not JSON ({exc})") from None


def _any_object(text: str) -> Any:
    value = _load(text)
    if not isinstance(value, dict):
        raise _Invalid(f"not a JSON object but {type(value).__name__}")
    return value


_ANY_OBJECT = OutputSchema(name="json_object", json_schema=None, parse=_any_object)


@functools.lru_cache(maxsize=64)
def _json_schema_parser(text: str) -> Callable[[str], Any]:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - the schema extra
        raise ConfigurationError(
            "checking answers against a JSON schema needs jsonschema\n"
            "HINT: pip install 'trio-llm[schema]'"
        ) from None
    schema = json.loads(text)
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigurationError(
            f"the response_format schema is not valid: {exc.message}"
        ) from None
    validator = validator_class(schema)

    def parse(answer: str) -> Any:
        value = _load(answer)
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            where = "$" + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
            )
            raise _Invalid(f"{error.message} @ {where}")
        return value

    return parse


def _pydantic(model: type) -> OutputSchema:
    def parse(answer: str) -> Any:
        try:
            return model.model_validate_json(answer)  # type: ignore[attr-defined]
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise _Invalid(str(exc).replace("\n", "; ")) from None

    return OutputSchema(
        name=model.__name__,
        json_schema=model.model_json_schema(),  # type: ignore[attr-defined]
        parse=parse,
    )


#: For the caller's attrs classes: not the wire-format converter (``_convert``).
_classes = cattrs.Converter(forbid_extra_keys=True)


def _attrs(cls: type) -> OutputSchema:
    def parse(answer: str) -> Any:
        value = _load(answer)
        try:
            return _classes.structure(value, cls)
        except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
            if isinstance(exc, cattrs.BaseValidationError):
                problems = "; ".join(cattrs.transform_error(exc, path="$"))
            else:
                problems = str(exc)
            raise _Invalid(problems) from None

    return OutputSchema(name=cls.__name__, json_schema=_attrs_schema(cls), parse=parse)


def _attrs_schema(cls: type, depth: int = 0) -> dict[str, Any]:
    """A JSON schema for an attrs class, from its fields' types (strict mode's shape: every
    field required, nothing else allowed). A type it cannot say is any value."""
    attrs.resolve_types(cls)
    fields = attrs.fields(cls)
    return {
        "type": "object",
        "title": cls.__name__,
        "properties": {f.name: _type_schema(f.type, depth + 1) for f in fields},
        "required": [f.name for f in fields],
        "additionalProperties": False,
    }


_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type_schema(tp: Any, depth: int) -> dict[str, Any]:
    if depth > 8:
        return {}
    if tp in _SIMPLE:
        return {"type": _SIMPLE[tp]}
    if tp is type(None):
        return {"type": "null"}
    if isinstance(tp, type) and attrs.has(tp):
        return _attrs_schema(tp, depth)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence) and args:
        return {"type": "array", "items": _type_schema(args[0], depth + 1)}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(arg, depth + 1) for arg in args]}
    if origin in (dict, collections.abc.Mapping):
        return {"type": "object"}
    return {}
