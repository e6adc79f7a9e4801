"""Running a table diff in this process, on a local pool, when no broker is configured.

The pool calls exactly what the Celery subtasks call (:func:`ace_shared.diff.differ.diff_batch`
and :func:`ace_shared.diff.merge.merge_diff`), so both executors give the same file for the
same data. Its size follows ``--max-cpu-ratio`` of this machine's CPUs.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.budget import LocalPartCounter, local_budget
from ace_shared.diff.differ import diff_batch
from ace_shared.diff.merge import merge_diff
from ace_shared.diff.plan import prepare_diff, resolve_targets
from ace_shared.diff.ranges import batches
from ace_shared.diff.request import DiffRequest
from ace_shared.nodes.sessions import NodeSessions

Progress = Callable[[int, int], None]


def pool_size(max_cpu_ratio: float) -> int:
    return max(1, math.ceil((os.cpu_count() or 1) * max_cpu_ratio))


def run_table_diff(request: DiffRequest, settings: Settings, task_id: str,
                   progress: Progress | None = None) -> tuple[Path, dict[str, Any]]:
    """Diff a table across nodes in this process; return the diff file and its summary."""
    started = datetime.now(timezone.utc).isoformat()
    size = pool_size(request.max_cpu_ratio)
    _, targets = resolve_targets(request.cluster_name, request.dbname, request.nodes,
                                 settings, request.role)
    sessions = NodeSessions(targets, threads_per_node=size)
    try:
        plan = prepare_diff(request, settings, task_id, sessions=sessions)
        groups = batches(plan.ranges, plan.spec.batch_size)
        total = len(plan.ranges)
        counter = LocalPartCounter()
        if progress:
            progress(0, total)

        def on_range_done(part: str, done_in_part: int) -> None:
            done = counter.record(part, done_in_part)
            if progress:
                progress(done, total)

        budget = local_budget(plan.spec.max_diffs)
        try:
            with ThreadPoolExecutor(max_workers=size, thread_name_prefix="ace-batch") as pool:
                futures = [pool.submit(diff_batch, plan.spec, g, sessions, budget, on_range_done)
                           for g in groups]
                try:
                    finished, pending = wait(futures, return_when=FIRST_EXCEPTION)
                except BaseException:  # Ctrl-C: stop the nodes' queries, don't wait for them
                    sessions.cancel()
                    raise
                for fut in pending:
                    fut.cancel()
                results = [f.result() for f in futures if not f.cancelled()]
        except BaseException:
            shutil.rmtree(plan.spec.work_dir, ignore_errors=True)
            raise
        meta = {"max_cpu_ratio": request.max_cpu_ratio, "executor": "local"}
        return merge_diff(plan.spec, meta, results, total, settings.output_dir, request.output,
                          started)
    finally:
        sessions.close()
