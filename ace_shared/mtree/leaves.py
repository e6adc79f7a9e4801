"""Reading and writing one node's tree: leaf blocks, their hashes, the inner levels.

Every function takes a cursor on one node and leaves the transaction to its
caller: building, draining the change log and restructuring blocks each run
in one ``REPEATABLE READ`` transaction per node, so a block's hash always
describes the table at one snapshot and every change committed after that
snapshot is still in the log (see :mod:`ace_shared.mtree.objects`).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.diff import queries
from ace_shared.diff.ranges import Key, KeyRange
from ace_shared.mtree.objects import ALTERED, TRUNCATED, obj
from ace_shared.nodes.shape import TableShape

FANOUT = 16  # children per inner node
Level = dict[int, tuple[int, str]]  # node number -> (row count, hash)


def no_jit(cur: cursor) -> None:
    """Turn JIT off for this transaction.

    A list of a thousand parents joined to the tree's tables looks like millions
    of rows to the planner (the tables have no statistics), so it compiles the
    query: up to 200 ms where running it takes 50.
    """
    cur.execute("SET LOCAL jit = off")


@dataclass(frozen=True)
class Drained:
    """What folding the change log into the leaves did on one node."""

    rows: int  # log rows read
    truncated: bool
    altered: bool  # an ALTER TABLE since the build (where ACE watches for them)
    touched: tuple[int, ...]  # blocks whose count or hash changed


def bounds_signature(cur: cursor, shape: TableShape, key: str) -> str:
    """A digest of the block boundaries, equal on every node that has the same blocks."""
    cur.execute(sql.SQL("SELECT pg_catalog.md5(pg_catalog.string_agg(ROW({})::pg_catalog.text, "
                        "',' ORDER BY block_no)) FROM {}").format(_lower_names(shape),
                                                                  obj("blocks", key)))
    return str(cur.fetchone()[0])


def renumber(cur: cursor, shape: TableShape, key: str, first: int = 0) -> int:
    """Number the blocks from ``first`` on ``first, first + 1, ...`` in key order again after
    some of them were split or merged; return how many blocks there are.

    Blocks before ``first`` keep their numbers: every change is at or after it.
    Keys that only grow (a serial id) split the last leaf, so almost nothing moves.
    """
    order = sql.SQL(", ").join(sql.SQL("{} NULLS FIRST").format(sql.Identifier(f"l{i}"))
                               for i in range(len(shape.key)))
    blocks = obj("blocks", key)
    # through negative numbers, so no two blocks ever share one on the way
    cur.execute(sql.SQL(
        "WITH r AS (SELECT block_no, pg_catalog.row_number() OVER (ORDER BY {}) AS n FROM {} "
        "WHERE block_no OPERATOR(pg_catalog.>=) %s) "
        "UPDATE {} b SET block_no = OPERATOR(pg_catalog.-) r.n::pg_catalog.int4 FROM r "
        "WHERE b.block_no OPERATOR(pg_catalog.=) r.block_no").format(
        order, blocks, blocks), (first,))
    cur.execute(sql.SQL("UPDATE {} SET block_no = (OPERATOR(pg_catalog.-) block_no) "
                        "OPERATOR(pg_catalog.-) 1 OPERATOR(pg_catalog.+) %s "
                        "WHERE block_no OPERATOR(pg_catalog.<) 0").format(blocks), (first,))
    cur.execute(sql.SQL("SELECT coalesce(pg_catalog.max(block_no) OPERATOR(pg_catalog.+) 1, 0) "
                        "FROM {}").format(blocks))
    return int(cur.fetchone()[0])


def _lower_casts(shape: TableShape) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("u.{}::{}").format(sql.Identifier(f"k{i}"), queries.catalog_text(c.type_sql))
        for i, c in enumerate(shape.key_columns))


def _lower_names(shape: TableShape, alias: str = "") -> sql.Composable:
    prefix = sql.SQL(f"{alias}.") if alias else sql.SQL("")
    return sql.SQL(", ").join(sql.SQL("{}{}").format(prefix, sql.Identifier(f"l{i}"))
                              for i in range(len(shape.key)))


def insert_blocks(cur: cursor, shape: TableShape, key: str, first_no: int,
                  lowers: list[Key | None], counts: list[int], hashes: list[int]) -> None:
    """Insert blocks ``first_no, first_no + 1, ...`` with their lower bounds and hashes."""
    params: list[object] = [first_no]
    for i in range(len(shape.key)):
        params.append([None if low is None else low[i] for low in lowers])
    params += [counts, hashes]
    # ROWS FROM: the many-argument unnest() is grammar for the unqualified name only
    arrays = sql.SQL(", ").join(sql.SQL("pg_catalog.unnest(%s::pg_catalog.text[])")
                                for _ in shape.key)
    names = sql.SQL(", ").join(sql.Identifier(f"k{i}") for i in range(len(shape.key)))
    cur.execute(sql.SQL(
        "INSERT INTO {b} (block_no, {l}, row_count, hash) "
        "SELECT u.ord OPERATOR(pg_catalog.-) 1 OPERATOR(pg_catalog.+) %s, {casts}, u.n, u.h "
        "FROM ROWS FROM ({arrays}, pg_catalog.unnest(%s::pg_catalog.int8[]), "
        "pg_catalog.unnest(%s::pg_catalog.int8[])) WITH ORDINALITY AS u({names}, n, h, ord)"
    ).format(b=obj("blocks", key), l=_lower_names(shape), casts=_lower_casts(shape),
             arrays=arrays, names=names), params)


def hash_ranges(cur: cursor, shape: TableShape,
                ranges: list[KeyRange]) -> tuple[list[int], list[int]]:
    """Count and hash of every block, where each range's sub-ranges are blocks in order."""
    counts: list[int] = []
    hashes: list[int] = []
    cur.execute(queries.PINNED_PLAN)  # each range by its index, whatever the estimates
    for rng in ranges:
        query, params = queries.hash_range(shape, rng, None)
        cur.execute(query, params)
        rows = cur.fetchall()
        width = len(rng.inner) + 1
        got = {0: (rows[0][0], rows[0][1])} if not rng.inner else {
            int(b): (c, h) for b, c, h in rows}
        for b in range(width):
            c, h = got.get(b, (0, 0))
            counts.append(int(c))
            hashes.append(int(h))
    return counts, hashes


