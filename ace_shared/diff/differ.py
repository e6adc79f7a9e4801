"""The per-range work of a table diff: hash, narrow or stream, fetch, compare.

For each key range every node hashes its rows in SQL at once, and only hashes
come back. Where the nodes disagree in a few sub-ranges, those are cut again
and hashed in one scan each (:func:`queries.hash_buckets`), down to leaves of
at most ``DiffTuning.leaf_rows`` rows; where they disagree in most, the differing
sub-ranges are compared in one pass instead. Leaves and passes alike compare
each row's key and hash as ``COPY`` lines (:mod:`rowlines`); only the rows
whose lines differ are fetched in full, in batches. This module is what both
the in-process pool and the Celery subtasks call; it knows nothing of either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ace_shared.diff import provenance, queries
from ace_shared.diff.budget import DiffBudget
from ace_shared.diff.ranges import SUBRANGES, Key, KeyRange, split_range
from ace_shared.diff.request import DiffSpec
from ace_shared.diff.rowlines import copy_lines, differing_lines, line_keys
from ace_shared.diff.tuning import DensityHints, DiffTuning, Strategy
from ace_shared.diff.workdir import BatchResult, DiffRecord, WorkDir
from ace_shared.difffile.format import meta_tail
from ace_shared.nodes.sessions import NodeSessions, Rows, fetching
from ace_shared.nodes.shape import TableShape

FANOUT = SUBRANGES
STAMPS_KEPT = 4096
Mark = tuple[provenance.Meta, str]  # (commit time, origin node) and the row's JSON tail
NO_MARK: Mark = ((None, None), meta_tail(None, None))


class Stamps:
    """One node's rows' provenance, as the fields the diff file ends each row with.

    A node sends each row's commit time, origin id and origin name; the rows a
    transaction wrote share all three, and most rows fetched together were written
    by a few transactions. So each distinct triple is turned into its origin node
    and the text :func:`~ace_shared.difffile.format.with_meta` would append once, and
    kept (up to :data:`STAMPS_KEPT` of them, then forgotten all at once).
    """

    def __init__(self, node: str, names: dict[str, str]) -> None:
        self.node, self.names = node, names
        self._kept: dict[tuple[Any, Any, Any], Mark] = {}

    def mark(self, commit_ts: str | None, roident: int | None, roname: str | None) -> Mark:
        """``((commit time, origin node), the row's JSON tail from its reserved fields on)``."""
        key = (commit_ts, roident, roname)
        found = self._kept.get(key)
        if found is None:
            if len(self._kept) >= STAMPS_KEPT:
                self._kept.clear()
            meta = (commit_ts, provenance.origin_node(self.node, roident, roname, self.names))
            found = self._kept[key] = (meta, meta_tail(*meta))
        return found


class RangeDiffer:
    """Finds the differing rows of ranges of one table across the nodes of one job.

    Where few sub-ranges of a range differ, narrowing reads only those again,
    level by level. Where most differ (a node cut off for an hour), narrowing
    would descend everywhere, a round trip per level; instead every node
    streams the key and hash of each row of the differing sub-ranges at once,
    and the lines are compared as sets (:mod:`rowlines`). Once a range has
    turned out dense, the next one of the job is streamed without its first
    hash pass, and a range that turns out sparse brings the first pass back (see
    :class:`~ace_shared.diff.tuning.DensityHints`; without any, each differ starts
    afresh). Either way the differing keys are the same, and so is the file.
    The job's :class:`~ace_shared.diff.tuning.DiffTuning` (``spec.tuning``) says
    which way, and how large the steps are.
    """

    def __init__(self, spec: DiffSpec, sessions: NodeSessions,
                 hints: DensityHints | None = None) -> None:
        self.spec = spec
        self.shape: TableShape = spec.shape
        self.sessions = sessions
        self.nodes = list(spec.nodes)
        self.filter = spec.table_filter
        self.tuning = spec.tuning
        self.strategy = spec.tuning.strategy
        self._hints = hints if hints is not None else DensityHints()
        self._dense = self._hints.get(spec.task_id)  # the last range differed almost everywhere
        self._node_stamps: dict[str, Stamps] = {}

    def diff_range(self, rng: KeyRange) -> tuple[list[DiffRecord], int]:
        """Differing rows of one range in key order, and how many keys the nodes hold in it.

        The keys are counted once however many nodes hold them: one node's count,
        plus the differing keys that node lacks (every such key is in the records).
        """
        first = self.nodes[0]
        if self.strategy == Strategy.STREAM or (self.strategy == Strategy.AUTO and self._dense):
            keys, held = self._stream_whole(rng)
        elif rng.inner:
            per_node = self._bucket_hashes(rng, list(rng.inner))
            held = sum(c for c, _ in per_node[first].values())
            keys = self._narrow_buckets(rng, list(rng.inner), per_node)
        else:
            res = self.sessions.fetch_all(*queries.hash_range(self.shape, rng, self.filter),
                                          setup=queries.PINNED_PLAN)
            hashes = {n: (int(rows[0][0]), rows[0][1]) for n, rows in res.items()}
            counts = {n: c for n, (c, _) in hashes.items()}
            held = counts[first]
            if len(set(hashes.values())) == 1:
                self._set_dense(False)
                return [], held
            keys = self._narrow(rng, counts)
        # as many differing keys as would touch most sub-ranges, were they scattered
        self._set_dense(len(keys) > self.tuning.dense_share * max(FANOUT, len(rng.inner) + 1))
        records = self.records_for_keys(keys)
        return records, held + sum(1 for r in records if r.texts.get(first) is None)

    def _set_dense(self, dense: bool) -> None:
        self._dense = dense
        self._hints.set(self.spec.task_id, dense)

    def _bucket_hashes(self, rng: KeyRange, inner: list[Key],
                       ) -> dict[str, dict[int, tuple[int, Any]]]:
        """Count and hash of every sub-range of ``rng`` cut at ``inner``, per node, in one scan."""
        buckets = self.sessions.fetch_all(
            *queries.hash_buckets(self.shape, rng, inner, self.filter), setup=queries.PINNED_PLAN)
        return {n: {int(b): (int(c), h) for b, c, h in rows} for n, rows in buckets.items()}

    def _narrow_buckets(self, rng: KeyRange, inner: list[Key],
                        per_node: dict[str, dict[int, tuple[int, Any]]]) -> set[Key]:
        """Keys that differ in the sub-ranges whose hashes disagree: streamed when most
        sub-ranges disagree, else narrowed one sub-range at a time."""
        differing = []
        for sub in split_range(rng, inner):
            sub_hashes = {n: per_node[n].get(sub.index, (0, 0)) for n in self.nodes}
            if len(set(sub_hashes.values())) > 1:
                differing.append((sub, {n: c for n, (c, _) in sub_hashes.items()}))
        streams = {Strategy.STREAM: True, Strategy.NARROW: False}.get(
            self.strategy, len(differing) > self.tuning.dense_share * (len(inner) + 1))
        if streams:
            return self._stream_keys(stream_chunks(
                [(sub, max(counts.values())) for sub, counts in differing],
                self.tuning.stream_rows))[0]
        found: set[Key] = set()
        for sub, counts in differing:
            found |= self._narrow(sub, counts)
        return found

    def _narrow(self, rng: KeyRange, counts: dict[str, int]) -> set[Key]:
        self._hints.count(self.spec.task_id, "narrow")
        biggest = max(counts, key=lambda n: counts[n])
        if counts[biggest] <= self.tuning.leaf_rows:
            return self._stream_keys([rng])[0]
        step = max(1, math.ceil(counts[biggest] / FANOUT))
        inner_rows = self.sessions.fetch_from(
            biggest, *queries.inner_boundaries(self.shape, rng, step, self.filter),
            setup=queries.PINNED_PLAN)
        inner = [tuple(r) for r in inner_rows]
        if not inner:
            return self._stream_keys([rng])[0]
        return self._narrow_buckets(rng, inner, self._bucket_hashes(rng, inner))

    def _stream_whole(self, rng: KeyRange) -> tuple[set[Key], int]:
        """Differing keys of a whole range without a first hash pass, and the first node's
        row count; sub-ranges are assumed to hold their share of ``block_rows``."""
        self._hints.count(self.spec.task_id, "whole")
        subs = split_range(rng, list(rng.inner))
        share = max(1, self.spec.block_rows // len(subs))
        return self._stream_keys(stream_chunks([(sub, share) for sub in subs],
                                               self.tuning.stream_rows))

    def _stream_keys(self, chunks: list[KeyRange]) -> tuple[set[Key], int]:
        """Keys whose ``key, hash`` line not every node sends, over ``chunks``; and the
        first node's row count there. Memory holds one chunk's lines at a time."""
        keys: set[Key] = set()
        held = 0
        for chunk in chunks:
            q = queries.stream_hashes(self.shape, chunk, self.filter)
            lines = self.sessions.on_all(copy_lines(q))
            held += len(lines[self.nodes[0]])
            keys.update(line_keys(differing_lines(lines.values())))
        return keys, held

    def records_for_keys(self, keys: Iterable[Key]) -> list[DiffRecord]:
        """Fetch the full rows of ``keys`` on every node; keep those not equal everywhere.

        Records come in the table's own key order (as the first node sorts, collations
        included). Rows are fetched ``tuning.fetch_keys`` keys at a time, never parting keys
        that are equal in PostgreSQL but spelt two ways (see :func:`queries.fetch_rows_in_order`).
        While the rows of one batch are compared here, the nodes already fetch the next.
        """
        key_list = sorted(set(keys))  # a fixed order, whichever way the keys were found
        if not key_list:
            return []
        batches: Iterable[list[Key]] = [key_list]
        if len(key_list) > self.tuning.fetch_keys:
            batches = self._key_batches(key_list)
        out: list[DiffRecord] = []
        pending: tuple[list[Key], Callable[[], dict[str, Rows]]] | None = None
        for batch in batches:
            if pending is None:
                pending = (batch, self._start_fetch(batch))
                continue
            # one fetch at a time on each node: the next starts once the last has answered
            done, fetched = pending[0], pending[1]()
            pending = (batch, self._start_fetch(batch))
            out.extend(self._records_of(done, fetched))
        if pending is not None:
            out.extend(self._records_of(pending[0], pending[1]()))
        return out

    def _key_batches(self, keys: list[Key]) -> Iterator[list[Key]]:
        runs = self.sessions.fetch_from(self.nodes[0], *queries.sort_key_runs(self.shape, keys),
                                        setup=queries.PINNED_PLAN)
        batch: list[Key] = []
        for position, same_as_before in runs:
            if len(batch) >= self.tuning.fetch_keys and not same_as_before:
                yield batch
                batch = []
            batch.append(keys[int(position) - 1])
        if batch:
            yield batch

    def _start_fetch(self, batch: list[Key]) -> Callable[[], dict[str, Rows]]:
        """Every node starts fetching the rows of ``batch``; the answer waits for them."""
        query, params = queries.fetch_rows_in_order(self.shape, batch, self.filter)
        return self.sessions.start_all(fetching(query, params, queries.PINNED_PLAN))

    def _batch_records(self, batch: list[Key]) -> list[DiffRecord]:
        """Records of ``batch``, in key order, whose rows are not equal everywhere."""
        if not batch:
            return []
        return self._records_of(batch, self._start_fetch(batch)())

    def _records_of(self, batch: list[Key], fetched: dict[str, Rows]) -> list[DiffRecord]:
        """Records of ``batch`` from the rows every node sent for it, in the first node's order.

        Each node sends each row as the diff file's JSON text (see
        :func:`queries.row_json_text`), so rows are compared and kept as one string each;
        a differing row gets its provenance fields from :class:`Stamps` (one per node).
        """
        nodes = self.nodes
        # rows are matched by the key they equal in PostgreSQL, not by their key's text:
        # by the position of that key in the batch (1-based), the node's (text, mark) or None
        size = len(batch) + 1
        held: list[list[tuple[str, Mark] | None]] = []
        for n in nodes:
            held.append(self._held_rows(n, fetched[n], size))
        origin_filter = self.spec.origin_filter
        filtering = origin_filter.active
        out = []
        for r in fetched[nodes[0]]:  # the first node's key order
            i = r[0]
            found = [at[i] for at in held]
            texts = [f and f[0] for f in found]  # a row's text, or None where the node lacks it
            if texts.count(texts[0]) == len(texts):
                continue
            # the provenance travels with the row's text; it is compared by its values only
            if filtering and not origin_filter.keeps(
                    {n: f and f[1][0] for n, f in zip(nodes, found, strict=True)}):
                continue
            out.append(DiffRecord(batch[i - 1], {
                n: None if f is None else f[0][:-1] + f[1][1]
                for n, f in zip(nodes, found, strict=True)}))
        return out

    def _held_rows(self, node: str, rows: Rows, size: int) -> list[tuple[str, Mark] | None]:
        """``node``'s rows by their position in the batch: each row's text and its
        provenance's mark (a row that says it shares its transaction with the row
        before it shares that row's mark; see :func:`queries.fetch_rows_in_order`)."""
        stamps = self._stamps(node)
        at: list[tuple[str, Mark] | None] = [None] * size
        mark = NO_MARK
        for r in rows:
            if not r[5]:
                mark = stamps.mark(r[2], r[3], r[4])
            if r[1] is not None:
                at[r[0]] = (r[1], mark)
        return at

    def _stamps(self, node: str) -> Stamps:
        found = self._node_stamps.get(node)
        if found is None:
            found = self._node_stamps[node] = Stamps(node, self.spec.origin_names.get(node, {}))
        return found

    def order_keys(self, keys: list[Key]) -> list[Key]:
        """Keys in the table's own order, as the database sorts them (collations included)."""
        if len(keys) <= 1:
            return keys
        positions = self.sessions.fetch_from(self.nodes[0], *queries.sort_keys(self.shape, keys),
                                             setup=queries.PINNED_PLAN)
        return [keys[int(p[0]) - 1] for p in positions]


def stream_chunks(subs: list[tuple[KeyRange, int]],
                  max_rows: int = DiffTuning.stream_rows) -> list[KeyRange]:
    """Neighbouring sub-ranges (``index`` one apart) joined into ranges of about
    ``max_rows`` rows at most, from each sub-range's row count."""
    chunks: list[KeyRange] = []
    rows = 0
    last = -2
    for sub, count in subs:
        if chunks and sub.index == last + 1 and rows + count <= max_rows:
            chunks[-1] = KeyRange(chunks[-1].index, chunks[-1].lower, sub.upper)
            rows += count
        else:
            chunks.append(KeyRange(sub.index, sub.lower, sub.upper))
            rows = count
        last = sub.index
    return chunks


def diff_batch(spec: DiffSpec, ranges: list[KeyRange], sessions: NodeSessions,
               budget: DiffBudget, on_range_done: Callable[[str, int], None] | None = None,
               hints: DensityHints | None = None) -> BatchResult:
    """Diff consecutive ranges, writing differing rows to one partial file by reference.

    ``on_range_done(part, ranges_done_in_part)`` reports progress idempotently
    (see :mod:`budget`); ``part`` names the batch by its first range. The
    partial file and the batch's record go to the job's work folder
    (:mod:`~ace_shared.diff.workdir`), so a redelivered batch simply rewrites them.
    """
    differ = RangeDiffer(spec, sessions, hints)
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
