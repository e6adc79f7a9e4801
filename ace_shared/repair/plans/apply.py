"""Applying a resolved plan through the repair machinery, after checking nothing moved since.

First, on every node, the ``seen`` rows of every key the plan changes are
compared with the node's rows now (a temporary table and one query per node,
in a transaction that is rolled back). A key whose row changed on any node
since the diff is left out everywhere and listed, unless ``allow_stale``.

Then the rows to write go into a work spool in the layout the repair's own
planner makes (:class:`~ace_shared.repair.plan.NodeWork`), and
:func:`~ace_shared.repair.apply.apply_repairs` writes them: one transaction
per node, replication silenced, as the caller's own role, owner code refused,
all nodes committed or none. Each node's transaction first checks its
rows again, locked, so none can change between that check and the writes. A
row the table refuses (a constraint) fails the
repair before anything is committed; the error names the rule whose row it was
when one rule wrote every row of that node, and all the rules that wrote there
otherwise.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, cursor

from ace_shared.difffile.file import DiffFile
from ace_shared.difffile.spool import CACHE_KB, key_text
from ace_shared.errors import RepairError, RepairPlanError
from ace_shared.nodes.connection import NodeTarget, connect, node_errors
from ace_shared.nodes.failures import what_failed
from ace_shared.nodes.ident import TableName
from ace_shared.nodes.shape import read_shape
from ace_shared.repair.apply import (
    ApplyOptions,
    NodeOutcome,
    NodeRepair,
    apply_repairs,
    generated_columns,
)
from ace_shared.repair.plan import OP_DELETE, OP_UPSERT, NodeWork
from ace_shared.repair.plans.decide import key_words
from ace_shared.repair.plans.resolved import read_lines
from ace_shared.repair.queries import (
    COPY_CHUNK,
    STAGE,
    STATE_ABSENT,
    STATE_SAME,
    LineStream,
    RepairSql,
    copy_stage,
    create_stage,
    stage_lines,
)
from ace_shared.words import and_list

SAMPLE_STALE = 20
# beside each row the report lists: the rule that decided it (never a column: staging
# and the writes read the table's columns by name only)
RULE_FIELD = "_ace_rule"


class WorkSpool:
    """A SQLite file with a ``work`` table as :class:`NodeWork` reads it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ace-plan-", dir=folder))
        self.path = self.folder / "work.sqlite"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute(f"PRAGMA cache_size = -{CACHE_KB}")
        self.db.executescript(
            "CREATE TABLE work (node TEXT NOT NULL, op TEXT NOT NULL, key TEXT NOT NULL, "
            "seq INTEGER NOT NULL, row TEXT NOT NULL, rule TEXT);"
            "CREATE UNIQUE INDEX work_key ON work (node, op, key);"
            "CREATE TABLE seen (node TEXT NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, "
            "op TEXT NOT NULL, row TEXT NOT NULL);"
            "CREATE TABLE stale (key TEXT PRIMARY KEY);")

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class PlanApply:
    """What applying found: the outcomes, the keys left out as stale, rules per node."""

    outcomes: list[NodeOutcome]
    stale: int = 0
    stale_keys: list[list[str]] = field(default_factory=list)
    applied_keys: int = 0


def _key_row(key: list[str], names: list[str]) -> dict[str, str]:
    return dict(zip(names, key, strict=True))


