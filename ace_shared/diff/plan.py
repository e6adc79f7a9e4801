"""Preparing a table diff: check the table on every node, then plan key ranges.

Planning avoids a full scan of large tables: the row estimate comes from the
catalog, and boundaries from a small page sample (``TABLESAMPLE SYSTEM``) of
the node that holds the most rows. Small or never-analysed tables get exact
boundaries from one pass over their primary-key index. Boundaries only balance
the work; correctness comes from the ranges covering the whole key space.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.config import Settings
from ace_shared.diff import queries
from ace_shared.diff.provenance import OriginFilter, check_origin_node
from ace_shared.diff.ranges import (
    SUBRANGES,
    Key,
    KeyRange,
    dedupe_sorted,
    plan_ranges,
    range_count_for,
    sorted_everywhere,
)
from ace_shared.diff.request import DiffRequest, DiffSpec
from ace_shared.diff.tuning import DiffTuning
from ace_shared.diff.workdir import WorkDir
from ace_shared.nodes.cluster import load_cluster
from ace_shared.nodes.connection import NodeTarget, node_targets
from ace_shared.nodes.filter import check_filter_columns
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.nodes.shape import TableShape, read_shape, reconcile_shapes
from ace_shared.replication.origins import commit_ts_tracked, read_origin_names

SAMPLES_PER_RANGE = 48  # enough for a range's 15 inner cuts, evenly spread


@dataclass
class DiffPlan:
    spec: DiffSpec
    ranges: list[KeyRange]
    estimated_rows: int


def resolve_targets(cluster_name: str, dbname: str | None, nodes: str | list[str] | None,
                    settings: Settings, role: str | None) -> tuple[str, tuple[NodeTarget, ...]]:
    """The database name and connection targets for the chosen nodes."""
    cluster = load_cluster(settings.cluster_dir, cluster_name)
    chosen = cluster.select_nodes(nodes)
    db = cluster.database(dbname)
    return db.name, node_targets(cluster, chosen, db.name, settings, role)


class ProvenanceReader:
    """Reads the spec's provenance fields: each node's origin names, the nodes that do not
    track commit times, and the checked ``--against-origin``/``--until`` filter.

    Origins are matched against every node of the cluster file, not only the
    compared ones: a recovery compares the survivors against a node that is down.
    Split in two (:meth:`read` on each node, :meth:`fields` of what they read) so a
    command can read them in a round trip it makes anyway.
    """

    def __init__(self, settings: Settings, cluster_name: str, dbname: str,
                 origin_filter: OriginFilter | None = None) -> None:
        cluster = load_cluster(settings.cluster_dir, cluster_name)
        self.origin_filter = origin_filter or OriginFilter()
        check_origin_node(self.origin_filter.against_origin, [n.name for n in cluster.nodes],
                          "against-origin")
        self._peers = {n.name: (n.host, n.port, dbname) for n in cluster.nodes}

    def read(self, cur: cursor) -> tuple[dict[str, str], bool]:
        """One node's origin names and whether it tracks commit times."""
        return read_origin_names(cur, self._peers), commit_ts_tracked(cur)

    def fields(self, found: dict[str, tuple[dict[str, str], bool]],
               order: list[str]) -> dict[str, Any]:
        """The spec's fields from every node's :meth:`read`."""
        return {"origin_filter": self.origin_filter,
                "origin_names": {n: found[n][0] for n in order},
                "untracked": tuple(n for n in order if not found[n][1])}


def read_provenance(sessions: NodeSessions, settings: Settings, cluster_name: str,
                    origin_filter: OriginFilter | None = None) -> dict[str, Any]:
    """The spec's provenance fields (:class:`ProvenanceReader`), read on every node."""
    reader = ProvenanceReader(settings, cluster_name, sessions.targets[sessions.order[0]].dbname,
                              origin_filter)
    return reader.fields(sessions.on_all(reader.read), sessions.order)


def read_common_shape(sessions: NodeSessions, request_table: Any) -> TableShape:
    shapes: dict[str, TableShape] = {}
    # read in node order so that error messages name the first offending node
    for node in sessions.order:
        shapes[node] = sessions.on_one(node, functools.partial(
            read_shape, table=request_table, node=node))
    return reconcile_shapes(shapes)


