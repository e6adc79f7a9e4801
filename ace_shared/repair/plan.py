"""Turning a diff file into per-node work: which rows to upsert, delete or fill.

Pure functions over a parsed :class:`~ace_shared.difffile.format.DiffFile`; no I/O.

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

from dataclasses import dataclass, field

from ace_shared.difffile.format import DiffFile, Key, Row, row_key

OP_UPSERT = "u"
OP_DELETE = "d"
OP_FILL = "f"


@dataclass
class NodeWork:
    """Rows one node must take (upserts, fills) or lose (deletes), each keyed once."""

    node: str
    upserts: dict[Key, Row] = field(default_factory=dict)
    deletes: dict[Key, Row] = field(default_factory=dict)
    fills: dict[Key, Row] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.upserts or self.deletes or self.fills)

    def staged(self) -> list[tuple[str, Row]]:
        """Every row with its operation, in a fixed order (its position is its ``ord``)."""
        return ([(OP_DELETE, r) for r in self.deletes.values()]
                + [(OP_UPSERT, r) for r in self.upserts.values()]
                + [(OP_FILL, r) for r in self.fills.values()])


def _keyed(rows: list[Row], key: list[str], where: str) -> dict[Key, Row]:
    out: dict[Key, Row] = {}
    if len(key) == 1:  # the common case, kept tight: diff files can hold millions of rows
        name = key[0]
        for r in rows:
            value = r.get(name)
            if value is None:
                row_key(r, key, where)  # raises the explanatory error
            out.setdefault((value,), r)  # type: ignore[arg-type]
        return out
    for r in rows:
        out.setdefault(row_key(r, key, where), r)
    return out


def _work(plan: dict[str, NodeWork], node: str) -> NodeWork:
    if node not in plan:
        plan[node] = NodeWork(node)
    return plan[node]


def _in_node_order(plan: dict[str, NodeWork], nodes: list[str]) -> list[NodeWork]:
    order = {n: i for i, n in enumerate(nodes)}
    return sorted((w for w in plan.values() if not w.empty),
                  key=lambda w: order.get(w.node, len(order)))


def plan_from_source(diff: DiffFile, source: str, key: list[str]) -> list[NodeWork]:
    """Make every node that differs from ``source`` hold exactly the source's rows."""
    plan: dict[str, NodeWork] = {}
    for pair in diff.pairs:
        if source not in (pair.left, pair.right):
            continue
        other = pair.other(source)
        good = _keyed(pair.side(source), key, f"pair {pair.name}")
        theirs = _keyed(pair.side(other), key, f"pair {pair.name}")
        work = _work(plan, other)
        for k, row in good.items():
            work.upserts.setdefault(k, row)
        for k, row in theirs.items():
            if k not in good:
                work.deletes.setdefault(k, row)
    return _in_node_order(plan, diff.nodes)


def plan_bidirectional(diff: DiffFile, key: list[str]) -> list[NodeWork]:
    """Copy each row missing on one node of a pair from the other node."""
    plan: dict[str, NodeWork] = {}
    for pair in diff.pairs:
        sides = {n: _keyed(pair.side(n), key, f"pair {pair.name}") for n in (pair.left, pair.right)}
        for giver, taker in ((pair.left, pair.right), (pair.right, pair.left)):
            for k, row in sides[giver].items():
                if k not in sides[taker]:
                    _work(plan, taker).upserts.setdefault(k, row)
    return _in_node_order(plan, diff.nodes)


def plan_fix_nulls(diff: DiffFile, key: list[str], fillable: list[str]) -> list[NodeWork]:
    """Fill columns that are NULL on one node and set on the other, for shared rows."""
    plan: dict[str, NodeWork] = {}
    for pair in diff.pairs:
        sides = {n: _keyed(pair.side(n), key, f"pair {pair.name}") for n in (pair.left, pair.right)}
        for taker, giver in ((pair.left, pair.right), (pair.right, pair.left)):
            for k, row in sides[taker].items():
                other = sides[giver].get(k)
                if other is None:
                    continue
                for col in fillable:
                    if col in row and row[col] is None and other.get(col) is not None:
                        fill = _work(plan, taker).fills.setdefault(
                            k, {**dict.fromkeys(fillable), **dict(zip(key, k, strict=True))})
                        if fill.get(col) is None:
                            fill[col] = other[col]
    return _in_node_order(plan, diff.nodes)