def load_plan(spool: WorkSpool, resolved: Path, key_names: list[str]) -> int:
    """One pass over the resolved plan: every changing key's ``seen`` rows per node (to
    check) and its ``write`` rows (the work); return how many keys change."""
    changing = 0

    def rows() -> Iterator[tuple[str, tuple[Any, ...]]]:
        nonlocal changing
        for seq, item in enumerate(read_lines(resolved)):
            writes = item.get("write") or {}
            if not writes:
                continue
            changing += 1
            key = [str(k) for k in item["key"]]
            kt = key_text(tuple(key))
            bare = _key_row(key, key_names)
            rule = item.get("rule")
            for node, row in (item.get("seen") or {}).items():
                op, seen = (OP_DELETE, bare) if row is None else (OP_UPSERT, row)
                yield "seen", (node, seq, kt, op, json.dumps(seen))
            for node, row in writes.items():
                op, new = (OP_DELETE, bare) if row is None else (OP_UPSERT, row)
                yield "work", (node, op, kt, seq, json.dumps({**new, RULE_FIELD: rule}), rule)

    db = spool.db
    db.execute("BEGIN")
    for table, chunk in _chunks(rows()):
        marks = ", ".join("?" * len(chunk[0]))
        db.executemany(f"INSERT INTO {table} VALUES ({marks})", chunk)  # noqa: S608
    db.execute("COMMIT")
    return changing


def _chunks(items: Iterator[tuple[str, tuple[Any, ...]]], size: int = 5000
            ) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """Runs of rows bound for the same table, at most ``size`` at a time."""
    table = ""
    chunk: list[tuple[Any, ...]] = []
    for name, row in items:
        if (name != table or len(chunk) >= size) and chunk:
            yield table, chunk
            chunk = []
        table = name
        chunk.append(row)
    if chunk:
        yield table, chunk


def _seen_rows(db: sqlite3.Connection, node: str,
               fresh_only: bool) -> Iterator[tuple[str, str, str]]:
    """The ``(op, row, key)`` the plan saw on ``node``; ``fresh_only``: not the stale keys."""
    unless = " AND key NOT IN (SELECT key FROM stale)" if fresh_only else ""
    yield from db.execute(f"SELECT op, row, key FROM seen WHERE node = ?{unless} "  # noqa: S608
                          "ORDER BY seq", (node,))


def stale_on(conn: connection, node: str, table: TableName, db: sqlite3.Connection,
             fresh_only: bool = False, lock: bool = False) -> list[str]:
    """Keys (as key text) whose row on ``node`` is not the one the plan saw, read in the
    connection's transaction; ``lock`` holds the rows that are there until it ends."""
    with conn.cursor() as cur:
        shape = read_shape(cur, table, node)
        generated = generated_columns(cur, table)
        columns = [c for c in shape.columns if c.name not in generated]
        names = [c.name for c in columns]
        statements = RepairSql(shape, columns)
        cur.execute(create_stage(len(columns)))
        staged = ((op, row) for op, row, _ in _seen_rows(db, node, fresh_only))
        cur.copy_expert(copy_stage(len(columns)), LineStream(stage_lines(staged, names)),
                        size=COPY_CHUNK)
        if lock:
            cur.execute(statements.lock_staged())
    stale: list[str] = []
    with conn.cursor(name="ace_plan_stale") as states:
        states.itersize = 10_000
        states.execute(statements.classify())
        for (op, _row, key), (_ord, state) in zip(_seen_rows(db, node, fresh_only), states,
                                                  strict=True):
            want = STATE_SAME if op == OP_UPSERT else STATE_ABSENT
            if int(state) != want:
                stale.append(key)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(STAGE)))
    return stale


def check_stale(target: NodeTarget, table: TableName, spool: WorkSpool) -> list[str]:
    """Before the repair: the keys whose row on this node changed since the plan saw it."""
    db = sqlite3.connect(spool.path, isolation_level=None)
    with node_errors(target.node):
        conn = connect(target)
        try:
            return stale_on(conn, target.node, table, db)
        except psycopg2.Error as exc:
            raise RepairError(f"Checking the plan's rows on node {target.node} failed: "
                              f"{what_failed(exc)}.") from exc
        finally:
            conn.rollback()
            conn.close()
            db.close()


