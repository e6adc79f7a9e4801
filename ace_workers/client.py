"""Submitting ACE tasks to the fleet and following them, for the CLI and the API.

A submission sends the task by name, then records it (PENDING) in the task
store under the same id, so the id a user sees is the one Flower shows. The
message carries the row's fields too, and the worker that takes it records
the same row if it is not there yet: the message leaves before this process
has loaded the task store (a quarter of a second on the CLI's critical path),
and whichever writer comes second changes nothing. Following a task reads the
task store, which the workers keep current.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from ace_shared.config import Settings
from ace_shared.diff.request import DiffRequest
from ace_shared.errors import BrokerUnreachableError, TaskError
from ace_shared.tasks.status import FAILED, FINISHED
from ace_workers import finished
from ace_workers.app import app
from ace_workers.counters import redis_client

if TYPE_CHECKING:
    from ace_shared.tasks.store import TaskRecord

TASK_NAMES = {
    "table-diff": "ace.table_diff",
    "table-repair": "ace.table_repair",
    "table-rerun": "ace.table_rerun",
    "schema-diff": "ace.schema_diff",
    "repset-diff": "ace.repset_diff",
    "spock-diff": "ace.spock_diff",
    "mtree": "ace.mtree",
}


# A submission waits a few seconds for the broker, not Celery's default of much longer.
SEND_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


def _safe_url(url: str) -> str:
    """The broker URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def submission(task_type: str, *, cluster_name: str | None, table_name: str | None,
               requested_by: str | None) -> dict[str, Any]:
    """The task store row's fields, as both the submitter and the worker record them."""
    return {"task_type": task_type, "cluster_name": cluster_name, "table_name": table_name,
            "requested_by": requested_by,
            "submitted_at": datetime.now(timezone.utc).isoformat()}


def submit(task_type: str, options: dict[str, Any], task_id: str, settings: Settings, *,
           cluster_name: str | None, table_name: str | None,
           requested_by: str | None) -> dict[str, Any]:
    """Enqueue one task, then record it; return the row's fields (see :func:`submission`).

    When this returns the task's row exists. If the broker cannot be reached
    nothing is sent and nothing is recorded.
    """
    row = submission(task_type, cluster_name=cluster_name, table_name=table_name,
                     requested_by=requested_by)
    try:
        # the task store, not the result backend, carries the outcome
        app.send_task(TASK_NAMES[task_type], args=[options], kwargs={"submission": row},
                      task_id=task_id, retry=True, retry_policy=SEND_RETRY, ignore_result=True)
    except Exception as exc:  # the broker is down: say so
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise BrokerUnreachableError(
            f"Could not reach the task broker at {_safe_url(settings.BROKER_URL)}: {detail}. "
            "Check that Redis is running.") from exc
    from ace_shared.tasks.store import TaskStore, record_submission
    try:
        record_submission(TaskStore.from_settings(settings), task_id, options, row)
    except Exception as exc:
        raise TaskError(f"Task {task_id} was queued, but the task store could not record it: "
                        f"{exc}. Its worker records it when it starts; check ACE_DATABASE_URL."
                        ) from exc
    return row


def _doorbell(settings: Settings, task_id: str) -> Callable[[float], None]:
    """Sleep between polls, waking early when the workers announce the task's end."""
    url = settings.BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return time.sleep
    client = redis_client(url)

    def wait(seconds: float) -> None:
        try:
            finished.wait(client, task_id, seconds)
        except Exception:  # Redis is away: the store still has the answer, read it later
            time.sleep(seconds)
    return wait


def follow(task_id: str, settings: Settings,
           on_progress: Callable[[int, int], None] | None = None,
           poll_seconds: float = 0.25, timeout: float | None = None) -> TaskRecord:
    """Wait for a task to finish, reporting progress; return its final record."""
    from ace_shared.tasks.store import TaskStore
    store = TaskStore.from_settings(settings)
    wait = _doorbell(settings, task_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        record = store.get(task_id)
        if record is None:
            raise TaskError(f"Task {task_id} is not in the task store.")
        if on_progress and record.progress_total:
            on_progress(record.progress_done, record.progress_total)
        if record.status in FINISHED:
            return record
        if deadline is not None and time.monotonic() > deadline:
            raise TaskError(f"Task {task_id} did not finish in time; it is {record.status}.")
        wait(poll_seconds)


def submit_and_follow(task_type: str, options: dict[str, Any], settings: Settings,
                      task_id: str, *, cluster_name: str | None, table_name: str | None,
                      no_wait: bool, quiet: bool, label: str,
                      unit: str = "ranges") -> dict[str, Any] | None:
    """The CLI on a fleet: submit, show the fleet's progress, return the task's result.

    Returns ``None`` with ``no_wait`` (the task id is printed); raises
    :class:`TaskError` with the task's own message when it failed.
    """
    from ace_api.cli.progress import ProgressBar

    submit(task_type, options, task_id, settings, cluster_name=cluster_name,
           table_name=table_name, requested_by=getpass.getuser())
    if no_wait:
        click.echo(task_id)
        return None
    if not quiet:
        click.echo(f"Submitted {task_id}", err=True)
    bar = ProgressBar(label, unit=unit, enabled=not quiet)
    try:
        record = follow(task_id, settings, on_progress=bar)
    finally:
        bar.close()
    if record.status == FAILED:
        raise TaskError(record.error or f"Task {task_id} failed.")
    assert record.result is not None
    return record.result


def submit_and_follow_diff(request: DiffRequest, settings: Settings, task_id: str, *,
                           no_wait: bool, report: Callable[[dict[str, Any], bool], int]) -> int:
    """The CLI's table-diff on a fleet: report like in-process, with the same exit codes."""
    result = submit_and_follow("table-diff", request.to_dict(), settings, task_id,
                               cluster_name=request.cluster_name,
                               table_name=request.table.display, no_wait=no_wait,
                               quiet=request.quiet, label=f"Diffing {request.table.display}")
    if result is None:
        return 0
    return report(result["summary"], request.quiet)
