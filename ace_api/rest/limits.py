"""Per-caller limits: how often a caller may submit, and how much it may have open.

A caller's tasks run on the shared fleet and on every node of a cluster, so
one caller must not be able to crowd out the others:

* ``API_RATE_LIMIT`` (default ``60/minute``): submissions per caller, counted
  by Flask-Limiter in Redis (the broker's, unless ``API_RATE_LIMIT_STORAGE``
  names another), so every API process and host shares one count. If that
  Redis cannot be reached, each API process counts for itself meanwhile.
* ``API_MAX_ACTIVE_TASKS_PER_CALLER`` (default 8) and
  ``API_MAX_QUEUED_TASKS_PER_CALLER`` (default 32): tasks of the caller that
  are running, and waiting, in the task store. A task recorded longer ago than
  ``TASK_TIME_LIMIT`` no longer counts, so a task whose worker died without a
  word cannot block its caller for good.

Over any of them the API answers 429 with ``{"error": ...}`` in one sentence,
before anything is queued. task-status polls are not limited.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Flask, request
from flask_limiter import Limiter
from limits import parse_many

from ace_api.rest.auth import IDENTITY_KEY
from ace_api.rest.errors import ApiError
from ace_shared.config import Settings
from ace_shared.errors import ConfigError
from ace_shared.tasks.store import PENDING, RUNNING, TaskStore
from ace_workers.fleet.counters import DEFAULT_BROKER

LIMITER_KEY = "ace_limiter"


def _caller_key() -> str:
    """The rate limit's key: the verified certificate's common name."""
    return str(request.environ.get(IDENTITY_KEY) or "-")


def _storage_uri(settings: Settings) -> str:
    if settings.API_RATE_LIMIT_STORAGE:
        return settings.API_RATE_LIMIT_STORAGE
    broker = settings.BROKER_URL or DEFAULT_BROKER  # the broker's Redis, as the workers use
    return broker if broker.startswith(("redis://", "rediss://")) else "memory://"


def build_limiter(app: Flask, settings: Settings) -> Limiter:
    """Flask-Limiter for ``app``; the submission endpoints take :func:`submission_limit`."""
    limiter = Limiter(_caller_key, app=app, storage_uri=_storage_uri(settings),
                      strategy="moving-window", headers_enabled=True, swallow_errors=True,
                      in_memory_fallback_enabled=True, key_prefix="ace-api",
                      enabled=bool(settings.API_RATE_LIMIT.strip()))
    app.extensions[LIMITER_KEY] = limiter
    return limiter


def check_rate_limit_setting(settings: Settings) -> None:
    """Refuse a malformed ``API_RATE_LIMIT`` at start-up, not at the first submission."""

    if settings.API_RATE_LIMIT.strip():
        try:
            parse_many(settings.API_RATE_LIMIT)
        except ValueError as exc:
            raise ConfigError(f"API_RATE_LIMIT {settings.API_RATE_LIMIT!r} is not a rate; "
                              "write it like 60/minute or 1000/hour.") from exc


def check_open_tasks(identity: str, settings: Settings, store: TaskStore) -> None:
    """429 when the caller already has the most running or waiting tasks it may have."""
    active_max = settings.API_MAX_ACTIVE_TASKS_PER_CALLER
    queued_max = settings.API_MAX_QUEUED_TASKS_PER_CALLER
    if active_max <= 0 and queued_max <= 0:
        return
    since = datetime.now(timezone.utc) - timedelta(seconds=settings.TASK_TIME_LIMIT)
    counts = store.open_counts(identity, since)
    if active_max > 0 and counts.get(RUNNING, 0) >= active_max:
        raise ApiError(f"You already have {counts[RUNNING]} tasks running, the most "
                       "API_MAX_ACTIVE_TASKS_PER_CALLER allows; wait for one to finish "
                       "(or cancel one) and submit again.", 429)
    if queued_max > 0 and counts.get(PENDING, 0) >= queued_max:
        raise ApiError(f"You already have {counts[PENDING]} tasks waiting to start, the most "
                       "API_MAX_QUEUED_TASKS_PER_CALLER allows; wait for them to start "
                       "(or cancel one) and submit again.", 429)
