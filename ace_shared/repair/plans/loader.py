"""Reading a repair plan: YAML or JSON text (or a request's JSON object), checked, as a :class:`Plan`.

Three checks, each failing with one sentence that says where (the line in a
file, the path in a request body) and what to write instead:

1. the text parses (YAML, of which JSON is a part) and no mapping repeats a key;
2. the plan matches the published schema (:mod:`~ace_shared.repair.plans.schema`);
3. what the schema cannot say: each condition parses, a merge says where every
   column it names comes from, a key is written as the table's key is.

Nodes, columns and the table's key are checked later, against the diff file
(:mod:`~ace_shared.repair.plans.resolve`), since a plan may serve several
tables and clusters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError, best_match

from ace_shared.errors import RepairPlanError
from ace_shared.repair.plans.condition import Condition, ConditionError
from ace_shared.repair.plans.model import (
    FRESHEST,
    MERGE,
    TAKE,
    Action,
    ColumnRule,
    Override,
    Plan,
    Rule,
    Selector,
    TablePlan,
    Tie,
)
from ace_shared.repair.plans.schema import SCHEMA

MAX_PLAN_BYTES = 4 << 20
_VALIDATOR = Draft7Validator(SCHEMA)
Path_ = tuple[Any, ...]


class _Lines:
    """Where each value of the plan starts in its text (1-based lines), by its path."""

    def __init__(self, origin: str, node: yaml.Node | None) -> None:
        self.origin = origin
        self.lines: dict[Path_, int] = {}
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: Path_) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for k, v in node.value:
                name = k.value
                if name in seen:
                    raise RepairPlanError(
                        f"{self.origin}, line {k.start_mark.line + 1}: key {name!r} is given "
                        f"twice in one mapping (first on line {seen[name]}); keep one.")
                seen[name] = k.start_mark.line + 1
                self._walk(v, (*path, name))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, i))

    def where(self, path: Path_) -> str:
        """``FILE, line 12`` for a file; ``the repair plan at tables.public.t.rules[0]`` else."""
        if self.lines:
            path = tuple(path)
            while path not in self.lines and path:
                path = path[:-1]
            return f"{self.origin}, line {self.lines.get(path, 1)}"
        return f"{self.origin} at {show_path(path)}" if path else self.origin


def show_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "its top"


def _schema_words(err: ValidationError) -> str:
    """jsonschema's message, shortened to what a person fixes."""
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(err.schema.get("properties", {}))
        return f"{extra[0]!r} is not allowed here (allowed: {allowed})"
    if err.validator == "required":
        return str(err.message).replace("is a required property", "is required here")
    if err.validator == "propertyNames":
        return f"table {err.instance!r} must be written schema.table"
    if err.validator in ("oneOf", "anyOf"):
        inner = [e for e in err.context or () if e.validator not in ("type", "enum")
                 and not (e.validator == "const" and isinstance(err.instance, dict))]
        if isinstance(err.instance, dict) and inner:
            return _schema_words(best_match(inner))
        return f"{err.instance!r} is not a valid value here"
    if err.validator == "const" and err.path and err.path[-1] == "version":
        return "version must be 1"
    if err.validator == "enum":
        return f"{err.instance!r} must be one of {', '.join(map(str, err.validator_value))}"
    return str(err.message)


def _validate(data: Any, lines: _Lines) -> None:
    err = best_match(_VALIDATOR.iter_errors(data))
    if err is not None:
        raise RepairPlanError(f"{lines.where(tuple(err.absolute_path))}: "
                              f"{_schema_words(err)}; see docs/repair-plans.md.")


