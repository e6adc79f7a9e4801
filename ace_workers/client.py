"""Submitting ACE tasks to the fleet and following them, for the CLI and the API.

A submission publishes the task's state in Redis (:mod:`ace_workers.fleet.published`),
sends the task by name, then records it (PENDING) in the task store under the
same id, so the id a user sees is the one Flower shows. The message carries
the row's fields too, and the worker that takes it records the same row if it
is not there yet: the message leaves before this process has loaded the task
store (a quarter of a second on the CLI's critical path), and whichever writer
comes second changes nothing.

Following a task reads what the workers publish in Redis, not the task store,
so a follower on any host learns the outcome whatever its own store settings
say. It blocks on the task's channel between changes, and hands back events
(:class:`Progress`, :class:`NoWorker`, :class:`Finished`) for the caller to
show; nothing here writes to a terminal.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import redis

from ace_shared.config import Settings
from ace_shared.errors import BrokerUnreachableError, TaskError, TaskNotRecordedError
from ace_shared.tasks.status import FAILED, FINISHED, PENDING
from ace_workers import names
from ace_workers.app import get_app
from ace_workers.fleet import published, signing, tidy
from ace_workers.fleet.counters import DEFAULT_BROKER, redis_client
from ace_workers.fleet.slots import live_slots

if TYPE_CHECKING:  # loading the store costs the CLI a quarter of a second
    from ace_shared.tasks.store import TaskStore

TASK_NAMES = names.BY_COMMAND

# A submission waits a few seconds for the broker, not Celery's default of much longer.
SEND_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}
# How long a follower waits before saying that no worker is there to take the task.
NO_WORKER_SECONDS = 3.0
# A follower looks again this often even when nothing is announced (for workers, for Redis).
LOOK_SECONDS = 5.0
# How long a follower keeps trying to reach Redis before giving up.
UNREACHABLE_SECONDS = 60.0
# How long one Redis call of a front door waits for a restarting Redis.
PATIENCE_SECONDS = 2.0


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


@dataclass(frozen=True)
class Waiting:
    """The task waits for something that is not a failure (a connection to a node)."""

    note: str


@dataclass(frozen=True)
class NoWorker:
    """No worker has been seen consuming the queue: the task waits until one starts."""

    task_id: str


@dataclass(frozen=True)
class Finished:
    status: str
    result: dict[str, Any] | None
    error: str | None

    @property
    def failed(self) -> bool:
        return self.status == FAILED


Event = Progress | Waiting | NoWorker | Finished


def _safe_url(url: str) -> str:
    """The broker URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _broker(settings: Settings) -> str:
    return settings.BROKER_URL or DEFAULT_BROKER


def _publishes(settings: Settings) -> bool:
    """Whether tasks are published in Redis: with a Redis broker (the default)."""
    return _broker(settings).startswith(("redis://", "rediss://", "unix://"))


def submission(task_type: str, *, cluster_name: str | None, table_name: str | None,
               requested_by: str | None) -> dict[str, Any]:
    """The task store row's fields, as both the submitter and the worker record them."""
    return {"task_type": task_type, "cluster_name": cluster_name, "table_name": table_name,
            "requested_by": requested_by,
            "submitted_at": datetime.now(timezone.utc).isoformat()}


def _unreachable(settings: Settings, exc: BaseException) -> BrokerUnreachableError:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
    return BrokerUnreachableError(
        f"Could not reach the task broker at {_safe_url(_broker(settings))}: {detail}. "
        "Check that Redis is running.")


