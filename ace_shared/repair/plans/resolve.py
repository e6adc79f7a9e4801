"""Resolving a plan over a diff file: each key's versions, decided, written to a resolved plan.

The diff file's rows are spooled (:class:`~ace_shared.difffile.spool.RowSpool`)
and read back key by key, so memory holds one key's versions at a time. A
key's version on a node is known from any pair that lists the key and holds
the node: its row on that side, or none. (When the diff compared every pair,
each node that differs from another appears in such a pair.) A node whose
version the file does not show, or shows twice differently, leaves the key
undecided: it is listed, never guessed.

The resolved plan is a JSON Lines file (:mod:`~ace_shared.repair.plans.resolved`):
a header with the rules' counts, then one line per key with the rule that
decided it, what each node held (``seen``) and what it will hold (``write``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from ace_shared.difffile.file import DiffFile, row_key
from ace_shared.difffile.format import Row, read_rows
from ace_shared.difffile.spool import RowSpool, decode_row, key_text
from ace_shared.errors import RepairPlanError
from ace_shared.repair.plans.condition import Version
from ace_shared.repair.plans.decide import Decider, Decision, Table
from ace_shared.repair.plans.model import Plan
from ace_shared.repair.plans.resolved import (
    FORMAT,
    RuleCount,
    write_header,
)
from ace_shared.repair.plans.values import value_kind

# the diff file's reserved per-row metadata: commit time (UTC text) and origin node
COMMIT_TS_FIELD = "_ace_commit_ts"
ORIGIN_FIELD = "_ace_origin"
META_FIELDS = (COMMIT_TS_FIELD, ORIGIN_FIELD)
UNDETERMINED = "no rule (the diff file does not show every node's version)"


def split_meta(row: Row) -> tuple[Row, str | None, str | None]:
    """A diff-file row without the reserved fields, and its commit time and origin.

    Readers that keep the fields among the row's values, and readers that hand them
    on beside it (as ``row.meta``), are both read.
    """
    if COMMIT_TS_FIELD in row or ORIGIN_FIELD in row:
        clean = {k: v for k, v in row.items() if k not in META_FIELDS}
        return clean, row.get(COMMIT_TS_FIELD), row.get(ORIGIN_FIELD)
    meta = getattr(row, "meta", None)
    if meta is not None:
        return row, getattr(meta, "commit_ts", None), getattr(meta, "origin", None)
    return row, None, None


def _has_meta_fields(row: Row) -> bool:
    return COMMIT_TS_FIELD in row or ORIGIN_FIELD in row or hasattr(row, "meta")


def plan_needs_meta(plan: Plan, display: str) -> bool:
    """Whether the plan reads commit times or origins for this table."""
    tp = plan.for_table(display)
    actions = [plan.default] + ([tp.default] if tp else [])
    if tp:
        actions += [r.action for r in tp.rules] + [o.action for o in tp.overrides]
        if any(r.selector.condition is not None and r.selector.condition.uses_meta
               for r in tp.rules):
            return True
    return any(a is not None and a.needs_meta for a in actions)


def load_meta(spool: RowSpool) -> bool:
    """Each row's commit time and origin into the spool's ``meta`` table (one more pass over
    the file); whether the diff was made with them at all."""
    db = spool.db
    found = False
    where = f"the diff file {spool.diff.path}"

    def records() -> Iterator[tuple[int, str, str, str | None, str | None]]:
        nonlocal found
        for index, node, row, _ in read_rows(spool.diff.path):
            if not _has_meta_fields(row):
                continue
            found = True
            clean, ts, origin = split_meta(row)
            if ts is not None or origin is not None:
                yield index, node, key_text(row_key(clean, spool.key, where)), ts, origin

    db.execute("BEGIN")
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?, ?, ?, ?)", records())
    db.execute("COMMIT")
    return found


def table_of(diff: DiffFile, display: str, key: list[str], columns: list[dict[str, str]],
             has_meta: bool) -> Table:
    return Table(display, list(diff.nodes), list(key),
                 {c["name"]: value_kind(c["type"]) for c in columns}, has_meta)


_META = ("CREATE TABLE IF NOT EXISTS meta (pair INTEGER NOT NULL, node TEXT NOT NULL, "
         "key TEXT NOT NULL, ts TEXT, origin TEXT, PRIMARY KEY (pair, node, key))")
Group = list[tuple[int, str, str, str | None, str | None]]


def _keys(spool: RowSpool) -> Iterator[tuple[str, Group]]:
    """Each key's rows as ``(pair, node, row text, commit time, origin)``, key by key."""
    cur = spool.db.execute(
        "SELECT r.key, r.pair, r.node, r.row, m.ts, m.origin FROM rows r LEFT JOIN meta m "
        "ON m.pair = r.pair AND m.node = r.node AND m.key = r.key ORDER BY r.key, r.seq")
    current: str | None = None
    group: Group = []
    for key, pair, node, row, ts, origin in cur:
        if key != current and current is not None:
            yield current, group
            group = []
        current = key
        group.append((pair, node, row, ts, origin))
    if current is not None:
        yield current, group


