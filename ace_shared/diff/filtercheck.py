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

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace

import psycopg2

from ace_shared.config import Settings
from ace_shared.diff.plan import check_filter_on_nodes, read_common_shape, resolve_targets
from ace_shared.diff.request import DiffRequest
from ace_shared.errors import AceError, FilterError
from ace_shared.nodes.sessions import NodeSessions

# The check runs inside an API request: its statements get seconds, not the minutes a
# diff's own may take. PostgreSQL folds a filter's constant calls while planning, beyond
# the statement timeout; the grammar refuses the calls that could make that slow
# (filtergrammar.GROWING), and this bound is the second line.
CHECK_TIMEOUT_MS = 5000


def check_filter_before_queueing(request: DiffRequest, settings: Settings) -> None:
    """Raise the diff's own :class:`~ace_shared.errors.FilterError` (or table error) now,
    within about :data:`CHECK_TIMEOUT_MS` twice over whatever the filter."""
    if not request.table_filter:
        return
    _, targets = resolve_targets(request.cluster_name, request.dbname, request.nodes, settings,
                                 request.role)
    timeout = min(CHECK_TIMEOUT_MS, *(t.statement_timeout_ms or CHECK_TIMEOUT_MS
                                      for t in targets))
    targets = tuple(replace(t, statement_timeout_ms=timeout,
                            lock_timeout_ms=min(timeout, t.lock_timeout_ms or timeout))
                    for t in targets)
    sessions = NodeSessions(targets)
    # PostgreSQL does not look at its statement timeout while it folds constants, so the
    # request stops waiting by itself; the sessions close once their statements end.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ace-filter-check")
    checked = pool.submit(_check, sessions, request)
    pool.shutdown(wait=False)
    try:
        checked.result(timeout=2 * timeout / 1000)
    except FutureTimeout:
        sessions.cancel()
        raise _too_slow(timeout) from None
    except AceError as exc:
        if isinstance(exc.__cause__, psycopg2.errors.QueryCanceled):
            raise _too_slow(timeout) from exc
        raise


def _check(sessions: NodeSessions, request: DiffRequest) -> None:
    try:
        assert request.table_filter
        shape = read_common_shape(sessions, request.table)
        check_filter_on_nodes(sessions, shape, request.table_filter)
    finally:
        sessions.close()


def _too_slow(timeout_ms: int) -> FilterError:
    return FilterError(f"The nodes did not plan the table filter within {timeout_ms / 1000:g} s "
                       "(another session may hold a lock on the table, or the filter's constant "
                       "parts take long to compute); try again later, or simplify the filter.")
