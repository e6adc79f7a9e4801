"""The cluster-level checks: ``schema-diff``, ``repset-diff`` and ``spock-diff``.

Each runs in this process and writes its JSON result (and HTML page with
``--output html``) under ``$ACE_OUTPUT_DIR``. Exit codes: 0 when everything
compared agrees, 1 when anything differs, 2 on trouble (for repset-diff, also
when any table of the set failed).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ace_api.cli.main import BoolOption, bool_option, main, settings_or_fail
from ace_api.cli.progress import ProgressBar

_DIFF_OPTIONS = (
    click.option("--block-rows", "block_rows", default=None, help="Rows per block (1000-100000)."),
    click.option("--max-cpu-ratio", "max_cpu_ratio", default=None,
                 help="Share of this machine's CPUs to use (0-1]."),
    click.option("--batch-size", "batch_size", default=None, help="Blocks per worker task."),
)


def diff_options(fn: Any) -> Any:
    for opt in reversed(_DIFF_OPTIONS):
        fn = opt(fn)
    return fn


def common_options(fn: Any) -> Any:
    fn = click.option("--nodes", default="all",
                      help="'all' or a comma-separated list of nodes.")(fn)
    fn = click.option("--dbname", default=None,
                      help="Database name (default: the cluster's first).")(fn)
    fn = click.option("--output", default="json", help="json or html.")(fn)
    return bool_option("--quiet", "Print only the result.")(fn)


def skip_options(fn: Any) -> Any:
    fn = click.option("--skip-tables", "skip_tables", default=None,
                      help="Comma-separated tables to leave out.")(fn)
    return click.option("--skip-file", "skip_file", default=None,
                        help="A file of tables to leave out, one a line.")(fn)


def _progress(label: str, quiet: bool) -> ProgressBar:
    return ProgressBar(label, unit="tables", enabled=not quiet
                       and not os.environ.get("ACE_NO_PROGRESS"))


def _value_text(value: Any) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def run_check(task_type: str, request: Any, local: Any, label: str, subject: str | None,
              ) -> dict[str, Any]:
    """Run a check here, or on the fleet when ``ACE_BROKER_URL`` is set; return its result."""
    from ace_shared.tasks.ids import new_task_id
    settings = settings_or_fail()
    task_id = new_task_id(task_type)
    if settings.BROKER_URL:
        from ace_workers.client import submit_and_follow
        done = submit_and_follow(task_type, request.to_dict(), settings, task_id,
                                 cluster_name=request.cluster_name, table_name=subject,
                                 no_wait=False, quiet=request.quiet, label=label, unit="tables")
        assert done is not None
        return done["summary"]
    bar = _progress(label, request.quiet)
    try:
        return local(request, settings, task_id, progress=bar)
    finally:
        bar.close()


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
            line += " (" + ", ".join(f"{p}: {n} rows" for p, n in t["diff_rows_by_pair"].items()
                                     ) + f"; {t['diff_file']})"
        if t.get("reason"):
            line += f": {t['reason']}"
        if t.get("missing_on"):
            line += f" (missing on {', '.join(t['missing_on'])})"
        click.echo(line)


def print_files(result: dict[str, Any], label: str) -> None:
    click.echo(f"{label} written to {result['result_file']}")
    if result.get("report_file"):
        click.echo(f"Report written to {result['report_file']}")


@main.command("schema-diff")
@click.argument("cluster_name")
@click.argument("schema_name")
@common_options
@skip_options
@click.option("--ddl-only", "ddl_only", cls=BoolOption, is_flag=False, flag_value="true",
              default="true", metavar="[=BOOL]",
              help="Compare structure only (the default); --ddl-only=False diffs data too.")
@diff_options
def schema_diff(**opts: Any) -> None:
    """Compare a schema's objects (and, with --ddl-only=False, its data) across nodes."""
    from ace_shared.schemadiff.request import validate_schema_diff
    from ace_shared.schemadiff.run import run_schema_diff
    request = validate_schema_diff(opts)
    result = run_check("schema-diff", request, run_schema_diff,
                       f"Diffing tables of {request.schema}", request.schema)
    if not request.quiet:
        print_differences(result)
        if "tables" in result:
            print_tables(result["tables"])
        if not result["differences"]:
            click.echo(f"SCHEMAS MATCH: {request.schema} is the same on "
                       f"{', '.join(result['nodes'])}.")
    print_files(result, "Schema diff")
    sys.exit(result["exit_code"])


@main.command("repset-diff")
@click.argument("cluster_name")
@click.argument("repset_name")
@common_options
@skip_options
@diff_options
def repset_diff(**opts: Any) -> None:
    """Compare every table of a replication set across nodes."""
    from ace_shared.repsetdiff.request import validate_repset_diff
    from ace_shared.repsetdiff.run import run_repset_diff
    request = validate_repset_diff(opts)
    result = run_check("repset-diff", request, run_repset_diff, f"Diffing set {request.repset}",
                       request.repset)
    if not request.quiet:
        for node in result["nodes_without_set"]:
            click.echo(f"{node}: has no replication set {request.repset}")
        for note in result["membership_differences"]:
            click.echo(f"{note['table']}: in the set on {', '.join(note['in_set_on'])}, "
                       f"not on {', '.join(note['not_in_set_on'])}")
    print_tables(result["tables"])
    print_files(result, "Repset diff")
    sys.exit(result["exit_code"])


@main.command("spock-diff")
@click.argument("cluster_name")
@common_options
def spock_diff(**opts: Any) -> None:
    """Compare the replication configuration (sets, subscriptions) of every pair of nodes."""
    from ace_shared.spockdiff.request import validate_spock_diff
    from ace_shared.spockdiff.run import run_spock_diff
    request = validate_spock_diff(opts)
    result = run_check("spock-diff", request,
                       lambda r, s, t, progress: run_spock_diff(r, s, t), "Checking", None)
    if not request.quiet:
        for node, cfg in result["node_config"].items():
            click.echo(f"{node}: {cfg['system']} node {cfg['identity']}, "
                       f"{len(cfg['sets'])} sets, {len(cfg['subscriptions'])} subscriptions")
        print_differences(result)
        for hint in result["hints"]:
            click.echo(f"hint: {hint['node']}: {hint['hint']}"
                       + (f": {hint['table']}" if hint.get("table") else ""))
        if not result["differences"]:
            click.echo(f"REPLICATION MATCHES on {', '.join(result['nodes'])}.")
    print_files(result, "Spock diff")
    sys.exit(result["exit_code"])
