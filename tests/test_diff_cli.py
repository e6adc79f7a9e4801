"""``ace table-diff`` as a user runs it: exit codes, what it prints, what the file says.

Exit 0 when the nodes agree, 1 when they differ, 2 on any trouble; on trouble,
one ``ace: error:`` sentence and no diff file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from diff_helpers import (
    NODES,
    assert_one_error_line,
    execute,
    on_every_node,
    output_files,
    pair_rows,
    query,
    reported_keys,
    run_ace,
    table_diff,
)

from ace_shared.nodes.filter import check_filter

BASE_ROWS = [
    "CREATE TABLE {t} (id int PRIMARY KEY, name text, qty int)",
    "INSERT INTO {t} SELECT i, 'row' || i, i * 10 FROM generate_series(1, 50) i",
]


def fresh_table(cluster: Any, name: str, ddl: list[str] | None = None) -> None:
    stmts = [f"DROP TABLE IF EXISTS {name}"] + [s.format(t=name) for s in (ddl or BASE_ROWS)]
    on_every_node(cluster, stmts)


@pytest.fixture(scope="module")
def tables(pg_cluster: Any) -> Any:
    """``td_same`` (identical everywhere) and ``td_basic`` (an insert, update, delete apart)."""
    fresh_table(pg_cluster, "td_same")
    fresh_table(pg_cluster, "td_basic")
    execute(pg_cluster.node_dsn(0), ["INSERT INTO td_basic VALUES (101, 'only on n1', 1)"])
    execute(pg_cluster.node_dsn(1), ["UPDATE td_basic SET name = 'changed on n2' WHERE id = 5",
                                     "INSERT INTO td_basic VALUES (102, 'only on n2', 2)"])
    execute(pg_cluster.node_dsn(2), ["DELETE FROM td_basic WHERE id = 7",
                                     "UPDATE td_basic SET qty = NULL WHERE id = 9"])
    return pg_cluster


@pytest.fixture(scope="module")
def basic_diff(tables: Any) -> dict[str, Any]:
    run = table_diff("public.td_basic", fresh_process=True)
    assert run.code == 1, (run.stdout, run.stderr)
    assert "n1/n2: 3 rows differ" in run.stdout
    return run.diff()


# ----- agreeing and differing tables -------------------------------------------------

def test_identical_tables_match(tables: Any) -> None:
    run = table_diff("public.td_same", fresh_process=True)
    assert run.code == 0, run.stderr
    assert "TABLES MATCH" in run.stdout
    assert "50 rows checked" in run.stdout
    diff = run.diff()
    assert diff["diffs"] == {}
    summary = diff["summary"]
    assert summary["mismatch"] is False
    assert summary["diff_rows"] == 0
    assert summary["total_rows_checked"] == 50
    assert summary["nodes"] == list(NODES)
    assert summary["diff_file"] == str(run.diff_path)
    assert summary["cluster_name"] == "testclus"
    assert (summary["schema_name"], summary["table_name"]) == ("public", "td_same")
    assert summary["diff_partial"] is False
    assert run.diff_path is not None and run.diff_path.parent.parent.name == "diffs"
    assert run.diff_path.name.startswith("diffs_")
    assert summary["task_id"].startswith("td_")
    assert summary["database"] == "acedb"
    assert summary["table"] == "public.td_same"
    assert summary["primary_key"] == ["id"]
    assert summary["columns"] == [{"name": "id", "type": "integer"},
                                  {"name": "name", "type": "text"},
                                  {"name": "qty", "type": "integer"}]
    assert summary["table_filter"] is None
    assert summary["block_rows"] == 10000
    assert summary["diff_rows_by_pair"] == {}
    assert summary["start_time"] <= summary["end_time"]
    assert summary["time_taken"] >= 0


def test_rows_on_one_node_only(tables: Any) -> None:
    on_every_node(tables, ["DROP TABLE IF EXISTS td_lonely",
                           "CREATE TABLE td_lonely (id int PRIMARY KEY, v text)"])
    assert table_diff("public.td_lonely").code == 0, "empty everywhere is the same"
    for i in (1, 2):
        execute(tables.node_dsn(i), ["INSERT INTO td_lonely SELECT g, 'v' "
                                     "FROM generate_series(1, 1500) g"])
    run = table_diff("public.td_lonely", "--block-rows", "1000")
    assert run.code == 1
    diff = run.diff()
    assert diff["summary"]["diff_rows_by_pair"] == {"n1/n2": 1500, "n1/n3": 1500}
    assert pair_rows(diff, "n1/n2", "n1") == []
    assert [r["id"] for r in pair_rows(diff, "n1/n3", "n3")] == [str(i) for i in range(1, 1501)]
    assert diff["summary"]["total_rows_checked"] == 1500


def test_every_pair_is_compared(basic_diff: dict[str, Any]) -> None:
    assert reported_keys(basic_diff) == {
        "n1/n2": {"5", "101", "102"},
        "n1/n3": {"7", "9", "101"},
        "n2/n3": {"5", "7", "9", "102"},
    }
    assert basic_diff["summary"]["diff_rows_by_pair"] == {"n1/n2": 3, "n1/n3": 3, "n2/n3": 4}
    assert basic_diff["summary"]["diff_rows"] == 5, "distinct keys: 5, 7, 9, 101, 102"


def test_missing_rows_appear_only_on_the_side_that_has_them(basic_diff: dict[str, Any]) -> None:
    assert [r["id"] for r in pair_rows(basic_diff, "n1/n2", "n1")] == ["5", "101"]
    assert [r["id"] for r in pair_rows(basic_diff, "n1/n2", "n2")] == ["5", "102"]
    assert [r["id"] for r in pair_rows(basic_diff, "n1/n3", "n1")] == ["7", "9", "101"]
    assert [r["id"] for r in pair_rows(basic_diff, "n1/n3", "n3")] == ["9"]
    updated = pair_rows(basic_diff, "n1/n2", "n2")[0]
    assert updated == {"id": "5", "name": "changed on n2", "qty": "50"}
    assert pair_rows(basic_diff, "n1/n3", "n3")[0] == {"id": "9", "name": "row9", "qty": None}


def test_node_list_restricts_the_comparison(tables: Any) -> None:
    run = table_diff("public.td_basic", "--nodes", "n1,n3")
    assert run.code == 1
    diff = run.diff()
    assert list(diff["diffs"]) == ["n1/n3"]
    assert diff["summary"]["nodes"] == ["n1", "n3"]
    assert reported_keys(diff) == {"n1/n3": {"7", "9", "101"}}


def test_nodes_that_agree_exit_zero_even_if_others_differ(tables: Any) -> None:
    on_every_node(tables, ["DROP TABLE IF EXISTS td_twosame"])
    fresh_table(tables, "td_twosame")
    execute(tables.node_dsn(2), ["DELETE FROM td_twosame WHERE id = 1"])
    assert table_diff("public.td_twosame", "--nodes=n1,n2").code == 0
    assert table_diff("public.td_twosame").code == 1


def test_four_nodes_give_six_pairs(tables: Any, tmp_path: Path) -> None:
    """A fourth node (another name for n1's server) shows up in every pair it is part of."""
    src = Path(os.environ["ACE_CLUSTER_DIR"]) / "testclus" / "testclus.json"
    doc = json.loads(src.read_text())
    doc["cluster_name"] = "td_four"
    n4 = dict(doc["node_groups"][0], name="n4")
    doc["node_groups"].append(n4)
    (tmp_path / "td_four").mkdir()
    (tmp_path / "td_four" / "td_four.json").write_text(json.dumps(doc))
    run = run_ace("table-diff", "td_four", "public.td_basic",
                  env={"ACE_CLUSTER_DIR": str(tmp_path)})
    assert run.code == 1, run.stderr
    keys = reported_keys(run.diff())
    assert keys == {
        "n1/n2": {"5", "101", "102"},
        "n1/n3": {"7", "9", "101"},
        "n2/n3": {"5", "7", "9", "102"},
        "n2/n4": {"5", "101", "102"},
        "n3/n4": {"7", "9", "101"},
    }, "n1/n4 hold the same data, so that pair is absent"


@pytest.mark.parametrize(("flag", "talks"), [
    (["--quiet"], False), (["--quiet=True"], False), (["--quiet=true"], False),
    (["--quiet=False"], True), ([], True),
])
def test_quiet_spellings(tables: Any, flag: list[str], talks: bool) -> None:
    run = table_diff("public.td_same", *flag)
    assert run.code == 0, run.stderr
    assert ("TABLES MATCH" in run.stdout) is talks
    assert run.diff_path is not None and run.diff_path.is_file()


@pytest.mark.parametrize("args", [
    ["--quiet", "testclus", "public.td_same"],
    ["testclus", "--quiet", "public.td_same"],
    ["--quiet=yes", "testclus", "public.td_same", "--nodes", "n1,n2"],
])
def test_quiet_may_come_anywhere(tables: Any, args: list[str]) -> None:
    run = run_ace("table-diff", *args)
    assert run.code == 0, run.stderr
    assert "TABLES MATCH" not in run.stdout
    assert run.diff_path is not None


def test_quiet_diff_still_names_the_file(tables: Any) -> None:
    run = table_diff("public.td_basic", "--quiet")
    assert run.code == 1
    assert "rows differ" not in run.stdout
    assert run.diff_path is not None and run.diff_path.is_file()


# ----- names --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def odd_names(pg_cluster: Any) -> Any:
    ddl = [
        'DROP SCHEMA IF EXISTS "My Schema" CASCADE',
        'CREATE SCHEMA "My Schema"',
        'CREATE TABLE "My Schema"."we""ird tbl" ("Key Col" text PRIMARY KEY, "Value" int, '
        '"sp ace" text)',
        """INSERT INTO "My Schema"."we""ird tbl" VALUES ('a,b', 1, 'x'), ('{x}', 2, 'x'),
           ('NULL', 3, 'x'), ('"q"', 4, 'x'), ('back\\slash', 5, 'x'), ('', 6, 'x'),
           ('plain', 7, 'x'), (' lead', 8, 'x'), ('tab\t', 9, 'x')""",
        'DROP SCHEMA IF EXISTS "Sales" CASCADE',
        'CREATE SCHEMA "Sales"',
        'CREATE TABLE "Sales"."Order Items" ("Order ID" int, "Line" int, "Qty" int, '
        'PRIMARY KEY ("Order ID", "Line"))',
        'INSERT INTO "Sales"."Order Items" SELECT i, j, i * j FROM generate_series(1, 20) i, '
        'generate_series(1, 3) j',
        'DROP TABLE IF EXISTS "td_100%"',
        'DROP DOMAIN IF EXISTS "td_pct%dom"',
        'CREATE DOMAIN "td_pct%dom" AS text',
        'CREATE TABLE "td_100%" (k "td_pct%dom" PRIMARY KEY, "v%s" text)',
        """INSERT INTO "td_100%" SELECT i || '%', 'x' FROM generate_series(1, 3000) i""",
    ]
    on_every_node(pg_cluster, ddl)
    execute(pg_cluster.node_dsn(1), ['UPDATE "My Schema"."we""ird tbl" SET "sp ace" = \'y\'',
                                     'UPDATE "Sales"."Order Items" SET "Qty" = 0 '
                                     'WHERE "Order ID" = 4 AND "Line" = 2',
                                     """UPDATE "td_100%" SET "v%s" = 'y' WHERE k LIKE '2%'"""])
    return pg_cluster


def test_mixed_case_quoted_names_with_spaces(odd_names: Any) -> None:
    run = table_diff('"Sales"."Order Items"')
    assert run.code == 1, run.stderr
    diff = run.diff()
    assert diff["summary"]["schema_name"] == "Sales"
    assert diff["summary"]["table_name"] == "Order Items"
    assert diff["summary"]["primary_key"] == ["Order ID", "Line"]
    assert pair_rows(diff, "n1/n2", "n2") == [{"Order ID": "4", "Line": "2", "Qty": "0"}]
    assert "n1/n3" not in diff["diffs"]


def test_percent_signs_in_names_and_types(odd_names: Any) -> None:
    run = table_diff('public."td_100%"', "--block-rows", "1000",
                     "--table-filter", "k NOT LIKE '%9%'")
    assert run.code == 1, run.stderr
    diff = run.diff()
    keys = reported_keys(diff, "k")
    expected = {f"{i}%" for i in range(1, 3001) if str(i).startswith("2") and "9" not in str(i)}
    assert keys == {"n1/n2": expected, "n2/n3": expected}
    assert {r["v%s"] for r in pair_rows(diff, "n1/n2", "n2")} == {"y"}
    assert diff["summary"]["columns"][0] == {"name": "k", "type": '"td_pct%dom"'}


def test_unquoted_mixed_case_name_folds_to_lower_case(odd_names: Any) -> None:
    run = table_diff("Sales.\"Order Items\"")
    assert_one_error_line(run, "does not exist")


def test_quotes_and_awkward_key_values_survive(odd_names: Any) -> None:
    run = table_diff('"My Schema"."we""ird tbl"')
    assert run.code == 1, run.stderr
    diff = run.diff()
    assert diff["summary"]["table_name"] == 'we"ird tbl'
    keys = [r["Key Col"] for r in pair_rows(diff, "n1/n2", "n1")]
    (expected,) = zip(*query(odd_names.node_dsn(0),
                             'SELECT "Key Col" FROM "My Schema"."we""ird tbl" ORDER BY 1'),
                      strict=True)
    assert keys == list(expected), "every awkward key found, in the table's order"
    assert {r["sp ace"] for r in pair_rows(diff, "n1/n2", "n2")} == {"y"}


# ----- keys in a non-C collation, and keys that print per time zone --------------------

@pytest.fixture(scope="module")
def icu_keys(pg_cluster: Any) -> Any:
    (found,) = query(pg_cluster.node_dsn(0),
                     "SELECT count(*) FROM pg_collation WHERE collname = 'en-US-x-icu'")
    if not found[0]:
        pytest.skip("this PostgreSQL has no ICU collations")
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS td_coll",
        'CREATE TABLE td_coll (a int, b text COLLATE "en-US-x-icu", v text, PRIMARY KEY (a, b))',
        "INSERT INTO td_coll SELECT i % 3, (ARRAY['a','A','b','B','é','z','Z','ä','É'])"
        "[i % 9 + 1] || (i / 3), 'v' FROM generate_series(1, 3000) i",
    ])
    execute(pg_cluster.node_dsn(1), [
        "UPDATE td_coll SET v = 'changed' WHERE (a * 7 + length(b)) % 5 = 0",
        "INSERT INTO td_coll VALUES (1, 'Ä', 'only n2'), (0, 'zz', 'only n2'), (2, '', 'n2')",
    ])
    execute(pg_cluster.node_dsn(0), ["DELETE FROM td_coll WHERE b IN ('é4', 'B100', 'a7')"])
    return pg_cluster


