"""Preparing a table rerun: which keys to check again, in what order, in which batches.

The keys are every key the earlier diff file lists, on any pair. They are
streamed from the file (through a SQLite spool that refuses a key listed
twice for one node) into a temp table on the first node, and read back in the
database's own form and order (each key cast to its column type, deduplicated,
sorted, printed back as text) through a server-side cursor, so that a key
written differently in an older file (``1.0`` for ``1``) still matches, and the
new diff file comes out in key order. The sorted keys are written to the job's
work folder in batch files (:mod:`~ace_shared.diff.workdir`); workers (threads
here, Celery subtasks on a fleet) read their batch from there, and the plan
itself holds only small things.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from ace_shared.config import Settings
from ace_shared.diff.plan import read_common_shape, read_provenance
from ace_shared.diff.request import DiffSpec
from ace_shared.diff.workdir import WorkDir
from ace_shared.difffile.file import DiffFile, check_diff_shape
from ace_shared.difffile.format import Key
from ace_shared.difffile.spool import RowSpool
from ace_shared.nodes.cluster import Cluster
from ace_shared.nodes.connection import NodeTarget, connect, node_errors, query_error
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.nodes.shape import TableShape
from ace_shared.repair.queries import COPY_CHUNK, LineStream, copy_field
from ace_shared.rerun.request import RerunRequest

RERUN_BATCH_KEYS = 1000


@dataclass
class RerunPlan:
    """A planned rerun: the job as workers see it, its batches (``parts``), and what the
    merge needs (``meta``); kept in the work folder so any worker can take the next step.
    """

    spec: DiffSpec
    parts: list[int]
    keys_total: int
    meta: dict[str, Any]

    @property
    def work(self) -> WorkDir:
        return WorkDir(self.spec.work_dir)

    def save(self) -> None:
        self.work.write_rerun_plan({"spec": self.spec.to_dict(), "meta": self.meta})

    @classmethod
    def load(cls, work_dir: str | Path) -> RerunPlan:
        saved = WorkDir(work_dir).read_rerun_plan()
        meta = saved["meta"]
        return cls(DiffSpec.from_dict(saved["spec"]), list(meta["parts"]),
                   int(meta["previous_diff_rows"]), meta)


def rerun_nodes(cluster: Cluster, diff: DiffFile) -> list[str]:
    """The nodes to compare again: the diff's own (all active nodes for an empty bare file)."""
    nodes = diff.nodes
    chosen = cluster.select_nodes(nodes if len(nodes) >= 2 else None)
    return [n.name for n in chosen]


SORT_TABLE = "ace_rerun_sort"


def canonical_sorted_keys_sql(shape: TableShape) -> sql.Composable:
    """Distinct staged keys (already of their base types), printed back as text, in the
    table's key order."""
    cols = shape.key_columns
    names = [sql.Identifier(f"k{i}") for i in range(len(cols))]
    order = []
    for n, c in zip(names, cols, strict=True):
        expr = sql.SQL("d.{}").format(n)
        if c.collation_sql:
            expr = sql.SQL("{} COLLATE {}").format(expr, sql.SQL(c.collation_sql))
        order.append(expr)
    return sql.SQL(
        "SELECT {} FROM (SELECT DISTINCT {} FROM {} s) d ORDER BY {}"
    ).format(sql.SQL(", ").join(sql.SQL(c.text_sql("d.{}")).format(n)
                                for n, c in zip(names, cols, strict=True)),
             sql.SQL(", ").join(sql.SQL("s.{}").format(n) for n in names),
             sql.Identifier(SORT_TABLE), sql.SQL(", ").join(order))


def _stage_keys(cur: Any, shape: TableShape, keys: Iterator[Key]) -> None:
    """COPY the keys into a temp table whose columns have the keys' *base* types: each
    key is read by its type's input function (no domain CHECK, no cast from text)."""
    cols = [sql.Identifier(f"k{i}") for i in range(len(shape.key))]
    cur.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
        sql.Identifier(SORT_TABLE),
        sql.SQL(", ").join(sql.SQL("{} {}").format(c, sql.SQL(k.cast_sql))
                           for c, k in zip(cols, shape.key_columns, strict=True))))
    lines = ("\t".join(map(copy_field, k)) + "\n" for k in keys)
    cur.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(SORT_TABLE), sql.SQL(", ").join(cols)), LineStream(lines),
        size=COPY_CHUNK)
    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(SORT_TABLE)))


def write_sorted_keys(target: NodeTarget, shape: TableShape, keys: Iterator[Key],
                      work: WorkDir, batch_keys: int) -> tuple[list[int], int]:
    """Sort the keys on ``target`` and write them to batch files as they come back.

    The keys go to a temp table on the node by COPY, come back cast to their
    types (so ``1.0`` and ``1`` are one key), deduplicated and sorted, through
    a server-side cursor: no step holds them all. Returns the parts and the count.
    """
    parts: list[int] = []
    total = 0
    try:
        with node_errors(target.node):
            conn = connect(target)
            try:
                with conn.cursor() as cur:
                    _stage_keys(cur, shape, keys)
                with conn.cursor(name="ace_rerun_sorted") as named:
                    named.itersize = batch_keys
                    named.execute(canonical_sorted_keys_sql(shape))
                    while chunk := named.fetchmany(batch_keys):
                        work.write_keys(len(parts), chunk)
                        parts.append(len(parts))
                        total += len(chunk)
            finally:
                with suppress(psycopg2.Error):
                    conn.rollback()
                    conn.close()
    except psycopg2.Error as exc:
        # by SQLSTATE, never the server's text: it may quote the rows' values
        raise query_error(target.node, exc) from exc
    return parts, total


def prepare_rerun(request: RerunRequest, cluster: Cluster, diff: DiffFile, settings: Settings,
                  task_id: str, sessions: NodeSessions, started_at: str) -> RerunPlan:
    """Check the table against the diff file, sort its keys, and write the batches and plan."""
    shape = read_common_shape(sessions, request.table)
    work = WorkDir.for_task(settings.output_dir, task_id).create()
    spool = RowSpool(diff, list(shape.key), keep_rows=False, folder=work.path)
    try:
        check_diff_shape(diff, shape, sessions.order[0])  # (the spool's pass saw every row)
        batch_parts, keys_total = write_sorted_keys(
            sessions.targets[sessions.order[0]], shape, spool.distinct_keys(), work,
            RERUN_BATCH_KEYS)
    finally:
        spool.close()
    parts = [0] if request.behavior == "hostdb" else batch_parts
    spec = DiffSpec(
        task_id=task_id, cluster_name=request.cluster_name,
        dbname=sessions.targets[sessions.order[0]].dbname, nodes=tuple(sessions.order),
        shape=shape, table_filter=None, block_rows=RERUN_BATCH_KEYS, batch_size=1,
        max_diffs=settings.MAX_ALLOWED_DIFFS, role=request.role, work_dir=str(work),
        **read_provenance(sessions, settings, request.cluster_name),
    )
    meta = {
        "operation": "table-rerun", "behavior": request.behavior, "rerun_of": str(diff.path),
        "previous_diff_rows": keys_total, "previous_diff_partial": diff.is_partial,
        "key_batches": len(batch_parts), "parts": parts, "started_at": started_at,
        "executor": "local",
    }
    plan = RerunPlan(spec, parts, keys_total, meta)
    plan.save()
    return plan
