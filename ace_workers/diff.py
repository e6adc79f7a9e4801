"""table-diff on the fleet: a chord of per-batch subtasks reduced into one diff file.

These tasks drive the same job pipeline as the in-process runner
(:mod:`ace_shared.diff.job`); they only decide who runs each step.
``ace.table_diff`` checks the table, plans and cuts the batches, saves the job
in its work folder and launches the chord: one ``ace.diff_ranges`` task per
batch of ranges (any worker on the queue may take it), then ``ace.merge_diff``.
Subtasks return small dicts; their differing rows go to partial files in the
shared output directory, and the merge reads the batches' own records from
there rather than trusting the chord's result list, so a batch that ran twice
after a worker died counts once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from celery import chord, group

from ace_shared.config import Settings
from ace_shared.diff.budget import DiffBudget
from ace_shared.diff.job import (
    DiffJob,
    collect_results,
    load_job,
    merge_job,
    plan_job,
    run_batch,
    save_job,
    saved_job,
)
from ace_shared.diff.local import RunBatch
from ace_shared.diff.ranges import KeyRange
from ace_shared.diff.request import DiffSpec, validate_diff_request
from ace_shared.diff.summary import DiffTaskResult
from ace_shared.diff.workdir import WorkDir
from ace_shared.errors import AceError, NodeUnreachableError
from ace_shared.tasks import ids
from ace_shared.tasks.ids import subtask_id
from ace_shared.tasks.store import COMPLETED, FAILED
from ace_workers import names
from ace_workers.app import app
from ace_workers.base import AceTask, fail_job, failing_job, job_finished, stop_if_finished
from ace_workers.fleet import runtime
from ace_workers.fleet.counters import JobFinished, RedisPartCounter
from ace_workers.fleet.published import task_key
from ace_workers.fleet.slots import live_slots

MERGE_WAIT_SECONDS = 120


@app.task(name=names.TABLE_DIFF, bind=True, base=AceTask)
def table_diff(self: AceTask, request: dict[str, Any],
               submission: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check and plan one diff, then hand its batches to the fleet as a chord."""
    job_id, store = self.start_job(request, submission)
    settings = runtime.settings()
    # redelivered after its worker died: launch the same plan again, never a new one
    job = saved_job(settings.output_dir, job_id)
    if job is None:
        job = _plan(job_id, request, settings)
        store.set_total(job_id, job.ranges_total)
        save_job(job)
    spec = job.spec.to_dict()
    work = job.to_dict()["batches"]
    header = group(
        diff_ranges.si(spec, g).set(task_id=subtask_id(job_id, ids.DIFF_BATCH, g[0][0]), argsrepr=_ranges_repr(g))
        for g in work
    )
    body = merge_diff_task.si(job.spec.work_dir).set(task_id=subtask_id(job_id, ids.MERGE))
    body.link_error(diff_failed.si(job.spec.work_dir, job_id))
    chord(header)(body)
    return {"task_id": job_id, "ranges": job.ranges_total, "batches": len(work)}


def _plan(job_id: str, request: dict[str, Any], settings: Settings) -> DiffJob:
    """Validate and plan on this worker's sessions; a failure fails the job in plain words."""
    with failing_job(job_id):
        req = validate_diff_request(request, settings)
    nodes = (req.cluster_name, req.dbname, req.nodes, req.role)
    with failing_job(job_id, lambda: runtime.drop_sessions_for(*nodes)):
        return plan_job(req, settings, job_id, runtime.sessions_for_nodes(*nodes),
                        executor="fleet", fleet_slots=lambda: live_slots(runtime.redis()))


def _ranges_repr(batch: list[Any]) -> str:
    """What Flower shows as a subtask's arguments: its ranges, not the whole plan.

    Celery would otherwise render the spec and every range boundary, a costly
    and unreadable string, into each message.
    """
    first, last = batch[0][0], batch[-1][0]
    return f"(ranges {first}-{last})" if last != first else f"(range {first})"


@app.task(name=names.DIFF_RANGES, bind=True, base=AceTask)
def diff_ranges(self: AceTask, spec_dict: dict[str, Any], ranges: list[Any]) -> dict[str, Any]:
    """Hash, narrow and compare one batch of key ranges on every node."""
    return run_part(self, spec_dict, ranges,
                    functools.partial(run_batch, hints=runtime.density_hints()))


