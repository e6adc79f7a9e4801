"""A table-repair by plan, start to finish: resolve (or read a resolved plan), report, apply.

``--repair-plan`` resolves the plan over the diff file into a resolved plan
(kept where ``--plan-out`` says, else beside the work and removed), then,
unless it is a dry run, applies it. ``--apply-plan`` applies a resolved plan
saved earlier. Either way the same code writes the rows
(:func:`~ace_shared.repair.plans.apply.apply_plan_work`), so what a dry run
showed is what a run does, less the rows that changed since (listed).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.workdir import WorkDir
from ace_shared.difffile.file import DiffFile, check_diff_nodes
from ace_shared.difffile.spool import RowSpool
from ace_shared.errors import BadOptionError, RepairPlanError
from ace_shared.nodes.cluster import Cluster, load_cluster
from ace_shared.nodes.connection import node_targets
from ace_shared.outputs import new_output_path
from ace_shared.repair.apply import ApplyOptions
from ace_shared.repair.plans.apply import WorkSpool, apply_plan_work, stale_words
from ace_shared.repair.plans.loader import plan_from_object
from ace_shared.repair.plans.resolve import require_table, resolve
from ace_shared.repair.plans.resolved import read_header, read_lines
from ace_shared.repair.report import build_result, report_head, write_report
from ace_shared.repair.request import RepairRequest, load_repair_inputs
from ace_shared.words import plural


def open_resolved_plan(request: RepairRequest, settings: Settings
                       ) -> tuple[RepairRequest, Cluster, DiffFile]:
    """A resolved plan for this cluster and table, its nodes still the cluster's; its header
    stands in for the diff file it was resolved from (which may be gone by now)."""
    assert request.apply_plan is not None
    path = Path(request.apply_plan).expanduser().resolve()
    header = read_header(path)
    if header.get("table") != request.table.display:
        raise RepairPlanError(f"The resolved plan {path} is for table {header.get('table')}, "
                              f"not {request.table.display}; pass the matching plan.")
    if header.get("cluster_name") != request.cluster_name:
        raise RepairPlanError(f"The resolved plan {path} is for cluster "
                              f"{header.get('cluster_name')}, not {request.cluster_name}; "
                              "pass the matching plan.")
    cluster = load_cluster(settings.cluster_dir, request.cluster_name)
    dbname = request.dbname or header.get("database")
    cluster.database(dbname)
    stand_in = DiffFile(Path(str(header.get("diff_file") or path)),
                        {"nodes": header["nodes"], "database": dbname,
                         "primary_key": header["key"], "columns": header["columns"]}, [])
    check_diff_nodes(stand_in, [n.name for n in cluster.nodes], cluster.name)
    return (replace(request, apply_plan=str(path), dbname=dbname,
                    diff_file=str(stand_in.path)), cluster, stand_in)


def _columns(diff: DiffFile) -> list[dict[str, str]]:
    if diff.columns:
        return diff.columns
    raise RepairPlanError(f"The diff file {diff.path} does not record its columns' types, "
                          "which a plan compares by; run table-diff again.")


def _resolve(request: RepairRequest, diff: DiffFile, folder: Path, out: Path | None
             ) -> tuple[Path, dict[str, Any]]:
    """Resolve the request's plan over the diff file into ``out`` (or a file in ``folder``)."""
    assert request.repair_plan is not None
    plan = plan_from_object(request.repair_plan)
    require_table(plan, request.table.display)
    key = diff.primary_key
    if not key:
        raise RepairPlanError(f"The diff file {diff.path} does not record the table's key, "
                              "which a plan decides by; run table-diff again.")
    spool = RowSpool(diff, key, folder=folder)
    try:
        target = out or spool.folder / "resolved.jsonl"
        context = {"cluster_name": request.cluster_name,
                   "database": request.dbname or diff.database, "diff_file": str(diff.path)}
        resolution = resolve(plan, diff, spool, request.table.display, _columns(diff), target,
                             context)
        if out is None:  # outlive the spool
            target = Path(shutil.copy(target, folder / f"resolved-{id(spool):x}.jsonl"))
        return target, resolution.header
    finally:
        spool.close()


PREVIEW_KEYS = 1000
# ... and at most this much of their rows, as JSON: the API builds its answer in memory, and a
# table of wide rows would otherwise make a thousand keys gigabytes
PREVIEW_BYTES = 8 << 20