def submit(task_type: str, options: dict[str, Any], task_id: str, settings: Settings, *,
           cluster_name: str | None, table_name: str | None,
           requested_by: str | None) -> dict[str, Any]:
    """Publish, enqueue and record one task; return the row's fields (see :func:`submission`).

    When this returns the task's row exists. If the broker cannot be reached, or no
    signing key is configured, nothing is sent and nothing is recorded.
    """
    # workers run only messages signed with ACE's key (signing.py): without it, send nothing
    signing.require(settings)
    row = submission(task_type, cluster_name=cluster_name, table_name=table_name,
                     requested_by=requested_by)
    client = redis_client(_broker(settings), PATIENCE_SECONDS) if _publishes(settings) else None
    created = None
    try:
        if client is not None:
            published.create(client, task_id)
            created = client
        # the task store and the published state, not the result backend, carry the outcome
        get_app().send_task(TASK_NAMES[task_type], args=[options], kwargs={"submission": row},
                            task_id=task_id, retry=True, retry_policy=SEND_RETRY,
                            ignore_result=True)
    except Exception as exc:  # the broker is down: say so
        _forget(created, task_id)
        raise _unreachable(settings, exc) from exc
    # the store loads on use: it costs the CLI 0.25 s
    from ace_shared.tasks.store import TaskStore, record_submission
    try:
        record_submission(TaskStore.from_settings(settings), task_id, options, row)
    except Exception as exc:
        raise TaskNotRecordedError(
            f"Task {task_id} was queued, but the task store could not record it: {exc}. Its "
            "worker records it when it starts; check ACE_DATABASE_URL.") from exc
    return row


def _forget(client: Any, task_id: str) -> None:
    """Withdraw the published state of a task that was published but never sent."""
    if client is None:
        return
    with contextlib.suppress(redis.RedisError):
        client.delete(published.task_key(task_id))


def follow(task_id: str, settings: Settings) -> Iterator[Event]:
    """The events of a task until it finishes; the last one is :class:`Finished`."""
    if not _publishes(settings):
        yield from _follow_store(task_id, settings)
        return
    yield from _Follower(task_id, settings).events()


class _Follower:
    """Follows one task's published state, blocking on its channel between changes."""

    def __init__(self, task_id: str, settings: Settings) -> None:
        self.task_id, self.settings = task_id, settings
        self.client = redis_client(_broker(settings), PATIENCE_SECONDS)
        self.pubsub: Any = None
        self.started = time.monotonic()
        self.said_no_worker = False
        self.unreachable_since: float | None = None

    def events(self) -> Iterator[Event]:
        shown: tuple[int, int] | None = None
        noted: str | None = None
        try:
            while True:
                state = self._look()
                if state is None:  # Redis is away: _wait has slept; look again
                    continue
                if isinstance(state, Finished):
                    yield state
                    return
                if state.total and (state.done, state.total) != shown:
                    shown = (state.done, state.total)
                    yield Progress(*shown)
                if state.note and state.note != noted and not state.finished:
                    yield Waiting(state.note)
                noted = state.note
                if state.finished:
                    yield Finished(state.status, state.result, state.error)
                    return
                if self._no_worker(state):
                    yield NoWorker(self.task_id)
                self._wait()
        finally:
            if self.pubsub is not None:
                self.pubsub.close()

    def _look(self) -> published.PublishedState | Finished | None:
        """The published state (subscribed first, so no change is missed); None if unreachable."""
        try:
            if self.pubsub is None:
                self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                self.pubsub.subscribe(published.channel(self.task_id))
            state = published.read(self.client, self.task_id)
        except redis.RedisError as exc:
            self._away(exc)
            return None
        self.unreachable_since = None
        if state is None:
            return _unknown(self.task_id, self.settings, self.client)
        return state

    def _away(self, exc: BaseException) -> None:
        """Redis cannot be reached: wait a moment, and give up after a while."""
        if self.pubsub is not None:
            self.pubsub.close()
            self.pubsub = None
        now = time.monotonic()
        self.unreachable_since = self.unreachable_since or now
        if now - self.unreachable_since > UNREACHABLE_SECONDS:
            raise TaskError(f"Lost contact with the task broker at "
                            f"{_safe_url(_broker(self.settings))} while following task "
                            f"{self.task_id}: {exc}. Ask for its outcome later with "
                            "task-status.") from exc
        time.sleep(1.0)

    def _no_worker(self, state: published.PublishedState) -> bool:
        """True once, when the task is still queued and no worker has been seen lately."""
        if self.said_no_worker or state.status != PENDING:
            return False
        if time.monotonic() - self.started < NO_WORKER_SECONDS:
            return False
        if live_slots(self.client) > 0:
            return False
        self.said_no_worker = True
        return True

    def _wait(self) -> None:
        """Block until the task's state changes, or for a while."""
        timeout = LOOK_SECONDS
        if not self.said_no_worker:
            timeout = min(timeout, max(0.05, self.started + NO_WORKER_SECONDS - time.monotonic()))
        try:
            if self.pubsub.get_message(timeout=timeout) is not None:
                while self.pubsub.get_message(timeout=0) is not None:
                    pass  # several changes at once: one look covers them
        except redis.RedisError as exc:
            self._away(exc)