def part_progress(task: AceTask, job_id: str, total: int) -> Callable[[str, int], None]:
    """Report a part's ranges done: idempotent per part (Redis), throttled per process.

    A report once the job has finished writes nothing and ends the batch
    (:class:`~ace_workers.fleet.counters.JobFinished`)."""
    progress = RedisPartCounter(runtime.redis(), f"progress:{job_id}", guard=task_key(job_id))
    reports = runtime.current().progress_reports

    def on_range_done(part: str, done_in_part: int) -> None:
        done = progress.record(part, done_in_part)
        # at most one store write and event per process per interval, however small the tasks
        if reports.ready(last=done == total):
            runtime.store().set_progress(job_id, done)
            task.progress(done, total, job_id=job_id)
    return on_range_done


def run_part(task: AceTask, spec_dict: dict[str, Any], ranges: list[Any],
             run: RunBatch) -> dict[str, Any]:
    """One batch of a diff job's chord, run by ``run`` into its partial file: table-diff's
    ranges, or an mtree table-diff's group of leaves."""
    spec = DiffSpec.from_dict(spec_dict)
    job_id = spec.task_id
    record = runtime.store().get(job_id)
    if record is not None and record.status in (COMPLETED, FAILED):
        raise JobFinished(job_id)  # a late copy, or a batch of a failed job: nothing to do
    budget = DiffBudget(RedisPartCounter(runtime.redis(), f"budget:{job_id}",
                                         guard=task_key(job_id)), spec.max_diffs)
    total_ranges = record.progress_total if record and record.progress_total else 0
    key_ranges = [KeyRange.from_json(r) for r in ranges]
    try:
        result = run(spec, key_ranges, runtime.sessions_for(spec), budget,
                     part_progress(task, job_id, total_ranges))
    except JobFinished:
        raise
    except Exception as exc:
        part_failed(job_id, exc, lambda: runtime.drop_sessions(spec))
        raise
    stop_if_finished(job_id)  # finished meanwhile: its folder is gone, and no mark is due
    return result.to_dict()


def part_failed(job_id: str, exc: Exception, drop_sessions: Callable[[], None]) -> None:
    """A batch failed with ``exc``: raise :class:`JobFinished` if its job finished meanwhile
    (its work folder was removed under it), or fail the job with an :class:`AceError`'s
    sentence; any other error is the caller's to raise as it is."""
    if job_finished(job_id):
        raise JobFinished(job_id) from exc
    if isinstance(exc, NodeUnreachableError):
        drop_sessions()
    if isinstance(exc, AceError):
        raise fail_job(job_id, exc) from exc


@app.task(name=names.MERGE_DIFF, bind=True, base=AceTask, max_retries=MERGE_WAIT_SECONDS)
def merge_diff_task(self: AceTask, work_dir: str) -> dict[str, Any]:
    """Reduce every batch's partial file, in range order, into the diff file."""
    job = load_job(work_dir)
    job_id = job.spec.task_id
    store = runtime.store()
    record = store.get(job_id)
    if record is not None and record.status in (COMPLETED, FAILED):
        job.work.remove()
        return {"skipped": True}
    results = collect_results(job)
    if results is None:
        # a batch's record is not there yet (its redelivered copy is still running)
        raise self.retry(countdown=1)
    with failing_job(job_id):
        path, summary = merge_job(job, results, runtime.settings().output_dir)
    store.set_progress(job_id, job.ranges_total)
    store.complete(job_id, DiffTaskResult(summary))
    client = runtime.redis()
    RedisPartCounter(client, f"budget:{job_id}").clear()
    RedisPartCounter(client, f"progress:{job_id}").clear()
    return {"diff_file": str(path), "mismatched_rows": summary.diff_rows}


@app.task(name=names.DIFF_FAILED, base=AceTask)
def diff_failed(work_dir: str, job_id: str) -> None:
    """Errback of the chord: no file is presented as complete; the job is FAILED."""
    WorkDir(work_dir).remove()
    runtime.store().fail(job_id, "A part of the diff failed; see the workers' logs.")


__all__ = ["table_diff", "diff_ranges", "merge_diff_task", "diff_failed"]
