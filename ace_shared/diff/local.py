"""Running a table diff in this process, on a local pool, when no broker is configured.

The pool drives the same job pipeline as the fleet (:mod:`ace_shared.diff.job`):
plan, cut into batches, run each batch, merge; only here the batches run on
threads of this process, so both executors give the same file for the same
data. The pool's size follows ``--max-cpu-ratio`` of this machine's CPUs.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from ace_shared.config import Settings
from ace_shared.diff.budget import DiffBudget, LocalPartCounter, local_budget
from ace_shared.diff.job import DiffJob, job_view, merge_job, plan_job, run_batch, save_job
from ace_shared.diff.plan import resolve_targets
from ace_shared.diff.ranges import KeyRange
from ace_shared.diff.request import DiffRequest, DiffSpec
from ace_shared.diff.summary import DiffSummary
from ace_shared.diff.tuning import DensityHints, DiffTuning
from ace_shared.diff.workdir import BatchResult
from ace_shared.nodes.sessions import NodeSessions

Progress = Callable[[int, int], None]
RunBatch = Callable[[DiffSpec, list[KeyRange], NodeSessions, DiffBudget,
                     Callable[[str, int], None]], BatchResult]


def pool_size(max_cpu_ratio: float) -> int:
    return max(1, math.ceil((os.cpu_count() or 1) * max_cpu_ratio))


def run_table_diff(request: DiffRequest, settings: Settings, task_id: str,
                   progress: Progress | None = None,
                   tuning: DiffTuning | None = None,
                   hints: DensityHints | None = None,
                   sessions: NodeSessions | None = None) -> tuple[Path, DiffSummary]:
    """Diff a table across nodes in this process; return the diff file and its summary.

    ``tuning`` changes how the ranges are compared, never what is found (the defaults
    when None); the job's ranges share one :class:`DensityHints`, ``hints`` when given
    (which then also tells the caller what steps the differs took). ``sessions``: a
    long-lived process's sessions to the nodes, reused and left open; when None, the
    job opens and closes its own.
    """
    size = pool_size(request.max_cpu_ratio)
    owned = sessions is None
    if sessions is None:
        _, targets = resolve_targets(request.cluster_name, request.dbname, request.nodes,
                                     settings, request.role)
        sessions = NodeSessions(targets, threads_per_node=size)
    try:
        job = plan_job(request, settings, task_id, sessions, executor="local", tuning=tuning)
        save_job(job)  # as a fleet's: while the plan is there, the job's batches may write
        view = job_view(job)
        run = functools.partial(run_batch, hints=hints if hints is not None else DensityHints())
        try:
            results = run_batches(job, sessions, size, progress, run,
                                  on_first_done=view.spool_ready)
            return merge_job(job, results, settings.output_dir, view)
        finally:
            view.close()
    finally:
        if owned:
            sessions.close()


def run_batches(job: DiffJob, sessions: NodeSessions, size: int,
                progress: Progress | None = None, run: RunBatch = run_batch,
                on_first_done: Callable[[list[str]], None] | None = None) -> list[BatchResult]:
    """Run every batch of ``job`` on ``size`` threads; the first failure stops the rest.

    ``run`` diffs one batch: table-diff's ranges, or another job's batches
    (an mtree table-diff's groups of leaves) written the same way.
    ``on_first_done`` is handed the partial files of the batches that have ended
    first in range order, with none before them still running, each time more
    have: the merge's first pass over them runs here, while the nodes work on
    the later batches, instead of after the last.
    """
    total = job.ranges_total
    counter = LocalPartCounter()
    if progress:
        progress(0, total)

    def on_range_done(part: str, done_in_part: int) -> None:
        done = counter.record(part, done_in_part)
        if progress:
            progress(done, total)

    budget = local_budget(job.spec.max_diffs)
    try:
        with ThreadPoolExecutor(max_workers=size, thread_name_prefix="ace-batch") as pool:
            futures = [pool.submit(run, job.spec, g, sessions, budget, on_range_done)
                       for g in job.batches]
            try:
                _wait_in_order(futures, on_first_done)
            except BaseException:  # Ctrl-C: stop the nodes' queries, don't wait for them
                sessions.cancel()
                raise
            for fut in futures:
                fut.cancel()
            return [f.result() for f in futures if not f.cancelled()]
    except BaseException:
        job.work.remove()
        raise


def _wait_in_order(futures: list[Future[BatchResult]],
                   on_first_done: Callable[[list[str]], None] | None) -> None:
    """Wait until every future is done or one failed, reporting the finished first ones."""
    pending = set(futures)
    first_done: list[str] = []
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        if any(f.exception() is not None for f in done):
            return
        grew = False
        while len(first_done) < len(futures) and futures[len(first_done)].done():
            first_done.append(futures[len(first_done)].result().partial_path)
            grew = True
        if grew and pending and on_first_done is not None:
            on_first_done(list(first_done))
