"""The JSON schema of a repair plan, published as ``docs/repair-plan.schema.json``.

The schema checks the plan's shape (which keys, which types, which actions
need which fields); :mod:`~ace_shared.repair.plans.loader` validates every plan
against it and then checks what a schema cannot say (a condition's grammar, a
merge that names no rule for some column). The published file is this dict,
written out (``tests/test_repair_plans.py`` keeps the two equal).
"""

from __future__ import annotations

import json
from typing import Any

ACTIONS = ("skip", "delete", "keep_both", "keep", "take", "freshest", "merge")
DIFF_KINDS = ("values_differ", "missing", "only_on")
TAKE_MODES = ("replace", "upsert", "insert_only")
COLUMN_CHOICES = ("greatest", "least", "newest")

_NAME = {"type": "string", "minLength": 1}
_NODES = {"type": "array", "items": _NAME, "minItems": 1}
_SCALAR = {"type": ["string", "number", "boolean"]}
_KEY = {"oneOf": [_SCALAR, {"type": "array", "items": _SCALAR, "minItems": 1}]}

_TIE = {
    "description": "What to do when two versions are equally fresh but differ: skip the key, "
                   "fail the plan, or take the first of these nodes that is among the tied.",
    "oneOf": [{"enum": ["skip", "fail"]},
              {"type": "object", "properties": {"prefer": _NODES}, "required": ["prefer"],
               "additionalProperties": False}],
}

_COLUMN = {
    "description": "Where a merged column's value comes from.",
    "oneOf": [{"enum": list(COLUMN_CHOICES)},
              {"type": "object", "properties": {"from": {"oneOf": [_NAME, _NODES]}},
               "required": ["from"], "additionalProperties": False}],
}


def _needs(action: str, *required: str) -> dict[str, Any]:
    return {"if": {"properties": {"action": {"const": action}}, "required": ["action"]},
            "then": {"required": list(required)}}


_ACTION_OBJECT = {
    "type": "object",
    "properties": {
        "action": {"enum": list(ACTIONS)},
        "node": _NAME,
        "mode": {"enum": list(TAKE_MODES)},
        "prefer": _NODES,
        "by": {"oneOf": [{"const": "commit_ts"},
                         {"type": "object", "properties": {"column": _NAME},
                          "required": ["column"], "additionalProperties": False}]},
        "tie": _TIE,
        "columns": {"type": "object", "additionalProperties": _COLUMN},
        "others": _COLUMN,
    },
    "required": ["action"],
    "additionalProperties": False,
    "allOf": [_needs("keep", "node"), _needs("take", "node"), _needs("freshest", "by", "tie")],
}

ACTION = {"oneOf": [{"enum": ["skip", "delete", "keep_both"]}, _ACTION_OBJECT]}

SELECTOR = {
    "type": "object",
    "properties": {
        "keys": {"type": "array", "items": _KEY, "minItems": 1},
        "key_range": {"type": "object", "properties": {"from": _KEY, "to": _KEY},
                      "minProperties": 1, "additionalProperties": False},
        "diff": {"oneOf": [{"enum": list(DIFF_KINDS)},
                           {"type": "array", "items": {"enum": list(DIFF_KINDS)},
                            "minItems": 1}]},
        "missing_on": {"oneOf": [_NAME, _NODES]},
        "only_on": _NAME,
        "columns_differ": {"oneOf": [_NAME, {"type": "array", "items": _NAME, "minItems": 1}]},
        "condition": _NAME,
    },
    "additionalProperties": False,
}

SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "repair-plan.schema.json",
    "title": "ACE repair plan",
    "description": "Rules that decide, key by key, which version of a row each node ends with "
                   "(docs/repair-plans.md).",
    "type": "object",
    "properties": {
        "version": {"const": 1},
        "default": ACTION,
        "tables": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": r"^[^.]+\.[^.]+$"},
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "default": ACTION,
                    "rules": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"name": _NAME, "when": SELECTOR, "do": ACTION},
                        "required": ["do"], "additionalProperties": False}},
                    "overrides": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"name": _NAME,
                                       "keys": {"type": "array", "items": _KEY, "minItems": 1},
                                       "do": ACTION},
                        "required": ["keys", "do"], "additionalProperties": False}},
                },
                "additionalProperties": False,
            },
        },
    },
    "required": ["version", "tables"],
    "additionalProperties": False,
}


def schema_text() -> str:
    """The schema as published."""
    return json.dumps(SCHEMA, indent=2) + "\n"
