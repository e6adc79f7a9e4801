"""``ace mtree ...`` on the fleet: each action is one task, run where a worker takes it.

Within the task every node works at once (a build hashes all nodes' leaves in
parallel, one snapshot per node). The result goes to the task store as any
task's does; a table-diff's is shaped like table-diff's own (``diff_file``,
``total_rows``, ``mismatched_rows``, ``summary``), so task-status, the CLI and
table-repair read it the same way.
"""

from __future__ import annotations

from typing import Any

from ace_shared.errors import AceError
from ace_workers import runtime
from ace_workers.app import app
from ace_workers.base import AceTask, fail_job


def stored_result(action: str, result: dict[str, Any]) -> dict[str, Any]:
    """What the task store keeps for an mtree action."""
    if action != "table-diff":
        return result
    return {"diff_file": result["diff_file"], "total_rows": result["total_rows_checked"],
            "mismatched_rows": result["diff_rows"], "summary": result}


@app.task(name="ace.mtree", bind=True, base=AceTask)
def mtree(self: AceTask, request: dict[str, Any],
          submission: dict[str, Any] | None = None) -> dict[str, Any]:
    from ace_shared.mtree.request import validate_mtree_request
    from ace_shared.mtree.run import run_mtree
    job_id, store = self.start_job(request, submission)

    def progress(done: int, total: int) -> None:
        store.set_progress(job_id, done, total)
        self.progress(done, total, job_id=job_id)
    try:
        checked = validate_mtree_request(request, runtime.settings())
        result = run_mtree(checked, runtime.settings(), job_id, progress)
    except AceError as exc:
        raise fail_job(job_id, exc) from exc
    store.complete(job_id, stored_result(checked.action, result))
    return {"action": checked.action, "diff_file": result.get("diff_file")}
