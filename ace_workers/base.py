"""What every ACE task shares: failure reporting, bounded redelivery, progress events."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from ace_shared.errors import AceError, TaskFailedError
from ace_shared.tasks.store import TaskStore, record_submission
from ace_workers import runtime

DELIVERIES_KEY = "ace:deliveries"


def fail_job(job_id: str, exc: BaseException) -> TaskFailedError:
    """Record the job as FAILED with a plain message, and return the exception to raise."""
    # An unexpected error's text may quote values read from a database: name its kind only
    # (the worker's own log, readable by the operator alone, keeps the whole error).
    if not isinstance(exc, AceError):
        logging.getLogger(__name__).error("job %s failed", job_id, exc_info=exc)
    message = str(exc) if isinstance(exc, AceError) else (
        f"Unexpected error ({type(exc).__name__}); the worker's log has the details.")
    runtime.store().fail(job_id, message)
    return TaskFailedError(message)


class AceTask(Task):
    """Base class: counts deliveries of each task so a task that kills workers stops."""

    abstract = True

    def check_redeliveries(self, job_id: str) -> None:
        """Fail the job once this task has been delivered more than MAX_REDELIVERIES times."""
        field = f"{self.request.id}:{self.request.retries or 0}"
        client = runtime.redis()
        count = int(client.hincrby(DELIVERIES_KEY, field, 1))
        client.expire(DELIVERIES_KEY, 7 * 86400)
        limit = runtime.settings().MAX_REDELIVERIES
        if count > limit + 1:
            raise fail_job(job_id, AceError(
                f"Task {self.request.id} was started {count} times and its worker died each "
                "time; giving up. Check the workers' logs and memory limits."))

    def start_job(self, options: dict[str, Any],
                  submission: dict[str, Any] | None) -> tuple[str, TaskStore]:
        """Begin a top-level task: its id is the job's; count this delivery; mark it RUNNING.

        The message may arrive before its submitter has recorded the task: the
        ``submission`` it carries is recorded here then, the same row either way.
        """
        job_id = self.request.id
        store = runtime.store()
        if submission:
            record_submission(store, job_id, options, submission)
        if not store.mark_running(job_id) and store.get(job_id) is not None:
            # finished already: a redelivery after the worker died before acknowledging
            raise Ignore()
        self.check_redeliveries(job_id)
        return job_id, store

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        """Any failure (a time limit, a full disk, retries run out) fails the job it belongs to.

        Every ACE task id starts with its job's id (``td_...``, ``td_....b000042``).
        """
        message = exc.message if isinstance(exc, TaskFailedError) else (
            f"Task {task_id} failed: {exc!r}. See the workers' logs.")
        runtime.store().fail(task_id.split(".", 1)[0], message)

    def progress(self, done: int, total: int, **extra: Any) -> None:
        """Send a ``task-progress`` event: Flower shows the task as PROGRESS with these fields.

        Only an event: writing the state to the result backend as well cost a
        backend read and write per report, on the cores the nodes hash with, for
        a state nobody polls (users follow the job in the task store).
        """
        if self.request.id:
            self.send_event("task-progress", done=done, total=total, **extra)
