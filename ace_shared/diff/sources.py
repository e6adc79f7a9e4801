"""Where a repair's or rerun's diff file comes from, on a host that may not have it.

``--diff-file`` names a local path or the id of a finished table-diff (or rerun,
or mtree table-diff). On a fleet whose hosts share no disk the file may be on
another host: a task id's file is then fetched from the shared store
(:mod:`ace_shared.tasks.filestore`, where the task put it), and a local file the
fleet needs is uploaded there first and handed on as ``upload:<task id>``.
Either way the file lands in this host's ``work/fetched/`` folder and is read
from there like any other, streamed. A resolved repair plan (``--apply-plan``)
travels the same way, under its own name beside the diff file's.

A plan resolved on the fleet (``--plan-out``) travels back: the submitter asks
for it with :data:`PLAN_OUT_SHARED` instead of a path it alone can reach, the
worker resolves into its own folder and puts the file in the store among the
task's results, and the submitter fetches it to the path it was given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ace_shared.diff.workdir import FETCHED, WorkDir
from ace_shared.errors import BadOptionError, DiffFileError, NotFoundError
from ace_shared.tasks.filestore import active_store
from ace_shared.tasks.ids import is_task_id
from ace_shared.tasks.results import fetch_result, shared_name
from ace_shared.tasks.status import COMPLETED

UPLOAD_PREFIX = "upload:"
UPLOADS = "uploads"
DIFF_UPLOAD = ".json"
PLAN_UPLOAD = ".plan.jsonl"
DIFF_TASKS = ("table-diff", "table-rerun", "mtree")
PLAN_OUT_SHARED = "shared-store:"  # --plan-out on a fleet with a store: keep it there
PLAN_RESULT = "plan"  # its name among the task's results (results.shared_name)


def _fetched_path(output_dir: Path, name: str) -> Path:
    return WorkDir.root(output_dir) / FETCHED / f"{name}.json"


def upload_diff_file(path: str | Path, task_id: str, kind: str = DIFF_UPLOAD) -> str:
    """Put a local diff file (or, with ``kind`` :data:`PLAN_UPLOAD`, a resolved plan) in the
    shared store for task ``task_id``; what to hand on.

    Without a shared store the path itself is handed on (the fleet shares the folder).
    """
    shared = active_store()
    if shared is None:
        return str(path)
    shared.put(f"{UPLOADS}/{task_id}{kind}", Path(path))
    return UPLOAD_PREFIX + task_id


def diff_file_of_task(task_id: str, tasks: Any, output_dir: Path) -> str:
    """This host's copy of the diff file a finished task wrote (fetched if need be)."""

    record = tasks.get(task_id)
    if record is None:
        raise NotFoundError(f"Task {task_id} is not known; give a diff file path or the "
                            "task id of a completed table-diff.")
    if record.task_type not in DIFF_TASKS:
        raise BadOptionError(f"Task {task_id} is a {record.task_type}, not a table-diff; "
                             "give the task id of a table-diff.")
    if record.status != COMPLETED:
        raise BadOptionError(f"Task {task_id} is {record.status}; wait until it is COMPLETED "
                             "before using its diff file.")
    found = fetch_result(task_id, record.task_type, record.result, "json",
                         _fetched_path(output_dir, task_id), output_dir)
    if found is None:
        raise DiffFileError(f"The diff file of task {task_id} is neither on this host nor in "
                            "the fleet's shared store; set SHARED_STORE (or ACE_DATABASE_URL "
                            "to PostgreSQL) on every host, or run the diff again.")
    return str(found)


def local_upload(value: str, output_dir: Path, kind: str = DIFF_UPLOAD) -> str:
    """This host's copy of a file the submitter uploaded (``upload:<task id>``), fetched
    from the shared store when not here."""
    text = (value or "").strip()
    owner = text[len(UPLOAD_PREFIX):]
    shared = active_store()
    target = WorkDir.root(output_dir) / FETCHED / f"upload-{owner}{kind}"
    if not is_task_id(owner) or shared is None or not (
            target.is_file() or shared.get(f"{UPLOADS}/{owner}{kind}", target)):
        what = "resolved plan" if kind == PLAN_UPLOAD else "diff file"
        raise DiffFileError(f"The uploaded {what} {text} is not in the fleet's shared "
                            "store; submit the task again.")
    return str(target)


def local_diff_file(value: str, tasks: Any, output_dir: Path) -> str:
    """The local path of the diff file ``value`` names: a path as given, a task id's file,
    or an upload (``upload:<task id>``), fetched from the shared store when not here."""
    text = (value or "").strip()
    if text.startswith(UPLOAD_PREFIX):
        return local_upload(text, output_dir)
    if is_task_id(text):
        return diff_file_of_task(text, tasks, output_dir)
    return value


def remove_upload(task_id: str, kind: str = DIFF_UPLOAD) -> None:
    """Forget a finished task's uploaded diff file (or resolved plan)."""
    shared = active_store()
    if shared is not None:
        shared.remove(f"{UPLOADS}/{task_id}{kind}")


def plan_out_here(value: str, task_id: str, output_dir: Path) -> str:
    """Where a worker resolves a plan asked for with :data:`PLAN_OUT_SHARED`: a file of its
    own output folder, shared by :func:`share_plan_out` once written."""
    if value != PLAN_OUT_SHARED:
        return value
    folder = WorkDir.root(output_dir) / "plans"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"{task_id}.plan.jsonl")


def share_plan_out(task_id: str, local: Path) -> None:
    """Put the plan a worker resolved among task ``task_id``'s results, then drop this
    host's copy: the submitter fetches it (:func:`fetch_plan_out`)."""
    shared = active_store()
    if shared is None or not local.is_file():
        return
    shared.put(shared_name(task_id, PLAN_RESULT), local)
    local.unlink(missing_ok=True)


def fetch_plan_out(task_id: str, target: Path) -> bool:
    """Fetch the plan task ``task_id`` resolved to ``target``; whether the store had it."""
    shared = active_store()
    return shared is not None and shared.get(shared_name(task_id, PLAN_RESULT), target)
