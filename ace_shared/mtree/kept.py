"""Kept keys: a leaf that differs is re-checked by the keys changed since it last agreed.

A tree of leaf hashes tells which leaves differ, not which rows: reading a
differing leaf reads all its rows, so changes scattered over every leaf make a
re-check read the whole table. Remembering which keys changed does better, and
is sound under the conditions this module keeps:

- **The bound.** Say a leaf's count and hash were equal on every node of a set
  ``S`` when each node's fold drained its log (each at its own snapshot ``s_n``).
  Then the leaf's rows were the same on those nodes then (up to a collision of
  the 64-bit XOR, the assumption the whole tree rests on). Every change after
  ``s_n`` on node ``n`` is logged with its key and, once folded, kept here. So
  if the leaf differs later between nodes of ``S``, every differing row has a
  key kept on one of them: a key no node changed holds, on every node, the row
  it held when the leaf agreed. Probing the kept keys (one index probe each)
  costs the changes, not the leaf's rows.
- **The mark.** Each leaf carries ``agreed``: the nodes ``S`` it last agreed on,
  one digest per node (:func:`mark_for`: its name and its system identifier
  and database, so another cluster file naming other servers alike cannot
  match), or none. A re-check of nodes ``C`` that finds a leaf equal, on every
  node of ``C``, in one transaction per node, under the tree lock and after
  the fold (no fold can come between: kept keys are exactly those folded):
  if the leaf's mark there is ``C``, deletes its kept keys; if the mark holds
  more nodes than ``C``, leaves both alone (they still bound the leaf's
  differences on every node of that larger set, about which this re-check
  says nothing); otherwise sets the mark to ``C`` and deletes the keys. A leaf
  that differs keeps its mark and its keys, which keep growing until it agrees.
- **The use.** A differing leaf is read by its kept keys only when every
  compared node carries the same mark ``S``, not none. Each such node is in
  ``S`` (only a re-check including it marks it) and was last given or cleared
  at a re-check over ``S`` at which the leaf agreed on all of ``S``; the latest
  of those moments is one at which the leaf agreed on all of them, and each
  of them kept its changed keys from its own moment on, that one or earlier.
  So every key that can differ is kept on one of them. Marks that differ (a
  re-check over other nodes marked some of them since, or failed on some) or
  none mean: read the leaf. The plan decides under the tree lock, but a
  re-check's groups run after it, when another re-check may have marked the
  leaf anew on a node and deleted its keys there: so a group reads each node's
  kept keys and marks at one snapshot and checks the condition again.
- **What clears a mark.** A build (no log reaches before it), a leaf hashed
  again because the log and the leaf disagreed, every leaf of a node after a
  ``TRUNCATE`` (its marker carries no keys), and a merge of two leaves marked
  differently. A split's pieces keep the leaf's mark: keys are kept by key, not
  by leaf, and a leaf's candidates are the kept keys within its bounds.
- **What is kept.** The fold keeps the keys of changes in leaves marked other
  than 0; an unmarked leaf is read whole anyway, and when it agrees its keys
  would be deleted.

Changes committed after the fold that started a re-check are in the log, not
kept: the next re-check finds them, as it finds every change after its fold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.diff import queries
from ace_shared.mtree.leaves import no_jit
from ace_shared.mtree.objects import obj
from ace_shared.nodes.shape import TableShape

Mark = tuple[int, ...]  # the nodes a leaf last agreed on, one digest each, sorted; () none
Marks = dict[int, Mark]  # leaf number -> its mark
# what makes a node itself, beside its name in the cluster file
IDENTITY_SQL = ("SELECT s.system_identifier::pg_catalog.text, d.oid::pg_catalog.text "
                "FROM pg_catalog.pg_control_system() s, pg_catalog.pg_database d "
                "WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()")


def identity(cur: cursor) -> str:
    """This node's system identifier and database: part of its digest in every mark."""
    cur.execute(IDENTITY_SQL)
    system, database = cur.fetchone()
    return f"{system}/{database}"


def mark_for(nodes: dict[str, str]) -> list[int]:
    """The mark of a set of nodes (name -> :func:`identity`): one int8 digest per node,
    sorted, so the same set gives the same mark in any order."""
    return sorted(int.from_bytes(hashlib.sha256(f"{name}\x01{ident}".encode()).digest()[:8],
                                 "big", signed=True) for name, ident in nodes.items())


def read_marks(cur: cursor, key: str, nos: list[int]) -> Marks:
    """The marks of leaves ``nos`` (one probe of the primary key each)."""
    if not nos:
        return {}
    no_jit(cur)
    cur.execute(sql.SQL("SELECT block_no, agreed FROM {} WHERE block_no "
                        "OPERATOR(pg_catalog.=) ANY(%s::pg_catalog.int4[])").format(
        obj("blocks", key)), (nos,))
    return {int(b): tuple(int(d) for d in a) for b, a in cur.fetchall()}


def marked_alike(marks: set[Mark]) -> bool:
    """Whether the marks every node gave one leaf let it be read by its kept keys: one mark,
    not none (see the module's docstring for why that is sound)."""
    return len(marks) == 1 and () not in marks


NO_MARK = "{}"  # a leaf's mark as printed when it agreed on no nodes since the build


