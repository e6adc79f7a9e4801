"""Queueing ``ace mtree`` actions: ``/ace/mtree/init``, ``build``, ``update``, ``table-diff``,
``teardown`` (GET or POST, like every submission), each answering ``{task_id, submitted_at}``.

The caller's role does the work, as for any submission: building a tree creates a
trigger on the table, so the caller must own it.
"""

from __future__ import annotations

from typing import Any

from ace_api.rest.submissions import _enqueue
from ace_shared.config import Settings
from ace_shared.mtree.request import MTREE_COMMANDS, validate_mtree_request
from ace_shared.nodes.cluster import load_cluster


def _submitter(action: str) -> Any:
    def submit(params: dict[str, Any], identity: str, settings: Settings) -> dict[str, str]:
        request = validate_mtree_request({**params, "action": action, "role": identity},
                                         settings)
        cluster = load_cluster(settings.cluster_dir, request.cluster_name)
        cluster.database(request.dbname)
        cluster.select_nodes(request.nodes)
        return _enqueue("mtree", request.to_dict(), identity, settings,
                        cluster_name=request.cluster_name,
                        table_name=request.table.display if request.table else None)
    return submit


MTREE_SUBMISSIONS = tuple((command, _submitter(action))
                          for action, command in MTREE_COMMANDS.items())
