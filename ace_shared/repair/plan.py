"""Turning a diff file into per-node work: which rows to upsert, delete or fill.

The diff file's rows are first spooled to SQLite (:mod:`ace_shared.difffile.spool`),
and the work is worked out there, pair by pair, into a ``work`` table keyed by
``(node, op, key)``: ``INSERT OR IGNORE`` gives each key to the first pair
that offers it, as the rules below want, and no step holds all rows at once.

* Source of truth: for every pair that holds the source, the other node takes
  the source's rows of that pair (inserted or updated) and loses the rows the
  source lacks (deleted, unless the options keep them). The pair lists exactly
  the keys where the two differ, so pairs without the source add nothing: a
  key the source agrees on with one node but not another shows up in the
  source's pair with that other node.
* Bidirectional: for every pair, each node takes the rows only the other has.
  When several nodes could give the same missing row, the first pair in the
  file (node order) gives it.
* Fix nulls: for rows present on both nodes of a pair, a column NULL on one
  side and set on the other is filled from the other side; the first pair
  that offers a value for a (node, key, column) gives it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

from ace_shared.difffile.file import DiffFile
from ace_shared.difffile.format import Key, Row, row_json
from ace_shared.difffile.spool import RowSpool, decode_row, key_text

OP_UPSERT = "u"
OP_DELETE = "d"
OP_FILL = "f"
_OP_ORDER = "CASE op WHEN 'd' THEN 0 WHEN 'u' THEN 1 ELSE 2 END"

_WORK = """
CREATE TABLE IF NOT EXISTS work (node TEXT NOT NULL, op TEXT NOT NULL, key TEXT NOT NULL,
                                 seq INTEGER NOT NULL, row TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS work_key ON work (node, op, key);
"""


class _Rows(Mapping[Key, Row]):
    """One node's rows for one operation, read from the spool when asked."""

    def __init__(self, db: sqlite3.Connection, node: str, op: str) -> None:
        self.db, self.node, self.op = db, node, op

    def __getitem__(self, key: Key) -> Row:
        found = self.db.execute("SELECT row FROM work WHERE node = ? AND op = ? AND key = ?",
                                (self.node, self.op, key_text(key))
                                ).fetchone()
        if found is None:
            raise KeyError(key)
        return decode_row(found[0])

    def __iter__(self) -> Iterator[Key]:
        rows = self.db.execute("SELECT key FROM work WHERE node = ? AND op = ? ORDER BY seq",
                               (self.node, self.op))
        return (tuple(json.loads(k)) for (k,) in rows)

    def __len__(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM work WHERE node = ? AND op = ?",
                                   (self.node, self.op)).fetchone()[0])


class NodeWork:
    """Rows one node must take (upserts, fills) or lose (deletes), each keyed once."""

    def __init__(self, node: str, spool: RowSpool) -> None:
        self.node = node
        self.spool = spool
        self.counts = {op: 0 for op in (OP_UPSERT, OP_DELETE, OP_FILL)}
        for op, n in spool.db.execute("SELECT op, count(*) FROM work WHERE node = ? GROUP BY op",
                                      (node,)):
            self.counts[op] = int(n)
        self.upserts = _Rows(spool.db, node, OP_UPSERT)
        self.deletes = _Rows(spool.db, node, OP_DELETE)
        self.fills = _Rows(spool.db, node, OP_FILL)

    @property
    def path(self) -> Path:
        return self.spool.path

    @property
    def size(self) -> int:
        return sum(self.counts.values())

    @property
    def empty(self) -> bool:
        return self.size == 0

    def staged(self, db: sqlite3.Connection | None = None) -> Iterator[tuple[str, str]]:
        """Every row (as JSON text) with its operation, in a fixed order: its ``ord``.

        Pass a connection of the calling thread's own (``spool.connect(work.path)``)
        when reading from another thread than the one that planned.
        """
        cur = (db or self.spool.db).execute(
            f"SELECT op, row FROM work WHERE node = ? ORDER BY {_OP_ORDER}, seq",  # noqa: S608
            (self.node,))
        yield from cur