def test_composite_key_rows_come_in_the_tables_collation_order(icu_keys: Any) -> None:
    run = table_diff("public.td_coll", "--block-rows", "1000", "--nodes", "n1,n2")
    assert run.code == 1, run.stderr
    diff = run.diff()
    left = [(r["a"], r["b"]) for r in pair_rows(diff, "n1/n2", "n1")]
    right = [(r["a"], r["b"]) for r in pair_rows(diff, "n1/n2", "n2")]
    rows_sql = "SELECT a::text, b, v FROM td_coll"
    n1 = set(query(icu_keys.node_dsn(0), rows_sql))
    n2 = set(query(icu_keys.node_dsn(1), rows_sql))
    differing = {r[:2] for r in n1 ^ n2}
    assert set(left) | set(right) == differing
    assert len(differing) > 50
    keys = sorted(differing)
    ordered = query(icu_keys.node_dsn(0),
                    "SELECT a::text, b FROM unnest(%s::int[], %s::text[]) AS u(a, b) "
                    'ORDER BY a, b COLLATE "en-US-x-icu"',
                    ([int(a) for a, _ in keys], [b for _, b in keys]))
    assert left == [k for k in ordered if k in set(left)]
    assert right == [k for k in ordered if k in set(right)]
    assert left != sorted(left, key=lambda k: (int(k[0]), k[1])), (
        "the test needs keys whose ICU order differs from code point order")


