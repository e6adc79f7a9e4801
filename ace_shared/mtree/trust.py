"""ACE reads and writes an mtree table only while nothing on it can run its owner's code.

A tree's tables belong to whoever built the tree (a table's owner, through the
REST API), and the catalogue ``ace_mtree.trees`` to whoever ran ``mtree init``
first. An owner may attach code that PostgreSQL runs in whichever session
writes or reads the table: triggers, rules, policies, column defaults, checks,
index expressions, columns of her own types, a view in the table's place. The
operator's update or diff of her tree, another caller's, or a superuser's
would then run her code with their rights.

So before every transaction that touches such a table, ACE locks it (before
its snapshot, so nobody can attach anything until the transaction ends) and
checks in ``pg_catalog`` that it is an ordinary table with none of these; else
it refuses in one sentence naming the table and what was found. Reading a
table like that, and writing the columns ACE names, runs nobody's code.
"""

from __future__ import annotations

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.errors import TableError
from ace_shared.mtree import objects

SCHEMA = "ace_mtree"
CATALOGUE = "trees"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"  # for writing; keeps triggers, rules and ALTERs out
ACCESS_SHARE = "ACCESS SHARE"  # for reading; keeps DROP (a view in its place) out

# What makes a table unsafe to touch, first found first: the check is PostgreSQL's own
# catalogue, every operator and function in pg_catalog.
_FINDINGS_SQL = """
SELECT n.name, pg_catalog.pg_get_userbyid(c.relowner),
  CASE
    WHEN c.oid IS NULL THEN 'missing'
    WHEN c.relkind OPERATOR(pg_catalog.<>) 'r' THEN 'is not an ordinary table'
    WHEN c.relispartition OR EXISTS (SELECT FROM pg_catalog.pg_inherits i
         WHERE i.inhrelid OPERATOR(pg_catalog.=) c.oid
            OR i.inhparent OPERATOR(pg_catalog.=) c.oid) THEN 'has a parent or children'
    WHEN c.relrowsecurity OR c.relforcerowsecurity OR EXISTS (SELECT FROM pg_catalog.pg_policy p
         WHERE p.polrelid OPERATOR(pg_catalog.=) c.oid) THEN 'has row-level security'
    WHEN EXISTS (SELECT FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid OPERATOR(pg_catalog.=) c.oid) THEN 'has triggers'
    WHEN EXISTS (SELECT FROM pg_catalog.pg_rewrite r
         WHERE r.ev_class OPERATOR(pg_catalog.=) c.oid) THEN 'has rules'
    WHEN EXISTS (SELECT FROM pg_catalog.pg_attrdef d
         WHERE d.adrelid OPERATOR(pg_catalog.=) c.oid) THEN 'has column defaults'
    WHEN EXISTS (SELECT FROM pg_catalog.pg_attribute a
         WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.>) 0
           AND NOT a.attisdropped AND a.atttypid OPERATOR(pg_catalog.>=) 16384)
         THEN 'has a column of a type that is not built into PostgreSQL'
    WHEN EXISTS (SELECT FROM pg_catalog.pg_constraint k
         WHERE k.conrelid OPERATOR(pg_catalog.=) c.oid
           AND NOT k.contype OPERATOR(pg_catalog.=) ANY ('{p,u,n}'::pg_catalog."char"[]))
         THEN 'has check, exclusion or foreign-key constraints'
    WHEN EXISTS (SELECT FROM pg_catalog.pg_index x
         WHERE x.indrelid OPERATOR(pg_catalog.=) c.oid
           AND (x.indexprs IS NOT NULL OR x.indpred IS NOT NULL))
         THEN 'has an index on an expression or with a predicate'
  END
FROM pg_catalog.unnest(%s::pg_catalog.text[]) WITH ORDINALITY AS n(name, ord)
LEFT JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(
  pg_catalog.quote_ident(%s) OPERATOR(pg_catalog.||) '.'
  OPERATOR(pg_catalog.||) pg_catalog.quote_ident(n.name))
ORDER BY n.ord
"""


