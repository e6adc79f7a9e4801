"""Every query that reads ranges or keys of a table reads only those rows, whatever the
planner estimates (``queries.PINNED_PLAN``).

The tables here are built so that the planner leans to sequential scans: wide
rows, composite and text keys, and a session whose ``random_page_cost`` says
random reads are dear (as on spinning disks). Each query ACE sends for a range,
for a batch of keys or for a rerun's staged keys is explained in ACE's own
session settings; a ``Seq Scan`` of the table fails the test. The same queries
without the pinned plan must choose such a scan somewhere, or these tables
would prove nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from api_helpers import run_sql
from psycopg2 import sql

from ace_shared.diff import queries
from ace_shared.diff.ranges import KeyRange
from ace_shared.diff.tuning import DiffTuning
from ace_shared.mtree import compare
from ace_shared.nodes.ident import TableName
from ace_shared.nodes.shape import TableShape, read_shape
from ace_shared.rerun import hostdb

ROWS = 60_000
TABLES = {
    # name: (key columns DDL, key expression per g, primary key)
    "plan_wide_int": ("id bigint", "g", "id"),
    "plan_wide_pair": ("region int, code text", "g % 7, lpad(g::text, 8, '0')", "region, code"),
    "plan_wide_text": ("name text", "md5(g::text)", "name"),
}


@pytest.fixture(scope="module")
def planned(pg_cluster: Any) -> Iterator[dict[str, TableShape]]:
    dsn = pg_cluster.node_dsn(0)
    shapes: dict[str, TableShape] = {}
    for name, (key_ddl, key_expr, pk) in TABLES.items():
        key_names = [c.split()[0] for c in key_ddl.split(", ")]
        run_sql(dsn, f"DROP TABLE IF EXISTS {name}",
                f"CREATE TABLE {name} ({key_ddl}, note text, qty numeric, at timestamptz, "
                f"tags text[], payload jsonb, pad text, PRIMARY KEY ({pk}))",
                f"INSERT INTO {name} ({', '.join(key_names)}, note, qty, at, tags, payload, pad) "
                f"SELECT {key_expr}, 'n' || g, g / 7.0, now(), ARRAY['a', 'b'], "
                f"jsonb_build_object('g', g, 'blob', repeat('x', 200)), repeat('p', 600) "
                f"FROM generate_series(1, {ROWS}) g",
                f"ANALYZE {name}")
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            for name in TABLES:
                shapes[name] = read_shape(cur, TableName("public", name), "n1")
        conn.rollback()
        yield shapes
    finally:
        conn.close()


def _keys(dsn: str, shape: TableShape, every: int) -> list[tuple[str, ...]]:
    """Every ``every``-th key of the table, as text, in key order."""
    cols = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in shape.key)
    order = sql.SQL(", ").join(sql.Identifier(k) for k in shape.key)
    query = sql.SQL("SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS rn "
                    "FROM public.{}) s WHERE rn %% %s = 0 ORDER BY rn").format(
        cols, order, order, sql.Identifier(shape.table.table))
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(query, (every,))
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def _seq_scans(plan: Any, table: str) -> list[str]:
    found = []
    if isinstance(plan, dict):
        if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") == table:
            found.append(table)
        for value in plan.values():
            found += _seq_scans(value, table)
    elif isinstance(plan, list):
        for value in plan:
            found += _seq_scans(value, table)
    return found


def _explain(dsn: str, query: Any, params: list[object], pinned: bool,
             staged: list[tuple[Any, ...]] | None = None, shape: TableShape | None = None
             ) -> Any:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET search_path = pg_catalog, pg_temp")
            cur.execute("SET LOCAL random_page_cost = 40")  # the planner leans to seq scans
            if staged is not None and shape is not None:
                _stage(cur, shape, staged)
            if pinned:
                cur.execute(queries.PINNED_PLAN)
            text = cur.mogrify(query, params).decode()
            if text.startswith("COPY ("):
                text = text[len("COPY ("):text.rindex(") TO STDOUT")]
            cur.execute("EXPLAIN (FORMAT JSON) " + text)
            plan = cur.fetchone()[0]
        conn.rollback()
        return plan if not isinstance(plan, str) else json.loads(plan)
    finally:
        conn.close()


def _stage(cur: Any, shape: TableShape, keys: list[tuple[Any, ...]]) -> None:
    """The rerun's staged keys, as ``hostdb`` stages them, analysed as it does."""
    cur.execute(hostdb._create_keys(shape))
    cols = sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(f"k{i}"))
                            for i in range(len(shape.key)))
    for i, key in enumerate(keys):
        cur.execute(sql.SQL("INSERT INTO {} (ord{}) VALUES (%s{})").format(
            sql.Identifier(hostdb.KEYS_TABLE), cols,
            sql.SQL("").join(sql.SQL(", %s") for _ in key)), (i, *key))
    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(hostdb.KEYS_TABLE)))