def test_timestamptz_keys_match_across_server_time_zones(pg_cluster: Any) -> None:
    on_every_node(pg_cluster, [
        "DROP TABLE IF EXISTS td_tskey",
        "CREATE TABLE td_tskey (ts timestamptz PRIMARY KEY, v int)",
        "INSERT INTO td_tskey SELECT g, 1 FROM generate_series("
        "'2024-03-01 00:00+00'::timestamptz, '2024-03-03 06:00+00', '1 minute') g",
    ])
    execute(pg_cluster.node_dsn(2),
            ["UPDATE td_tskey SET v = 2 WHERE ts = '2024-03-02 05:30:00+05:30'"])
    run = table_diff("public.td_tskey", "--block-rows", "1000")
    assert run.code == 1, run.stderr
    diff = run.diff()
    assert reported_keys(diff, "ts") == {"n1/n3": {"2024-03-02 00:00:00+00"},
                                         "n2/n3": {"2024-03-02 00:00:00+00"}}
    assert diff["summary"]["total_rows_checked"] == 3241


# ----- table filters ------------------------------------------------------------------

def test_filter_restricts_rows_on_every_node(tables: Any) -> None:
    """The filter applies on each node: a row that fails it on one node is missing there."""
    text = "id < 100 AND name LIKE 'row%'"
    run = table_diff("public.td_basic", "--table-filter", text)
    assert run.code == 1, run.stderr
    diff = run.diff()
    # 101/102 are outside the filter; row 5 was renamed on n2, so n2 no longer selects it
    assert reported_keys(diff) == {"n1/n2": {"5"}, "n1/n3": {"7", "9"}, "n2/n3": {"5", "7", "9"}}
    assert pair_rows(diff, "n1/n2", "n2") == []
    assert diff["summary"]["table_filter"] == check_filter(text)  # as re-emitted and run
    assert diff["summary"]["total_rows_checked"] == 50


