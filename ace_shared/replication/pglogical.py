"""Spock and pglogical: the same catalog (Spock was forked from pglogical) in another schema.

Each query reads one catalog once per node; table names are rendered from
``pg_namespace``/``pg_class`` rather than ``regclass`` text so they print alike
whatever the search path.
"""

from __future__ import annotations

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.nodes.ident import display_ident
from ace_shared.replication.model import NodeReplication, ReplicationSet, Subscription

_LOCAL = "SELECT n.node_name FROM {s}.local_node l JOIN {s}.node n ON n.node_id = l.node_id"

_SETS = """
SELECT rs.set_name, rs.replicate_insert, rs.replicate_update, rs.replicate_delete,
       rs.replicate_truncate,
       coalesce(pg_catalog.array_agg(ARRAY[ns.nspname::pg_catalog.text,
           c.relname::pg_catalog.text] ORDER BY ns.nspname, c.relname)
                FILTER (WHERE c.oid IS NOT NULL), '{{}}')
FROM {s}.replication_set rs
JOIN {s}.local_node l ON l.node_id OPERATOR(pg_catalog.=) rs.set_nodeid
LEFT JOIN {s}.replication_set_table t ON t.set_id OPERATOR(pg_catalog.=) rs.set_id
LEFT JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.set_reloid
LEFT JOIN pg_catalog.pg_namespace ns ON ns.oid OPERATOR(pg_catalog.=) c.relnamespace
GROUP BY rs.set_id, rs.set_name, rs.replicate_insert, rs.replicate_update,
         rs.replicate_delete, rs.replicate_truncate
ORDER BY rs.set_name
"""

_SUBS = """
SELECT s.sub_name, o.node_name, s.sub_enabled, coalesce(s.sub_replication_sets, '{{}}'),
       coalesce(s.sub_forward_origins, '{{}}'), coalesce(s.sub_apply_delay, '0')::pg_catalog.text
FROM {s}.subscription s
JOIN {s}.node o ON o.node_id OPERATOR(pg_catalog.=) s.sub_origin
ORDER BY s.sub_name
"""

# the status function differs in name between the two systems
_STATUS_FUNCTION = {"spock": "sub_show_status", "pglogical": "show_subscription_status"}

FLAG_NAMES = ("replicate_insert", "replicate_update", "replicate_delete", "replicate_truncate")


def _qualified(pair: list[str]) -> str:
    return f"{display_ident(pair[0])}.{display_ident(pair[1])}"


def _statuses(cur: cursor, system: str) -> dict[str, str]:
    """Subscription name to status; a status function that fails reports 'unknown'."""
    fn = sql.SQL("SELECT subscription_name::text, status::text FROM {}.{}()").format(
        sql.Identifier(system), sql.Identifier(_STATUS_FUNCTION[system]))
    cur.execute("SAVEPOINT ace_status")
    try:
        cur.execute(fn)
        rows = dict(cur.fetchall())
    except psycopg2.Error:  # a status function that fails (or is missing): no status
        cur.execute("ROLLBACK TO SAVEPOINT ace_status")
        return {}
    cur.execute("RELEASE SAVEPOINT ace_status")
    return rows


def read_catalog(cur: cursor, node: str, system: str) -> NodeReplication:
    """Read a Spock or pglogical node: its name, sets with tables, subscriptions."""
    s = sql.Identifier(system)
    cur.execute(sql.SQL(_LOCAL).format(s=s))
    row = cur.fetchone()
    identity = row[0] if row else ""
    cur.execute(sql.SQL(_SETS).format(s=s))
    sets = tuple(
        ReplicationSet(name=r[0], flags=dict(zip(FLAG_NAMES, r[1:5], strict=True)),
                       tables=tuple(_qualified(p) for p in r[5]))
        for r in cur.fetchall()
    )
    cur.execute(sql.SQL(_SUBS).format(s=s))
    subs_rows = cur.fetchall()
    statuses = _statuses(cur, system) if subs_rows else {}
    subs = tuple(
        Subscription(name=r[0], provider=r[1], enabled=bool(r[2]), sets=tuple(r[3]),
                     forward_origins=tuple(r[4]), apply_delay=r[5],
                     status=statuses.get(r[0], "unknown") if r[2] else "disabled")
        for r in subs_rows
    )
    return NodeReplication(node=node, system=system, identity=identity, sets=sets,
                           subscriptions=subs)