def _begin(spool: RowSpool) -> sqlite3.Connection:
    spool.db.executescript(_WORK)
    spool.db.execute("BEGIN")
    return spool.db


def _in_node_order(spool: RowSpool, nodes: list[str]) -> list[NodeWork]:
    spool.db.execute("COMMIT")
    present = {n for (n,) in spool.db.execute("SELECT DISTINCT node FROM work")}
    order = list(nodes) + sorted(present - set(nodes))
    return [NodeWork(n, spool) for n in order if n in present]


_TAKE = ("INSERT OR IGNORE INTO work SELECT ?, ?, g.key, g.seq, g.row FROM rows g "
         "WHERE g.pair = ? AND g.node = ? {unless} ORDER BY g.seq")
_UNLESS = ("AND NOT EXISTS (SELECT 1 FROM rows t WHERE t.pair = g.pair AND t.node = ? "
           "AND t.key = g.key)")


def plan_from_source(diff: DiffFile | RowSpool, source: str, key: list[str]) -> list[NodeWork]:
    """Make every node that differs from ``source`` hold exactly the source's rows."""
    spool = diff if isinstance(diff, RowSpool) else RowSpool(diff, key)
    db = _begin(spool)
    for pair in spool.diff.pairs:
        if source not in (pair.left, pair.right):
            continue
        other = pair.other(source)
        db.execute(_TAKE.format(unless=""), (other, OP_UPSERT, pair.index, source))
        db.execute(_TAKE.format(unless=_UNLESS),
                   (other, OP_DELETE, pair.index, other, source))
    return _in_node_order(spool, spool.diff.nodes)


def plan_bidirectional(diff: DiffFile | RowSpool, key: list[str]) -> list[NodeWork]:
    """Copy each row missing on one node of a pair from the other node."""
    spool = diff if isinstance(diff, RowSpool) else RowSpool(diff, key)
    db = _begin(spool)
    for pair in spool.diff.pairs:
        for giver, taker in ((pair.left, pair.right), (pair.right, pair.left)):
            db.execute(_TAKE.format(unless=_UNLESS),
                       (taker, OP_UPSERT, pair.index, giver, taker))
    return _in_node_order(spool, spool.diff.nodes)


_SHARED = ("SELECT t.key, t.seq, t.row, g.row FROM rows t JOIN rows g ON g.pair = t.pair "
           "AND g.key = t.key AND g.node = ? WHERE t.pair = ? AND t.node = ? ORDER BY t.seq")


def plan_fix_nulls(diff: DiffFile | RowSpool, key: list[str],
                   fillable: list[str]) -> list[NodeWork]:
    """Fill columns that are NULL on one node and set on the other, for shared rows."""
    spool = diff if isinstance(diff, RowSpool) else RowSpool(diff, key)
    db = _begin(spool)
    for pair in spool.diff.pairs:
        for taker, giver in ((pair.left, pair.right), (pair.right, pair.left)):
            # (SQLite lets one connection write one table while it reads another)
            for k, seq, text, other_text in db.execute(_SHARED, (giver, pair.index, taker)):
                _offer_fill(db, taker, k, seq, decode_row(text), decode_row(other_text),
                            key, fillable)
    return _in_node_order(spool, spool.diff.nodes)


def _offer_fill(db: sqlite3.Connection, taker: str, k: str, seq: int, row: Row, other: Row,
                key: list[str], fillable: list[str]) -> None:
    wanted = [c for c in fillable
              if c in row and row[c] is None and other.get(c) is not None]
    if not wanted:
        return
    found = db.execute("SELECT row, seq FROM work WHERE node = ? AND op = ? AND key = ?",
                       (taker, OP_FILL, k)).fetchone()
    if found is None:
        fill: Row = {**dict.fromkeys(fillable), **{c: row[c] for c in key}}
    else:
        fill, seq = decode_row(found[0]), found[1]
    for c in wanted:
        if fill.get(c) is None:
            fill[c] = other[c]
    db.execute("INSERT OR REPLACE INTO work VALUES (?, ?, ?, ?, ?)",
               (taker, OP_FILL, k, seq, row_json(fill)))
