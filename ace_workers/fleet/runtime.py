"""Per-process state of a worker: settings, the task store, Redis, node sessions.

What a worker process keeps is one :class:`WorkerRuntime`, made by
:func:`current` (the one place it is made): on first use in a process, so after
Celery has forked its pool processes and no connection is shared between
processes; a forked child gets a new one. Node sessions are reused across the
subtasks of a job (reconnecting costs more than hashing a small range) and
dropped when a node fails. The functions below are that object's, for the
process they run in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

from celery import current_task
from celery.signals import task_postrun, task_prerun

from ace_shared.config import Settings, load_settings
from ace_shared.diff.plan import resolve_targets
from ace_shared.diff.request import DiffSpec
from ace_shared.diff.tuning import DensityHints
from ace_shared.nodes import permits
from ace_shared.nodes.connection import NodeTarget
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.tasks.filestore import active_store
from ace_shared.tasks.ids import job_of
from ace_shared.tasks.metrics import finished as job_metrics
from ace_shared.tasks.results import share_results
from ace_shared.tasks.store import TaskStore
from ace_workers.fleet import metrics, published, tidy
from ace_workers.fleet.connpermits import FleetPermits
from ace_workers.fleet.counters import DEFAULT_BROKER, redis_client
from ace_workers.fleet.redisclient import RedisClient

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 0.5  # at most one progress report per process in this interval


class Throttle:
    """Lets one call through per ``every`` seconds (and any call told it is the last)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last = float("-inf")  # the first call goes through
        self._lock = threading.Lock()

    def ready(self, last: bool = False) -> bool:
        now = time.monotonic()
        with self._lock:
            if last or now - self._last >= self.every:
                self._last = now
                return True
        return False


class WorkerRuntime:
    """What one worker process keeps between tasks; made by :func:`current` alone."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.settings: Settings | None = None
        self.sessions: dict[tuple[Any, ...], NodeSessions] = {}
        # what this process works on now: the job (for its progress notes), whether a task
        # runs, and the sessions that task has used (the others are idle, and can be given back)
        self.current_job: str | None = None
        self.in_task = False
        self.used: set[tuple[Any, ...]] = set()
        self.permits_installed = False
        # what the ranges of a job taught this process, for the next ranges of that job it runs
        self.density_hints = DensityHints()
        # a diff's batches report their progress at most this often from one process
        self.progress_reports = Throttle(PROGRESS_EVERY_SECONDS)


_runtime: WorkerRuntime | None = None
_runtime_made = threading.Lock()


def current() -> WorkerRuntime:
    """This process's runtime: made on first use, and again in a forked child."""
    global _runtime
    found = _runtime
    if found is None or found.pid != os.getpid():
        with _runtime_made:
            if _runtime is None or _runtime.pid != os.getpid():
                _runtime = WorkerRuntime()
            found = _runtime
    return found


def settings() -> Settings:
    rt = current()
    if rt.settings is None:
        rt.settings = load_settings()
    return rt.settings


def store() -> TaskStore:
    """The task store; what it records is also published in Redis for followers, and the
    files a finished task names are put in the shared store first (when there is one)."""
    return TaskStore.from_settings(settings(), listener=_publisher, keep_files=_keep_files)


def _keep_files(task_id: str, result: dict[str, Any]) -> None:
    shared = active_store()
    if shared is None:
        return
    record = TaskStore.from_settings(settings()).get(task_id, with_options=False)
    share_results(shared, task_id, record.task_type if record else "", result)


class _Publisher:
    """Passes each change the store records on to :mod:`ace_workers.fleet.published`; a job's
    outcome also has what it leaves behind removed (:mod:`ace_workers.fleet.tidy`).

    A Redis outage must not fail a task whose work is done: the store has it.
    """

    def running(self, task_id: str) -> None:
        self._quietly(published.running, task_id)

    def progress(self, task_id: str, *, done: int | None = None, added: int | None = None,
                 total: int | None = None) -> None:
        self._quietly(published.progress, task_id, done=done, added=added, total=total)

    def finished(self, task_id: str, status: str, result: dict[str, Any] | None,
                 error: str | None) -> None:
        self._quietly(published.outcome, task_id, status, result, error)
        try:  # the fleet's metrics (ace_workers.fleet.metrics): type and time from the store's row
            record = TaskStore.from_settings(settings()).get(task_id, with_options=False)
            metrics.record(redis(), job_metrics(
                record.task_type if record else "unknown", status,
                record.time_taken if record else None, result))
        except Exception as exc:
            log.warning("could not count %s in the fleet's metrics: %s", task_id, exc)
        try:
            tidy.after_job(redis(), task_id, settings().output_dir)
        except Exception as exc:
            log.warning("could not remove what task %s left behind: %s", task_id, exc)

    @staticmethod
    def _quietly(publish: Any, task_id: str, *args: Any, **kwargs: Any) -> None:
        try:
            publish(redis(), task_id, *args, **kwargs)
        except Exception as exc:
            log.warning("could not publish the state of %s in Redis: %s", task_id, exc)


_publisher = _Publisher()


