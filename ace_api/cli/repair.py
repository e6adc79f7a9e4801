"""The ``table-repair`` and ``table-rerun`` commands.

They run in this process, or, with ``ACE_BROKER_URL`` set, as tasks on the
fleet (checked here first, so bad input never reaches the queue).

``table-repair`` takes either the documented option form
``ace table-repair CLUSTER SCHEMA.TABLE --diff-file F --source-of-truth NODE``
or the original tool's positional form
``ace table-repair CLUSTER DIFF_FILE SOURCE SCHEMA.TABLE`` (recognised by its
second word naming an existing file or ending in ``.json``). Exit codes:
repair 0 on success (also when there was nothing to do), 2 on any trouble;
rerun 0 when nothing differs any more, 1 when differences remain, 2 on trouble.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from ace_api.cli.main import EXIT_DIFF, EXIT_SAME, EXIT_TROUBLE, bool_option, main, settings_or_fail
from ace_api.cli.progress import ProgressBar
from ace_shared.diff.request import parse_bool
from ace_shared.errors import BadOptionError
from ace_shared.tasks.ids import new_task_id

REPAIR_FLAGS = ("dry_run", "quiet", "generate_report", "upsert_only", "insert_only",
                "bidirectional", "fix_nulls", "fire_triggers")


def _looks_like_file(text: str) -> bool:
    return text.lower().endswith(".json") or Path(text).expanduser().is_file()


def split_repair_args(args: tuple[str, ...], diff_file: str | None,
                      source: str | None) -> tuple[str, str, str | None, str | None]:
    """(cluster, table, diff file, source) from either argument form."""
    if len(args) == 2:
        return args[0], args[1], diff_file, source
    if len(args) in (3, 4) and _looks_like_file(args[1]):
        cluster, pos_diff = args[0], args[1]
        pos_source, table = (args[2], args[3]) if len(args) == 4 else (None, args[2])
        if diff_file and diff_file != pos_diff:
            raise BadOptionError(f"The diff file is given twice ({pos_diff} and {diff_file}); "
                                 "give it once.")
        if source and pos_source and source != pos_source:
            raise BadOptionError(f"The source of truth is given twice ({pos_source} and "
                                 f"{source}); give it once.")
        return cluster, table, pos_diff, pos_source or source
    raise BadOptionError("Give CLUSTER SCHEMA.TABLE --diff-file F --source-of-truth NODE, or "
                         "CLUSTER DIFF_FILE SOURCE SCHEMA.TABLE.")


def _key_text(key: list[str]) -> str:
    return key[0] if len(key) == 1 else "(" + ", ".join(key) + ")"


def _keys_line(keys: list[list[str]], total: int) -> str:
    text = ", ".join(_key_text(k) for k in keys)
    if total > len(keys):
        text += f" ... and {total - len(keys)} more (see the report)"
    return text


_LIVE = {"inserted": "inserted {}", "updated": "updated {}", "deleted": "deleted {}",
         "kept": "kept {}", "skipped_updates": "left {} differing rows as they are",
         "filled": "filled NULLs in {} rows"}
_DRY = {"inserted": "would insert {}", "updated": "would update {}", "deleted": "would delete {}",
        "kept": "would keep {}", "skipped_updates": "would leave {} differing rows as they are",
        "filled": "would fill NULLs in {} rows"}


def report_repair(result: dict[str, Any], quiet: bool) -> int:
    """Print a repair's outcome; always exit code 0 (trouble raises instead)."""
    dry = result["dry_run"]
    words = _DRY if dry else _LIVE
    if not quiet:
        if dry:
            click.echo("DRY RUN: nothing was written.")
        source = result.get("source_of_truth")
        for node, counts in result["nodes"].items():
            parts = [words[k].format(counts[k]) for k in ("inserted", "updated", "deleted")]
            parts += [words[k].format(counts[k])
                      for k in ("kept", "skipped_updates", "filled") if counts.get(k)]
            click.echo(f"{node}: {', '.join(parts)} rows")
            samples = result.get("samples", {}).get(node, {})
            if counts.get("kept"):
                lacks = f"that {source} lacks" if source else "that the source lacks"
                click.echo(f"  rows kept {lacks}: {_keys_line(samples.get('kept', []), counts['kept'])}")
            if dry and result.get("report_file"):
                for cat in ("inserted", "updated", "deleted", "filled"):
                    if counts.get(cat):
                        click.echo(f"  {words[cat].format('').strip()}: "
                                   f"{_keys_line(samples.get(cat, []), counts[cat])}")
        for note in result.get("notes", []):
            click.echo(note)
        if result["nodes"] and not dry:
            click.echo(f"Repaired {result['table']} on {', '.join(result['nodes'])} in "
                       f"{result['run_time']:.2f} s.")
    if result.get("report_file"):
        click.echo(f"Report written to {result['report_file']}")
    return EXIT_SAME


@main.command("table-repair")
@click.argument("args", nargs=-1, required=True, metavar="CLUSTER SCHEMA.TABLE")
@click.option("--diff-file", "diff_file", default=None, help="Diff file written by table-diff.")
@click.option("--source-of-truth", "source_of_truth", default=None,
              help="Node whose rows are right.")
