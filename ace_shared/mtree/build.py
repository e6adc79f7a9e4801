"""``ace mtree init``, ``build`` and ``teardown``: setting trees up on every node and removing them.

Build agrees one set of block boundaries for all nodes (the same sampled plan
table-diff makes, with ranges of ``FANOUT`` leaves whose inner cuts are the
leaf boundaries), then on each node: first, in a short transaction, the log
and the triggers (so every change from then on is logged); then, in one
``REPEATABLE READ`` transaction, the log is emptied and every leaf hashed at
that one snapshot. Changes committed before the snapshot are in the hashes,
changes after it are in the log: none is counted twice or lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.config import Settings
from ace_shared.diff import queries
from ace_shared.diff.plan import agreed_boundaries
from ace_shared.diff.ranges import Key, KeyRange
from ace_shared.mtree import leaves, objects
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import (
    Job,
    in_transaction,
    open_job,
    require_schema,
    table_identity,
    table_shape,
)
from ace_shared.nodes.ident import TableName
from ace_shared.nodes.shape import TableShape

Progress = Callable[[int, int], None]


def run_init(request: MtreeRequest, settings: Settings) -> dict[str, Any]:
    """Create ACE's mtree schema on every chosen node."""
    with open_job(request, settings) as job:
        watching = job.sessions.on_all(in_transaction(objects.init))
        return {"action": "init", "cluster_name": request.cluster_name, "nodes": job.nodes,
                "schema": objects.SCHEMA, "alter_table_watched": watching}


def leaf_lowers(ranges: list[KeyRange]) -> list[Key | None]:
    """The lower bound of every leaf: each range's own, then its inner cuts."""
    out: list[Key | None] = []
    for rng in ranges:
        out.append(rng.lower)
        out.extend(rng.inner)
    return out


def _build_on_node(shape: TableShape, key: str, ranges: list[KeyRange], block_rows: int,
                   lowers: list[Key | None], progress: Callable[[], None] | None,
                   ) -> Callable[[cursor], int]:
    def track(cur: cursor) -> None:
        _, owner = table_identity(cur, shape)
        cur.execute("DELETE FROM ace_mtree.trees WHERE tree_key = %s", (key,))
        objects.create_storage(cur, shape, key)
        objects.create_tracking(cur, shape, key, owner)

    def fill(cur: cursor) -> int:
        cur.execute(sql.SQL("DELETE FROM {}").format(objects.obj("log", key)))
        counts: list[int] = []
        hashes: list[int] = []
        for rng in ranges:
            c, h = leaves.hash_ranges(cur, shape, [rng])
            counts += c
            hashes += h
            if progress:
                progress()
        leaves.insert_blocks(cur, shape, key, 0, lowers, counts, hashes)
        leaves.rebuild_inner(cur, key, None)
        oid, _ = table_identity(cur, shape)
        cur.execute(
            "INSERT INTO ace_mtree.trees (tree_key, schema_name, table_name, table_oid, shape_sig,"
            " block_rows, bounds_sig) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (key, shape.table.schema, shape.table.table, oid, objects.shape_signature(shape),
             block_rows, leaves.bounds_signature(cur, shape, key)))
        return sum(counts)

    def run(cur: cursor) -> int:
        in_transaction(track)(cur)
        return in_transaction(fill, repeatable=True)(cur)
    return run


def run_build(request: MtreeRequest, settings: Settings,
              progress: Progress | None = None) -> dict[str, Any]:
    """Build (or rebuild) the table's tree on every chosen node."""
    with open_job(request, settings) as job:
        require_schema(job)
        shape = table_shape(job)
        return build_tree(job, shape, progress)


def group_leaves(cuts: list[Key], fanout: int = leaves.FANOUT) -> list[KeyRange]:
    """Ranges of ``fanout`` consecutive leaves cut at ``cuts``: each range's inner cuts are
    its leaves' boundaries, so one hashing query per range gives every leaf's hash."""
    bounds: list[Key | None] = [None, *cuts, None]
    out = []
    for i, start in enumerate(range(0, len(bounds) - 1, fanout)):
        end = min(start + fanout, len(bounds) - 1)
        out.append(KeyRange(i, bounds[start], bounds[end], tuple(cuts[start:end - 1])))
    return out


def exact_cuts(job: Job, shape: TableShape, block_rows: int) -> list[Key]:
    """Every ``block_rows``-th key of the node that holds the most rows, kept where every
    node sorts it alike: leaves start even, so few need splitting soon after a build."""
    counts = job.sessions.on_all(
        lambda cur: (cur.execute(queries.sql.SQL("SELECT count(*) FROM {}").format(
            queries.table_ref(shape))), cur.fetchone()[0])[1])
    biggest = max(job.nodes, key=lambda n: counts[n])
    query, params = queries.every_nth_key(shape, block_rows, None)
    rows = job.sessions.on_one(biggest, lambda cur: (cur.execute(query, params),
                                                     cur.fetchall())[1])
    return agreed_boundaries(job.sessions, shape, [tuple(r) for r in rows])


def build_tree(job: Job, shape: TableShape, progress: Progress | None = None) -> dict[str, Any]:
    block_rows = job.request.block_rows
    ranges = group_leaves(exact_cuts(job, shape, block_rows))
    lowers = leaf_lowers(ranges)
    key = objects.tree_key(shape.table)
    total = len(ranges) * len(job.nodes)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress:
            progress(done[0], total)
    rows = job.sessions.on_all(_build_on_node(shape, key, ranges, block_rows, lowers, tick))
    return {"action": "build", "table": shape.table.display, "nodes": job.nodes,
            "blocks": len(lowers), "block_rows": block_rows, "rows_by_node": rows}


def run_teardown(request: MtreeRequest, settings: Settings) -> dict[str, Any]:
    """Remove one table's tree, or (without a table) every object ACE made for trees."""
    with open_job(request, settings) as job:
        table = request.table

        def teardown(cur: cursor) -> int:
            if not objects.schema_exists(cur):
                return 0
            if table is not None:
                objects.drop_tree(cur, table, objects.tree_key(table))
                return 1
            cur.execute("SELECT tree_key, schema_name, table_name FROM ace_mtree.trees")
            trees = cur.fetchall()
            for key, schema, name in trees:
                objects.drop_tree(cur, TableName(schema, name), key)
            # the triggers depend on the schema's functions and go with them, even those
            # of trees whose catalogue row a crash emptied
            cur.execute("DROP SCHEMA ace_mtree CASCADE")
            return len(trees)
        removed = job.sessions.on_all(in_transaction(teardown))
        return {"action": "teardown", "nodes": job.nodes, "trees_removed": removed,
                "table": table.display if table else None}