def density_hints() -> DensityHints:
    """What the ranges of a job taught this process, for the next ranges of that job it runs."""
    return current().density_hints


def redis() -> RedisClient:
    """This process's Redis client (the broker's server), made on each call."""
    return redis_client(settings().BROKER_URL or DEFAULT_BROKER)


def _session_key(cluster_name: str, dbname: str | None, nodes: str | list[str],
                 role: str | None) -> tuple[tuple[Any, ...], tuple[NodeTarget, ...]]:
    """Where this process keeps sessions to these nodes, and what the cluster file says of them."""
    db, targets = resolve_targets(cluster_name, dbname, nodes, settings(), role)
    return (cluster_name, db, tuple(t.node for t in targets), role), targets


def sessions_for_nodes(cluster_name: str, dbname: str | None, nodes: str | list[str],
                       role: str | None, readonly: bool = True) -> NodeSessions:
    """This process's sessions to the chosen nodes, opened on first use.

    They are looked up by what the cluster file says now, so an edited file (a new
    password, a moved node) gets fresh connections and the old ones are closed.
    Sessions that may write (an mtree build's) are kept apart from those that only read.
    """
    key, targets = _session_key(cluster_name, dbname, nodes, role)
    key = (*key, readonly)
    stale = None
    rt = current()
    with rt.lock:
        rt.used.add(key)
        found = rt.sessions.get(key)
        if found is not None and tuple(found.targets.values()) != targets:
            stale, found = found, None
        if found is None:
            found = NodeSessions(targets, readonly=readonly)
            rt.sessions[key] = found
    if stale is not None:
        stale.close()
    return found


def sessions_for(spec: DiffSpec) -> NodeSessions:
    return sessions_for_nodes(spec.cluster_name, spec.dbname, list(spec.nodes), spec.role)


def drop_sessions_for(cluster_name: str, dbname: str | None, nodes: str | list[str],
                      role: str | None) -> None:
    """Close this process's sessions to those nodes (after a node failed)."""
    try:
        key, _ = _session_key(cluster_name, dbname, nodes, role)
    except Exception:  # the cluster file is gone or broken: nothing to look up
        return
    rt = current()
    with rt.lock:
        found = [rt.sessions.pop((*key, readonly), None) for readonly in (True, False)]
    for sessions in found:
        if sessions is not None:
            sessions.close()


def drop_sessions(spec: DiffSpec) -> None:
    drop_sessions_for(spec.cluster_name, spec.dbname, list(spec.nodes), spec.role)


def task_started(task_id: str | None) -> None:
    """A task begins in this process: count its connections (:mod:`ace_workers.fleet.connpermits`)
    and say its waits as the progress of its job."""
    install_permits()
    rt = current()
    with rt.lock:
        rt.current_job = job_of(task_id) if task_id else None
        rt.in_task = True
        rt.used.clear()


def task_ended() -> None:
    """The task is over; its sessions stay open for the next, unless another job waits."""
    rt = current()
    with rt.lock:
        rt.current_job, rt.in_task = None, False
        rt.used.clear()
    counter = permits.installed()
    if isinstance(counter, FleetPermits):
        try:
            counter.renew_once()
        except Exception as exc:
            log.warning("could not look for jobs waiting for connections: %s", exc)


def install_permits() -> None:
    """Count this process's connections against the fleet's cap (once per process)."""
    rt = current()
    if rt.permits_installed:
        return
    rt.permits_installed = True
    cap = settings().MAX_CONNECTIONS_PER_NODE
    if cap <= 0:
        permits.install(None)
        return
    permits.install(FleetPermits(redis, cap, settings().CONNECTION_WAIT_SECONDS,
                                 on_wait=_say_waiting, release_idle=close_idle_sessions,
                                 idle=lambda: not rt.in_task))


def _say_waiting(note: str | None) -> None:
    """Publish what the running task waits for: on its job (the CLI prints it) and, from
    the task's own thread, as a ``task-progress`` event (Flower shows it)."""
    job = current().current_job
    if job is None:
        return
    try:
        published.note(redis(), job, note)
    except Exception as exc:
        log.warning("could not publish the state of %s in Redis: %s", job, exc)
    # a proxy: outside a task's own thread (a pool thread of its job) it stands for None
    task = current_task._get_current_object()
    if task is not None and task.request.id:
        with contextlib.suppress(Exception):  # events are a courtesy to Flower
            task.send_event("task-progress", waiting=note or "")


def close_idle_sessions() -> None:
    """Close the sessions this process keeps that the running task (if any) has not used."""
    rt = current()
    with rt.lock:
        idle = [k for k in rt.sessions if not (rt.in_task and k in rt.used)]
        found = [rt.sessions.pop(k) for k in idle]
    for sessions in found:
        sessions.close()


@task_prerun.connect(weak=False, dispatch_uid="ace-task-started")
def _on_task_prerun(task_id: str | None = None, **_: Any) -> None:
    task_started(task_id)


@task_postrun.connect(weak=False, dispatch_uid="ace-task-ended")
def _on_task_postrun(**_: Any) -> None:
    task_ended()
