"""The ``/ace/...`` endpoints: HTTP in and out, nothing more.

Each submission endpoint answers GET (query parameters) and POST (a JSON
body) alike: the same model checks both, then
:mod:`~ace_api.rest.submissions` queues the task. task-status reads the task
store; update-spock-exception is the one direct change on a node, done by
:mod:`ace_shared.autorepair.exception_status` as the caller's role.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request
from flask_restx import Namespace, Resource
from werkzeug.exceptions import MethodNotAllowed

from ace_api.rest.access import AccessPolicy
from ace_api.rest.auth import caller
from ace_api.rest.errors import ApiError
from ace_api.rest.models import ApiModels, build_models
from ace_api.rest.params import RequestSchema
from ace_api.rest.submissions import submit_diff, submit_repair, submit_rerun
from ace_shared.autorepair.exception_status import update_spock_exception
from ace_shared.config import Settings
from ace_shared.errors import NotFoundError
from ace_shared.tasks.store import TaskStore

SubmitFn = Callable[[dict[str, Any], str, Settings], dict[str, str]]

_COMMON_ERRORS = {
    400: "Missing or invalid parameters.",
    401: "Missing or invalid client certificate.",
    403: "The certificate is not on the allow-list (API_ALLOWED_CNS).",
    404: "Unknown cluster, node, database or task.",
}


def _document_errors(ns: Namespace, models: ApiModels, codes: dict[int, str]) -> Any:
    def decorate(fn: Any) -> Any:
        for code, text in codes.items():
            fn = ns.response(code, text, models.error)(fn)
        return fn
    return decorate


def _add_submission(ns: Namespace, models: ApiModels, settings: Settings, path: str,
                    schema: RequestSchema, submit: SubmitFn, summary: str) -> None:
    errors = _document_errors(ns, models, {**_COMMON_ERRORS, 503: "The task broker is down."})

    class Submission(Resource):
        @ns.doc(summary=summary, params=schema.query_doc())
        @ns.response(200, "Task queued.", models.submitted)
        @errors
        def get(self) -> dict[str, str]:
            if request.method == "HEAD":  # a probe must not start a task
                raise MethodNotAllowed(valid_methods=["GET", "POST"])
            return submit(schema.from_query(request.args), caller(), settings)

        @ns.doc(summary=summary)
        @ns.expect(schema.model)
        @ns.response(200, "Task queued.", models.submitted)
        @ns.response(415, "The body is not JSON.", models.error)
        @errors
        def post(self) -> dict[str, str]:
            return submit(schema.from_json_body(), caller(), settings)

    Submission.__name__ = "".join(part.title() for part in path.strip("/").split("-"))
    ns.add_resource(Submission, path)


def _task_status(task_id: str | None, settings: Settings, policy: AccessPolicy
                 ) -> dict[str, Any]:
    """One primary-key read of the task's row, without its options column.

    Another caller's task answers exactly like a missing one, so a task id
    tells nothing about tasks the caller may not see.
    """
    if not task_id or not task_id.strip():
        raise ApiError("task_id is required.", 400)
    record = TaskStore.from_settings(settings).get(task_id.strip(), with_options=False)
    if record is None or not policy.may_see(caller(), record.requested_by):
        raise NotFoundError(f"Task {task_id.strip()} is not known; check the task id the "
                            "submission returned.")
    return record.status_document()


def build_namespace(settings: Settings) -> Namespace:
    """The ``ace`` namespace with every endpoint, its models built from ``settings``."""
    ns = Namespace("ace", description="Find and repair data divergence between cluster nodes.",
                   path="/")
    models = build_models(ns, settings)
    policy = AccessPolicy.from_settings(settings)
    _add_submission(ns, models, settings, "/table-diff", models.diff, submit_diff,
                    "Start a table-diff.")
    _add_submission(ns, models, settings, "/table-repair", models.repair, submit_repair,
                    "Start a table-repair from a diff file.")
    _add_submission(ns, models, settings, "/table-rerun", models.rerun, submit_rerun,
                    "Compare again the rows a diff file lists.")
    status_errors = _document_errors(ns, models, _COMMON_ERRORS)

    @ns.route("/task-status")
    class TaskStatusQuery(Resource):
        @ns.doc(summary="Status of a task.",
                params={"task_id": {"in": "query", "type": "string", "required": True,
                                    "description": "The id a submission returned."}})
        @ns.response(200, "The task.", models.task_status)
        @status_errors
        def get(self) -> dict[str, Any]:
            return _task_status(request.args.get("task_id"), settings, policy)

    @ns.route("/task-status/<string:task_id>")
    @ns.param("task_id", "The id a submission returned.")
    class TaskStatusPath(Resource):
        @ns.doc(summary="Status of a task.")
        @ns.response(200, "The task.", models.task_status)
        @status_errors
        def get(self, task_id: str) -> dict[str, Any]:
            return _task_status(task_id, settings, policy)

    spock = models.spock_exception
    spock_errors = _document_errors(ns, models, {
        **_COMMON_ERRORS, 403: "The caller's role may not update the exception tables.",
        404: "Unknown cluster, node or database, or no matching exception.",
        409: "The exception rows are locked by another session.",
        415: "The body is not JSON.", 502: "The node cannot be reached."})

    @ns.route("/update-spock-exception")
    class UpdateSpockException(Resource):
        @ns.doc(summary="Set the status of a Spock replication exception on one node.")
        @ns.expect(spock.model)
        @ns.response(200, "Updated.", models.message)
        @spock_errors
        def post(self) -> dict[str, str]:
            params = spock.from_json_body()
            update_spock_exception(params["cluster_name"], params["node_name"],
                                   params.get("dbname"), params["exception_details"],
                                   settings, caller())
            return {"message": "Exception status updated successfully"}

    return ns