def test_filter_that_excludes_every_difference_matches(tables: Any) -> None:
    run = table_diff("public.td_basic", "--table-filter=id BETWEEN 10 AND 40 OR name = 'x;y'")
    assert run.code == 0, run.stderr
    assert run.diff()["summary"]["total_rows_checked"] == 31


@pytest.fixture()
def write_trap(tables: Any) -> Iterator[Any]:
    on_every_node(tables, [
        "DROP TABLE IF EXISTS td_sink",
        "CREATE TABLE td_sink (x int)",
        "CREATE OR REPLACE FUNCTION td_write() RETURNS int LANGUAGE sql VOLATILE AS "
        "'INSERT INTO td_sink VALUES (1) RETURNING x'",
    ])
    yield tables
    on_every_node(tables, ["DROP FUNCTION IF EXISTS td_write()", "DROP TABLE td_sink"])


def test_filter_cannot_write(write_trap: Any) -> None:
    before = output_files()
    run = table_diff("public.td_basic", "--table-filter", "td_write() > 0")
    assert_one_error_line(run, "td_write()", "filter")
    for i in range(len(NODES)):
        assert query(write_trap.node_dsn(i), "SELECT count(*) FROM td_sink") == [(0,)]
    assert output_files() == before


@pytest.mark.parametrize(("text", "words"), [
    ("id > AND 3", ["syntax error", "filter"]),
    ("id <<>> 3", ["operator <<>>", "filter"]),
    ("no_such_column = 1", ["no_such_column"]),
    ("id > 1; DELETE FROM td_basic", [";"]),
    ("id > (1", ["("]),
    ("name", ["filter"]),
    # the node named is whichever met the error first: planning reads the node that the
    # catalogue says holds most rows, and autovacuum decides when that estimate changes
    ("1 / (id - 25) > -100", ["division_by_zero", "on node n"]),
])
def test_bad_filters_are_one_clear_error(tables: Any, text: str, words: list[str]) -> None:
    before = output_files()
    run = table_diff("public.td_basic", "--table-filter", text)
    assert_one_error_line(run, *words)
    assert output_files() == before
    assert query(tables.node_dsn(0), "SELECT count(*) FROM td_basic") == [(51,)]


