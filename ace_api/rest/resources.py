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

from flask import Response, current_app, request
from flask_limiter import Limiter
from flask_restx import Namespace, Resource
from werkzeug.exceptions import MethodNotAllowed

from ace_api.rest.access import AccessPolicy
from ace_api.rest.auth import caller
from ace_api.rest.checks import CHECK_SUBMISSIONS
from ace_api.rest.models import ApiModels, build_models
from ace_api.rest.mtree import MTREE_SUBMISSIONS
from ace_api.rest.params import RequestSchema
from ace_api.rest.plans import add_plan_preview
from ace_api.rest.status import cancel_answer, result_answer, status_answer
from ace_api.rest.submissions import (
    require_served_role,
    submit_diff,
    submit_repair,
    submit_rerun,
)
from ace_shared.autorepair.exception_status import update_spock_exception
from ace_shared.config import Settings
from ace_shared.diff.request import TABLE_DIFF
from ace_shared.options import Command
from ace_shared.repair.request import TABLE_REPAIR
from ace_shared.rerun.request import TABLE_RERUN
from ace_shared.tasks.store import TaskStore

SubmitFn = Callable[[dict[str, Any], str, Settings], dict[str, str]]

# Each submission endpoint: its command's declaration, and what queues it.
SUBMISSIONS: tuple[tuple[Command, SubmitFn], ...] = (
    (TABLE_DIFF, submit_diff),
    (TABLE_REPAIR, submit_repair),
    (TABLE_RERUN, submit_rerun),
    *CHECK_SUBMISSIONS,
    *MTREE_SUBMISSIONS,
)

_COMMON_ERRORS = {
    400: "Missing or invalid parameters.",
    401: "Missing or invalid client certificate.",
    403: "The certificate is not on the allow-list (API_ALLOWED_CNS), or its role is not a "
         "plain member of ace_callers on every node.",
    404: "Unknown cluster, node, database or task.",
}


def submission_limits(settings: Settings, limiter: Limiter | None) -> list[Any]:
    """Flask-Limiter's ``API_RATE_LIMIT`` per caller, for a resource's ``decorators``."""
    if limiter is None or not settings.API_RATE_LIMIT.strip():
        return []
    return [limiter.limit(settings.API_RATE_LIMIT)]


def _document_errors(ns: Namespace, models: ApiModels, codes: dict[int, str]) -> Any:
    def decorate(fn: Any) -> Any:
        for code, text in codes.items():
            fn = ns.response(code, text, models.error)(fn)
        return fn
    return decorate


def _add_submission(ns: Namespace, models: ApiModels, settings: Settings, command: Command,
                    submit: SubmitFn, limiter: Limiter | None) -> None:
    """``/<command>``, answering GET and POST alike (see the module's docstring)."""
    path, summary = command.path, command.help
    schema: RequestSchema = models.requests[command.name]
    errors = _document_errors(ns, models, {
        **_COMMON_ERRORS, 429: "Over the caller's rate limit, or too many open tasks.",
        503: "The task broker is down, or a node cannot confirm the role."})

    class Submission(Resource):
        decorators = submission_limits(settings, limiter)

        @ns.doc(params=schema.query_doc())
        @ns.response(200, "Task queued.", models.submitted)
        @errors
        def get(self) -> dict[str, str]:
            if request.method == "HEAD":  # a probe must not start a task
                raise MethodNotAllowed(valid_methods=["GET", "POST"])
            return submit(schema.from_query(request.args), caller(), settings)

        @ns.expect(schema.model)
        @ns.response(200, "Task queued.", models.submitted)
        @ns.response(415, "The body is not JSON.", models.error)
        @errors
        def post(self) -> dict[str, str]:
            return submit(schema.from_json_body(), caller(), settings)

    Submission.get.__doc__ = Submission.post.__doc__ = summary  # the OpenAPI summary
    Submission.__name__ = "".join(part.title() for part in path.strip("/").split("-"))
    ns.add_resource(Submission, path)


def _task_status(task_id: str | None, settings: Settings, policy: AccessPolicy
                 ) -> dict[str, Any]:
    return status_answer(TaskStore.from_settings(settings), policy, caller(), task_id,
                         current_app.extensions["ace_caller_gate"])


def _add_task_status(ns: Namespace, models: ApiModels, settings: Settings) -> None:
    """``/task-status?task_id=...`` and ``/task-status/<task_id>``: documented here;
    their GETs are answered by :mod:`ace_api.rest.status` before Flask sees them."""
    policy = AccessPolicy.from_settings(settings)
    status_errors = _document_errors(ns, models, _COMMON_ERRORS)

    @ns.route("/task-status")
    class TaskStatusQuery(Resource):
        @ns.doc(params={"task_id": {"in": "query", "type": "string", "required": True,
                                    "description": "The id a submission returned."}})
        @ns.response(200, "The task.", models.task_status)
        @status_errors
        def get(self) -> dict[str, Any]:
            """Status of a task."""
            return _task_status(request.args.get("task_id"), settings, policy)

    @ns.route("/task-status/<string:task_id>")
    @ns.param("task_id", "The id a submission returned.")
    class TaskStatusPath(Resource):
        @ns.response(200, "The task.", models.task_status)
        @status_errors
        def get(self, task_id: str) -> dict[str, Any]:
            """Status of a task."""
            return _task_status(task_id, settings, policy)


