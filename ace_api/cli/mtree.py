"""``ace mtree ...``: Merkle trees kept on every node, so a re-check reads only what changed."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ace_api.cli.diff import report_diff
from ace_api.cli.main import EXIT_SAME, AceGroup, bool_option, main, print_json, settings_or_fail
from ace_api.cli.progress import ProgressBar
from ace_shared.diff.request import parse_bool
from ace_shared.tasks.ids import new_task_id


@main.group("mtree", cls=AceGroup)
def mtree() -> None:
    """Merkle trees of table hashes kept on every node (init, build, update, table-diff, teardown)."""


def _common(fn: Any) -> Any:
    fn = click.option("--dbname", default=None,
                      help="Database name (default: the cluster's first).")(fn)
    fn = click.option("--nodes", default="all",
                      help="'all' or a comma-separated list of nodes.")(fn)
    return bool_option("--quiet", "Print only the result.")(fn)


def _run(action: str, opts: dict[str, Any]) -> int:
    from ace_shared.mtree.request import validate_mtree_request
    from ace_shared.mtree.run import run_mtree
    settings = settings_or_fail()
    opts["quiet"] = parse_bool("--quiet", opts.get("quiet", False))
    request = validate_mtree_request({**opts, "action": action}, settings)
    label = f"mtree {action}" + (f" {request.table.display}" if request.table else "")
    bar = ProgressBar(label, enabled=action in ("build", "table-diff") and not request.quiet
                      and not os.environ.get("ACE_NO_PROGRESS"))
    try:
        result = run_mtree(request, settings, new_task_id("mtree"), progress=bar)
    finally:
        bar.close()
    if action == "table-diff":
        return report_diff(result, request.quiet)
    if not request.quiet:
        print_json(result)
    return EXIT_SAME


@mtree.command("init")
@click.argument("cluster_name")
@_common
def init(**opts: Any) -> None:
    """Create ACE's mtree schema on every node."""
    sys.exit(_run("init", opts))


@mtree.command("build")
@click.argument("cluster_name")
@click.argument("table_name")
@_common
@click.option("--block-rows", "block_rows", default=None,
              help="Rows per leaf block (50-100000; default 100).")
def build(**opts: Any) -> None:
    """Hash every block of a table on every node and start tracking its changes."""
    sys.exit(_run("build", opts))


@mtree.command("update")
@click.argument("cluster_name")
@click.argument("table_name")
@_common
def update(**opts: Any) -> None:
    """Fold the changes tracked since the last update into the trees."""
    sys.exit(_run("update", opts))


@mtree.command("table-diff")
@click.argument("cluster_name")
@click.argument("table_name")
@_common
@click.option("--max-cpu-ratio", "max_cpu_ratio", default=None,
              help="Share of this machine's CPUs to use (0-1].")
@click.option("--output", default="json", help="json, csv or html.")
def table_diff(**opts: Any) -> None:
    """Update the trees, then diff only the blocks whose hashes differ."""
    sys.exit(_run("table-diff", opts))


@mtree.command("teardown")
@click.argument("cluster_name")
@click.argument("table_name", required=False)
@_common
def teardown(**opts: Any) -> None:
    """Remove one table's tree, or every object ACE created for trees."""
    sys.exit(_run("teardown", opts))
