"""``ace table-diff`` once its options are read: validate, run here or on the fleet, report."""

from __future__ import annotations

import os
from typing import Any

import click

from ace_api.cli.exits import EXIT_DIFF, EXIT_SAME
from ace_api.cli.options import build_command
from ace_api.cli.output import json_wanted, print_json
from ace_api.cli.progress import ProgressBar
from ace_shared.config import Settings
from ace_shared.diff.request import TABLE_DIFF, validate_diff_request
from ace_shared.diff.summary import DiffSummary
from ace_shared.tasks.ids import new_task_id
from ace_shared.words import and_list, plural


def _uses_fleet(settings: Settings) -> bool:
    return bool(settings.BROKER_URL)


def report_diff(summary: DiffSummary, quiet: bool) -> int:
    """Print the outcome of a diff (sentences, ``--json``, or ``--quiet``'s path); the exit code.

    The report asked for with ``--output`` is written and named whether or not the
    nodes differ: a scheduled run needs the page that says they match.
    """
    path = summary.diff_file
    code = EXIT_DIFF if summary.mismatch else EXIT_SAME
    if json_wanted():
        print_json(summary.to_dict())
        return code
    if quiet:
        click.echo(path)
        return code
    if summary.commit_ts_note:
        click.echo(summary.commit_ts_note, err=True)
    if summary.mismatch:
        for pair, count in summary.diff_rows_by_pair.items():
            if count:
                click.echo(f"{pair}: {plural(count, 'row')} {'differs' if count == 1 else 'differ'}")
        if summary.diff_partial:
            click.echo(f"PARTIAL DIFF: {summary.partial_reason}")
        click.echo(f"Diffs written to {path}")
    else:
        click.echo(f"TABLES MATCH: {summary.table} is the same on "
                   f"{and_list(summary.nodes)} "
                   f"({plural(summary.total_rows_checked, 'row')} checked).")
        click.echo(f"Diff summary written to {path}")
    if summary.report_file:
        click.echo(f"Report written to {summary.report_file}")
    return code


def run_table_diff_command(values: dict[str, Any], settings: Settings) -> int:
    """``ace table-diff``: in this process, or on the fleet with ``ACE_BROKER_URL`` set."""
    request = validate_diff_request(values, settings, "cli")
    task_id = new_task_id("table-diff")
    if _uses_fleet(settings):
        # Celery loads only for a fleet: 1 s of every start
        from ace_api.cli.fetch import local_summary
        from ace_api.cli.fleet import run_on_fleet
        result = run_on_fleet("table-diff", request.to_dict(), settings, task_id,
                              cluster_name=request.cluster_name,
                              table_name=request.table.display, no_wait=values["no_wait"],
                              quiet=request.quiet, label=f"Diffing {request.table.display}")
        if result is None:
            return EXIT_SAME
        return report_diff(DiffSummary.from_dict(local_summary(
            result["summary"], result, task_id, settings, "table-diff")), request.quiet)
    from ace_shared.diff.local import run_table_diff  # loaded only by the command that runs it
    bar = ProgressBar(f"Diffing {request.table.display}", enabled=not request.quiet
                      and not os.environ.get("ACE_NO_PROGRESS"))
    try:
        _, summary = run_table_diff(request, settings, task_id, progress=bar)
    finally:
        bar.close()
    return report_diff(summary, request.quiet)


table_diff = build_command(TABLE_DIFF, run_table_diff_command)
