"""Tables whose shape differs between nodes in ways that must, or must not, matter.

Key ranges are cut in key order. When a key column sorts differently on some
node (an enum whose labels were added in another order), each row must still
be compared once and reported once. Column order, on the other hand, is not
part of a table's identity: a column added later on one node is fine.
"""

from __future__ import annotations

from typing import Any

import pytest
from diff_helpers import ENUM_TABLE_ROWS as ROWS
from diff_helpers import (
    LABELS,
    assert_one_error_line,
    enum_keyed_table,
    execute,
    on_every_node,
    output_files,
    pair_rows,
    reported_keys,
    table_diff,
)


@pytest.mark.parametrize(("name", "orders"), [
    ("td_enumkey_rev", [LABELS, LABELS[::-1], LABELS[::-1]]),
    ("td_enumkey_swap", [LABELS, ["b", "a", *LABELS[2:]], LABELS]),
    ("td_enumkey_same", [LABELS, LABELS, LABELS]),
])
def test_enum_keys_that_sort_differently_are_reported_once(
        pg_cluster: Any, name: str, orders: list[list[str]]) -> None:
    enum_keyed_table(pg_cluster, name, orders)
    run = table_diff(f"public.{name}", "--block-rows", "1000")
    assert run.code == 1, run.stderr
    diff = run.diff()
    expected = {("f", "5"), ("b", "3001"), ("f", "5999")}
    for pair in ("n1/n2", "n2/n3"):
        for node in pair.split("/"):
            keys = [(r["k"], r["i"]) for r in pair_rows(diff, pair, node)]
            assert sorted(keys) == sorted(expected), f"{pair} {node}: {keys}"
    assert "n1/n3" not in diff["diffs"]
    # rows come in n1's key order: label order first, then i
    assert [(r["k"], r["i"]) for r in pair_rows(diff, "n1/n2", "n1")] == [
        ("b", "3001"), ("f", "5"), ("f", "5999")]
    summary = diff["summary"]
    assert summary["diff_rows"] == 3
    assert summary["total_rows_checked"] == ROWS, "every row counted once"


def test_agreeing_nodes_keep_all_their_ranges(pg_cluster: Any) -> None:
    enum_keyed_table(pg_cluster, "td_enumkey_same", [LABELS, LABELS, LABELS])
    run = table_diff("public.td_enumkey_same", "--block-rows", "1000")
    assert run.diff()["summary"]["ranges_total"] == ROWS // 1000 + 1


def test_columns_in_another_order_on_one_node_do_not_matter(pg_cluster: Any) -> None:
    ddl_n1 = "CREATE TABLE td_colorder (a text, id int, b int, PRIMARY KEY (b, id))"
    ddl_n3 = "CREATE TABLE td_colorder (b int, id int, a text, PRIMARY KEY (b, id))"
    fill = ("INSERT INTO td_colorder (id, a, b) SELECT i, 'x' || i, i % 7 "
            "FROM generate_series(1, 2500) i")
    for i, ddl in enumerate([ddl_n1, ddl_n1, ddl_n3]):
        execute(pg_cluster.node_dsn(i), ["DROP TABLE IF EXISTS td_colorder", ddl, fill])
    assert table_diff("public.td_colorder", "--block-rows", "1000").code == 0
    execute(pg_cluster.node_dsn(2), ["UPDATE td_colorder SET a = 'z' WHERE id IN (3, 2000)"])
    run = table_diff("public.td_colorder", "--block-rows", "1000")
    assert run.code == 1
    diff = run.diff()
    assert reported_keys(diff) == {"n1/n3": {"3", "2000"}, "n2/n3": {"3", "2000"}}
    assert diff["summary"]["primary_key"] == ["b", "id"]
    # rows in key order (b, id), each with n1's column order
    rows = pair_rows(diff, "n1/n3", "n3")
    assert [(r["b"], r["id"]) for r in rows] == [("3", "3"), ("5", "2000")]
    assert list(rows[0]) == ["a", "id", "b"]


def test_key_collation_differing_between_nodes_is_refused(pg_cluster: Any) -> None:
    for i, coll in enumerate(['"C"', '"C"', '"POSIX"']):
        execute(pg_cluster.node_dsn(i), [
            "DROP TABLE IF EXISTS td_keycoll",
            f"CREATE TABLE td_keycoll (k text COLLATE {coll} PRIMARY KEY)",
        ])
    before = output_files()
    assert_one_error_line(table_diff("public.td_keycoll"), "collation", "n3", "k")
    assert output_files() == before


@pytest.mark.parametrize(("key_type", "n1_key", "n2_key"), [
    ("numeric", "1.0", "1.00"),
    ("interval", "1 day", "24:00:00"),
    ("float8", "-0", "0"),
])
def test_equal_keys_spelt_differently_are_one_differing_row(
        pg_cluster: Any, key_type: str, n1_key: str, n2_key: str) -> None:
    """The same key printed two ways is one row that differs, not two rows each missing."""
    for i in range(3):
        execute(pg_cluster.node_dsn(i), [
            "DROP TABLE IF EXISTS td_eqkey",
            f"CREATE TABLE td_eqkey (k {key_type} PRIMARY KEY, v text)",
        ])
    execute(pg_cluster.node_dsn(0), [("INSERT INTO td_eqkey VALUES (%s, 'v')", (n1_key,))])
    execute(pg_cluster.node_dsn(1), [("INSERT INTO td_eqkey VALUES (%s, 'v')", (n2_key,))])
    execute(pg_cluster.node_dsn(2), [("INSERT INTO td_eqkey VALUES (%s, 'v')", (n1_key,))])
    run = table_diff("public.td_eqkey", "--nodes", "n1,n2,n3")
    assert run.code == 1, run.stderr
    diff = run.diff()
    assert pair_rows(diff, "n1/n2", "n1") == [{"k": n1_key, "v": "v"}]
    assert pair_rows(diff, "n1/n2", "n2") == [{"k": n2_key, "v": "v"}]
    assert "n1/n3" not in diff["diffs"]
    assert diff["summary"]["diff_rows"] == 1


def test_a_table_keyed_by_an_array_is_diffed_range_by_range(pg_cluster):  # type: ignore[no-untyped-def]
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS td_arraykey",
        "CREATE TABLE td_arraykey (k int[] PRIMARY KEY, v text)",
        "INSERT INTO td_arraykey SELECT ARRAY[g / 100, g % 100], 'v' || g "
        "FROM generate_series(1, 5000) g",
    ])
    execute(pg_cluster.node_dsn(1),
            ["UPDATE td_arraykey SET v = 'changed' WHERE k = ARRAY[30, 7]"])
    result = table_diff("public.td_arraykey", "--block-rows=1000")
    assert result.code == 1, result.stdout + result.stderr
    doc = result.diff()
    assert doc["summary"]["diff_rows_by_pair"] == {"n1/n2": 1, "n2/n3": 1}
    assert pair_rows(doc, "n1/n2", "n2") == [{"k": "{30,7}", "v": "changed"}]