def _unknown(task_id: str, settings: Settings, client: Any) -> Finished:
    """Redis does not know the task: finished long ago, or lost with Redis's state."""
    from ace_shared.tasks.store import TaskStore  # on use: it costs the CLI 0.25 s

    message = published.LOST_MESSAGE.format(task_id=task_id)
    try:
        store = TaskStore.from_settings(settings)
        record = store.get(task_id)
        if record is not None and record.status in FINISHED:
            return Finished(record.status, record.result, record.error)
        if record is not None:
            store.fail(task_id, message)
    except Exception:  # this host's store is not the workers' or is away: Redis decides
        pass
    published.outcome(client, task_id, FAILED, None, message)
    return Finished(FAILED, None, message)


def _follow_store(task_id: str, settings: Settings) -> Iterator[Event]:
    """Without Redis to block on: read the task store once a second."""
    from ace_shared.tasks.store import TaskStore  # on use: it costs the CLI 0.25 s

    store = TaskStore.from_settings(settings)
    shown: tuple[int, int] | None = None
    while True:
        record = store.get(task_id)
        if record is None:
            raise TaskError(f"Task {task_id} is not in the task store; check ACE_DATABASE_URL.")
        if record.progress_total and (record.progress_done, record.progress_total) != shown:
            shown = (record.progress_done, record.progress_total)
            yield Progress(*shown)
        if record.status in FINISHED:
            yield Finished(record.status, record.result, record.error)
            return
        time.sleep(1.0)


CANCEL_LOOK_SECONDS = 1.0


def cancel(task_id: str, store: TaskStore, settings: Settings, message: str) -> bool:
    """Cancel a task: record it FAILED, then stop every Celery task of it on the fleet.

    The store goes first: a part that has not started yet, a redelivered copy
    and the merge all see the job FAILED and do nothing. Then the job's Celery
    tasks (its id, and ``<id>.b000042``, ``<id>.merge`` of a fleet diff) are
    revoked, those running terminated: their worker process ends, its
    connections close, and each node cancels the query within
    ``client_connection_check_interval``. False when the task had already
    finished (nothing is revoked).
    """
    if not store.fail(task_id, message):
        return False
    if _publishes(settings):
        with contextlib.suppress(redis.RedisError):
            client = redis_client(_broker(settings), PATIENCE_SECONDS)
            published.outcome(client, task_id, FAILED, None, message)
            # its batches yet to run find it FAILED and end without a trace: what it left
            # behind goes now, as a worker's record of an outcome has it go
            tidy.after_job(client, task_id, settings.output_dir)
    app = get_app()
    ids = {task_id}
    try:
        inspect = app.control.inspect(timeout=CANCEL_LOOK_SECONDS)
        for listing in (inspect.active() or {}, inspect.reserved() or {},
                        inspect.scheduled() or {}):
            for tasks in listing.values():
                for task in tasks:
                    found = str((task.get("request") or task).get("id") or "")
                    if found == task_id or found.startswith(task_id + "."):
                        ids.add(found)
        app.control.revoke(sorted(ids), terminate=True, signal="SIGTERM")
    except Exception as exc:  # the broker is down: the store already says FAILED
        raise _unreachable(settings, exc) from exc
    return True
