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


_NS = "(SELECT oid FROM pg_namespace WHERE nspname = %(schema)s)"
_NOT_EXT = ("NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'CLS'::regclass "
            "AND d.objid = OBJ AND d.deptype = 'e')")


def _sql(text: str) -> str:
    """Fill the fixed fragments ``{NS}`` (the schema's oid) and ``{EXT cls obj}`` in."""
    text = text.replace("{NS}", _NS)
    return re.sub(r"\{EXT (\w+) ([\w.]+)\}",
                  lambda m: _NOT_EXT.replace("CLS", m[1]).replace("OBJ", m[2]), text)

TABLES = _sql("""
SELECT c.relname, c.relkind::text, c.relpersistence::text, c.relreplident::text,
       (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = c.oid AND i.indisreplident),
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
       (SELECT quote_ident(pn.nspname) || '.' || quote_ident(pc.relname)
        FROM pg_inherits ih JOIN pg_class pc ON pc.oid = ih.inhparent
        JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE ih.inhrelid = c.oid),
       array(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
FROM pg_class c
WHERE c.relnamespace = {NS} AND c.relkind IN ('r', 'p')
  AND {EXT pg_class c.oid}
""")

COLUMNS = _sql("""
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       CASE WHEN a.attcollation <> t.typcollation THEN quote_ident(co.collname) END,
       a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_collation co ON co.oid = a.attcollation
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relnamespace = {NS} AND c.relkind IN ('r', 'p') AND a.attnum > 0
  AND NOT a.attisdropped
""")

CONSTRAINTS = _sql("""
SELECT c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid, true)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE c.relnamespace = {NS} AND k.contype IN ('p', 'u', 'c', 'f', 'x')
""")

INDEXES = _sql("""
SELECT c.relname, i.relname, pg_get_indexdef(i.oid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class c ON c.oid = x.indrelid
WHERE i.relnamespace = {NS}
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid
                  AND k.conrelid = x.indrelid AND k.contype IN ('p', 'u', 'x'))
""")

TRIGGERS = _sql("""
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid, true), t.tgenabled::text
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = {NS} AND NOT t.tgisinternal
""")

VIEWS = _sql("""
SELECT c.relname, c.relkind::text, pg_get_viewdef(c.oid, true)
FROM pg_class c
WHERE c.relnamespace = {NS} AND c.relkind IN ('v', 'm')
  AND {EXT pg_class c.oid}
""")

SEQUENCES = _sql("""
SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin,
       s.seqmax, s.seqcycle
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
WHERE c.relnamespace = {NS} AND {EXT pg_class c.oid}
""")

FUNCTIONS = _sql("""
SELECT p.proname, pg_get_function_identity_arguments(p.oid), p.prokind::text,
       pg_get_function_result(p.oid), l.lanname,
       CASE WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid) ELSE p.prosrc END,
       p.provolatile::text, p.prosecdef, p.proisstrict, coalesce(p.proconfig, '{}')::text[]
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = {NS} AND {EXT pg_proc p.oid}
""")

TYPES = _sql("""
SELECT t.typname, t.typtype::text,
       CASE t.typtype
         WHEN 'e' THEN array(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid
                             ORDER BY e.enumsortorder)
         WHEN 'c' THEN array(SELECT quote_ident(a.attname) || ' '
                                    || format_type(a.atttypid, a.atttypmod)
                             FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0
                               AND NOT a.attisdropped ORDER BY a.attnum)
         WHEN 'd' THEN ARRAY[format_type(t.typbasetype, t.typtypmod)]
         WHEN 'r' THEN array(SELECT format_type(r.rngsubtype, NULL) FROM pg_range r
                             WHERE r.rngtypid = t.oid)
       END,
       t.typnotnull, t.typdefault,
       array(SELECT quote_ident(k.conname) || ' ' || pg_get_constraintdef(k.oid, true)
             FROM pg_constraint k WHERE k.contypid = t.oid ORDER BY k.conname)
FROM pg_type t
WHERE t.typnamespace = {NS} AND t.typtype IN ('e', 'c', 'd', 'r')
  AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
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