# ----- errors -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def broken_tables(tables: Any) -> Any:
    on_every_node(tables, [
        "DROP TABLE IF EXISTS td_nopk", "CREATE TABLE td_nopk (id int, v text)",
        "DROP TABLE IF EXISTS td_cols", "DROP TABLE IF EXISTS td_types2",
        "DROP TABLE IF EXISTS td_keys", "DROP TABLE IF EXISTS td_partial",
    ])
    execute(tables.node_dsn(0), [
        "CREATE TABLE td_cols (id int PRIMARY KEY, v text)",
        "CREATE TABLE td_types2 (id int PRIMARY KEY, v int)",
        "CREATE TABLE td_keys (id int PRIMARY KEY, v text NOT NULL)",
        "CREATE TABLE td_partial (id int PRIMARY KEY)",
    ])
    execute(tables.node_dsn(1), [
        "CREATE TABLE td_cols (id int PRIMARY KEY, v text, extra int)",
        "CREATE TABLE td_types2 (id int PRIMARY KEY, v bigint)",
        "CREATE TABLE td_keys (id int, v text NOT NULL, PRIMARY KEY (id, v))",
        "CREATE TABLE td_partial (id int PRIMARY KEY)",
    ])
    execute(tables.node_dsn(2), [
        "CREATE TABLE td_cols (id int PRIMARY KEY, v text)",
        "CREATE TABLE td_types2 (id int PRIMARY KEY, v int)",
        "CREATE TABLE td_keys (id int PRIMARY KEY, v text NOT NULL)",
    ])
    return tables


