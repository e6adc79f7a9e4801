"""``ace mtree table-diff``: update the trees, walk them from the root, diff only what differs.

The walk reads one level of every node's tree at a time, all nodes at once,
and goes down only under the nodes whose count or hash differ; at the bottom
are the leaves that differ. Those leaves, as key ranges ``[lower, upper)``,
go in groups to the same row fetch and diff-file writer as a full table-diff
(:mod:`ace_shared.mtree.diffjob`), so the file is the same format and
table-repair and table-rerun take it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg2 import sql

from ace_shared.diff import queries
from ace_shared.diff.ranges import Key, KeyRange
from ace_shared.mtree import leaves
from ace_shared.mtree.tree import Job
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.nodes.shape import TableShape

Progress = Callable[[int, int], None]
ROWS_PER_QUERY = 50_000  # rows of leaf hashes one query brings back from a node, at most
Level = dict[int, tuple[int, str]]


def _differing(per_node: dict[str, Level]) -> list[int]:
    idxs = sorted(set().union(*(set(level) for level in per_node.values())))
    return [i for i in idxs if len({level.get(i, (0, "")) for level in per_node.values()}) > 1]


def walk(job: Job, key: str) -> tuple[list[int], int]:
    """The leaves whose count or hash differ between nodes, and how many rows the first node
    holds outside them."""
    top = job.sessions.on_all(lambda cur: leaves.levels_for(leaves.block_count(cur, key)))
    levels = max(top.values())
    roots = job.sessions.on_all(lambda cur: leaves.read_level(cur, key, levels, None))
    first = job.nodes[0]
    held = sum(c for c, _ in roots[first].values())
    suspects = _differing(roots)
    for level in range(levels - 1, -1, -1):
        if not suspects:
            return [], held
        children = sorted({c for p in suspects
                           for c in range(p * leaves.FANOUT, (p + 1) * leaves.FANOUT)})
        if level == 0:
            found = job.sessions.on_all(lambda cur, ch=children: leaves.read_blocks(cur, key, ch))
        else:
            found = job.sessions.on_all(
                lambda cur, lv=level, ch=children: leaves.read_level(cur, key, lv, ch))
        suspects = _differing(found)
    if not suspects:
        return suspects, held
    return suspects, held - sum(found[first].get(b, (0, ""))[0] for b in suspects)


def leaf_ranges(job: Job, shape: TableShape, key: str, blocks: list[int]) -> list[KeyRange]:
    """Key ranges of the given leaves, numbered in order."""
    if not blocks:
        return []
    wanted = sorted({b + d for b in blocks for d in (0, 1)})
    lowers = job.sessions.on_one(job.nodes[0],
                                 lambda cur: leaves.read_lowers(cur, shape, key, wanted))
    return [KeyRange(i, lowers.get(b), lowers.get(b + 1)) for i, b in enumerate(blocks)]


def _key_tuple(shape: TableShape) -> sql.Composable:
    cols = sql.SQL(", ").join(queries.Name(c.name) for c in shape.key_columns)
    return sql.SQL("({})").format(cols) if len(shape.key) > 1 else cols


def leaf_rows(shape: TableShape, ranges: list[KeyRange]) -> queries.Query:
    """Every row's key and hash in any of ``ranges`` (all bounded on both sides), one query.

    The bounds arrive as one array per key column and side; each range is then an
    index range scan of the table, in the key's own order and collation.
    """
    params: list[object] = []
    n = len(shape.key)
    for side in ("lower", "upper"):
        for i in range(n):
            params.append([getattr(r, side)[i] for r in ranges])
    names = [sql.Identifier(f"{s}{i}") for s in ("l", "u") for i in range(n)]

    def bound(prefix: str) -> sql.Composable:
        casts = sql.SQL(", ").join(
            sql.SQL("b.{}::{}").format(sql.Identifier(f"{prefix}{i}"),
                                       queries.catalog_text(c.type_sql))
            for i, c in enumerate(shape.key_columns))
        return sql.SQL("({})").format(casts) if n > 1 else casts
    q = sql.SQL("SELECT {kt}, {h} FROM unnest({arrays}) AS b({names}) JOIN {t} "
                "ON {k} >= {lo} AND {k} < {hi}").format(
        kt=queries.key_as_text(shape), h=queries.row_hash(shape),
        arrays=sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in names),
        names=sql.SQL(", ").join(names), t=queries.table_ref(shape), k=_key_tuple(shape),
        lo=bound("l"), hi=bound("u"))
    return q, params


def _fetch(q: queries.Query) -> Callable[[Any], list[tuple[Any, ...]]]:
    query, params = q

    def run(cur: Any) -> list[tuple[Any, ...]]:
        # many short index scans look like one huge one to the planner: compiling them
        # (JIT) took most of a second where running them takes a tenth of that
        cur.execute("SET LOCAL jit = off")
        cur.execute(query, params)
        return cur.fetchall()
    return run


class LeafDiffer:
    """Finds the differing keys of whole leaves: every row's hash, all leaves at once."""

    def __init__(self, sessions: NodeSessions, shape: TableShape, block_rows: int) -> None:
        self.sessions = sessions
        self.shape = shape
        self.per_query = max(1, ROWS_PER_QUERY // max(1, block_rows))
        self.first_held = 0

    def keys(self, ranges: list[KeyRange], progress: Progress | None) -> set[Key]:
        bounded = [r for r in ranges if r.lower is not None and r.upper is not None]
        queries_ = [leaf_rows(self.shape, bounded[i:i + self.per_query])
                    for i in range(0, len(bounded), self.per_query)]
        queries_ += [queries.leaf_hashes(self.shape, r, None) for r in ranges
                     if r.lower is None or r.upper is None]
        found: set[Key] = set()
        for done, q in enumerate(queries_, start=1):
            found |= self._compare(self.sessions.on_all(_fetch(q)))
            if progress:
                progress(done, len(queries_))
        return found

    def _compare(self, res: dict[str, list[tuple[Any, ...]]]) -> set[Key]:
        """Keys whose (key, hash) is not on every node: set operations, not a loop per key."""
        n = len(self.shape.key)
        per_node = [set(rows) for rows in res.values()]
        self.first_held += len(res[self.sessions.order[0]])
        common = set.intersection(*per_node)
        return {tuple(r[:n]) for rows in per_node for r in rows - common}
