"""After a task on the fleet: this host's copies of the files it wrote.

A worker writes a diff file (and its CSV or HTML report) in its own output
folder. On a fleet that shares that folder the path it reports is this host's
too; on one that shares no disk the files are fetched from the fleet's shared
store into this host's ``ACE_OUTPUT_DIR``, named as an in-process run names
them, and the summary then names those local copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ace_shared.config import Settings
from ace_shared.difffile.format import new_diff_path
from ace_shared.outputs import new_output_path
from ace_shared.tasks.filestore import active_store, use_shared_store


def local_summary(summary: dict[str, Any], result: dict[str, Any], task_id: str,
                  settings: Settings, task_type: str, file_key: str = "diff_file"
                  ) -> dict[str, Any]:
    """``summary`` naming this host's copies of the task's diff file (or a check's result
    file, ``file_key``) and report."""
    path = summary.get(file_key)
    try:
        ours = bool(path) and Path(str(path)).resolve().is_relative_to(settings.output_dir)
    except OSError:
        ours = False
    if not path or ours:
        return summary
    from ace_shared.tasks.results import fetch_result  # it loads SQLAlchemy: 0.4 s of every start

    target: Path | None = None
    try:
        if active_store() is None:
            use_shared_store(settings)
        if active_store() is None:
            return summary  # nothing shared: the worker's path is all there is to say
        if file_key == "diff_file":
            target = new_diff_path(settings.output_dir)
        else:
            target = new_output_path(settings.output_dir, task_type,
                                     task_type.replace("-", "_"))
        local = dict(summary)
        if fetch_result(task_id, task_type, result, "json", target,
                        settings.output_dir) is None:
            target.unlink(missing_ok=True)
            return summary
        local[file_key] = str(target)
        report = summary.get("report_file")
        if report:
            fmt = Path(report).suffix.lstrip(".")
            copy = fetch_result(task_id, task_type, result, fmt, target.with_suffix(f".{fmt}"),
                                settings.output_dir)
            local["report_file"] = str(copy) if copy else report
        return local
    except Exception as exc:  # the task is done: say where its file is, and why not here
        if target is not None:
            target.unlink(missing_ok=True)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        click.echo(f"Warning: could not copy the files of {task_id} from the fleet's shared "
                   f"store ({detail}); the paths below are on the worker's host, and "
                   f"'ace diff-file {task_id}' fetches them once the store can be reached.",
                   err=True)
        return summary
