"""``ace task-status`` and ``ace diff-file``: a task's outcome and files, by its id, from any host.

Both read the task store (``ACE_DATABASE_URL``, shared by the fleet), so a task
submitted with ``--no-wait``, by another host or through the API can be
followed and fetched here. ``task-status`` exits as the command that made the
task would have: 0 same (or done), 1 differences, 2 trouble (a failed task).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ace_api.cli.exits import EXIT_DIFF, EXIT_SAME, EXIT_TROUBLE, settings_or_fail
from ace_api.cli.progress import ProgressBar
from ace_shared.config import Settings
from ace_shared.errors import BadOptionError, NotFoundError
from ace_shared.tasks.filestore import use_shared_store
from ace_shared.tasks.status import COMPLETED, FAILED, FINISHED

POLL_SECONDS = 1.0


def _store(settings: Settings) -> Any:
    from ace_shared.tasks.store import TaskStore  # SQLAlchemy loads on use: 0.25 s of every start
    return TaskStore.from_settings(settings)


def _record(store: Any, task_id: str) -> Any:
    record = store.get(task_id.strip())
    if record is None:
        raise NotFoundError(f"Task {task_id} is not in the task store; check the task id and "
                            "that ACE_DATABASE_URL names the fleet's task store.")
    return record


def exit_code_of(task_type: str, status: str, result: dict[str, Any] | None) -> int:
    """The exit code the command that made the task gives for this outcome."""
    if status == FAILED:
        return EXIT_TROUBLE
    if status != COMPLETED:
        return EXIT_SAME
    result = result or {}
    raw = result.get("summary")
    summary: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if "exit_code" in summary:  # schema-, repset- and spock-diff
        return int(summary["exit_code"])
    if task_type == "table-rerun":
        return EXIT_DIFF if summary.get("remaining") else EXIT_SAME
    if summary.get("mismatch"):  # table-diff, mtree table-diff
        return EXIT_DIFF
    return EXIT_SAME


def _follow(task_id: str, settings: Settings, store: Any, quiet: bool) -> None:
    """Wait for the task to finish, drawing its progress."""
    bar = ProgressBar(f"Task {task_id}", unit="steps",
                      enabled=not quiet and not os.environ.get("ACE_NO_PROGRESS"))
    try:
        if settings.BROKER_URL:  # the fleet publishes each change: block on it
            # Celery loads only for a fleet: 1 s of every start
            from ace_workers.client import Finished, Progress, follow
            for event in follow(task_id, settings):
                if isinstance(event, Progress):
                    bar(event.done, event.total)
                elif isinstance(event, Finished):
                    return
            return
        while True:  # no broker to listen to: read the store
            record = _record(store, task_id)
            if record.progress_total:
                bar(record.progress_done, record.progress_total)
            if record.status in FINISHED:
                return
            time.sleep(POLL_SECONDS)
    finally:
        bar.close()


def _describe(record: Any) -> list[str]:
    what = record.task_type + (f" of {record.table_name}" if record.table_name else "") + (
        f" on {record.cluster_name}" if record.cluster_name else "")
    line = f"{record.task_id}: {what}: {record.status}"
    if record.status in FINISHED and record.time_taken is not None:
        line += f" in {record.time_taken:.2f} s"
    elif record.progress_total:
        line += f" ({record.progress_done}/{record.progress_total})"
    lines = [line]
    if record.error:
        lines.append(f"error: {record.error}")
    from ace_shared.tasks.results import recorded_files  # it loads SQLAlchemy: 0.4 s of every start
    for fmt, path in recorded_files(record):
        lines.append(f"{fmt} file: {path} (ace diff-file {record.task_id}"
                     + ("" if fmt == "json" else f" --format {fmt}") + ")")
    return lines


@click.command("task-status")
@click.argument("task_id")
@click.option("--follow", is_flag=True, help="Wait until the task finishes, showing progress.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the task-status document the API answers.")
@click.option("--quiet", is_flag=True, help="Print nothing; the exit code tells the outcome.")
def task_status(task_id: str, follow: bool, as_json: bool, quiet: bool) -> None:
    """A task's status and outcome; exits as the command that made it would (0, 1 or 2)."""
    settings = settings_or_fail()
    store = _store(settings)
    record = _record(store, task_id)
    if follow and record.status not in FINISHED:
        _follow(record.task_id, settings, store, quiet)
        record = _record(store, task_id)
    if not quiet:
        if as_json:
            click.echo(json.dumps(record.status_document(), indent=2, default=str))
        else:
            click.echo("\n".join(_describe(record)))
    sys.exit(exit_code_of(record.task_type, record.status, record.result))


@click.command("diff-file")
@click.argument("task_id")
@click.option("--output-file", "-o", default=None,
              help="Where to write the file ('-' for standard output); default: its name "
                   "(<table>_<task id>.<format>) in the current folder.")
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "html"]), default="json",
              show_default=True,
              help="json: the diff file (a repair's report, a check's result); csv or html: "
                   "the report the task wrote.")
def diff_file(task_id: str, output_file: str | None, fmt: str) -> None:
    """Fetch a finished task's diff file or report by its task id."""
    from ace_shared.tasks.results import result_file  # it loads SQLAlchemy: 0.4 s of every start
    settings = settings_or_fail()
    use_shared_store(settings)  # a file written on another host is read from the fleet's store
    found = result_file(_record(_store(settings), task_id), fmt, settings.output_dir)
    if output_file == "-":
        out = sys.stdout.buffer
        for chunk in found.chunks():
            out.write(chunk)
        out.flush()
        return
    target = Path(output_file or found.download_name).expanduser()
    if target.is_dir():
        target = target / found.download_name
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            for chunk in found.chunks():
                fh.write(chunk)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BadOptionError(f"Could not write {target}: {exc.strerror or exc}; give "
                        "--output-file a path in a folder you may write to.") from exc
    click.echo(f"Wrote {target}")
