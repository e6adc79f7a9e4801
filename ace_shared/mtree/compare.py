"""``ace mtree table-diff``: update the trees, walk them from the root, diff only what differs.

The walk reads one level of every node's tree at a time, all nodes at once,
and goes down only under the nodes whose count or hash differ; at the bottom
are the leaves that differ. Those leaves, as key ranges ``[lower, upper)``,
go in groups to the same row fetch and diff-file writer as a full table-diff
(:mod:`ace_shared.mtree.diffjob`), so the file is the same format and
table-repair and table-rerun take it unchanged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from psycopg2 import sql
from psycopg2.extensions import cursor

from ace_shared.diff import queries
from ace_shared.diff.ranges import SUBRANGES, Key, KeyRange
from ace_shared.mtree import kept, leaves
from ace_shared.mtree.keytypes import logged_shape
from ace_shared.mtree.objects import obj
from ace_shared.mtree.tree import Job, each_node, each_session, in_transaction, reading
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.nodes.shape import TableShape

T = TypeVar("T")
Progress = Callable[[int, int], None]
ROWS_PER_QUERY = 50_000  # rows of leaves one query reads on a node, at most
GAP_LEAVES = 2  # agreeing leaves between two differing ones read with them (fill_gaps)
TWO_LEVELS_UNDER = 16  # suspects up to which the walk reads two levels at once (4,096 nodes)
SAMPLED_RUNS = 500  # runs of leaves whose kept keys are counted to size groups, at most
SPAN_LEAVES = 8  # neighbouring differing leaves from which their kept keys are read as one span
BUCKETS = 16  # parts of a leaf summed apart, so only the rows of differing parts come back
Level = leaves.Level


Children = tuple[list[Level], leaves.LeafFacts]


def _children_of(shape: TableShape, key: str, level: int, parents: list[int],
                 depth: int) -> Callable[[str], Callable[[cursor], Children]]:
    """For each node: read the children of ``parents`` at ``level`` (``depth`` levels of
    them) under the read lock."""
    return lambda node: reading(shape, key, node, lambda cur: leaves.read_children(
        cur, key, level, parents, depth, len(shape.key)))


def _differing(per_node: dict[str, dict[Any, Any]]) -> list[Any]:
    """The entries (tree nodes, or a leaf's buckets) that are not the same on every node; an
    entry a node lacks differs from any it has. Set operations on ``(entry, value)`` pairs,
    not a loop per entry: a walk may compare every leaf of the tree."""
    items = [set(entries.items()) for entries in per_node.values()]
    common = set.intersection(*items)
    return sorted({i for pairs in items for i, _ in pairs - common})


@dataclass(frozen=True)
class Reading:
    """What a re-check reads of the table: leaves whole, or by their kept keys."""

    leaves: list[int]  # read whole: differing leaves not kept, and the few agreeing between
    by_keys: list[int]  # differing leaves read by their kept keys (kept.py)
    held: int  # rows the first node holds outside ``leaves``
    rows_read: int  # rows in ``leaves`` (on the node that holds the most of each)
    total_rows: int  # rows in the table (on the node that holds the most)

    @property
    def share(self) -> float:
        """The share of the table's rows that reading ``leaves`` would read."""
        return min(1.0, self.rows_read / self.total_rows) if self.total_rows else 0.0


@dataclass(frozen=True)
class Walked:
    """Where a walk ended: the leaves that differ, and the counts of those it read."""

    differing: list[int]  # leaves whose count or hash differ
    known: list[int]  # every leaf the walk read (the children of differing parents), in order
    first: dict[int, int]  # rows the first node holds in each known leaf
    most: dict[int, int]  # rows of each known leaf on the node that holds the most
    held: int  # rows the first node holds in the table
    total_rows: int  # rows in the table (on the node that holds the most)
    marks: dict[str, dict[int, str]] = field(default_factory=dict)  # node -> known leaf -> mark
    lowers: dict[int, Key | None] = field(default_factory=dict)  # known leaf -> lower bound

    @functools.cached_property
    def spans(self) -> dict[int, tuple[Key | None, Key | None]]:
        """The bounds of the known leaves whose next leaf is known too (each leaf's upper
        bound is the next leaf's lower). The next known leaf is the next leaf of the tree
        when both are children of one parent or of two neighbouring ones: the walk read
        every child of the parents it read."""
        out: dict[int, tuple[Key | None, Key | None]] = {}
        for b, c in zip(self.known, self.known[1:], strict=False):
            if c // leaves.FANOUT - b // leaves.FANOUT <= 1:
                out[b] = (self.lowers[b], self.lowers[c])
        return out

    def reading(self, by_keys: set[int]) -> Reading:
        """Read the differing leaves ``by_keys`` by their kept keys, and the others whole with
        the few agreeing leaves between them (:func:`fill_gaps`)."""
        whole = fill_gaps([b for b in self.differing if b not in by_keys], self.known)
        return Reading(whole, sorted(by_keys), self.held - sum(self.first[b] for b in whole),
                       sum(self.most[b] for b in whole), self.total_rows)


def walk(job: Job, shape: TableShape, key: str,
         tops: dict[str, tuple[int, Level]] | None = None, touched: int = 0,
         block_rows: int = 0) -> Walked:
    """The leaves whose count or hash differ between nodes, with what the walk read of
    them and their neighbours; from ``tops``, every node's top level as the update left it
    (read in the update's own transaction), or read here. ``touched``: the leaves the
    folds changed, of about ``block_rows`` rows each."""
    if tops is None:
        tops = each_node(job, lambda node: reading(
            shape, key, node, lambda cur: leaves.top_level(cur, key)))
    levels = max(level for level, _ in tops.values())
    # a node whose tree is shorter holds nothing at this level: every root differs
    roots = {n: (nodes if level == levels else {}) for n, (level, nodes) in tops.items()}
    first = job.nodes[0]
    held = sum(c for c, _ in roots[first].values())
    total = max(sum(c for c, _ in nodes.values()) for nodes in roots.values())
    suspects = _differing(roots)
    found: dict[str, Level] = roots
    facts: dict[str, leaves.LeafFacts] = {}
    level = levels - 1
    while level >= 0:
        if not suspects:
            return Walked([], [], {}, {}, held, total)
        # few suspects: their grandchildren too, in the same query (a round trip less); and
        # the leaves with their parents when the folds touched half the leaves under them
        # or more (changes in most leaves): most of those leaves are read either way
        rows_under = max(sum(nodes.get(s, (0, ""))[0] for s in suspects)
                         for nodes in found.values())
        dense = level == 1 and 2 * touched * block_rows >= rows_under
        depth = 2 if level >= 1 and (len(suspects) <= TWO_LEVELS_UNDER or dense) else 1
        read = each_node(job, _children_of(shape, key, level, suspects, depth))
        found = {n: levels_read[0] for n, (levels_read, _) in read.items()}
        facts = {n: leaf_facts for n, (_, leaf_facts) in read.items()}
        suspects = _differing(found)
        if depth == 2:
            under = set(suspects)
            found = {n: {i: v for i, v in levels_read[1].items() if i // leaves.FANOUT in under}
                     for n, (levels_read, _) in read.items()}
            suspects = _differing(found)
        level -= depth
    most: dict[int, int] = {}  # every leaf's count on the node that holds the most rows in it
    for nodes in found.values():
        for b, (c, _) in nodes.items():
            if c > most.get(b, -1):
                most[b] = c
    known = sorted(most)
    lowers: dict[int, Key | None] = {}
    for node_facts in reversed(facts.values()):  # the boundaries are agreed: any node's
        lowers.update(node_facts.lowers)
    return Walked(suspects, known, {b: found[first].get(b, (0, ""))[0] for b in known}, most,
                  held, total, {n: f.marks for n, f in facts.items()}, lowers)


def fill_gaps(differing: list[int], known: list[int]) -> list[int]:
    """``differing`` leaves, with the few agreeing leaves between two of them added.

    Where changes touch most leaves (many scattered changes), the differing
    leaves come in short runs broken by a leaf or two that agree: read leaf by
    leaf, they cost more than a full diff. With those few leaves added, they are
    long runs that are diffed as table-diff's ranges (:mod:`~ace_shared.mtree.diffjob`);
    an agreeing leaf read costs a leaf's rows and yields no difference. ``known``
    are the leaves the walk read (the children of differing parents): a gap is
    filled only between leaves of the same or neighbouring parents, so every leaf
    in it is known.
    """
    wanted = set(differing)
    position = {b: i for i, b in enumerate(known)}
    chosen = set(wanted)
    ordered = [b for b in known if b in wanted]
    for a, b in zip(ordered, ordered[1:], strict=False):
        gap = position[b] - position[a] - 1
        if 0 < gap <= GAP_LEAVES and b // leaves.FANOUT - a // leaves.FANOUT <= 1:
            chosen.update(known[position[a] + 1:position[b]])
    return sorted(chosen)


def leaf_spans(job: Job, shape: TableShape, key: str, blocks: list[int],
               walked: Walked | None = None) -> dict[int, tuple[Key | None, Key | None]]:
    """The bounds of the given leaves: as the walk read them (:attr:`Walked.spans`), and
    those of the others read from the first node (then kept with the walk's)."""
    spans = walked.spans if walked is not None else {}
    unknown = [b for b in blocks if b not in spans]
    if unknown:
        first = job.nodes[0]
        spans.update(job.sessions.on_one(first, reading(
            shape, key, first, lambda cur: leaves.read_spans(cur, shape, key, unknown))))
    return spans


def leaf_ranges(job: Job, shape: TableShape, key: str, blocks: list[int],
                walked: Walked | None = None) -> list[KeyRange]:
    """Key ranges of the given leaves, numbered in order (:func:`leaf_spans`)."""
    if not blocks:
        return []
    spans = leaf_spans(job, shape, key, blocks, walked)
    return [KeyRange(i, *spans[b]) for i, b in enumerate(blocks)]


def table_ranges(job: Job, shape: TableShape, key: str, every: int) -> list[KeyRange]:
    """The whole key space as table-diff's ranges, cut at the lower bound of every
    ``every``-th leaf: each range spans ``SUBRANGES`` such cuts, its first hash taken per
    cut (:func:`~ace_shared.diff.queries.hash_buckets`), the first and last open-ended.

    The leaves' bounds are cut points every node sorts alike (the build agreed
    them), so no sample of the table is needed, as a table-diff's plan takes.
    """
    first = job.nodes[0]
    cuts = job.sessions.on_one(first, reading(
        shape, key, first, lambda cur: leaves.read_every_lower(cur, shape, key, every)))
    ranges = []
    for i, start in enumerate(range(0, max(1, len(cuts)), SUBRANGES)):
        lower = cuts[start] if start < len(cuts) else None
        upper = cuts[start + SUBRANGES] if start + SUBRANGES < len(cuts) else None
        inner = tuple(c for c in cuts[start + 1:start + SUBRANGES] if c is not None)
        ranges.append(KeyRange(i, lower, upper, inner))
    return ranges


def _leaf_join(shape: TableShape, ranges: list[KeyRange], extra: list[tuple[str, str, list[int]]],
               relation: sql.Composable | None = None) -> queries.Query:
    """``unnest(<bounds>, <extra>) AS b(...) JOIN <table> ON <key in [lower, upper)>``.

    The bounds arrive as one array per key column and side, and each ``extra``
    as ``(name, type, values)``, one value per range; each range is then an
    index range scan of the table (or of ``relation``, whose key columns
    ``shape`` names), in the key's own order and collation.
    """
    params: queries.Params = {}
    n = len(shape.key)
    arrays = [sql.SQL("pg_catalog.unnest({}::pg_catalog.text[])").format(
                  queries.param(params, [getattr(r, side)[i] for r in ranges]))
              for side in ("lower", "upper") for i in range(n)]
    # ACE's own prefix: the table's columns are named bare in the same query
    names = [sql.Identifier(f"ace_{s}{i}") for s in ("l", "u") for i in range(n)]
    for name, type_, values in extra:
        names.append(sql.Identifier(name))
        arrays.append(sql.SQL("pg_catalog.unnest({}::pg_catalog.{}[])").format(
            queries.param(params, values), sql.SQL(type_)))

    def bound(prefix: str) -> sql.Composable:
        casts = sql.SQL(", ").join(
            sql.SQL("b.{}::{}").format(sql.Identifier(f"ace_{prefix}{i}"),
                                       queries.catalog_text(c.type_sql))
            for i, c in enumerate(shape.key_columns))
        return sql.SQL("({})").format(casts) if n > 1 else casts
    # ROWS FROM: the many-argument unnest() is grammar for the unqualified name only
    join = sql.SQL("ROWS FROM ({arrays}) AS b({names}) JOIN {t} AS {alias} ON "
                   "{k} OPERATOR(pg_catalog.>=) {lo} AND {k} OPERATOR(pg_catalog.<) {hi}").format(
        arrays=sql.SQL(", ").join(arrays), names=sql.SQL(", ").join(names),
        t=relation or queries.table_ref(shape), alias=sql.Identifier(_ROW),
        k=queries.key_tuple(shape),
        lo=bound("l"), hi=bound("u"))
    return join, params


def _bucket(shape: TableShape) -> sql.Composable:
    """Which of ``BUCKETS`` parts of its leaf a row falls in: low bits of its key's hash.

    Any function of the row would do for finding every difference (a row that
    is the same on two nodes lands in a bucket that differs on neither, or is
    read from both); the key's hash keeps a changed row in the same bucket on
    every node, and is cheap to compute for rows that are not read.
    """
    key_only = replace(shape, columns=shape.key_columns)
    return sql.SQL("({} OPERATOR(pg_catalog.&) {})::pg_catalog.int4").format(
        _row_hash(key_only), sql.Literal(BUCKETS - 1))


# The table's alias in these queries: its columns are named through it in the row hash,
# which then names its function and casts in pg_catalog (queries.row_hash with a record).
_ROW = "ace_row"


def _row_hash(shape: TableShape) -> sql.Composable:
    """The row hash table-diff and the build use, every name in it qualified."""
    return queries.row_hash(shape, f'"{_ROW}"')


def _key_text(shape: TableShape) -> sql.Composable:
    """The key columns as text (``ace_k<i>``), cast in pg_catalog."""
    return sql.SQL(", ").join(
        sql.SQL("{}::pg_catalog.text AS {}").format(queries.Name(c.name),
                                                    sql.Identifier(f"ace_k{i}"))
        for i, c in enumerate(shape.key_columns))


def leaf_buckets(shape: TableShape, ranges: list[KeyRange]) -> queries.Query:
    """Row count and XOR of row hashes of every bucket of every range (bounded on both
    sides), one query: ``(range's position, bucket, count, hash)``."""
    join, params = _leaf_join(shape, ranges, [("ace_n", "int4", list(range(len(ranges))))])
    q = sql.SQL("SELECT b.ace_n, {bucket}, pg_catalog.count(*), pg_catalog.bit_xor({h}) "
                "FROM {join} GROUP BY 1, 2").format(bucket=_bucket(shape), h=_row_hash(shape),
                                                    join=join)
    return q, params


def leaf_rows(shape: TableShape, ranges: list[KeyRange], masks: list[int]) -> queries.Query:
    """Every row's key and hash in the buckets ``masks`` has bits set for (one mask per
    range, bit ``b`` for bucket ``b``), one query."""
    join, params = _leaf_join(shape, ranges, [("ace_mask", "int4", masks)])
    q = sql.SQL("SELECT {kt}, {h} FROM {join} WHERE ((b.ace_mask OPERATOR(pg_catalog.>>) "
                "{bucket}) OPERATOR(pg_catalog.&) 1) OPERATOR(pg_catalog.=) 1").format(
        kt=_key_text(shape), h=_row_hash(shape), join=join, bucket=_bucket(shape))
    return q, params


def kept_keys(shape: TableShape, key: str, ranges: list[KeyRange]) -> queries.Query:
    """The kept keys (:mod:`~ace_shared.mtree.kept`) within the bounds of ``ranges``, as text
    (as every key a diff compares), one index range scan of their primary key per range.

    ``shape`` is the :func:`~ace_shared.mtree.keytypes.cast_shape`: the bounds are cast
    to the key's base types, the kept keys' own.
    """
    texts = sql.SQL(", ").join(sql.SQL("{}.{}::pg_catalog.text").format(
        sql.Identifier(_ROW), sql.Identifier(f"k{i}")) for i in range(len(shape.key)))
    return _kept_within(shape, key, ranges, texts)


def _kept_within(shape: TableShape, key: str, ranges: list[KeyRange],
                 texts: sql.Composable) -> queries.Query:
    """``texts`` of the kept keys within ``ranges``: one index range scan per range."""
    held = logged_shape(shape)
    bounded = [r for r in ranges if r.lower is not None and r.upper is not None]
    parts: list[sql.Composable] = []
    params: queries.Params = {}
    if bounded:
        join, params = _leaf_join(held, bounded, [], obj("keys", key))
        parts.append(sql.SQL("SELECT {} FROM {}").format(texts, join))
    for rng in ranges:  # the first and the last leaf: open on one side
        if rng.lower is None or rng.upper is None:
            where = queries.range_where(held, rng, None, params)
            parts.append(sql.SQL("SELECT {} FROM {} AS {} WHERE {}").format(
                texts, obj("keys", key), sql.Identifier(_ROW), where))
    return sql.SQL(" UNION ALL ").join(parts), params


def outside(spans: list[tuple[Key | None, Key | None]]) -> list[KeyRange]:
    """The key space outside the ranges ``spans`` (in key order, none overlapping): the
    ranges between them, and before the first and after the last where they have bounds."""
    gaps: list[KeyRange] = []
    start: Key | None = None  # where the next gap starts: at the beginning of the key space
    for lower, upper in spans:
        if lower != start:  # (only the first leaf has no lower bound: nothing before it)
            gaps.append(KeyRange(len(gaps), start, lower))
        if upper is None:
            return gaps
        start = upper
    gaps.append(KeyRange(len(gaps), start, None))
    return gaps


def delete_kept_outside(shape: TableShape, key: str,
                        spans: list[tuple[Key | None, Key | None]]) -> queries.Query:
    """Delete the kept keys outside the ranges ``spans`` (the differing leaves', in key
    order): an index range scan per range between them, not a probe per kept key."""
    gaps = outside(spans)
    if not gaps:  # every leaf differs
        return sql.SQL("DELETE FROM {} WHERE false").format(obj("keys", key)), {}
    ctids = sql.SQL("{}.ctid").format(sql.Identifier(_ROW))
    within, params = _kept_within(shape, key, gaps, ctids)
    return sql.SQL("DELETE FROM {} WHERE ctid OPERATOR(pg_catalog.=) ANY(ARRAY({}))").format(
        obj("keys", key), within), params


def kept_marks(shape: TableShape, key: str, ranges: list[KeyRange]) -> queries.Query:
    """The marks of the leaves within each of ``ranges``, and whether each starts at its
    range's lower bound: ``(range's position, starts at the lower bound, mark)``, one index
    range scan of the leaves' bounds per range (:mod:`~ace_shared.mtree.kept`)."""
    lows = logged_shape(shape, "l")
    blocks = obj("blocks", key)
    bounded = [(i, r) for i, r in enumerate(ranges) if r.lower is not None and r.upper is not None]
    parts: list[sql.Composable] = []
    params: queries.Params = {}
    if bounded:
        join, params = _leaf_join(lows, [r for _, r in bounded],
                                  [("ace_n", "int4", [i for i, _ in bounded])], blocks)
        lower = sql.SQL(", ").join(
            sql.SQL("b.{}::{}").format(sql.Identifier(f"ace_l{i}"),
                                       queries.catalog_text(c.type_sql))
            for i, c in enumerate(lows.key_columns))
        parts.append(sql.SQL("SELECT b.ace_n, {k} OPERATOR(pg_catalog.=) {lo}, {r}.agreed "
                             "FROM {join}").format(
            k=queries.key_tuple(lows), lo=sql.SQL("({})").format(lower)
            if len(lows.key) > 1 else lower, r=sql.Identifier(_ROW), join=join))
    for i, rng in enumerate(ranges):  # the first and the last leaf: open on one side
        if rng.lower is not None and rng.upper is not None:
            continue
        at = (sql.SQL("false") if rng.lower is None else sql.SQL("{} {} {}").format(
            queries.key_tuple(lows), queries.op("="), queries.bound(lows, rng.lower, params)))
        parts.append(sql.SQL(
            "SELECT {i}, {at}, agreed FROM {t} WHERE block_no OPERATOR(pg_catalog.>) 0 AND {w}"
        ).format(i=sql.Literal(i), at=at, t=blocks,
                 w=queries.range_where(lows, rng, None, params)))
        if rng.lower is None:  # the first leaf, without a lower bound
            parts.append(sql.SQL("SELECT {}, true, agreed FROM {} WHERE block_no "
                                 "OPERATOR(pg_catalog.=) 0").format(sql.Literal(i), blocks))
    return sql.SQL(" UNION ALL ").join(parts), params


def leaf_runs(ranges: list[KeyRange]) -> list[list[KeyRange]]:
    """The leaves cut into runs of neighbours (each leaf's upper bound is the next's lower):
    a run spans exactly the key space from its first leaf's lower bound to its last's upper.

    Invariant: the runs, concatenated, are ``ranges`` in order.
    """
    runs: list[list[KeyRange]] = []
    for rng in ranges:
        if runs and runs[-1][-1].upper is not None and runs[-1][-1].upper == rng.lower:
            runs[-1].append(rng)
        else:
            runs.append([rng])
    return runs


def kept_in_span(shape: TableShape, key: str, ranges: list[KeyRange]) -> queries.Query:
    """The kept keys of a run of neighbouring leaves (:func:`leaf_runs`), as text: one index
    range scan of the kept keys over the run's span, however many leaves it holds
    (:func:`kept_keys` scans each leaf's range apart)."""
    held = logged_shape(shape)
    params: queries.Params = {}
    span = KeyRange(0, ranges[0].lower, ranges[-1].upper)
    texts = sql.SQL(", ").join(sql.SQL("{}::pg_catalog.text").format(sql.Identifier(k))
                               for k in held.key)
    return sql.SQL("SELECT {} FROM {} WHERE {}").format(
        texts, obj("keys", key), queries.range_where(held, span, None, params)), params


def kept_counts(job: Job, shape: TableShape, key: str, ranges: list[KeyRange],
                most: int) -> tuple[dict[str, int], int]:
    """How many keys each node keeps within ``ranges``, or within a sample of them, and how
    many of ``ranges`` were counted: one index range scan of the kept keys per run of
    neighbouring ranges (:func:`leaf_runs`), at most ``SAMPLED_RUNS`` runs spread evenly
    over them, never the keys of other leaves. A count stops at ``most`` keys a node:
    beyond it the count changes nothing its caller decides.

    ``shape`` is the :func:`~ace_shared.mtree.keytypes.cast_shape`.
    """
    runs = leaf_runs(ranges)
    if len(runs) > SAMPLED_RUNS:  # ten thousand scattered leaves: sized by 500 of them
        runs = runs[::math.ceil(len(runs) / SAMPLED_RUNS)]
    spans = [KeyRange(i, run[0].lower, run[-1].upper) for i, run in enumerate(runs)]
    within, params = _kept_within(shape, key, spans, sql.SQL("1"))
    count = _fetch((sql.SQL("SELECT pg_catalog.count(*) FROM ({} LIMIT {}) k").format(
        within, sql.Literal(most)), params))
    per_node = each_node(job, lambda node: reading(shape, key, node, count))
    return {node: int(rows[0][0]) for node, rows in per_node.items()}, sum(map(len, runs))


def leaves_in_span(shape: TableShape, key: str, ranges: list[KeyRange]) -> queries.Query:
    """Every leaf within the span of a run of neighbouring leaves: its lower bound as text
    (as :class:`~ace_shared.diff.ranges.KeyRange` holds it; NULL for the first leaf) and its
    mark as text (as :func:`~ace_shared.mtree.kept.kept_leaves` compares marks). One index
    range scan of the leaves' bounds, however many leaves."""
    lows = logged_shape(shape, "l")
    params: queries.Params = {}
    span = KeyRange(0, ranges[0].lower, ranges[-1].upper)
    texts = sql.SQL(", ").join(sql.SQL("{}::pg_catalog.text").format(sql.Identifier(k))
                               for k in lows.key)
    q = sql.SQL("SELECT {}, agreed::pg_catalog.text FROM {} WHERE block_no OPERATOR(pg_catalog.>) 0 "
                "AND {}").format(texts, obj("blocks", key),
                                 queries.range_where(lows, span, None, params))
    if span.lower is None:  # the first leaf, without a lower bound
        nulls = sql.SQL(", ").join(sql.SQL("NULL") for _ in lows.key)
        q = sql.SQL("{} UNION ALL SELECT {}, agreed::pg_catalog.text FROM {} WHERE block_no "
                    "OPERATOR(pg_catalog.=) 0").format(q, nulls, obj("blocks", key))
    return q, params


def marks_of_run(ranges: list[KeyRange],
                 leaves_found: list[tuple[Any, ...]]) -> dict[int, str] | None:
    """Each range's mark as PostgreSQL prints it (the same text for the same mark), from the
    leaves :func:`leaves_in_span` found in the run's span; None unless those leaves are
    exactly the ranges (a split or a merge since the plan moved a bound: the caller then
    asks range by range).

    A range is matched to the leaf whose lower bound prints as the range's does (the
    text PostgreSQL printed for both): text that differs only makes the caller ask
    again, range by range, in PostgreSQL's own comparison.
    """
    position = {rng.lower: i for i, rng in enumerate(ranges)}
    marks: dict[int, str] = {}
    for *lower, mark in leaves_found:
        at = position.get(None if lower[0] is None else tuple(lower))
        if at is None or at in marks:
            return None
        marks[at] = mark
    return marks if len(marks) == len(ranges) else None


def _fetch(q: queries.Query) -> Callable[[Any], list[tuple[Any, ...]]]:
    query, params = q

    def run(cur: Any) -> list[tuple[Any, ...]]:
        # one index range scan per leaf, whatever the planner estimates for a join
        # against a list of bounds (queries.PINNED_PLAN, which also turns JIT off:
        # compiling many short scans took most of a second where running them took
        # a tenth of that)
        # sent with the query: one round trip
        cur.execute(sql.Composed([sql.SQL(queries.PINNED_PLAN + "; "), query]), params)
        rows: list[tuple[Any, ...]] = cur.fetchall()
        return rows
    return run


def _fetch_all(sessions: NodeSessions, q: queries.Query) -> dict[str, list[tuple[Any, ...]]]:
    return sessions.on_all(_fetch(q))


def _at_one_snapshot(shape: TableShape, key: str, run: Callable[[cursor], T], node: str,
                     ) -> Callable[[cursor], T]:
    """``run`` on ``node`` under the tree's read lock, in one ``REPEATABLE READ`` transaction:
    what it reads of several of ACE's tables is one state of them."""
    return in_transaction(reading(shape, key, node, run), repeatable=True)


class LeafDiffer:
    """Finds the differing keys of whole leaves, all leaves at once, in two steps.

    First every node sums each leaf's rows into ``BUCKETS`` buckets by key (count
    and XOR of row hashes, as the leaves themselves); then only the rows of the
    buckets that differ come back, key and hash. A thousand leaves with one
    change each sent 100,000 rows a node to compare in Python before; now
    16,000 small sums and about 6,000 rows.
    """

    def __init__(self, sessions: NodeSessions, shape: TableShape, block_rows: int) -> None:
        self.sessions = sessions
        self.shape = shape
        self.per_query = max(1, ROWS_PER_QUERY // max(1, block_rows))
        self.first_held = 0

    def keys(self, ranges: list[KeyRange], progress: Progress | None) -> set[Key]:
        bounded = [r for r in ranges if r.lower is not None and r.upper is not None]
        batches = [bounded[i:i + self.per_query] for i in range(0, len(bounded), self.per_query)]
        open_ended = [r for r in ranges if r.lower is None or r.upper is None]
        steps = len(batches) + len(open_ended)
        found: set[Key] = set()
        for done, batch in enumerate(batches, start=1):
            found |= self._batch(batch)
            if progress:
                progress(done, steps)
        for done, rng in enumerate(open_ended, start=len(batches) + 1):
            found |= self._compare(_fetch_all(self.sessions,
                                              queries.leaf_hashes(self.shape, rng, None)))
            if progress:
                progress(done, steps)
        return found

    def kept_keys(self, key: str, ranges: list[KeyRange]) -> tuple[set[Key], list[KeyRange]]:
        """The keys kept on any node within ``ranges`` (leaves that agreed on every node
        before, :mod:`~ace_shared.mtree.kept`): every key that can differ in them; and the
        ranges to read whole instead. Their rows are not read here; the caller's row fetch
        keeps those that differ.

        The plan chose these leaves under the tree lock, but the groups run after it: a
        re-check of other nodes in between may have marked a leaf anew on some node and
        deleted its keys there. So each node's marks are read with its keys, at one
        snapshot, and a range is read by its keys only if it is still one leaf or more
        from its lower bound on, marked alike on every node; otherwise it is read whole.
        """
        found: set[Key] = set()
        whole: list[KeyRange] = []
        n = len(self.shape.key)
        for part in self._kept_parts(key, ranges, found):
            keys_run = _fetch(kept_keys(self.shape, key, part))
            marks_run = _fetch(kept_marks(self.shape, key, part))

            def both(cur: Any, keys_run: Any = keys_run, marks_run: Any = marks_run) -> Any:
                return keys_run(cur), marks_run(cur)

            per_node = each_session(self.sessions, functools.partial(
                _at_one_snapshot, self.shape, key, both))
            starts: set[int] = set(range(len(part)))
            marks: dict[int, set[tuple[int, ...]]] = {}
            for rows, node_marks in per_node.values():
                found.update(tuple(r[:n]) for r in rows)
                at_lower = set()
                for pos, at, mark in node_marks:
                    marks.setdefault(int(pos), set()).add(tuple(mark))
                    if at:
                        at_lower.add(int(pos))
                starts &= at_lower
            whole += [rng for pos, rng in enumerate(part)
                      if pos not in starts or not kept.marked_alike(marks.get(pos, set()))]
        return found, whole

    def _kept_parts(self, key: str, ranges: list[KeyRange],
                    found: set[Key]) -> Iterator[list[KeyRange]]:
        """The parts of ``ranges`` to read range by range, ``per_query`` at a time, after
        adding to ``found`` the kept keys of every run of ``SPAN_LEAVES`` neighbouring
        leaves or more that :meth:`_kept_run` could read over its span."""
        loose: list[KeyRange] = []
        for run in leaf_runs(ranges):
            if len(run) >= SPAN_LEAVES and (got := self._kept_run(key, run)) is not None:
                found |= got
            else:
                loose += run
        for i in range(0, len(loose), self.per_query):
            yield loose[i:i + self.per_query]

    def _kept_run(self, key: str, run: list[KeyRange]) -> set[Key] | None:
        """The kept keys of a run of neighbouring leaves, read over its span with the marks
        of the leaves there, at one snapshot per node; None when some leaf is not marked
        alike on every node, or the leaves there are no longer exactly the run's (the
        caller then reads range by range)."""
        keys_q, leaves_q = _fetch(kept_in_span(self.shape, key, run)), \
            _fetch(leaves_in_span(self.shape, key, run))

        def both(cur: Any) -> Any:
            return keys_q(cur), leaves_q(cur)
        per_node = each_session(self.sessions, functools.partial(
            _at_one_snapshot, self.shape, key, both))
        seen: dict[int, str] | None = None
        for _, found_leaves in per_node.values():
            marks = marks_of_run(run, found_leaves)
            if marks is None or (seen is not None and marks != seen) \
                    or kept.NO_MARK in marks.values():
                return None
            seen = marks
        n = len(self.shape.key)
        return {tuple(r[:n]) for rows, _ in per_node.values() for r in rows}

    def _batch(self, batch: list[KeyRange]) -> set[Key]:
        sums = _fetch_all(self.sessions, leaf_buckets(self.shape, batch))
        per_node = {n: {(i, b): (c, h) for i, b, c, h in rows} for n, rows in sums.items()}
        self.first_held += sum(c for c, _ in per_node[self.sessions.order[0]].values())
        masks = [0] * len(batch)
        for i, b in _differing(per_node):
            masks[i] |= 1 << b
        wanted = [i for i, m in enumerate(masks) if m]
        if not wanted:
            return set()
        q = leaf_rows(self.shape, [batch[i] for i in wanted], [masks[i] for i in wanted])
        return self._compare(_fetch_all(self.sessions, q), count=False)

    def _compare(self, res: dict[str, list[tuple[Any, ...]]], count: bool = True) -> set[Key]:
        """Keys whose (key, hash) is not on every node: set operations, not a loop per key."""
        n = len(self.shape.key)
        per_node = [set(rows) for rows in res.values()]
        if count:
            self.first_held += len(res[self.sessions.order[0]])
        common = set.intersection(*per_node)
        return {tuple(r[:n]) for rows in per_node for r in rows - common}
