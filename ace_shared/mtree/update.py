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

Healing: a ``TRUNCATE`` on a node, or a stale leaf, is no reason to rebuild.
Folding hashes the affected leaves again from the table (:func:`fold`) and
says so in one sentence; a changed table (columns, key, dropped and created)
is still refused (:func:`~ace_shared.mtree.tree.check_tree`).
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
from ace_shared.mtree import kept, keytypes, leaves, objects, trust
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


@dataclass
class Rebalance:
    """One structural change, the same for every node."""

    merges: list[tuple[int, int]] = field(default_factory=list)  # leaf b absorbs the next one
    splits: dict[int, list[Key]] = field(default_factory=dict)  # leaf -> its new inner cuts

    def __bool__(self) -> bool:
        return bool(self.merges or self.splits)


def refuse_if_altered(drained: leaves.Drained, shape: TableShape, node: str) -> None:
    """Refuse a tree whose log holds an earlier version's marker of an ALTER TABLE.

    Raising rolls the drain back, so the marker stays logged: the tree is refused
    until it is built again.
    """
    if drained.altered:
        raise TableError(f"Table {shape.table.display} was altered (ALTER TABLE) on node {node} "
                         "since its Merkle tree was built; run 'ace mtree build' for it again.")


@dataclass(frozen=True)
class Folded:
    """What folding the log did on one node, and the leaves it hashed again from the table."""

    drained: leaves.Drained
    healed: str | None = None  # one sentence, when leaves were hashed again
    all_touched: bool = False  # every leaf was hashed again (after a TRUNCATE)


def fold(cur: cursor, shape: TableShape, key: str, node: str) -> Folded:
    """Drain the log into the leaves; heal leaves the log cannot bring up to date.

    After a ``TRUNCATE`` (its marker in the log) every leaf on this node is hashed
    again from the table; a leaf left with a negative row count (the log and the
    leaf disagreed: it was stale) is hashed again alone. Both at the snapshot the
    log was drained at, so they are current and later changes stay logged.
    (``TRUNCATE`` is not MVCC-safe: one committed after the snapshot makes the
    table look empty to leaves hashed now, while its marker stays logged; the
    next fold sees the marker and hashes every leaf again. The table is not
    locked for this: the walk and the fold read only ACE's tables.)
    ``shape`` is the :func:`~ace_shared.mtree.keytypes.cast_shape`.
    """
    drained = leaves.drain(cur, shape, key)
    refuse_if_altered(drained, shape, node)
    name = shape.table.display
    if drained.truncated:
        n = leaves.rehash_leaves(cur, shape, key, None)
        return Folded(drained, f"Table {name} was truncated on node {node} since its Merkle "
                      f"tree was last updated, so its {n} leaves there were hashed again from "
                      "the table.", all_touched=True)
    if drained.stale:
        n = leaves.rehash_leaves(cur, shape, key, list(drained.stale))
        return Folded(drained, f"{n} leaves of the Merkle tree of table {name} on node {node} "
                      "held fewer rows than their logged deletes (stale), so they were hashed "
                      "again from the table.")
    return Folded(drained)


def _fold(shape: TableShape, cast: TableShape, key: str, node: str) -> Any:
    def run(cur: cursor) -> tuple[TreeRow, Folded, tuple[int, leaves.Level]]:
        guard(cur, shape, key, node, trust.ROW_EXCLUSIVE)  # before the snapshot
        row = check_tree(cur, shape, key, node)  # the table's own types: its signature
        folded = fold(cur, cast, key, node)
        leaves.rebuild_inner(cur, key, None if folded.all_touched
                             else set(folded.drained.touched))
        cur.execute(sql.SQL("UPDATE {} SET updated_at = pg_catalog.now() "
                            "WHERE tree_key OPERATOR(pg_catalog.=) %s").format(objects.TREES),
                    (key,))
        return row, folded, leaves.top_level(cur, key)  # where a walk starts
    return in_transaction(run, repeatable=True)


def _all_leaves(job: Job, shape: TableShape, key: str, node: str) -> list[int]:
    return job.sessions.on_one(node, reading(shape, key, node, lambda cur: [
        b for b, _ in leaves.read_lowers(cur, shape, key)]))


Tops = dict[str, tuple[int, leaves.Level]]


