"""The API's flask-restx models: request parameters, answers and errors.

They are both the OpenAPI documentation and (through
:class:`~ace_api.rest.params.RequestSchema`) the first check of every request,
so a documented default or bound is the enforced one. A submission's model is
built from its command's declaration in the core (:mod:`ace_shared.options`),
the same one the CLI's options and the core's validation are built from, and
its defaults and bounds are read from the settings, which is why the models
are built per app.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask_restx import Model, Namespace, fields

from ace_api.rest.params import AnyValue, RequestSchema
from ace_shared.autorepair.exception_status import EXCEPTION_STATUSES
from ace_shared.config import Settings
from ace_shared.options import BOOL, CHOICE, INT, NUMBER, OBJECT, Command, Option
from ace_shared.tasks.store import STATUSES


@dataclass(frozen=True)
class ApiModels:
    """Every model of the API, registered on its namespace."""

    requests: dict[str, RequestSchema]  # by command name: "table-diff" ...
    spock_exception: RequestSchema
    submitted: Model
    error: Model
    task_status: Model
    message: Model


def model_name(command: Command) -> str:
    """``table-diff`` -> ``TableDiffRequest``."""
    return "".join(part.title() for part in command.name.split("-")) + "Request"


def option_field(command: Command, opt: Option, settings: Settings) -> fields.Raw:
    """One declared option as a model field: its type, default, bounds, choices and help."""
    description = command.describe(opt, "api")
    default = opt.shown_default(settings)
    if default is None and opt.automatic:
        description = f"{description.rstrip('.')} (default: {opt.automatic})."
    kwargs: dict[str, Any] = {"required": opt.required, "description": description}
    if default is not None:
        kwargs["default"] = default
    low, high = opt.bounds(settings)
    if opt.kind == BOOL:
        return fields.Boolean(**kwargs)
    if opt.kind == INT:
        return fields.Integer(min=low, max=high, **kwargs)
    if opt.kind == NUMBER:
        return fields.Float(min=low, max=high, exclusiveMin=opt.low_exclusive or None, **kwargs)
    if opt.kind == CHOICE:
        return fields.String(enum=list(opt.choices), **kwargs)
    if opt.kind == OBJECT:
        return fields.Raw(**kwargs)  # a JSON object; the core checks what is inside
    return fields.String(**kwargs)


def request_model(ns: Namespace, command: Command, settings: Settings) -> RequestSchema:
    """The parameters of ``command`` as the API takes them (no others: the model is strict)."""
    model = ns.model(model_name(command), {
        opt.name: option_field(command, opt, settings) for opt in command.api_options
    }, strict=True)
    return RequestSchema(model)


def _answer_models(ns: Namespace) -> tuple[Model, Model, Model]:
    """The error, the queued task and the plain message."""
    error = ns.model("Error", {
        "error": fields.String(required=True, description="What went wrong and what to do."),
    })
    submitted = ns.model("TaskSubmitted", {
        "task_id": fields.String(required=True, example="td_20240315_123456_x7k2"),
        "submitted_at": fields.String(required=True, description="UTC, ISO 8601.",
                                      example="2024-03-15T12:34:56.789Z"),
    })
    message = ns.model("Message", {"message": fields.String(required=True)})
    return error, submitted, message


def _spock_model(ns: Namespace) -> RequestSchema:
    """update-spock-exception's parameters (one direct change, not a command)."""
    details = ns.model("SpockExceptionDetails", {
        "remote_origin": AnyValue(required=True, example="16385",
                                  description="OID of the origin node (a whole number)."),
        "remote_commit_ts": fields.String(required=True, example="2024-03-15T12:34:56Z",
                                          description="Commit time of the remote transaction."),
        "remote_xid": AnyValue(required=True, example="123456",
                               description="Transaction id on the origin (a whole number)."),
        "command_counter": fields.Integer(
            min=0, description="Only this command of the transaction (default: all of them)."),
        "status": fields.String(required=True, enum=list(EXCEPTION_STATUSES),
                                description="The new status."),
        "resolution_details": fields.Raw(description="A JSON object saying what was done."),
    }, strict=True)
    spock = ns.model("SpockExceptionUpdate", {
        "cluster_name": fields.String(required=True, description="Name of the cluster."),
        "node_name": fields.String(required=True, description="The node holding the exception."),
        "dbname": fields.String(description="Database name (default: the cluster's first)."),
        "exception_details": fields.Nested(details, required=True),
    }, strict=True)
    return RequestSchema(spock, nested=[details])


def _task_status_model(ns: Namespace) -> Model:
    """A task as task-status reports it."""
    progress = ns.model("TaskProgress", {
        "done": fields.Integer(description="Units of work done."),
        "total": fields.Integer(description="Units of work in all, once known."),
        "percent": fields.Float(),
    })
    outcome = ns.model("TaskResult", {
        "diff_file": fields.String(),
        "total_rows": fields.Integer(),
        "mismatched_rows": fields.Integer(),
        "summary": fields.Raw(description="Task-specific details."),
    })
    task_status = ns.model("TaskStatus", {
        "task_id": fields.String(required=True),
        "task_type": fields.String(required=True),
        "status": fields.String(required=True, enum=list(STATUSES)),
        "task_status": fields.String(required=True, enum=list(STATUSES),
                                     description="The same as status."),
        "cluster_name": fields.String(),
        "table_name": fields.String(),
        "requested_by": fields.String(description="Common name of the caller's certificate."),
        "submitted_at": fields.String(),
        "started_at": fields.String(),
        "finished_at": fields.String(),
        "time_taken": fields.Float(description="Seconds."),
        "progress": fields.Nested(progress),
        "result": fields.Nested(outcome, description="Once COMPLETED."),
        "task_context": fields.Nested(outcome, description="The same as result."),
        "error": fields.String(description="Why the task FAILED."),
    })
    return task_status


def build_models(ns: Namespace, settings: Settings, commands: Iterable[Command]) -> ApiModels:
    """Every model, the submissions' built from ``commands``' declarations."""
    error, submitted, message = _answer_models(ns)
    return ApiModels(
        requests={c.name: request_model(ns, c, settings) for c in commands},
        spock_exception=_spock_model(ns), submitted=submitted, error=error,
        task_status=_task_status_model(ns), message=message,
    )
