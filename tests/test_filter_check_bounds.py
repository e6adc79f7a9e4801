"""The API checks a table-diff's filter on the nodes before queueing, in the request itself:
that check must answer within seconds whatever the filter and whatever the nodes are doing,
so that a caller cannot hold the API's threads (and the nodes) for the minutes a diff's own
statements may take.

PostgreSQL computes a filter's constant calls while planning, beyond any statement timeout.
The calls that could make that slow, or make a node allocate gigabytes (``lpad`` and its
kind on constants alone), are refused by the filter's grammar before any node is asked; a
node that cannot plan the filter in time (here: a table locked by someone else) is left
after the check's own bound.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg2
import pytest
from api_helpers import run_sql

from ace_shared.config import load_settings
from ace_shared.diff.filtercheck import check_filter_before_queueing
from ace_shared.diff.request import validate_diff_request
from ace_shared.errors import AceError, FilterError

CALLER = "fcb_caller"
# each call folded while planning would build and hash 50 MB; nested replace()s grow by
# their factor per level
GROWING = [" AND ".join(["md5(lpad('', 50000000, 'ab')) <> label"] * 30),
           "label <> " + "replace(" * 8 + "'x'" + ", 'x', 'xxxxxxxxxx')" * 8,
           "regexp_replace(rpad('a', 100000000, 'b'), 'b', 'cc', 'g') = label"]


@pytest.fixture
def table(pg_cluster: Any) -> str:
    pg_cluster.serve_role(CALLER)
    for i in range(2):
        run_sql(pg_cluster.node_dsn(i), "DROP TABLE IF EXISTS public.fcb_items",
                "CREATE TABLE public.fcb_items (id int PRIMARY KEY, label text)",
                f"GRANT SELECT ON public.fcb_items TO {CALLER}")
    return "public.fcb_items"


def _request(table: str, table_filter: str) -> Any:
    return validate_diff_request({"cluster_name": "testclus", "table_name": table,
                                  "nodes": "n1,n2", "table_filter": table_filter,
                                  "role": CALLER}, load_settings())


@pytest.mark.parametrize("table_filter", GROWING)
def test_a_filter_whose_constants_would_grow_while_planning_is_refused_before_any_node(
        table: str, table_filter: str) -> None:
    start = time.monotonic()
    with pytest.raises(FilterError, match=r"may not call \w+\(\) on constants alone"):
        _request(table, table_filter)
    assert time.monotonic() - start < 1


def test_the_same_functions_on_a_columns_value_are_accepted(table: str) -> None:
    request = _request(table, "lpad(label, 5, '0') = '00007' OR replace(label, 'a', 'b') = 'x'")
    check_filter_before_queueing(request, load_settings())  # plans on both nodes


def test_a_filter_the_nodes_cannot_plan_in_time_is_left_within_seconds(
        table: str, pg_cluster: Any) -> None:
    request = _request(table, "label = 'x'")
    holder = psycopg2.connect(pg_cluster.node_dsn(1))
    try:
        holder.cursor().execute("LOCK TABLE public.fcb_items IN ACCESS EXCLUSIVE MODE")
        start = time.monotonic()
        with pytest.raises(AceError) as raised:
            check_filter_before_queueing(request, load_settings())
        assert time.monotonic() - start < 12
    finally:
        holder.rollback()
        holder.close()
    message = str(raised.value)
    assert message.count(". ") == 0 and message.endswith("."), message  # one sentence
    assert "did not plan the table filter within 5 s" in message and "lock" in message