class PlanNodeRepair(NodeRepair):
    """A node's repair that first checks, in its own transaction and with the rows locked,
    that they are still the ones the plan saw (they may have changed since the check
    before the repair)."""

    allow_stale = False

    def _work(self, cur: cursor) -> NodeOutcome:
        if not (self.allow_stale or self.opts.dry_run):  # (a dry run was just checked)
            assert self.conn is not None
            db = sqlite3.connect(self.work.path, isolation_level=None)
            try:
                moved = stale_on(self.conn, self.node, self.table, db, fresh_only=True,
                                 lock=True)
            finally:
                db.close()
            if moved:
                raise RepairPlanError(
                    f"Key {key_words(tuple(json.loads(moved[0])))} changed on node "
                    f"{self.node} while the plan was being applied, so nothing was changed on "
                    "any node; run the same command again.")
        return super()._work(cur)


def node_works(spool: WorkSpool, nodes: list[str], allow_stale: bool) -> list[NodeWork]:
    """The nodes' work, the stale keys taken out on every node unless allowed."""
    if not allow_stale:
        spool.db.execute("DELETE FROM work WHERE key IN (SELECT key FROM stale)")
    present = {n for (n,) in spool.db.execute("SELECT DISTINCT node FROM work")}
    # a WorkSpool holds the rows in the layout of the repair's own RowSpool (duck-typed)
    return [NodeWork(n, spool) for n in nodes if n in present]  # type: ignore[arg-type]


def _rules_on(spool: WorkSpool, node: str) -> list[str]:
    return [r for (r,) in spool.db.execute(
        "SELECT DISTINCT rule FROM work WHERE node = ? ORDER BY rule", (node,))]


def apply_plan_work(targets: dict[str, NodeTarget], table: TableName, nodes: list[str],
                    key_names: list[str], columns: list[dict[str, str]], resolved: Path,
                    opts: ApplyOptions, allow_stale: bool, spool: WorkSpool,
                    progress: Any = None) -> PlanApply:
    """Check, then write a resolved plan; all nodes committed or none.

    The outcomes' row files (for a report) live in ``spool``'s folder: close it after.
    """
    changing = load_plan(spool, resolved, key_names)
    stale: set[str] = set()
    checked = [n for n in nodes if n in targets] if changing else []
    if checked:  # every node at once, each on its own connection
        with ThreadPoolExecutor(max_workers=len(checked),
                                thread_name_prefix="ace-plan-check") as pool:
            for found in pool.map(lambda n: check_stale(targets[n], table, spool), checked):
                stale.update(found)
    spool.db.executemany("INSERT OR IGNORE INTO stale VALUES (?)", [(k,) for k in stale])
    works = node_works(spool, nodes, allow_stale)
    applied = changing if allow_stale else changing - len(stale)
    diff = DiffFile(resolved, {"primary_key": key_names, "columns": columns}, [],
                    column_sets={tuple(c["name"] for c in columns)})
    repair_class = type("PlanRepair", (PlanNodeRepair,), {"allow_stale": allow_stale})
    try:
        outcomes = apply_repairs(targets, table, works, diff, opts, progress, repair_class)
    except RepairError as exc:
        raise _name_rules(exc, spool) from exc
    samples = [json.loads(k) for k in sorted(stale)[:SAMPLE_STALE]]
    return PlanApply(outcomes, len(stale), samples, applied)


_REFUSED = re.compile(r"^The repair failed on node (?P<node>\S+): (?P<why>.*?SQLSTATE 2[23]\d{3}\))")


def _name_rules(exc: RepairError, spool: WorkSpool) -> RepairError:
    """A row the table refused (a constraint, a bad value), said with the rule whose row it was
    (or the rules, when several wrote on that node)."""
    m = _REFUSED.match(str(exc))
    if m is None:
        return exc
    node = m.group("node")
    rules = _rules_on(spool, node)
    if not rules:
        return exc
    said = (rules[0] if len(rules) == 1 else "rules " + and_list(rules))
    return RepairPlanError(f"The plan's {said} writes a row that node {node} refuses "
                           f"({m.group('why')}), so nothing was changed on any node; fix that "
                           "rule and run the plan again.")


def stale_words(keys: list[list[str]], total: int) -> str:
    words = [key_words(tuple(k)) for k in keys]
    if total > len(words):
        return ", ".join(words) + f" and {total - len(words):,} more"
    return and_list(words)
