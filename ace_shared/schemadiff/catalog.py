"""Reading a schema's objects from the catalog: one query per object kind per node.

Each reader returns ``{identity: CatalogObject}``. Identities are what makes an
object the same object on two nodes: a relation's name, ``table.column``,
``table.constraint``, and a function's name with its full argument signature
(``pg_get_function_identity_arguments``), so overloads never collide. Object text
comes from PostgreSQL's deparsers (``pg_get_*def``, ``format_type``), read on
connections whose settings are pinned (``ace_shared.nodes.connection``), so the
same object prints alike on every node. Extension members are left out: they
belong to the extension, not to the schema's owner.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg2.extensions import cursor

from ace_shared.nodes.ident import display_ident


@dataclass(frozen=True)
class CatalogObject:
    """One object: the relation it belongs to (if any) and its compared attributes."""

    parent: str | None
    attrs: dict[str, Any] = field(default_factory=dict)


_NS = ("(SELECT oid FROM pg_catalog.pg_namespace "
       "WHERE nspname OPERATOR(pg_catalog.=) %(schema)s)")
_NOT_EXT = ("NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d "
            "WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.CLS'::pg_catalog.regclass "
            "AND d.objid OPERATOR(pg_catalog.=) OBJ AND d.deptype OPERATOR(pg_catalog.=) 'e')")


def _sql(text: str) -> str:
    """Fill the fixed fragments ``{NS}`` (the schema's oid) and ``{EXT cls obj}`` in."""
    text = text.replace("{NS}", _NS)
    return re.sub(r"\{EXT (\w+) ([\w.]+)\}",
                  lambda m: _NOT_EXT.replace("CLS", m[1]).replace("OBJ", m[2]), text)

TABLES = _sql("""
SELECT c.relname, c.relkind::pg_catalog.text, c.relpersistence::pg_catalog.text,
    c.relreplident::pg_catalog.text,
       (SELECT ic.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic
           ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
        WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indisreplident),
       CASE WHEN c.relkind OPERATOR(pg_catalog.=) 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END,
       (SELECT pg_catalog.quote_ident(pn.nspname)
           OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(pc.relname)
        FROM pg_catalog.pg_inherits ih JOIN pg_catalog.pg_class pc
            ON pc.oid OPERATOR(pg_catalog.=) ih.inhparent
        JOIN pg_catalog.pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) pc.relnamespace
            WHERE ih.inhrelid OPERATOR(pg_catalog.=) c.oid),
       array(SELECT a.attname::pg_catalog.text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum > 0
                 AND NOT a.attisdropped ORDER BY a.attnum)
FROM pg_catalog.pg_class c
WHERE c.relnamespace OPERATOR(pg_catalog.=) {NS} AND c.relkind IN ('r', 'p')
  AND {EXT pg_class c.oid}
""")

COLUMNS = _sql("""
SELECT c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
       CASE WHEN a.attcollation OPERATOR(pg_catalog.<>) t.typcollation
           THEN pg_catalog.quote_ident(co.collname) END,
       a.attnotnull, pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity::pg_catalog.text,
           a.attgenerated::pg_catalog.text
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid
JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
LEFT JOIN pg_catalog.pg_collation co ON co.oid OPERATOR(pg_catalog.=) a.attcollation
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid OPERATOR(pg_catalog.=) a.attrelid
    AND d.adnum OPERATOR(pg_catalog.=) a.attnum
WHERE c.relnamespace OPERATOR(pg_catalog.=) {NS} AND c.relkind IN ('r', 'p') AND a.attnum > 0
  AND NOT a.attisdropped
""")

CONSTRAINTS = _sql("""
SELECT c.relname, k.conname, k.contype::pg_catalog.text, pg_catalog.pg_get_constraintdef(k.oid,
    true)
FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c
    ON c.oid OPERATOR(pg_catalog.=) k.conrelid
WHERE c.relnamespace OPERATOR(pg_catalog.=) {NS} AND k.contype IN ('p', 'u', 'c', 'f', 'x')
""")

INDEXES = _sql("""
SELECT c.relname, i.relname, pg_catalog.pg_get_indexdef(i.oid)
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class i ON i.oid OPERATOR(pg_catalog.=) x.indexrelid
JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) x.indrelid
WHERE i.relnamespace OPERATOR(pg_catalog.=) {NS}
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
      WHERE k.conindid OPERATOR(pg_catalog.=) x.indexrelid
                  AND k.conrelid OPERATOR(pg_catalog.=) x.indrelid AND k.contype IN ('p', 'u', 'x'))
""")

TRIGGERS = _sql("""
SELECT c.relname, t.tgname, pg_catalog.pg_get_triggerdef(t.oid, true), t.tgenabled::pg_catalog.text
FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.tgrelid
WHERE c.relnamespace OPERATOR(pg_catalog.=) {NS} AND NOT t.tgisinternal
""")

VIEWS = _sql("""
SELECT c.relname, c.relkind::pg_catalog.text, pg_catalog.pg_get_viewdef(c.oid, true)
FROM pg_catalog.pg_class c
WHERE c.relnamespace OPERATOR(pg_catalog.=) {NS} AND c.relkind IN ('v', 'm')
  AND {EXT pg_class c.oid}
""")

SEQUENCES = _sql("""
SELECT c.relname, pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin,
       s.seqmax, s.seqcycle
FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.seqrelid
WHERE c.relnamespace OPERATOR(pg_catalog.=) {NS} AND {EXT pg_class c.oid}
""")

FUNCTIONS = _sql("""
SELECT p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid), p.prokind::pg_catalog.text,
       pg_catalog.pg_get_function_result(p.oid), l.lanname,
       CASE WHEN p.prosqlbody IS NOT NULL THEN pg_catalog.pg_get_function_sqlbody(p.oid)
           ELSE p.prosrc END,
       p.provolatile::pg_catalog.text, p.prosecdef, p.proisstrict, coalesce(p.proconfig,
           '{}')::pg_catalog.text[]
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid OPERATOR(pg_catalog.=) p.prolang
WHERE p.pronamespace OPERATOR(pg_catalog.=) {NS} AND {EXT pg_proc p.oid}
""")

TYPES = _sql("""
SELECT t.typname, t.typtype::pg_catalog.text,
       CASE t.typtype
         WHEN 'e' THEN array(SELECT e.enumlabel::pg_catalog.text FROM pg_catalog.pg_enum e
             WHERE e.enumtypid OPERATOR(pg_catalog.=) t.oid
                             ORDER BY e.enumsortorder)
         WHEN 'c' THEN array(SELECT pg_catalog.quote_ident(a.attname) OPERATOR(pg_catalog.||) ' '
                                    OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid,
                                        a.atttypmod)
                             FROM pg_catalog.pg_attribute a
                                 WHERE a.attrelid OPERATOR(pg_catalog.=) t.typrelid AND a.attnum > 0
                               AND NOT a.attisdropped ORDER BY a.attnum)
         WHEN 'd' THEN ARRAY[pg_catalog.format_type(t.typbasetype, t.typtypmod)]
         WHEN 'r' THEN array(SELECT pg_catalog.format_type(r.rngsubtype, NULL)
             FROM pg_catalog.pg_range r
                             WHERE r.rngtypid OPERATOR(pg_catalog.=) t.oid)
       END,
       t.typnotnull, t.typdefault,
       array(SELECT pg_catalog.quote_ident(k.conname)
           OPERATOR(pg_catalog.||) ' '
           OPERATOR(pg_catalog.||) pg_catalog.pg_get_constraintdef(k.oid, true)
             FROM pg_catalog.pg_constraint k WHERE k.contypid OPERATOR(pg_catalog.=) t.oid
                 ORDER BY k.conname)
FROM pg_catalog.pg_type t
WHERE t.typnamespace OPERATOR(pg_catalog.=) {NS} AND t.typtype IN ('e', 'c', 'd', 'r')
  AND (t.typtype OPERATOR(pg_catalog.<>) 'c' OR (SELECT relkind FROM pg_catalog.pg_class
      WHERE oid OPERATOR(pg_catalog.=) t.typrelid) OPERATOR(pg_catalog.=) 'c')
  AND {EXT pg_type t.oid}
""")

_RELKIND = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view"}
_REPLIDENT = {"d": "default", "n": "nothing", "f": "full", "i": "index"}
_CONTYPE = {"p": "primary key", "u": "unique", "c": "check", "f": "foreign key", "x": "exclusion"}
_IDENTITY = {"": None, "a": "always", "d": "by default"}
_TGENABLED = {"O": "enabled", "D": "disabled", "R": "replica", "A": "always"}
_PROKIND = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window"}
_VOLATILITY = {"i": "immutable", "s": "stable", "v": "volatile"}
_TYPTYPE = {"e": "enum", "c": "composite", "d": "domain", "r": "range"}

Reader = Callable[[list[tuple[Any, ...]]], dict[str, CatalogObject]]


def _tables(rows: list[tuple[Any, ...]]) -> dict[str, CatalogObject]:
    out = {}
    for name, kind, persistence, replident, ri_index, partkey, bound, parent, cols in rows:
        ident = _REPLIDENT.get(replident, replident)
        if replident == "i":
            ident = f"index {display_ident(ri_index or '?')}"
        out[display_ident(name)] = CatalogObject(None, {
            "kind": _RELKIND[kind], "unlogged": persistence == "u", "replica identity": ident,
            "partition key": partkey, "partition of": parent, "partition bound": bound,
            "column order": [display_ident(c) for c in cols],
        })
    return out


def _columns(rows: list[tuple[Any, ...]]) -> dict[str, CatalogObject]:
    out = {}
    for table, col, typ, coll, notnull, expr, identity, generated in rows:
        out[f"{display_ident(table)}.{display_ident(col)}"] = CatalogObject(display_ident(table), {
            "type": typ, "collation": coll, "not null": notnull,
            "default": None if generated else expr,
            "identity": _IDENTITY.get(identity, identity),
            "generated": f"{expr} (stored)" if generated else None,
        })
    return out


def _constraints(rows: list[tuple[Any, ...]]) -> dict[str, CatalogObject]:
    return {f"{display_ident(t)}.{display_ident(n)}": CatalogObject(display_ident(t), {
        "type": _CONTYPE[k], "definition": d}) for t, n, k, d in rows}


def _indexes(rows: list[tuple[Any, ...]]) -> dict[str, CatalogObject]:
    return {display_ident(n): CatalogObject(display_ident(t), {"definition": d})
            for t, n, d in rows}


def _triggers(rows: list[tuple[Any, ...]]) -> dict[str, CatalogObject]:
    return {f"{display_ident(t)}.{display_ident(n)}": CatalogObject(display_ident(t), {
        "definition": d, "enabled": _TGENABLED.get(e, e)}) for t, n, d, e in rows}


def _views(rows: list[tuple[Any, ...]]) -> dict[str, CatalogObject]:
    return {display_ident(n): CatalogObject(None, {"kind": _RELKIND[k], "definition": d})
            for n, k, d in rows}


def _sequences(rows: list[tuple[Any, ...]]) -> dict[str, CatalogObject]:
    return {display_ident(n): CatalogObject(None, {
        "type": t, "start": str(s), "increment": str(i), "minimum": str(lo),
        "maximum": str(hi), "cycle": c}) for n, t, s, i, lo, hi, c in rows}


def _functions(rows: list[tuple[Any, ...]]) -> dict[str, CatalogObject]:
    out = {}
    for name, args, kind, result, lang, body, vol, secdef, strict, config in rows:
        out[f"{display_ident(name)}({args})"] = CatalogObject(None, {
            "kind": _PROKIND.get(kind, kind), "returns": result, "language": lang,
            "body": body, "volatility": _VOLATILITY.get(vol, vol),
            "security": "definer" if secdef else "invoker", "strict": strict,
            "settings": list(config),
        })
    return out


def _types(rows: list[tuple[Any, ...]]) -> dict[str, CatalogObject]:
    out = {}
    for name, typtype, shape, notnull, default, checks in rows:
        kind = _TYPTYPE[typtype]
        attrs: dict[str, Any] = {"kind": kind}
        if kind == "enum":
            attrs["labels"] = list(shape)
        elif kind == "composite":
            attrs["attributes"] = list(shape)
        elif kind == "range":
            attrs["subtype"] = shape[0] if shape else None
        else:
            attrs.update({"base type": shape[0], "not null": notnull, "default": default,
                          "constraints": list(checks)})
        out[display_ident(name)] = CatalogObject(None, attrs)
    return out


# kind name -> (query, reader), in report order
KINDS: dict[str, tuple[str, Reader]] = {
    "table": (TABLES, _tables),
    "column": (COLUMNS, _columns),
    "constraint": (CONSTRAINTS, _constraints),
    "index": (INDEXES, _indexes),
    "trigger": (TRIGGERS, _triggers),
    "view": (VIEWS, _views),
    "sequence": (SEQUENCES, _sequences),
    "function": (FUNCTIONS, _functions),
    "type": (TYPES, _types),
}


def schema_exists(cur: cursor, schema: str) -> bool:
    cur.execute("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,))
    return bool(cur.fetchone()[0])


def read_schema(cur: cursor, schema: str) -> dict[str, dict[str, CatalogObject]]:
    """Every object of ``schema`` on this node, by kind then identity."""
    found = {}
    for kind, (query, reader) in KINDS.items():
        cur.execute(query, {"schema": schema})
        found[kind] = reader(cur.fetchall())
    return found