@click.option("--dbname", default=None, help="Database name (default: the diff file's).")
@bool_option("--dry-run", "Show what would change; write nothing.")
@bool_option("--quiet", "Print only the report path.")
@bool_option("--generate-report", "Write a JSON report of every row changed.")
@bool_option("--upsert-only", "Insert and update, never delete.")
@bool_option("--insert-only", "Only insert missing rows; never update or delete.")
@bool_option("--bidirectional", "With --insert-only: copy missing rows both ways.")
@bool_option("--fix-nulls", "Fill columns NULL on one node and set on the other.")
@bool_option("--fire-triggers", "Let ordinary triggers fire on the repaired nodes "
             "(ENABLE ALWAYS triggers fire either way).")
@bool_option("--no-wait", "With a fleet: print the task id and return at once.")
def table_repair(args: tuple[str, ...], **opts: Any) -> None:
    """Repair a table's rows on the nodes a diff file shows to differ.

    The original tool's form CLUSTER DIFF_FILE SOURCE SCHEMA.TABLE works too.
    """
    from ace_shared.repair.request import validate_repair_request
    from ace_shared.repair.run import run_table_repair

    settings = settings_or_fail()
    no_wait = parse_bool("--no-wait", opts.pop("no_wait"))
    cluster, table, diff_file, source = split_repair_args(args, opts.pop("diff_file"),
                                                          opts.pop("source_of_truth"))
    raw: dict[str, Any] = {"cluster_name": cluster, "table_name": table, "diff_file": diff_file,
                           "source_of_truth": source, "dbname": opts.pop("dbname")}
    for name in REPAIR_FLAGS:
        raw[name] = parse_bool("--" + name.replace("_", "-"), opts[name])
    if settings.BROKER_URL:
        request = validate_repair_request(raw, settings)
        result = _on_fleet("table-repair", {**raw, "diff_file": request.diff_file}, settings,
                           table, "Repairing", "nodes", no_wait)
        sys.exit(EXIT_SAME if result is None else report_repair(result, raw["quiet"]))
    bar = ProgressBar("Repairing", unit="nodes",
                      enabled=not raw["quiet"] and not os.environ.get("ACE_NO_PROGRESS"))
    try:
        result = run_table_repair(raw, settings, new_task_id("table-repair"), progress=bar)
    finally:
        bar.close()
    sys.exit(report_repair(result, raw["quiet"]))


def report_rerun(summary: dict[str, Any], quiet: bool) -> int:
    """Print a rerun's outcome and return its exit code."""
    remaining, resolved = summary["remaining"], summary["resolved"]
    if not quiet:
        for pair, count in summary.get("diff_rows_by_pair", {}).items():
            click.echo(f"{pair}: {count} rows still differ")
        click.echo(f"Of {summary['previous_diff_rows']} rows that differed: {resolved} resolved, "
                   f"{remaining} still differ.")
    click.echo(f"Diffs written to {summary['diff_file']}")
    return EXIT_DIFF if remaining else EXIT_SAME


@main.command("table-rerun")
@click.argument("cluster_name")
@click.argument("table_name")
@click.option("--diff-file", "diff_file", default=None, help="Diff file written by table-diff.")
@click.option("--dbname", default=None, help="Database name (default: the diff file's).")
@click.option("--behavior", default="multiprocessing",
              help="multiprocessing (parallel batches) or hostdb (temp tables on the nodes).")
@bool_option("--quiet", "Print only the result.")
@bool_option("--no-wait", "With a fleet: print the task id and return at once.")
def table_rerun(**opts: Any) -> None:
    """Check again only the rows a diff file lists; write a new diff file."""
    from ace_shared.rerun.request import validate_rerun_request
    from ace_shared.rerun.run import run_table_rerun

    settings = settings_or_fail()
    opts["quiet"] = parse_bool("--quiet", opts["quiet"])
    no_wait = parse_bool("--no-wait", opts.pop("no_wait"))
    if settings.BROKER_URL:
        request = validate_rerun_request(opts, settings)
        result = _on_fleet("table-rerun", {**opts, "diff_file": request.diff_file}, settings,
                           opts["table_name"], "Rechecking", "batches", no_wait)
        sys.exit(EXIT_SAME if result is None else report_rerun(result["summary"],
                                                                opts["quiet"]))
    bar = ProgressBar("Rechecking", unit="batches",
                      enabled=not opts["quiet"] and not os.environ.get("ACE_NO_PROGRESS"))
    try:
        _, summary = run_table_rerun(opts, settings, new_task_id("table-rerun"), progress=bar)
    finally:
        bar.close()
    sys.exit(report_rerun(summary, opts["quiet"]))


def _on_fleet(task_type: str, raw: dict[str, Any], settings: Any, table: str, label: str,
              unit: str, no_wait: bool) -> dict[str, Any] | None:
    """Submit a checked repair or rerun to the fleet and wait for its result."""
    from ace_api.cli.fleet import run_on_fleet

    return run_on_fleet(task_type, raw, settings, new_task_id(task_type),
                        cluster_name=raw["cluster_name"], table_name=table, no_wait=no_wait,
                        quiet=bool(raw.get("quiet")), label=label, unit=unit)


__all__ = ["table_repair", "table_rerun", "EXIT_TROUBLE"]
