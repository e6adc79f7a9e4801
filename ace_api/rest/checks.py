"""Queueing the cluster checks: ``/ace/schema-diff``, ``/ace/repset-diff``, ``/ace/spock-diff``.

Each is a submission like table-diff's (its model built from the command's
declaration; GET with query parameters, POST with a JSON body, answering
``{task_id, submitted_at}``): the core validator checks the options and the
cluster before anything is queued, and task-status gives the result.
``CHECK_SUBMISSIONS`` is listed with the other submissions in
``ace_api/rest/resources.py``.
"""

from __future__ import annotations

from typing import Any

from ace_api.rest.submissions import _enqueue, _options
from ace_shared.config import Settings
from ace_shared.nodes.cluster import load_cluster
from ace_shared.repsetdiff.request import REPSET_DIFF, validate_repset_diff
from ace_shared.schemadiff.request import SCHEMA_DIFF, validate_schema_diff
from ace_shared.spockdiff.request import SPOCK_DIFF, validate_spock_diff


def _submitter(task_type: str, validate: Any, subject: str | None) -> Any:
    def submit(params: dict[str, Any], identity: str, settings: Settings) -> dict[str, str]:
        request = validate({**params, "role": identity}, settings)
        cluster = load_cluster(settings.cluster_dir, request.cluster_name)
        cluster.database(request.dbname)
        cluster.select_nodes(request.nodes)
        return _enqueue(task_type, _options(request), identity, settings,
                        cluster_name=request.cluster_name,
                        table_name=getattr(request, subject) if subject else None)
    return submit


CHECK_SUBMISSIONS = (
    (SCHEMA_DIFF, _submitter("schema-diff", validate_schema_diff, "schema")),
    (REPSET_DIFF, _submitter("repset-diff", validate_repset_diff, "repset")),
    (SPOCK_DIFF, _submitter("spock-diff", validate_spock_diff, None)),
)
