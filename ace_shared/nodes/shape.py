"""What a table looks like on a node, and whether all nodes agree on it.

A diff is only meaningful when every node has the same columns with the same
types and the same primary key. Column order may differ between nodes (a column
added later on one of them); ACE builds every row expression by name in the
first node's order, so order differences do not matter.

ACE's sessions often have more rights than the table's owner (an operator's
superuser, another caller), so the SQL built from a shape must not run code the
owner controls (docs/security.md, "Code a table owner controls"). The shape
therefore records, for each column, its *base* type past every domain
(:attr:`Column.cast_sql`: key values are cast to it, so no domain CHECK runs)
and how to print it without a cast the type's owner could define
(:attr:`Column.text_sql`). A key column whose base type is not built in
(a composite, a range, an extension's type) is refused: its input and
comparison could run the type owner's code. Enums are accepted: their input,
output and comparison are PostgreSQL's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ace_shared.errors import TableError
from ace_shared.nodes.ident import TableName, quote_ident
from ace_shared.nodes.rowsecurity import refuse_row_security

if TYPE_CHECKING:  # psycopg2 loads with the first connection, not with a command's options
    from psycopg2.extensions import cursor

# Types whose binary hash is equal exactly when their pinned text form is equal.
# Everything else (numeric scale, -0 floats, enum OIDs, interval normalisation,
# jsonb numbers, array bounds, types with no hash at all) is hashed through text.
_BINARY_HASH_EXACT = {
    "int2", "int4", "int8", "oid", "bool", "text", "varchar", "bpchar", "name", "char",
    "date", "timestamp", "timestamptz", "time", "timetz", "uuid", "bytea", "macaddr",
}
_TEXT_LIKE = {"text", "varchar", "bpchar", "name"}
# Objects with a lower OID come with PostgreSQL (FirstNormalObjectId).
FIRST_USER_OID = 16384


@dataclass(frozen=True)
class Column:
    """One column: its name, its SQL type as the catalog prints it, and how to hash it.

    ``cast_sql`` is the column's base type (past every domain), schema-qualified:
    what key values are cast to. ``output_fn`` is set for a base type that is
    not built in (an enum, a composite): its output function, called instead of
    ``::text``, which would pick up a cast the type's owner created.
    ``key_refusal`` says why the column may not be a key, if it may not.
    """

    name: str
    type_sql: str
    base_type: str
    binary_hash_exact: bool
    collation_sql: str | None = None
    cast_sql: str = ""
    output_fn: str | None = None
    key_refusal: str | None = None

    @property
    def ident(self) -> str:
        return quote_ident(self.name)

    @property
    def display_type(self) -> str:
        """The type as diff files record it and users read it: as PostgreSQL printed it
        with ``public`` on the search path (ACE's sessions print ``public.`` now)."""
        return self.type_sql.removeprefix("public.")

    @property
    def builtin_cast(self) -> bool:
        """Whether a text value may be cast to :attr:`cast_sql` with ``::`` (a built-in
        base type: no one but a superuser can add a cast to it)."""
        return self.output_fn is None

    def text_sql(self, expr: str) -> str:
        """SQL printing ``expr`` (this column's value) as text, running no owner's cast."""
        if self.output_fn is None:
            return f"{expr}::pg_catalog.text"
        return f"pg_catalog.textin({self.output_fn}({expr}))"


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
       pg_catalog.format_type(a.atttypid, a.atttypmod),
       COALESCE(bt.typname, t.typname),
       COALESCE(bt.typtype, t.typtype),
       CASE WHEN a.attcollation OPERATOR(pg_catalog.<>) 0
             AND a.attcollation OPERATOR(pg_catalog.<>) COALESCE(bt.typcollation,
                                                                            t.typcollation)
            THEN pg_catalog.quote_ident(cn.nspname) OPERATOR(pg_catalog.||) '.'
                 OPERATOR(pg_catalog.||) pg_catalog.quote_ident(co.collname) END,
       COALESCE(co.collisdeterministic, true),
       b.oid::pg_catalog.int8,
       b.typname,
       b.typtype,
       b.mod,
       pg_catalog.format_type(b.oid, b.mod),
       bn.nspname,
       CASE WHEN b.oid OPERATOR(pg_catalog.>=) %(first)s
            THEN pg_catalog.quote_ident(pn.nspname) OPERATOR(pg_catalog.||) '.'
                 OPERATOR(pg_catalog.||) pg_catalog.quote_ident(p.proname) END
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
  LEFT JOIN pg_catalog.pg_type bt ON t.typtype OPERATOR(pg_catalog.=) 'd'
        AND bt.oid OPERATOR(pg_catalog.=) t.typbasetype
  LEFT JOIN pg_catalog.pg_collation co ON co.oid OPERATOR(pg_catalog.=) a.attcollation
  LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid OPERATOR(pg_catalog.=) co.collnamespace
  CROSS JOIN LATERAL (
      -- the base type past every domain, with the typmod the innermost domain gives it
      WITH RECURSIVE chain(oid, mod, depth) AS (
          SELECT a.atttypid, a.atttypmod, 0
          UNION ALL
          SELECT d.typbasetype,
                 CASE WHEN c.mod OPERATOR(pg_catalog.<>) -1 THEN c.mod ELSE d.typtypmod END,
                 c.depth OPERATOR(pg_catalog.+) 1
            FROM chain c JOIN pg_catalog.pg_type d ON d.oid OPERATOR(pg_catalog.=) c.oid
           WHERE d.typtype OPERATOR(pg_catalog.=) 'd')
      SELECT ty.oid, c.mod, ty.typname, ty.typtype, ty.typnamespace, ty.typoutput
        FROM chain c JOIN pg_catalog.pg_type ty ON ty.oid OPERATOR(pg_catalog.=) c.oid
       ORDER BY c.depth DESC LIMIT 1) b
  JOIN pg_catalog.pg_namespace bn ON bn.oid OPERATOR(pg_catalog.=) b.typnamespace
  JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) b.typoutput
  JOIN pg_catalog.pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) p.pronamespace
 WHERE a.attrelid OPERATOR(pg_catalog.=) %(rel)s AND a.attnum OPERATOR(pg_catalog.>) 0
   AND NOT a.attisdropped
 ORDER BY a.attnum
