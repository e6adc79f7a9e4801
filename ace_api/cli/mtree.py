"""``ace mtree ...``: Merkle trees kept on every node, so a re-check reads only what changed."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ace_api.cli.diff import report_diff
from ace_api.cli.exits import EXIT_SAME
from ace_api.cli.options import AceCommand, build_command
from ace_api.cli.progress import ProgressBar
from ace_shared.config import Settings
from ace_shared.mtree.request import MTREE_COMMANDS, validate_mtree_request
from ace_shared.tasks.ids import new_task_id


def _runner(action: str) -> Any:
    def run(values: dict[str, Any], settings: Settings) -> int:
        from ace_shared.mtree.run import run_mtree
        request = validate_mtree_request({**values, "action": action}, settings, "cli")
        label = f"mtree {action}" + (f" {request.table.display}" if request.table else "")
        bar = ProgressBar(label, enabled=action in ("build", "table-diff")
                          and not request.quiet and not os.environ.get("ACE_NO_PROGRESS"))
        try:
            result = run_mtree(request, settings, new_task_id("mtree"), progress=bar)
        finally:
            bar.close()
        if action == "table-diff":
            return report_diff(result, request.quiet)
        if not request.quiet:
            click.echo(json.dumps(result, indent=2, default=str))
        return EXIT_SAME
    return run


class _MtreeGroup(click.Group):
    command_class = AceCommand


mtree = _MtreeGroup("mtree", help="Merkle trees of row hashes kept on every node: init, build, "
                    "update, table-diff, teardown.")
for _action, _command in MTREE_COMMANDS.items():
    mtree.add_command(build_command(_command, _runner(_action), name=_action))
