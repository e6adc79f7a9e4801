"""Celery beat: scheduled table-diffs and the auto-repair polls, from ``ace_config.py``.

``celery -A ace_workers beat`` reads the schedules once at start (like the
original, restart it after changing the config). Each scheduled diff is an
ordinary table-diff task with its own id in the task store, submitted by
``scheduler``, so it shows up in task-status and Flower like any other.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from celery.beat import PersistentScheduler
from celery.schedules import crontab

from ace_shared.config import load_settings
from ace_shared.diff.request import validate_diff_request
from ace_shared.errors import AceError
from ace_shared.mtree.request import validate_mtree_request
from ace_shared.repsetdiff.request import validate_repset_diff
from ace_shared.tasks.ids import new_task_id
from ace_shared.tasks.schedule import auto_repair_timing, scheduled_diffs
from ace_shared.tasks.status import FINISHED
from ace_workers import names
from ace_workers.app import app
from ace_workers.base import countdown_until
from ace_workers.client import submit
from ace_workers.fleet import published, runtime
from ace_workers.fleet.redisclient import RedisClient
from ace_workers.recheck import scheduled_recheck

log = logging.getLogger(__name__)


def build_beat_schedule() -> dict[str, dict[str, Any]]:
    settings = load_settings()
    entries: dict[str, dict[str, Any]] = {}
    for job in scheduled_diffs(settings.schedule_jobs, settings.schedule_config,
                               settings.MIN_RUN_FREQUENCY):
        when: Any = (crontab(*job.crontab) if job.crontab
                     else timedelta(seconds=job.every_seconds or 0))
        entries[f"{job.command}:{job.name}"] = {
            "task": names.SCHEDULED_DIFF, "schedule": when,
            "args": [job.name, job.options, job.command, job.rerun_after],
        }
    if settings.RESULT_RETENTION_DAYS > 0:  # ace_workers/retention.py
        entries["retention"] = {"task": names.RETENTION,
                                "schedule": timedelta(hours=1), "args": []}
    timing = auto_repair_timing(settings.auto_repair_config, settings.MIN_RUN_FREQUENCY)
    if timing is not None:
        args = [timing.cluster_name, timing.dbname]
        entries["auto-repair:poll"] = {"task": names.AUTO_REPAIR_POLL,
                                       "schedule": timedelta(seconds=timing.poll_seconds),
                                       "args": args}
        entries["auto-repair:repair"] = {"task": names.AUTO_REPAIR_REPAIR,
                                         "schedule": timedelta(seconds=timing.repair_seconds),
                                         "args": args}
    return entries


class AceScheduler(PersistentScheduler):
    """Beat's scheduler, with ACE's schedules read from the config when beat starts.

    Only beat creates a scheduler, so a mistake in the schedules stops beat
    with its message and never stops the workers.
    """

    def setup_schedule(self) -> None:
        self.app.conf.beat_schedule = build_beat_schedule()
        super().setup_schedule()


RUN_KEY = "ace:schedule-run:{command}:{job}"

# Record the job's new run unless the run recorded last is still going (published and not
# finished): then answer that run's id. KEYS: the job's run key, the last run's task hash.
_CLAIM = """
local last = redis.call('GET', KEYS[1])
if last and last ~= ARGV[2] then return redis.call('GET', KEYS[1]) end
if last then
  local status = redis.call('HGET', KEYS[2], 'status')
  if status and status ~= ARGV[3] and status ~= ARGV[4] then return last end
end
redis.call('SET', KEYS[1], ARGV[1])
return false
"""


def claim_run(client: RedisClient, command: str, job_name: str, task_id: str) -> str | None:
    """Make ``task_id`` the job's current run, or answer the id of its run still going.

    A scheduled job is a singleton: beat sends it when due whether or not the
    last run finished, and a second run of the same job would only compete with
    the first for the same nodes. A run Redis no longer knows (lost with its
    state) counts as finished.
    """
    key = RUN_KEY.format(command=command, job=job_name)
    for _ in range(5):  # another copy may claim between the look and the script: look again
        last = client.get(key)
        last_id = last.decode() if last else ""
        answer = client.eval(_CLAIM, 2, key, published.task_key(last_id), task_id, last_id,
                             *FINISHED)
        if not answer:
            return None
        going = answer.decode() if isinstance(answer, bytes) else str(answer)
        if going == last_id:
            return going
    return last_id or None


@app.task(name=names.SCHEDULED_DIFF)
def scheduled_diff(job_name: str, options: dict[str, Any], command: str = "table-diff",
                   rerun_after: int | None = None) -> dict[str, Any]:
    """Submit the scheduled job's diff as an ordinary task (and its recheck, if asked)."""

    settings = runtime.settings()
    task_id = new_task_id(command)
    going = claim_run(runtime.redis(), command, job_name, task_id)
    if going is not None:
        log.warning("scheduled job %s skipped: its run %s is still going", job_name, going)
        return {"job": job_name, "skipped": True, "still_running": going}
    try:
        if command == "repset-diff":
            checked = validate_repset_diff(options, settings)
            submit(command, checked.to_dict(), task_id, settings,
                   cluster_name=checked.cluster_name, table_name=checked.repset,
                   requested_by=f"scheduler:{job_name}")
        elif command == "mtree-table-diff":
            tree = validate_mtree_request({**options, "action": "table-diff"}, settings)
            submit("mtree", tree.to_dict(), task_id, settings,
                   cluster_name=tree.cluster_name,
                   table_name=tree.table.display if tree.table else None,
                   requested_by=f"scheduler:{job_name}")
        else:
            request = validate_diff_request(options, settings)
            submit("table-diff", request.to_dict(), task_id, settings,
                   cluster_name=request.cluster_name, table_name=request.table.display,
                   requested_by=f"scheduler:{job_name}")
    except AceError as exc:
        return {"job": job_name, "error": str(exc)}
    if rerun_after:
        due = time.time() + rerun_after  # waited for in short countdowns (wait_until)
        scheduled_recheck.apply_async(args=[job_name, command, task_id, rerun_after, due],
                                      countdown=countdown_until(due))
    return {"job": job_name, "task_id": task_id}