def drain(cur: cursor, shape: TableShape, key: str) -> Drained:
    """Fold every logged change visible to this transaction into its block, and delete it.

    A key's block is the last one whose lower bound is at or below it, found by
    the blocks' index in the key's own order. XOR makes the order of changes
    irrelevant: ``hash ^= h`` adds a row version and removes it again.
    """
    keys = sql.SQL(", ").join(sql.Identifier(f"k{i}") for i in range(len(shape.key)))
    d_keys = sql.SQL(", ").join(sql.SQL("d.{}").format(sql.Identifier(f"k{i}"))
                                for i in range(len(shape.key)))
    desc = sql.SQL(", ").join(sql.SQL("b.{} DESC").format(sql.Identifier(f"l{i}"))
                              for i in range(len(shape.key)))
    q = sql.SQL(
        "WITH d AS (DELETE FROM {log} RETURNING {keys}, sign, h), "
        "m AS (SELECT coalesce((SELECT b.block_no FROM {blocks} b "
        "      WHERE b.block_no OPERATOR(pg_catalog.>) 0 "
        "      AND ({bl}) OPERATOR(pg_catalog.<=) ({dk}) ORDER BY {desc} LIMIT 1), 0) AS blk, "
        "      d.sign, d.h FROM d WHERE d.sign OPERATOR(pg_catalog.<>) {trunc} "
        "      AND d.sign OPERATOR(pg_catalog.<>) {altered}), "
        "a AS (SELECT blk, pg_catalog.sum(sign)::pg_catalog.int8 AS n, pg_catalog.bit_xor(h) AS x "
        "      FROM m GROUP BY blk), "
        "u AS (UPDATE {blocks} b SET row_count = b.row_count OPERATOR(pg_catalog.+) a.n, "
        "      hash = b.hash OPERATOR(pg_catalog.#) a.x "
        "      FROM a WHERE b.block_no OPERATOR(pg_catalog.=) a.blk RETURNING b.block_no) "
        "SELECT (SELECT pg_catalog.count(*) FROM d), "
        "       coalesce((SELECT pg_catalog.bool_or(sign OPERATOR(pg_catalog.=) {trunc}) FROM d), "
        "                false), "
        "       coalesce((SELECT pg_catalog.bool_or(sign OPERATOR(pg_catalog.=) {altered}) "
        "                 FROM d), false), "
        "       ARRAY(SELECT block_no FROM u ORDER BY 1)"
    ).format(log=obj("log", key), keys=keys, blocks=obj("blocks", key),
             bl=_lower_names(shape, "b"), dk=d_keys, desc=desc, trunc=sql.Literal(TRUNCATED),
             altered=sql.Literal(ALTERED))
    no_jit(cur)  # one index lookup per change, not one big scan
    cur.execute(q)
    rows, truncated, altered, touched = cur.fetchone()
    return Drained(int(rows), bool(truncated), bool(altered),
                   tuple(int(b) for b in touched or ()))


