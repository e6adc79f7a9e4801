"""The Celery app, configured from ACE's settings.

Long work is made safe here rather than in each task: acknowledgements come
after a task finishes (``acks_late``), a task whose worker process died is put
back (``reject_on_worker_lost``), and each worker process takes one message at
a time. A worker that dies whole (its host gone) acknowledges nothing, and
Redis hands its messages to the other workers once the visibility timeout has
passed: a minute, not the length of the longest task, because each running
task holds a lease (:mod:`ace_workers.fleet.leases`) that keeps a second worker from
running it meanwhile. Results expire; large results never travel through the
backend (diffs go by file reference).

The app is built on first use (:func:`get_app`), not on import: the front
doors import the fleet client, and only sending a task needs the app.

The result backend carries only what chords need, the count of their parts:
users follow a task in the task store and operators in Flower, which is fed
by task events, and a merge reads its batches' records from the work folder.
So no task's result, STARTED state or arguments are written there
(``task_ignore_result``): each would cost a backend write per subtask, on the
same CPUs the nodes hash with when they share a host, and a key per subtask
kept for a day. A chord still counts its parts (Celery counts a part whether
or not its result is kept) in one key per chord.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from celery import Celery
from celery.signals import after_task_publish, beat_init, before_task_publish, worker_init

from ace_shared.config import load_settings
from ace_shared.errors import ConfigError
from ace_shared.outputs import keep_outputs_private
from ace_shared.tasks.filestore import use_shared_store
from ace_workers.fleet import signing
from ace_workers.fleet.counters import DEFAULT_BROKER
from ace_workers.fleet.mergewatch import note_sent
from ace_workers.fleet.slots import SlotHeartbeat
from ace_workers.fleet.sweep import LostTaskSweep

QUEUE = "ace"
# How long Redis waits for a worker to acknowledge a message before giving it to
# another: about how long a dead host's work waits. Leases make it safe for tasks
# that run longer. ACE_VISIBILITY_TIMEOUT overrides it.
VISIBILITY_SECONDS = 45


def make_app() -> Celery:
    settings = load_settings()
    broker = settings.BROKER_URL or DEFAULT_BROKER
    backend = settings.RESULT_BACKEND or broker
    visibility = int(os.environ.get("ACE_VISIBILITY_TIMEOUT", VISIBILITY_SECONDS))
    # every task's messages are signed when sent and checked before they run (signing.py)
    signing.install(settings)
    before_task_publish.connect(signing.sign_message, weak=False,
                                dispatch_uid="ace-sign-task-messages")
    # the merge watch tells a queued merge from a lost one by this note
    after_task_publish.connect(note_sent, weak=False, dispatch_uid="ace-note-merges-sent")
    app = Celery("ace_workers", broker=broker, backend=backend,
                 # signed messages, and failures recorded without server text (base.py)
                 task_cls="ace_workers.base:VisibleTask",
                 include=["ace_workers.diff", "ace_workers.repair",
                          "ace_workers.schedule", "ace_workers.autorepair",
                          "ace_workers.checks", "ace_workers.recheck",
                          "ace_workers.mtree", "ace_workers.retention"])
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=False,
        task_ignore_result=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        task_time_limit=settings.TASK_TIME_LIMIT,
        result_expires=settings.RESULT_EXPIRES,
        result_extended=False,
        broker_transport_options={
            "visibility_timeout": visibility,
            # look for messages of dead workers often enough to matter at this timeout
            "unacked_restore_interval": max(1, min(10, visibility // 9)),
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={
            "visibility_timeout": visibility,
            # about 10 s of reconnecting to a restarting Redis, then a clear failure
            "retry_policy": {"max_retries": 20, "interval_start": 0, "interval_step": 0.5,
                             "interval_max": 0.5},
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        redis_retry_on_timeout=True,
        redis_socket_keepalive=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        beat_scheduler="ace_workers.schedule:AceScheduler",
        timezone="UTC",
        enable_utc=True,
    )
    app.steps["worker"].add(SlotHeartbeat)
    app.steps["worker"].add(LostTaskSweep)
    return app


@lru_cache(maxsize=1)
def get_app() -> Celery:
    """The one Celery app of this process, built on first use."""
    return make_app()


def __getattr__(name: str) -> Any:
    """``from ace_workers.app import app`` (task modules, Celery's CLI) builds the app then."""
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@worker_init.connect
def _private_outputs(**_: object) -> None:
    """Diff files, reports and work folders a worker writes are its user's alone."""
    keep_outputs_private()


@worker_init.connect
def _yield_cpu(**_: object) -> None:
    """A worker started niced (fleet.sh, the systemd unit) yields the CPU to the API for real
    (:func:`ace_workers.fleet.priority.nice_session`)."""
    from ace_workers.fleet.priority import nice_session
    nice_session()


@worker_init.connect
def _shared_store(**_: object) -> None:
    """Work folders and results go through the fleet's shared store, when there is one
    (``SHARED_STORE``; ``ace_shared/tasks/filestore.py``)."""
    try:
        use_shared_store(load_settings())
    except ConfigError as exc:
        raise SystemExit(f"ace: error: {exc}") from None


@worker_init.connect
@beat_init.connect
def _need_signing_key(**_: object) -> None:
    """A worker checks, and beat signs, every message: neither runs without the key.

    ``SystemExit`` (not an error, which Celery would log and carry on after) ends
    the process with the one sentence saying what to set.
    """
    try:
        signing.require(load_settings())
    except ConfigError as exc:
        raise SystemExit(f"ace: error: {exc}") from None
