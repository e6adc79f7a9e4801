"""``ace schema-diff``, ``ace repset-diff`` and ``ace spock-diff`` once their options are read.

Each runs in this process, or on the fleet when ``ACE_BROKER_URL`` is set, and
writes its JSON result (and HTML page with ``--output html``) under
``$ACE_OUTPUT_DIR``. Exit codes: 0 when everything compared agrees, 1 when
anything differs, 2 on trouble (for repset-diff, also when any table failed).
The commands are built from their declarations and named in
``ace_api/cli/main.py``, which imports this module only to run or list them.
"""

from __future__ import annotations

import os
from typing import Any

import click

from ace_api.cli.options import build_command
from ace_api.cli.output import json_wanted, print_json
from ace_api.cli.progress import ProgressBar
from ace_shared.config import Settings
from ace_shared.repsetdiff.request import REPSET_DIFF, validate_repset_diff
from ace_shared.schemadiff.request import SCHEMA_DIFF, validate_schema_diff
from ace_shared.spockdiff.request import SPOCK_DIFF, validate_spock_diff
from ace_shared.tasks.ids import new_task_id
from ace_shared.words import and_list, plural


def run_check(task_type: str, request: Any, settings: Settings, local: Any, label: str,
              subject: str | None) -> dict[str, Any]:
    """Run a check here, or on the fleet when ``ACE_BROKER_URL`` is set; return its result."""
    task_id = new_task_id(task_type)
    if settings.BROKER_URL:
        # Celery loads only for a fleet: 1 s of every start
        from ace_api.cli.fetch import local_summary
        from ace_api.cli.fleet import run_on_fleet
        done = run_on_fleet(task_type, request.to_dict(), settings, task_id,
                            cluster_name=request.cluster_name, table_name=subject,
                            no_wait=False, quiet=request.quiet, label=label, unit="tables")
        assert done is not None
        return local_summary(done["summary"], done, task_id, settings, task_type,
                             file_key="result_file")
    bar = ProgressBar(label, unit="tables", enabled=not request.quiet
                      and not os.environ.get("ACE_NO_PROGRESS"))
    try:
        return local(request, settings, task_id, progress=bar)
    finally:
        bar.close()


def _value_text(value: Any) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def print_differences(result: dict[str, Any]) -> None:
    for e in result["differences"]:
        a, b = e["nodes"]
        where = f"{e['kind']} {e['identity']}"
        if "missing_on" in e:
            click.echo(f"{a}/{b}: {where}: missing on {e['missing_on']}")
        else:
            values = "; ".join(f"{n}: {_value_text(v)}" for n, v in e["values"].items())
            click.echo(f"{a}/{b}: {where}: {e['differs']} ({values})")


def print_tables(tables: list[dict[str, Any]]) -> None:
    for t in tables:
        line = f"{t['table']}: {t['outcome']}"
        if t.get("diff_rows_by_pair") and t["outcome"] == "differs":
            line += " (" + ", ".join(f"{p}: {plural(n, 'row')}"
                                     for p, n in t["diff_rows_by_pair"].items()
                                     ) + f"; {t['diff_file']})"
        if t.get("reason"):
            line += f": {t['reason']}"
        if t.get("missing_on"):
            line += f" (missing on {and_list(t['missing_on'])})"
        click.echo(line)


def print_files(result: dict[str, Any], label: str) -> None:
    click.echo(f"{label} written to {result['result_file']}")
    if result.get("report_file"):
        click.echo(f"Report written to {result['report_file']}")


def finish(result: dict[str, Any], quiet: bool, label: str, sentences: Any) -> int:
    """Print a check's outcome: ``--json``, ``--quiet``'s path, or ``sentences()`` and the files."""
    if json_wanted():
        print_json(result)
    elif quiet:
        click.echo(result["result_file"])
    else:
        sentences()
        print_files(result, label)
    return int(result["exit_code"])


def run_schema_diff_command(values: dict[str, Any], settings: Settings) -> int:
    from ace_shared.schemadiff.run import run_schema_diff  # loaded only by the command that runs it
    request = validate_schema_diff(values, settings, "cli")
    result = run_check("schema-diff", request, settings, run_schema_diff,
                       f"Diffing tables of {request.schema}", request.schema)

    def sentences() -> None:
        print_differences(result)
        if "tables" in result:
            print_tables(result["tables"])
        if not result["differences"]:
            click.echo(f"SCHEMAS MATCH: {request.schema} is the same on "
                       f"{and_list(result['nodes'])}.")
    return finish(result, request.quiet, "Schema diff", sentences)


def run_repset_diff_command(values: dict[str, Any], settings: Settings) -> int:
    from ace_shared.repsetdiff.run import run_repset_diff  # loaded only by the command that runs it
    request = validate_repset_diff(values, settings, "cli")
    result = run_check("repset-diff", request, settings, run_repset_diff,
                       f"Diffing set {request.repset}", request.repset)

    def sentences() -> None:
        for node in result["nodes_without_set"]:
            click.echo(f"{node}: has no replication set {request.repset}")
        for note in result["membership_differences"]:
            click.echo(f"{note['table']}: in the set on {and_list(note['in_set_on'])}, "
                       f"not on {and_list(note['not_in_set_on'])}")
        print_tables(result["tables"])
        if result["exit_code"] == 0:
            click.echo(f"SETS MATCH: every table of {request.repset} is the same on "
                       f"{and_list(result['nodes'])}.")
    return finish(result, request.quiet, "Repset diff", sentences)


def run_spock_diff_command(values: dict[str, Any], settings: Settings) -> int:
    from ace_shared.spockdiff.run import run_spock_diff  # loaded only by the command that runs it
    request = validate_spock_diff(values, settings, "cli")
    result = run_check("spock-diff", request, settings,
                       lambda r, s, t, progress: run_spock_diff(r, s, t), "Checking", None)

    def sentences() -> None:
        for node, cfg in result["node_config"].items():
            click.echo(f"{node}: {cfg['system']} node {cfg['identity']}, "
                       f"{plural(len(cfg['sets']), 'set')}, "
                       f"{plural(len(cfg['subscriptions']), 'subscription')}")
        print_differences(result)
        for hint in result["hints"]:
            click.echo(f"hint: {hint['node']}: {hint['hint']}"
                       + (f": {hint['table']}" if hint.get("table") else ""))
        if not result["differences"]:
            click.echo(f"REPLICATION MATCHES on {and_list(result['nodes'])}.")
    return finish(result, request.quiet, "Spock diff", sentences)


schema_diff = build_command(SCHEMA_DIFF, run_schema_diff_command)
repset_diff = build_command(REPSET_DIFF, run_repset_diff_command)
spock_diff = build_command(SPOCK_DIFF, run_spock_diff_command)
