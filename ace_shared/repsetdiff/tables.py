"""Diffing many tables, one table-diff each, every table getting its own outcome.

Used by repset-diff and by schema-diff with ``--ddl-only=False``. A table that
fails (no primary key, a shape that differs, a node that went away) is
recorded with its one-sentence reason and the next table runs: one bad table
never hides the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ace_shared.config import Settings
from ace_shared.diff.local import run_table_diff
from ace_shared.diff.request import validate_diff_request
from ace_shared.diff.summary import DiffSummary
from ace_shared.errors import AceError
from ace_shared.nodes.ident import TableName
from ace_shared.tasks.ids import new_task_id

IDENTICAL, DIFFERS, SKIPPED, MISSING, FAILED = (
    "identical", "differs", "skipped", "missing on some nodes", "failed")

# the table-diff options a multi-table check passes on to each table
DIFF_OPTIONS = ("cluster_name", "dbname", "nodes", "block_rows", "max_cpu_ratio", "batch_size",
                "table_filter", "role")

Progress = Callable[[int, int], None]


def outcome_of(table: str, summary: DiffSummary) -> dict[str, Any]:
    """One table's line of the summary, from its table-diff summary."""
    return {
        "table": table,
        "outcome": DIFFERS if summary.mismatch else IDENTICAL,
        "rows_checked": summary.total_rows_checked,
        "diff_rows_by_pair": dict(summary.diff_rows_by_pair),
        "diff_partial": summary.diff_partial,
        "diff_file": summary.diff_file,
        "task_id": summary.task_id,
    }


def failed(table: str, reason: str) -> dict[str, Any]:
    return {"table": table, "outcome": FAILED, "reason": reason}


def diff_tables(tables: Sequence[TableName], options: dict[str, Any], settings: Settings,
                progress: Progress | None = None) -> list[dict[str, Any]]:
    """table-diff each table in this process, one after another; one outcome per table."""
    base = {k: options.get(k) for k in DIFF_OPTIONS}
    outcomes = []
    for done, table in enumerate(tables):
        if progress:
            progress(done, len(tables))
        try:
            request = validate_diff_request({**base, "table_name": table.display,
                                             "output": "json", "quiet": True}, settings)
            _, summary = run_table_diff(request, settings, new_task_id("table-diff"))
            outcomes.append(outcome_of(table.display, summary))
        except AceError as exc:
            outcomes.append(failed(table.display, str(exc)))
    if progress:
        progress(len(tables), len(tables))
    return outcomes


def exit_code(outcomes: Sequence[dict[str, Any]]) -> int:
    """0 only when every table is identical, 2 when any failed, else 1."""
    kinds = {o["outcome"] for o in outcomes}
    if FAILED in kinds:
        return 2
    return 0 if kinds <= {IDENTICAL, SKIPPED} else 1
