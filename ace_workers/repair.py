"""table-repair and table-rerun on the fleet.

A repair is one task: it writes to every node it repairs, one transaction per
node, and must not be split across workers. A rerun in ``multiprocessing``
behaviour is a chord like a diff (one ``ace.rerun_batch`` per batch of keys,
then ``ace.merge_rerun``); in ``hostdb`` behaviour the nodes do the work with
temporary tables, so one task drives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import chord, group

from ace_shared.diff.request import DiffSpec
from ace_shared.diff.sources import (
    PLAN_OUT_SHARED,
    PLAN_UPLOAD,
    UPLOAD_PREFIX,
    local_diff_file,
    local_upload,
    plan_out_here,
    remove_upload,
    share_plan_out,
)
from ace_shared.diff.summary import DiffTaskResult
from ace_shared.repair.run import run_table_repair
from ace_shared.rerun.batch import rerun_batch
from ace_shared.rerun.plan import RerunPlan
from ace_shared.rerun.run import collect_results, finish_rerun, plan_rerun, run_table_rerun
from ace_shared.tasks import ids
from ace_shared.tasks.ids import subtask_id
from ace_shared.tasks.store import COMPLETED, FAILED
from ace_workers import names
from ace_workers.app import app
from ace_workers.base import AceTask, failing_job, stop_if_finished
from ace_workers.diff import diff_failed, part_failed
from ace_workers.fleet import runtime
from ace_workers.fleet.counters import JobFinished


def _diff_file_here(options: dict[str, Any], store: Any) -> dict[str, Any]:
    """The options with this host's copy of their diff file (a task id's file, or one the
    submitter uploaded, is fetched from the fleet's shared store)."""
    if not options.get("diff_file"):  # a resolved repair plan needs none
        return options
    local = local_diff_file(str(options["diff_file"]), store, runtime.settings().output_dir)
    return {**options, "diff_file": local}


