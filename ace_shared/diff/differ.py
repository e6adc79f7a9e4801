"""The per-range work of a table diff: hash, narrow, fetch, compare.

For each key range every node hashes its rows in SQL at once, and only hashes
come back. Where the nodes disagree, the range is cut into sub-ranges that are
hashed again in one scan each (:func:`queries.hash_buckets`), down to leaves of
at most ``LEAF_ROWS`` rows whose per-row hashes are compared; only the rows
whose hashes differ are fetched in full. This module is what both the
in-process pool and the Celery subtasks call; it knows nothing of either.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from psycopg2.extensions import cursor

from ace_shared.diff import queries
from ace_shared.diff.budget import DiffBudget
from ace_shared.diff.ranges import SUBRANGES, Key, KeyRange, split_range
from ace_shared.diff.request import DiffSpec
from ace_shared.diff.workdir import BatchResult, DiffRecord, Row, WorkDir
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.nodes.shape import TableShape

LEAF_ROWS = 1000
FANOUT = SUBRANGES

def _fetch(q: queries.Query) -> Callable[[cursor], list[tuple[Any, ...]]]:
    query, params = q

    def run(cur: cursor) -> list[tuple[Any, ...]]:
        cur.execute(query, params)
        return cur.fetchall()
    return run


class RangeDiffer:
    """Finds the differing rows of ranges of one table across the nodes of one job."""

    def __init__(self, spec: DiffSpec, sessions: NodeSessions) -> None:
        self.spec = spec
        self.shape: TableShape = spec.shape
        self.sessions = sessions
        self.nodes = list(spec.nodes)
        self.filter = spec.table_filter

    def diff_range(self, rng: KeyRange) -> tuple[list[DiffRecord], int]:
        """Differing rows of one range in key order, and how many keys the nodes hold in it.

        The keys are counted once however many nodes hold them: one node's count,
        plus the differing keys that node lacks (every such key is in the records).
        """
        first = self.nodes[0]
        if rng.inner:
            per_node = self._bucket_hashes(rng, list(rng.inner))
            held = sum(c for c, _ in per_node[first].values())
            keys = self._narrow_buckets(rng, list(rng.inner), per_node)
        else:
            res = self.sessions.on_all(_fetch(queries.hash_range(self.shape, rng, self.filter)))
            hashes = {n: (int(rows[0][0]), rows[0][1]) for n, rows in res.items()}
            counts = {n: c for n, (c, _) in hashes.items()}
            held = counts[first]
            if len(set(hashes.values())) == 1:
                return [], held
            keys = self._narrow(rng, counts)
        records = self.records_for_keys(keys)
        return records, held + sum(1 for r in records if r.rows.get(first) is None)

    def _bucket_hashes(self, rng: KeyRange, inner: list[Key],
                       ) -> dict[str, dict[int, tuple[int, Any]]]:
        """Count and hash of every sub-range of ``rng`` cut at ``inner``, per node, in one scan."""
        buckets = self.sessions.on_all(
            _fetch(queries.hash_buckets(self.shape, rng, inner, self.filter)))
        return {n: {int(b): (int(c), h) for b, c, h in rows} for n, rows in buckets.items()}

    def _narrow_buckets(self, rng: KeyRange, inner: list[Key],
                        per_node: dict[str, dict[int, tuple[int, Any]]]) -> set[Key]:
        """Keys that differ in the sub-ranges whose hashes disagree."""
        found: set[Key] = set()
        for sub in split_range(rng, inner):
            sub_hashes = {n: per_node[n].get(sub.index, (0, 0)) for n in self.nodes}
            if len(set(sub_hashes.values())) > 1:
                found |= self._narrow(sub, {n: c for n, (c, _) in sub_hashes.items()})
        return found

    def _narrow(self, rng: KeyRange, counts: dict[str, int]) -> set[Key]:
        biggest = max(counts, key=lambda n: counts[n])
        if counts[biggest] <= LEAF_ROWS:
            return self._leaf(rng)
        step = max(1, math.ceil(counts[biggest] / FANOUT))
        inner_rows = self.sessions.on_one(
            biggest, _fetch(queries.inner_boundaries(self.shape, rng, step, self.filter)))
        inner = [tuple(r) for r in inner_rows]
        if not inner:
            return self._leaf(rng)
        return self._narrow_buckets(rng, inner, self._bucket_hashes(rng, inner))

    def _leaf(self, rng: KeyRange) -> set[Key]:
        n_key = len(self.shape.key)
        res = self.sessions.on_all(_fetch(queries.leaf_hashes(self.shape, rng, self.filter)))
        per_node = {n: {tuple(r[:n_key]): r[n_key] for r in rows} for n, rows in res.items()}
        all_keys: set[Key] = set()
        for m in per_node.values():
            all_keys.update(m)
        return {k for k in all_keys if len({per_node[n].get(k) for n in self.nodes}) > 1}

    def records_for_keys(self, keys: Iterable[Key]) -> list[DiffRecord]:
        """Fetch the full rows of ``keys`` on every node; keep those not equal everywhere."""
        key_list = list(keys)
        if not key_list:
            return []
        names = self.shape.column_names
        fetched = self.sessions.on_all(
            _fetch(queries.fetch_rows(self.shape, key_list, self.filter)))
        # rows are matched by the key they equal in PostgreSQL, not by their key's text
        by_node: dict[str, dict[Key, Row]] = {}
        for n, rows in fetched.items():
            by_node[n] = {key_list[int(r[0]) - 1]: dict(zip(names, r[1:], strict=True))
                          for r in rows}
        ordered = self.order_keys(key_list)
        out = []
        for k in ordered:
            rows = {n: by_node[n].get(k) for n in self.nodes}
            distinct = {json.dumps(r, sort_keys=True) for r in rows.values()}
            if len(distinct) > 1:
                out.append(DiffRecord(k, rows))
        return out

    def order_keys(self, keys: list[Key]) -> list[Key]:
        """Keys in the table's own order, as the database sorts them (collations included)."""
        if len(keys) <= 1:
            return keys
        positions = self.sessions.on_one(self.nodes[0], _fetch(queries.sort_keys(self.shape, keys)))
        return [keys[int(p[0]) - 1] for p in positions]


def diff_batch(spec: DiffSpec, ranges: list[KeyRange], sessions: NodeSessions,
               budget: DiffBudget, on_range_done: Callable[[str, int], None] | None = None,
               ) -> BatchResult:
    """Diff consecutive ranges, writing differing rows to one partial file by reference.

    ``on_range_done(part, ranges_done_in_part)`` reports progress idempotently
    (see :mod:`budget`); ``part`` names the batch by its first range. The
    partial file and the batch's record go to the job's work folder
    (:mod:`~ace_shared.diff.workdir`), so a redelivered batch simply rewrites them.
    """
    differ = RangeDiffer(spec, sessions)
    work = WorkDir(spec.work_dir)
    first = ranges[0].index
    part = str(first)
    done = rows_checked = 0
    stopped = False
    with work.partial_writer(first) as out:
        for rng in ranges:
            if budget.exhausted():
                stopped = True
                break
            records, checked = differ.diff_range(rng)
            out.write(records)
            rows_checked += checked
            done += 1
            if records:
                budget.record(part, out.count)
            if on_range_done is not None:
                on_range_done(part, done)
    result = BatchResult(first, done, len(ranges), rows_checked, out.count,
                         str(work.partial_path(first)), stopped)
    work.write_batch_result(result)
    return result