@pytest.mark.parametrize(("args", "words"), [
    (["table-diff", "nocluster", "public.td_same"], ["nocluster", "not defined"]),
    (["table-diff", "testclus", "public.td_same", "--nodes", "n1,n9"], ["n9"]),
    (["table-diff", "testclus", "public.td_same", "--nodes", "n1"], ["two"]),
    (["table-diff", "testclus", "public.td_nope"], ["td_nope", "does not exist"]),
    (["table-diff", "testclus", "td_same"], ["schema-qualified"]),
    (["table-diff", "testclus", "public.td_nopk"], ["primary key"]),
    (["table-diff", "testclus", "public.td_cols"], ["different columns", "extra", "n2"]),
    (["table-diff", "testclus", "public.td_types2"], ["different columns", "v"]),
    (["table-diff", "testclus", "public.td_keys"], ["primary key", "n2"]),
    (["table-diff", "testclus", "public.td_partial"], ["does not exist", "n3"]),
    (["table-diff", "testclus", "public.td_same", "--dbname", "nodb"], ["nodb"]),
    (["table-diff", "testclus", "public.td_same", "--block-rows", "999"], ["--block-rows", "1000"]),
    (["table-diff", "testclus", "public.td_same", "--block-rows", "100001"], ["--block-rows"]),
    (["table-diff", "testclus", "public.td_same", "--block-rows", "lots"], ["whole number"]),
    (["table-diff", "testclus", "public.td_same", "--max-cpu-ratio", "0"], ["--max-cpu-ratio"]),
    (["table-diff", "testclus", "public.td_same", "--max-cpu-ratio", "1.5"], ["--max-cpu-ratio"]),
    (["table-diff", "testclus", "public.td_same", "--output", "xml"], ["output", "xml"]),
    (["table-diff", "testclus", "public.td_same", "--batch-size", "0"], ["--batch-size"]),
    (["table-diff", "testclus", "public.td_same", "--quiet=maybe"], ["quiet"]),
])
def test_bad_requests_exit_2_with_one_sentence_and_no_file(
        broken_tables: Any, args: list[str], words: list[str]) -> None:
    before = output_files()
    assert_one_error_line(run_ace(*args), *words)
    assert output_files() == before