def preview_plan(raw: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A dry run of a plan that reads only the diff file: the resolved plan, saved under
    ``$ACE_OUTPUT_DIR/plans/`` and returned (its first :data:`PREVIEW_KEYS` keys, as many
    as fit in :data:`PREVIEW_BYTES`)."""
    request, _cluster, diff = load_repair_inputs(raw, settings)
    if request.repair_plan is None:
        raise RepairPlanError("repair_plan is required: the plan to resolve, as a JSON object.")
    out = new_output_path(settings.output_dir, "plans", "resolved")
    folder = WorkDir.root(settings.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path, header = _resolve(request, diff, folder, out)
    keys: list[Any] = []
    total = size = 0
    full = False
    for item in read_lines(path):
        total += 1
        if not full:
            size += len(json.dumps(item))
            full = len(keys) >= PREVIEW_KEYS or (size > PREVIEW_BYTES and bool(keys))
        if not full:
            keys.append(item)
    return {"table": header["table"], "cluster_name": header["cluster_name"],
            "diff_file": header["diff_file"], "nodes": header["nodes"], "key": header["key"],
            "rules": header["rules"], "keys": keys, "key_count": total,
            "truncated": total > len(keys), "resolved_plan": str(path)}


def plan_out_path(value: str) -> Path:
    """``--plan-out``'s file, absolute; refused in one sentence when its folder is missing,
    before anything is read or resolved."""
    target = Path(value).expanduser().resolve()
    if not target.parent.is_dir():
        raise BadOptionError(f"--plan-out {value}: its folder {target.parent} does not exist; "
                             "create it or give another path.")
    return target


def run_plan_repair(request: RepairRequest, cluster: Cluster, diff: DiffFile,
                    settings: Settings, task_id: str, progress: Any = None) -> dict[str, Any]:
    """Resolve and apply a plan (or apply a resolved one); a small JSON-safe result."""
    started = datetime.now(timezone.utc)
    dbname = request.dbname or diff.database
    folder = WorkDir.root(settings.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    cleanup: Path | None = None
    if request.apply_plan:
        resolved = Path(request.apply_plan)
        header = read_header(resolved)
    else:
        out = plan_out_path(request.plan_out) if request.plan_out else None
        resolved, header = _resolve(request, diff, folder, out)
        cleanup = None if out else resolved
    try:
        # every node: a key's rows are checked on the nodes it is read from too
        writes = any(r.get("writes") for r in header["rules"])
        nodes = list(header["nodes"]) if writes else []
        chosen = tuple(cluster.node(n) for n in nodes)
        targets = {t.node: t for t in node_targets(cluster, chosen, dbname, settings,
                                                   request.role)}
        opts = ApplyOptions(dry_run=request.dry_run, insert_only=False, deletes_allowed=True,
                            fire_triggers=request.fire_triggers,
                            keep_rows=request.generate_report,
                            ace_login=cluster.database(dbname).user)
        if progress:
            progress(0, len(nodes))
        work = WorkSpool(folder)
        try:
            applied = apply_plan_work(targets, request.table, nodes, list(header["key"]),
                                      list(header["columns"]), resolved, opts,
                                      request.allow_stale, work, progress)
            finished = datetime.now(timezone.utc)
            notes = _notes(request, diff, applied, header)
            report_file = None
            if request.generate_report:
                head = report_head(request, task_id, started, finished, notes)
                head["plan_rules"] = header["rules"]
                report_file = write_report(settings.output_dir, head, applied.outcomes)
        finally:
            work.close()
    finally:
        if cleanup is not None:
            cleanup.unlink(missing_ok=True)
    result = build_result(request, task_id, str(diff.path), applied.outcomes, report_file,
                          started, finished, notes)
    result["plan"] = {"rules": header["rules"], "stale": applied.stale,
                      "stale_keys": applied.stale_keys, "applied_keys": applied.applied_keys,
                      "resolved_plan": request.plan_out or request.apply_plan}
    return result


def _notes(request: RepairRequest, diff: DiffFile, applied: Any,
           header: dict[str, Any]) -> list[str]:
    notes = []
    if applied.stale:
        verb = ("was" if applied.stale == 1 else "were") + (
            " written anyway" if request.allow_stale else " skipped")
        then = "" if request.allow_stale else "; run table-diff again to decide them anew"
        them = "it" if applied.stale == 1 else "them"
        notes.append(f"{plural(applied.stale, 'key')} changed on a node since the plan saw "
                     f"{them} and {verb}: {stale_words(applied.stale_keys, applied.stale)}"
                     f"{then}.")
    if diff.is_partial:
        notes.append("The diff file is partial (it stopped at MAX_ALLOWED_DIFFS); only the rows "
                     "it lists were decided. Run table-diff again afterwards.")
    if request.plan_out:
        notes.append(f"Resolved plan written to {request.plan_out}")
    if not any(r.get("writes") for r in header["rules"]):
        notes.append("Nothing to repair: the plan leaves every listed key as it is.")
    return notes
