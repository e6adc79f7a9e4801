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
from ace_shared.diffplan import resolve_targets
from ace_shared.diffspec import DiffSpec
from ace_shared.nodesessions import NodeSessions
from ace_shared.taskstore import TaskStore

from . import finished
from .app import DEFAULT_BROKER
from .counters import redis_client

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
    """The task store; recording an outcome also rings the job's doorbell."""
    return TaskStore.from_settings(settings(), on_finish=_ring)


def _ring(job_id: str) -> None:
    try:
        finished.ring(redis(), job_id)
    except Exception as exc:  # the outcome is stored; a follower finds it by polling
        log.warning("could not announce the end of %s in Redis: %s", job_id, exc)


def redis() -> Any:
    return redis_client(settings().BROKER_URL or DEFAULT_BROKER)


def sessions_for(spec: DiffSpec) -> NodeSessions:
    key = (spec.cluster_name, spec.dbname, spec.nodes, spec.role)
    with _lock:
        found = _sessions.get(key)
        if found is None:
            _, targets = resolve_targets(spec.cluster_name, spec.dbname, list(spec.nodes),
                                         settings(), spec.role)
            found = NodeSessions(targets)
            _sessions[key] = found
        return found


def drop_sessions(spec: DiffSpec) -> None:
    key = (spec.cluster_name, spec.dbname, spec.nodes, spec.role)
    with _lock:
        found = _sessions.pop(key, None)
    if found is not None:
        found.close()
