"""``POST /ace/table-repair/plan``: a repair plan's dry run, answered at once.

It resolves the plan over the diff file (reading the file only, never a node)
and answers what each rule decides: per rule the keys it matched and the rows
it would insert, update or delete on each node, then the first keys one by one
with each node's row before and after. The whole resolved plan is saved under
``$ACE_OUTPUT_DIR/plans/``, for ``ace table-repair --apply-plan``. To repair,
send the same plan to ``/ace/table-repair``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask_restx import Model, Namespace, Resource, fields

from ace_api.rest.auth import caller
from ace_api.rest.models import request_model
from ace_api.rest.submissions import preview_repair_plan
from ace_shared.config import Settings
from ace_shared.repair.request import TABLE_REPAIR_PLAN


def _answer(ns: Namespace) -> Model:
    rule = ns.model("PlanRule", {
        "rule": fields.String(description='Its name: override 1 "vip", rule 2, the table\'s '
                                          "default, the plan's default."),
        "action": fields.String(),
        "matched": fields.Integer(description="Keys it decided."),
        "ties": fields.Integer(description="Keys with equally fresh, differing versions."),
        "ties_skipped": fields.Integer(),
        "writes": fields.Raw(description="Per node: rows it would insert, update, delete."),
        "sample_keys": fields.Raw(),
    })
    return ns.model("ResolvedPlan", {
        "table": fields.String(), "cluster_name": fields.String(),
        "diff_file": fields.String(), "nodes": fields.List(fields.String()),
        "key": fields.List(fields.String()),
        "rules": fields.List(fields.Nested(rule)),
        "keys": fields.Raw(description="The first keys: the rule that decided each, each "
                                       "node's row as seen, and the rows to write (null: "
                                       "delete)."),
        "key_count": fields.Integer(), "truncated": fields.Boolean(),
        "resolved_plan": fields.String(description="The whole resolved plan, saved (its path "
                                                   "inside the ACE output directory)."),
    })


def add_plan_preview(ns: Namespace, settings: Settings, decorators: list[Any],
                     errors: Callable[[Any], Any], error_model: Model) -> None:
    """Register the endpoint (``decorators``: the submissions' rate limit)."""
    schema = request_model(ns, TABLE_REPAIR_PLAN, settings)
    answer = _answer(ns)

    class TableRepairPlan(Resource):
        @ns.expect(schema.model)
        @ns.response(200, "The resolved plan.", answer)
        @ns.response(415, "The body is not JSON.", error_model)
        @errors
        def post(self) -> dict[str, Any]:
            return preview_repair_plan(schema.from_json_body(), caller(), settings)

    TableRepairPlan.decorators = decorators
    TableRepairPlan.post.__doc__ = TABLE_REPAIR_PLAN.help
    ns.add_resource(TableRepairPlan, TABLE_REPAIR_PLAN.path)
