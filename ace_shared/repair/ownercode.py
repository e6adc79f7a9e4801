"""Refusing to write a table whose writes would run code its owner controls.

Writing a row runs code that comes with the table: triggers that fire in the
session's replication role (``ENABLE ALWAYS``, and ``ENABLE REPLICA`` under
``session_replication_role = replica``; ordinary ones only with
``--fire-triggers``), CHECK and exclusion constraints, index expressions,
predicates and operator classes, generated columns, rules, the partition key,
and, for each column written, its type's domain checks (domains over domains,
arrays, composites and ranges of them too), input functions and a cast from
text to it. It runs in the writing session, with that session's rights.

ACE's own login holds ``pg_read_all_data`` and ``pg_write_all_data``; a caller
may hold rights the owner lacks. So (docs/security.md, "Code a table owner
controls") before a repair or auto-repair writes a table it does not own, it
looks in ``pg_catalog`` for every function that code calls (through
``pg_depend``, operators by their functions) and refuses, in one sentence,
when one is owned by a role that is neither the session user nor a superuser:
that role controls what the function does. Functions a superuser owns (every
built-in), the session user owns, or ACE's own login owns (in a caller's
session: the operator runs ACE anyway) are trusted; so is everything when the
session user owns the table (its code then runs with its owner's rights).
Nothing is evaluated to find out: the check only reads the catalog.

Not looked at, because a repair never runs them: column and domain defaults
(every INSERT names every column it fills, and UPDATE evaluates none),
foreign-key checks (PostgreSQL runs them as the tables' owners), policies
(every ACE session has ``row_security = off``, so a table whose policies apply
is refused instead, see :mod:`ace_shared.nodes.rowsecurity`).

The caller takes a ``ROW EXCLUSIVE`` lock on the table first, so no trigger,
constraint, index or rule can be added to it until the transaction ends, and
checks again after writing (then rolls back if anything appeared meanwhile,
on a partition or in a domain).
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.errors import OwnerCodeRefusedError
from ace_shared.nodes.ident import TableName, display_ident

_EQ = sql.SQL("OPERATOR(pg_catalog.=)")
_NE = sql.SQL("OPERATOR(pg_catalog.<>)")


def _functions(classid: str, objid: str) -> sql.Composable:
    """The functions an object's expressions call: directly, or as an operator's code."""
    dep = sql.SQL("d.classid {eq} {cls}::pg_catalog.regclass AND d.objid {eq} {obj} "
                  "AND d.refclassid {eq} ").format(eq=_EQ, cls=sql.Literal(classid),
                                                    obj=sql.SQL(objid))
    return sql.SQL(
        "SELECT d.refobjid FROM pg_catalog.pg_depend d "
        "WHERE {dep}'pg_catalog.pg_proc'::pg_catalog.regclass "
        "UNION SELECT o.fn FROM pg_catalog.pg_depend d JOIN LATERAL ({operator}) o(fn) ON true "
        "WHERE {dep}'pg_catalog.pg_operator'::pg_catalog.regclass").format(
            dep=dep, operator=_operator("d.refobjid"))


def _operator(oid: str) -> sql.Composable:
    """An operator's functions: its code and its planner estimators."""
    return sql.SQL("SELECT f.fn FROM pg_catalog.pg_operator op CROSS JOIN LATERAL (VALUES "
                   "(op.oprcode::pg_catalog.oid), (op.oprrest::pg_catalog.oid), "
                   "(op.oprjoin::pg_catalog.oid)) f(fn) WHERE op.oid {eq} {oid}").format(
                       eq=_EQ, oid=sql.SQL(oid))


def _opclass(oid: str) -> sql.Composable:
    """The support functions and operators' functions of an operator class's family."""
    return sql.SQL(
        "SELECT p.amproc::pg_catalog.oid FROM pg_catalog.pg_opclass oc "
        "JOIN pg_catalog.pg_amproc p ON p.amprocfamily {eq} oc.opcfamily WHERE oc.oid {eq} {oid} "
        "UNION SELECT o.fn FROM pg_catalog.pg_opclass oc "
        "JOIN pg_catalog.pg_amop a ON a.amopfamily {eq} oc.opcfamily "
        "JOIN LATERAL ({operator}) o(fn) ON true WHERE oc.oid {eq} {oid}").format(
            eq=_EQ, oid=sql.SQL(oid), operator=_operator("a.amopopr"))


