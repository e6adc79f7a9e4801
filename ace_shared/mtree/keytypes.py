"""A tracked table's key as its built-in base types: the only types ACE's trees hold or cast to.

A domain belongs to whoever created it, and its ``CHECK`` constraints and
``DEFAULT`` run wherever a value is cast to it or a row with a column of it is
inserted without that column. So ACE's own tables (the change log, the leaves)
store keys in the key's *base* type, and every key bound ACE sends is cast to
that base type: comparisons with the table's domain-typed key use the base
type's operators anyway, so the order is the same, and the table's index still
serves them. A base type that is not built into PostgreSQL (an enum, a composite,
a range or array of such a type) is refused: its casts and operators may be its
owner's functions.

The table's :class:`TableShape` keeps the key's own types (the diff file records
them, and a changed domain changes the tree's shape signature); :func:`cast_shape`
gives the copy whose key types are the base types, for every query that casts a
key bound and for the DDL of ACE's tables. (``nodes/shape.py`` reads only the
base type's name, not its full SQL with modifiers, hence this module.)
"""

from __future__ import annotations

from dataclasses import replace

from psycopg2.extensions import cursor

from ace_shared.errors import TableError
from ace_shared.mtree.tree import each_session
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.nodes.shape import TableShape

# Objects with an oid below this were made by initdb: PostgreSQL's own (FirstNormalObjectId).
FIRST_USER_OID = 16384

# Every key column's type followed down through domains (over domains) to its base type;
# the typmod of a domain's column lives on the domain (typtypmod), not on the column.
_BASES_SQL = """
WITH RECURSIVE walk AS (
    SELECT a.attname AS name, a.atttypid AS type_oid, a.atttypmod AS typmod, 0 AS depth
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) %s::pg_catalog.regclass
       AND a.attname OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.name[])
       AND NOT a.attisdropped
    UNION ALL
    SELECT w.name, t.typbasetype, t.typtypmod, w.depth OPERATOR(pg_catalog.+) 1
      FROM walk w JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) w.type_oid
     WHERE t.typtype OPERATOR(pg_catalog.=) 'd'
)
SELECT DISTINCT ON (name) name, pg_catalog.format_type(type_oid, typmod),
       type_oid OPERATOR(pg_catalog.<) %s::pg_catalog.oid
  FROM walk ORDER BY name, depth DESC
"""


def read_key_bases(cur: cursor, shape: TableShape, node: str) -> tuple[str, ...]:
    """The SQL of every key column's built-in base type on one node, in key order; a key
    of any other type is refused in one sentence."""
    table = f"{_quote(shape.table.schema)}.{_quote(shape.table.table)}"
    cur.execute(_BASES_SQL, (table, list(shape.key), FIRST_USER_OID))
    found = {name: (sql_type, bool(builtin)) for name, sql_type, builtin in cur.fetchall()}
    bases = []
    for col in shape.key_columns:
        sql_type, builtin = found[col.name]
        if not builtin:
            raise TableError(
                f"Key column {col.name} of table {shape.table.display} is of type "
                f"{col.type_sql} on node {node}, which is not built into PostgreSQL (nor a "
                "domain over a built-in type), so its functions could run its owner's code "
                "in ACE's sessions; mtree cannot track it (use table-diff).")
        bases.append(sql_type)
    return tuple(bases)


def key_bases(sessions: NodeSessions, shape: TableShape) -> tuple[str, ...]:
    """The key's base types, the same on every node (or one sentence saying where not)."""
    return common_bases(shape, each_session(
        sessions, lambda n: lambda cur: read_key_bases(cur, shape, n)))


def common_bases(shape: TableShape, per_node: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Every node's :func:`read_key_bases`, checked to be the same (one sentence if not)."""
    first_node, first = next(iter(per_node.items()))
    for node, bases in per_node.items():
        if bases != first:
            raise TableError(
                f"The key of table {shape.table.display} has base types "
                f"({', '.join(first)}) on node {first_node} but ({', '.join(bases)}) on node "
                f"{node}; make its types match before building a Merkle tree.")
    return first


def cast_shape(shape: TableShape, bases: tuple[str, ...]) -> TableShape:
    """``shape`` with its key columns' types replaced by their base types."""
    by_name = dict(zip(shape.key, bases, strict=True))
    columns = tuple(replace(c, type_sql=by_name[c.name]) if c.name in by_name else c
                    for c in shape.columns)
    return replace(shape, columns=columns)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def logged_shape(shape: TableShape, prefix: str = "k") -> TableShape:
    """``shape`` (a cast shape) as the log and kept keys hold its key: columns ``k0``, ``k1``,
    ... of the key's base types, so the key helpers of :mod:`~ace_shared.diff.queries` apply
    (``prefix`` ``l``: the leaves' lower bounds ``l0``, ``l1``, ...)."""
    key = tuple(f"{prefix}{i}" for i in range(len(shape.key)))
    columns = tuple(replace(c, name=name, cast_sql=c.type_sql)
                    for c, name in zip(shape.key_columns, key, strict=True))
    return replace(shape, columns=columns, key=key)