def _plan_here(options: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The options with this host's copy of a resolved plan the submitter uploaded, and
    this host's file for a plan to resolve and hand back through the shared store."""
    output_dir = runtime.settings().output_dir
    if options.get("plan_out"):
        options = {**options, "plan_out": plan_out_here(str(options["plan_out"]), job_id,
                                                        output_dir)}
    given = str(options.get("apply_plan") or "")
    if not given.startswith(UPLOAD_PREFIX):
        return options
    return {**options, "apply_plan": local_upload(given, output_dir, PLAN_UPLOAD)}


def _done_with_plan(given: dict[str, Any], here: dict[str, Any], job_id: str) -> None:
    """An uploaded resolved plan serves this task alone: once it ran (or failed), it goes.
    A plan resolved for the submitter is in the store now, or, after a failure, nowhere."""
    if given.get("plan_out") == PLAN_OUT_SHARED and here.get("plan_out") != PLAN_OUT_SHARED:
        Path(here["plan_out"]).unlink(missing_ok=True)
    if str(given.get("apply_plan") or "").startswith(UPLOAD_PREFIX):
        remove_upload(job_id, PLAN_UPLOAD)
        if here.get("apply_plan") != given.get("apply_plan"):
            Path(here["apply_plan"]).unlink(missing_ok=True)


def _done_with_upload(given: dict[str, Any], here: dict[str, Any], job_id: str) -> None:
    """Once read, a diff file the submitter uploaded for this task is no longer needed."""
    if str(given.get("diff_file") or "").startswith(UPLOAD_PREFIX):
        remove_upload(job_id)
        Path(here["diff_file"]).unlink(missing_ok=True)


@app.task(name=names.TABLE_REPAIR, bind=True, base=AceTask)
def table_repair(self: AceTask, options: dict[str, Any],
                 submission: dict[str, Any] | None = None) -> dict[str, Any]:
    """Repair one table from a diff file, each node in one transaction."""
    job_id, store = self.start_job(options, submission)

    def progress(done: int, total: int) -> None:
        store.set_progress(job_id, done, total)
        self.progress(done, total, job_id=job_id)
    here = options
    try:
        with failing_job(job_id):
            here = _plan_here(_diff_file_here(options, store), job_id)
            result = run_table_repair(here, runtime.settings(), job_id, progress)
            if options.get("plan_out") == PLAN_OUT_SHARED:
                share_plan_out(job_id, Path(here["plan_out"]))
    finally:
        _done_with_plan(options, here, job_id)
    _done_with_upload(options, here, job_id)
    # the samples are a few keys per node (rows stay in the report file): the CLI prints
    # them as it does in-process
    store.complete(job_id, result)
    return {"task_id": job_id, "report_file": result.get("report_file")}


@app.task(name=names.TABLE_RERUN, bind=True, base=AceTask)
def table_rerun(self: AceTask, options: dict[str, Any],
                submission: dict[str, Any] | None = None) -> dict[str, Any]:
    """Re-check the keys of a diff file: a chord of key batches, or one hostdb pass."""
    job_id, store = self.start_job(options, submission)
    settings = runtime.settings()
    with failing_job(job_id):
        here = _diff_file_here(options, store)
        if str(options.get("behavior") or "multiprocessing") == "hostdb":
            path, summary = run_table_rerun(here, settings, job_id)
            _done_with_upload(options, here, job_id)
            store.complete(job_id, DiffTaskResult(summary))
            return {"task_id": job_id, "diff_file": str(path)}
        plan = plan_rerun(here, settings, job_id)  # the keys are in the work folder now
    _done_with_upload(options, here, job_id)
    store.set_total(job_id, len(plan["parts"]))
    header = group(rerun_batch_task.si(plan["spec"], i).set(task_id=subtask_id(job_id, ids.RERUN_KEYS, i))
                   for i in plan["parts"])
    body = merge_rerun.si(plan["work_dir"]).set(task_id=subtask_id(job_id, ids.MERGE))
    body.link_error(diff_failed.si(plan["work_dir"], job_id))
    chord(header)(body)
    return {"task_id": job_id, "batches": len(plan["parts"])}


@app.task(name=names.RERUN_BATCH, bind=True, base=AceTask)
def rerun_batch_task(self: AceTask, spec_dict: dict[str, Any], index: int) -> dict[str, Any]:
    """Re-check one batch of keys on every node."""
    spec = DiffSpec.from_dict(spec_dict)
    record = runtime.store().get(spec.task_id)
    if record is not None and record.status in (COMPLETED, FAILED):
        raise JobFinished(spec.task_id)  # a late copy, or a batch of a failed rerun
    try:
        result = rerun_batch(spec, index, runtime.sessions_for(spec))
    except Exception as exc:
        part_failed(spec.task_id, exc, lambda: runtime.drop_sessions(spec))
        raise
    stop_if_finished(spec.task_id)  # finished meanwhile: no progress to publish
    runtime.store().add_progress(spec.task_id, 1)
    return result


@app.task(name=names.MERGE_RERUN, bind=True, base=AceTask, max_retries=120)
def merge_rerun(self: AceTask, work_dir: str) -> dict[str, Any]:
    """Write the rerun's new diff file from its batches' partial files."""
    plan = RerunPlan.load(work_dir)
    job_id = plan.spec.task_id
    store = runtime.store()
    record = store.get(job_id)
    if record is not None and record.status in (COMPLETED, FAILED):
        plan.work.remove()
        return {"skipped": True}
    results = collect_results(plan)
    if results is None:
        raise self.retry(countdown=1)  # a redelivered batch is still running
    with failing_job(job_id):
        path, summary = finish_rerun(work_dir, runtime.settings().output_dir, results)
    store.complete(job_id, DiffTaskResult(summary))
    return {"diff_file": str(path), "remaining": summary.rerun.remaining if summary.rerun else None}
