"""schema-diff, repset-diff and spock-diff on the fleet.

spock-diff and a structure-only schema-diff are one task each. repset-diff
(and schema-diff with ``ddl_only`` false) fan out: the task reads the set (or
compares the structure), then submits one ordinary table-diff per table, each
its own chord sharing the workers with the others, and hands over to
``ace.checks_collect``. The collector waits without holding a worker (it
retries itself every second), keeps one progress figure for the whole job (tables
finished of tables in all), and writes the result once every table has its
outcome; a table whose diff failed is recorded with its reason, never dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import redis

from ace_shared.diff.request import validate_diff_request
from ace_shared.diff.summary import DiffTaskResult
from ace_shared.diff.workdir import WorkDir
from ace_shared.errors import AceError
from ace_shared.nodes.ident import TableName
from ace_shared.repsetdiff.request import validate_repset_diff
from ace_shared.repsetdiff.run import finish_repset, plan_repset, table_name
from ace_shared.repsetdiff.run import table_options as repset_table_options
from ace_shared.repsetdiff.tables import FAILED as TABLE_FAILED
from ace_shared.repsetdiff.tables import failed, outcome_of
from ace_shared.schemadiff.request import validate_schema_diff
from ace_shared.schemadiff.run import compare_schema, finish_schema
from ace_shared.schemadiff.run import table_options as schema_table_options
from ace_shared.spockdiff.request import validate_spock_diff
from ace_shared.spockdiff.run import run_spock_diff
from ace_shared.tasks import ids
from ace_shared.tasks.ids import new_task_id, subtask_id
from ace_shared.tasks.status import FAILED, FINISHED
from ace_workers import names
from ace_workers.app import app
from ace_workers.base import AceTask, fail_job, failing_job
from ace_workers.client import submit
from ace_workers.fleet import published, runtime

COLLECT_WAIT_SECONDS = 6 * 3600

log = logging.getLogger(__name__)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the task store keeps: the result file and the result itself."""
    return {"diff_file": result["result_file"], "summary": result}


@app.task(name=names.SPOCK_DIFF, bind=True, base=AceTask)
def spock_diff(self: AceTask, request: dict[str, Any],
               submission: dict[str, Any] | None = None) -> dict[str, Any]:
    job_id, store = self.start_job(request, submission)
    with failing_job(job_id):
        result = run_spock_diff(validate_spock_diff(request, runtime.settings()), runtime.settings(),
                                job_id)
    store.complete(job_id, _summary(result))
    return {"result_file": result["result_file"], "exit_code": result["exit_code"]}


def _fan_out(job_id: str, kind: str, partial: dict[str, Any], tables: list[TableName],
             options: dict[str, Any], output: str) -> dict[str, Any]:
    """Submit one table-diff per table; then the collector, which finishes the job."""
    settings = runtime.settings()
    children: dict[str, str] = {}
    early: list[dict[str, Any]] = []
    for table in tables:
        try:
            req = validate_diff_request({**options, "table_name": table.display,
                                         "output": "json", "quiet": True}, settings)
            child = new_task_id("table-diff")
            submit("table-diff", req.to_dict(), child, settings, cluster_name=req.cluster_name,
                   table_name=table.display, requested_by=f"{kind}:{job_id}")
            children[table.display] = child
        except AceError as exc:
            early.append(failed(table.display, str(exc)))
    runtime.store().set_total(job_id, len(tables))
    state = WorkDir.for_task(settings.output_dir, job_id).write_checks_state(
        {"kind": kind, "partial": partial, "children": children, "early": early,
         "output": output})
    checks_collect.apply_async(args=[str(state)], task_id=subtask_id(job_id, ids.COLLECT), countdown=1)
    return {"task_id": job_id, "tables": len(tables)}


@app.task(name=names.REPSET_DIFF, bind=True, base=AceTask)
def repset_diff(self: AceTask, request: dict[str, Any],
                submission: dict[str, Any] | None = None) -> dict[str, Any]:
    job_id, _ = self.start_job(request, submission)
    with failing_job(job_id):
        req = validate_repset_diff(request, runtime.settings())
        partial, todo = plan_repset(req, runtime.settings(), job_id)
    return _fan_out(job_id, "repset-diff", partial, [table_name(t) for t in todo],
                    repset_table_options(req), req.output)


@app.task(name=names.SCHEMA_DIFF, bind=True, base=AceTask)
def schema_diff(self: AceTask, request: dict[str, Any],
                submission: dict[str, Any] | None = None) -> dict[str, Any]:
    job_id, store = self.start_job(request, submission)
    settings = runtime.settings()
    with failing_job(job_id):
        req = validate_schema_diff(request, settings)
        partial, tables = compare_schema(req, settings, job_id)
        if req.ddl_only:
            result = finish_schema(partial, None, settings, req.output)
            store.complete(job_id, _summary(result))
            return {"result_file": result["result_file"], "exit_code": result["exit_code"]}
    return _fan_out(job_id, "schema-diff", partial, tables, schema_table_options(req), req.output)


def _outcomes(state: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The finished tables' outcomes and how many are still running."""
    store = runtime.store()
    out, running = list(state["early"]), 0
    for table, child in state["children"].items():
        record = store.get(child)
        if record is None or record.status not in FINISHED:
            running += 1
        elif record.status == FAILED:
            out.append(failed(table, record.error or "The table's diff failed."))
        else:
            out.append(outcome_of(table, DiffTaskResult.from_dict(record.result or {}).summary))
    return out, running


def _pass_on_notes(job_id: str, children: list[str]) -> None:
    """Show on the job what one of its tables' diffs waits for (a connection), if any."""
    client = runtime.redis()
    try:
        pipe = client.pipeline()
        for child in children:
            pipe.hget(published.task_key(child), "note")
        notes = [n.decode() for n in pipe.execute() if n]
        published.note(client, job_id, notes[0] if notes else None)
    except redis.RedisError as exc:
        log.warning("could not pass on what the tables of %s wait for: %s", job_id, exc)


@app.task(name=names.CHECKS_COLLECT, bind=True, base=AceTask, max_retries=COLLECT_WAIT_SECONDS)
def checks_collect(self: AceTask, state_path: str) -> dict[str, Any]:
    """Wait for every table's diff, then write the job's result and complete it."""
    try:
        state = WorkDir(Path(state_path).parent).read_checks_state()
    except FileNotFoundError:  # its job finished (cancelled, say): its work folder is gone
        return {"skipped": True}
    job_id = state["partial"]["task_id"]
    store = runtime.store()
    outcomes, running = _outcomes(state)
    store.set_progress(job_id, len(outcomes))
    if running:
        _pass_on_notes(job_id, list(state["children"].values()))
        if self.request.retries >= COLLECT_WAIT_SECONDS:
            raise fail_job(job_id, AceError(
                f"{running} table diffs of {job_id} did not finish in "
                f"{COLLECT_WAIT_SECONDS // 3600} hours; see the workers' logs."))
        raise self.retry(countdown=1)
    settings = runtime.settings()
    finish = finish_repset if state["kind"] == "repset-diff" else finish_schema
    with failing_job(job_id):
        result = finish(state["partial"], outcomes, settings, state["output"])
    store.complete(job_id, _summary(result))
    WorkDir(Path(state_path).parent).remove()
    failures = sum(1 for o in outcomes if o["outcome"] == TABLE_FAILED)
    return {"result_file": result["result_file"], "failed_tables": failures}
