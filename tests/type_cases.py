"""The value cases of the type matrix: one row of ``td_types`` each, written on three nodes.

Each :class:`Case` says what n1, n2 and n3 hold and which of them must come out
equal; ``tests/test_diff_types.py`` diffs them through the CLI and
``tests/test_diff_strategies.py`` through every strategy of the differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from diff_helpers import NODES

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
