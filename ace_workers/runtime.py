"""Per-process state of a worker: settings, the task store, Redis, node sessions.

Everything here is created lazily, after Celery has forked its pool
processes, so that no connection is shared between processes. Node sessions
are reused across the subtasks of a job (reconnecting costs more than
hashing a small range) and dropped when a node fails.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ace_shared.config import Settings, load_settings
from ace_shared.diff.plan import resolve_targets
from ace_shared.diff.request import DiffSpec
from ace_shared.diff.tuning import DensityHints
from ace_shared.nodes.connection import NodeTarget
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.tasks.store import TaskStore
from ace_workers import published, tidy
from ace_workers.counters import DEFAULT_BROKER, redis_client
from ace_workers.redisclient import RedisClient

log = logging.getLogger(__name__)

_lock = threading.Lock()
_settings: Settings | None = None
_sessions: dict[tuple[Any, ...], NodeSessions] = {}


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def store() -> TaskStore:
    """The task store; what it records is also published in Redis for followers."""
    return TaskStore.from_settings(settings(), listener=_publisher)


class _Publisher:
    """Passes each change the store records on to :mod:`ace_workers.published`; a job's
    outcome also has what it leaves behind removed (:mod:`ace_workers.tidy`).

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

# what the ranges of a job taught this process, for the next ranges of that job it runs
density_hints = DensityHints()


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
    with _lock:
        found = _sessions.get(key)
        if found is not None and tuple(found.targets.values()) != targets:
            stale, found = found, None
        if found is None:
            found = NodeSessions(targets, readonly=readonly)
            _sessions[key] = found
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
    with _lock:
        found = [_sessions.pop((*key, readonly), None) for readonly in (True, False)]
    for sessions in found:
        if sessions is not None:
            sessions.close()


def drop_sessions(spec: DiffSpec) -> None:
    drop_sessions_for(spec.cluster_name, spec.dbname, list(spec.nodes), spec.role)