# Everything a write to the table (or a table inheriting from it) runs, as
# (rank, kind, object, relation, column, type, function); a NULL function is
# the object itself (a rule's actions), controlled by the relation's owner.
_CODE_SQL = sql.SQL("""
WITH RECURSIVE rels(oid) AS (
    SELECT %(rel)s::pg_catalog.regclass::pg_catalog.oid
    UNION
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN rels r ON i.inhparent {eq} r.oid
), fires(modes) AS (
    SELECT CASE pg_catalog.current_setting('session_replication_role')
           WHEN 'replica' THEN ARRAY['A', 'R']::pg_catalog."char"[]
           ELSE ARRAY['A', 'O']::pg_catalog."char"[] END
), cols(rel, col, typ, direct) AS (
    SELECT a.attrelid, a.attname, a.atttypid, true
      FROM pg_catalog.pg_attribute a JOIN rels r ON a.attrelid {eq} r.oid
     WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
       AND (a.attname::pg_catalog.text {eq} ANY (%(written)s::pg_catalog.text[])
            OR a.attgenerated {ne} '')
    UNION
    SELECT c.rel, c.col, n.typ, n.direct AND c.direct
      FROM cols c JOIN pg_catalog.pg_type t ON t.oid {eq} c.typ
     CROSS JOIN LATERAL (
        SELECT t.typbasetype, true WHERE t.typtype {eq} 'd'
        UNION ALL SELECT t.typelem, false WHERE t.typelem {ne} 0
        UNION ALL SELECT a.atttypid, false FROM pg_catalog.pg_attribute a
         WHERE t.typrelid {ne} 0 AND a.attrelid {eq} t.typrelid
           AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
        UNION ALL SELECT g.rngsubtype, false FROM pg_catalog.pg_range g
         WHERE g.rngtypid {eq} t.oid
        UNION ALL SELECT g.rngtypid, false FROM pg_catalog.pg_range g
         WHERE g.rngmultitypid {eq} t.oid) n(typ, direct)
), code(rank, kind, obj, rel, col, typ, fn) AS (
    SELECT 1, 'trigger', tg.tgname, tg.tgrelid, NULL::pg_catalog.name, 0::pg_catalog.oid, f.fn
      FROM pg_catalog.pg_trigger tg JOIN rels r ON tg.tgrelid {eq} r.oid CROSS JOIN fires
     CROSS JOIN LATERAL (SELECT tg.tgfoid UNION {trigger_fns}
           ) f(fn)
     WHERE tg.tgenabled {eq} ANY (fires.modes)
    UNION ALL
    SELECT 2, 'rule', rw.rulename, rw.ev_class, NULL, 0, f.fn
      FROM pg_catalog.pg_rewrite rw JOIN rels r ON rw.ev_class {eq} r.oid CROSS JOIN fires
     CROSS JOIN LATERAL (SELECT NULL::pg_catalog.oid
                         UNION {rule_fns}) f(fn)
     WHERE rw.ev_type {ne} '1' AND rw.ev_enabled {eq} ANY (fires.modes)
    UNION ALL
    SELECT 3, CASE con.contype WHEN 'c' THEN 'check constraint'
                               ELSE 'exclusion constraint' END,
           con.conname, con.conrelid, NULL, 0, f.fn
      FROM pg_catalog.pg_constraint con JOIN rels r ON con.conrelid {eq} r.oid
     CROSS JOIN LATERAL ({constraint_fns}) f(fn)
     WHERE con.contype {eq} ANY (ARRAY['c', 'x']::pg_catalog."char"[])
    UNION ALL
    SELECT 4, 'index', ic.relname, i.indrelid, NULL, 0, f.fn
      FROM pg_catalog.pg_index i JOIN rels r ON i.indrelid {eq} r.oid
      JOIN pg_catalog.pg_class ic ON ic.oid {eq} i.indexrelid
     CROSS JOIN LATERAL ({index_fns}
           UNION SELECT o.fn FROM pg_catalog.unnest(i.indclass::pg_catalog.oid[]) k(opc)
                 JOIN LATERAL ({index_opclass}) o(fn) ON true) f(fn)
    UNION ALL
    SELECT 5, 'generated column', a.attname, ad.adrelid, NULL, 0, f.fn
      FROM pg_catalog.pg_attrdef ad JOIN rels r ON ad.adrelid {eq} r.oid
      JOIN pg_catalog.pg_attribute a ON a.attrelid {eq} ad.adrelid AND a.attnum {eq} ad.adnum
     CROSS JOIN LATERAL ({generated_fns}) f(fn)
     WHERE a.attgenerated {ne} ''
    UNION ALL
    SELECT 6, 'partition key', NULL, r.oid, NULL, 0, f.fn
      FROM rels r
     CROSS JOIN LATERAL ({partition_fns}
           UNION SELECT o.fn FROM pg_catalog.pg_partitioned_table pt
                 CROSS JOIN LATERAL pg_catalog.unnest(pt.partclass::pg_catalog.oid[]) k(opc)
                 JOIN LATERAL ({partition_opclass}) o(fn) ON true
                 WHERE pt.partrelid {eq} r.oid) f(fn)
    UNION ALL
    SELECT 7, 'domain', NULL, c.rel, c.col, c.typ, f.fn
      FROM cols c JOIN pg_catalog.pg_constraint con ON con.contypid {eq} c.typ
     CROSS JOIN LATERAL ({domain_fns}) f(fn)
    UNION ALL
    SELECT 8, 'cast', NULL, c.rel, c.col, c.typ, ca.castfunc
      FROM cols c JOIN pg_catalog.pg_cast ca ON ca.casttarget {eq} c.typ
     WHERE c.direct AND ca.castsource {eq} 'pg_catalog.text'::pg_catalog.regtype
       AND ca.castmethod {eq} 'f'
    UNION ALL
    SELECT 9, 'type', NULL, c.rel, c.col, c.typ, f.fn
      FROM cols c JOIN pg_catalog.pg_type t ON t.oid {eq} c.typ
      LEFT JOIN pg_catalog.pg_range g ON g.rngtypid {eq} t.oid
     CROSS JOIN LATERAL (VALUES (t.typinput::pg_catalog.oid), (t.typreceive::pg_catalog.oid),
           (t.typmodin::pg_catalog.oid), (g.rngcanonical::pg_catalog.oid),
           (g.rngsubdiff::pg_catalog.oid)) f(fn)
     WHERE f.fn IS NOT NULL
)
SELECT DISTINCT c.rank, c.kind, c.obj, rn.nspname, rc.relname, c.col, tn.nspname, t.typname,
       pn.nspname, p.proname, who.rolname, me.rolname
  FROM code c
  JOIN pg_catalog.pg_class rc ON rc.oid {eq} c.rel
  JOIN pg_catalog.pg_namespace rn ON rn.oid {eq} rc.relnamespace
  LEFT JOIN pg_catalog.pg_proc p ON p.oid {eq} c.fn
  LEFT JOIN pg_catalog.pg_namespace pn ON pn.oid {eq} p.pronamespace
  LEFT JOIN pg_catalog.pg_type t ON t.oid {eq} c.typ
  LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid {eq} t.typnamespace
  JOIN pg_catalog.pg_roles who ON who.oid {eq} COALESCE(p.proowner, rc.relowner)
  JOIN pg_catalog.pg_roles me ON me.rolname {eq} SESSION_USER
 WHERE (c.fn IS NULL OR p.oid IS NOT NULL)
   AND rc.relowner {ne} me.oid AND who.oid {ne} me.oid AND NOT who.rolsuper
   AND NOT who.rolname::pg_catalog.text {eq} ANY (%(trusted)s::pg_catalog.text[])
 ORDER BY c.rank, rn.nspname, rc.relname, c.obj, c.col, tn.nspname, t.typname,
          pn.nspname NULLS LAST, p.proname
""").format(
    eq=_EQ, ne=_NE,
    trigger_fns=_functions("pg_catalog.pg_trigger", "tg.oid"),
    rule_fns=_functions("pg_catalog.pg_rewrite", "rw.oid"),
    constraint_fns=_functions("pg_catalog.pg_constraint", "con.oid"),
    index_fns=_functions("pg_catalog.pg_class", "i.indexrelid"),
    index_opclass=_opclass("k.opc"),
    generated_fns=_functions("pg_catalog.pg_attrdef", "ad.oid"),
    partition_fns=_functions("pg_catalog.pg_class", "r.oid"),
    partition_opclass=_opclass("k.opc"),
    domain_fns=_functions("pg_catalog.pg_constraint", "con.oid"))