"""


def _cast_sql(base_oid: int, typname: str, mod: int, printed: str, namespace: str) -> str:
    """The schema-qualified SQL name of a base type (with its typmod, if any)."""
    if base_oid < FIRST_USER_OID and mod != -1:
        # only built-in types spelt with SQL keywords take a typmod ("character
        # varying(10)", "numeric(12,2)[]"), and the keywords name pg_catalog's types
        return printed
    if base_oid < FIRST_USER_OID:
        return f"pg_catalog.{quote_ident(typname)}"
    return f"{quote_ident(namespace)}.{quote_ident(typname)}"


def _key_refusal(name: str, type_sql: str, base_oid: int, typtype: str) -> str | None:
    """Why a column of this type may not be a key, or None.

    A built-in base type, or an enum, is compared and read by PostgreSQL's own
    code; anything else (a composite, a range, an extension's type, an array
    of such) has input and comparison functions its owner may have written.
    """
    if base_oid < FIRST_USER_OID or typtype == "e":
        return None
    return (f"key column {name} has type {type_sql}, whose base type is not built in, so "
            "reading and comparing its keys could run code of the type's owner; key the "
            "table by columns of built-in types (or domains over them, or enums)")


_KEY_SQL = """
SELECT a.attname
  FROM pg_catalog.pg_index i
  JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid
   AND a.attnum OPERATOR(pg_catalog.=) k.attnum
 WHERE i.indrelid OPERATOR(pg_catalog.=) %s AND i.indisprimary
 ORDER BY k.ord
