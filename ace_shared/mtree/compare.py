"""``ace mtree table-diff``: update the trees, walk them from the root, diff only what differs.

The walk reads one level of every node's tree at a time, all nodes at once,
and goes down only under the nodes whose count or hash differ; at the bottom
are the leaves that differ. Those leaves, as key ranges ``[lower, upper)``,
go to the same range differ and diff-file writer as a full table-diff, so the
file is the same format and table-repair and table-rerun take it unchanged.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.budget import LocalPartCounter, local_budget
from ace_shared.diff.differ import diff_batch
from ace_shared.diff.local import pool_size
from ace_shared.diff.merge import merge_diff
from ace_shared.diff.plan import work_dir_for
from ace_shared.diff.ranges import KeyRange, batches
from ace_shared.diff.request import DiffSpec
from ace_shared.mtree import leaves, objects
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import (
    Job,
    check_same_blocks,
    check_tree,
    each_node,
    open_job,
    require_schema,
    table_shape,
)
from ace_shared.mtree.update import update_trees
from ace_shared.nodes.shape import TableShape

Progress = Callable[[int, int], None]
Level = dict[int, tuple[int, str]]


def _differing(per_node: dict[str, Level]) -> list[int]:
    idxs = sorted(set().union(*(set(level) for level in per_node.values())))
    return [i for i in idxs if len({level.get(i, (0, "")) for level in per_node.values()}) > 1]


def walk(job: Job, key: str) -> tuple[list[int], int]:
    """The leaves whose count or hash differ between nodes, and how many rows the first node
    holds outside them."""
    top = job.sessions.on_all(lambda cur: leaves.levels_for(leaves.block_count(cur, key)))
    levels = max(top.values())
    roots = job.sessions.on_all(lambda cur: leaves.read_level(cur, key, levels, None))
    first = job.nodes[0]
    held = sum(c for c, _ in roots[first].values())
    suspects = _differing(roots)
    for level in range(levels - 1, -1, -1):
        if not suspects:
            return [], held
        children = sorted({c for p in suspects
                           for c in range(p * leaves.FANOUT, (p + 1) * leaves.FANOUT)})
        if level == 0:
            found = job.sessions.on_all(lambda cur, ch=children: leaves.read_blocks(cur, key, ch))
        else:
            found = job.sessions.on_all(
                lambda cur, lv=level, ch=children: leaves.read_level(cur, key, lv, ch))
        suspects = _differing(found)
    if not suspects:
        return suspects, held
    return suspects, held - sum(found[first].get(b, (0, ""))[0] for b in suspects)


def leaf_ranges(job: Job, shape: TableShape, key: str, blocks: list[int]) -> list[KeyRange]:
    """Key ranges of the given leaves, numbered in order."""
    if not blocks:
        return []
    wanted = sorted({b + d for b in blocks for d in (0, 1)})
    lowers = job.sessions.on_one(job.nodes[0],
                                 lambda cur: leaves.read_lowers(cur, shape, key, wanted))
    return [KeyRange(i, lowers.get(b), lowers.get(b + 1)) for i, b in enumerate(blocks)]


def run_mtree_diff(request: MtreeRequest, settings: Settings, task_id: str,
                   progress: Progress | None = None) -> tuple[Path, dict[str, Any]]:
    """Update the trees, find the differing leaves, diff them; return the diff file and summary."""
    started = datetime.now(timezone.utc).isoformat()
    size = pool_size(request.max_cpu_ratio)
    with open_job(request, settings, threads=size) as job:
        require_schema(job)
        shape = table_shape(job)
        key = objects.tree_key(shape.table)
        updated = update_trees(job, shape)
        rows = each_node(job, lambda node: lambda cur: check_tree(cur, shape, key, node))
        check_same_blocks(rows, shape)
        blocks, held = walk(job, key)
        ranges = leaf_ranges(job, shape, key, blocks)
        work_dir = work_dir_for(settings, task_id)
        work_dir.mkdir(parents=True, exist_ok=True)
        spec = DiffSpec(task_id=task_id, cluster_name=request.cluster_name, dbname=job.dbname,
                        nodes=tuple(job.nodes), shape=shape, table_filter=None,
                        block_rows=request.block_rows, batch_size=1,
                        max_diffs=settings.MAX_ALLOWED_DIFFS, role=request.role,
                        work_dir=str(work_dir))
        try:
            results = _diff_leaves(job, spec, ranges, size, progress)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        # rows in agreeing leaves, from the tree; the differing leaves count their own
        meta = {"max_cpu_ratio": request.max_cpu_ratio, "executor": "local",
                "total_rows_checked": held + sum(r.rows_checked for r in results),
                "mtree": {"leaves_differing": len(blocks), **updated}}
        return merge_diff(spec, meta, results, len(ranges), settings.output_dir, request.output,
                          started)


def _diff_leaves(job: Job, spec: DiffSpec, ranges: list[KeyRange], size: int,
                 progress: Progress | None) -> list[Any]:
    counter = LocalPartCounter()
    total = len(ranges)
    if progress:
        progress(0, total)

    def on_done(part: str, done_in_part: int) -> None:
        done = counter.record(part, done_in_part)
        if progress:
            progress(done, total)
    budget = local_budget(spec.max_diffs)
    with ThreadPoolExecutor(max_workers=size, thread_name_prefix="ace-leaf") as pool:
        futures = [pool.submit(diff_batch, spec, g, job.sessions, budget, on_done)
                   for g in batches(ranges, 1)]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for fut in pending:
            fut.cancel()
        return [f.result() for f in futures if not f.cancelled()]