def _name(schema: str, name: str) -> str:
    return f"{display_ident(schema)}.{display_ident(name)}"


def _object(row: tuple[str | None, ...]) -> str:
    """The object that runs the code, as a user finds it: ``trigger audit on public.t``."""
    kind, obj, rel_schema, rel_name, col, typ_schema, typ_name = row
    table = _name(str(rel_schema), str(rel_name))
    column = f"column {display_ident(str(col))} of {table}"
    typ = _name(str(typ_schema), str(typ_name)) if typ_name else ""
    if kind == "generated column":
        return f"generated column {display_ident(str(obj))} of {table}"
    if kind == "partition key":
        return f"the partition key of {table}"
    if kind == "domain":
        return f"domain {typ} of {column}"
    if kind == "cast":
        return f"the cast from text to {typ} ({column})"
    if kind == "type":
        return f"type {typ} of {column}"
    return f"{kind} {display_ident(str(obj))} on {table}"


def refuse_owner_code(cur: cursor, table: TableName, node: str, written: Iterable[str],
                      trusted: Iterable[str] = (), action: str = "The repair") -> None:
    """Raise :class:`OwnerCodeRefusedError` if writing ``written`` columns of ``table``
    would run a function that a role other than the session user (and not a superuser)
    controls.

    ``trusted`` names roles whose functions are as good as the session user's: ACE's
    own login, in a caller's session (the operator who runs ACE controls it anyway).

    Run it in the writing transaction, after ``session_replication_role`` is set (it says
    which triggers and rules fire) and after the table is locked (:func:`lock_for_writes`).
    """
    # (the planner's guesses for the recursive parts are high enough to start JIT
    # compilation, which would take longer than the query: off for it alone)
    cur.execute("SELECT pg_catalog.current_setting('jit'), "
                "pg_catalog.set_config('jit', 'off', true)")
    jit = cur.fetchone()[0]
    cur.execute(_CODE_SQL, {"rel": str(table), "written": list(written),
                            "trusted": list(trusted)})
    found = cur.fetchall()
    cur.execute("SELECT pg_catalog.set_config('jit', %s, true)", (jit,))
    if not found:
        return
    first = found[0]
    what, who, session = _object(first[1:8]), first[10], first[11]
    if first[9] is None:  # the object itself: a rule's actions
        what += f", which role {who} controls, would run as role {session}"
    else:
        what += (f" would run function {_name(first[8], first[9])}, which role {who} "
                 f"controls, as role {session}")
    more = f" (and {len(found) - 1} more like it)" if len(found) > 1 else ""
    raise OwnerCodeRefusedError(
        f"{action} of {table.display} on node {node} was refused: {what}{more}; repair the "
        "table as its owner through the API, or have an administrator review that code.")


def lock_for_writes(cur: cursor, table: TableName) -> None:
    """Lock the table as its writes will (``ROW EXCLUSIVE``), now: until the transaction
    ends nobody can add a trigger, constraint, index or rule to it.

    ``LOCK TABLE`` wants a table-wide write privilege; a role that may write only some
    columns goes without the lock (the check after the writes still holds for it).
    """
    cur.execute("SAVEPOINT ace_lock")
    try:
        cur.execute(sql.SQL("LOCK TABLE ONLY {}.{} IN ROW EXCLUSIVE MODE").format(
            sql.Identifier(table.schema), sql.Identifier(table.table)))
    except psycopg2.errors.InsufficientPrivilege:
        cur.execute("ROLLBACK TO SAVEPOINT ace_lock")
    cur.execute("RELEASE SAVEPOINT ace_lock")
