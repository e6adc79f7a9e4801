"""Every ``ace mtree`` action from start to finish, for any front door or executor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ace_shared.config import Settings
from ace_shared.mtree.build import run_build, run_init, run_teardown
from ace_shared.mtree.diffjob import run_mtree_diff
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import open_job, require_schema, table_shape, tree_lock
from ace_shared.mtree.update import update_trees

Progress = Callable[[int, int], None]


def run_update(request: MtreeRequest, settings: Settings) -> dict[str, Any]:
    """Fold every node's change log into its tree, and rebalance."""
    with open_job(request, settings) as job:
        job.connect_lock_holders()
        require_schema(job)
        shape = table_shape(job, check_kind=False)  # the tree's check finds its table
        with tree_lock(job, shape.table):
            _, updated, _ = update_trees(job, shape)
        return {"action": "update", "table": shape.table.display, "nodes": job.nodes,
                **updated}


def run_mtree(request: MtreeRequest, settings: Settings, task_id: str,
              progress: Progress | None = None) -> dict[str, Any]:
    """Run one mtree action; a table-diff returns its diff summary (with ``diff_file``)."""
    if request.action == "init":
        return run_init(request, settings)
    if request.action == "build":
        return run_build(request, settings, task_id, progress)
    if request.action == "update":
        return run_update(request, settings)
    if request.action == "teardown":
        return run_teardown(request, settings)
    _, summary = run_mtree_diff(request, settings, task_id, progress)
    return summary.to_dict()
