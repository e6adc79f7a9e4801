"""``ace mtree table-diff`` as a table-diff job: update and walk, diff groups of leaves, merge.

1. **plan** (one step): fold every node's change log into its tree (the tree
   must be current), check the trees can be trusted, walk them, and cut the
   differing leaves into groups; the result is a :class:`~ace_shared.diff.job.DiffJob`
   like a table-diff's, whose batches are groups of leaves.
2. **diff a group** (any worker, any number of times): every row hash of the
   group's leaves on every node (:class:`~ace_shared.mtree.compare.LeafDiffer`),
   then table-diff's own row fetch for the keys that differ, into the group's
   partial file in the work folder, with the group's record beside it.
3. **merge**: table-diff's own (:func:`ace_shared.diff.job.merge_job`), which
   counts the rows of the leaves that agree from the plan.

In this process the groups run on a thread pool (:func:`diff.local.run_batches`);
on a fleet, as the batches of table-diff's chord. Either way the file is the same.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from psycopg2.extensions import cursor

from ace_shared.config import Settings
from ace_shared.diff.budget import DiffBudget
from ace_shared.diff.differ import RangeDiffer, diff_batch
from ace_shared.diff.job import DiffJob, cut_batches, job_view, merge_job, run_batch, save_job
from ace_shared.diff.local import RunBatch, pool_size, run_batches
from ace_shared.diff.plan import ProvenanceReader
from ace_shared.diff.ranges import SUBRANGES, KeyRange
from ace_shared.diff.request import DiffSpec
from ace_shared.diff.summary import DiffSummary
from ace_shared.diff.tuning import DensityHints
from ace_shared.diff.workdir import BatchResult, WorkDir
from ace_shared.mtree import kept, keytypes, objects, trust
from ace_shared.mtree.compare import (
    ROWS_PER_QUERY,
    LeafDiffer,
    Walked,
    delete_kept_outside,
    kept_counts,
    leaf_ranges,
    leaf_runs,
    leaf_spans,
    table_ranges,
    walk,
)
from ace_shared.mtree.request import MtreeRequest
from ace_shared.mtree.tree import (
    Job,
    each_node,
    guard,
    in_transaction,
    open_job,
    open_table,
    tree_lock,
)
from ace_shared.mtree.update import update_trees
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.nodes.shape import TableShape
from ace_shared.words import plural

Progress = Callable[[int, int], None]
OnRangeDone = Callable[[str, int], None]
FETCH_KEYS = 5_000  # differing keys whose full rows one query fetches
# From this share of the table's rows in the leaves to read (those that differ and the few
# between them), a re-check compares the whole table with table-diff's own ranges instead
# of leaf by leaf, which cost as much as a full diff from about 60% (docs/mtree.md)
FULL_DIFF_SHARE = 0.5
TABLE_DIFF, LEAVES = "table-diff", "leaves"  # how a re-check compared: summary["mtree"]
DENSE_RUN_LEAVES = 8  # consecutive differing leaves from which a run is diffed as ranges
RUN_ROWS = 10_000  # rows of one range when runs of leaves are diffed as table-diff ranges


def run_ranges(run: list[KeyRange], leaves_per_range: int) -> list[KeyRange]:
    """A run of neighbouring leaves as table-diff ranges of ``leaves_per_range`` leaves,
    each cut at up to ``SUBRANGES`` of its leaves' boundaries (its first hash's buckets).

    Each range is numbered by its first leaf, spans exactly its leaves, and the
    ranges together span exactly the run.
    """
    out = []
    for start in range(0, len(run), leaves_per_range):
        part = run[start:start + leaves_per_range]
        step = max(1, math.ceil(len(part) / SUBRANGES))
        inner = tuple(leaf.lower for leaf in part[step::step] if leaf.lower is not None)
        out.append(KeyRange(part[0].index, part[0].lower, part[-1].upper, inner))
    return out


def leaves_per_query(block_rows: int) -> int:
    """How many leaves of ``block_rows`` rows each one query of :class:`LeafDiffer` reads: a
    group in this process."""
    return max(1, ROWS_PER_QUERY // max(1, block_rows))


def plan_mtree_diff(job: Job, settings: Settings, task_id: str, executor: str,
                    slots: int | None = None, tasks_per_process: int = 1,
                    threads: int = 1) -> DiffJob:
    """Update the trees, walk them, and group the differing leaves into batches.

    ``slots`` counts the fleet's worker processes (None: this process diffs the
    groups on ``threads`` threads, ``leaves_per_query`` leaves each, or
    :func:`keyed_group_leaves` when every leaf is read by its kept keys).
    """
    started = datetime.now(timezone.utc).isoformat()
    request: MtreeRequest = job.request
    job.connect_lock_holders()
    provenance = ProvenanceReader(settings, request.cluster_name, job.dbname,
                                  request.origin_filter)

    def facts(cur: cursor, shape: TableShape, node: str) -> tuple[Any, ...]:
        return keytypes.read_key_bases(cur, shape, node), kept.identity(cur), provenance.read(cur)
    # the tree's check finds its table (so not whether it is a plain one)
    shape, found = open_table(job, facts)
    job.key_bases = keytypes.common_bases(shape, {n: f[0] for n, f in found.items()})
    identities = {n: f[1] for n, f in found.items()}
    key = objects.tree_key(shape.table)
    with tree_lock(job, shape.table):  # no other command folds or splits while this walks
        tree, updated, tops = update_trees(job, shape)  # checked every tree, as it folded
        walked = walk(job, shape, key, tops, updated["leaves_touched"], tree.block_rows)
        read = walked.reading(settle_marks(job, shape, key, walked, identities))
        whole = read.share >= FULL_DIFF_SHARE
        if whole:  # most rows lie in differing leaves: table-diff's own ranges, all of them
            every = max(1, RUN_ROWS // SUBRANGES // max(1, tree.block_rows))
            ranges = table_ranges(job, shape, key, every)
            block_rows, held, by_keys = every * SUBRANGES * tree.block_rows, 0, []
        else:
            blocks = sorted(read.leaves + read.by_keys)
            ranges = leaf_ranges(job, shape, key, blocks, walked)
            block_rows, held = tree.block_rows, read.held
            keyed = set(read.by_keys)
            by_keys = [r.index for r, b in zip(ranges, blocks, strict=True) if b in keyed]
    if whole:  # as table-diff cuts them: a range a batch here, a few per worker on a fleet
        groups = cut_batches(ranges, None, slots, tasks_per_process)
    else:
        batch_size = None if slots is not None else group_leaves(
            job, shape, key, ranges, tree.block_rows if read.leaves else None, threads)
        groups = cut_batches(ranges, batch_size, slots, tasks_per_process) if ranges else []
    work = WorkDir.for_task(settings.output_dir, task_id).create()
    spec = DiffSpec(task_id=task_id, cluster_name=request.cluster_name, dbname=job.dbname,
                    nodes=tuple(job.nodes), shape=shape, table_filter=None,
                    block_rows=block_rows, batch_size=max((len(g) for g in groups), default=1),
                    max_diffs=settings.MAX_ALLOWED_DIFFS, role=request.role,
                    work_dir=str(work),
                    **provenance.fields({n: f[2] for n, f in found.items()}, job.nodes))
    # rows in the leaves that agree, from the tree; the differing leaves count their own
    differing = len(walked.differing)
    mtree: dict[str, Any] = {
        "leaves_differing": differing, "leaves_read": 0 if whole else len(read.leaves),
        "leaves_by_keys": len(by_keys), "share_read": round(read.share, 4),
        "compared_as": TABLE_DIFF if whole else LEAVES, **updated}
    meta = {"max_cpu_ratio": request.max_cpu_ratio, "executor": executor,
            "output": request.output, "started_at": started, "ranges_total": len(ranges),
            "batch_firsts": [g[0].index for g in groups], "rows_outside_ranges": held,
            "by_keys": by_keys, "mtree": mtree}
    if whole:
        mtree["note"] = (
            f"{plural(differing, 'leaf', 'leaves')} of the Merkle tree of table "
            f"{shape.table.display} {'differs' if differing == 1 else 'differ'}, and "
            f"reading {'it' if differing == 1 else 'them'} would read "
            f"{read.share:.0%} of its rows, so the whole table was compared as table-diff "
            "compares it.")
    return DiffJob(spec, groups, meta)


def group_leaves(job: Job, shape: TableShape, key: str, ranges: list[KeyRange],
                 block_rows: int | None, threads: int) -> int:
    """Leaves per group in this process: :func:`leaves_per_query` of leaves of ``block_rows``
    rows when some are read whole, else (``block_rows`` None: every leaf is read by its
    kept keys) :func:`keyed_group_leaves` of the keys kept within them. They are counted
    after the tree lock is given back: a group's size, not what the diff finds, rests
    on them."""
    if block_rows is not None or not ranges:
        return leaves_per_query(block_rows or 1)
    assert job.key_bases is not None  # read by the plan's first step
    counts, counted = kept_counts(job, keytypes.cast_shape(shape, job.key_bases), key, ranges,
                                  ROWS_PER_QUERY * len(ranges))
    return keyed_group_leaves(len(ranges), kept_per_leaf(counts, counted), threads)


def kept_per_leaf(counts: dict[str, int], leaves_by_keys: int) -> int:
    """About how many keys a leaf read by its kept keys reads: every node's kept keys within
    those leaves, or a sample of them (:func:`~.compare.kept_counts`), shared among the
    leaves counted, one at least. A
    group of such leaves is sized by it (:func:`keyed_group_leaves`), as a group of whole
    leaves by their rows: ten thousand leaves with a changed row each are a group for each
    thread, not twenty groups of 500 keys."""
    return max(1, math.ceil(sum(counts.values()) / max(1, leaves_by_keys)))


def keyed_group_leaves(leaves: int, per_leaf: int, threads: int) -> int:
    """Leaves per group in this process when all ``leaves`` are read by their kept keys,
    about ``per_leaf`` each (:func:`kept_per_leaf`): a group for every thread, unless that
    would leave a group fewer keys than one fetch takes (``FETCH_KEYS``), and never more
    keys than a group of whole leaves holds rows (:func:`leaves_per_query`)."""
    fewest = max(1, FETCH_KEYS // per_leaf)
    return max(1, min(leaves_per_query(per_leaf),
                      max(fewest, math.ceil(leaves / max(1, threads)))))


def settle_marks(job: Job, shape: TableShape, key: str, walked: Walked,
                 identities: dict[str, str]) -> set[int]:
    """Mark every leaf but the differing ones as agreed on the compared nodes, and delete its
    kept keys; return the differing leaves to read by their kept keys (:mod:`~.kept`).
    ``identities``: each compared node's :func:`~.kept.identity`.

    Under the tree lock, after the fold: the kept keys are exactly those folded. The
    differing leaves' marks are those the walk read with them, in this lock too (the
    settling changes only the others').
    """
    assert job.key_bases is not None  # read by the plan's first step
    cast = keytypes.cast_shape(shape, job.key_bases)
    mark = kept.mark_for(identities)
    # the kept keys outside the differing leaves, by the ranges between them
    spans = leaf_spans(job, cast, key, walked.differing, walked)
    outside = delete_kept_outside(cast, key, [spans[b] for b in walked.differing])

    def settle(node: str) -> Callable[[cursor], None]:
        def run(cur: cursor) -> None:
            guard(cur, shape, key, node, trust.ROW_EXCLUSIVE)
            kept.mark_agreed(cur, cast, key, walked.differing, mark, outside)
        return in_transaction(run)
    each_node(job, settle)
    return kept.kept_leaves(walked.marks, walked.differing)


def by_keys_of(job: DiffJob) -> frozenset[int]:
    """The ranges of a planned re-check read by their kept keys (their indices)."""
    return frozenset(job.meta.get("by_keys", ()))


def compared_whole(job: DiffJob) -> bool:
    """Whether a planned re-check compares the whole table with table-diff's own ranges
    (its batches then run as table-diff's, :func:`~ace_shared.diff.job.run_batch`)."""
    return bool(job.meta.get("mtree", {}).get("compared_as") == TABLE_DIFF)


def diff_leaf_group(spec: DiffSpec, ranges: list[KeyRange], sessions: NodeSessions,
                    budget: DiffBudget, on_range_done: OnRangeDone | None = None,
                    key_bases: tuple[str, ...] | None = None,
                    by_keys: frozenset[int] = frozenset()) -> BatchResult:
    """Diff one group of leaves into its partial file; the record the merge reads.

    Named by its first leaf's index like a table-diff batch, so a copy run again
    after its worker died rewrites the same files. ``key_bases`` are the key's base
    types as the plan read them in this process (read here when None); the leaves
    whose index is in ``by_keys`` are read by their kept keys (:mod:`~.kept`), the
    others whole.
    """
    first = ranges[0].index
    part = str(first)
    work = WorkDir(spec.work_dir)
    if budget.exhausted():
        with work.partial_writer(first):
            pass
        result = BatchResult(first, 0, len(ranges), 0, 0, str(work.partial_path(first)), True)
        work.write_batch_result(result)
        return result
    # bounds and keys are cast to the key's built-in base types, never to a domain
    cast = keytypes.cast_shape(spec.shape, key_bases or keytypes.key_bases(sessions, spec.shape))
    keyed = [r for r in ranges if r.index in by_keys]
    whole = [r for r in ranges if r.index not in by_keys]
    runs = leaf_runs(whole)
    if not keyed and len(ranges) >= DENSE_RUN_LEAVES * len(runs):
        # most leaves differ next to each other (many scattered changes, or one area
        # rewritten): reading them leaf by leaf would cost more than table-diff's own
        # hash-and-narrow over ranges of the same rows, so that is what runs
        per_range = max(1, RUN_ROWS // max(1, spec.block_rows))
        dense = replace(spec, shape=cast, block_rows=per_range * spec.block_rows)
        result = diff_batch(dense, [r for run in runs for r in run_ranges(run, per_range)],
                            sessions, budget)
        result = replace(result, ranges_done=len(ranges), ranges_total=len(ranges))
        work.write_batch_result(result)
        if on_range_done is not None:
            on_range_done(part, len(ranges))
        return result
    leaf = LeafDiffer(sessions, cast, spec.block_rows)

    def progress(done: int, total: int) -> None:
        if on_range_done is not None:
            on_range_done(part, len(ranges) * done // max(1, total))
    keys, unkept = leaf.kept_keys(objects.tree_key(spec.shape.table), keyed)
    keys |= leaf.keys(whole, progress)
    if unkept:  # marked anew since the plan: read whole, their rows counted by the plan
        counted = leaf.first_held
        keys |= leaf.keys(unkept, None)
        leaf.first_held = counted
    differ = RangeDiffer(replace(spec, shape=cast), sessions)
    ordered = differ.order_keys(sorted(keys))
    stopped = spec.max_diffs > 0 and len(ordered) > spec.max_diffs
    if stopped:
        ordered = ordered[:spec.max_diffs]
    first_node = sessions.order[0]
    missing_on_first = 0
    with work.partial_writer(first) as out:
        for i in range(0, len(ordered), FETCH_KEYS):
            records = differ.records_for_keys(ordered[i:i + FETCH_KEYS])
            out.write(records)
            missing_on_first += sum(rec.texts.get(first_node) is None for rec in records)
    if out.count:
        budget.record(part, out.count)
    result = BatchResult(first, len(ranges), len(ranges), leaf.first_held + missing_on_first,
                         out.count, str(work.partial_path(first)), stopped)
    work.write_batch_result(result)
    if on_range_done is not None:
        on_range_done(part, len(ranges))
    return result


def run_mtree_diff(request: MtreeRequest, settings: Settings, task_id: str,
                   progress: Progress | None = None,
                   sessions: NodeSessions | None = None) -> tuple[Path, DiffSummary]:
    """Update the trees, find the differing leaves, diff them here; the diff file and summary.

    ``sessions``: a long-lived process's sessions to the nodes (which may write), reused
    and left open; when None, the job opens and closes its own.
    """
    size = pool_size(request.max_cpu_ratio)
    with open_job(request, settings, threads=size, sessions=sessions) as job:
        planned = plan_mtree_diff(job, settings, task_id, executor="local", threads=size)
        save_job(planned)  # as a fleet's: while the plan is there, the job's batches may write
        # a whole table's ranges share what each learns of how dense the differences are,
        # starting from what the walk found: most leaves differ
        hints = DensityHints()
        hints.set(task_id, True)
        run: RunBatch = (functools.partial(run_batch, hints=hints)
                         if compared_whole(planned) else
                         functools.partial(diff_leaf_group, key_bases=job.key_bases,
                                           by_keys=by_keys_of(planned)))
        view = job_view(planned)
        try:
            results = run_batches(planned, job.sessions, size, progress, run=run,
                                  on_first_done=view.spool_ready)
            return merge_job(planned, results, settings.output_dir, view)
        finally:
            view.close()
