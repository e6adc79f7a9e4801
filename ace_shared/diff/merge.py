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
from ace_shared.diff.workdir import BatchResult, WorkDir
from ace_shared.difffile.format import new_diff_path, write_diff_json
from ace_shared.difffile.view import DiffView


def partials_view(spec: DiffSpec, partials: Sequence[str | Path]) -> PartialsView:
    """The view the diff file and its report are written from, over ``partials`` in range order."""
    return PartialsView(spec.nodes, [{"name": c.name, "type": c.display_type}
                                     for c in spec.shape.columns],
                        spec.shape.key, partials)


def build_summary(spec: DiffSpec, meta: dict[str, Any], results: Sequence[BatchResult],
                  view: DiffView, ranges_total: int, started_at: str) -> dict[str, Any]:
    finished = datetime.now(timezone.utc)
    started = datetime.fromisoformat(started_at)
    pairs = view.pairs()
    total_keys = sum(r.diff_keys for r in results)
    ranges_done = sum(r.ranges_done for r in results)
    partial = ranges_done < ranges_total or any(r.stopped_early for r in results)
    summary: dict[str, Any] = {
        "task_id": spec.task_id,
        "cluster_name": spec.cluster_name,
        "database": spec.dbname,
        "schema_name": spec.shape.table.schema,
        "table_name": spec.shape.table.table,
        "table": spec.shape.table.display,
        "nodes": list(spec.nodes),
        "primary_key": list(spec.shape.key),
        "columns": [{"name": c.name, "type": c.display_type} for c in spec.shape.columns],
        "table_filter": spec.table_filter,
        "block_rows": spec.block_rows,
        "batch_size": spec.batch_size,
        "max_cpu_ratio": meta.get("max_cpu_ratio"),
        "executor": meta.get("executor", "local"),
        "start_time": started.isoformat(),
        "end_time": finished.isoformat(),
        "time_taken": round((finished - started).total_seconds(), 3),
        # a job that diffs only some ranges (an mtree table-diff) counts the others' rows
        "total_rows_checked": meta.get("rows_outside_ranges", 0)
        + sum(r.rows_checked for r in results),
        "ranges_total": ranges_total,
        "ranges_checked": ranges_done,
        "diff_rows": total_keys,
        "diff_rows_by_pair": {f"{a}/{b}": c for a, b, c in pairs},
        "mismatch": total_keys > 0,
        "max_allowed_diffs": spec.max_diffs,
        "diff_partial": partial,
    }
    summary.update(spec.origin_filter.to_summary())
    if spec.untracked:
        summary["commit_ts_note"] = TRACKING_OFF_NOTE.format(nodes=", ".join(spec.untracked))
    if "mtree" in meta:
        summary["mtree"] = meta["mtree"]
    if partial:
        summary["partial_reason"] = (
            f"Stopped after finding {total_keys} differing rows, at or over MAX_ALLOWED_DIFFS "
            f"({spec.max_diffs}); {ranges_done} of {ranges_total} key ranges were checked. "
            "Repairs from this file fix only what it lists."
        )
    return summary


def merge_diff(spec: DiffSpec, meta: dict[str, Any], results: Sequence[BatchResult],
               ranges_total: int, output_dir: Path, output: str, started_at: str,
               keep_work: bool = False, extra: dict[str, Any] | None = None,
               view: PartialsView | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the diff file (and CSV/HTML when asked) from the batches' partial files.

    ``extra`` adds fields to the summary (a rerun's account of what it resolved).
    ``view`` is one :func:`partials_view` that already spooled the batches that
    ended first (see :meth:`PartialsView.spool_ready`).
    """
    ordered = sorted(results, key=lambda r: r.first_range)
    paths = [r.partial_path for r in ordered]
    if view is None:
        view = partials_view(spec, paths)
    else:
        view.use_partials(paths)
    summary = build_summary(spec, meta, ordered, view, ranges_total, started_at)
    summary.update(extra or {})
    path = new_diff_path(output_dir)
    summary["diff_file"] = str(path)
    if output in ("csv", "html"):
        summary["report_file"] = str(path.with_suffix(f".{output}"))
    write_diff_json(path, view, summary)
    if output in ("csv", "html"):
        from ace_shared.difffile.reports import write_report
        write_report(Path(summary["report_file"]), view, summary, output)
    if not keep_work:
        WorkDir(spec.work_dir).remove()
    return path, summary
