"""table-repair from start to finish: validate, plan, apply, report.

Where the right values come from: the diff file. The source of truth's rows
are taken as the diff file recorded them (exact text, cast back to each
column's type on the node), as the original tool did; the source node itself
is not read again. Keys of rows the source lacks are the other node's rows
in the same file. So a repair does what the diff showed; if the source has
changed since, run table-diff again first (table-rerun tells whether it has).

:func:`run_table_repair` takes and returns plain dicts, so a Celery task can
call it directly; large things (the report) go to files under the output dir.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.workdir import WorkDir
from ace_shared.difffile.file import DiffFile
from ace_shared.difffile.spool import RowSpool
from ace_shared.nodes.cluster import Cluster
from ace_shared.nodes.connection import connect, node_errors, node_targets
from ace_shared.nodes.shape import read_shape
from ace_shared.options import Style
from ace_shared.repair.apply import ApplyOptions, apply_repairs
from ace_shared.repair.origins import OriginRepair, apply_by_origin
from ace_shared.repair.plan import NodeWork, plan_bidirectional, plan_fix_nulls, plan_from_source
from ace_shared.repair.plans.run import run_plan_repair
from ace_shared.repair.recovery import applied_positions, choose_survivor
from ace_shared.repair.report import build_result, report_head, write_report
from ace_shared.repair.request import (
    MODE_BIDIRECTIONAL,
    MODE_FIX_NULLS,
    MODE_PLAN,
    RepairRequest,
    load_repair_inputs,
)
from ace_shared.tasks.progress import Progress


def _live_key(cluster: Cluster, dbname: str | None, settings: Settings, request: RepairRequest,
              node: str) -> tuple[list[str], list[str]]:
    """Primary key and column names of the live table (for files that do not record them)."""
    target = node_targets(cluster, (cluster.node(node),), dbname, settings, request.role)[0]
    with node_errors(node):
        conn = connect(target, readonly=True)
        try:
            with conn.cursor() as cur:
                shape = read_shape(cur, request.table, node)
        finally:
            conn.close()
    return list(shape.key), shape.column_names


def _plan(request: RepairRequest, spool: RowSpool, columns: list[str]) -> list[NodeWork]:
    key = spool.key
    if request.mode == MODE_FIX_NULLS:
        return plan_fix_nulls(spool, key, [c for c in columns if c not in key])
    if request.mode == MODE_BIDIRECTIONAL:
        return plan_bidirectional(spool, key)
    assert request.source_of_truth is not None
    return plan_from_source(spool, request.source_of_truth, key)


def _notes(request: RepairRequest, diff: DiffFile, works: list[NodeWork]) -> list[str]:
    notes = []
    if request.ignored_source:
        notes.append(f"Source of truth {request.ignored_source} was ignored: a "
                     f"{request.mode.replace('_', '-')} repair takes none.")
    if diff.is_partial:
        notes.append("The diff file is partial (it stopped at MAX_ALLOWED_DIFFS); only the rows "
                     "it lists were repaired. Run table-diff again afterwards.")
    if not works:
        notes.append("Nothing to repair: the diff file lists no differences this repair fixes.")
    return notes


def run_table_repair(raw_options: dict[str, Any], settings: Settings, task_id: str,
                     progress: Progress | None = None, style: Style = "api") -> dict[str, Any]:
    """Repair a table from a diff file; return a small JSON-safe result.

    ``style`` names options in errors as the request wrote them (the CLI's ``--dry-run``).
    """
    started = datetime.now(timezone.utc)
    # the summary is enough to start; the one pass over the rows is the spool's
    request, cluster, diff = load_repair_inputs(raw_options, settings, style)
    if request.mode == MODE_PLAN:
        return run_plan_repair(request, cluster, diff, settings, task_id, progress)
    dbname = request.dbname or diff.database
    failed = str(diff.summary["against_origin"]) if request.recovery_mode else None
    chose: list[str] = []
    if failed and not request.source_of_truth:
        db = cluster.database(dbname).name
        positions = applied_positions(cluster, db, settings, request.role,
                                      [n for n in diff.nodes if n != failed], failed)
        source, why = choose_survivor(positions, failed)
        request = replace(request, source_of_truth=source)
        chose.append(why)
    key = diff.primary_key
    columns = [c["name"] for c in diff.columns] if diff.columns else None
    if (key is None or columns is None) and diff.pairs:
        live_key, live_columns = _live_key(cluster, dbname, settings, request,
                                           request.source_of_truth or diff.nodes[0])
        key = key or live_key
        columns = columns or live_columns
    spool = (RowSpool(diff, key or [], folder=WorkDir.root(settings.output_dir))
             if diff.pairs else None)
    try:
        works = _plan(request, spool, columns or []) if spool is not None else []
        chosen = tuple(cluster.node(w.node) for w in works)
        targets = {t.node: t
                   for t in node_targets(cluster, chosen, dbname, settings, request.role)}
        opts = ApplyOptions(dry_run=request.dry_run, insert_only=request.insert_only,
                            deletes_allowed=request.deletes_allowed,
                            fire_triggers=request.fire_triggers,
                            keep_rows=request.generate_report,
                            ace_login=cluster.database(dbname).user)
        if progress:
            progress(0, len(works))
        notes = chose + _notes(request, diff, works)
        if (request.recovery_mode or request.preserve_origin) and works:
            assert spool is not None and request.source_of_truth is not None
            job = OriginRepair(cluster, cluster.database(dbname).name, settings, request.role,
                               request.table, request.source_of_truth, failed,
                               request.preserve_origin)
            outcomes, more = apply_by_origin(job, works, spool, diff, opts, progress)
            notes += more
        else:
            outcomes = apply_repairs(targets, request.table, works, diff, opts, progress)
        finished = datetime.now(timezone.utc)
        report_file = None
        if request.generate_report:
            head = report_head(request, task_id, started, finished, notes)
            report_file = write_report(settings.output_dir, head, outcomes)
    finally:
        if spool is not None:
            spool.close()
    return build_result(request, task_id, str(diff.path), outcomes, report_file, started,
                        finished, notes)