@pytest.mark.parametrize(("args", "words"), [
    (["table-diff", "testclus", "public.td_same", "--bogus"], ["--bogus", "table-diff --help"]),
    (["table-diff", "testclus"], ["TABLE_NAME", "table-diff --help"]),
    (["table-diff", "testclus", "public.td_same", "extra"], ["extra", "table-diff --help"]),
    (["table-diff", "testclus", "public.td_same", "--batch-size"], ["--batch-size"]),
    (["tabel-diff", "testclus", "public.td_same"], ["tabel-diff", "ace --help"]),
    (["--verbose", "table-diff"], ["--verbose", "ace --help"]),
])
def test_a_mistyped_command_line_gets_one_sentence_too(pg_cluster: Any, args: list[str],
                                                       words: list[str]) -> None:
    # pg_cluster: the cluster folder and the output folder (ACE_OUTPUT_DIR) it sets
    before = output_files()
    assert_one_error_line(run_ace(*args), *words)
    assert_one_error_line(run_ace(*args, fresh_process=True), *words)
    assert output_files() == before


def test_errors_from_a_real_process(broken_tables: Any) -> None:
    before = output_files()
    run = run_ace("table-diff", "testclus", "public.td_cols", fresh_process=True)
    assert_one_error_line(run, "different columns")
    run = run_ace("table-diff", "testclus", "public.td_same", "--block-rows=5",
                  fresh_process=True)
    assert_one_error_line(run, "--block-rows")
    assert output_files() == before


def test_an_output_folder_that_cannot_be_written(tables: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    run = table_diff("public.td_same", env={"ACE_OUTPUT_DIR": str(blocker / "out")})
    assert_one_error_line(run, "output folder", "ACE_OUTPUT_DIR")
    assert blocker.read_text() == "not a folder"


def test_a_node_that_is_down_is_named(tables: Any) -> None:
    before = output_files()
    tables.stop_node(1)
    try:
        run = table_diff("public.td_same", fresh_process=True)
    finally:
        tables.start_node(1)
    assert_one_error_line(run, "n2", "cannot be reached", "Connection refused")
    # the node's address is the cluster file's business, not the error's: remote callers
    # read the same sentence in task-status
    assert "127.0.0.1" not in run.stderr and f"port {tables.nodes[1].port}" not in run.stderr
    assert output_files() == before
    assert table_diff("public.td_same").code == 0, "the node is back and the diff works again"


def test_a_statement_timeout_is_a_query_error_not_an_unreachable_node(pg_cluster):  # type: ignore[no-untyped-def]
    fresh_table(pg_cluster, "td_slow", [
        "CREATE TABLE {t} (id int PRIMARY KEY, v text)",
        "INSERT INTO {t} SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g",
    ])
    result = table_diff("public.td_slow", env={"ACE_STATEMENT_TIMEOUT_MS": "1"})
    assert result.code == 2
    assert "statement timeout" in result.stderr and "cannot be reached" not in result.stderr
