"""The CLI on a fleet: submit a checked task, draw what the fleet reports, return its result."""

from __future__ import annotations

import getpass
import os
from typing import Any

import click

from ace_api.cli.output import json_wanted, print_json
from ace_api.cli.progress import ProgressBar
from ace_shared.config import Settings
from ace_shared.errors import TaskError, TaskNotRecordedError
from ace_shared.tasks.status import PENDING
from ace_workers.client import Finished, NoWorker, Progress, Waiting, follow, submit


def run_on_fleet(task_type: str, options: dict[str, Any], settings: Settings, task_id: str, *,
                 cluster_name: str | None, table_name: str | None, no_wait: bool, quiet: bool,
                 label: str, unit: str = "ranges") -> dict[str, Any] | None:
    """Submit, show the fleet's progress, and return the task's result.

    Returns ``None`` with ``no_wait`` (the task id is printed); raises
    :class:`TaskError` with the task's own message when it failed.
    """
    try:
        submit(task_type, options, task_id, settings, cluster_name=cluster_name,
               table_name=table_name, requested_by=getpass.getuser())
    except TaskNotRecordedError as exc:  # queued all the same: following needs only Redis
        click.echo(f"Warning: {exc}", err=True)
    if no_wait:  # the id alone, or as the one JSON document --json promises scripts
        if json_wanted():
            print_json({"task_id": task_id, "status": PENDING})
        else:
            click.echo(task_id)
        return None
    if not quiet:
        click.echo(f"Submitted {task_id}", err=True)
    bar = ProgressBar(label, unit=unit, enabled=not quiet and not os.environ.get("ACE_NO_PROGRESS"))
    outcome: Finished | None = None
    try:
        for event in follow(task_id, settings):
            if isinstance(event, Progress):
                bar(event.done, event.total)
            elif isinstance(event, Waiting):
                if not quiet:
                    bar.close()
                    click.echo(f"{task_id}: {event.note}", err=True)
            elif isinstance(event, NoWorker):
                bar.close()
                click.echo(f"No worker is taking tasks from the queue: {task_id} stays queued "
                           "until one starts (celery -A ace_workers worker). Ctrl-C stops "
                           "waiting; the task stays queued.", err=True)
            elif isinstance(event, Finished):
                outcome = event
    finally:
        bar.close()
    if outcome is None or outcome.failed:
        raise TaskError((outcome.error if outcome else None) or f"Task {task_id} failed.")
    return outcome.result or {}
