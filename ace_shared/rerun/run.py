"""table-rerun from start to finish: check only the keys an earlier diff listed.

The result is a new diff file in the same format as table-diff's (written by
:mod:`ace_shared.diff.merge`'s writer from the batches' partial files), listing what
still differs, with a summary that also says how many of the earlier
differences are resolved and how many remain. The original table filter is
not applied again: the rows of the listed keys are compared whole.

The work is cut the same way as a diff's, so a fleet can share it:
:func:`prepare_rerun` (plan and key batches on disk), then
:func:`~ace_shared.rerun.batch.rerun_batch` per batch (``multiprocessing``) or
:func:`~ace_shared.rerun.hostdb.rerun_hostdb` once (``hostdb``), then
:func:`finish_rerun`, which reads everything back from the work folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.differ import BatchResult, read_batch_result
from ace_shared.diff.merge import build_summary
from ace_shared.diff.plan import resolve_targets
from ace_shared.diff.request import DiffSpec
from ace_shared.difffile.file import DiffFile
from ace_shared.difffile.format import new_diff_path, write_diff_json
from ace_shared.difffile.view import PartialsView
from ace_shared.errors import AceError
from ace_shared.nodes.cluster import Cluster
from ace_shared.nodes.connection import NodeTarget, node_targets
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.rerun.batch import rerun_batch
from ace_shared.rerun.hostdb import rerun_hostdb
from ace_shared.rerun.plan import RerunPlan, plan_path, prepare_rerun, rerun_nodes
from ace_shared.rerun.request import RerunRequest, load_rerun_inputs

Progress = Callable[[int, int], None]


def _pool_size(settings: Settings) -> int:
    return max(1, math.ceil((os.cpu_count() or 1) * settings.MAX_CPU_RATIO_DEFAULT))


def finish_rerun(work_dir: str | Path, output_dir: Path,
                 results: list[BatchResult] | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the new diff file from the work folder's partial files; remove the folder."""
    plan = json.loads(plan_path(work_dir).read_text(encoding="utf-8"))
    spec = DiffSpec.from_dict(plan["spec"])
    meta = plan["meta"]
    if results is None:
        found = [read_batch_result(str(work_dir), i) for i in meta["parts"]]
        if any(r is None for r in found):
            raise AceError(f"Rerun {spec.task_id} is missing the result of a batch; "
                           "run table-rerun again.")
        results = [r for r in found if r is not None]
    ordered = sorted(results, key=lambda r: r.first_range)
    view = PartialsView(spec.nodes, [{"name": c.name, "type": c.type_sql}
                                     for c in spec.shape.columns],
                        spec.shape.key, [r.partial_path for r in ordered])
    summary = build_summary(spec, meta, ordered, view, len(meta["parts"]), meta["started_at"])
    remaining = summary["diff_rows"]
    summary.update({
        "operation": "table-rerun", "behavior": meta["behavior"], "rerun_of": meta["rerun_of"],
        "previous_diff_rows": meta["previous_diff_rows"],
        "previous_diff_partial": meta["previous_diff_partial"],
        "resolved": meta["previous_diff_rows"] - remaining, "remaining": remaining,
    })
    path = new_diff_path(output_dir)
    summary["diff_file"] = str(path)
    write_diff_json(path, view, summary)
    shutil.rmtree(work_dir, ignore_errors=True)
    return path, summary


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


def _plan_dict(plan: RerunPlan) -> dict[str, Any]:
    return {"task_id": plan.spec.task_id, "work_dir": plan.spec.work_dir,
            "spec": plan.spec.to_dict(), "behavior": plan.meta["behavior"],
            "parts": plan.parts, "keys_total": plan.keys_total}


def plan_rerun(raw_options: dict[str, Any], settings: Settings, task_id: str) -> dict[str, Any]:
    """Fleet step 1: check everything, sort the keys, write batches and plan; small dict back.

    Then, for ``multiprocessing``, one :func:`~ace_shared.rerun.batch.rerun_batch` per
    entry of ``parts``; for ``hostdb``, :func:`rerun_hostdb_job` once; then
    :func:`finish_rerun` with the work folder.
    """
    started = datetime.now(timezone.utc).isoformat()
    request, cluster, diff = load_rerun_inputs(raw_options, settings, header_only=True)
    sessions = NodeSessions(_targets(request, cluster, diff, settings))
    try:
        plan = prepare_rerun(request, cluster, diff, settings, task_id, sessions, started)
    finally:
        sessions.close()
    return _plan_dict(plan)


def rerun_hostdb_job(work_dir: str, settings: Settings) -> dict[str, Any]:
    """Fleet step 2 for ``hostdb``: the whole comparison on the nodes; small dict back."""
    plan = json.loads(plan_path(work_dir).read_text(encoding="utf-8"))
    spec = DiffSpec.from_dict(plan["spec"])
    _, targets = resolve_targets(spec.cluster_name, spec.dbname, list(spec.nodes), settings,
                                 spec.role)
    meta = plan["meta"]
    return rerun_hostdb(spec, meta["key_batches"], meta["previous_diff_rows"],
                        targets).to_dict()


def run_table_rerun(raw_options: dict[str, Any], settings: Settings, task_id: str,
                    progress: Progress | None = None) -> tuple[Path, dict[str, Any]]:
    """Re-check the keys of a diff file in this process; return the new diff file and summary."""
    started = datetime.now(timezone.utc).isoformat()
    request, cluster, diff = load_rerun_inputs(raw_options, settings, header_only=True)
    targets = _targets(request, cluster, diff, settings)
    size = _pool_size(settings)
    sessions = NodeSessions(targets, threads_per_node=size)
    work_dir: str | None = None
    try:
        plan = prepare_rerun(request, cluster, diff, settings, task_id, sessions, started)
        work_dir = plan.spec.work_dir
        if progress:
            progress(0, len(plan.parts))
        if request.behavior == "hostdb":
            results = [BatchResult.from_dict(rerun_hostdb_job(work_dir, settings))]
            if progress:
                progress(1, 1)
        else:
            results = _run_batches(plan.spec, plan.parts, sessions, size, progress)
        return finish_rerun(work_dir, settings.output_dir, results)
    except BaseException:
        if work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise
    finally:
        sessions.close()
