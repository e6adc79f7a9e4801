"""``ace mtree update``: fold the change log into the leaves, then rebalance.

Folding reads only the log, never the table: each logged row version XORs its
hash into its block (see :mod:`ace_shared.mtree.objects`). Only the touched
leaves and their ancestors are written.

Rebalancing keeps leaves near ``block_rows``: a touched leaf that grew past
twice that is split at cut points taken from the node that holds the most rows
in it (kept only where every node sorts them alike); a touched leaf that shrank
below a quarter is merged into its right neighbour when the two fit in one.
The decision is made once, from every node's counts, and applied on every node,
so the boundaries stay equal everywhere. Applying it runs in one
``REPEATABLE READ`` transaction per node that folds the log again first: the
new leaves are hashed from the table at that same snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.diff import queries
from ace_shared.diff.plan import agreed_boundaries
from ace_shared.diff.ranges import Key, KeyRange
from ace_shared.errors import TableError
from ace_shared.mtree import keytypes, leaves, objects, trust
from ace_shared.mtree.tree import (
    Job,
    TreeRow,
    check_same_blocks,
    check_tree,
    each_node,
    guard,
    in_transaction,
    reading,
)
from ace_shared.nodes.shape import TableShape

SPLIT_FACTOR = 2  # a leaf over block_rows * this is split
MERGE_FRACTION = 4  # a leaf under block_rows / this is merged, when its neighbour has room
TEMP_BLOCK_BASE = 1_000_000_000  # numbers of new leaves until renumbering


@dataclass
class Rebalance:
    """One structural change, the same for every node."""

    merges: list[int] = field(default_factory=list)  # leaf b absorbs leaf b + 1
    splits: dict[int, list[Key]] = field(default_factory=dict)  # leaf -> its new inner cuts

    def __bool__(self) -> bool:
        return bool(self.merges or self.splits)


def refuse_if_marked(drained: leaves.Drained, shape: TableShape, node: str) -> None:
    """Refuse a tree whose log says the table was truncated or altered since the build.

    Raising rolls the drain back, so the marker stays logged: the tree is refused
    until it is built again.
    """
    event = "truncated" if drained.truncated else "altered (ALTER TABLE)" if drained.altered \
        else None
    if event:
        raise TableError(f"Table {shape.table.display} was {event} on node {node} since its "
                         "Merkle tree was built; run 'ace mtree build' for it again.")


def _fold(shape: TableShape, key: str, node: str) -> Any:
    def run(cur: cursor) -> tuple[TreeRow, leaves.Drained]:
        guard(cur, shape, key, node, trust.ROW_EXCLUSIVE)  # before the snapshot
        row = check_tree(cur, shape, key, node)
        drained = leaves.drain(cur, shape, key)
        refuse_if_marked(drained, shape, node)
        leaves.rebuild_inner(cur, key, set(drained.touched))
        cur.execute(sql.SQL("UPDATE {} SET updated_at = pg_catalog.now() "
                            "WHERE tree_key OPERATOR(pg_catalog.=) %s").format(objects.TREES),
                    (key,))
        return row, drained
    return in_transaction(run, repeatable=True)


def update_trees(job: Job, shape: TableShape) -> tuple[TreeRow, dict[str, Any]]:
    """Bring every node's tree up to date; return the trees' (checked, common) row and
    what was done."""
    key = objects.tree_key(shape.table)
    folded = each_node(job, lambda node: _fold(shape, key, node))
    tree = check_same_blocks({n: r for n, (r, _) in folded.items()}, shape)
    touched = sorted({b for _, d in folded.values() for b in d.touched})
    # splitting casts key bounds: to the key's built-in base types, never to a domain
    cast = keytypes.cast_shape(shape, keytypes.key_bases(job.sessions, shape))
    plan = plan_rebalance(job, cast, key, touched, tree.block_rows)
    if plan:
        sigs = each_node(job, lambda node: in_transaction(
            lambda cur: _apply(cur, cast, key, plan, node), repeatable=True))
        if len(set(sigs.values())) > 1:
            raise TableError(f"Rebalancing the Merkle trees of table {shape.table.display} left "
                             "different blocks on the nodes; run 'ace mtree build' for it again.")
    return tree, {"changes_folded": {n: d.rows for n, (_, d) in folded.items()},
                  "leaves_touched": len(touched), "leaves_split": len(plan.splits),
                  "leaves_merged": len(plan.merges)}


def plan_rebalance(job: Job, shape: TableShape, key: str, touched: list[int],
                   block_rows: int) -> Rebalance:
    plan = Rebalance()
    if not touched:
        return plan
    wanted = sorted({b + d for b in touched for d in (0, 1)})
    per_node = each_node(job, lambda node: reading(
        shape, key, node, lambda cur: leaves.read_blocks(cur, key, wanted)))
    most = {b: max(per_node[n].get(b, (0, ""))[0] for n in job.nodes) for b in wanted}
    exists = set().union(*(set(m) for m in per_node.values()))
    for b in touched:
        if most[b] > block_rows * SPLIT_FACTOR:
            biggest = max(job.nodes, key=lambda n: per_node[n].get(b, (0, ""))[0])
            cuts = _split_points(job, shape, key, b, biggest, math.ceil(most[b] / block_rows))
            if cuts:
                plan.splits[b] = cuts
    taken: set[int] = set(plan.splits)
    for b in touched:
        right = b + 1
        if (right in exists and most[b] < block_rows / MERGE_FRACTION
                and most[b] + most.get(right, block_rows) <= block_rows
                and not taken & {b, right}):
            plan.merges.append(b)
            taken |= {b, right}
    return plan


def _bounds(cur: cursor, shape: TableShape, key: str, b: int) -> tuple[Key | None, Key | None]:
    lows = leaves.read_lowers(cur, shape, key, [b, b + 1])
    return lows.get(b), lows.get(b + 1)


def _split_points(job: Job, shape: TableShape, key: str, b: int, node: str,
                  pieces: int) -> list[Key]:
    def cuts(cur: cursor) -> list[Key]:
        lower, upper = _bounds(cur, shape, key, b)
        cur.execute(sql.SQL("SELECT row_count FROM {} WHERE block_no OPERATOR(pg_catalog.=) %s"
                            ).format(objects.obj("blocks", key)), (b,))
        count = int(cur.fetchone()[0])
        query, params = queries.inner_boundaries(
            shape, KeyRange(b, lower, upper), max(1, math.ceil(count / pieces)), None)
        cur.execute(queries.PINNED_PLAN)  # the leaf's rows by its index, not the table
        cur.execute(query, params)
        return [tuple(r) for r in cur.fetchall()]
    found = job.sessions.on_one(node, reading(shape, key, node, cuts))
    return agreed_boundaries(job.sessions, shape, found)


def _apply(cur: cursor, shape: TableShape, key: str, plan: Rebalance, node: str) -> str:
    """Fold the log, merge and split as planned, renumber; return the new boundary digest."""
    guard(cur, shape, key, node, trust.ROW_EXCLUSIVE)  # before the snapshot
    blocks = objects.obj("blocks", key)
    drained = leaves.drain(cur, shape, key)
    refuse_if_marked(drained, shape, node)
    # leaves before the first one restructured keep their numbers and their parents: changes
    # folded into them now go up the tree here; the rest is computed again below
    first = min([*plan.merges, *plan.splits])
    leaves.rebuild_inner(cur, key, {b for b in drained.touched if b < first})
    for b in plan.merges:
        cur.execute(sql.SQL(
            "UPDATE {t} k SET row_count = k.row_count OPERATOR(pg_catalog.+) r.row_count, "
            "hash = k.hash OPERATOR(pg_catalog.#) r.hash FROM {t} r "
            "WHERE k.block_no OPERATOR(pg_catalog.=) %s AND r.block_no OPERATOR(pg_catalog.=) %s"
        ).format(t=blocks), (b, b + 1))
        cur.execute(sql.SQL("DELETE FROM {} WHERE block_no OPERATOR(pg_catalog.=) %s").format(
            blocks), (b + 1,))
    next_no = TEMP_BLOCK_BASE
    for b, cuts in plan.splits.items():
        lower, upper = _bounds(cur, shape, key, b)
        counts, hashes = leaves.hash_ranges(cur, shape, [KeyRange(b, lower, upper, tuple(cuts))])
        cur.execute(sql.SQL("DELETE FROM {} WHERE block_no OPERATOR(pg_catalog.=) %s").format(
            blocks), (b,))
        leaves.insert_blocks(cur, shape, key, next_no, [lower, *cuts], counts, hashes)
        next_no += len(counts)
    leaves.rebuild_inner_from(cur, key, first, leaves.renumber(cur, shape, key, first))
    sig = leaves.bounds_signature(cur, shape, key)
    cur.execute(sql.SQL("UPDATE {} SET bounds_sig = %s, updated_at = pg_catalog.now() "
                        "WHERE tree_key OPERATOR(pg_catalog.=) %s").format(objects.TREES),
                (sig, key))
    return sig
