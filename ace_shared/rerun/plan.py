"""Preparing a table rerun: which keys to check again, in what order, in which batches.

The keys are every key the earlier diff file lists, on any pair. They are
first put into the database's own form and order on the first node (one
query: each key cast to its column type, deduplicated, sorted, printed back
as text), so that a key written differently in an older file (``1.0`` for
``1``) still matches, and the new diff file comes out in key order. The
sorted keys are written to the job's work folder in batch files
(:mod:`~ace_shared.diff.workdir`); workers (threads here, Celery subtasks on a
fleet) read their batch from there, and the plan itself holds only small things.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg2 import sql

from ace_shared.config import Settings
from ace_shared.diff.plan import read_common_shape
from ace_shared.diff.request import DiffSpec
from ace_shared.diff.workdir import WorkDir
from ace_shared.difffile.format import DiffFile, Key, check_diff_shape, row_key
from ace_shared.nodes.cluster import Cluster
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.nodes.shape import TableShape
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


def canonical_sorted_keys_sql(shape: TableShape) -> sql.Composable:
    """Distinct keys cast to their types, printed back as text, in the table's key order."""
    cols = shape.key_columns
    names = [sql.Identifier(f"k{i}") for i in range(len(cols))]
    arrays = sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in cols)
    typed = sql.SQL(", ").join(sql.SQL("u.{}::{} AS {}").format(n, sql.SQL(c.type_sql), n)
                               for n, c in zip(names, cols, strict=True))
    order = []
    for n, c in zip(names, cols, strict=True):
        expr = sql.SQL("d.{}").format(n)
        if c.collation_sql:
            expr = sql.SQL("{} COLLATE {}").format(expr, sql.SQL(c.collation_sql))
        order.append(expr)
    query = sql.SQL(
        "SELECT {} FROM (SELECT DISTINCT {} FROM unnest({}) AS u({})) d ORDER BY {}"
    ).format(sql.SQL(", ").join(sql.SQL("d.{}::text").format(n) for n in names), typed, arrays,
             sql.SQL(", ").join(names), sql.SQL(", ").join(order))
    return query


def diff_keys(diff: DiffFile, key: tuple[str, ...]) -> list[Key]:
    """Every distinct key the diff file lists, as written there."""
    seen: dict[Key, None] = {}
    for pair, _node, row in diff.iter_rows():
        seen.setdefault(row_key(row, list(key), f"pair {pair.name}"), None)
    return list(seen)


def sort_keys_on_node(sessions: NodeSessions, node: str, shape: TableShape,
                      keys: list[Key]) -> list[Key]:
    if not keys:
        return []
    query = canonical_sorted_keys_sql(shape)
    params = [[k[i] for k in keys] for i in range(len(shape.key))]

    def run(cur: Any) -> list[Key]:
        cur.execute(query, params)
        return [tuple(r) for r in cur.fetchall()]
    return sessions.on_one(node, run)


def write_batches(work: WorkDir, keys: list[Key], batch_keys: int) -> list[int]:
    parts = []
    for index, start in enumerate(range(0, len(keys), batch_keys)):
        work.write_keys(index, keys[start:start + batch_keys])
        parts.append(index)
    return parts


def prepare_rerun(request: RerunRequest, cluster: Cluster, diff: DiffFile, settings: Settings,
                  task_id: str, sessions: NodeSessions, started_at: str) -> RerunPlan:
    """Check the table against the diff file, sort its keys, and write the batches and plan."""
    shape = read_common_shape(sessions, request.table)
    check_diff_shape(diff, shape, sessions.order[0])
    keys = sort_keys_on_node(sessions, sessions.order[0], shape, diff_keys(diff, shape.key))
    work = WorkDir.for_task(settings.output_dir, task_id).create()
    batch_parts = write_batches(work, keys, RERUN_BATCH_KEYS)
    parts = [0] if request.behavior == "hostdb" else batch_parts
    spec = DiffSpec(
        task_id=task_id, cluster_name=request.cluster_name,
        dbname=sessions.targets[sessions.order[0]].dbname, nodes=tuple(sessions.order),
        shape=shape, table_filter=None, block_rows=RERUN_BATCH_KEYS, batch_size=1,
        max_diffs=settings.MAX_ALLOWED_DIFFS, role=request.role, work_dir=str(work),
    )
    meta = {
        "operation": "table-rerun", "behavior": request.behavior, "rerun_of": str(diff.path),
        "previous_diff_rows": len(keys), "previous_diff_partial": diff.is_partial,
        "key_batches": len(batch_parts), "parts": parts, "started_at": started_at,
        "executor": "local",
    }
    plan = RerunPlan(spec, parts, len(keys), meta)
    plan.save()
    return plan