"""


def case_hint(cur: cursor, table: TableName) -> str:
    """``; did you mean "Sales"."Orders"? ...`` when only the letters' case keeps a name from
    matching: PostgreSQL folds unquoted names to lower case, so ``Sales.Orders`` means
    ``sales.orders``, and the mixed-case table must be written in double quotes."""
    cur.execute(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
        "WHERE pg_catalog.lower(n.nspname) OPERATOR(pg_catalog.=) pg_catalog.lower(%s) "
        "AND pg_catalog.lower(c.relname) OPERATOR(pg_catalog.=) pg_catalog.lower(%s) "
        "AND c.relkind IN ('r', 'p') ORDER BY 1, 2 LIMIT 1",
        (table.schema, table.table))
    row = cur.fetchone()
    return "" if row is None else mixed_case_hint(TableName(row[0], row[1]).display)


def mixed_case_hint(quoted: str) -> str:
    """The hint for a name that exists only in another case, written as it must be typed."""
    shell = "'" + quoted.replace("'", "'\\''") + "'"
    return (f"; did you mean {quoted}? Unquoted names are read in lower case, so write a "
            f"mixed-case name in double quotes (in a shell: {shell})")


def read_shape(cur: cursor, table: TableName, node: str) -> TableShape:
    """Read the shape of ``table`` on one node."""
    cur.execute(
        "SELECT c.oid, c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
        "WHERE n.nspname OPERATOR(pg_catalog.=) %s AND c.relname OPERATOR(pg_catalog.=) %s",
        (table.schema, table.table),
    )
    found = cur.fetchone()
    if found is None or found[1] not in ("r", "p"):
        raise TableError(f"Table {table.display} does not exist on node {node}"
                         f"{case_hint(cur, table) if found is None else ''}.")
    oid = found[0]
    refuse_row_security(cur, oid, table, node)
    cur.execute(_COLUMNS_SQL, {"rel": oid, "first": FIRST_USER_OID})
    columns = []
    for (name, type_sql, base, typtype, coll, deterministic, base_oid, base_name, base_typtype,
         mod, printed, namespace, output_fn) in cur.fetchall():
        # (one domain deep, as mtree's stored hashes were computed)
        exact = (base in _BINARY_HASH_EXACT and typtype == "b"
                 and (base not in _TEXT_LIKE or deterministic))
        columns.append(Column(
            name, type_sql, base, exact, coll,
            cast_sql=_cast_sql(base_oid, base_name, mod, printed, namespace),
            output_fn=output_fn,
            key_refusal=_key_refusal(name, type_sql, base_oid, base_typtype)))
    cur.execute(_KEY_SQL, (oid,))
    key = tuple(r[0] for r in cur.fetchall())
    cur.execute("SELECT pg_catalog.current_setting('server_version_num')::pg_catalog.int4")
    version = cur.fetchone()[0]
    if not key:
        raise TableError(
            f"Table {table.display} has no primary key on node {node}; ACE needs one to "
            "match rows between nodes."
        )
    by_name = {c.name: c for c in columns}
    for k in key:
        refusal = by_name[k].key_refusal
        if refusal:
            raise TableError(f"Table {table.display} on node {node}: {refusal}.")
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
             "binary_hash_exact": c.binary_hash_exact, "collation": c.collation_sql,
             "cast": c.cast_sql, "output_fn": c.output_fn, "key_refusal": c.key_refusal}
            for c in shape.columns
        ],
    }


def shape_from_dict(data: Mapping[str, Any]) -> TableShape:
    """The shape :func:`shape_to_dict` wrote, read back from its JSON."""
    columns: list[dict[str, Any]] = data["columns"]
    if any("cast" not in c for c in columns):
        # planned by an ACE that did not record base types: its casts could run owner code
        raise TableError("This task was planned by an older version of ACE; run it again.")
    cols = tuple(
        Column(c["name"], c["type"], c["base_type"], c["binary_hash_exact"],
               c["collation"], c["cast"], c["output_fn"], c["key_refusal"])
        for c in columns
    )
    return TableShape(TableName(str(data["schema"]), str(data["table"])), cols,
                      tuple(data["key"]), int(data["server_version_num"]))
