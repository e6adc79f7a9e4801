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
from pathlib import Path
from typing import Any

import click

from ace_api.cli.exits import EXIT_DIFF, EXIT_SAME
from ace_api.cli.options import build_command
from ace_api.cli.output import json_wanted, print_json
from ace_api.cli.progress import ProgressBar
from ace_shared.config import Settings
from ace_shared.diff.summary import DiffSummary
from ace_shared.errors import BadOptionError, DiffFileError
from ace_shared.repair.request import (
    TABLE_REPAIR,
    check_repair_options,
    validate_repair_request,
)
from ace_shared.rerun.request import TABLE_RERUN, check_rerun_options, validate_rerun_request
from ace_shared.tasks.filestore import active_store, use_shared_store
from ace_shared.tasks.ids import is_task_id, new_task_id
from ace_shared.words import and_list, plural

REPAIR_HELP = """Repair a table's rows on the nodes a diff file shows to differ.

The original tool's form CLUSTER DIFF_FILE SOURCE SCHEMA.TABLE works too."""


def _looks_like_file(text: str) -> bool:
    return text.lower().endswith(".json") or Path(text).expanduser().is_file()


def repair_words(words: tuple[str, ...], raw: dict[str, Any]) -> dict[str, Any]:
    """Place table-repair's words, in either form, among its options."""
    cluster, table, diff_file, source = split_repair_args(words, raw["diff_file"],
                                                          raw["source_of_truth"])
    return {**raw, "cluster_name": cluster, "table_name": table, "diff_file": diff_file,
            "source_of_truth": source}


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
    if json_wanted():
        print_json(result)
        return EXIT_SAME
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
        if result.get("plan"):
            report_plan(result["plan"], dry)
        for note in result.get("notes", []):
            click.echo(note)
        if result["nodes"] and not dry:
            click.echo(f"Repaired {result['table']} on {and_list(result['nodes'])} in "
                       f"{result['run_time']:.2f} s.")
    if result.get("report_file"):
        click.echo(result["report_file"] if quiet else f"Report written to {result['report_file']}")
    return EXIT_SAME


def report_plan(plan: dict[str, Any], dry: bool) -> None:
    """Per rule: how many keys it decided and what it writes (or wrote) on each node."""
    click.echo("Plan rules (in precedence order):")
    for rule in plan["rules"]:
        line = f"  {rule['rule']}: {rule['action']}, matched {plural(rule['matched'], 'key')}"
        if rule.get("ties"):
            line += f" ({plural(rule['ties'], 'tie')}, {rule['ties_skipped']} skipped)"
        click.echo(line)
        for node, w in rule.get("writes", {}).items():
            verb = "would " if dry else ""
            click.echo(f"    {node}: {verb}insert {w['insert']}, {verb}update {w['update']}, "
                       f"{verb}delete {w['delete']}")
        if rule.get("sample_keys") and rule.get("writes"):
            click.echo(f"    keys: {_keys_line(rule['sample_keys'], rule['matched'])}")


