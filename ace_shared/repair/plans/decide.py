"""Deciding one key: which rule applies, and what each node ends with. Pure Python, no database.

A key comes as its versions, one per node (a row, or ``None`` where the node
lacks it), with each version's commit time and origin when the diff file has
them. Precedence: the first override naming the key, else the first rule whose
selector matches, else the table's default, else the plan's default; a key
nothing decides fails the plan. An action gives the nodes' final rows: a row
to write, ``None`` to delete, and nothing for a node left as it is.

Every choice that could go more than one way is the plan's: a tie (two
versions equally fresh that differ) is skipped, fails, or goes to the first
preferred node among the tied, as the rule says, and the outcome records which.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ace_shared.difffile.format import Row
from ace_shared.errors import RepairPlanError
from ace_shared.repair.plans.condition import ConditionError, Version
from ace_shared.repair.plans.model import (
    DELETE,
    FRESHEST,
    INSERT_ONLY,
    KEEP,
    KEEP_BOTH,
    MERGE,
    SKIP,
    TAKE,
    TIE_FAIL,
    TIE_SKIP,
    Action,
    ColumnRule,
    Override,
    Rule,
    Selector,
    TablePlan,
    Tie,
)
from ace_shared.repair.plans.values import (
    TEXT,
    TIMESTAMPTZ,
    comparable,
    parse_literal,
    parse_value,
)
from ace_shared.words import and_list, nodes_phrase

GLOBAL_DEFAULT = "the plan's default"
TABLE_DEFAULT = "the table's default"


@dataclass
class Table:
    """What deciding needs to know of the table and the diff: nodes, key, columns' kinds."""

    name: str
    nodes: list[str]
    key: list[str]
    kinds: dict[str, str]  # column -> value kind
    has_meta: bool = False

    @property
    def value_columns(self) -> list[str]:
        return [c for c in self.kinds if c not in self.key]

    def typed_key(self, key: tuple[str, ...]) -> tuple[Any, ...]:
        return tuple(_read(v, self.kinds.get(c, TEXT)) for c, v in zip(self.key, key, strict=True))


def _read(text: str | None, kind: str) -> Any:
    try:
        return parse_value(text, kind)
    except ValueError:
        return text


@dataclass
class Decision:
    """One key's outcome: the rule that decided it and each changing node's final row."""

    key: tuple[str, ...]
    rule: str
    action: str
    writes: dict[str, Row | None] = field(default_factory=dict)  # node -> row, None: delete
    note: str | None = None
    tie: str | None = None  # how a tie was settled (prefer n2 / skipped)


def key_words(key: tuple[str, ...]) -> str:
    return key[0] if len(key) == 1 else "(" + ", ".join(key) + ")"


# ----- selectors ----------------------------------------------------------------------------

def _plan_key(value: Any, table: Table, where: str) -> tuple[Any, ...]:
    values = value if isinstance(value, list) else [value]
    if len(values) != len(table.key):
        raise RepairPlanError(
            f"{where} writes key {value!r}, but table {table.name}'s key has "
            f"{len(table.key)} column{'s' if len(table.key) > 1 else ''} "
            f"({', '.join(table.key)}); write one value per key column.")
    try:
        return tuple(parse_literal(v, table.kinds.get(c, TEXT))
                     for c, v in zip(table.key, values, strict=True))
    except ValueError:
        raise RepairPlanError(f"{where} writes key {value!r}, which is not a value of "
                              f"table {table.name}'s key ({', '.join(table.key)}).") from None


@dataclass
class BoundSelector:
    selector: Selector
    keys: set[tuple[Any, ...]] | None
    low: tuple[Any, ...] | None
    high: tuple[Any, ...] | None


def bind_selector(sel: Selector, table: Table, label: str) -> BoundSelector:
    """Check the selector's nodes, columns, keys and condition against the table."""
    for node in (*sel.missing_on, *([sel.only_on] if sel.only_on else [])):
        _known_node(node, table, label)
    for col in sel.columns_differ:
        if col not in table.kinds:
            raise RepairPlanError(f"{label} of table {table.name} names column {col}, which "
                                  "the table does not have; fix the plan.")
    if sel.condition is not None:
        try:
            sel.condition.bind(table.nodes, table.kinds)
        except ConditionError as exc:
            raise RepairPlanError(f"{label} of table {table.name}: the condition {exc}; fix "
                                  "the plan.") from None
        if sel.condition.uses_meta and not table.has_meta:
            raise RepairPlanError(no_meta(label, table))
    keys = ({_plan_key(k, table, label) for k in sel.keys} if sel.keys is not None else None)
    low = _plan_key(sel.key_from, table, label) if sel.key_from is not None else None
    high = _plan_key(sel.key_to, table, label) if sel.key_to is not None else None
    return BoundSelector(sel, keys, low, high)


