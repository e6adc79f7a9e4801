"""The cluster checks' endpoints: ``/ace/schema-diff``, ``/ace/repset-diff``, ``/ace/spock-diff``.

Each is a submission like table-diff's (GET with query parameters, POST with a
JSON body, answering ``{task_id, submitted_at}``); the core validators check
the options and the cluster before anything is queued, and task-status gives
the result.
"""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, fields

from ace_api.rest.params import RequestSchema
from ace_api.rest.submissions import _enqueue, _options
from ace_shared.config import Settings
from ace_shared.nodes.cluster import load_cluster


def _flag(description: str, default: bool = False) -> fields.Boolean:
    return fields.Boolean(default=default,
                          description=f"{description} (default: {str(default).lower()}).")


def _common(settings: Settings) -> dict[str, Any]:
    return {
        "cluster_name": fields.String(required=True, description="Name of the cluster."),
        "dbname": fields.String(description="Database name (default: the cluster's first)."),
        "nodes": fields.String(default="all",
                               description="'all' or a comma-separated list of node names."),
        "output": fields.String(default="json", enum=["json", "html"],
                                description="json, or html for a page beside the JSON file."),
        "quiet": _flag("Suppress non-essential output"),
    }


def _table_options(settings: Settings) -> dict[str, Any]:
    """Table-diff options; no skip file here: a caller may not make ACE read its files."""
    return {
        "skip_tables": fields.String(description="Comma-separated tables to leave out."),
        "block_rows": fields.Integer(default=settings.BLOCK_ROWS_DEFAULT,
                                     min=settings.BLOCK_ROWS_MIN, max=settings.BLOCK_ROWS_MAX,
                                     description="Rows per block."),
        "max_cpu_ratio": fields.Float(default=settings.MAX_CPU_RATIO_DEFAULT, min=0,
                                      exclusiveMin=True, max=1,
                                      description="Share of the workers' CPUs to use."),
        "batch_size": fields.Integer(min=settings.BATCH_SIZE_MIN, max=settings.BATCH_SIZE_MAX,
                                     description="Blocks per worker task."),
    }


def _check_cluster(params: dict[str, Any], settings: Settings) -> None:
    cluster = load_cluster(settings.cluster_dir, params["cluster_name"])
    cluster.database(params.get("dbname"))
    cluster.select_nodes(params.get("nodes"))


def _submitter(task_type: str, validate: Any, subject: str | None) -> Any:
    def submit(params: dict[str, Any], identity: str, settings: Settings) -> dict[str, str]:
        request = validate({**params, "role": identity})
        _check_cluster(request.to_dict(), settings)
        return _enqueue(task_type, _options(request), identity, settings,
                        cluster_name=request.cluster_name,
                        table_name=getattr(request, subject) if subject else None)
    return submit


def add_check_routes(ns: Namespace, settings: Settings, add_submission: Any) -> None:
    """Register the three endpoints on the ``ace`` namespace."""
    from ace_shared.repsetdiff.request import validate_repset_diff
    from ace_shared.schemadiff.request import validate_schema_diff
    from ace_shared.spockdiff.request import validate_spock_diff

    schema = ns.model("SchemaDiffRequest", {
        **_common(settings), **_table_options(settings),
        "schema_name": fields.String(required=True, description="The schema to compare."),
        "ddl_only": _flag("Compare structure only; false diffs every table's data too", True),
    }, strict=True)
    repset = ns.model("RepsetDiffRequest", {
        **_common(settings), **_table_options(settings),
        "repset_name": fields.String(required=True,
                                     description="The replication set (or publication)."),
    }, strict=True)
    spock = ns.model("SpockDiffRequest", _common(settings), strict=True)
    add_submission("/schema-diff", RequestSchema(schema),
                   _submitter("schema-diff", validate_schema_diff, "schema"),
                   "Compare a schema's objects across the nodes.")
    add_submission("/repset-diff", RequestSchema(repset),
                   _submitter("repset-diff", validate_repset_diff, "repset"),
                   "Diff every table of a replication set.")
    add_submission("/spock-diff", RequestSchema(spock),
                   _submitter("spock-diff", validate_spock_diff, None),
                   "Compare the replication configuration of every pair of nodes.")