def versions_of(diff: DiffFile, nodes: list[str], group: Group) -> dict[str, Version] | None:
    """Every node's version of one key, or None when the file does not show them all."""
    listed_in = {g[0] for g in group}
    rows: dict[tuple[int, str], Row] = {}
    meta: dict[str, tuple[str | None, str | None]] = {}
    for pair, node, text, ts, origin in group:
        row, own_ts, own_origin = split_meta(decode_row(text))
        rows[(pair, node)] = row
        meta[node] = (ts or own_ts, origin or own_origin)
    seen: dict[str, Row | None] = {}
    for pair in listed_in:
        p = diff.pairs[pair]
        for node in (p.left, p.right):
            version = rows.get((pair, node))
            if node in seen and seen[node] != version:
                return None  # two pairs disagree about one node's row
            seen[node] = version
    if any(n not in seen for n in nodes):
        return None
    return {n: Version(seen[n], *meta.get(n, (None, None))) for n in nodes}


class Resolution:
    """A resolved plan on disk, with the counts the dry run prints."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = header


def _count(counts: dict[str, RuleCount], d: Decision, versions: dict[str, Version]) -> None:
    c = counts[d.rule]
    c.matched += 1
    if d.tie:
        c.ties += 1
        if d.tie == "skipped":
            c.ties_skipped += 1
    for node, row in d.writes.items():
        what = "delete" if row is None else ("insert" if versions[node].row is None
                                             else "update")
        c.add(node, what, d.key)


def resolve(plan: Plan, diff: DiffFile, spool: RowSpool, table_display: str,
            columns: list[dict[str, str]], out: Path, context: dict[str, Any]) -> Resolution:
    """Decide every key of the diff; write the resolved plan to ``out``; fail before any write.

    ``context`` goes into the header (cluster, database, diff file).
    """
    spool.db.execute(_META)
    has_meta = load_meta(spool) if plan_needs_meta(plan, table_display) else False
    table = table_of(diff, table_display, spool.key, columns, has_meta)
    decider = Decider(plan.default, plan.for_table(table_display), table)
    counts = {label: RuleCount(label, action) for label, action in decider.labels()}
    counts[UNDETERMINED] = RuleCount(UNDETERMINED, "left as it is")
    nodes = table.nodes
    fd, tmp_name = tempfile.mkstemp(prefix="resolved-", suffix=".jsonl", dir=spool.folder)
    with os.fdopen(fd, "w", encoding="utf-8") as body:
        for key_text, group in _keys(spool):
            key = tuple(json.loads(key_text))
            versions = versions_of(diff, nodes, group)
            if versions is None:
                d = Decision(key, UNDETERMINED, "left as it is",
                             note="the diff file does not show every node's version")
                counts[UNDETERMINED].matched += 1
                _write_line(body, d, {})
                continue
            d = decider.decide(key, versions)
            _count(counts, d, versions)
            _write_line(body, d, versions)
    header = {
        "format": FORMAT, "created_at": datetime.now(timezone.utc).isoformat(),
        **context, "table": table_display, "nodes": nodes, "key": spool.key,
        "columns": columns, "plan": plan.source,
        "rules": [c.to_dict() for c in counts.values() if c.matched or c.label != UNDETERMINED],
    }
    write_header(out, header, Path(tmp_name))
    return Resolution(out, header)


def _write_line(fh: IO[str], d: Decision, versions: dict[str, Version]) -> None:
    line: dict[str, Any] = {"key": list(d.key), "rule": d.rule,
                            "seen": {n: v.row for n, v in versions.items()},
                            "write": d.writes}
    if d.note:
        line["note"] = d.note
    if d.tie:
        line["tie"] = d.tie
    fh.write(json.dumps(line, ensure_ascii=False) + "\n")


def require_table(plan: Plan, display: str) -> None:
    if plan.for_table(display) is None and plan.default is None:
        raise RepairPlanError(f"{plan.origin} has no rules for table {display} and no default; "
                              f"add the table under tables, or a default action.")

