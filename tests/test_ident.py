"""Table names and table filters as a user types them.

Names must split and fold exactly as PostgreSQL does, or ACE would compare a
different table from the one the user named; filters must stay one read-only
condition, whatever quoting tricks they contain.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ace_shared.diff.filter import check_filter
from ace_shared.errors import AceError, BadOptionError, FilterError
from ace_shared.nodes.ident import TableName, parse_table_name


@pytest.mark.parametrize(("text", "schema", "table"), [
    ("public.users", "public", "users"),
    ('"Sales"."Order Items"', "Sales", "Order Items"),
    ("Public.Users", "public", "users"),
    ('"a""b".c', 'a"b', "c"),
    ('  public . "we.ird"  ', "public", "we.ird"),
    ('"My Schema"."we""ird tbl"', "My Schema", 'we"ird tbl'),
    ("s1.t_$x", "s1", "t_$x"),
    # PostgreSQL folds only ASCII letters of unquoted names in a UTF-8 database
    ("public.ÄRGER", "public", "Ärger"),
])
def test_parse_table_name_follows_postgresql_rules(text: str, schema: str, table: str) -> None:
    assert parse_table_name(text) == TableName(schema, table)


def test_unquoted_non_ascii_letters_are_not_folded() -> None:
    assert parse_table_name("Straße.ÄB") == TableName("straße", "Äb")


@pytest.mark.parametrize("text", [
    "users", "a.b.c", '"unclosed', 'public."unclosed', "", "   ", "public.", ".users",
    '"".users', "public users", 'public."a"b',
])
def test_bad_table_names_are_one_clear_error(text: str) -> None:
    with pytest.raises(BadOptionError) as err:
        parse_table_name(text)
    message = str(err.value)
    assert "\n" not in message and message.endswith(".")


def test_unqualified_name_error_shows_how_to_write_it() -> None:
    with pytest.raises(BadOptionError, match="schema-qualified.*public.users"):
        parse_table_name("users")


identifier = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                     min_size=1, max_size=12)


@given(identifier, identifier)
def test_any_name_survives_display_and_quoting(schema: str, table: str) -> None:
    name = TableName(schema, table)
    assert parse_table_name(name.display) == name
    assert parse_table_name(str(name)) == name


@pytest.mark.parametrize("text", [
    "id > 5; DELETE FROM t",
    "id > 5;",
    "id > 5 -- and the rest",
    "id > 5 /* hidden */",
    "(id > 5",
    "id > 5)",
    ") OR (true",
    "id = 'unclosed",
    'x = "unclosed',
    "x = $$unclosed",
    # an E-string's \' does not close it, so the ';' here is outside any string
    r"id = E'\'' ; DELETE FROM t; SELECT '",
    # a $ inside an identifier does not start a dollar quote
    "a$q$ = 1) ; DELETE FROM t; SELECT (b$q$",
    "x$y$ = 1 OR x$y$ = 2; SELECT 1",
])
def test_unsafe_filters_are_rejected(text: str) -> None:
    with pytest.raises(FilterError) as err:
        check_filter(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", [
    "id > 5",
    "name = 'a;b'",
    "name = 'x -- y' AND note <> '/* no */'",
    "note = '(((' OR note = ')'",
    '"we;ird col" = 1',
    "note = $$;--)($$",
    "note = $tag$ ; ) $tag$",
    "note = 'it''s; fine'",
    r"note = E'a\'b;c'",
    "(a > 1) AND ((b < 2) OR c IS NULL)",
    "price $ 2",  # not a dollar quote (operator text is PostgreSQL's problem, not a guard's)
])
def test_safe_filters_pass_unchanged(text: str) -> None:
    assert check_filter(f"  {text}  ") == text


@pytest.mark.parametrize("text", [None, "", "   "])
def test_empty_filter_means_no_filter(text: str | None) -> None:
    assert check_filter(text) is None


def test_filter_errors_are_ace_errors() -> None:
    assert issubclass(FilterError, AceError)


@pytest.mark.parametrize("text", [
    "set_config('role', 'ace', false) IS NOT NULL",
    "pg_catalog.SET_CONFIG('role', 'ace', true) = 'ace'",
    '"set_config"(\'role\', \'ace\', true) IS NOT NULL',
    "id > 0 AND query_to_xml('select 1', true, true, '') IS NOT NULL",
])
def test_filter_may_not_escape_the_callers_role(text: str) -> None:
    with pytest.raises(FilterError, match="may not call"):
        check_filter(text)


def test_filter_may_mention_those_names_inside_strings() -> None:
    assert check_filter("note = 'set_config'") == "note = 'set_config'"
