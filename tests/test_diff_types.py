"""A value is "the same" on two nodes exactly when PostgreSQL prints it the same way.

The nodes run with different server time zones and had their enum labels added
in different orders, so anything that compares binary forms, OIDs or
server-local renderings shows up here as a false difference (or a missed one).
Each row of ``td_types`` is one case: the value written on n1, n2 and n3, and
which of them must come out equal. The diff runs once, through the real CLI.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from diff_helpers import NODES, execute, query, table_diff

MB_TEXT = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 32768) i)"
MB_TEXT_ONE_CHANGED = f"overlay({MB_TEXT} placing 'X' from 524288 for 1)"
UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"


@dataclass(frozen=True)
class Case:
    name: str
    column: str
    values: tuple[str, str, str]  # SQL expressions written on n1, n2, n3
    classes: str  # "aab": n1 and n2 hold the same value, n3 another

    def differs(self, a: str, b: str) -> bool:
        return self.classes[NODES.index(a)] != self.classes[NODES.index(b)]


CASES = [
    Case("null_vs_empty_string", "t", ("NULL", "''", "''"), "abb"),
    Case("empty_strings", "t", ("''", "''", "''"), "aaa"),
    Case("trailing_space", "t", ("'a'", "'a '", "'a'"), "aba"),
    Case("unicode_composed_vs_decomposed", "t", ("U&'\\00E9'", "U&'e\\0301'", "U&'\\00E9'"),
         "aba"),
    Case("char_padding", "c", ("'a'", "'a  '", "'a '"), "aaa"),
    Case("timestamptz_same_instant_other_offsets", "ts",
         ("'2024-01-01 12:00:00+00'", "'2024-01-01 07:00:00-05'", "'2024-01-01T12:00:00Z'"),
         "aaa"),
    Case("timestamptz_same_instant_named_zone", "ts",
         ("'2024-07-01 12:00:00+00'", "'2024-07-01 08:00:00 America/New_York'",
          "'2024-07-01 17:30:00+05:30'"), "aaa"),
    Case("timestamptz_one_microsecond_apart", "ts",
         ("'2024-01-01 12:00:00+00'", "'2024-01-01 12:00:00.000001+00'",
          "'2024-01-01 12:00:00+00'"), "aba"),
    Case("timestamptz_without_offset_is_server_local", "ts",
         ("'2024-06-01 12:00:00'", "'2024-06-01 12:00:00'", "'2024-06-01 12:00:00'"), "abc"),
    Case("float_sum_vs_literal", "f", ("0.1::float8 + 0.2::float8", "0.3", "0.3"), "abb"),
    Case("float_negative_zero", "f", ("'-0'", "'0'", "'0'"), "abb"),
    Case("float_spellings", "f", ("'1e-300'", "'1.0e-300'", "'0.1e-299'"), "aaa"),
    Case("float_nan_and_infinity", "f", ("'NaN'", "'nan'", "'Infinity'"), "aab"),
    Case("numeric_scale_is_kept", "num", ("1.0", "1.00", "1.0"), "aba"),
    Case("numeric_same_value", "num", ("1.50", "'01.50'", "1.50"), "aaa"),
    Case("enum_same_label_other_oid_and_order", "mood", ("'ok'", "'ok'", "'ok'"), "aaa"),
    Case("enum_other_label", "mood", ("'ok'", "'sad'", "'ok'"), "aba"),
    Case("bytea_with_nul_bytes_differs", "b",
         ("'\\x00ff00'::bytea", "'\\x00ff01'::bytea", "'\\x00ff00'::bytea"), "aba"),
    Case("bytea_with_nul_bytes_same", "b",
         ("'\\x0000'::bytea", "decode('0000', 'hex')", "'\\000\\000'::bytea"), "aaa"),
    Case("bytea_trailing_nul", "b", ("'\\x61'::bytea", "'\\x6100'::bytea", "'a'::bytea"), "aba"),
    Case("int_array_with_nulls", "ia", ("'{1,NULL,3}'", "ARRAY[1,NULL,3]", "'{1, null, 3}'"),
         "aaa"),
    Case("int_array_null_element_vs_none", "ia", ("'{1,NULL,3}'", "'{1,3}'", "'{1,NULL,3}'"),
         "aba"),
    Case("int_array_lower_bound", "ia", ("'{1,2}'", "'[0:1]={1,2}'", "'{1,2}'"), "aba"),
    Case("int_array_empty_vs_null", "ia", ("'{}'", "NULL", "'{}'"), "aba"),
    Case("text_array_null_vs_word_null", "ta",
         ("ARRAY[NULL]::text[]", "ARRAY['NULL']", "'{NULL}'"), "aba"),
    Case("json_whitespace_matters", "j", ("'{\"a\":1}'", "'{\"a\": 1}'", "'{\"a\":1}'"), "aba"),
    Case("jsonb_key_order_does_not", "jb",
         ("'{\"a\":1,\"b\":2}'", "'{\"b\":2,\"a\":1}'", "'{\"b\": 2,   \"a\": 1}'"), "aaa"),
    Case("jsonb_number_scale_matters", "jb", ("'{\"a\":1.0}'", "'{\"a\":1}'", "'{\"a\":1.0}'"),
         "aba"),
    Case("uuid_spellings", "u", (f"'{UUID}'", f"'{UUID.upper()}'", f"'{{{UUID}}}'"), "aaa"),
    Case("uuid_differs", "u", (f"'{UUID}'", f"'{UUID[:-1]}2'", f"'{UUID}'"), "aba"),
    Case("int4range_canonical_forms", "r4", ("'[1,5)'", "'[1,4]'", "'(0,5)'"), "aaa"),
    Case("int4range_differs", "r4", ("'[1,5)'", "'[1,6)'", "'[1,5)'"), "aba"),
    Case("int4range_empty", "r4", ("'empty'", "'[3,3)'", "'[1,2)'"), "aab"),
    Case("tstzrange_same_instants_other_offsets", "rtz",
         ("'[2024-01-01 12:00+00,2024-01-02 12:00+00)'",
          "'[2024-01-01 07:00-05,2024-01-02 07:00-05)'",
          "'[2024-01-01 17:30+05:30,2024-01-02 17:30+05:30)'"), "aaa"),
    Case("tstzrange_bound_inclusivity", "rtz",
         ("'[2024-01-01 12:00+00,2024-01-02 12:00+00)'",
          "'[2024-01-01 12:00+00,2024-01-02 12:00+00]'",
          "'[2024-01-01 12:00+00,2024-01-02 12:00+00)'"), "aba"),
    Case("interval_day_vs_hours", "iv", ("'1 day'", "'24 hours'", "'1 day'"), "aba"),
    Case("interval_spellings", "iv", ("'1 day'", "'P1D'", "'1 day 00:00:00'"), "aaa"),
    Case("toast_one_char_in_the_middle", "big", (MB_TEXT, MB_TEXT_ONE_CHANGED, MB_TEXT), "aba"),
    Case("toast_identical", "big", (MB_TEXT, MB_TEXT, MB_TEXT), "aaa"),
]

ENUM_DDL = [
    # same labels everywhere, but created in a different order / with different OIDs
    ["CREATE TYPE td_mood AS ENUM ('sad', 'ok', 'happy')"],
    ["CREATE TYPE td_mood AS ENUM ('happy')",
     "ALTER TYPE td_mood ADD VALUE 'ok'",
     "ALTER TYPE td_mood ADD VALUE 'sad' BEFORE 'happy'"],
    ["CREATE TYPE td_mood AS ENUM ('happy', 'sad')",
     "ALTER TYPE td_mood ADD VALUE 'ok' AFTER 'happy'"],
]

TABLE_DDL = """
CREATE TABLE td_types (
    id int PRIMARY KEY, t text, c char(3), ts timestamptz, f float8, num numeric,
    mood td_mood, b bytea, ia int[], ta text[], j json, jb jsonb, u uuid,
    r4 int4range, rtz tstzrange, iv interval, big text
)"""


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
