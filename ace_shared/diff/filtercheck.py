"""A table-diff's filter checked against the nodes before the diff is queued.

Its grammar is checked with the rest of the request
(:func:`ace_shared.diff.request.validate_diff_request`); whether the columns it
names exist, have types whose code is built in, and whether PostgreSQL can
plan it can only be told by the nodes. The planner checks that again at the
start of the diff; asking first lets the API refuse a bad filter with a 400
instead of accepting a task that is bound to fail. It runs as the caller's
role, exactly as the diff would, and reads nothing but the catalog.
"""

from __future__ import annotations

from ace_shared.config import Settings
from ace_shared.diff.plan import check_filter_on_nodes, read_common_shape, resolve_targets
from ace_shared.diff.request import DiffRequest
from ace_shared.nodes.sessions import NodeSessions


def check_filter_before_queueing(request: DiffRequest, settings: Settings) -> None:
    """Raise the diff's own :class:`~ace_shared.errors.FilterError` (or table error) now."""
    if not request.table_filter:
        return
    _, targets = resolve_targets(request.cluster_name, request.dbname, request.nodes, settings,
                                 request.role)
    sessions = NodeSessions(targets)
    try:
        shape = read_common_shape(sessions, request.table)
        check_filter_on_nodes(sessions, shape, request.table_filter)
    finally:
        sessions.close()
