"""Fail the tasks whose queued work Redis lost, so none stays RUNNING or PENDING forever.

A Redis without persistence (or one whose host crashed between two writes of
its append-only file) has, once restarted, forgotten every queued message,
every chord's count and every published task state. A task caught in that
can never finish. Every published task state is written before its
task is recorded in the task store (:mod:`ace_workers.fleet.published`), so a task
the store holds as unfinished and Redis no longer knows, though it knew it
before, is such a task. Every worker looks every few seconds and fails them
with a sentence saying what happened; the waiting CLI and task-status then say
FAILED, and what it left behind is removed (:mod:`ace_workers.fleet.tidy`). (A
store may be shared by fleets on other Redis databases: a task this worker
never saw its Redis know is not its to judge.)

The same look also finds the diff and rerun jobs whose batches are all done
but whose merge never came, and sends it again (:mod:`ace_workers.fleet.mergewatch`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from ace_workers.fleet import published, runtime
from ace_workers.fleet.mergewatch import ChordJob, MergeWatch, SendMerge
from ace_workers.fleet.pruning import LocalPruning

SWEEP_SECONDS = 5.0

log = logging.getLogger(__name__)


class Sweeper:
    """Remembers which unfinished tasks its Redis knew, to notice when it forgets them."""

    def __init__(self, send_merge: SendMerge | None = None,
                 merges: MergeWatch | None = None) -> None:
        self.seen: set[str] = set()
        self.send_merge = send_merge
        self.merges = merges or MergeWatch()

    def sweep(self, client: Any, store: Any) -> list[str]:
        """Fail every unfinished task Redis knew and no longer knows; return their ids.
        Then send the merge of any job still waiting for one."""
        unfinished = store.unfinished()
        known = published.known(client, unfinished) if unfinished else []
        lost = [t for t, k in zip(unfinished, known, strict=True) if not k and t in self.seen]
        for task_id in lost:
            if store.fail(task_id, published.LOST_MESSAGE.format(task_id=task_id)):
                log.error("task %s was lost with Redis's state; marked FAILED", task_id)
        self.seen = {t for t, k in zip(unfinished, known, strict=True) if k}
        if self.send_merge is not None:
            self.merges.check(client, runtime.settings().output_dir,
                              [t for t, k in zip(unfinished, known, strict=True) if k],
                              self.send_merge)
        return lost


def merge_sender(app: Any) -> SendMerge:
    """What queues a job's merge with ``app`` (the worker's own) under its own task id,
    failing the job if it fails (as the chord's). The app hands itself to its bootstep,
    so this module needs no import of the app's."""

    def send_merge(job: ChordJob, job_id: str) -> None:
        app.send_task(job.merge_task, args=[job.work_dir], task_id=job.merge_id,
                      link_error=app.signature(job.errback, args=(job.work_dir, job_id),
                                               immutable=True))

    return send_merge


class LostTaskSweep(bootsteps.StartStopStep):
    """Worker bootstep: sweep every few seconds in a background thread."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        if not str(worker.app.conf.broker_url).startswith(("redis://", "rediss://", "unix://")):
            return  # tasks are published only with a Redis broker
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(worker.app,), name="ace-sweep",
                                        daemon=True)
        self._thread.start()

    def _run(self, app: Any) -> None:
        sweeper = Sweeper(merge_sender(app))
        pruning = LocalPruning()
        while not self._stop.wait(SWEEP_SECONDS):
            pruning.maybe()
            try:
                sweeper.sweep(runtime.redis(), runtime.store())
            except Exception as exc:  # Redis or the store away: look again next time
                log.warning("could not look for lost tasks: %s", exc)

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(SWEEP_SECONDS)
            self._thread = None
