"""What a table looks like on a node, and whether all nodes agree on it.

A diff is only meaningful when every node has the same columns with the same
types and the same primary key. Column order may differ between nodes (a column
added later on one of them); ACE builds every row expression by name in the
first node's order, so order differences do not matter.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2.extensions import cursor

from ace_shared.errors import TableError
from ace_shared.nodes.ident import TableName, quote_ident
from ace_shared.nodes.rowsecurity import refuse_row_security

# Types whose binary hash is equal exactly when their pinned text form is equal.
# Everything else (numeric scale, -0 floats, enum OIDs, interval normalisation,
# jsonb numbers, array bounds, types with no hash at all) is hashed through text.
_BINARY_HASH_EXACT = {
    "int2", "int4", "int8", "oid", "bool", "text", "varchar", "bpchar", "name", "char",
    "date", "timestamp", "timestamptz", "time", "timetz", "uuid", "bytea", "macaddr",
}
_TEXT_LIKE = {"text", "varchar", "bpchar", "name"}


@dataclass(frozen=True)
class Column:
    """One column: its name, its SQL type as the catalog prints it, and how to hash it."""

    name: str
    type_sql: str
    base_type: str
    binary_hash_exact: bool
    collation_sql: str | None = None

    @property
    def ident(self) -> str:
        return quote_ident(self.name)


@dataclass(frozen=True)
class TableShape:
    """Columns (in the first node's order) and primary key of a table."""

    table: TableName
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    server_version_num: int = 150000

    @property
    def key_columns(self) -> tuple[Column, ...]:
        by_name = {c.name: c for c in self.columns}
        return tuple(by_name[k] for k in self.key)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def signature(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((c.name, c.type_sql) for c in self.columns))


_COLUMNS_SQL = """
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       coalesce(bt.typname, t.typname),
       coalesce(bt.typtype, t.typtype),
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> coalesce(bt.typcollation, t.typcollation)
            THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END,
       coalesce(co.collisdeterministic, true)
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
  LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
 WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

_KEY_SQL = """
SELECT a.attname
  FROM pg_index i
  JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid = %s AND i.indisprimary
 ORDER BY k.ord
"""


def read_shape(cur: cursor, table: TableName, node: str) -> TableShape:
    """Read the shape of ``table`` on one node."""
    cur.execute(
        "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (table.schema, table.table),
    )
    found = cur.fetchone()
    if found is None or found[1] not in ("r", "p"):
        raise TableError(f"Table {table.display} does not exist on node {node}.")
    oid = found[0]
    refuse_row_security(cur, oid, table, node)
    cur.execute(_COLUMNS_SQL, (oid,))
    columns = []
    for name, type_sql, base, typtype, coll, deterministic in cur.fetchall():
        exact = (base in _BINARY_HASH_EXACT and typtype == "b"
                 and (base not in _TEXT_LIKE or deterministic))
        columns.append(Column(name, type_sql, base, exact, coll))
    cur.execute(_KEY_SQL, (oid,))
    key = tuple(r[0] for r in cur.fetchall())
    cur.execute("SELECT current_setting('server_version_num')::int")
    version = cur.fetchone()[0]
    if not key:
        raise TableError(
            f"Table {table.display} has no primary key on node {node}; ACE needs one to "
            "match rows between nodes."
        )
    return TableShape(table, tuple(columns), key, version)


def reconcile_shapes(shapes: dict[str, TableShape]) -> TableShape:
    """Check that every node has the same columns and key; return the common shape."""
    names = list(shapes)
    first = shapes[names[0]]
    for other in names[1:]:
        shape = shapes[other]
        if shape.key != first.key:
            raise TableError(
                f"Table {first.table.display} has primary key ({', '.join(first.key)}) on node "
                f"{names[0]} but ({', '.join(shape.key)}) on node {other}; make the keys "
                "match before comparing."
            )
        if shape.signature() != first.signature():
            a, b = dict(first.signature()), dict(shape.signature())
            diffs = sorted(set(a.items()) ^ set(b.items()))
            cols = sorted({name for name, _ in diffs})
            raise TableError(
                f"Table {first.table.display} has different columns on nodes {names[0]} and "
                f"{other} (differing: {', '.join(cols)}); make the schemas match first."
            )
        for mine, theirs in zip(first.key_columns, shape.key_columns, strict=True):
            # key ranges are cut in key order, which a collation defines
            if mine.collation_sql != theirs.collation_sql:
                raise TableError(
                    f"Key column {mine.name} of table {first.table.display} has collation "
                    f"{mine.collation_sql or 'default'} on node {names[0]} but "
                    f"{theirs.collation_sql or 'default'} on node {other}; make them match "
                    "before comparing."
                )
    version = min(s.server_version_num for s in shapes.values())
    return TableShape(first.table, first.columns, first.key, version)


def shape_to_dict(shape: TableShape) -> dict[str, object]:
    return {
        "schema": shape.table.schema, "table": shape.table.table, "key": list(shape.key),
        "server_version_num": shape.server_version_num,
        "columns": [
            {"name": c.name, "type": c.type_sql, "base_type": c.base_type,
             "binary_hash_exact": c.binary_hash_exact, "collation": c.collation_sql}
            for c in shape.columns
        ],
    }


def shape_from_dict(data: dict[str, object]) -> TableShape:
    cols = tuple(
        Column(c["name"], c["type"], c["base_type"], c["binary_hash_exact"], c["collation"])
        for c in data["columns"]  # type: ignore[attr-defined]
    )
    return TableShape(TableName(str(data["schema"]), str(data["table"])), cols,
                      tuple(data["key"]), int(data["server_version_num"]))  # type: ignore[arg-type,call-overload]
