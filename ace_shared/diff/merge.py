"""Reducing the partial results of a diff into one diff file (and its CSV/HTML).

The file's layout belongs to :mod:`ace_shared.difffile.format`, whose writer
streams it from the partial files pair by pair, in node and key order, under a
temporary name that is then renamed: a reader never sees a half-written diff
file, and memory stays bounded. Here the summary is built and the writer called.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ace_shared.diff.partials import PartialsView
from ace_shared.diff.provenance import TRACKING_OFF_NOTE
from ace_shared.diff.request import DiffSpec
from ace_shared.diff.summary import DiffSummary, RerunAccount
from ace_shared.diff.workdir import BatchResult, WorkDir
from ace_shared.difffile.format import new_diff_path, write_diff_json
from ace_shared.difffile.reports import write_report
from ace_shared.difffile.view import DiffView


def partials_view(spec: DiffSpec, partials: Sequence[str | Path]) -> PartialsView:
    """The view the diff file and its report are written from, over ``partials`` in range order."""
    return PartialsView(spec.nodes, [{"name": c.name, "type": c.display_type}
                                     for c in spec.shape.columns],
                        spec.shape.key, partials)


def build_summary(spec: DiffSpec, meta: dict[str, Any], results: Sequence[BatchResult],
                  view: DiffView, ranges_total: int, started_at: str, diff_file: Path,
                  report_file: Path | None = None,
                  rerun: RerunAccount | None = None) -> DiffSummary:
    finished = datetime.now(timezone.utc)
    started = datetime.fromisoformat(started_at)
    total_keys = sum(r.diff_keys for r in results)
    ranges_done = sum(r.ranges_done for r in results)
    partial = ranges_done < ranges_total or any(r.stopped_early for r in results)
    reason = None
    if partial:
        reason = (
            f"Stopped after finding {total_keys} differing rows, at or over MAX_ALLOWED_DIFFS "
            f"({spec.max_diffs}); {ranges_done} of {ranges_total} key ranges were checked. "
            "Repairs from this file fix only what it lists."
        )
    note = None
    if spec.untracked:
        note = TRACKING_OFF_NOTE.format(nodes=", ".join(spec.untracked))
    return DiffSummary(
        task_id=spec.task_id,
        cluster_name=spec.cluster_name,
        database=spec.dbname,
        schema_name=spec.shape.table.schema,
        table_name=spec.shape.table.table,
        table=spec.shape.table.display,
        nodes=tuple(spec.nodes),
        primary_key=tuple(spec.shape.key),
        columns=tuple((c.name, c.display_type) for c in spec.shape.columns),
        table_filter=spec.table_filter,
        block_rows=spec.block_rows,
        batch_size=spec.batch_size,
        max_cpu_ratio=meta.get("max_cpu_ratio"),
        executor=meta.get("executor", "local"),
        start_time=started.isoformat(),
        end_time=finished.isoformat(),
        time_taken=round((finished - started).total_seconds(), 3),
        # a job that diffs only some ranges (an mtree table-diff) counts the others' rows
        total_rows_checked=meta.get("rows_outside_ranges", 0)
        + sum(r.rows_checked for r in results),
        ranges_total=ranges_total,
        ranges_checked=ranges_done,
        diff_rows=total_keys,
        diff_rows_by_pair={f"{a}/{b}": c for a, b, c in view.pairs()},
        max_allowed_diffs=spec.max_diffs,
        diff_partial=partial,
        against_origin=spec.origin_filter.against_origin,
        until=spec.origin_filter.until,
        commit_ts_note=note,
        mtree=meta.get("mtree"),
        partial_reason=reason,
        rerun=rerun,
        diff_file=str(diff_file),
        report_file=str(report_file) if report_file is not None else None,
    )


def merge_diff(spec: DiffSpec, meta: dict[str, Any], results: Sequence[BatchResult],
               ranges_total: int, output_dir: Path, output: str, started_at: str,
               keep_work: bool = False, rerun: RerunAccount | None = None,
               view: PartialsView | None = None) -> tuple[Path, DiffSummary]:
    """Write the diff file (and CSV/HTML when asked) from the batches' partial files.

    ``rerun`` is a rerun's account of what it resolved, for its summary.
    ``view`` is one :func:`partials_view` that already spooled the batches that
    ended first (see :meth:`PartialsView.spool_ready`).
    """
    ordered = sorted(results, key=lambda r: r.first_range)
    paths = [r.partial_path for r in ordered]
    if view is None:
        view = partials_view(spec, paths)
    else:
        view.use_partials(paths)
    path = new_diff_path(output_dir)
    report = path.with_suffix(f".{output}") if output in ("csv", "html") else None
    summary = build_summary(spec, meta, ordered, view, ranges_total, started_at, path, report,
                            rerun)
    shown = summary.to_dict()
    write_diff_json(path, view, shown)
    if report is not None:
        write_report(report, view, shown, output)
    if not keep_work:
        WorkDir(spec.work_dir).remove()
    return path, summary
