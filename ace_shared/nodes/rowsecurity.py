"""Refusing a table whose row-level security would hide rows from the caller.

A diff under a role that row-level security applies to would compare only the
rows that role may see and call the result a full diff; a repair would write
blind. Every ACE session runs with ``row_security = off``, so PostgreSQL itself
raises an error rather than filter (and never runs a policy's functions); this
check comes first so the error can name the policies and say what to do.
``row_security_active`` answers exactly PostgreSQL's own question (table owner
without FORCE, BYPASSRLS, superuser all count as not subject).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ace_shared.errors import PermissionDeniedError
from ace_shared.nodes.ident import TableName

if TYPE_CHECKING:  # psycopg2 loads with the first connection, not with a command's options
    from psycopg2.extensions import cursor

_RLS_SQL = """
SELECT pg_catalog.row_security_active(c.oid),
       (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(p.polname), ', '
                                     ORDER BY p.polname)
          FROM pg_catalog.pg_policy p WHERE p.polrelid OPERATOR(pg_catalog.=) c.oid),
       current_user
  FROM pg_catalog.pg_class c
 WHERE c.oid OPERATOR(pg_catalog.=) %s
"""


def refuse_row_security(cur: cursor, oid: int, table: TableName, node: str) -> None:
    """Raise :class:`PermissionDeniedError` when row-level security applies to this session."""
    cur.execute(_RLS_SQL, (oid,))
    row = cur.fetchone()
    if row is None or not row[0]:
        return
    policies = f"policy {row[1]}" if row[1] else "no policy, so it sees no rows"
    raise PermissionDeniedError(
        f"Table {table.display} on node {node} has row-level security ({policies}) that "
        f"applies to role {row[2]}, so ACE would see only some of its rows; grant the role "
        "BYPASSRLS or run as the table's owner (see docs/security.md).")
