"""Reading and writing one node's tree: leaf blocks, their hashes, the inner levels.

Every function takes a cursor on one node and leaves the transaction to its
caller: building, draining the change log and restructuring blocks each run
in one ``REPEATABLE READ`` transaction per node, so a block's hash always
describes the table at one snapshot and every change committed after that
snapshot is still in the log (see :mod:`ace_shared.mtree.objects`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.diff import queries
from ace_shared.diff.ranges import Key, KeyRange
from ace_shared.mtree.objects import ALTERED, TRUNCATED, obj
from ace_shared.nodes.shape import TableShape

FANOUT = 16  # children per inner node
# A build numbers leaf i as i * STRIDE: the numbers in between are room for the pieces of
# a split, so splitting a leaf moves no other leaf (see make_room)
STRIDE = 4
SIG_PREFIX = "x1:"  # a boundary signature kept as the XOR of one digest per leaf
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
    stale: tuple[int, ...] = ()  # blocks left with a negative row count: the log and they disagree
    counts: tuple[int, ...] = ()  # the row count each of ``touched`` was left with


def _digests(shape: TableShape, key: str) -> sql.Composable:
    """The XOR of one md5 per leaf (of its number and lower bound), as two int8 halves:
    leaves all, or those numbered in the ``%s`` array (given twice)."""
    half = ("pg_catalog.bit_xor((pg_catalog.textcat('x', pg_catalog.substr(d, {}, 16)))"
            "::pg_catalog.\"bit\"(64)::pg_catalog.int8)")
    return sql.SQL(
        "SELECT coalesce({a}, 0), coalesce({b}, 0) FROM (SELECT pg_catalog.md5(pg_catalog.concat("
        "block_no, ':', ROW({l})::pg_catalog.text)) AS d FROM {t} WHERE %s::pg_catalog.int4[] "
        "IS NULL OR block_no OPERATOR(pg_catalog.=) ANY(%s::pg_catalog.int4[])) s").format(
        a=sql.SQL(half.format(1)), b=sql.SQL(half.format(17)), l=_lower_names(shape),
        t=obj("blocks", key))


def digest_xor(cur: cursor, shape: TableShape, key: str, nos: list[int] | None) -> int:
    """The XOR of the digests of the leaves ``nos`` (all when None), as one 128-bit number."""
    if nos is not None and not nos:
        return 0
    cur.execute(_digests(shape, key), (nos, nos))
    high, low = cur.fetchone()
    return ((int(high) & _MASK) << 64) | (int(low) & _MASK)


_MASK = (1 << 64) - 1


def signature_text(value: int) -> str:
    return f"{SIG_PREFIX}{value:032x}"


def signature_value(sig: str) -> int | None:
    """The number of a signature kept incrementally; None for a digest of an earlier
    version (of every boundary in order), which must be computed afresh once."""
    return int(sig[len(SIG_PREFIX):], 16) if sig.startswith(SIG_PREFIX) else None


def bounds_signature(cur: cursor, shape: TableShape, key: str) -> str:
    """A digest of the leaves' numbers and boundaries, equal on every node that has the
    same leaves: the XOR of one digest per leaf, so a rebalance keeps it up to date from
    the leaves it removes and adds (:func:`digest_xor`) without reading the others."""
    return signature_text(digest_xor(cur, shape, key, None))


def max_block(cur: cursor, key: str) -> int:
    """The highest leaf number (one probe of the primary key's index)."""
    cur.execute(sql.SQL("SELECT coalesce(pg_catalog.max(block_no), 0) FROM {}").format(
        obj("blocks", key)))
    return int(cur.fetchone()[0])


def make_room(cur: cursor, key: str, b: int, pieces: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Numbers for the ``pieces`` leaves leaf ``b`` is split into (the first is ``b``), and
    the moves ``(old, new)`` of the leaves after it that make room for them.

    The pieces and the ``m`` leaves that follow ``b`` are spread evenly over the
    numbers from ``b`` up to the next leaf, for the smallest ``m`` that leaves as
    much room again (so the next split nearby moves little), or over ``STRIDE``
    apart past the last leaf. A tree built with gaps (``STRIDE``) moves no leaf
    or one; a tree numbered densely by an earlier version moves the leaves after
    ``b`` once, and has gaps from then on. The cost is the leaves moved, never
    the leaves of the whole tree.
    """
    limit = 16
    while True:
        cur.execute(sql.SQL("SELECT block_no FROM {} WHERE block_no OPERATOR(pg_catalog.>) %s "
                            "ORDER BY block_no LIMIT %s").format(obj("blocks", key)), (b, limit))
        after = [int(r[0]) for r in cur.fetchall()]
        for m in range(len(after) + 1):
            total = pieces + m
            if m < len(after):
                span = after[m] - b
                if span < 2 * total:
                    continue
                numbers = [b + (i * span) // total for i in range(total)]
            elif len(after) < limit:  # the last leaf: room without end
                numbers = [b + i * STRIDE for i in range(total)]
            else:
                break
            moves = [(old, new) for old, new in zip(after[:m], numbers[pieces:], strict=True)
                     if old != new]
            return numbers[:pieces], moves
        limit *= 4


def move_blocks(cur: cursor, key: str, moves: list[tuple[int, int]]) -> None:
    """Give leaves new numbers, through negative ones so no two share one on the way."""
    if not moves:
        return
    blocks = obj("blocks", key)
    cur.execute(sql.SQL(
        "UPDATE {} b SET block_no = OPERATOR(pg_catalog.-) (m.n OPERATOR(pg_catalog.+) 1) "
        "FROM ROWS FROM (pg_catalog.unnest(%s::pg_catalog.int4[]), "
        "pg_catalog.unnest(%s::pg_catalog.int4[])) AS m(o, n) "
        "WHERE b.block_no OPERATOR(pg_catalog.=) m.o").format(blocks),
        ([o for o, _ in moves], [n for _, n in moves]))
    cur.execute(sql.SQL("UPDATE {} SET block_no = (OPERATOR(pg_catalog.-) block_no) "
                        "OPERATOR(pg_catalog.-) 1 WHERE block_no OPERATOR(pg_catalog.<) 0"
                        ).format(blocks))


def _lower_casts(shape: TableShape) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("u.{}::{}").format(sql.Identifier(f"k{i}"), queries.catalog_text(c.type_sql))
        for i, c in enumerate(shape.key_columns))


def _lower_names(shape: TableShape, alias: str = "") -> sql.Composable:
    prefix = sql.SQL(f"{alias}.") if alias else sql.SQL("")
    return sql.SQL(", ").join(sql.SQL("{}{}").format(prefix, sql.Identifier(f"l{i}"))
                              for i in range(len(shape.key)))


def insert_blocks(cur: cursor, shape: TableShape, key: str, numbers: list[int],
                  lowers: list[Key | None], counts: list[int], hashes: list[int],
                  agreed: list[int] | None = None) -> None:
    """Insert blocks numbered ``numbers`` with their lower bounds and hashes, each marked as
    having last agreed on the nodes ``agreed`` (none when None, :mod:`~.kept`)."""
    params: list[object] = [agreed or []]  # its placeholder comes first
    for i in range(len(shape.key)):
        params.append([None if low is None else low[i] for low in lowers])
    params += [counts, hashes, numbers]
    # ROWS FROM: the many-argument unnest() is grammar for the unqualified name only
    arrays = sql.SQL(", ").join(sql.SQL("pg_catalog.unnest(%s::pg_catalog.text[])")
                                for _ in shape.key)
    names = sql.SQL(", ").join(sql.Identifier(f"k{i}") for i in range(len(shape.key)))
    cur.execute(sql.SQL(
        "INSERT INTO {b} (block_no, {l}, row_count, hash, agreed) "
        "SELECT u.no, {casts}, u.n, u.h, %s::pg_catalog.int8[] "
        "FROM ROWS FROM ({arrays}, pg_catalog.unnest(%s::pg_catalog.int8[]), "
        "pg_catalog.unnest(%s::pg_catalog.int8[]), pg_catalog.unnest(%s::pg_catalog.int4[])) "
        "AS u({names}, n, h, no)"
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
    irrelevant: ``hash ^= h`` adds a row version and removes it again. The keys
    of changes in blocks that once agreed are kept (:mod:`~ace_shared.mtree.kept`):
    the same statement, so a key is kept exactly when its change is folded.
    """
    keys = sql.SQL(", ").join(sql.Identifier(f"k{i}") for i in range(len(shape.key)))
    d_keys = sql.SQL(", ").join(sql.SQL("d.{}").format(sql.Identifier(f"k{i}"))
                                for i in range(len(shape.key)))
    g_keys = sql.SQL(", ").join(sql.SQL("g.{}").format(sql.Identifier(f"k{i}"))
                                for i in range(len(shape.key)))
    desc = sql.SQL(", ").join(sql.SQL("b.{} DESC").format(sql.Identifier(f"l{i}"))
                              for i in range(len(shape.key)))
    q = sql.SQL(
        "WITH d AS (DELETE FROM {log} RETURNING {keys}, sign, h), "
        # the versions of one key first (an update logs two): one probe and one kept key
        # per changed key, not per version; keys equal in the key's order share a leaf
        "g AS (SELECT {dk}, pg_catalog.sum(d.sign) AS n, pg_catalog.bit_xor(d.h) AS x "
        "      FROM d WHERE d.sign OPERATOR(pg_catalog.<>) {trunc} "
        "      AND d.sign OPERATOR(pg_catalog.<>) {altered} GROUP BY {dk}), "
        # one probe of the bounds' index per key finds its leaf and whether that leaf
        # has a mark (leaf 0, without a lower bound, when none is at or below the key)
        "m AS (SELECT coalesce(x.block_no, 0) AS blk, coalesce(x.marked, (SELECT "
        "      pg_catalog.cardinality(z.agreed) OPERATOR(pg_catalog.>) 0 FROM {blocks} z "
        "      WHERE z.block_no OPERATOR(pg_catalog.=) 0), false) AS marked, "
        "      g.n, g.x, {gk} FROM g LEFT JOIN LATERAL (SELECT b.block_no, "
        "      pg_catalog.cardinality(b.agreed) OPERATOR(pg_catalog.>) 0 AS marked "
        "      FROM {blocks} b WHERE b.block_no OPERATOR(pg_catalog.>) 0 "
        "      AND ({bl}) OPERATOR(pg_catalog.<=) ({gk}) ORDER BY {desc} LIMIT 1) x ON true), "
        "k AS (INSERT INTO {kept} ({keys}) SELECT {mk} FROM m WHERE m.marked "
        "      ON CONFLICT DO NOTHING), "
        "a AS (SELECT blk, pg_catalog.sum(n)::pg_catalog.int8 AS n, pg_catalog.bit_xor(x) AS x "
        "      FROM m GROUP BY blk), "
        "u AS (UPDATE {blocks} b SET row_count = b.row_count OPERATOR(pg_catalog.+) a.n, "
        "      hash = b.hash OPERATOR(pg_catalog.#) a.x "
        "      FROM a WHERE b.block_no OPERATOR(pg_catalog.=) a.blk "
        "      RETURNING b.block_no, b.row_count) "
        "SELECT (SELECT pg_catalog.count(*) FROM d), "
        "       coalesce((SELECT pg_catalog.bool_or(sign OPERATOR(pg_catalog.=) {trunc}) FROM d), "
        "                false), "
        "       coalesce((SELECT pg_catalog.bool_or(sign OPERATOR(pg_catalog.=) {altered}) "
        "                 FROM d), false), "
        "       ARRAY(SELECT block_no FROM u ORDER BY 1), "
        "       ARRAY(SELECT block_no FROM u WHERE row_count OPERATOR(pg_catalog.<) 0 ORDER BY 1), "
        "       ARRAY(SELECT row_count FROM u ORDER BY block_no)"
    ).format(log=obj("log", key), keys=keys, blocks=obj("blocks", key), kept=obj("keys", key),
             mk=sql.SQL(", ").join(sql.SQL("m.{}").format(sql.Identifier(f"k{i}"))
                                   for i in range(len(shape.key))),
             bl=_lower_names(shape, "b"), dk=d_keys, gk=g_keys, desc=desc, trunc=sql.Literal(TRUNCATED),
             altered=sql.Literal(ALTERED))
    no_jit(cur)  # one index lookup per change, not one big scan
    cur.execute(q)
    rows, truncated, altered, touched, stale, counts = cur.fetchone()
    return Drained(int(rows), bool(truncated), bool(altered),
                   tuple(int(b) for b in touched or ()), tuple(int(b) for b in stale or ()),
                   tuple(int(c) for c in counts or ()))


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


def _children(fanout: int = FANOUT) -> sql.Composable:
    """``c`` is a child of parent ``p``: ``16p <= c.idx < 16(p+1)``, an index range scan
    (``fanout`` 256: a grandchild)."""
    # every OPERATOR(...) has the same precedence, left to right: hence the parentheses
    return sql.SQL(
        "c.idx OPERATOR(pg_catalog.>=) (p.idx OPERATOR(pg_catalog.*) {f}) AND c.idx "
        "OPERATOR(pg_catalog.<) ((p.idx OPERATOR(pg_catalog.+) 1) OPERATOR(pg_catalog.*) {f})"
    ).format(f=sql.Literal(fanout))


def rebuild_inner(cur: cursor, key: str, touched: set[int] | None) -> None:
    """Recompute the inner levels: every node when ``touched`` is None, else the ancestors
    of the ``touched`` leaves only (leaves changed, added, removed or moved).

    Parents are positional (leaf ``b``'s is ``b // 16``), so numbers left free
    between leaves are simply absent children. The height follows the highest
    leaf number: levels above it are dropped, a new top level is computed from
    the level below, whose nodes outside the touched paths are unchanged. The
    ancestors of every level are known before any is written, so for touched
    leaves every level's statements go to the node in one round trip (each
    statement of it sees what the ones before it wrote).
    """
    if touched is not None and not touched:  # (a node whose fold changed no leaf)
        return
    inner = obj("inner", key)
    levels = levels_for(max_block(cur, key) + 1)
    statements: list[sql.Composable] = []
    if touched is None:
        statements.append(sql.SQL("TRUNCATE {}").format(inner))
    else:
        statements.append(sql.SQL("DELETE FROM {} WHERE level OPERATOR(pg_catalog.>) {}").format(
            inner, sql.Literal(levels)))
    parents = None if touched is None else sorted({b // FANOUT for b in touched})
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
        else:  # a parent left without children goes
            ids = sql.SQL("{}::pg_catalog.int4[]").format(sql.Literal(parents))
            statements.append(sql.SQL(
                "DELETE FROM {} WHERE level OPERATOR(pg_catalog.=) {} AND idx "
                "OPERATOR(pg_catalog.=) ANY({})").format(inner, sql.Literal(level), ids))
            rows = sql.SQL("FROM pg_catalog.unnest({}) AS p(idx) "
                           "JOIN ({}) c ON {children}").format(ids, source, children=_children())
        statements.append(sql.SQL(
            "INSERT INTO {inner} (level, idx, row_count, hash) "
            "SELECT {level}, c.idx OPERATOR(pg_catalog./) {f}, pg_catalog.sum(c.row_count), "
            "{digest} {rows} GROUP BY c.idx OPERATOR(pg_catalog./) {f}").format(
            inner=inner, level=sql.Literal(level), f=sql.Literal(FANOUT), rows=rows,
            digest=_DIGEST))
        if parents is not None:
            parents = sorted({p // FANOUT for p in parents})
    if touched is None:  # a whole level a statement: nothing to gain from sending them at once
        for statement in statements:
            cur.execute(statement)
        analyze(cur, key)
    else:  # JIT off first (see no_jit)
        cur.execute(sql.SQL("; ").join([sql.SQL("SET LOCAL jit = off"), *statements]))


def analyze(cur: cursor, key: str) -> None:
    """Give the planner the tree's sizes.

    Tables filled in the transaction that created or emptied them look empty to
    the planner until autovacuum comes by: the first walk after a build then
    scanned a whole level once per parent (over a second at 100,000 leaves).
    """
    cur.execute(sql.SQL("ANALYZE {}, {}").format(obj("blocks", key), obj("inner", key)))


def top_level(cur: cursor, key: str) -> tuple[int, Level]:
    """The tree's top inner level and its nodes (the root), in one query."""
    cur.execute(sql.SQL(
        "SELECT level, idx, row_count, hash FROM {i} "
        "WHERE level OPERATOR(pg_catalog.=) (SELECT pg_catalog.max(level) FROM {i})"
    ).format(i=obj("inner", key)))
    rows = cur.fetchall()
    level = int(rows[0][0]) if rows else 1
    return level, {int(i): (int(c), str(h)) for _, i, c, h in rows}


def _level_source(key: str, level: int, columns: int) -> sql.Composable:
    """A level's nodes as ``(idx, row_count, hash, mark, lower bound...)``: a leaf's mark
    (:mod:`~ace_shared.mtree.kept`) and lower bound (one text per of its ``columns`` key
    columns) come with it, nulls for an inner node."""
    if level == 0:
        lowers = sql.SQL("").join(sql.SQL(", {}::pg_catalog.text").format(
            sql.Identifier(f"l{i}")) for i in range(columns))
        return sql.SQL("SELECT block_no AS idx, row_count, hash::pg_catalog.text AS hash, "
                       "agreed::pg_catalog.text AS mark{} FROM {}").format(
            lowers, obj("blocks", key))
    nulls = sql.SQL("").join(sql.SQL(", NULL::pg_catalog.text") for _ in range(columns + 1))
    return sql.SQL("SELECT idx, row_count, hash{} FROM {} WHERE level OPERATOR(pg_catalog.=) {}"
                   ).format(nulls, obj("inner", key), sql.Literal(level))


@dataclass
class LeafFacts:
    """What a walk learns of leaves beside their counts and hashes: the nodes each last
    agreed on (``agreed`` as PostgreSQL prints it, :mod:`~ace_shared.mtree.kept`), and its
    lower bound as text (None for the first leaf), so neither is read again leaf by leaf."""

    marks: dict[int, str] = field(default_factory=dict)
    lowers: dict[int, Key | None] = field(default_factory=dict)


def read_children(cur: cursor, key: str, level: int, parents: list[int], depth: int = 1,
                  columns: int = 1) -> tuple[list[Level], LeafFacts]:
    """Count and hash of every child of the ``parents`` of level ``level + 1`` (the leaves
    when ``level`` is 0, else nodes of inner level ``level``), and with ``depth`` 2 of
    every grandchild too (level ``level - 1``): one query, one round trip for two levels.
    With the leaves come their :class:`LeafFacts` (``columns``: the key's columns).

    One index range scan per parent (its children are ``16p .. 16p+15``): an
    ``= ANY`` list of every child's number was scanned linearly, a third of a
    second for the 6,000 nodes under a thousand scattered changes.
    """
    parts = []
    for d in range(depth):
        parts.append(sql.SQL(
            "SELECT {d}, c.* FROM pg_catalog.unnest(%s::pg_catalog.int4[]) "
            "AS p(idx) JOIN ({source}) c ON {children}").format(
            d=sql.Literal(d), source=_level_source(key, level - d, columns),
            children=_children(FANOUT ** (d + 1))))
    no_jit(cur)
    cur.execute(sql.SQL(" UNION ALL ").join(parts), [parents] * depth)
    found: list[Level] = [{} for _ in range(depth)]
    facts = LeafFacts()
    for row in cur.fetchall():
        d, i, c, h = row[:4]
        found[d][i] = (c, h)
        if d == level:  # the leaves
            facts.marks[i] = row[4]
            facts.lowers[i] = tuple(row[5:]) if i else None
    return found, facts


def read_blocks(cur: cursor, key: str, nos: list[int],
                ) -> dict[int, tuple[int, str, int | None, int]]:
    """Count and hash of leaves ``nos``, with the number and count of the leaf after each
    (None and 0 for the last): one probe of the primary key per leaf and neighbour."""
    no_jit(cur)
    blocks = obj("blocks", key)
    cur.execute(sql.SQL(
        "SELECT b.block_no, b.row_count, b.hash::pg_catalog.text, n.block_no, n.row_count "
        "FROM {t} b LEFT JOIN LATERAL (SELECT x.block_no, x.row_count FROM {t} x "
        "WHERE x.block_no OPERATOR(pg_catalog.>) b.block_no ORDER BY x.block_no LIMIT 1) n "
        "ON true WHERE b.block_no OPERATOR(pg_catalog.=) ANY(%s::pg_catalog.int4[])").format(
        t=blocks), (nos,))
    return {int(b): (int(c), str(h), None if nb is None else int(nb), int(nc or 0))
            for b, c, h, nb, nc in cur.fetchall()}


def _texts(shape: TableShape, alias: str) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{}.{}::pg_catalog.text").format(
        sql.Identifier(alias), sql.Identifier(f"l{i}")) for i in range(len(shape.key)))


def read_spans(cur: cursor, shape: TableShape, key: str,
               nos: list[int]) -> dict[int, tuple[Key | None, Key | None]]:
    """Lower and upper bound of leaves ``nos`` (the upper is the next leaf's lower; None
    for the first leaf's lower and the last's upper), as the text PostgreSQL prints."""
    n = len(shape.key)
    blocks = obj("blocks", key)
    no_jit(cur)
    cur.execute(sql.SQL(
        "SELECT b.block_no, {bl}, u.* FROM {t} b LEFT JOIN LATERAL (SELECT {xl} FROM {t} x "
        "WHERE x.block_no OPERATOR(pg_catalog.>) b.block_no ORDER BY x.block_no LIMIT 1) u "
        "ON true WHERE b.block_no OPERATOR(pg_catalog.=) ANY(%s::pg_catalog.int4[])").format(
        bl=_texts(shape, "b"), xl=_texts(shape, "x"), t=blocks), (nos,))
    out: dict[int, tuple[Key | None, Key | None]] = {}
    for row in cur.fetchall():
        b = int(row[0])
        lower = None if b == 0 else tuple(row[1:1 + n])
        upper = tuple(row[1 + n:]) if any(v is not None for v in row[1 + n:]) else None
        out[b] = (lower, upper)
    return out


def read_lowers(cur: cursor, shape: TableShape, key: str) -> list[tuple[int, Key | None]]:
    """Every leaf's number and lower bound (as text), in order."""
    cur.execute(sql.SQL("SELECT block_no, {} FROM {} ORDER BY block_no").format(
        _texts(shape, "b"), sql.SQL("{} b").format(obj("blocks", key))))
    return [(int(r[0]), None if r[0] == 0 else tuple(r[1:])) for r in cur.fetchall()]


def read_every_lower(cur: cursor, shape: TableShape, key: str, every: int) -> list[Key | None]:
    """The lower bound (as text) of the first leaf and of every ``every``-th after it, in
    order: None for the first leaf's."""
    cur.execute(sql.SQL(
        "SELECT block_no, {l} FROM (SELECT b.*, pg_catalog.row_number() OVER (ORDER BY "
        "b.block_no) AS ace_rn FROM {t} b) b WHERE (b.ace_rn OPERATOR(pg_catalog.-) 1) "
        "OPERATOR(pg_catalog.%%) %s OPERATOR(pg_catalog.=) 0 ORDER BY block_no").format(
        l=_texts(shape, "b"), t=obj("blocks", key)), (every,))
    return [None if r[0] == 0 else tuple(r[1:]) for r in cur.fetchall()]


def rehash_leaves(cur: cursor, shape: TableShape, key: str, nos: list[int] | None) -> int:
    """Hash leaves ``nos`` (every leaf when None) again from the table, at this
    transaction's snapshot; return how many.

    A leaf hashed from the table at the snapshot the log was drained at is up to
    date whatever its stored hash was: the changes the snapshot sees are in the
    table, and the later ones are still logged. Every leaf is an index range scan;
    all of them, ``FANOUT`` neighbours at a time.
    """
    if nos is None:
        listed = read_lowers(cur, shape, key)
        order = [b for b, _ in listed]
        lows = [low for _, low in listed]
        ranges = []
        for i in range(0, len(order), FANOUT):
            upper = lows[i + FANOUT] if i + FANOUT < len(lows) else None
            ranges.append(KeyRange(i, lows[i], upper,
                                   tuple(low for low in lows[i + 1:i + FANOUT] if low)))
    else:
        spans = read_spans(cur, shape, key, nos)
        order = sorted(spans)
        ranges = [KeyRange(i, *spans[b]) for i, b in enumerate(order)]
    if not order:
        return 0
    counts, hashes = hash_ranges(cur, shape, ranges)
    # what the log missed is not in the kept keys either: these leaves agreed on no nodes
    # since (kept.py), and after a TRUNCATE no key of the node's is worth keeping
    if nos is None:
        cur.execute(sql.SQL("DELETE FROM {}").format(obj("keys", key)))  # MVCC-safe
    cur.execute(sql.SQL(
        "UPDATE {} b SET row_count = u.n, hash = u.h, agreed = '{{}}' FROM ROWS FROM ("
        "pg_catalog.unnest(%s::pg_catalog.int4[]), pg_catalog.unnest(%s::pg_catalog.int8[]), "
        "pg_catalog.unnest(%s::pg_catalog.int8[])) AS u(no, n, h) "
        "WHERE b.block_no OPERATOR(pg_catalog.=) u.no").format(obj("blocks", key)),
        (order, counts, hashes))
    return len(order)
