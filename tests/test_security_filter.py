"""The table filter is judged by PostgreSQL's grammar (pglast) and re-emitted from its tree.

What a filter may be: one condition over the table's columns with constants,
operators, built-in casts and built-in functions. Everything else is refused
whatever its spelling; what is accepted means on a real node what the user wrote.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest
from api_helpers import run_sql

from ace_shared.errors import AceError, FilterError
from ace_shared.nodes.filter import check_filter, check_filter_columns, parse_filter
from ace_shared.nodes.ident import TableName


@pytest.mark.parametrize("text", [
    # the escape of the issue: U& decodes to set_config
    "U&\"set\\005fconfig\"('role', 'none', false) IS NOT NULL",
    "set_config('role', 'ace', false) IS NOT NULL",
    "pg_catalog.SET_CONFIG('role', 'ace', true) = 'ace'",
    '"set_config"(\'role\', \'ace\', true) IS NOT NULL',
    "id > 0 AND query_to_xml('select 1', true, true, '') IS NOT NULL",
    "pg_read_file('/etc/passwd') IS NOT NULL",
    "pg_terminate_backend(1)",
    "pg_sleep(3600) IS NULL",
    "pg_advisory_lock(1) IS NULL",
    "sec_own_function(id)",  # a user function, whatever it does
    "public.lower(label) = 'x'",
    "id OPERATOR(public.=) 1",
    "id = (SELECT max(id) FROM pg_authid)",
    "EXISTS (SELECT 1)",
    "id IN (SELECT 1)",
    "id::regclass IS NOT NULL",
    "CAST(id AS public.evil) IS NULL",
    "other.id = 1",
    "count(*) > 0",
    "id = $1",
])
def test_anything_but_a_plain_condition_is_refused(text: str) -> None:
    with pytest.raises(FilterError) as err:
        check_filter(text)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, AceError)


@pytest.mark.parametrize("text", [
    "id > 5; DELETE FROM t",
    "(id > 5",
    "id > 5)",
    ") OR (true",
    "id = 'unclosed",
    "x = $$unclosed",
    r"id = E'\'' ; DELETE FROM t; SELECT '",
    "id = 1 UNION SELECT 1",
    "id = 1 ORDER BY 1",
    "id = 1 FOR UPDATE",
])
def test_text_that_is_not_one_condition_is_refused(text: str) -> None:
    with pytest.raises(FilterError):
        check_filter(text)


@pytest.mark.parametrize("text", [None, "", "   "])
def test_an_empty_filter_means_no_filter(text: str | None) -> None:
    assert check_filter(text) is None


def test_functions_and_operators_are_pinned_to_pg_catalog() -> None:
    emitted, columns = parse_filter("lower(label) LIKE 'a%' AND id IN (1, 2)")
    assert "pg_catalog.lower(label)" in emitted
    assert "OPERATOR(pg_catalog.~~)" in emitted
    assert "OPERATOR(pg_catalog.=)" in emitted
    assert columns == {"label", "id"}


def test_names_inside_strings_are_only_strings() -> None:
    emitted = check_filter("note = 'set_config(''role'', ''x'', false)'")
    assert emitted == "note OPERATOR(pg_catalog.=) 'set_config(''role'', ''x'', false)'"


# Each accepted filter must select exactly what the user's text selects.
SAME_MEANING = [
    "id > 5",
    "id IN (1, 2, 3) OR id NOT IN (4, 5)",
    "id BETWEEN 3 AND 7",
    "id NOT BETWEEN 3 AND 7",
    "label LIKE 'item 1%' AND label NOT ILIKE '%0'",
    "label SIMILAR TO 'item [12]%'",
    "id = 2 + 3 * 2",
    "id + 1 = 7",
    "-(id - 10) > 2",
    "lower(label) = 'item 4' OR length(label) = 7",
    "coalesce(note, 'none') = 'none'",
    "(id, label) > (3, 'a')",
    "CASE WHEN id > 5 THEN true ELSE id = 1 END",
    "amount::text LIKE '1%'",
    "id % 3 = 0 AND NOT id = 9",
    "note IS NULL AND id IS NOT NULL",
    "\"Mixed Col\" IS NULL",
    "label COLLATE \"C\" < 'item 3'",
    "id = ANY (ARRAY[1, 8])",
    "to_char(id, 'FM00') = '03'",
]


@pytest.fixture(scope="module")
def filter_table(pg_cluster: Any) -> str:
    run_sql(pg_cluster.node_dsn(0),
            "DROP TABLE IF EXISTS sec_filter_rows",
            "CREATE TABLE sec_filter_rows (id int PRIMARY KEY, label text, amount numeric, "
            "note text, \"Mixed Col\" int)",
            "INSERT INTO sec_filter_rows SELECT g, 'item ' || g, g * 1.5, "
            "CASE WHEN g % 2 = 0 THEN 'even' END, NULL FROM generate_series(1, 20) g")
    return "sec_filter_rows"


@pytest.mark.parametrize("text", SAME_MEANING)
def test_the_rewritten_filter_selects_the_same_rows(pg_cluster: Any, filter_table: str,
                                                    text: str) -> None:
    emitted = check_filter(text)
    assert emitted is not None
    dsn = pg_cluster.node_dsn(0)
    wanted = run_sql(dsn, f"SELECT id FROM {filter_table} WHERE {text} ORDER BY id")
    got = run_sql(dsn, f"SELECT id FROM {filter_table} WHERE {emitted} ORDER BY id")
    assert got == wanted


def test_columns_must_exist_and_have_built_in_types_or_plain_enums(pg_cluster: Any,
                                                                    filter_table: str) -> None:
    dsn = pg_cluster.node_dsn(0)
    run_sql(dsn, "DROP TABLE IF EXISTS sec_filter_typed", "DROP TYPE IF EXISTS sec_mood CASCADE",
            "DROP TYPE IF EXISTS sec_pair CASCADE",
            "CREATE TYPE sec_mood AS ENUM ('sad', 'ok')", "CREATE TYPE sec_pair AS (a int)",
            "CREATE TABLE sec_filter_typed (id int PRIMARY KEY, mood sec_mood, pair sec_pair)",
            "INSERT INTO sec_filter_typed VALUES (1, 'sad', ROW(1)), (2, 'ok', ROW(2)), "
            "(3, NULL, NULL)")
    table = TableName("public", "sec_filter_typed")
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            check_filter_columns(cur, table, "id > 1", "n1")
            with pytest.raises(FilterError, match="column nope"):
                check_filter_columns(cur, table, "nope = 1", "n1")
            # an enum compares and prints with PostgreSQL's own code only
            for text in ("mood = 'ok'", "mood::text = 'ok'", "mood IN ('ok', 'sad')"):
                check_filter_columns(cur, table, text, "n1")
                emitted = check_filter(text)
                assert emitted is not None
                assert run_sql(dsn, f"SELECT id FROM sec_filter_typed WHERE {emitted} "
                               "ORDER BY id") == run_sql(
                    dsn, f"SELECT id FROM sec_filter_typed WHERE {text} ORDER BY id")
            with pytest.raises(FilterError, match="column pair: its type sec_pair is neither "
                               "built in nor an enum.*filter on columns of built-in types"):
                check_filter_columns(cur, table, "pair IS NULL", "n1")
    finally:
        conn.close()
    # a cast of the enum's own, whose function anyone who owns the type may write
    run_sql(pg_cluster.admin_dsn(0, pg_cluster.dbname),
            "CREATE FUNCTION public.sec_mood_text(sec_mood) RETURNS text LANGUAGE sql "
            "AS 'SELECT ''x''::text'",
            "CREATE CAST (sec_mood AS text) WITH FUNCTION public.sec_mood_text(sec_mood)")
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur, pytest.raises(FilterError, match="column mood: its type"):
            check_filter_columns(cur, table, "mood = 'ok'", "n1")
    finally:
        conn.close()


def test_reports_show_the_filter_without_the_catalog_pins() -> None:
    from ace_shared.nodes.filter import display_filter

    emitted = check_filter("id < 100 AND name NOT ILIKE 'row%' AND lower(x) IN ('a', 'b')")
    assert emitted is not None and "pg_catalog" in emitted
    assert display_filter(emitted) == ("id < 100 AND name NOT ILIKE 'row%' AND "
                                       "(lower(x) = 'a' OR lower(x) = 'b')")