def check_filter_on_nodes(sessions: NodeSessions, shape: TableShape, table_filter: str) -> None:
    """Plan (not run) a query with the filter on every node, so a bad filter fails early."""
    query, params = queries.sample_keys(shape, None, table_filter)

    def explain(cur: cursor) -> None:
        cur.execute(sql.SQL("EXPLAIN {}").format(query), params)
        cur.fetchall()
    for node in sessions.order:  # the columns it names exist and have built-in types
        sessions.on_one(node, functools.partial(
            check_filter_columns, table=shape.table, text=table_filter, node=node))
    sessions.on_all(explain)


def _estimate(cur: cursor, shape: TableShape) -> int:
    cur.execute("SELECT c.reltuples::pg_catalog.int8 FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
                "WHERE n.nspname OPERATOR(pg_catalog.=) %s "
                "AND c.relname OPERATOR(pg_catalog.=) %s",
                (shape.table.schema, shape.table.table))
    row = cur.fetchone()
    return int(row[0]) if row else -1


def agreed_boundaries(sessions: NodeSessions, shape: TableShape,
                      boundaries: list[Key]) -> list[Key]:
    """The boundaries every node sorts in the same order (see :func:`ranges.sorted_everywhere`)."""
    if len(boundaries) < 2:
        return boundaries
    query, params = queries.sort_keys(shape, boundaries)
    orders = sessions.fetch_all(query, params)
    ranks = []
    for rows in orders.values():
        rank = [0] * len(boundaries)
        for position, (ordinal,) in enumerate(rows):
            rank[int(ordinal) - 1] = position
        ranks.append(rank)
    return [boundaries[i] for i in sorted_everywhere(ranks)]


def plan_boundaries(sessions: NodeSessions, shape: TableShape, block_rows: int,
                    table_filter: str | None,
                    exact_plan_rows: int = DiffTuning.exact_plan_rows
                    ) -> tuple[list[KeyRange], int]:
    """Cut the key space into ranges of about ``block_rows`` rows, each with inner cuts.

    Cut points come from one node (the one with the most rows): every
    ``block_rows / SUBRANGES``-th key of a small table, or a row sample of a
    large one (over ``exact_plan_rows``). Only cuts that every node sorts alike are kept.
    """
    estimates = sessions.on_all(lambda cur: _estimate(cur, shape))
    node = max(sessions.order, key=lambda n: estimates[n])
    estimate = estimates[node]
    if estimate < 0 or estimate <= exact_plan_rows:
        step = max(1, block_rows // SUBRANGES)
        query, params = queries.every_nth_key(shape, step, table_filter)
        rows = sessions.fetch_from(node, query, params)
        cuts = agreed_boundaries(sessions, shape, [tuple(r) for r in rows])
        estimate = max(estimate, (len(rows) + 1) * step)
        parts = range_count_for((len(cuts) + 1) * step, block_rows)
        return plan_ranges(cuts, parts, SUBRANGES), estimate
    parts = range_count_for(estimate, block_rows)
    wanted = parts * SAMPLES_PER_RANGE
    percent = min(100.0, max(0.0001, 100.0 * wanted / max(estimate, 1)))
    query, params = queries.sample_keys(shape, percent, table_filter)
    rows = sessions.fetch_from(node, query, params)
    cuts = agreed_boundaries(sessions, shape, dedupe_sorted(tuple(r) for r in rows))
    return plan_ranges(cuts, parts, SUBRANGES), estimate


def prepare_diff(request: DiffRequest, settings: Settings, task_id: str,
                 sessions: NodeSessions, tuning: DiffTuning | None = None) -> DiffPlan:
    """Check the table on the sessions' nodes, then plan the ranges.

    Nothing is written but the (empty) work folder. The nodes and database are
    the sessions' own, so the cluster file is read once per plan, by whoever
    opened the sessions.
    """
    shape = read_common_shape(sessions, request.table)
    if request.table_filter:
        check_filter_on_nodes(sessions, shape, request.table_filter)
    ranges, estimate = plan_boundaries(sessions, shape, request.block_rows,
                                       request.table_filter,
                                       (tuning or DiffTuning()).exact_plan_rows)
    work = WorkDir.for_task(settings.output_dir, task_id).create()
    spec = DiffSpec(
        task_id=task_id, cluster_name=request.cluster_name,
        dbname=sessions.targets[sessions.order[0]].dbname, nodes=tuple(sessions.order),
        shape=shape, table_filter=request.table_filter, block_rows=request.block_rows,
        batch_size=request.batch_size or 1, max_diffs=settings.MAX_ALLOWED_DIFFS,
        role=request.role, work_dir=str(work),
        **read_provenance(sessions, settings, request.cluster_name, request.origin_filter),
    )
    return DiffPlan(spec, ranges, estimate)
