"""``ace mtree ...`` on the fleet: build and table-diff fan out across the workers.

``ace.mtree`` takes every action. ``init``, ``update`` and ``teardown`` run in
that one task. The other two run the same steps as in-process, with the middle
step shared by the workers as a chord:

- **build** (:mod:`ace_shared.mtree.buildjob`): the task agrees the leaves and
  starts tracking, saves the plan in its work folder and launches one
  ``ace.mtree_hash`` per batch of leaves, then ``ace.mtree_finish``, which
  builds the inner levels and marks the tree ready once every leaf is there.
- **table-diff** (:mod:`ace_shared.mtree.diffjob`): the task updates and walks
  the trees and saves a table-diff job whose batches are groups of differing
  leaves; one ``ace.mtree_leaves`` per group writes its partial file, then
  table-diff's own ``ace.merge_diff`` writes the diff file and records the
  result as a table-diff's (``diff_file``, ``total_rows``, ``mismatched_rows``,
  ``summary``).

A task redelivered after its worker died launches its saved plan again, never
a new one; subtasks that ran twice leave the same leaves or the same files.
"""

from __future__ import annotations

import functools
from typing import Any

from celery import chord, group

from ace_shared.config import Settings
from ace_shared.diff.job import merge_job, save_job, saved_job
from ace_shared.diff.ranges import KeyRange
from ace_shared.diff.summary import DiffTaskResult
from ace_shared.diff.workdir import WorkDir
from ace_shared.errors import NodeUnreachableError
from ace_shared.mtree.buildjob import BuildJob, BuildSpec, finish_build, hash_batch, plan_build
from ace_shared.mtree.diffjob import by_keys_of, compared_whole, diff_leaf_group, plan_mtree_diff
from ace_shared.mtree.request import MtreeRequest, validate_mtree_request
from ace_shared.mtree.run import run_mtree
from ace_shared.mtree.tree import open_job, require_schema, table_shape
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.tasks import ids
from ace_shared.tasks.ids import subtask_id
from ace_shared.tasks.store import COMPLETED, FAILED
from ace_workers import names
from ace_workers.app import app
from ace_workers.base import AceTask, failing_job, stop_if_finished
from ace_workers.diff import (
    diff_failed,
    diff_ranges,
    merge_diff_task,
    part_failed,
    part_progress,
    run_part,
)
from ace_workers.fleet import runtime
from ace_workers.fleet.counters import JobFinished, RedisPartCounter
from ace_workers.fleet.slots import live_slots


@app.task(name=names.MTREE, bind=True, base=AceTask)
def mtree(self: AceTask, request: dict[str, Any],
          submission: dict[str, Any] | None = None) -> dict[str, Any]:
    job_id, store = self.start_job(request, submission)
    settings = runtime.settings()

    def progress(done: int, total: int) -> None:
        store.set_progress(job_id, done, total)
        self.progress(done, total, job_id=job_id)
    with failing_job(job_id):
        checked = validate_mtree_request(request, settings)
        if checked.action == "build":
            return _launch_build(job_id, checked, settings)
        if checked.action == "table-diff":
            return _launch_diff(job_id, checked, settings)
        result = run_mtree(checked, settings, job_id, progress)
    store.complete(job_id, result)
    return {"action": checked.action}


def _slots(settings: Settings) -> tuple[int, int]:
    return live_slots(runtime.redis()), settings.TASKS_PER_WORKER_PROCESS


def _launch_build(job_id: str, request: MtreeRequest, settings: Settings) -> dict[str, Any]:
    work = WorkDir.for_task(settings.output_dir, job_id)
    if work.has_build_plan():
        planned = BuildJob.from_dict(work.read_build_plan())
    else:
        with open_job(request, settings) as job:
            require_schema(job)
            slots, per_process = _slots(settings)
            planned = plan_build(job, table_shape(job), job_id, str(work), slots, per_process)
        work.create().write_build_plan(planned.to_dict())
    runtime.store().set_total(job_id, planned.ranges_total)
    spec = planned.spec.to_dict()
    header = group(
        mtree_hash.si(spec, [r.to_json() for r in batch]).set(
            task_id=subtask_id(job_id, ids.MTREE_HASH, batch[0].index), argsrepr=_repr(batch))
        for batch in planned.batches)
    body = mtree_finish.si(str(work)).set(task_id=subtask_id(job_id, ids.FINISH))
    body.link_error(mtree_failed.si(str(work), job_id))
    chord(header)(body)
    return {"task_id": job_id, "batches": len(planned.batches)}


