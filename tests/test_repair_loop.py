"""The whole loop, diff -> rerun -> repair -> rerun, on every type family table-diff handles.

After a repair the repaired nodes must hold the source's rows byte for byte
(``t::text`` of every row under pinned settings), although the nodes run in
three server time zones and had their enum labels created in different
orders. A rerun before the repair must find exactly what the diff found, in
both behaviours; a rerun after it must find nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from repair_helpers import NODES, Nodes, diff_sections, diff_table, repair, rerun

ENUM_DDL = {
    "n1": ["CREATE TYPE rp_mood AS ENUM ('sad', 'ok', 'happy')"],
    "n2": ["CREATE TYPE rp_mood AS ENUM ('happy')", "ALTER TYPE rp_mood ADD VALUE 'ok'",
           "ALTER TYPE rp_mood ADD VALUE 'sad' BEFORE 'happy'"],
    "n3": ["CREATE TYPE rp_mood AS ENUM ('happy', 'sad')",
           "ALTER TYPE rp_mood ADD VALUE 'ok' AFTER 'happy'"],
}

TYPES_DDL = """CREATE TABLE rp_types (
    id int PRIMARY KEY, num numeric, f float8, ts timestamptz, iv interval, b bytea, t text,
    ta text[], ia int[], j json, jb jsonb, mood rp_mood, u uuid, c char(4), vc varchar(10))"""

# Each column cycles through its awkward values; row i takes value i % len.
EDGE: dict[str, list[str]] = {
    "num": ["1.50", "0.000", "'NaN'", "123456789012345678901234567890.123456789", "-0.10",
            "NULL"],
    "f": ["'-0'", "'1e-300'", "'NaN'", "'Infinity'", "'-Infinity'", "0.1::float8 + 0.2::float8",
          "NULL", "1.7976931348623157e308"],
    "ts": ["'2024-03-10 02:30:00+00'", "'infinity'", "'1999-12-31 23:59:59.999999+05:30'",
           "'2024-07-01 08:00:00 America/New_York'", "NULL", "'-infinity'"],
    "iv": ["'1 mon 2 days 03:04:05.678'", "'-1 days +02:00'", "'P1Y2M'", "'0'", "NULL"],
    "b": ["'\\x00ff10'::bytea", "'\\x'::bytea", "'\\x00'::bytea", "NULL", "'\\x5c4e'::bytea"],
    "t": [r"E'quote '' \"dq\" back\\slash\ttab\nnewline\r cr ünïcødé 🎉'", "''", "NULL",
          "'\\N'", "'plain'", "E'\\\\.'"],
    "ta": ["'{NULL,\"a,b\",\"quo\\\"te\",\"\",NULL}'", "ARRAY['NULL', NULL]", "'{}'", "NULL",
           "ARRAY[E'tab\\there', 'new\nline']"],
    "ia": ["'{{1,2},{3,NULL}}'", "'[0:1]={1,2}'", "NULL", "'{}'"],
    "j": ["'{\"b\": 1,   \"a\": [1, 2.50]}'", "'[ ]'", "'\"x\"'", "NULL", "'1.10'"],
    "jb": ["'{\"x\": 1.50, \"y\": null}'", "'[]'", "NULL", "'\"\\\\u0000-free\"'"],
    "mood": ["'sad'", "'happy'", "NULL", "'ok'"],
    "u": ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "NULL", "'00000000-0000-0000-0000-000000000000'"],
    "c": ["'ab'", "''", "NULL", "'abcd'"],
    "vc": ["'x'", "''", "NULL"],
}
COLUMNS = list(EDGE)
ROWS = 36


def _insert(row_id: int, shift: int = 0) -> str:
    values = ", ".join(EDGE[c][(row_id + shift) % len(EDGE[c])] for c in COLUMNS)
    return f"INSERT INTO rp_types (id, {', '.join(COLUMNS)}) VALUES ({row_id}, {values})"  # noqa: S608


def _copy_from(target: int, source: int) -> str:
    cols = ", ".join(COLUMNS)
    return (f"UPDATE rp_types SET ({cols}) = (SELECT {cols} FROM rp_types WHERE id = {source}) "  # noqa: S608
            f"WHERE id = {target}")


# What happens on each node after the common rows are in place.
DIVERGE = {
    "n1": [],
    "n2": ["DELETE FROM rp_types WHERE id BETWEEN 1 AND 4",
           *[_copy_from(i, i + 7) for i in range(5, 13)],
           "UPDATE rp_types SET t = NULL WHERE t = ''",
           *[_insert(1000 + i, shift=3) for i in range(3)]],
    "n3": ["DELETE FROM rp_types WHERE id IN (13, 14)",
           *[_copy_from(i, i + 1) for i in range(15, 19)],
           "UPDATE rp_types SET t = '' WHERE t IS NULL",
           "UPDATE rp_types SET f = 0 WHERE f = '-0'",
           _insert(2001, shift=1)],
}


def build_types_table(nodes: Nodes) -> None:
    for node in NODES:
        nodes.execute(node, ["DROP TABLE IF EXISTS rp_types", "DROP TYPE IF EXISTS rp_mood"])
        nodes.execute(node, ENUM_DDL[node])
        nodes.execute(node, [TYPES_DDL, *[_insert(i) for i in range(1, ROWS + 1)]])
        nodes.execute(node, DIVERGE[node])


COMPOSITE_DDL = """CREATE TABLE "Rp Sales"."Order Items" (
    "Order Id" int, "Line" text, "Qty" numeric(10,3), "Note" text, "When" timestamptz,
    PRIMARY KEY ("Order Id", "Line"))"""


def build_composite_table(nodes: Nodes) -> None:
    rows = [f"INSERT INTO \"Rp Sales\".\"Order Items\" VALUES ({o}, '{ln}', {o * 1.5}, "  # noqa: S608
            f"'note {o}/{ln}', '2024-01-0{1 + o % 9} 10:00:00+00')"
            for o in range(1, 11) for ln in ("a", "B", "a b", "é")]
    for node in NODES:
        nodes.execute(node, ['DROP SCHEMA IF EXISTS "Rp Sales" CASCADE', 'CREATE SCHEMA "Rp Sales"',
                             COMPOSITE_DDL, *rows])
    table = '"Rp Sales"."Order Items"'
    nodes.execute("n2", [f"DELETE FROM {table} WHERE \"Order Id\" = 3",  # noqa: S608
                         f"UPDATE {table} SET \"Qty\" = 0.5, \"Note\" = NULL "  # noqa: S608
                         "WHERE \"Order Id\" = 4 AND \"Line\" = 'a b'",
                         f"INSERT INTO {table} VALUES (99, 'zz', 1, 'extra', now())"])  # noqa: S608
    nodes.execute("n3", [f"UPDATE {table} SET \"When\" = '2030-01-01 00:00:00+00' "  # noqa: S608
                         "WHERE \"Line\" = 'é'",
                         f"DELETE FROM {table} WHERE \"Order Id\" = 7 AND \"Line\" = 'B'"])  # noqa: S608


def _full_loop(nodes: Nodes, table: str, source: str) -> dict[str, Any]:
    before = nodes.snapshots(table)
    assert len({tuple(s) for s in before.values()}) == 3, "every node should differ at first"
    diff_path, diff = diff_table(table)
    assert diff["summary"]["mismatch"]

    # a rerun before any repair finds exactly what the diff found, in both behaviours
    for behavior in ("multiprocessing", "hostdb"):
        again, summary = rerun(table, diff_path, behavior)
        assert diff_sections(again) == diff["diffs"], behavior
        assert summary["remaining"] == summary["previous_diff_rows"] == diff["summary"]["diff_rows"]
        assert summary["resolved"] == 0

    result = repair(table, diff_path, source_of_truth=source)
    assert set(result["nodes"]) == set(NODES) - {source}
    after = nodes.snapshots(table)
    for node in NODES:
        assert after[node] == before[source], f"{node} does not hold {source}'s rows"

    for behavior in ("multiprocessing", "hostdb"):
        again, summary = rerun(table, diff_path, behavior)
        assert summary["remaining"] == 0 and summary["diff_rows"] == 0, behavior
        assert summary["resolved"] == diff["summary"]["diff_rows"]
        assert diff_sections(again) == {}
    return result


@pytest.mark.parametrize("source", ["n1", "n3"])
def test_every_type_round_trips_through_diff_and_repair(pg_cluster: Any, source: str) -> None:
    nodes = Nodes(pg_cluster)
    build_types_table(nodes)
    result = _full_loop(nodes, "public.rp_types", source)
    counts = result["nodes"]
    if source == "n1":
        # n2 lost 1-4, changed 5-12 (and some NULL/'' flips), gained 1000-1002
        assert counts["n2"]["inserted"] == 4
        assert counts["n2"]["deleted"] == 3
        assert counts["n2"]["updated"] >= 8
        assert counts["n3"]["inserted"] == 2 and counts["n3"]["deleted"] == 1


def test_composite_mixed_case_key_round_trips(pg_cluster: Any) -> None:
    nodes = Nodes(pg_cluster)
    build_composite_table(nodes)
    result = _full_loop(nodes, '"Rp Sales"."Order Items"', "n1")
    assert result["nodes"]["n2"] == {**result["nodes"]["n2"], "inserted": 4, "updated": 1,
                                     "deleted": 1}
    assert result["nodes"]["n3"]["inserted"] == 1
    assert result["nodes"]["n3"]["updated"] == 10