def _nodes(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _column_rule(spec: Any) -> ColumnRule:
    if isinstance(spec, str):
        return ColumnRule(spec)
    return ColumnRule("from", _nodes(spec["from"]))


def _tie(spec: Any) -> Tie | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        return Tie(spec)
    return Tie("prefer", tuple(spec["prefer"]))


def _action(spec: Any, where: str) -> Action:
    if isinstance(spec, str):
        return Action(spec)
    kind = spec["action"]
    if kind == MERGE:
        columns = {str(c): _column_rule(s) for c, s in (spec.get("columns") or {}).items()}
        others = _column_rule(spec["others"]) if "others" in spec else None
        action = Action(kind, columns=columns, others=others, tie=_tie(spec.get("tie")))
        if action.needs_meta and action.tie is None:
            raise RepairPlanError(f"{where}: a merge that takes the newest value needs tie "
                                  "(skip, fail, or prefer: [nodes]) for versions committed at "
                                  "the same moment; add one.")
        return action
    by = spec.get("by")
    return Action(kind, node=spec.get("node"), mode=spec.get("mode", "replace"),
                  prefer=tuple(spec.get("prefer") or ()),
                  by_column=by["column"] if isinstance(by, dict) else None,
                  tie=_tie(spec.get("tie")))


def _selector(spec: dict[str, Any], where: str) -> Selector:
    sel = Selector()
    if "keys" in spec:
        sel.keys = list(spec["keys"])
    if "key_range" in spec:
        sel.has_range = True
        sel.key_from, sel.key_to = spec["key_range"].get("from"), spec["key_range"].get("to")
    if "diff" in spec:
        sel.diff = _nodes(spec["diff"])
    if "missing_on" in spec:
        sel.missing_on = _nodes(spec["missing_on"])
    sel.only_on = spec.get("only_on")
    if "columns_differ" in spec:
        sel.columns_differ = _nodes(spec["columns_differ"])
    if "condition" in spec:
        try:
            sel.condition = Condition(spec["condition"])
        except ConditionError as exc:
            raise RepairPlanError(f"{where}: the condition {exc}; see the grammar in "
                                  "docs/repair-plans.md.") from None
    return sel


def _label(kind: str, index: int, name: str | None) -> str:
    return f'{kind} {index} "{name}"' if name else f"{kind} {index}"


def _table(name: str, spec: dict[str, Any], lines: _Lines) -> TablePlan:
    table = TablePlan(name)
    base: Path_ = ("tables", name)
    if "default" in spec:
        table.default = _action(spec["default"], lines.where((*base, "default")))
    for i, r in enumerate(spec.get("rules") or []):
        path = (*base, "rules", i)
        action = _action(r["do"], lines.where((*path, "do")))
        selector = _selector(r.get("when") or {}, lines.where((*path, "when", "condition")))
        table.rules.append(Rule(_label("rule", i + 1, r.get("name")), action, selector, path))
    for i, o in enumerate(spec.get("overrides") or []):
        path = (*base, "overrides", i)
        action = _action(o["do"], lines.where((*path, "do")))
        table.overrides.append(Override(_label("override", i + 1, o.get("name")),
                                        list(o["keys"]), action, path))
    return table


def _build(data: dict[str, Any], lines: _Lines) -> Plan:
    _validate(data, lines)
    default = _action(data["default"], lines.where(("default",))) if "default" in data else None
    tables = {name: _table(name, spec, lines) for name, spec in data["tables"].items()}
    for table in tables.values():
        for action, path in _actions(table):
            if action.kind == TAKE and action.mode not in ("replace", "upsert", "insert_only"):
                raise RepairPlanError(f"{lines.where(path)}: unknown mode {action.mode}.")
            if action.kind == FRESHEST and action.tie is None:
                raise RepairPlanError(f"{lines.where(path)}: freshest needs tie; add one.")
    return Plan(tables, default, data, lines.origin)


def _actions(table: TablePlan) -> Iterator[tuple[Action, Path_]]:
    for r in table.rules:
        yield r.action, (*r.path, "do")
    for o in table.overrides:
        yield o.action, (*o.path, "do")


def plan_from_text(text: str, origin: str) -> Plan:
    """Parse and check a plan written in YAML or JSON; ``origin`` names it in messages."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f", line {mark.line + 1}" if mark else ""
        raise RepairPlanError(f"{origin}{line} is neither valid YAML nor JSON "
                              f"({exc.problem or exc.context}); fix it there.") from None
    except yaml.YAMLError as exc:
        raise RepairPlanError(f"{origin} is neither valid YAML nor JSON ({exc}).") from None
    lines = _Lines(origin, node)
    if not isinstance(data, dict):
        raise RepairPlanError(f"{origin} must be a mapping with version and tables; see "
                              "docs/repair-plans.md.")
    return _build(data, lines)


def load_plan_file(path: str | Path) -> Plan:
    """A plan file, read and checked (the CLI's ``--repair-plan FILE``)."""
    p = Path(path).expanduser()
    origin = f"The repair plan {p}"
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise RepairPlanError(f"{origin} cannot be read ({exc.strerror or exc}); pass a plan "
                              "file that exists.") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise RepairPlanError(f"{origin} is over {MAX_PLAN_BYTES >> 20} MB; a plan holds rules, "
                              "not rows.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RepairPlanError(f"{origin} is not UTF-8 text.") from None
    return plan_from_text(text, origin)


def plan_from_object(data: Any, origin: str = "The repair plan") -> Plan:
    """A plan given as a JSON object (the API's request body, a queued task's options)."""
    if not isinstance(data, dict):
        raise RepairPlanError(f"{origin} must be a JSON object with version and tables; see "
                              "docs/repair-plans.md.")
    return _build(data, _Lines(origin, None))
