"""The API checks a table-diff's filter on the nodes before queueing, in the request itself:
that check must answer within seconds whatever the filter, so that a caller cannot hold the
API's threads (and the nodes) for the minutes a diff's own statements may take."""

from __future__ import annotations

import time
from typing import Any

import pytest
from api_helpers import run_sql

from ace_shared.config import load_settings
from ace_shared.diff.filtercheck import check_filter_before_queueing
from ace_shared.diff.request import validate_diff_request
from ace_shared.errors import FilterError

CALLER = "fcb_caller"
# PostgreSQL folds constant calls while planning: EXPLAIN alone builds and hashes these
SLOW = " AND ".join(["md5(lpad('', 50000000, 'ab')) <> label"] * 30)


@pytest.fixture
def table(pg_cluster: Any) -> str:
    pg_cluster.serve_role(CALLER)
    for i in range(2):
        run_sql(pg_cluster.node_dsn(i), "DROP TABLE IF EXISTS public.fcb_items",
                "CREATE TABLE public.fcb_items (id int PRIMARY KEY, label text)",
                f"GRANT SELECT ON public.fcb_items TO {CALLER}")
    return "public.fcb_items"


def test_a_filter_slow_to_plan_is_refused_within_seconds(table: str) -> None:
    settings = load_settings()
    request = validate_diff_request({"cluster_name": "testclus", "table_name": table,
                                     "nodes": "n1,n2", "table_filter": SLOW, "role": CALLER},
                                    settings)
    start = time.monotonic()
    with pytest.raises(FilterError, match="takes more than 5 s to plan on the nodes; simplify it"):
        check_filter_before_queueing(request, settings)
    assert time.monotonic() - start < 12
