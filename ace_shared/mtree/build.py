"""``ace mtree init``, ``build`` and ``teardown``: setting trees up on every node and removing them.

A build runs in steps (:mod:`ace_shared.mtree.buildjob`): here they run in this
process; on a fleet (``ace_workers.mtree``) the hashing is shared by the workers.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.config import Settings
from ace_shared.mtree import objects, trust
from ace_shared.mtree.buildjob import build_tree
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import (
    each_node,
    in_transaction,
    open_job,
    require_schema,
    table_shape,
    tree_lock,
)
from ace_shared.nodes.ident import TableName

Progress = Callable[[int, int], None]


def run_init(request: MtreeRequest, settings: Settings) -> dict[str, Any]:
    """Create ACE's mtree schema on every chosen node."""
    with open_job(request, settings) as job:
        watching = each_node(job, lambda node: in_transaction(
            lambda cur: objects.init(cur, node, request.cluster_name)))
        return {"action": "init", "cluster_name": request.cluster_name, "nodes": job.nodes,
                "schema": objects.SCHEMA, "alter_table_watched": watching}


def run_build(request: MtreeRequest, settings: Settings, task_id: str = "",
              progress: Progress | None = None) -> dict[str, Any]:
    """Build (or rebuild) the table's tree on every chosen node, in this process."""
    with open_job(request, settings) as job:
        require_schema(job)
        return build_tree(job, table_shape(job), task_id, progress)


def run_teardown(request: MtreeRequest, settings: Settings) -> dict[str, Any]:
    """Remove one table's tree, or (without a table) every object ACE made for trees."""
    with open_job(request, settings) as job:
        table = request.table

        def teardown(cur: cursor, node: str) -> int:
            if not objects.schema_exists(cur):
                return 0
            # reads and deletes catalogue rows: only while nothing on it can run code
            if not trust.guard_catalogue(cur, node, trust.ROW_EXCLUSIVE, request.cluster_name):
                return 0
            if table is not None:
                objects.drop_tree(cur, table, objects.tree_key(table))
                return 1
            cur.execute(sql.SQL("SELECT tree_key, schema_name, table_name FROM {}")
                        .format(objects.TREES))
            trees = cur.fetchall()
            for key, schema, name in trees:
                objects.drop_tree(cur, TableName(schema, name), key)
            # the triggers depend on the schema's functions and go with them, even those
            # of trees whose catalogue row a crash emptied
            cur.execute("DROP SCHEMA ace_mtree CASCADE")
            return len(trees)
        # one tree waits for a command working on it; the whole schema waits on its tables
        with tree_lock(job, table) if table is not None else nullcontext():
            removed = each_node(job, lambda node: in_transaction(
                lambda cur: teardown(cur, node)))
        return {"action": "teardown", "nodes": job.nodes, "trees_removed": removed,
                "table": table.display if table else None}