def _add_diff_files(ns: Namespace, models: ApiModels, settings: Settings) -> None:
    """``GET /diff-files/<task_id>?format=json|csv|html``: a finished task's file, streamed.

    Any task's file: a table-diff's or rerun's diff file and its CSV or HTML
    report, a repair's report, a schema-, repset- or spock-diff's result and its
    HTML page. Found and refused exactly as task-status finds tasks.
    """
    policy = AccessPolicy.from_settings(settings)
    file_errors = _document_errors(ns, models, {
        **_COMMON_ERRORS,
        404: "Unknown task (or another caller's), a task that failed, or no file in that "
             "format.",
        409: "The task has not finished yet."})

    @ns.route("/diff-files/<string:task_id>")
    @ns.param("task_id", "The id a submission returned.")
    class DiffFiles(Resource):
        @ns.doc(params={"format": {"in": "query", "type": "string", "default": "json",
                                   "enum": ["json", "csv", "html"],
                                   "description": "json: the diff file (a repair's report, a "
                                                  "check's result); csv or html: the report, "
                                                  "when the task wrote one."}},
                produces=["application/json", "text/csv", "text/html"])
        @ns.response(200, "The file, streamed, as an attachment.")
        @file_errors
        def get(self, task_id: str) -> Response:
            """Download a finished task's diff file or report."""
            found = result_answer(TaskStore.from_settings(settings), policy, caller(), task_id,
                                  current_app.extensions["ace_caller_gate"],
                                  request.args.get("format"), settings)
            headers = {"Content-Disposition": f'attachment; filename="{found.download_name}"',
                       "X-Content-Type-Options": "nosniff"}
            size = found.size
            if size is not None:
                headers["Content-Length"] = str(size)
            return Response(found.chunks(), mimetype=found.media_type, headers=headers)


def _add_task_cancel(ns: Namespace, models: ApiModels, settings: Settings) -> None:
    """``POST /task-cancel/<task_id>``: a caller stops its own task (an admin, any task)."""
    policy = AccessPolicy.from_settings(settings)
    cancel_errors = _document_errors(ns, models, {
        **_COMMON_ERRORS, 409: "The task has already finished.",
        503: "The task broker is down (the task is recorded FAILED all the same)."})

    @ns.route("/task-cancel/<string:task_id>")
    @ns.param("task_id", "The id a submission returned.")
    class TaskCancel(Resource):
        @ns.response(200, "Cancelled: the task, now FAILED.", models.task_status)
        @cancel_errors
        def post(self, task_id: str) -> dict[str, Any]:
            """Cancel a task: revoke its work on the fleet and its queries on every node."""
            return cancel_answer(TaskStore.from_settings(settings), policy, caller(), task_id,
                                 current_app.extensions["ace_caller_gate"], settings)


def _add_spock_exception(ns: Namespace, models: ApiModels, settings: Settings,
                         limiter: Limiter | None) -> None:
    """``/update-spock-exception``: the one direct change on a node, as the caller's role."""
    spock = models.spock_exception
    spock_errors = _document_errors(ns, models, {
        **_COMMON_ERRORS, 403: "The caller's role may not update the exception tables.",
        404: "Unknown cluster, node or database, or no matching exception.",
        409: "The exception rows are locked by another session.",
        415: "The body is not JSON.", 502: "The node cannot be reached."})

    @ns.route("/update-spock-exception")
    class UpdateSpockException(Resource):
        decorators = submission_limits(settings, limiter)

        @ns.expect(spock.model)
        @ns.response(200, "Updated.", models.message)
        @spock_errors
        def post(self) -> dict[str, str]:
            """Set the status of a Spock replication exception on one node."""
            params = spock.from_json_body()
            require_served_role(params["cluster_name"], caller())
            update_spock_exception(params["cluster_name"], params["node_name"],
                                   params.get("dbname"), params["exception_details"],
                                   settings, caller())
            return {"message": "Exception status updated successfully"}


def build_namespace(settings: Settings, limiter: Limiter | None = None) -> Namespace:
    """The ``ace`` namespace with every endpoint, its models built from ``settings``."""
    ns = Namespace("ace", description="Find and repair data divergence between cluster nodes.",
                   path="/")
    models = build_models(ns, settings, (command for command, _ in SUBMISSIONS))
    for command, submit in SUBMISSIONS:
        _add_submission(ns, models, settings, command, submit, limiter)
    add_plan_preview(ns, settings, submission_limits(settings, limiter),
                     _document_errors(ns, models, {**_COMMON_ERRORS,
                                                   429: "Over the caller's rate limit."}),
                     models.error)
    _add_task_status(ns, models, settings)
    _add_task_cancel(ns, models, settings)
    _add_diff_files(ns, models, settings)
    _add_spock_exception(ns, models, settings, limiter)
    return ns
