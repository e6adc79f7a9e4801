"""task-status: the endpoint clients poll, answered before Flask is involved.

A client waiting for its task asks ``GET /ace/task-status/<id>`` (or
``?task_id=<id>``) every second or so, and hundreds of clients may wait at
once. Through Flask and flask-restx one such poll cost about as much CPU as
the TLS and HTTP work around it (request context, URL map, resource dispatch,
response object, JSON representation), for an answer that is one row of the
task store. :class:`TaskStatusFastPath` therefore answers these two URLs as a
plain WSGI layer in front of Flask: one primary-key read of the task's row
(its ``requested_by`` is the ownership check too), ``json.dumps``, done.

Flask keeps the same two routes (``resources.py``) for the OpenAPI document,
and answers every request this layer passes on: other methods, a caller
without a certificate or not on the allow-list (the 401 and 403 of
:func:`~ace_api.rest.auth.require_identity`), URLs with more path segments.
Both answer through :func:`status_answer`, so the answer and its errors are
the same whichever layer gives it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from ace_api.rest.access import AccessPolicy
from ace_api.rest.auth import IDENTITY_KEY, WSGIApp
from ace_api.rest.callers import CallerGate
from ace_api.rest.errors import ApiError, describe_error
from ace_shared.config import Settings
from ace_shared.errors import BrokerUnreachableError, NotFoundError
from ace_shared.tasks.results import ResultFile, result_file
from ace_shared.tasks.store import TaskStore

STATUS_PATH = "/ace/task-status"
_PATH_PREFIX = STATUS_PATH + "/"
_HEADERS = [("Content-Type", "application/json")]


def status_answer(store: TaskStore, policy: AccessPolicy, caller: str,
                  task_id: str | None, gate: CallerGate) -> dict[str, Any]:
    """The task-status document of ``task_id`` for ``caller``: one primary-key read.

    Another caller's task answers exactly like a missing one, so a task id
    tells nothing about tasks the caller may not see; a caller whose role may
    not be served on the task's cluster is refused (``gate``).
    """
    task_id = (task_id or "").strip()
    if not task_id:
        raise ApiError("task_id is required.", 400)
    record = store.get(task_id, with_options=False)
    if record is None or not policy.may_see(caller, record.requested_by):
        raise NotFoundError(f"Task {task_id} is not known; check the task id the "
                            "submission returned.")
    gate.require(record.cluster_name or "", caller)
    return record.status_document()


def result_answer(store: TaskStore, policy: AccessPolicy, caller: str, task_id: str,
                  gate: CallerGate, fmt: str | None, settings: Settings) -> ResultFile:
    """The file of ``task_id`` in ``fmt`` for ``caller``: found and refused as task-status
    finds tasks (another caller's is "not known")."""
    status_answer(store, policy, caller, task_id, gate)
    record = store.get(task_id.strip(), with_options=False)
    if record is None:  # removed between the two reads
        raise NotFoundError(f"Task {task_id} is not known; check the task id the "
                            "submission returned.")
    return result_file(record, fmt, settings.output_dir)


def cancel_answer(store: TaskStore, policy: AccessPolicy, caller: str, task_id: str,
                  gate: CallerGate, settings: Settings) -> dict[str, Any]:
    """Cancel ``task_id`` for ``caller`` (its own, or any for an admin); its new status.

    Found and refused exactly as task-status finds them (another caller's task
    is "not known"); a task that has already finished is left as it is (409).
    """
    from ace_workers.client import cancel  # the Celery app is built on first use

    status_answer(store, policy, caller, task_id, gate)
    task_id = task_id.strip()
    try:
        cancelled = cancel(task_id, store, settings, f"Task {task_id} was cancelled by {caller}.")
    except BrokerUnreachableError as exc:
        raise ApiError(f"Task {task_id} is recorded as cancelled, but the task queue cannot be "
                       "reached to stop its work; check that the ACE broker (Redis) is "
                       "running.", 503) from exc
    if not cancelled:
        record = store.get(task_id, with_options=False)
        raise ApiError(f"Task {task_id} has already finished "
                       f"({record.status if record else 'gone'}); there is nothing to cancel.",
                       409)
    return status_answer(store, policy, caller, task_id, gate)


def _task_id(environ: dict[str, Any]) -> str | None:
    """The task id a GET of one of the two task-status URLs asks for ("" when the
    query form omits it); None for any other request."""
    if environ.get("REQUEST_METHOD") != "GET":
        return None
    path = environ.get("PATH_INFO", "")
    if path == STATUS_PATH:
        values = parse_qs(environ.get("QUERY_STRING", "")).get("task_id")
        return values[0] if values else ""
    if path.startswith(_PATH_PREFIX):
        task_id = path[len(_PATH_PREFIX):]
        if task_id and "/" not in task_id:
            return task_id
    return None


class TaskStatusFastPath:
    """WSGI layer answering task-status polls itself and passing on everything else.

    It sits inside :class:`~ace_api.rest.auth.PeerCertIdentity` (the caller's
    verified common name is in the environ) and in front of Flask. The task
    store is opened at the first poll, not when the app is built.
    """

    def __init__(self, app: WSGIApp, settings: Settings, policy: AccessPolicy,
                 logger: logging.Logger, gate: CallerGate) -> None:
        self.app = app
        self.gate = gate
        self.settings = settings
        self.policy = policy
        self.logger = logger
        self._store: TaskStore | None = None

    @property
    def store(self) -> TaskStore:
        if self._store is None:
            self._store = TaskStore.from_settings(self.settings)
        return self._store

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        task_id = _task_id(environ)
        identity = environ.get(IDENTITY_KEY)
        if task_id is None or not identity or not self.policy.may_call(identity):
            return self.app(environ, start_response)
        try:
            document, status = status_answer(self.store, self.policy, identity, task_id,
                                             self.gate), 200
        except Exception as exc:  # noqa: BLE001 - answered as Flask's error handler would
            status, message, _headers = describe_error(exc)
            if status >= 500:  # the task store is unreachable, or a fault
                self.logger.error("GET %s answered %s: %s", environ.get("PATH_INFO"), status,
                                  message, exc_info=exc)
            document = {"error": message}
        body = (json.dumps(document) + "\n").encode()
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [*_HEADERS, ("Content-Length", str(len(body)))])
        return [body]