def _ref(name: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(name))


def _lock_sql(names: list[str], mode: str) -> sql.Composable:
    return sql.SQL("LOCK TABLE {} IN {} MODE").format(
        sql.SQL(", ").join(_ref(n) for n in names), sql.SQL(mode))


def lock(cur: cursor, names: list[str], mode: str) -> bool:
    """Lock ACE's tables ``names`` in ``mode``; False (the transaction rolled back) if one
    is missing. The first statement of a transaction, so its snapshot comes after."""
    try:
        cur.execute(_lock_sql(names, mode))
    except psycopg2.errors.UndefinedTable:
        cur.connection.rollback()
        return False
    return True


def lock_and_check(cur: cursor, names: list[str], mode: str) -> list[tuple[str, str, str]] | None:
    """:func:`lock`, then :func:`findings`, sent together (one round trip: every command
    of ACE's runs this before each transaction); None if a table is missing."""
    try:
        cur.execute(sql.SQL("{}; {}").format(_lock_sql(names, mode), sql.SQL(_FINDINGS_SQL)),
                    (names, SCHEMA))
    except psycopg2.errors.UndefinedTable:
        cur.connection.rollback()
        return None
    return [(name, owner, found) for name, owner, found in cur.fetchall() if found]


def findings(cur: cursor, names: list[str]) -> list[tuple[str, str, str]]:
    """``(table, owner, what was found)`` for every one of ``names`` that is not safe."""
    cur.execute(_FINDINGS_SQL, (names, SCHEMA))
    return [(name, owner, found) for name, owner, found in cur.fetchall() if found]


def refuse_unsafe(cur: cursor, names: list[str], what: str, node: str, fix: str,
                  found_already: list[tuple[str, str, str]] | None = None) -> None:
    """One sentence for the first unsafe table, naming it, its owner and what it has."""
    listed = findings(cur, names) if found_already is None else found_already
    for name, owner, found in listed:
        if found == "missing":
            continue  # the callers say what a missing table means for them
        cur.connection.rollback()  # and with it the locks
        raise TableError(
            f"ACE will not use {what} on node {node}: its table {SCHEMA}.{name} (owned by "
            f"{owner}) {found}, which could run its owner's code in this session; {fix}.")


def tree_tables(key: str) -> list[str]:
    return [f"{kind}_{key}" for kind in objects.KINDS]


def guard_tree(cur: cursor, key: str, table_display: str, node: str, mode: str) -> bool:
    """Lock the catalogue and a tree's tables and check them; False if a table is missing.

    The first statement of a transaction that reads (``ACCESS_SHARE``) or writes
    (``ROW_EXCLUSIVE``) the tree.
    """
    names = [CATALOGUE, *tree_tables(key)]
    found = lock_and_check(cur, names, mode)
    if found is None:
        return False
    refuse_unsafe(cur, names, f"the Merkle tree of table {table_display}", node, _TREE_FIX,
                  found)
    return True


_TREE_FIX = ("drop what was added, or have the tree's owner run 'ace mtree build' for it "
             "again (which makes its tables afresh), and run this again")


def check_tree_tables(cur: cursor, key: str, table_display: str, node: str) -> None:
    """The check of :func:`guard_tree`, for a transaction that locked the tables itself."""
    refuse_unsafe(cur, [CATALOGUE, *tree_tables(key)],
                  f"the Merkle tree of table {table_display}", node, _TREE_FIX)


def guard_catalogue(cur: cursor, node: str, mode: str, cluster: str) -> bool:
    """:func:`guard_tree` for the catalogue alone; False if it is missing."""
    found = lock_and_check(cur, [CATALOGUE], mode)
    if found is None:
        return False
    refuse_unsafe(cur, [CATALOGUE], "ACE's catalogue of Merkle trees", node,
                  f"drop the schema {SCHEMA} (whoever made it) and run 'ace mtree init "
                  f"{cluster}' again", found)
    return True
