"""The Celery app, configured from ACE's settings.

Long work is made safe here rather than in each task: acknowledgements come
after a task finishes (``acks_late``), a task whose worker process died is put
back (``reject_on_worker_lost``), each worker process takes one message at a
time, and the broker's visibility timeout outlasts the longest task so Redis
does not hand a running task to a second worker. Results expire; large
results never travel through the backend (diffs go by file reference).

The result backend carries only what chords need, the small part results of
their subtasks: users follow a task in the task store and operators in
Flower, which is fed by task events. So a task's STARTED state and its
arguments are not written there too; each would cost a backend read and write
per subtask, on the same CPUs the nodes hash with when they share a host.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_init

from ace_shared.config import load_settings
from ace_shared.outputs import keep_outputs_private
from ace_workers.slots import SlotHeartbeat

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
QUEUE = "ace"


def make_app() -> Celery:
    settings = load_settings()
    broker = settings.BROKER_URL or DEFAULT_BROKER
    backend = settings.RESULT_BACKEND or broker
    visibility = int(os.environ.get("ACE_VISIBILITY_TIMEOUT", settings.TASK_TIME_LIMIT + 600))
    app = Celery("ace_workers", broker=broker, backend=backend,
                 include=["ace_workers.diff", "ace_workers.repair",
                          "ace_workers.schedule", "ace_workers.autorepair",
                          "ace_workers.checks", "ace_workers.recheck",
                          "ace_workers.mtree"])
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=False,
        task_send_sent_event=True,
        worker_send_task_events=True,
        task_time_limit=settings.TASK_TIME_LIMIT,
        result_expires=settings.RESULT_EXPIRES,
        result_extended=False,
        broker_transport_options={
            "visibility_timeout": visibility,
            # look for messages of dead workers often enough to matter at this timeout
            "unacked_restore_interval": max(1, min(10, visibility // 5)),
            "unacked_restore_throttle": 1 if visibility < 600 else 10,
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
    return app


app = make_app()


@worker_init.connect
def _private_outputs(**_: object) -> None:
    """Diff files, reports and work folders a worker writes are its user's alone."""
    keep_outputs_private()
