"""A value is "the same" on two nodes exactly when PostgreSQL prints it the same way.

The nodes run with different server time zones and had their enum labels added
in different orders, so anything that compares binary forms, OIDs or
server-local renderings shows up here as a false difference (or a missed one).
Each row of ``td_types`` is one case: the value written on n1, n2 and n3, and
which of them must come out equal. The diff runs once, through the real CLI.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from diff_helpers import NODES, execute, query, table_diff
from type_cases import CASES, ENUM_DDL, TABLE_DDL, Case


@pytest.fixture(scope="module")
def types_diff(pg_cluster: Any) -> dict[str, Any]:
    """Build ``td_types`` on every node (one row per case) and diff it once."""
    for i in range(len(NODES)):
        dsn = pg_cluster.node_dsn(i)
        execute(dsn, ["DROP TABLE IF EXISTS td_types", "DROP TYPE IF EXISTS td_mood"])
        for stmt in ENUM_DDL[i]:
            execute(dsn, [stmt])
        inserts = [
            f"INSERT INTO td_types (id, {case.column}) VALUES ({n}, {case.values[i]})"  # noqa: S608
            for n, case in enumerate(CASES, start=1)
        ]
        execute(dsn, [TABLE_DDL, *inserts])
    run = table_diff("public.td_types", "--block-rows", "1000", fresh_process=True)
    assert run.code == 1, (run.stdout, run.stderr)
    return run.diff()


def _reported(diff: dict[str, Any], pair: str, case_id: int) -> bool:
    sides = diff["diffs"].get(pair, {})
    return any(row["id"] == str(case_id) for rows in sides.values() for row in rows)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_value_is_reported_exactly_where_it_prints_differently(
        types_diff: dict[str, Any], case: Case) -> None:
    case_id = CASES.index(case) + 1
    for a, b in itertools.combinations(NODES, 2):
        assert _reported(types_diff, f"{a}/{b}", case_id) == case.differs(a, b), (
            f"{case.name}: {a}/{b} expected {'a' if case.differs(a, b) else 'no'} difference")


def test_summary_counts_match_the_cases(types_diff: dict[str, Any]) -> None:
    summary = types_diff["summary"]
    differing = [c for c in CASES if len(set(c.classes)) > 1]
    assert summary["mismatch"] is True
    assert summary["diff_rows"] == len(differing)
    assert summary["total_rows_checked"] == len(CASES)
    for a, b in itertools.combinations(NODES, 2):
        expected = sum(1 for c in CASES if c.differs(a, b))
        assert summary["diff_rows_by_pair"][f"{a}/{b}"] == expected
    assert [c["name"] for c in summary["columns"]][:3] == ["id", "t", "c"]
    assert summary["primary_key"] == ["id"]
    assert summary["diff_partial"] is False


def test_rows_carry_every_column_as_lossless_text(pg_cluster: Any,
                                                   types_diff: dict[str, Any]) -> None:
    """Each value in the file is exactly what ``col::text`` gives on that node (UTC, ISO)."""
    columns = [c["name"] for c in types_diff["summary"]["columns"]]
    select = ", ".join(f"{c}::text" for c in columns)
    truth: dict[str, dict[str, dict[str, Any]]] = {}
    for i, node in enumerate(NODES):
        rows = query(pg_cluster.node_dsn(i), f"SELECT {select} FROM td_types",  # noqa: S608
                     pinned=True)
        truth[node] = {r[0]: dict(zip(columns, r, strict=True)) for r in rows}
    checked = 0
    for pair, sides in types_diff["diffs"].items():
        for node, rows in sides.items():
            for row in rows:
                values = {k: v for k, v in row.items() if not k.startswith("_ace_")}
                assert values == truth[node][row["id"]], (pair, node, row["id"])
                checked += 1
    assert checked > 20


def test_rows_are_in_key_order_and_missing_nowhere(types_diff: dict[str, Any]) -> None:
    for sides in types_diff["diffs"].values():
        for rows in sides.values():
            ids = [int(r["id"]) for r in rows]
            assert ids == sorted(ids)
        # every row here exists on both nodes, so both sides list the same keys
        left, right = sides.values()
        assert [r["id"] for r in left] == [r["id"] for r in right]


def test_timestamps_print_in_utc_whatever_the_server_zone(types_diff: dict[str, Any]) -> None:
    case_id = str(next(i for i, c in enumerate(CASES, 1)
                       if c.name == "timestamptz_one_microsecond_apart"))
    rows = {node: r for node, rs in types_diff["diffs"]["n2/n3"].items() for r in rs
            if r["id"] == case_id}
    assert rows["n3"]["ts"] == "2024-01-01 12:00:00+00"
    assert rows["n2"]["ts"] == "2024-01-01 12:00:00.000001+00"
