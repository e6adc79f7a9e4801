"""What every ACE task shares: one run at a time, bounded redelivery, failure reporting, progress.

Every ACE task runs under a lease (:mod:`ace_workers.fleet.leases`): a copy of a
task that a live worker is running is put back for later, a copy of a task
that finished changes nothing, and a task whose worker died is run again by
the next worker that gets it, a bounded number of times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery.exceptions import Ignore, Reject, Retry, TaskPredicate

from ace_shared.errors import AceError, NodeUnreachableError, TaskFailedError
from ace_shared.tasks.ids import job_of
from ace_shared.tasks.status import FINISHED
from ace_shared.tasks.store import TaskStore, record_submission, submission_digest
from ace_workers.fleet import published, runtime
from ace_workers.fleet.counters import JobFinished
from ace_workers.fleet.leases import HELD, IGNORE, LEASE_SECONDS, SKIP, admit, leases
from ace_workers.fleet.redisclient import RedisClient
from ace_workers.fleet.signing import SignedTask

DELIVERIES_KEY = "ace:deliveries"
# a copy of a running task comes back this much later (well inside the visibility timeout)
HELD_RETRY_SECONDS = LEASE_SECONDS // 2
# The longest countdown a task message is sent with. A worker holds a message that
# waits for its countdown unacknowledged, and Redis hands it to another worker
# once the visibility timeout (45 s) has passed: a longer wait would be handed
# round, one more copy every 45 s. Longer waits are a chain of these.
MAX_COUNTDOWN_SECONDS = 30


def countdown_until(due: float) -> float:
    """The countdown to send a message with for a task due at ``due`` (epoch seconds)."""
    return max(0.0, min(float(MAX_COUNTDOWN_SECONDS), due - time.time()))


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


@contextmanager
def failing_job(job_id: str, drop_sessions: Callable[[], None] | None = None) -> Iterator[None]:
    """Inside, an :class:`AceError` fails the job: recorded FAILED, raised as the sentence.

    A node that could not be reached also drops this process's sessions to those nodes
    (``drop_sessions``), so that the next task connects afresh rather than reusing a
    dead connection. Other exceptions (a retry, a bug) pass through as they are: a bug
    fails the job through :meth:`AceTask.on_failure`.
    """
    try:
        yield
    except NodeUnreachableError as exc:
        if drop_sessions is not None:
            drop_sessions()
        raise fail_job(job_id, exc) from exc
    except AceError as exc:
        raise fail_job(job_id, exc) from exc


def job_finished(job_id: str) -> bool:
    """Whether the task store holds ``job_id`` as COMPLETED or FAILED."""
    record = runtime.store().get(job_id, with_options=False)
    return record is not None and record.status in FINISHED


def stop_if_finished(job_id: str) -> None:
    """Raise :class:`JobFinished` if the job has finished: a batch of a job that failed
    (or was lost with Redis's state), or of one a late copy comes to, has nothing to do."""
    if job_finished(job_id):
        raise JobFinished(job_id)


def celery_visible(task_id: str | None, exc: Exception) -> Exception:
    """What Celery may record of a task's failure: one sentence, no server text, no values.

    Celery keeps a failed task's exception and traceback in the result backend
    and sends both in its ``task-failed`` event, which Flower shows. A query
    error's sentence (an :class:`AceError`) is safe, but it is raised *from* the
    driver's exception, whose text may quote row values, and a traceback shows
    that cause. So Celery gets a fresh :class:`TaskFailedError` with the sentence
    and no cause; the worker's own log, for the operator only, keeps the rest.
    """
    if isinstance(exc, TaskFailedError) and exc.__cause__ is None and exc.__context__ is None:
        return exc
    if not isinstance(exc, TaskFailedError):
        logging.getLogger(__name__).error("task %s failed", task_id, exc_info=exc)
    if isinstance(exc, AceError):
        return TaskFailedError(exc.message)
    return TaskFailedError(f"Unexpected error ({type(exc).__name__}); the worker's log has "
                           "the details.")


class VisibleTask(SignedTask):
    """The base of every task of ACE's app (``task_cls``): signed messages (SignedTask),
    and failures Celery records only as :func:`celery_visible` renders them."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except (TaskPredicate, redis.RedisError):
            raise  # Celery's own control flow; a lost Redis, said so by on_failure
        except Exception as exc:
            raise celery_visible(self.request.id, exc) from None


NOT_SUBMITTED = ("This task's message does not match what was submitted for its id, so the "
                 "worker refused it; submit the task again and check who can reach Redis.")


class AceTask(VisibleTask):
    """Base class: leases, counted runs, the job's store row, progress events."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task unless it is done or running elsewhere (see the module's docstring)."""
        task_id = self.request.id
        if not task_id or self.request.called_directly:
            return self.run(*args, **kwargs)
        client = runtime.redis()
        admitted = admit(client, task_id, self.request.group or "")
        if admitted == IGNORE:
            raise Ignore()  # a late copy of work done: its part was counted already
        if admitted == SKIP:
            return {"skipped": True}  # its chord was launched again: answer the new one
        if admitted == HELD:
            raise self.retry(countdown=HELD_RETRY_SECONDS, max_retries=self.request.retries + 1)
        try:
            self._count_run(client, task_id)
            return self.run(*args, **kwargs)
        except Ignore:
            self._end_run(client, task_id, done=True)
            raise
        except JobFinished:
            # its job is over: no result, no done mark, no chord count; the message is acked
            self._end_run(client, task_id, done=False)
            raise Ignore() from None
        except (Retry, Reject):
            self._end_run(client, task_id, done=False)
            raise
        except (TaskPredicate, redis.RedisError):
            raise
        except Exception as exc:
            raise celery_visible(task_id, exc) from None

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        """After a success or failure is recorded (chord part counted): mark it done."""
        if task_id and not self.request.called_directly:
            self._end_run(runtime.redis(), task_id, done=True)

    def _end_run(self, client: RedisClient, task_id: str, *, done: bool) -> None:
        client.hdel(DELIVERIES_KEY, task_id)
        leases.release(client, task_id, done_group=(self.request.group or "") if done else None)

    def _count_run(self, client: RedisClient, task_id: str) -> None:
        """Fail the job once this task's runs have ended in its worker's death too often.

        A run that ends in any way clears its count; only runs cut short by the
        death of their process (or host) add up.
        """
        count = int(client.hincrby(DELIVERIES_KEY, task_id, 1))
        client.expire(DELIVERIES_KEY, 7 * 86400)
        limit = runtime.settings().MAX_REDELIVERIES
        if count > limit + 1:
            client.hdel(DELIVERIES_KEY, task_id)
            raise fail_job(job_of(task_id), AceError(
                f"Task {task_id} was started {count} times and its worker died each "
                "time; giving up. Check the workers' logs and memory limits."))

    def wait_until(self, due: float) -> None:
        """Come back at ``due`` (epoch seconds) if it is still ahead: retries itself in
        countdowns of at most :data:`MAX_COUNTDOWN_SECONDS`, holding no worker meanwhile.
        These waits do not count against the task's retries."""
        if time.time() < due:
            raise self.retry(countdown=countdown_until(due),
                             max_retries=self.request.retries + 1)

    def start_job(self, options: dict[str, Any],
                  submission: dict[str, Any] | None) -> tuple[str, TaskStore]:
        """Begin a top-level task: its id is the job's; publish it; mark it RUNNING.

        The message may arrive before its submitter has recorded the task: the
        ``submission`` it carries is recorded here then, the same row either way.
        """
        job_id = self.request.id
        store = runtime.store()
        # published before it is recorded: a stored task unknown to Redis is a lost one
        published.create(runtime.redis(), job_id)
        if submission:
            record_submission(store, job_id, options, submission)
        record = store.get(job_id, with_options=False)
        if record is not None and record.status in FINISHED:
            # finished already: a redelivery after the worker died before acknowledging
            raise Ignore()
        self._check_submitted(job_id, record, options, submission)
        if not store.mark_running(job_id):
            raise Ignore()  # finished meanwhile, by another copy of this message
        return job_id, store

    def _check_submitted(self, job_id: str, record: Any, options: dict[str, Any],
                         submission: dict[str, Any] | None) -> None:
        """Run only what was submitted under this id: the arguments the task store
        recorded (their digest) must be the message's. A signed message cannot be
        altered, but this also holds if a signed one is sent again under another's id."""
        recorded = record.submission_digest if record is not None else None
        if (record is not None and submission is not None and recorded is not None
                and recorded == submission_digest(job_id, options, submission)):
            return
        logging.getLogger(__name__).error(
            "Refused task %s: its message does not match the submission recorded for it.",
            job_id)
        if record is not None:  # else nothing to mark: nothing was recorded for this id
            runtime.store().fail(job_id, NOT_SUBMITTED)
        raise Ignore()

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        """Any failure (a time limit, a full disk, retries run out) fails the job it belongs to.

        Every ACE task id starts with its job's id (``td_...``, ``td_....b000042``).
        """
        if isinstance(exc, TaskFailedError):
            message = exc.message
        elif isinstance(exc, redis.ConnectionError):
            message = (f"Task {task_id} lost its connection to the task broker (Redis): {exc}. "
                       "If Redis restarted without persistence its queued work is lost; "
                       "submit the task again.")
        else:
            message = f"Task {task_id} failed: {exc!r}. See the workers' logs."
        runtime.store().fail(job_of(task_id), message)

    def progress(self, done: int, total: int, **extra: Any) -> None:
        """Send a ``task-progress`` event: Flower shows the task as PROGRESS with these fields.

        Only an event: writing the state to the result backend as well cost a
        backend read and write per report, on the cores the nodes hash with, for
        a state nobody polls (users follow the job's published state).
        """
        if self.request.id:
            self.send_event("task-progress", done=done, total=total, **extra)