def no_meta(label: str, table: Table) -> str:
    return (f"{label} of table {table.name} uses commit times, but the diff was made without "
            "commit times; run table-diff again with them, or decide by a column.")


def _known_node(node: str, table: Table, label: str) -> None:
    if node not in table.nodes:
        raise RepairPlanError(f"{label} of table {table.name} names node {node}, which the "
                              f"diff did not compare ({and_list(table.nodes)}); fix the plan.")


def _tuple_lt(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    for x, y in zip(a, b, strict=False):
        x, y = comparable(x, y)
        if x != y:
            try:
                return bool(x < y)
            except TypeError:
                return str(x) < str(y)
    return False


def kinds_of_difference(versions: Mapping[str, Version], table: Table) -> set[str]:
    present = [v.row for v in versions.values() if v.row is not None]
    out = set()
    if len(present) < len(table.nodes):
        out.add("missing")
        if len(present) == 1:
            out.add("only_on")
    cols = table.value_columns
    if any(any(p.get(c) != present[0].get(c) for c in cols) for p in present[1:]):
        out.add("values_differ")
    return out


def matches(bound: BoundSelector, key: tuple[str, ...], typed: tuple[Any, ...],
            versions: Mapping[str, Version], table: Table) -> bool:
    sel = bound.selector
    if bound.keys is not None and typed not in bound.keys:
        return False
    if bound.low is not None and _tuple_lt(typed, bound.low):
        return False
    if bound.high is not None and _tuple_lt(bound.high, typed):
        return False
    if sel.diff and not (set(sel.diff) & kinds_of_difference(versions, table)):
        return False
    if sel.missing_on and not any(versions[n].row is None for n in sel.missing_on):
        return False
    if sel.only_on is not None:
        present = [n for n, v in versions.items() if v.row is not None]
        if present != [sel.only_on]:
            return False
    if sel.columns_differ:
        rows = [v.row for v in versions.values() if v.row is not None]
        if not any(len({r.get(c) for r in rows}) > 1 for c in sel.columns_differ):
            return False
    return sel.condition is None or sel.condition.test(versions)


# ----- actions ------------------------------------------------------------------------------

def _everywhere(row: Row, versions: Mapping[str, Version]) -> dict[str, Row | None]:
    """``row`` on every node that does not hold exactly it."""
    return {n: row for n, v in versions.items() if v.row != row}


def _break_tie(tied: list[str], rows: Mapping[str, Row], tie: Tie | None, label: str,
               key: tuple[str, ...], table: Table, what: str) -> tuple[str | None, str]:
    """The node whose version wins a tie, or None to skip the key; with how it was settled."""
    if len({_row_text(rows[n]) for n in tied}) == 1:
        return tied[0], ""
    how = tie.how if tie else TIE_FAIL
    if how == TIE_SKIP:
        return None, "skipped"
    if how == "prefer" and tie is not None:
        for node in tie.prefer:
            if node in tied:
                return node, f"prefer {node}"
    raise RepairPlanError(
        f"{label} of table {table.name} finds a tie for key {key_words(key)}: "
        f"{nodes_phrase(tied)} hold different versions equally fresh by {what}"
        + (f" and none of them is among prefer ({and_list(tie.prefer)})" if how == "prefer"
           and tie else "") + "; add tie: skip, or tie: {prefer: [nodes]}, to the rule.")


def _row_text(row: Row) -> str:
    return repr(sorted(row.items()))


def _freshness(v: Version, by_column: str | None, table: Table) -> Any:
    if by_column is None:
        return _read(v.commit_ts, TIMESTAMPTZ)
    assert v.row is not None
    return _read(v.row.get(by_column), table.kinds.get(by_column, TEXT))


def _newest(candidates: dict[str, Any]) -> list[str]:
    """The nodes whose value is the greatest (values None are oldest; all None: all tie)."""
    known = {n: x for n, x in candidates.items() if x is not None}
    if not known:
        return list(candidates)
    best = None
    for x in known.values():
        if best is None or _tuple_lt((best,), (x,)):
            best = x
    return [n for n, x in known.items() if not _tuple_lt((x,), (best,))]


def _freshest(action: Action, key: tuple[str, ...], versions: Mapping[str, Version],
              table: Table, label: str, d: Decision) -> None:
    rows = {n: v.row for n, v in versions.items() if v.row is not None}
    fresh = {n: _freshness(versions[n], action.by_column, table) for n in rows}
    tied = _newest(fresh)
    what = f"column {action.by_column}" if action.by_column else "commit time"
    winner, how = _break_tie(tied, rows, action.tie, label, key, table, what)
    if len(tied) > 1 and how:
        d.tie = how
    if winner is None:
        d.note = f"tie between {and_list(tied)} skipped"
        return
    d.writes = _everywhere(rows[winner], versions)
    d.note = f"{winner}'s version is the freshest"


def _merge_column(rule: ColumnRule, col: str, rows: dict[str, Row],
                  versions: Mapping[str, Version], action: Action, key: tuple[str, ...],
                  table: Table, label: str, d: Decision) -> str | None | bool:
    """One merged value; ``False`` when a tie skips the key."""
    if rule.how == "from":
        for node in rule.nodes:
            if node in rows:
                return rows[node].get(col)
        raise RepairPlanError(
            f"{label} of table {table.name} takes column {col} from "
            f"{and_list(rule.nodes)}, which {'all lack' if len(rule.nodes) > 1 else 'lacks'} "
            f"key {key_words(key)}; add a node that "
            "has it, or a rule before this one for such keys.")
    set_ = {n: r.get(col) for n, r in rows.items() if r.get(col) is not None}
    if not set_:
        return None
    if rule.how in ("greatest", "least"):
        typed = {n: _read(t, table.kinds.get(col, TEXT)) for n, t in set_.items()}
        pick = None
        for n, x in typed.items():
            if pick is None or (_tuple_lt((typed[pick],), (x,)) if rule.how == "greatest"
                                else _tuple_lt((x,), (typed[pick],))):
                pick = n
        assert pick is not None
        return set_[pick]
    fresh = {n: _read(versions[n].commit_ts, TIMESTAMPTZ) for n in set_}
    tied = _newest(fresh)
    winner, how = _break_tie(tied, {n: {col: set_[n]} for n in set_}, action.tie, label, key,
                             table, f"commit time (column {col})")
    if how:
        d.tie = how
    if winner is None:
        return False
    return set_[winner]


def _merge(action: Action, key: tuple[str, ...], versions: Mapping[str, Version],
           table: Table, label: str, d: Decision) -> None:
    rows = {n: v.row for n, v in versions.items() if v.row is not None}
    merged: Row = dict(zip(table.key, key, strict=True))
    for col in table.value_columns:
        rule = action.columns.get(col) or action.others
        assert rule is not None  # checked by bind_action
        value = _merge_column(rule, col, rows, versions, action, key, table, label, d)
        if value is False:
            d.note = f"tie on column {col} skipped"
            return
        merged[col] = value  # type: ignore[assignment]  # not False: returned above
    # keep the columns in the order the rows have them
    first = next(iter(rows.values()))
    d.writes = _everywhere({c: merged.get(c) for c in first}, versions)


def bind_action(action: Action, table: Table, label: str) -> None:
    """Check the nodes and columns an action names against the table."""
    for node in (*([action.node] if action.node else []), *action.prefer,
                 *(action.tie.prefer if action.tie else ())):
        _known_node(node, table, label)
    if action.by_column and action.by_column not in table.kinds:
        raise RepairPlanError(f"{label} of table {table.name} picks the freshest by column "
                              f"{action.by_column}, which the table does not have; fix the plan.")
    if action.kind == MERGE:
        for col, rule in action.columns.items():
            if col not in table.kinds or col in table.key:
                raise RepairPlanError(
                    f"{label} of table {table.name} merges column {col}, which is "
                    f"{'part of the key' if col in table.key else 'not a column of the table'}"
                    "; fix the plan.")
            for node in rule.nodes:
                _known_node(node, table, label)
        if action.others is None:
            left = [c for c in table.value_columns if c not in action.columns]
            if left:
                raise RepairPlanError(
                    f"{label} of table {table.name} does not say where column {left[0]} comes "
                    "from; name it under columns, or add others.")
        for node in action.others.nodes if action.others else ():
            _known_node(node, table, label)
    if action.needs_meta and not table.has_meta:
        raise RepairPlanError(no_meta(label, table))


def apply_action(action: Action, key: tuple[str, ...], versions: Mapping[str, Version],
                 table: Table, label: str) -> Decision:
    """What ``action`` makes of one key's versions."""
    d = Decision(key, label, action.describe())
    rows = {n: v.row for n, v in versions.items() if v.row is not None}
    if action.kind == SKIP:
        return d
    if action.kind == DELETE:
        d.writes = {n: None for n in rows}
    elif action.kind in (KEEP, TAKE):
        assert action.node is not None
        source = versions[action.node].row
        mode = action.mode if action.kind == TAKE else "replace"
        if source is None:
            if mode == "replace":
                d.writes = {n: None for n in rows}
            else:
                d.note = f"{action.node} lacks the key: left as it is"
        elif mode == INSERT_ONLY:
            d.writes = {n: source for n, v in versions.items() if v.row is None}
        else:
            d.writes = _everywhere(source, versions)
    elif action.kind == KEEP_BOTH:
        lacking = [n for n, v in versions.items() if v.row is None]
        if lacking:
            distinct = {_row_text(r) for r in rows.values()}
            giver = next(iter(rows))
            if len(distinct) > 1:
                giver = next((n for n in action.prefer if n in rows), "")
                if not giver:
                    raise RepairPlanError(
                        f"{label} of table {table.name} keeps key {key_words(key)} on every "
                        f"node, but {nodes_phrase(rows)} hold different versions of it; add "
                        "prefer: [nodes] to say whose version the others get.")
            d.writes = {n: rows[giver] for n in lacking}
    elif action.kind == FRESHEST:
        _freshest(action, key, versions, table, label, d)
    elif action.kind == MERGE:
        _merge(action, key, versions, table, label, d)
    return d


# ----- precedence ---------------------------------------------------------------------------

class Decider:
    """A table's plan bound to its diff: decides keys by precedence."""

    def __init__(self, plan_default: Action | None, table_plan: TablePlan | None,
                 table: Table) -> None:
        self.table = table
        tp = table_plan or TablePlan(table.name)
        self.overrides: list[tuple[Override, set[tuple[Any, ...]]]] = []
        for o in tp.overrides:
            bind_action(o.action, table, o.label)
            self.overrides.append((o, {_plan_key(k, table, o.label) for k in o.keys}))
        self.rules: list[tuple[Rule, BoundSelector]] = []
        for r in tp.rules:
            bind_action(r.action, table, r.label)
            self.rules.append((r, bind_selector(r.selector, table, r.label)))
        self.defaults: list[tuple[str, Action]] = []
        if tp.default is not None:
            bind_action(tp.default, table, TABLE_DEFAULT)
            self.defaults.append((TABLE_DEFAULT, tp.default))
        if plan_default is not None:
            bind_action(plan_default, table, GLOBAL_DEFAULT)
            self.defaults.append((GLOBAL_DEFAULT, plan_default))

    def labels(self) -> list[tuple[str, str]]:
        """Every rule's label and action, in precedence order (for the report)."""
        return ([(o.label, o.action.describe()) for o, _ in self.overrides]
                + [(r.label, r.action.describe()) for r, _ in self.rules]
                + [(label, a.describe()) for label, a in self.defaults])

    def decide(self, key: tuple[str, ...], versions: Mapping[str, Version]) -> Decision:
        typed = self.table.typed_key(key)
        for o, keys in self.overrides:
            if typed in keys:
                return apply_action(o.action, key, versions, self.table, o.label)
        for r, bound in self.rules:
            if matches(bound, key, typed, versions, self.table):
                return apply_action(r.action, key, versions, self.table, r.label)
        if self.defaults:
            label, action = self.defaults[0]
            return apply_action(action, key, versions, self.table, label)
        raise RepairPlanError(
            f"No rule of the plan decides key {key_words(key)} of table {self.table.name} and "
            "the plan has no default; add a default action (skip leaves such keys as they are).")