def _queries(shape: TableShape, keys: list[tuple[Any, ...]]) -> dict[str, queries.Query]:
    """Every range and key query a diff, a rerun and an mtree re-check send, over small
    and large spans (the keys are every 50th, so a leaf holds 50 rows)."""
    few, many = keys[10:12], keys[5:len(keys) - 5]
    narrow = KeyRange(0, keys[10], keys[11])
    wide = KeyRange(0, keys[5], keys[-5])
    lower_only, upper_only = KeyRange(0, keys[-3], None), KeyRange(0, None, keys[3])
    inner = tuple(keys[12:14])
    leaves = [KeyRange(i, keys[i], keys[i + 1]) for i in range(len(keys) - 1)]
    return {
        "hash_range narrow": queries.hash_range(shape, narrow, None),
        "hash_range wide": queries.hash_range(shape, wide, None),
        "hash_range first": queries.hash_range(shape, upper_only, None),
        "hash_range last": queries.hash_range(shape, lower_only, None),
        "hash_buckets": queries.hash_buckets(shape, KeyRange(0, keys[10], keys[15]),
                                             list(inner), None),
        "inner_boundaries": queries.inner_boundaries(shape, wide, 100, None),
        "leaf_hashes": queries.leaf_hashes(shape, narrow, None),
        "stream_hashes": queries.stream_hashes(shape, narrow, None),
        "fetch few keys": queries.fetch_rows_in_order(shape, [tuple(k) for k in few], None),
        "fetch many keys": queries.fetch_rows_in_order(shape, [tuple(k) for k in many], None),
        # an mtree re-check: bucket sums of differing leaves, then their rows
        "mtree leaf_buckets, 1 leaf": compare.leaf_buckets(shape, leaves[5:6]),
        "mtree leaf_buckets, 100 leaves": compare.leaf_buckets(shape, leaves[100:200]),
        "mtree leaf_buckets, every leaf": compare.leaf_buckets(shape, leaves),
        "mtree leaf_rows, 100 leaves": compare.leaf_rows(shape, leaves[100:200], [3] * 100),
    }


@pytest.mark.parametrize("table", list(TABLES))
def test_range_and_key_queries_never_read_the_whole_table(pg_cluster: Any,
                                                          planned: dict[str, TableShape],
                                                          table: str) -> None:
    dsn = pg_cluster.node_dsn(0)
    shape = planned[table]
    keys = _keys(dsn, shape, every=50)
    flipped = []
    for name, (query, params) in _queries(shape, keys).items():
        assert not _seq_scans(_explain(dsn, query, params, pinned=True), table), (
            f"{name} reads the whole of {table} with the pinned plan")
        if _seq_scans(_explain(dsn, query, params, pinned=False), table):
            flipped.append(name)
    staged = keys[::2]
    rerun = hostdb._fetch_rows(shape)
    assert not _seq_scans(_explain(dsn, rerun, [], True, staged, shape), table), (
        f"the rerun's key lookup reads the whole of {table} with the pinned plan")
    if _seq_scans(_explain(dsn, rerun, [], False, staged, shape), table):
        flipped.append("rerun lookup")
    # the table and session really favour scanning everything: without the pin, some did
    assert flipped, f"no query chose a sequential scan of {table} even unpinned"


def _rows_compared(plan: Any) -> int:
    """Rows a plan's joins read and then threw away (``Rows Removed by Join Filter``)."""
    if isinstance(plan, dict):
        return int(plan.get("Rows Removed by Join Filter", 0)) + sum(
            _rows_compared(v) for v in plan.values())
    if isinstance(plan, list):
        return sum(_rows_compared(v) for v in plan)
    return 0


@pytest.mark.parametrize("table", list(TABLES))
def test_a_batch_of_keys_is_fetched_without_comparing_every_key_with_every_row(
        pg_cluster: Any, planned: dict[str, TableShape], table: str) -> None:
    """A full batch of differing keys costs an index probe per key, not a key by row join:
    under the pinned plan (no hash or merge join) matching the fetched rows back to
    their keys compared all of them with all of them, four million comparisons and
    most of a second per batch of two thousand, the bulk of diffing 10,000 rows."""
    dsn = pg_cluster.node_dsn(0)
    shape = planned[table]
    keys = _keys(dsn, shape, every=10)[:DiffTuning().fetch_keys]
    assert len(keys) == DiffTuning().fetch_keys
    query, params = queries.fetch_rows_in_order(shape, [tuple(k) for k in keys], None)
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET search_path = pg_catalog, pg_temp")
            cur.execute(queries.PINNED_PLAN)
            cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + cur.mogrify(query, params).decode())
            plan = cur.fetchone()[0]
        conn.rollback()
    finally:
        conn.close()
    plan = plan if not isinstance(plan, str) else json.loads(plan)
    compared = _rows_compared(plan)
    assert compared <= len(keys), (
        f"fetching {len(keys)} keys of {table} threw away {compared} joined rows")