def _launch_diff(job_id: str, request: MtreeRequest, settings: Settings) -> dict[str, Any]:
    planned = saved_job(settings.output_dir, job_id)
    if planned is None:
        # the process's own sessions, as table-diff's plan and every group use: a
        # scheduled re-check connects only for its tree lock
        nodes = (request.cluster_name, request.dbname, request.nodes, request.role)
        try:
            with open_job(request, settings,
                          sessions=runtime.sessions_for_nodes(*nodes, readonly=False)) as job:
                slots, per_process = _slots(settings)
                planned = plan_mtree_diff(job, settings, job_id, "fleet", slots, per_process)
        except NodeUnreachableError:  # the next task connects afresh (the job fails above)
            runtime.drop_sessions_for(*nodes)
            raise
        save_job(planned)
    store = runtime.store()
    store.set_total(job_id, planned.ranges_total)
    if not planned.batches:  # the trees agree everywhere: an empty diff file at once
        path, summary = merge_job(planned, [], settings.output_dir)
        store.complete(job_id, DiffTaskResult(summary))
        return {"task_id": job_id, "diff_file": str(path)}
    spec = planned.spec.to_dict()
    # most of the table differs: its ranges are table-diff's, and so are their tasks
    whole = compared_whole(planned)
    task, kind = (diff_ranges, ids.DIFF_BATCH) if whole else (mtree_leaves, ids.MTREE_LEAVES)
    by_keys = by_keys_of(planned)

    def args(batch: list[KeyRange]) -> tuple[Any, ...]:
        ranges = [r.to_json() for r in batch]
        # a group's leaves read by their kept keys, by index
        return (spec, ranges) if whole else (
            spec, ranges, [r.index for r in batch if r.index in by_keys])
    header = group(
        task.si(*args(batch)).set(
            task_id=subtask_id(job_id, kind, batch[0].index), argsrepr=_repr(batch))
        for batch in planned.batches)
    body = merge_diff_task.si(planned.spec.work_dir).set(task_id=subtask_id(job_id, ids.MERGE))
    body.link_error(diff_failed.si(planned.spec.work_dir, job_id))
    chord(header)(body)
    return {"task_id": job_id, "groups": len(planned.batches)}


def _repr(batch: list[KeyRange]) -> str:
    """What Flower shows as a subtask's arguments: its ranges, not every boundary."""
    first, last = batch[0].index, batch[-1].index
    return f"(ranges {first}-{last})" if last != first else f"(range {first})"


def _sessions(spec: BuildSpec) -> NodeSessions:
    return runtime.sessions_for_nodes(spec.cluster_name, spec.dbname, list(spec.nodes),
                                      spec.role, readonly=False)


@app.task(name=names.MTREE_HASH, bind=True, base=AceTask)
def mtree_hash(self: AceTask, spec_dict: dict[str, Any], ranges: list[Any]) -> dict[str, Any]:
    """Hash one batch of leaves on every node (again, if a copy ran before)."""
    spec = BuildSpec.from_dict(spec_dict)
    job_id = spec.task_id
    record = runtime.store().get(job_id)
    if record is not None and record.status in (COMPLETED, FAILED):
        raise JobFinished(job_id)  # a late copy, or a batch of a failed build
    total = record.progress_total if record and record.progress_total else 0
    batch = [KeyRange.from_json(r) for r in ranges]
    try:
        rows = hash_batch(spec, batch, _sessions(spec),
                          part_progress(self, job_id, total))
    except JobFinished:
        raise
    except Exception as exc:
        part_failed(job_id, exc, lambda: runtime.drop_sessions_for(
            spec.cluster_name, spec.dbname, list(spec.nodes), spec.role))
        raise
    stop_if_finished(job_id)
    hashed = sum(rows.values())
    # seen by the merge watch, should the worker that counts the last batch die
    WorkDir(spec.work_dir).mark_batch_done(batch[0].index, hashed)
    return {"rows": hashed}


@app.task(name=names.MTREE_FINISH, bind=True, base=AceTask)
def mtree_finish(self: AceTask, work_dir: str) -> dict[str, Any]:
    """Build the inner levels and mark the tree ready, once every leaf is hashed."""
    work = WorkDir(work_dir)
    planned = BuildJob.from_dict(work.read_build_plan())
    job_id = planned.spec.task_id
    store = runtime.store()
    record = store.get(job_id)
    if record is not None and record.status in (COMPLETED, FAILED):
        work.remove()
        return {"skipped": True}
    with failing_job(job_id):
        summary = finish_build(planned.spec, _sessions(planned.spec))
    store.set_progress(job_id, planned.ranges_total)
    store.complete(job_id, summary)
    RedisPartCounter(runtime.redis(), f"progress:{job_id}").clear()
    work.remove()
    return {"blocks": summary["blocks"]}


@app.task(name=names.MTREE_FAILED, base=AceTask)
def mtree_failed(work_dir: str, job_id: str) -> None:
    """Errback of a build's chord: the tree stays unmarked (refused); the job is FAILED."""
    WorkDir(work_dir).remove()
    runtime.store().fail(job_id, "A part of the Merkle tree build failed; see the workers' "
                                 "logs. The tree is not used until it is built again.")


@app.task(name=names.MTREE_LEAVES, bind=True, base=AceTask)
def mtree_leaves(self: AceTask, spec_dict: dict[str, Any], ranges: list[Any],
                 by_keys: list[int] | None = None) -> dict[str, Any]:
    """Diff one group of differing leaves into its partial file (those in ``by_keys`` by
    their kept keys)."""
    return run_part(self, spec_dict, ranges, functools.partial(
        diff_leaf_group, by_keys=frozenset(by_keys or ())))


__all__ = ["mtree", "mtree_hash", "mtree_finish", "mtree_failed", "mtree_leaves"]
