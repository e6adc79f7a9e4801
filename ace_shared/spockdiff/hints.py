"""Hints an operator can act on: tables in no set, tables that cannot replicate
updates and deletes (no primary key and no replica identity), subscriptions down.

The tables of a node are read in one query; what counts as "in a set" comes
from the node's replication metadata.
"""

from __future__ import annotations

from typing import Any

from psycopg2.extensions import cursor

from ace_shared.nodes.ident import display_ident
from ace_shared.replication.model import NodeReplication

USER_TABLES = """
SELECT n.nspname, c.relname,
       EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
           WHERE k.conrelid OPERATOR(pg_catalog.=) c.oid AND k.contype OPERATOR(pg_catalog.=) 'p'),
       c.relreplident::pg_catalog.text
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n
    ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('information_schema', 'spock', 'pglogical')
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""


def read_user_tables(cur: cursor) -> list[tuple[str, bool, str]]:
    """``(schema.table, has primary key, replica identity)`` for every user table."""
    cur.execute(USER_TABLES)
    return [(f"{display_ident(s)}.{display_ident(t)}", pk, ri) for s, t, pk, ri in cur.fetchall()]


def node_hints(rep: NodeReplication, tables: list[tuple[str, bool, str]]) -> list[dict[str, Any]]:
    hints: list[dict[str, Any]] = []
    in_sets: dict[str, list[str]] = {}
    for s in rep.sets:
        for t in s.tables:
            in_sets.setdefault(t, []).append(s.name)
    all_tables = any(s.flags.get("all_tables") for s in rep.sets)
    for name, has_pk, replident in tables:
        if name not in in_sets and not all_tables:
            hints.append({"node": rep.node, "hint": "table in no replication set",
                          "table": name})
        elif not has_pk and replident in ("d", "n"):
            hints.append({"node": rep.node, "table": name, "sets": in_sets.get(name, []),
                          "hint": "table in a set without a primary key or replica identity: "
                                  "its updates and deletes cannot replicate"})
    for sub in rep.subscriptions:
        if sub.enabled and sub.status != "replicating":
            hints.append({"node": rep.node, "hint": f"subscription {sub.name} from "
                          f"{sub.provider} is {sub.status}", "subscription": sub.name})
        elif not sub.enabled:
            hints.append({"node": rep.node, "hint": f"subscription {sub.name} from "
                          f"{sub.provider} is disabled", "subscription": sub.name})
    return hints