def update_trees(job: Job, shape: TableShape) -> tuple[TreeRow, dict[str, Any], Tops]:
    """Bring every node's tree up to date; return the trees' (checked, common) row, what
    was done, and every node's top level as it was left (for a walk to start from)."""
    key = objects.tree_key(shape.table)
    # bounds are cast to the key's built-in base types, never to a domain
    job.key_bases = job.key_bases or keytypes.key_bases(job.sessions, shape)
    cast = keytypes.cast_shape(shape, job.key_bases)
    folded = each_node(job, lambda node: _fold(shape, cast, key, node))
    tree = check_same_blocks({n: r for n, (r, _, _) in folded.items()}, shape)
    tops = {n: top for n, (_, _, top) in folded.items()}
    touched_set = {b for _, f, _ in folded.values() for b in f.drained.touched}
    everywhere = [n for n, (_, f, _) in folded.items() if f.all_touched]
    if everywhere:  # a truncated node's leaves all changed
        touched_set |= set(_all_leaves(job, cast, key, everywhere[0]))
    touched = sorted(touched_set)
    # only a leaf some node left too large or too small can be split or merged: the others'
    # counts need not be read (every node's count of a leaf is checked when one's is off)
    candidates = touched if everywhere else sorted(
        {b for _, f, _ in folded.values() for b in _off_size(f, tree.block_rows)})
    plan = plan_rebalance(job, cast, key, candidates, tree.block_rows)
    healed = [f.healed for _, f, _ in folded.values() if f.healed]
    if plan:
        applied = each_node(job, lambda node: in_transaction(
            lambda cur: _apply(cur, cast, key, plan, node), repeatable=True))
        if len({sig for sig, _, _ in applied.values()}) > 1:
            raise TableError(f"Rebalancing the Merkle trees of table {shape.table.display} left "
                             "different blocks on the nodes; run 'ace mtree build' for it again.")
        healed += [h for _, h, _ in applied.values() if h]
        tops = {n: top for n, (_, _, top) in applied.items()}
    summary: dict[str, Any] = {
        "changes_folded": {n: f.drained.rows for n, (_, f, _) in folded.items()},
        "leaves_touched": len(touched), "leaves_split": len(plan.splits),
        "leaves_merged": len(plan.merges)}
    if healed:
        summary["healed"] = healed
    return tree, summary, tops


def _off_size(folded: Folded, block_rows: int) -> set[int]:
    """The leaves this node's fold left over ``SPLIT_FACTOR`` times ``block_rows`` or under a
    ``MERGE_FRACTION`` of it, and those it hashed again (their folded counts were wrong).

    A leaf no fold leaves off size keeps a size every node had when it was last touched,
    and was split or merged then if it needed to be.
    """
    drained = folded.drained
    off = {b for b, c in zip(drained.touched, drained.counts, strict=True)
           if c > block_rows * SPLIT_FACTOR or c < block_rows / MERGE_FRACTION}
    return off | set(drained.stale)


def plan_rebalance(job: Job, shape: TableShape, key: str, touched: list[int],
                   block_rows: int) -> Rebalance:
    plan = Rebalance()
    if not touched:
        return plan
    per_node = each_node(job, lambda node: reading(
        shape, key, node, lambda cur: leaves.read_blocks(cur, key, touched)))
    first = per_node[job.nodes[0]]

    def most(b: int, at: int) -> int:  # the most rows the leaf (at 0) or its next (at 3) holds
        return max(int(per_node[n][b][at] or 0) if b in per_node[n] else 0 for n in job.nodes)
    for b in touched:
        if b in first and most(b, 0) > block_rows * SPLIT_FACTOR:
            biggest = max(job.nodes, key=lambda n: per_node[n].get(b, (0,))[0])
            cuts = _split_points(job, shape, key, b, biggest, math.ceil(most(b, 0) / block_rows))
            if cuts:
                plan.splits[b] = cuts
    taken: set[int] = set(plan.splits)
    for b in touched:
        if b not in first:
            continue
        right = first[b][2]
        if (right is not None and most(b, 0) < block_rows / MERGE_FRACTION
                and most(b, 0) + most(b, 3) <= block_rows and not taken & {b, right}):
            plan.merges.append((b, right))
            taken |= {b, right}
    return plan


