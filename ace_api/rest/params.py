"""Request parameters: documented and checked by the same flask-restx model.

Each endpoint's parameters are one flask-restx :class:`Model`. The OpenAPI
document shows it (as the JSON body of a POST and as query parameters of a
GET), and :class:`RequestSchema` validates requests against its JSON schema.
A GET's query strings are first read as the types the model declares
(booleans as true/false/1/0), so both methods go through the same checks and
give the same one-sentence errors. Domain checks (table names, filters, the
cluster) follow in the core validators.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from flask import request
from flask_restx import Model, fields
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError, best_match
from werkzeug.datastructures import MultiDict

from ace_api.rest.errors import ApiError

_TYPE_WORDS = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a JSON object",
    "array": "a list",
}
_TRUE, _FALSE = ("true", "1"), ("false", "0")
MAX_JSON_DEPTH = 32  # parameters nest two levels; resolution_details may add a few


class AnyValue(fields.Raw):
    """A field whose JSON type the schema leaves open (the core checks the value)."""

    __schema_type__ = None


def read_json_object() -> dict[str, Any]:
    """The request's JSON body as an object; 415 when it is not JSON at all."""
    if not request.is_json:
        raise ApiError("The request body must be JSON sent with "
                       "Content-Type: application/json.", 415)
    too_deep = False
    try:
        data = json.loads(request.get_data(cache=True) or b"")
    except ValueError:
        raise ApiError("The request body is not valid JSON; send a JSON object "
                       "with the parameters as keys.", 415) from None
    except RecursionError:  # the parser recursed past Python's limit: "[[[[...]]]]"
        data, too_deep = None, True
    if too_deep or _deeper_than(data, MAX_JSON_DEPTH):
        raise ApiError(f"The request body nests JSON deeper than {MAX_JSON_DEPTH} levels; "
                       "send the parameters as a flat JSON object.", 400)
    if not isinstance(data, dict):
        raise ApiError("The request body must be a JSON object with the parameters as keys.",
                       400)
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether ``data`` nests more than ``limit`` levels (checked without recursion).

    A body that parses can still be too deep for what handles it next (the schema
    check, a driver serialising it again), each of which recurses.
    """
    level: list[tuple[Any, int]] = [(data, 1)]
    while level:
        value, depth = level.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else (
            value if isinstance(value, list) else ())
        level.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


def _drop_nulls(data: dict[str, Any], model: Model) -> dict[str, Any]:
    """JSON null means "not given" for the model's own fields (and its nested models')."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        field = model.get(key)
        if isinstance(field, fields.Nested) and isinstance(value, dict):
            value = _drop_nulls(value, field.model)
        out[key] = value
    return out


def _query_value(name: str, text: str, field: fields.Raw) -> Any:
    """Read one query string as the type the model declares for it."""
    if isinstance(field, fields.Boolean):
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ApiError(f"{name} must be true or false (or 1 or 0), not {text!r}.", 400)
    if isinstance(field, fields.Integer):
        try:
            return int(text.strip())
        except ValueError:
            raise ApiError(f"{name} must be a whole number, not {text!r}.", 400) from None
    if isinstance(field, (fields.Float, fields.Arbitrary, fields.Fixed)):
        try:
            number = float(text.strip())
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ApiError(f"{name} must be a number, not {text!r}.", 400)
        return number
    return text


def _show(value: Any) -> str:
    """A value as a client wrote it: 0 for 0.0 (a query string cannot tell them apart)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)[:80]


def require_text(model: Model) -> None:
    """Give every required string of ``model`` ``minLength: 1``.

    "Required" must mean something to a client reading the OpenAPI document and
    to the schema check alike: an empty string is no cluster, table or file name.
    Done here, where every request model passes, so no declaration can forget it.
    """
    for field in model.values():
        if isinstance(field, fields.String) and field.required and not field.min_length:
            field.min_length = 1
            field.__dict__.pop("__schema__", None)  # flask-restx caches the field's schema


class RequestSchema:
    """One endpoint's parameters: the model that documents them, and their validation."""

    def __init__(self, model: Model, nested: Iterable[Model] = ()) -> None:
        nested = tuple(nested)
        for each in (model, *nested):
            require_text(each)
        self.model = model
        schema = dict(model.__schema__)
        schema["definitions"] = {m.name: m.__schema__ for m in nested}
        self._schema = schema
        self._validator = Draft4Validator(schema)

    def from_json_body(self) -> dict[str, Any]:
        """Validated parameters from a POST's JSON body."""
        return self.validate(_drop_nulls(read_json_object(), self.model))

    def from_query(self, args: MultiDict[str, str]) -> dict[str, Any]:
        """Validated parameters from a GET's query string."""
        data: dict[str, Any] = {}
        for name in args:
            values = args.getlist(name)
            if len(values) > 1:
                raise ApiError(f"The parameter {name} is given {len(values)} times; "
                               "give it once.", 400)
            if values[0] == "":
                continue
            field = self.model.get(name)
            data[name] = values[0] if field is None else _query_value(name, values[0], field)
        return self.validate(data)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        error = best_match(self._validator.iter_errors(data))
        if error is not None:
            raise ApiError(self._message(error), 400)
        return data

    def query_doc(self) -> dict[str, dict[str, Any]]:
        """The model's fields as OpenAPI query parameters, for a GET's documentation."""
        params: dict[str, dict[str, Any]] = {}
        required = set(self._schema.get("required", ()))
        for name, prop in self._schema["properties"].items():
            doc = {k: v for k, v in prop.items()
                   if k in ("type", "description", "default", "enum", "minimum", "maximum",
                            "exclusiveMinimum", "exclusiveMaximum", "format", "minLength")}
            doc.setdefault("type", "string")
            params[name] = {"in": "query", "required": name in required, **doc}
        return params

    def _message(self, error: ValidationError) -> str:
        """One plain sentence for a JSON-schema violation."""
        path = ".".join(str(p) for p in error.absolute_path)
        name = path or "the request"
        value = error.instance
        kind = error.validator
        if kind == "required":
            missing = [k for k in error.validator_value if k not in (value or {})]
            where = f"{path}." if path else ""
            return f"{where}{missing[0] if missing else error.message} is required."
        if kind == "additionalProperties":
            allowed = error.schema.get("properties", {})
            extra = sorted(k for k in value if k not in allowed)
            where = f" in {path}" if path else ""
            return (f"{', '.join(extra)} {'is not a parameter' if len(extra) == 1 else 'are not parameters'}"
                    f"{where}; the accepted parameters are {', '.join(allowed)}.")
        if kind == "type":
            expected = error.validator_value
            words = (" or ".join(str(_TYPE_WORDS.get(t, t)) for t in expected)
                     if isinstance(expected, list) else _TYPE_WORDS.get(expected, expected))
            return f"{name} must be {words}, not {_show(value)}."
        if kind == "minLength":
            return f"{name} must not be empty."
        if kind == "enum":
            return (f"{name} must be one of {', '.join(map(str, error.validator_value))}; "
                    f"got {_show(value)}.")
        if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            schema = error.schema
            low, high = schema.get("minimum"), schema.get("maximum")
            low_word = "greater than" if schema.get("exclusiveMinimum") else "at least"
            high_word = "less than" if schema.get("exclusiveMaximum") else "at most"
            parts = []
            if low is not None:
                parts.append(f"{low_word} {low}")
            if high is not None:
                parts.append(f"{high_word} {high}")
            return f"{name} must be {' and '.join(parts)}; got {_show(value)}."
        return f"{name} is not valid: {error.message}."
