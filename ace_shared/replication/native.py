"""PostgreSQL's own logical replication: publications stand for replication sets.

A publication's flags are its ``pubinsert``/``pubupdate``/``pubdelete``/
``pubtruncate``; a subscription's provider is named by its ``dbname`` and
``host:port`` from the connection string (PostgreSQL has no node names), and its
status comes from ``pg_stat_subscription`` (a running apply worker means
"replicating"). Forward origins map to ``origin`` (``any`` forwards all,
``none`` only local changes; PostgreSQL 16+), apply delay to none (not supported).
"""

from __future__ import annotations

import re

from psycopg2.extensions import cursor

from ace_shared.nodes.ident import display_ident
from ace_shared.replication.model import NodeReplication, ReplicationSet, Subscription
from ace_shared.replication.pglogical import FLAG_NAMES

_PUBS = """
SELECT p.pubname, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, p.puballtables,
       coalesce(pg_catalog.array_agg(ARRAY[t.schemaname::pg_catalog.text,
           t.tablename::pg_catalog.text]
                          ORDER BY t.schemaname, t.tablename)
                FILTER (WHERE t.tablename IS NOT NULL), '{}')
FROM pg_catalog.pg_publication p
LEFT JOIN pg_catalog.pg_publication_tables t ON t.pubname OPERATOR(pg_catalog.=) p.pubname
GROUP BY p.pubname, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, p.puballtables
ORDER BY p.pubname
"""

_SUBS_OF = """
SELECT s.subname, {conninfo}, s.subenabled, s.subpublications,
       EXISTS (SELECT 1 FROM pg_catalog.pg_stat_subscription st
               WHERE st.subid OPERATOR(pg_catalog.=) s.oid AND st.pid IS NOT NULL
                   AND st.relid IS NULL)
FROM pg_catalog.pg_subscription s
WHERE s.subdbid OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_database
    WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
ORDER BY s.subname
"""
# the connection strings, where the login may read them; otherwise empty (no provider named)
_SUBS = _SUBS_OF.format(conninfo="s.subconninfo")
_SUBS_UNPRIVILEGED = _SUBS_OF.format(conninfo="''")

_CONNINFO_PART = re.compile(r"(host|hostaddr|port|dbname)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def provider_address(conninfo: str) -> tuple[str, int, str]:
    """``(host, port, dbname)`` of a connection string (empty host and dbname where unset)."""
    parts = {k: v.strip("'") for k, v in _CONNINFO_PART.findall(conninfo or "")}
    port = parts.get("port", "5432")
    return (parts.get("host") or parts.get("hostaddr") or "",
            int(port) if port.isdigit() else 0, parts.get("dbname", ""))


def provider_from_conninfo(conninfo: str) -> str:
    """``host:port/dbname`` from a connection string; the password is never read out."""
    parts = {k: v.strip("'") for k, v in _CONNINFO_PART.findall(conninfo or "")}
    host = parts.get("host") or parts.get("hostaddr") or "?"
    return f"{host}:{parts.get('port', '5432')}/{parts.get('dbname', '?')}"


def _may_read_conninfo(cur: cursor) -> bool:
    """Whether the session may read ``subconninfo``: a superuser, or a login granted the
    column (docs/security.md: ACE's login is not a superuser)."""
    cur.execute("SELECT pg_catalog.has_column_privilege("
                "'pg_catalog.pg_subscription', 'subconninfo', 'SELECT')")
    row = cur.fetchone()
    return bool(row and row[0])


def read_native(cur: cursor, node: str) -> NodeReplication:
    """Read publications (with their tables) and subscriptions of the current database."""
    cur.execute(_PUBS)
    sets = tuple(
        ReplicationSet(name=r[0], flags=dict(zip(FLAG_NAMES, r[1:5], strict=True))
                       | {"all_tables": bool(r[5])},
                       tables=tuple(f"{display_ident(a)}.{display_ident(b)}" for a, b in r[6]))
        for r in cur.fetchall()
    )
    # subconninfo is readable by superusers and those granted it only (it may hold a password)
    cur.execute(_SUBS if _may_read_conninfo(cur) else _SUBS_UNPRIVILEGED)
    subs = tuple(
        Subscription(name=r[0], provider=provider_from_conninfo(r[1]), enabled=bool(r[2]),
                     sets=tuple(r[3] or ()), forward_origins=(), apply_delay="0",
                     status=("replicating" if r[4] else "down") if r[2] else "disabled")
        for r in cur.fetchall()
    )
    cur.execute("SELECT pg_catalog.current_setting('cluster_name'), inet_server_port()")
    name, port = cur.fetchone()
    return NodeReplication(node=node, system="native", identity=name or f"port {port}",
                           sets=sets, subscriptions=subs)