def block_count(cur: cursor, key: str) -> int:
    cur.execute(sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(obj("blocks", key)))
    return int(cur.fetchone()[0])


def levels_for(blocks: int) -> int:
    """How many inner levels a tree of ``blocks`` leaves has (the last holds the root)."""
    levels, width = 1, max(1, -(-blocks // FANOUT))
    while width > 1:
        width = -(-width // FANOUT)
        levels += 1
    return levels


# An inner node's hash: the digest of its children's counts and hashes, in order.
_DIGEST = sql.SQL(
    "pg_catalog.md5(pg_catalog.string_agg(pg_catalog.concat(c.row_count, ':', c.hash), ',' "
    "ORDER BY c.idx))")


def _children() -> sql.Composable:
    """``c`` is a child of parent ``p``: ``16p <= c.idx < 16(p+1)``, an index range scan."""
    # every OPERATOR(...) has the same precedence, left to right: hence the parentheses
    return sql.SQL(
        "c.idx OPERATOR(pg_catalog.>=) (p.idx OPERATOR(pg_catalog.*) {f}) AND c.idx "
        "OPERATOR(pg_catalog.<) ((p.idx OPERATOR(pg_catalog.+) 1) OPERATOR(pg_catalog.*) {f})"
    ).format(f=sql.Literal(FANOUT))


def rebuild_inner(cur: cursor, key: str, touched: set[int] | None) -> None:
    """Recompute the inner levels: every node when ``touched`` is None, else the ancestors
    of the ``touched`` leaves only."""
    inner = obj("inner", key)
    if touched is None:
        cur.execute(sql.SQL("TRUNCATE {}").format(inner))
        levels = levels_for(block_count(cur, key))
    elif not touched:
        return
    else:  # the leaves are as many as before: the tree keeps its height
        cur.execute(sql.SQL("SELECT pg_catalog.max(level) FROM {}").format(inner))
        levels = int(cur.fetchone()[0] or levels_for(block_count(cur, key)))
    parents = None if touched is None else sorted({b // FANOUT for b in touched})
    if parents is not None:
        no_jit(cur)
    for level in range(1, levels + 1):
        if level == 1:
            source = sql.SQL("SELECT block_no AS idx, row_count, hash::pg_catalog.text AS hash "
                             "FROM {}").format(obj("blocks", key))
        else:
            source = sql.SQL("SELECT idx, row_count, hash FROM {} "
                             "WHERE level OPERATOR(pg_catalog.=) {}").format(
                inner, sql.Literal(level - 1))
        # a parent's children are idx 16p .. 16p+15: one index range scan per parent
        if parents is None:
            rows = sql.SQL("FROM ({}) c").format(source)
            params: tuple[object, ...] = (level,)
        else:
            rows = sql.SQL("FROM pg_catalog.unnest(%s::pg_catalog.int4[]) AS p(idx) "
                           "JOIN ({}) c ON {children}").format(source, children=_children())
            params = (level, parents)
        cur.execute(sql.SQL(
            "INSERT INTO {inner} (level, idx, row_count, hash) "
            "SELECT %s, c.idx OPERATOR(pg_catalog./) {f}, pg_catalog.sum(c.row_count), {digest} "
            "{rows} GROUP BY c.idx OPERATOR(pg_catalog./) {f} "
            "ON CONFLICT (level, idx) DO UPDATE SET row_count = EXCLUDED.row_count, "
            "hash = EXCLUDED.hash").format(inner=inner, f=sql.Literal(FANOUT), rows=rows,
                                           digest=_DIGEST), params)
        if parents is not None:
            parents = sorted({p // FANOUT for p in parents})
    if touched is None:
        analyze(cur, key)


def analyze(cur: cursor, key: str) -> None:
    """Give the planner the tree's sizes.

    Tables filled in the transaction that created or emptied them look empty to
    the planner until autovacuum comes by: the first walk after a build then
    scanned a whole level once per parent (over a second at 100,000 leaves).
    """
    cur.execute(sql.SQL("ANALYZE {}, {}").format(obj("blocks", key), obj("inner", key)))


def rebuild_inner_from(cur: cursor, key: str, first: int, blocks: int) -> None:
    """Recompute the inner nodes above leaves ``first`` onward, after the ``blocks`` leaves
    were renumbered from ``first`` on; the nodes before keep their hashes.

    At each level the first parent whose children may have changed is
    ``first // 16**level``; it and every parent after it are computed again
    (and parents past the new end removed), levels above the new root dropped.
    """
    inner = obj("inner", key)
    levels = levels_for(blocks)
    cur.execute(sql.SQL("DELETE FROM {} WHERE level OPERATOR(pg_catalog.>) %s").format(inner),
                (levels,))
    start = first
    for level in range(1, levels + 1):
        start //= FANOUT
        if level == 1:
            source = sql.SQL("SELECT block_no AS idx, row_count, hash::pg_catalog.text AS hash "
                             "FROM {} WHERE block_no OPERATOR(pg_catalog.>=) %s").format(
                obj("blocks", key))
        else:
            source = sql.SQL("SELECT idx, row_count, hash FROM {} WHERE level "
                             "OPERATOR(pg_catalog.=) {} AND idx OPERATOR(pg_catalog.>=) %s"
                             ).format(inner, sql.Literal(level - 1))
        cur.execute(sql.SQL("DELETE FROM {} WHERE level OPERATOR(pg_catalog.=) %s "
                            "AND idx OPERATOR(pg_catalog.>=) %s").format(inner), (level, start))
        cur.execute(sql.SQL(
            "INSERT INTO {inner} (level, idx, row_count, hash) "
            "SELECT %s, c.idx OPERATOR(pg_catalog./) {f}, pg_catalog.sum(c.row_count), {digest} "
            "FROM ({source}) c GROUP BY c.idx OPERATOR(pg_catalog./) {f}").format(
            inner=inner, f=sql.Literal(FANOUT), source=source, digest=_DIGEST),
            (level, start * FANOUT))


def top_level(cur: cursor, key: str) -> tuple[int, Level]:
    """The tree's top inner level and its nodes (the root), in one query."""
    cur.execute(sql.SQL(
        "SELECT level, idx, row_count, hash FROM {i} "
        "WHERE level OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(level) FROM {i})"
    ).format(i=obj("inner", key)))
    rows = cur.fetchall()
    level = int(rows[0][0]) if rows else 1
    return level, {int(i): (int(c), str(h)) for _, i, c, h in rows}


def read_children(cur: cursor, key: str, level: int, parents: list[int]) -> Level:
    """Count and hash of every child of the ``parents`` of level ``level + 1``: the leaves
    when ``level`` is 0, else nodes of inner level ``level``.

    One index range scan per parent (its children are ``16p .. 16p+15``): an
    ``= ANY`` list of every child's number was scanned linearly, a third of a
    second for the 6,000 nodes under a thousand scattered changes.
    """
    if level == 0:
        source = sql.SQL("SELECT block_no AS idx, row_count, hash::pg_catalog.text AS hash "
                         "FROM {}").format(obj("blocks", key))
    else:
        source = sql.SQL("SELECT idx, row_count, hash FROM {} "
                         "WHERE level OPERATOR(pg_catalog.=) {}").format(
            obj("inner", key), sql.Literal(level))
    no_jit(cur)
    cur.execute(sql.SQL(
        "SELECT c.idx, c.row_count, c.hash FROM pg_catalog.unnest(%s::pg_catalog.int4[]) "
        "AS p(idx) JOIN ({}) c ON {}").format(source, _children()), (parents,))
    return {int(i): (int(c), str(h)) for i, c, h in cur.fetchall()}


def read_blocks(cur: cursor, key: str, nos: list[int]) -> dict[int, tuple[int, str]]:
    no_jit(cur)
    cur.execute(sql.SQL("SELECT block_no, row_count, hash::pg_catalog.text FROM {} "
                        "WHERE block_no OPERATOR(pg_catalog.=) ANY(%s::pg_catalog.int4[])").format(
        obj("blocks", key)), (nos,))
    return {int(b): (int(c), str(h)) for b, c, h in cur.fetchall()}


def read_lowers(cur: cursor, shape: TableShape, key: str,
                nos: list[int] | None = None) -> dict[int, Key | None]:
    """Lower bounds of blocks (all, or ``nos``) as the text PostgreSQL prints for them."""
    cols = sql.SQL(", ").join(sql.SQL("{}::pg_catalog.text").format(sql.Identifier(f"l{i}"))
                              for i in range(len(shape.key)))
    cur.execute(sql.SQL("SELECT block_no, {} FROM {} WHERE %s::pg_catalog.int4[] IS NULL "
                        "OR block_no OPERATOR(pg_catalog.=) ANY(%s::pg_catalog.int4[]) "
                        "ORDER BY block_no").format(
        cols, obj("blocks", key)), (nos, nos))
    return {int(r[0]): (None if r[0] == 0 else tuple(r[1:])) for r in cur.fetchall()}
