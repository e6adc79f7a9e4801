"""Which tables a replication set holds on each node, and where that differs.

The set is read on every compared node, not only the first: a table in the set
on some nodes only is reported, and so is a table the set names on a node
that does not have it at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2.extensions import cursor

from ace_shared.errors import NotFoundError
from ace_shared.nodes.ident import split_identifiers
from ace_shared.replication.model import NodeReplication


@dataclass(frozen=True)
class Membership:
    tables: list[str]  # every table the set holds on any node, sorted
    in_set_on: dict[str, list[str]]  # table -> nodes whose set holds it
    nodes_without_set: list[str]


def set_membership(repset: str, found: dict[str, NodeReplication]) -> Membership:
    """The set's tables on every node; an error when no node has the set."""
    in_set_on: dict[str, list[str]] = {}
    without = []
    for node, rep in found.items():
        rs = rep.set_named(repset)
        if rs is None:
            without.append(node)
            continue
        for table in rs.tables:
            in_set_on.setdefault(table, []).append(node)
    if len(without) == len(found):
        names = sorted({s.name for rep in found.values() for s in rep.sets})
        raise NotFoundError(f"Replication set {repset} exists on none of the nodes "
                            f"{', '.join(found)} (they have: {', '.join(names) or 'none'}).")
    return Membership(sorted(in_set_on), in_set_on, without)


def existing_tables(cur: cursor, tables: list[str]) -> set[str]:
    """Which of ``tables`` (display names) exist on this node, in one query."""
    pairs = [split_identifiers(t) for t in tables]
    cur.execute(
        "SELECT s, t FROM ROWS FROM (pg_catalog.unnest(%s::pg_catalog.text[]), "
        "pg_catalog.unnest(%s::pg_catalog.text[])) AS x(s, t) WHERE EXISTS ("
        " SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
        " ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
        " WHERE n.nspname OPERATOR(pg_catalog.=) x.s AND c.relname OPERATOR(pg_catalog.=) x.t"
        " AND c.relkind IN ('r', 'p'))",
        ([p[0] for p in pairs], [p[1] for p in pairs]))
    present = {(s, t) for s, t in cur.fetchall()}
    return {name for name, p in zip(tables, pairs, strict=True) if tuple(p) in present}
