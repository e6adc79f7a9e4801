"""One way for a test to run SQL on a node: :func:`run_sql`.

Fixture SQL runs as the DSN's login (``pg_cluster.node_dsn(i)`` is ACE's own,
``admin_dsn(i, dbname)`` the superuser's), in one transaction that is committed, or
statement by statement (``autocommit``) for those that refuse a transaction block
(``CREATE DATABASE``, ``CREATE SUBSCRIPTION``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg2

Statement = str | tuple[str, Sequence[Any]]  # SQL text, or SQL text and its own parameters
Rows = list[tuple[Any, ...]]


def run_sql(dsn: str, *statements: Statement,
            params: Sequence[Any] | Mapping[str, Any] | None = None,
            options: str | None = None, autocommit: bool = False) -> Rows:
    """Run ``statements`` on one node in one transaction; the last one's rows (if any).

    A plain statement runs with ``params`` (None: its text is sent as written, ``%``
    and all); a ``(text, parameters)`` pair with its own. ``options`` are the
    connection's startup options (``-c TimeZone=UTC``).
    """
    conn = psycopg2.connect(dsn, **({"options": options} if options else {}))
    conn.autocommit = autocommit  # (psycopg2's ``with conn`` would open a block even so)
    try:
        with conn.cursor() as cur:
            rows: Rows = []
            for statement in statements:
                text, args = statement if isinstance(statement, tuple) else (statement, params)
                cur.execute(text, args)
                rows = cur.fetchall() if cur.description else []
        if not autocommit:
            conn.commit()
        return rows
    finally:
        conn.close()