def run_table_repair_command(values: dict[str, Any], settings: Settings) -> int:
    """``ace table-repair``: in this process, or on the fleet with ``ACE_BROKER_URL`` set."""
    from ace_shared.repair.run import run_table_repair  # loaded only by the command that runs it

    quiet, no_wait = values["quiet"], values.pop("no_wait")
    if settings.BROKER_URL:
        task_id = new_task_id("table-repair")
        given, values = _diff_file_here(values, settings, fleet=True)
        request = validate_repair_request(values, settings, "cli")
        # the plan travels as checked JSON, the diff file as a task id or an upload when
        # the fleet has a shared store (else as an absolute path), a resolved plan as an
        # upload and without its diff file (it holds all it needs; the file it names may be
        # gone, or on the host of the worker that resolved it)
        diff_file = "" if request.apply_plan else _hand_on(given, request.diff_file, task_id)
        options = {**values, "diff_file": diff_file, "repair_plan": request.repair_plan,
                   "apply_plan": _plan_on(request.apply_plan, task_id),
                   "plan_out": _plan_out_on(request.plan_out, no_wait)}
        result = _on_fleet("table-repair", options, settings, values["table_name"],
                           "Repairing", "nodes", no_wait, task_id)
        if result is None:
            return EXIT_SAME
        if request.apply_plan and result.get("plan"):  # the file given, not a worker's copy
            result["plan"]["resolved_plan"] = request.apply_plan
        if request.plan_out:
            _plan_out_back(result, request.plan_out, task_id)
        return report_repair(result, quiet)
    _, values = _diff_file_here(values, settings, fleet=False)
    # the rules between options, in this command's words; a plan file is read here, once
    values = {**values, "repair_plan": check_repair_options(values, "cli").repair_plan}
    bar = ProgressBar("Repairing", unit="nodes",
                      enabled=not quiet and not os.environ.get("ACE_NO_PROGRESS"))
    try:
        result = run_table_repair(values, settings, new_task_id("table-repair"), progress=bar,
                                  style="cli")
    finally:
        bar.close()
    return report_repair(result, quiet)


def report_rerun(summary: DiffSummary, quiet: bool) -> int:
    """Print a rerun's outcome and return its exit code."""
    account = summary.rerun
    remaining = account.remaining if account else summary.diff_rows
    resolved = account.resolved if account else 0
    code = EXIT_DIFF if remaining else EXIT_SAME
    if json_wanted():
        print_json(summary.to_dict())
        return code
    if quiet:
        click.echo(summary.diff_file)
        return code
    for pair, count in summary.diff_rows_by_pair.items():
        if count:
            click.echo(f"{pair}: {plural(count, 'row')} still "
                       f"{'differs' if count == 1 else 'differ'}")
    previous = account.previous_diff_rows if account else summary.diff_rows
    click.echo(f"Of {plural(previous, 'row')} that differed: "
               f"{resolved:,} resolved, {remaining:,} still "
               f"{'differs' if remaining == 1 else 'differ'}.")
    click.echo(f"Diffs written to {summary.diff_file}")
    return code


def run_table_rerun_command(values: dict[str, Any], settings: Settings) -> int:
    """``ace table-rerun``: in this process, or on the fleet with ``ACE_BROKER_URL`` set."""
    from ace_shared.rerun.run import run_table_rerun  # loaded only by the command that runs it

    quiet, no_wait = values["quiet"], values.pop("no_wait")
    if settings.BROKER_URL:
        task_id = new_task_id("table-rerun")
        given, values = _diff_file_here(values, settings, fleet=True)
        request = validate_rerun_request(values, settings, "cli")
        result = _on_fleet("table-rerun", {**values, "diff_file": _hand_on(
            given, request.diff_file, task_id)}, settings, values["table_name"], "Rechecking",
            "batches", no_wait, task_id)
        if result is None:
            return EXIT_SAME
        from ace_api.cli.fetch import local_summary  # a fleet's files, for a fleet's run only
        return report_rerun(DiffSummary.from_dict(local_summary(
            result["summary"], result, task_id, settings, "table-rerun")), quiet)
    _, values = _diff_file_here(values, settings, fleet=False)
    check_rerun_options(values, "cli")
    bar = ProgressBar("Rechecking", unit="batches",
                      enabled=not quiet and not os.environ.get("ACE_NO_PROGRESS"))
    try:
        _, summary = run_table_rerun(values, settings, new_task_id("table-rerun"), progress=bar)
    finally:
        bar.close()
    return report_rerun(summary, quiet)


def _on_fleet(task_type: str, raw: dict[str, Any], settings: Any, table: str, label: str,
              unit: str, no_wait: bool, task_id: str) -> dict[str, Any] | None:
    """Submit a checked repair or rerun to the fleet and wait for its result."""
    from ace_api.cli.fleet import run_on_fleet  # Celery loads only for a fleet: 1 s of every start

    return run_on_fleet(task_type, raw, settings, task_id,
                        cluster_name=raw["cluster_name"], table_name=table, no_wait=no_wait,
                        quiet=bool(raw.get("quiet")), label=label, unit=unit)


