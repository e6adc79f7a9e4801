"""A user's ``--table-filter``: judged by PostgreSQL's own grammar, re-emitted, checked per node.

The grammar (:mod:`ace_shared.nodes.filtergrammar`) needs PostgreSQL's parser,
``pglast``, whose loading took about a fifth of the ``ace`` command's start-up;
most commands have no filter, so it is loaded only when a filter is given.
"""

from __future__ import annotations

from psycopg2.extensions import cursor

from ace_shared.errors import FilterError
from ace_shared.nodes.ident import TableName


def parse_filter(text: str) -> tuple[str, set[str]]:
    """The re-emitted filter and the column names it reads; raise :class:`FilterError`."""
    from ace_shared.nodes import filtergrammar
    return filtergrammar.parse_filter(text)


def check_filter(text: str | None) -> str | None:
    """Return the filter as ACE will run it (re-emitted from its parse tree), or ``None``."""
    if text is None or not text.strip():
        return None
    return parse_filter(text.strip())[0]


def display_filter(text: str) -> str:
    """A filter as a person reads it: the same tree without the ``pg_catalog`` pins."""
    from ace_shared.nodes import filtergrammar
    return filtergrammar.display_filter(text)


_COLUMN_TYPES_SQL = """
SELECT a.attname,
       COALESCE(bt.typnamespace, t.typnamespace)
           OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
  LEFT JOIN pg_catalog.pg_type bt ON t.typtype OPERATOR(pg_catalog.=) 'd'
        AND bt.oid OPERATOR(pg_catalog.=) t.typbasetype
 WHERE a.attrelid OPERATOR(pg_catalog.=) %s::pg_catalog.regclass
   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
"""


def check_filter_columns(cur: cursor, table: TableName, text: str, node: str) -> None:
    """On one node: every column the filter names exists and has a built-in type.

    A user-defined type brings user-defined casts and operators with it, which
    the filter could reach implicitly; built-in types bring only built-in ones.
    """
    _, names = parse_filter(text)
    cur.execute(_COLUMN_TYPES_SQL, (str(table),))
    builtin = dict(cur.fetchall())
    for name in sorted(names):
        if name not in builtin:
            raise FilterError(f"The table filter names column {name}, which table "
                              f"{table.display} does not have on node {node}.")
        if not builtin[name]:
            raise FilterError(f"The table filter may not use column {name}: its type is not "
                              "built in, so comparing it could run user-defined code.")
