"""Table names and table filters as a user types them.

Names must split and fold exactly as PostgreSQL does, or ACE would compare a
different table from the one the user named; filters must stay one read-only
condition, whatever quoting tricks they contain.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ace_shared.errors import BadOptionError
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
