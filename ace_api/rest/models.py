"""The API's flask-restx models: request parameters, answers and errors.

They are both the OpenAPI documentation and (through
:class:`~ace_api.rest.params.RequestSchema`) the first check of every request,
so a documented default or bound is the enforced one. Bounds come from the
settings (``BLOCK_ROWS_MIN`` ...), which is why the models are built per app.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_restx import Model, Namespace, fields

from ace_api.rest.params import AnyValue, RequestSchema
from ace_shared.autorepair.exception_status import EXCEPTION_STATUSES
from ace_shared.config import Settings
from ace_shared.diff.request import OUTPUT_FORMATS
from ace_shared.tasks.store import STATUSES

RERUN_BEHAVIORS = ("multiprocessing", "hostdb")
DIFF_FILE_HELP = ("The diff file to work from: a path inside the ACE output directory "
                  "(relative to it, or absolute), or the task id of a completed table-diff.")


def _flag(description: str) -> fields.Boolean:
    return fields.Boolean(default=False, description=f"{description} (default: false).")


@dataclass(frozen=True)
class ApiModels:
    """Every model of the API, registered on its namespace."""

    diff: RequestSchema
    repair: RequestSchema
    rerun: RequestSchema
    spock_exception: RequestSchema
    submitted: Model
    error: Model
    task_status: Model
    message: Model


def build_models(ns: Namespace, settings: Settings) -> ApiModels:
    error = ns.model("Error", {
        "error": fields.String(required=True, description="What went wrong and what to do."),
    })
    submitted = ns.model("TaskSubmitted", {
        "task_id": fields.String(required=True, example="td_20240315_123456_x7k2"),
        "submitted_at": fields.String(required=True, description="UTC, ISO 8601.",
                                      example="2024-03-15T12:34:56.789Z"),
    })
    message = ns.model("Message", {"message": fields.String(required=True)})

    diff = ns.model("TableDiffRequest", {
        "cluster_name": fields.String(required=True, description="Name of the cluster."),
        "table_name": fields.String(required=True,
                                    description="Fully qualified table name (schema.table)."),
        "dbname": fields.String(description="Database name (default: the cluster's first)."),
        "block_rows": fields.Integer(
            default=settings.BLOCK_ROWS_DEFAULT, min=settings.BLOCK_ROWS_MIN,
            max=settings.BLOCK_ROWS_MAX, description="Rows per block."),
        "max_cpu_ratio": fields.Float(
            default=settings.MAX_CPU_RATIO_DEFAULT, min=0, exclusiveMin=True, max=1,
            description="Share of the workers' CPUs to use."),
        "output": fields.String(default="json", enum=list(OUTPUT_FORMATS),
                                description="Format of the diff report."),
        "nodes": fields.String(default="all",
                               description="'all' or a comma-separated list of node names."),
        "batch_size": fields.Integer(
            min=settings.BATCH_SIZE_MIN, max=settings.BATCH_SIZE_MAX,
            description="Blocks per worker task (default: chosen for the fleet's size)."),
        "table_filter": fields.String(
            description="SQL WHERE condition restricting the rows compared (runs read-only)."),
        "quiet": _flag("Suppress non-essential output"),
    }, strict=True)

    repair = ns.model("TableRepairRequest", {
        "cluster_name": fields.String(required=True, description="Name of the cluster."),
        "diff_file": fields.String(required=True, description=DIFF_FILE_HELP),
        "source_of_truth": fields.String(
            description="Node whose rows are right; required unless fix_nulls is true."),
        "table_name": fields.String(required=True,
                                    description="Fully qualified table name (schema.table)."),
        "dbname": fields.String(description="Database name (default: the cluster's first)."),
        "dry_run": _flag("Report the changes without making them"),
        "quiet": _flag("Suppress non-essential output"),
        "generate_report": _flag("Write a report of the repair"),
        "upsert_only": _flag("Insert and update only; never delete"),
        "insert_only": _flag("Only insert missing rows"),
        "bidirectional": _flag("Insert missing rows in both directions"),
        "fix_nulls": _flag("Fill NULL values from the nodes that have them"),
        "fire_triggers": _flag("Fire triggers while repairing"),
    }, strict=True)

    rerun = ns.model("TableRerunRequest", {
        "cluster_name": fields.String(required=True, description="Name of the cluster."),
        "diff_file": fields.String(required=True, description=DIFF_FILE_HELP),
        "table_name": fields.String(required=True,
                                    description="Fully qualified table name (schema.table)."),
        "dbname": fields.String(description="Database name (default: the cluster's first)."),
        "quiet": _flag("Suppress non-essential output"),
        "behavior": fields.String(default="multiprocessing", enum=list(RERUN_BEHAVIORS),
                                  description="How the rows are compared again."),
    }, strict=True)

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
    return ApiModels(
        diff=RequestSchema(diff), repair=RequestSchema(repair), rerun=RequestSchema(rerun),
        spock_exception=RequestSchema(spock, nested=[details]),
        submitted=submitted, error=error, task_status=task_status, message=message,
    )
