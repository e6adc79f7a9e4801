"""``rerun_after``: a scheduled diff that found differences is checked again later.

Replication is asynchronous: a row caught in flight differs for a moment and
then heals. So after the schedule's ``rerun_after`` delay, the differences are
checked again (a table-diff's rows by table-rerun, a repset-diff's differing
tables by a repset-diff limited to them), and a ``scheduled-recheck`` row in
the task store records the verdict: ``persisted`` true only for differences
still there. Both tasks wait by retrying themselves in countdowns of at most
half a minute (:meth:`~ace_workers.base.AceTask.wait_until`), never holding a
worker, and never holding a message longer than Redis's visibility timeout
(which would hand it round to the other workers, a copy every 45 s).
"""

from __future__ import annotations

import time
from typing import Any

from ace_shared.checks.options import split_names
from ace_shared.errors import AceError
from ace_shared.tasks.ids import new_task_id
from ace_shared.tasks.status import FAILED, FINISHED
from ace_shared.tasks.store import TaskRecord
from ace_workers import names
from ace_workers.app import app
from ace_workers.base import AceTask
from ace_workers.client import submit
from ace_workers.fleet import runtime

WAIT_SECONDS = 5
MAX_WAIT_SECONDS = 6 * 3600
MAX_WAITS = MAX_WAIT_SECONDS // WAIT_SECONDS


def _finished(self: AceTask, task_id: str, since: float | None) -> TaskRecord | None:
    """The task's record once finished; retries the calling task until then, for at
    most six hours from ``since`` (None: a message sent by an earlier version, whose
    retries count the wait)."""
    record = runtime.store().get(task_id)
    if record is not None and record.status in FINISHED:
        return record
    if (time.time() - since >= MAX_WAIT_SECONDS if since is not None
            else self.request.retries >= MAX_WAITS):
        return None
    raise self.retry(countdown=WAIT_SECONDS, max_retries=self.request.retries + 1)


def _differing_tables(record: TaskRecord) -> list[str]:
    tables = ((record.result or {}).get("summary") or {}).get("tables", [])
    return [t["table"] for t in tables if t["outcome"] == "differs"]


def _rerun_options(command: str, first: TaskRecord,
                   differing: list[str]) -> tuple[str, dict[str, Any]]:
    """The task that checks the first diff's differences again, and its options."""
    opts = dict(first.options)
    result = first.result or {}  # something differed, so the first diff has its result
    if command == "repset-diff":
        others = [t["table"] for t in result["summary"]["tables"]
                  if t["table"] not in differing]
        skip = set(split_names(opts.get("skip_tables"))) | set(others)
        return "repset-diff", {**opts, "skip_tables": ",".join(sorted(skip))}
    return "table-rerun", {"cluster_name": opts["cluster_name"], "table_name": opts["table_name"],
                           "dbname": opts.get("dbname"), "role": opts.get("role"),
                           "diff_file": result["diff_file"]}


@app.task(name=names.SCHEDULED_RECHECK, bind=True, base=AceTask, max_retries=MAX_WAITS)
def scheduled_recheck(self: AceTask, job_name: str, command: str, first_id: str,
                      rerun_after: int, due: float | None = None) -> dict[str, Any]:
    """At ``due`` (``rerun_after`` seconds after the first diff was queued): if the
    first diff found differences, submit their recheck."""
    if due is not None:
        self.wait_until(due)
    first = _finished(self, first_id, due)
    if first is None or first.status == FAILED:
        return {"rerun_of": first_id, "rechecked": False, "reason": "the diff did not complete"}
    differing = _differing_tables(first) if command == "repset-diff" else (
        ["rows"] if (first.result or {}).get("mismatched_rows") else [])
    if not differing:
        return {"rerun_of": first_id, "rechecked": False, "reason": "nothing differed"}
    task_type, options = _rerun_options(command, first, differing)
    settings = runtime.settings()
    rerun_id = new_task_id(task_type)
    verdict_id = new_task_id("scheduled-recheck")
    store = runtime.store()
    store.create(verdict_id, "scheduled-recheck", cluster_name=first.cluster_name,
                 table_name=first.table_name, requested_by=f"scheduler:{job_name}",
                 options={"rerun_of": first_id, "rerun_task": rerun_id,
                          "rerun_after": rerun_after, "command": command})
    store.mark_running(verdict_id)
    try:
        submit(task_type, options, rerun_id, settings, cluster_name=first.cluster_name,
               table_name=first.table_name, requested_by=f"scheduler:{job_name}")
    except AceError as exc:
        store.fail(verdict_id, str(exc))
        return {"rerun_of": first_id, "rechecked": False, "reason": str(exc)}
    scheduled_verdict.apply_async(args=[verdict_id, command, first_id, rerun_id, differing,
                                        time.time()], countdown=1)
    return {"rerun_of": first_id, "rerun_task": rerun_id, "verdict": verdict_id}


@app.task(name=names.SCHEDULED_VERDICT, bind=True, base=AceTask, max_retries=MAX_WAITS)
def scheduled_verdict(self: AceTask, verdict_id: str, command: str, first_id: str,
                      rerun_id: str, differing: list[str], since: float | None = None
                      ) -> dict[str, Any]:
    """Record whether the differences persisted, once the recheck has finished."""
    store = runtime.store()
    rerun = _finished(self, rerun_id, since)
    if rerun is None or rerun.status == FAILED:
        reason = rerun.error if rerun is not None else "it did not finish in time"
        store.fail(verdict_id, f"The recheck {rerun_id} of {first_id} failed: {reason}")
        return {"verdict": verdict_id, "persisted": None}
    summary = (rerun.result or {}).get("summary") or {}
    verdict: dict[str, Any] = {"rerun_of": first_id, "rerun_task": rerun_id}
    if command == "repset-diff":
        still = [t for t in _differing_tables(rerun) if t in differing]
        verdict.update({"persisted": bool(still), "persistent_tables": still,
                        "healed_tables": [t for t in differing if t not in still]})
    else:
        remaining = int(summary.get("remaining") or 0)
        verdict.update({"persisted": remaining > 0, "remaining_rows": remaining,
                        "healed_rows": summary.get("resolved")})
    store.complete(verdict_id, {"diff_file": (rerun.result or {}).get("diff_file"),
                                "summary": verdict})
    return {"verdict": verdict_id, "persisted": verdict["persisted"]}
