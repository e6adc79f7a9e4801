"""A table big enough to be cut into many ranges and narrowed, and the diff budget.

``td_big`` has 60,000 rows on n1, with a handful of scattered differences on the
other nodes, including keys beyond either end of n1's key space. Whatever the
block size, batch size or planning method, every difference is found exactly
once and the file lists rows in key order.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from diff_helpers import (
    NODES,
    diff_in_process,
    execute,
    on_every_node,
    pair_rows,
    reported_keys,
    table_diff,
)

from ace_shared.diff.tuning import DiffTuning

ROWS = 60_000
N2_UPDATES = [17, 9_999, 10_000, 10_001, 33_333, 59_999]
N2_EXTRA = [-5, 0, 70_000]  # below n1's smallest key, and above its largest
N3_DELETES = [1, 45_678, 60_000]
N3_UPDATES = [20_000, 59_999]
N3_EXTRA = [-7, 65_000]  # in the same open-ended ranges as n2's extra keys


def expected_pairs() -> dict[str, set[str]]:
    """Which keys each pair must report, from a model of what each node holds."""
    base = {i: "v" for i in range(1, ROWS + 1)}
    n2 = dict(base) | {i: "n2" for i in N2_UPDATES} | {i: "extra" for i in N2_EXTRA}
    n3 = ({i: v for i, v in base.items() if i not in N3_DELETES}
          | {i: "n3" for i in N3_UPDATES} | {i: "n3x" for i in N3_EXTRA})
    data = {"n1": base, "n2": n2, "n3": n3}
    out = {}
    for a, b in itertools.combinations(NODES, 2):
        keys = {str(k) for k in set(data[a]) | set(data[b]) if data[a].get(k) != data[b].get(k)}
        out[f"{a}/{b}"] = keys
    return out


@pytest.fixture(scope="module")
def big_table(pg_cluster: Any) -> Any:
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS td_big",
        "CREATE TABLE td_big (id int PRIMARY KEY, v text, pad text)",
        f"INSERT INTO td_big SELECT i, 'v', repeat('p', 20) FROM generate_series(1, {ROWS}) i",
    ])
    execute(pg_cluster.node_dsn(1), [
        ("UPDATE td_big SET v = 'n2' WHERE id = ANY(%s)", (N2_UPDATES,)),
        ("INSERT INTO td_big SELECT i, 'extra', repeat('p', 20) FROM unnest(%s::int[]) i",
         (N2_EXTRA,)),
    ])
    execute(pg_cluster.node_dsn(2), [
        ("DELETE FROM td_big WHERE id = ANY(%s)", (N3_DELETES,)),
        ("UPDATE td_big SET v = 'n3' WHERE id = ANY(%s)", (N3_UPDATES,)),
        ("INSERT INTO td_big SELECT i, 'n3x', repeat('p', 20) FROM unnest(%s::int[]) i",
         (N3_EXTRA,)),
    ])
    return pg_cluster


def assert_complete_and_sorted(diff: dict[str, Any]) -> None:
    assert reported_keys(diff) == expected_pairs()
    for pair, sides in diff["diffs"].items():
        for node, rows in sides.items():
            ids = [int(r["id"]) for r in rows]
            assert ids == sorted(ids), f"{pair} {node} rows are not in key order"
            assert len(ids) == len(set(ids)), f"{pair} {node} lists a row twice"
    summary = diff["summary"]
    # every key any node holds, once: no node holds them all
    assert summary["total_rows_checked"] == ROWS + len(N2_EXTRA) + len(N3_EXTRA)
    assert summary["diff_rows"] == len(set(N2_UPDATES + N2_EXTRA + N3_DELETES + N3_UPDATES
                                           + N3_EXTRA))
    assert summary["diff_partial"] is False


def test_scattered_differences_are_all_found_through_the_cli(big_table: Any) -> None:
    run = table_diff("public.td_big", "--block-rows", "1000", fresh_process=True)
    assert run.code == 1, run.stderr
    diff = run.diff()
    assert_complete_and_sorted(diff)
    assert diff["summary"]["ranges_total"] >= ROWS // 1000
    assert [r["v"] for r in pair_rows(diff, "n1/n2", "n2")][:2] == ["extra", "extra"]
    assert pair_rows(diff, "n1/n2", "n1")[0] == {"id": "17", "v": "v", "pad": "p" * 20}


@pytest.mark.parametrize(("block_rows", "batch_size"), [
    (10_000, 1),    # ranges larger than a leaf: narrowed in buckets
    (100_000, 1),   # one range for the whole table: narrowed twice
    (1_000, 7),     # several ranges per batch
])
def test_block_and_batch_sizes_do_not_change_the_result(
        big_table: Any, block_rows: int, batch_size: int) -> None:
    _, diff = diff_in_process("public.td_big", block_rows=block_rows, batch_size=batch_size)
    assert_complete_and_sorted(diff)


def test_sampled_planning_of_an_analysed_table_finds_the_same(big_table: Any) -> None:
    """Big tables are planned from a page sample; the ranges must still cover every key."""
    on_every_node(big_table, ["ANALYZE td_big"])
    _, diff = diff_in_process("public.td_big", block_rows=1000,
                              tuning=DiffTuning(exact_plan_rows=10_000))
    assert_complete_and_sorted(diff)
    assert diff["summary"]["ranges_total"] > 10


def test_filter_on_a_big_table(big_table: Any) -> None:
    _, diff = diff_in_process("public.td_big", block_rows=1000,
                              table_filter="id BETWEEN 10000 AND 50000")
    assert reported_keys(diff) == {
        "n1/n2": {"10000", "10001", "33333"},
        "n1/n3": {"20000", "45678"},
        "n2/n3": {"10000", "10001", "33333", "20000", "45678"},
    }
    assert diff["summary"]["total_rows_checked"] == 40_001


# ----- MAX_ALLOWED_DIFFS --------------------------------------------------------------

@pytest.fixture(scope="module")
def many_diffs(pg_cluster: Any) -> Any:
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS td_budget",
        "CREATE TABLE td_budget (id int PRIMARY KEY, v int)",
        "INSERT INTO td_budget SELECT i, 0 FROM generate_series(1, 30000) i",
    ])
    execute(pg_cluster.node_dsn(1), ["UPDATE td_budget SET v = 1 WHERE id % 150 = 0"])
    return pg_cluster


def test_diff_stops_early_at_max_allowed_diffs(many_diffs: Any) -> None:
    run = table_diff("public.td_budget", "--block-rows", "1000", "--max-cpu-ratio", "0.1",
                     "--nodes", "n1,n2", env={"ACE_MAX_ALLOWED_DIFFS": "5"})
    assert run.code == 1, run.stderr
    assert "PARTIAL" in run.stdout
    summary = run.diff()["summary"]
    assert summary["diff_partial"] is True
    assert "MAX_ALLOWED_DIFFS" in summary["partial_reason"]
    assert summary["max_allowed_diffs"] == 5
    assert summary["ranges_checked"] < summary["ranges_total"]
    assert 5 <= summary["diff_rows"] < 200
    rows = pair_rows(run.diff(), "n1/n2", "n2")
    assert len(rows) == summary["diff_rows"]
    assert all(int(r["id"]) % 150 == 0 and r["v"] == "1" for r in rows)


def test_without_the_limit_every_difference_is_listed(many_diffs: Any) -> None:
    run = table_diff("public.td_budget", "--block-rows", "1000", "--nodes", "n1,n2")
    assert run.code == 1
    assert "PARTIAL" not in run.stdout
    summary = run.diff()["summary"]
    assert summary["diff_rows"] == 200
    assert summary["diff_partial"] is False
    assert "partial_reason" not in summary
    assert summary["ranges_checked"] == summary["ranges_total"]
