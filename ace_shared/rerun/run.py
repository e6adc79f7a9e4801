"""table-rerun from start to finish: check only the keys an earlier diff listed.

The result is a new diff file in the same format as table-diff's (written by
:func:`ace_shared.diff.merge.merge_diff` from the batches' partial files),
listing what still differs, with a summary that also says how many of the
earlier differences are resolved and how many remain. The original table
filter is not applied again: the rows of the listed keys are compared whole.

Like a diff, a rerun is one pipeline that both executors drive, so a fleet can
share it: :func:`prepare_rerun` (plan and key batches in the work folder), then
:func:`~ace_shared.rerun.batch.rerun_batch` per batch (``multiprocessing``) or
:func:`~ace_shared.rerun.hostdb.rerun_hostdb` once (``hostdb``), then
:func:`finish_rerun`. :func:`run_table_rerun` runs the batches on threads of
this process; ``ace_workers.repair`` runs them as Celery subtasks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.merge import merge_diff
from ace_shared.diff.plan import resolve_targets
from ace_shared.diff.request import DiffSpec
from ace_shared.diff.summary import DiffSummary, RerunAccount
from ace_shared.diff.workdir import BatchResult
from ace_shared.difffile.file import DiffFile
from ace_shared.errors import AceError
from ace_shared.nodes.cluster import Cluster
from ace_shared.nodes.connection import NodeTarget, node_targets
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.rerun.batch import rerun_batch
from ace_shared.rerun.hostdb import rerun_hostdb
from ace_shared.rerun.plan import RerunPlan, prepare_rerun, rerun_nodes
from ace_shared.rerun.request import RerunRequest, load_rerun_inputs

Progress = Callable[[int, int], None]


def _pool_size(settings: Settings) -> int:
    return max(1, math.ceil((os.cpu_count() or 1) * settings.MAX_CPU_RATIO_DEFAULT))


def collect_results(plan: RerunPlan) -> list[BatchResult] | None:
    """Every batch's own record from the work folder; None while one is missing."""
    return plan.work.read_batch_results(plan.parts)


def _merge(plan: RerunPlan, results: list[BatchResult],
           output_dir: Path) -> tuple[Path, DiffSummary]:
    meta = plan.meta
    remaining = sum(r.diff_keys for r in results)
    account = RerunAccount(
        behavior=meta["behavior"], rerun_of=meta["rerun_of"],
        previous_diff_rows=meta["previous_diff_rows"],
        previous_diff_partial=meta["previous_diff_partial"],
        resolved=meta["previous_diff_rows"] - remaining, remaining=remaining)
    return merge_diff(plan.spec, meta, results, len(plan.parts), output_dir, "json",
                      meta["started_at"], rerun=account)


def finish_rerun(work_dir: str | Path, output_dir: Path,
                 results: list[BatchResult] | None = None) -> tuple[Path, DiffSummary]:
    """Write the new diff file from the work folder's partial files; remove the folder."""
    plan = RerunPlan.load(work_dir)
    if results is None:
        results = collect_results(plan)
        if results is None:
            raise AceError(f"Rerun {plan.spec.task_id} is missing the result of a batch; "
                           "run table-rerun again.")
    return _merge(plan, results, output_dir)


def _run_batches(spec: DiffSpec, parts: list[int], sessions: NodeSessions, size: int,
                 progress: Progress | None) -> list[BatchResult]:
    results = []
    with ThreadPoolExecutor(max_workers=size, thread_name_prefix="ace-rerun") as pool:
        futures = [pool.submit(rerun_batch, spec, i, sessions) for i in parts]
        try:
            for fut in as_completed(futures):
                results.append(BatchResult.from_dict(fut.result()))
                if progress:
                    progress(len(results), len(parts))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return results


def _targets(request: RerunRequest, cluster: Cluster, diff: DiffFile,
             settings: Settings) -> tuple[NodeTarget, ...]:
    nodes = rerun_nodes(cluster, diff)
    return node_targets(cluster, tuple(cluster.node(n) for n in nodes),
                        request.dbname or diff.database, settings, request.role)


def _hostdb(plan: RerunPlan, targets: tuple[NodeTarget, ...]) -> BatchResult:
    return rerun_hostdb(plan.spec, plan.meta["key_batches"], plan.keys_total, targets)


def plan_rerun(raw_options: dict[str, Any], settings: Settings, task_id: str) -> dict[str, Any]:
    """Fleet step 1: check everything, sort the keys, write batches and plan; small dict back.

    Then, for ``multiprocessing``, one :func:`~ace_shared.rerun.batch.rerun_batch` per
    entry of ``parts``; for ``hostdb``, :func:`rerun_hostdb_job` once; then
    :func:`finish_rerun` with the work folder.
    """
    started = datetime.now(timezone.utc).isoformat()
    request, cluster, diff = load_rerun_inputs(raw_options, settings)
    sessions = NodeSessions(_targets(request, cluster, diff, settings))
    try:
        plan = prepare_rerun(request, cluster, diff, settings, task_id, sessions, started)
    finally:
        sessions.close()
    return {"task_id": plan.spec.task_id, "work_dir": plan.spec.work_dir,
            "spec": plan.spec.to_dict(), "behavior": plan.meta["behavior"],
            "parts": plan.parts, "keys_total": plan.keys_total}


def rerun_hostdb_job(work_dir: str, settings: Settings) -> dict[str, Any]:
    """Fleet step 2 for ``hostdb``: the whole comparison on the nodes; small dict back."""
    plan = RerunPlan.load(work_dir)
    spec = plan.spec
    _, targets = resolve_targets(spec.cluster_name, spec.dbname, list(spec.nodes), settings,
                                 spec.role)
    return _hostdb(plan, targets).to_dict()


def run_table_rerun(raw_options: dict[str, Any], settings: Settings, task_id: str,
                    progress: Progress | None = None) -> tuple[Path, DiffSummary]:
    """Re-check the keys of a diff file in this process; return the new diff file and summary."""
    started = datetime.now(timezone.utc).isoformat()
    request, cluster, diff = load_rerun_inputs(raw_options, settings)
    targets = _targets(request, cluster, diff, settings)
    size = _pool_size(settings)
    sessions = NodeSessions(targets, threads_per_node=size)
    plan: RerunPlan | None = None
    try:
        plan = prepare_rerun(request, cluster, diff, settings, task_id, sessions, started)
        if progress:
            progress(0, len(plan.parts))
        if request.behavior == "hostdb":
            results = [_hostdb(plan, targets)]
            if progress:
                progress(1, 1)
        else:
            results = _run_batches(plan.spec, plan.parts, sessions, size, progress)
        return _merge(plan, results, settings.output_dir)
    except BaseException:
        if plan is not None:
            plan.work.remove()
        raise
    finally:
        sessions.close()
