"""A user's ``--table-filter``: judged by PostgreSQL's own grammar, re-emitted, checked per node.

The grammar (:mod:`ace_shared.nodes.filtergrammar`) needs PostgreSQL's parser,
``pglast``, whose loading took about a fifth of the ``ace`` command's start-up;
most commands have no filter, so it is loaded only when a filter is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ace_shared.errors import FilterError
from ace_shared.nodes.ident import TableName

if TYPE_CHECKING:  # psycopg2 loads with the first connection, not with a command's options
    from psycopg2.extensions import cursor

FILTER_MARK = "/* table filter */"
"""Written before the filter in every statement that runs one, so an error of that
statement (and only of such a statement) can point the user to the filter."""
MAX_FILTER_BYTES = 4096
"""A filter is one condition on a row; 4 KB holds a list of a few hundred values."""
MAX_FILTER_DEPTH = 32
"""Levels of parentheses and brackets (and, after parsing, of nested expressions).

PostgreSQL's parser (``pglast``) and the checks after it recurse once per
level: 120 KB of nesting crashed the process inside the parser, and 3,000
levels exhausted Python's stack. Both limits are judged on the text before
anything parses it, so no input can reach that depth.
"""


def _depth(text: str) -> int:
    """The deepest nesting of ``(`` and ``[`` in ``text``, counted in one pass."""
    depth = deepest = 0
    for char in text:
        if char in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]":
            depth = max(0, depth - 1)
    return deepest


MAX_EMITTED_BYTES = 32 * 1024
"""ACE's written-out form of a filter (``OPERATOR(pg_catalog.=)``, explicit casts and
parentheses) is several times the user's text; it is held to this, and to a few more
levels than the user's, which PostgreSQL's parser handles safely (about 48 KB of
``1+1+...`` crash it)."""


def check_filter_limits(text: str, *, emitted: bool = False) -> None:
    """Refuse a filter over the size or nesting limit, before it is parsed.

    ``emitted``: the text is ACE's re-emitted form of a filter (from a diff file,
    or being parsed again), held to limits scaled for that form.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    max_bytes = MAX_EMITTED_BYTES if emitted else MAX_FILTER_BYTES
    max_depth = MAX_FILTER_DEPTH + (8 if emitted else 0)
    if size > max_bytes:
        raise FilterError(f"The table filter is {size} bytes long, more than the "
                          f"{max_bytes} ACE accepts; shorten it, for example with a "
                          "range instead of a long list of values.")
    depth = _depth(text)
    if depth > max_depth:
        raise FilterError(f"The table filter nests parentheses or brackets {depth} levels "
                          f"deep, more than the {max_depth} levels ACE accepts; "
                          "write it with fewer nested levels.")


def parse_filter(text: str) -> tuple[str, set[str]]:
    """The re-emitted filter and the column names it reads; raise :class:`FilterError`.

    A user's filter is held to the user's limits. A longer text is accepted only
    when it is already ACE's own written-out form of a filter (a worker checking
    the request the API accepted), which is parsed within the wider limits.
    """
    from ace_shared.nodes import filtergrammar  # pglast loads only when a filter is parsed
    try:
        check_filter_limits(text)
    except FilterError as refusal:
        try:
            check_filter_limits(text, emitted=True)
            emitted, names = filtergrammar.parse_filter(text)
        except FilterError:
            raise refusal from None
        if emitted != text:
            raise refusal from None
        return emitted, names
    return filtergrammar.parse_filter(text)


def check_filter(text: str | None) -> str | None:
    """Return the filter as ACE will run it (re-emitted from its parse tree), or ``None``."""
    if text is None or not text.strip():
        return None
    return parse_filter(text.strip())[0]


def display_filter(text: str) -> str:
    """A filter as a person reads it: the same tree without the ``pg_catalog`` pins."""
    from ace_shared.nodes import filtergrammar  # pglast loads only when a filter is parsed
    return filtergrammar.display_filter(text)


_COLUMN_TYPES_SQL = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, NULL),
       bt.typnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
       OR (bt.typtype OPERATOR(pg_catalog.=) 'e' AND NOT EXISTS (
           SELECT 1 FROM pg_catalog.pg_cast c
             JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) c.castfunc
            WHERE bt.oid IN (c.castsource, c.casttarget)
              AND p.pronamespace OPERATOR(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace))
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
  JOIN pg_catalog.pg_type bt ON bt.oid OPERATOR(pg_catalog.=) CASE
       WHEN t.typtype OPERATOR(pg_catalog.=) 'd' THEN t.typbasetype ELSE t.oid END
 WHERE a.attrelid OPERATOR(pg_catalog.=) %s::pg_catalog.regclass
   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
"""


def check_filter_columns(cur: cursor, table: TableName, text: str, node: str) -> None:
    """On one node: every column the filter names exists and has a type whose code is
    built in.

    A user-defined type brings user-defined casts and operators with it, which
    the filter could reach implicitly; built-in types bring only built-in ones.
    So does an enum, as long as no cast of its own is defined: its input, output
    and comparison functions are PostgreSQL's, and the filter names every
    operator in ``pg_catalog``.
    """
    _, names = parse_filter(text)
    cur.execute(_COLUMN_TYPES_SQL, (str(table),))
    columns = {name: (type_name, safe) for name, type_name, safe in cur.fetchall()}
    for name in sorted(names):
        if name not in columns:
            known = sorted(columns)
            shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            raise FilterError(f"The table filter names column {name}, which table "
                              f"{table.display} does not have on node {node}; its columns "
                              f"are {shown} (a mixed-case name is written in double quotes).")
        type_name, safe = columns[name]
        if not safe:
            raise FilterError(
                f"The table filter may not use column {name}: its type {type_name} is "
                "neither built in nor an enum without casts of its own, so comparing it "
                "could run user-defined code; filter on columns of built-in types or enums.")