def _diff_file_here(values: dict[str, Any], settings: Settings, fleet: bool
                    ) -> tuple[str, dict[str, Any]]:
    """``--diff-file`` as given, and the options with this host's copy of the file: a task
    id's diff file is fetched (from the fleet's shared store when this host lacks it)."""
    given = str(values.get("diff_file") or "")
    if fleet:
        use_shared_store(settings)
    if not is_task_id(given.strip()):
        return given, values
    from ace_shared.diff.sources import local_diff_file  # it loads SQLAlchemy: 0.4 s of every start
    from ace_shared.tasks.store import TaskStore  # SQLAlchemy loads on use: 0.25 s of every start
    local = local_diff_file(given, TaskStore.from_settings(settings), settings.output_dir)
    return given, {**values, "diff_file": local}


def _plan_on(path: str | None, task_id: str) -> str | None:
    """What the fleet is told of a resolved plan: uploaded for ``task_id`` when the fleet
    has a shared store (a worker on another host cannot read this host's file), else the
    checked absolute path."""
    if not path:
        return path
    # it loads SQLAlchemy: 0.4 s of every start
    from ace_shared.diff.sources import PLAN_UPLOAD, upload_diff_file
    return upload_diff_file(path, task_id, PLAN_UPLOAD)


def _plan_out_on(path: str | None, no_wait: bool) -> str | None:
    """What the fleet is told of ``--plan-out``: with a shared store, to keep the resolved
    plan there for this host to fetch (a worker on another host cannot write here); else
    the path made absolute, in the folder every host shares."""
    if not path:
        return path
    from ace_shared.repair.plans.run import plan_out_path  # loaded only by table-repair's run
    target = plan_out_path(path)
    if active_store() is None:
        return str(target)
    if no_wait:
        raise BadOptionError("--plan-out cannot be combined with --no-wait on a fleet with a "
                             "shared store: the plan is fetched to this host when the task "
                             "ends; run it without --no-wait.")
    from ace_shared.diff.sources import PLAN_OUT_SHARED  # it loads SQLAlchemy: 0.4 s of every start
    return PLAN_OUT_SHARED


def _plan_out_back(result: dict[str, Any], path: str, task_id: str) -> None:
    """Fetch the plan the fleet resolved to ``path``, and say so in the result's words."""
    from ace_shared.diff.sources import fetch_plan_out  # it loads SQLAlchemy: 0.4 s of every start
    target = Path(path).expanduser().resolve()
    if active_store() is None:
        return
    if not fetch_plan_out(task_id, target):
        raise DiffFileError(f"The resolved plan of task {task_id} is not in the fleet's shared "
                            "store; run the dry run again.")
    plan = result.get("plan") or {}
    worker_copy = plan.get("resolved_plan")
    plan["resolved_plan"] = str(target)
    result["notes"] = [f"Resolved plan written to {target}"
                       if note == f"Resolved plan written to {worker_copy}" else note
                       for note in result.get("notes", [])]


def _hand_on(given: str, checked: str, task_id: str) -> str:
    """What the fleet is told of the diff file: with a shared store, the task id it came
    from, or this host's file uploaded for ``task_id``; else the checked path."""
    if active_store() is None or not checked:
        return checked
    if is_task_id(given.strip()):
        return given.strip()
    # it loads SQLAlchemy: 0.4 s of every start
    from ace_shared.diff.sources import upload_diff_file
    return upload_diff_file(checked, task_id)




table_repair = build_command(TABLE_REPAIR, run_table_repair_command, words=repair_words,
                             help_text=REPAIR_HELP)
table_rerun = build_command(TABLE_RERUN, run_table_rerun_command)
