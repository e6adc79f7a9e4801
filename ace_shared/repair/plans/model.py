"""A repair plan as objects: tables, rules, overrides, selectors and actions.

Built by :mod:`~ace_shared.repair.plans.loader` from a plan that passed the
schema; every object keeps ``label`` (``rule 2 "status"``, ``override 1``,
``the table's default``), the words each message and report line names it by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ace_shared.repair.plans.condition import Condition
from ace_shared.words import and_list

SKIP, DELETE, KEEP_BOTH, KEEP, TAKE, FRESHEST, MERGE = (
    "skip", "delete", "keep_both", "keep", "take", "freshest", "merge")
REPLACE, UPSERT, INSERT_ONLY = "replace", "upsert", "insert_only"
TIE_SKIP, TIE_FAIL = "skip", "fail"
BY_COMMIT_TS = "commit_ts"


@dataclass(frozen=True)
class Tie:
    """What to do when two versions are equally fresh and differ: never left to chance."""

    how: str  # skip, fail or prefer
    prefer: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"prefer {and_list(self.prefer)}" if self.how == "prefer" else self.how


@dataclass(frozen=True)
class ColumnRule:
    """Where a merged column comes from: ``from`` nodes in order, or greatest/least/newest."""

    how: str  # from, greatest, least, newest
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Action:
    kind: str
    node: str | None = None
    mode: str = REPLACE
    prefer: tuple[str, ...] = ()
    by_column: str | None = None  # freshest by a column; None: by commit time
    tie: Tie | None = None
    columns: dict[str, ColumnRule] = field(default_factory=dict, hash=False)
    others: ColumnRule | None = None

    @property
    def needs_meta(self) -> bool:
        """Whether it reads commit times (freshest by commit time, a merge's newest)."""
        if self.kind == FRESHEST:
            return self.by_column is None
        if self.kind == MERGE:
            rules = [*self.columns.values(), *([self.others] if self.others else [])]
            return any(r.how == "newest" for r in rules)
        return False

    def describe(self) -> str:
        if self.kind == KEEP:
            return f"keep {self.node}'s version"
        if self.kind == TAKE:
            return f"take {self.node}'s version ({self.mode.replace('_', '-')})"
        if self.kind == FRESHEST:
            by = f"column {self.by_column}" if self.by_column else "commit time"
            return f"freshest by {by} (ties: {self.tie.describe() if self.tie else 'fail'})"
        if self.kind == MERGE:
            return "merge per column"
        return self.kind.replace("_", " ")


@dataclass
class Selector:
    """What a rule matches; every part given must match (an empty selector matches all)."""

    keys: list[Any] | None = None
    key_from: Any = None
    key_to: Any = None
    has_range: bool = False
    diff: tuple[str, ...] = ()
    missing_on: tuple[str, ...] = ()
    only_on: str | None = None
    columns_differ: tuple[str, ...] = ()
    condition: Condition | None = None


@dataclass
class Rule:
    label: str
    action: Action
    selector: Selector = field(default_factory=Selector)
    path: tuple[Any, ...] = ()  # where the plan writes it, for line numbers


@dataclass
class Override:
    label: str
    keys: list[Any]
    action: Action
    path: tuple[Any, ...] = ()


@dataclass
class TablePlan:
    table: str
    rules: list[Rule] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)
    default: Action | None = None


@dataclass
class Plan:
    """A whole plan; ``source`` is the plan as given (JSON-safe), handed on to the workers."""

    tables: dict[str, TablePlan]
    default: Action | None
    source: dict[str, Any]
    origin: str = "the repair plan"  # the file's path, or "the repair plan" for a request body

    def for_table(self, display: str) -> TablePlan | None:
        return self.tables.get(display)
