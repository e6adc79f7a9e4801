"""Which node a replication origin stands for, on one node: the origin name to a cluster node.

PostgreSQL stamps every replicated transaction with the replication origin of
the subscription that applied it (``pg_xact_commit_timestamp_origin``); origin
0 is a local change. Each system names its origins its own way:

* pglogical and Spock: the subscription's slot name (``sub_slot_name``), and
  the subscription's ``sub_origin`` is the provider node;
* PostgreSQL's own subscriptions: ``pg_<subscription oid>``, and the provider is
  named only by the connection string (``host``, ``port``, ``dbname``), which ACE's
  login reads where it was granted ``SELECT (subconninfo)`` (docs/security.md).

A provider is matched to a node of the cluster file by its name (pglogical and
Spock nodes named like the cluster's nodes) or else by its address. Where
nothing matches, the origin is unknown (``None``) rather than guessed.
"""

from __future__ import annotations

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.replication.detect import detect_system
from ace_shared.replication.native import provider_address

Address = tuple[str, int, str]  # host, port, database
LOOPBACK = {"localhost", "127.0.0.1", "::1", ""}

_CATALOG_SUBS = """
SELECT s.sub_slot_name::pg_catalog.text, n.node_name::pg_catalog.text,
       coalesce((SELECT i.if_dsn FROM {s}.node_interface i
                 WHERE i.if_nodeid OPERATOR(pg_catalog.=) n.node_id LIMIT 1), '')
FROM {s}.subscription s JOIN {s}.node n ON n.node_id OPERATOR(pg_catalog.=) s.sub_origin
"""

_NATIVE_SUBS_OF = """
SELECT 'pg_' OPERATOR(pg_catalog.||) s.oid::pg_catalog.text, s.subname::pg_catalog.text,
       {conninfo}
FROM pg_catalog.pg_subscription s
WHERE s.subdbid OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_database
    WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
"""


def _same_host(a: str, b: str) -> bool:
    return a == b or (a in LOOPBACK and b in LOOPBACK) or a.startswith("/") and b in LOOPBACK


def match_address(conninfo: str, peers: dict[str, Address]) -> str | None:
    """The cluster node a connection string points at, if exactly one does."""
    host, port, dbname = provider_address(conninfo)
    found = [name for name, (h, p, d) in peers.items()
             if p == port and d == dbname and _same_host(host, h)]
    return found[0] if len(found) == 1 else None


def _catalog_origins(cur: cursor, system: str, peers: dict[str, Address]) -> dict[str, str]:
    cur.execute(sql.SQL(_CATALOG_SUBS).format(s=sql.Identifier(system)))
    out = {}
    for slot, provider, dsn in cur.fetchall():
        node = provider if provider in peers else match_address(dsn, peers)
        if node is not None:
            out[slot] = node
    return out


def _native_origins(cur: cursor, peers: dict[str, Address]) -> dict[str, str]:
    cur.execute("SELECT pg_catalog.has_column_privilege("
                "'pg_catalog.pg_subscription', 'subconninfo', 'SELECT')")
    readable = bool(cur.fetchone()[0])
    cur.execute(_NATIVE_SUBS_OF.format(conninfo="s.subconninfo" if readable else "''"))
    out = {}
    for origin, _subname, conninfo in cur.fetchall():
        node = match_address(conninfo, peers) if conninfo else None
        if node is not None:
            out[origin] = node
    return out


def read_origin_names(cur: cursor, peers: dict[str, Address]) -> dict[str, str]:
    """Origin name to cluster node for every subscription of this node's database.

    ``peers`` are every node of the cluster file (not only those compared: a
    failed node is named by its survivors' origins). A catalog the login may not
    read gives no names, never an error: the diff goes on with origins unknown.
    """
    cur.execute("SAVEPOINT ace_origins")
    try:
        system = detect_system(cur)
        found = {}
        if system in ("spock", "pglogical"):
            found = _catalog_origins(cur, system, peers)
        if system is not None:
            # a node may run pglogical and have native subscriptions too
            found = {**_native_origins(cur, peers), **found}
    except psycopg2.Error:
        cur.execute("ROLLBACK TO SAVEPOINT ace_origins")
        return {}
    cur.execute("RELEASE SAVEPOINT ace_origins")
    return found


def commit_ts_tracked(cur: cursor) -> bool:
    """Whether the node records commit timestamps (``track_commit_timestamp``)."""
    cur.execute("SELECT pg_catalog.current_setting('track_commit_timestamp')::pg_catalog.bool")
    return bool(cur.fetchone()[0])


_ORIGIN_PROGRESS = """
SELECT o.roname::pg_catalog.text, s.remote_lsn::pg_catalog.text
FROM pg_catalog.pg_replication_origin o
LEFT JOIN pg_catalog.pg_replication_origin_status s
    ON s.local_id OPERATOR(pg_catalog.=) o.roident
"""


def origin_progress(cur: cursor) -> dict[str, str | None]:
    """Each origin's name and how far this node has applied its stream (``remote_lsn``
    as text; ``None`` where the login may not read ``pg_replication_origin_status``)."""
    cur.execute("SAVEPOINT ace_progress")
    try:
        cur.execute(_ORIGIN_PROGRESS)
        rows = {name: lsn for name, lsn in cur.fetchall()}
    except psycopg2.errors.InsufficientPrivilege:
        cur.execute("ROLLBACK TO SAVEPOINT ace_progress")
        return {}
    cur.execute("RELEASE SAVEPOINT ace_progress")
    return rows
