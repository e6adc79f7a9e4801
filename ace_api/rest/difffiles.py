"""Which diff files an API caller may name: only those in the ACE output directory.

table-repair and table-rerun read a diff file on the workers. A caller of the
API is remote, so letting them name any path would let them make the workers
read any file the ACE user can read; the API accepts a path only when it
lies inside ``settings.output_dir`` once symlinks are resolved, or the task
id of a completed table-diff, whose recorded diff file is used.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from ace_shared.config import Settings
from ace_shared.errors import BadOptionError, DiffFileError, NotFoundError
from ace_shared.tasks.ids import is_task_id
from ace_shared.tasks.store import COMPLETED, TaskStore


def diff_file_of_task(task_id: str, store: TaskStore) -> str:
    """The diff file a completed table-diff task wrote."""
    record = store.get(task_id)
    if record is None:
        raise NotFoundError(f"Task {task_id} is not known; give a diff file path or the "
                            "task id of a completed table-diff.")
    if record.task_type != "table-diff":
        raise BadOptionError(f"Task {task_id} is a {record.task_type}, not a table-diff; "
                             "give the task id of a table-diff.")
    if record.status != COMPLETED:
        raise BadOptionError(f"Task {task_id} is {record.status}; wait until it is COMPLETED "
                             "before using its diff file.")
    diff_file = (record.result or {}).get("diff_file")
    if not diff_file:
        raise DiffFileError(f"Task {task_id} recorded no diff file.")
    return str(diff_file)


def confine_to_output_dir(value: str, settings: Settings) -> Path:
    """The real path of ``value`` (relative to the output directory), if it lies inside it."""
    root = settings.output_dir
    if "\x00" in value or not value.strip():
        raise BadOptionError("diff_file must be a file path inside the ACE output directory "
                             "or a table-diff task id.")
    if ".." in PurePath(value).parts:
        raise BadOptionError(f"diff_file {value} contains '..'; name a file inside the "
                             "ACE output directory without '..'.")
    try:
        path = (root / value).resolve()
        inside = path.is_relative_to(root)
        exists = inside and path.is_file()
    except OSError as exc:
        raise BadOptionError(f"diff_file {value[:200]} is not a usable path: "
                             f"{exc.strerror or exc}.") from None
    if not inside:
        raise BadOptionError(f"diff_file {value} is outside the ACE output directory "
                             f"{root}; the API only reads diff files from there.")
    if not exists:
        raise DiffFileError(f"diff_file {value} does not exist in the ACE output directory; "
                            "run table-diff first or check the path.")
    return path


def resolve_diff_file(value: str, settings: Settings, store: TaskStore) -> str:
    """The absolute path of the diff file a repair or rerun request names."""
    if is_task_id(value.strip()):
        value = diff_file_of_task(value.strip(), store)
    return str(confine_to_output_dir(value, settings))