def kept_leaves(per_node: dict[str, dict[int, str]], differing: Iterable[int]) -> set[int]:
    """The ``differing`` leaves to read by their kept keys: those every node marked alike
    (:func:`marked_alike`), each node's marks as PostgreSQL prints them (``{d1,d2}``, the
    same text for the same mark)."""
    if not per_node:  # the walk found no leaf differing
        return set()
    first, *others = per_node.values()
    return {b for b in differing if (mark := first.get(b, NO_MARK)) != NO_MARK
            and all(node.get(b) == mark for node in others)}


def distinct_marks(cur: cursor, key: str) -> list[Mark]:
    """The distinct marks the leaves carry: one probe of the index on ``agreed`` each (a
    tree's leaves carry a few), however many leaves there are."""
    blocks = obj("blocks", key)
    cur.execute(sql.SQL(
        "WITH RECURSIVE t(a) AS ((SELECT agreed FROM {b} ORDER BY agreed LIMIT 1) UNION ALL "
        "SELECT (SELECT x.agreed FROM {b} x WHERE x.agreed OPERATOR(pg_catalog.>) t.a "
        "ORDER BY x.agreed LIMIT 1) FROM t WHERE t.a IS NOT NULL) "
        "SELECT a FROM t WHERE a IS NOT NULL").format(b=blocks))
    return [tuple(int(d) for d in a) for (a,) in cur.fetchall()]


def mark_agreed(cur: cursor, shape: TableShape, key: str, differing: list[int],
                mark: list[int], outside: queries.Query | None = None) -> None:
    """Every leaf but ``differing`` agreed on the nodes of ``mark``: mark it so and delete its
    kept keys, unless it is marked for more nodes than these (then it stays as it is).

    ``outside`` deletes the kept keys outside the differing leaves, by the ranges
    between them (:func:`~ace_shared.mtree.compare.delete_kept_outside`): used when no
    leaf is marked for more nodes, so that every leaf but the differing ones carries
    ``mark`` once marked, and its kept keys all go. Changes in most leaves then
    visit no kept key of theirs, where each kept key was probed for its leaf.

    A leaf marked for a larger set of nodes keeps that mark and its keys: they
    still bound its differences on every node of that set, which a re-check of
    fewer nodes says nothing about. The keys are few (changed since the last
    re-check), and each finds its leaf by one probe of the leaves' bounds, as
    the fold does. The leaves whose mark changes are found by the index on
    ``agreed``, by the marks they carry (:func:`distinct_marks`): every leaf once
    after a build, then those that agree again; none when every leaf is marked for
    more nodes than these, and then no kept key is visited either.
    """
    blocks, kept = obj("blocks", key), obj("keys", key)
    n = len(shape.key)
    bl = sql.SQL(", ").join(sql.SQL("b.{}").format(sql.Identifier(f"l{i}")) for i in range(n))
    pk = sql.SQL(", ").join(sql.SQL("p.{}").format(sql.Identifier(f"k{i}")) for i in range(n))
    desc = sql.SQL(", ").join(sql.SQL("b.{} DESC").format(sql.Identifier(f"l{i}"))
                              for i in range(n))
    # the leaves to mark by the index on agreed, whatever the statistics (taken at the build,
    # when no leaf had a mark) estimate; and JIT off
    cur.execute("SET LOCAL enable_seqscan = off; SET LOCAL jit = off")
    carried = distinct_marks(cur, key)
    wanted = tuple(mark)
    stale = [m for m in carried if m != wanted and not set(m) >= set(wanted)]
    for old in stale:
        cur.execute(sql.SQL(
            "UPDATE {blocks} SET agreed = %(m)s::pg_catalog.int8[] "
            "WHERE agreed OPERATOR(pg_catalog.=) %(o)s::pg_catalog.int8[] "
            "AND block_no OPERATOR(pg_catalog.<>) ALL(%(d)s::pg_catalog.int4[])").format(
            blocks=blocks), {"m": mark, "o": list(old), "d": differing})
    if not stale and wanted not in carried:  # no leaf is marked so: no kept key goes
        return
    if outside is not None and all(m == wanted or m in stale for m in carried):
        cur.execute(queries.PINNED_PLAN)  # an index range scan per range between them
        cur.execute(*outside)
        return
    cur.execute(sql.SQL(
        # each kept key's leaf: the last whose lower bound is at or below it, else leaf 0
        # (no lower bound); one probe of the bounds' index gives its number and mark
        "DELETE FROM {kept} p WHERE coalesce((SELECT {gone} FROM {blocks} b "
        "  WHERE b.block_no OPERATOR(pg_catalog.>) 0 AND ({bl}) OPERATOR(pg_catalog.<=) ({pk}) "
        "  ORDER BY {desc} LIMIT 1), (SELECT {gone} FROM {blocks} b "
        "  WHERE b.block_no OPERATOR(pg_catalog.=) 0))").format(
        kept=kept, blocks=blocks, bl=bl, pk=pk, desc=desc, gone=sql.SQL(
            "b.block_no OPERATOR(pg_catalog.<>) ALL(%(d)s::pg_catalog.int4[]) AND b.agreed "
            "OPERATOR(pg_catalog.=) %(m)s::pg_catalog.int8[]")), {"d": differing, "m": mark})