def _split_points(job: Job, shape: TableShape, key: str, b: int, node: str,
                  pieces: int) -> list[Key]:
    def cuts(cur: cursor) -> list[Key]:
        lower, upper = leaves.read_spans(cur, shape, key, [b])[b]
        count = leaves.read_blocks(cur, key, [b])[b][0]
        query, params = queries.inner_boundaries(
            shape, KeyRange(b, lower, upper), max(1, math.ceil(count / pieces)), None)
        cur.execute(queries.PINNED_PLAN)  # the leaf's rows by its index, not the table
        cur.execute(query, params)
        return [tuple(r) for r in cur.fetchall()]
    found = job.sessions.on_one(node, reading(shape, key, node, cuts))
    return agreed_boundaries(job.sessions, shape, found)


def _apply(cur: cursor, shape: TableShape, key: str, plan: Rebalance,
           node: str) -> tuple[str, str | None, tuple[int, leaves.Level]]:
    """Fold the log, merge and split as planned; return the new boundary signature, what
    was healed, and the top level.

    No leaf outside the plan is read or renumbered: a merge leaves its number
    free, a split's pieces take free numbers after the leaf (moving the few leaves
    :func:`~ace_shared.mtree.leaves.make_room` says), and the signature changes by
    the digests of the leaves removed and added.
    """
    guard(cur, shape, key, node, trust.ROW_EXCLUSIVE)  # before the snapshot
    blocks = objects.obj("blocks", key)
    folded = fold(cur, shape, key, node)
    touched: set[int] = set(folded.drained.touched)
    cur.execute(sql.SQL("SELECT bounds_sig FROM {} WHERE tree_key OPERATOR(pg_catalog.=) %s")
                .format(objects.TREES), (key,))
    sig = leaves.signature_value(str(cur.fetchone()[0]))
    if sig is None:  # an earlier version's digest of every boundary: the XOR of the leaves'
        sig = leaves.digest_xor(cur, shape, key, None)
    rights = [r for _, r in plan.merges]
    sig ^= leaves.digest_xor(cur, shape, key, rights)
    for b, right in plan.merges:
        cur.execute(sql.SQL(
            "UPDATE {t} k SET row_count = k.row_count OPERATOR(pg_catalog.+) r.row_count, "
            "hash = k.hash OPERATOR(pg_catalog.#) r.hash, agreed = CASE WHEN k.agreed "
            "OPERATOR(pg_catalog.=) r.agreed THEN k.agreed ELSE '{{}}' END FROM {t} r "
            "WHERE k.block_no OPERATOR(pg_catalog.=) %s AND r.block_no OPERATOR(pg_catalog.=) %s"
        ).format(t=blocks), (b, right))
        cur.execute(sql.SQL("DELETE FROM {} WHERE block_no OPERATOR(pg_catalog.=) %s").format(
            blocks), (right,))
        touched |= {b, right}
    # from the last leaf to the first: a split moves only leaves after it, whose splits
    # are done, so every leaf still to split keeps the number the plan has for it
    for b in sorted(plan.splits, reverse=True):
        cuts = plan.splits[b]
        lower, upper = leaves.read_spans(cur, shape, key, [b])[b]
        agreed = list(kept.read_marks(cur, key, [b])[b])  # the pieces agreed where it did
        counts, hashes = leaves.hash_ranges(cur, shape, [KeyRange(b, lower, upper, tuple(cuts))])
        numbers, moves = leaves.make_room(cur, key, b, len(counts))
        if moves:
            sig ^= leaves.digest_xor(cur, shape, key, [o for o, _ in moves])
            leaves.move_blocks(cur, key, moves)
            sig ^= leaves.digest_xor(cur, shape, key, [n for _, n in moves])
            touched |= {o for o, _ in moves} | {n for _, n in moves}
        cur.execute(sql.SQL("DELETE FROM {} WHERE block_no OPERATOR(pg_catalog.=) %s").format(
            blocks), (b,))
        leaves.insert_blocks(cur, shape, key, numbers, [lower, *cuts], counts, hashes, agreed)
        sig ^= leaves.digest_xor(cur, shape, key, numbers[1:])  # the first keeps b's digest
        touched |= set(numbers)
    leaves.rebuild_inner(cur, key, None if folded.all_touched else touched)
    text = leaves.signature_text(sig)
    cur.execute(sql.SQL("UPDATE {} SET bounds_sig = %s, updated_at = pg_catalog.now() "
                        "WHERE tree_key OPERATOR(pg_catalog.=) %s").format(objects.TREES),
                (text, key))
    return text, folded.healed, leaves.top_level(cur, key)
