"""Fail the tasks whose queued work Redis lost, so none stays RUNNING or PENDING forever.

ACE's Redis keeps nothing on disk: restarted, it has forgotten every queued
message, every chord's count and every published task state. A task caught
in that can never finish. Every published task state is written before its
task is recorded in the task store (:mod:`ace_workers.published`), so a task
the store holds as unfinished and Redis no longer knows is such a task. One
worker at a time (a short Redis lock) looks every few seconds and fails them
with a sentence saying what happened; the waiting CLI and task-status then
say FAILED.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from ace_workers import published, runtime

SWEEP_SECONDS = 5.0
LOCK_KEY = "ace:sweep"

log = logging.getLogger(__name__)


def sweep_once(client: Any) -> list[str]:
    """Fail every unfinished task Redis does not know; return their ids."""
    if not client.set(LOCK_KEY, "1", nx=True, ex=max(1, int(SWEEP_SECONDS) - 1)):
        return []  # another worker looks this time
    store = runtime.store()
    unfinished = store.unfinished()
    if not unfinished:
        return []
    lost = [t for t, known in zip(unfinished, published.known(client, unfinished), strict=True)
            if not known]
    for task_id in lost:
        if store.fail(task_id, published.LOST_MESSAGE.format(task_id=task_id)):
            log.error("task %s was lost with Redis's state; marked FAILED", task_id)
    return lost


class LostTaskSweep(bootsteps.StartStopStep):
    """Worker bootstep: run :func:`sweep_once` every few seconds in a background thread."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        if not str(worker.app.conf.broker_url).startswith(("redis://", "rediss://", "unix://")):
            return  # tasks are published only with a Redis broker
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ace-sweep", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SWEEP_SECONDS):
            try:
                sweep_once(runtime.redis())
            except Exception as exc:  # Redis or the store away: look again next time
                log.warning("could not look for lost tasks: %s", exc)

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(SWEEP_SECONDS)
            self._thread = None
