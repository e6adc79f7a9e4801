"""Which diff files an API caller may name: only those in the ACE output directory.

table-repair and table-rerun read a diff file on the workers. A caller of the
API is remote, so letting them name any path would let them make the workers
read any file the ACE user can read; the API accepts a path only when it
lies inside ``settings.output_dir`` once symlinks are resolved, or the task
id of a completed table-diff, whose recorded diff file is used. Either way
the diff must come from a task the caller may see (``may_see(requested_by)``,
see :mod:`ace_api.rest.access`): someone else's task id is "not known", and a
path is accepted only when a task of the caller's wrote that file (any other
answers "does not exist", so file names reveal nothing either).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePath

from ace_shared.config import Settings
from ace_shared.diff.sources import diff_file_of_task as fetch_task_diff_file
from ace_shared.errors import BadOptionError, DiffFileError, NotFoundError
from ace_shared.tasks.filestore import active_store
from ace_shared.tasks.ids import is_task_id
from ace_shared.tasks.store import COMPLETED, TaskStore

Visibility = Callable[[str | None], bool]


def _everyone(_requested_by: str | None) -> bool:
    return True


def diff_file_of_task(task_id: str, store: TaskStore, may_see: Visibility = _everyone) -> str:
    """The diff file a completed table-diff task wrote."""
    record = store.get(task_id)
    if record is None or not may_see(record.requested_by):
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
        raise BadOptionError(f"diff_file {value} is outside the ACE output directory; the "
                             "API only reads diff files from there: give the path a table-diff "
                             "wrote (or one relative to that directory), or the table-diff's "
                             "task id.")
    if not exists:
        raise _missing(value)
    return path


def _inside(value: str, settings: Settings) -> bool:
    try:
        path = Path(value).resolve()
        return path.is_relative_to(settings.output_dir) and path.is_file()
    except OSError:
        return False


def _missing(value: str) -> DiffFileError:
    return DiffFileError(f"diff_file {value} does not exist in the ACE output directory; "
                         "run table-diff first or check the path.")


def _check_writer(value: str, path: Path, store: TaskStore, may_see: Visibility) -> None:
    """Answer a diff file no task of the caller's wrote as if it did not exist."""
    if may_see(None):  # only an admin sees tasks of no one: any file in the output directory
        return
    if not any(may_see(writer) for writer in store.writers_of(str(path))):
        raise _missing(value)


def resolve_diff_file(value: str, settings: Settings, store: TaskStore,
                      may_see: Visibility = _everyone) -> str:
    """The absolute path of the diff file a repair or rerun request names."""
    if is_task_id(value.strip()):
        recorded = diff_file_of_task(value.strip(), store, may_see)
        if active_store() is not None and not _inside(recorded, settings):
            # written on another host: this host's copy, from the fleet's shared store
            recorded = fetch_task_diff_file(value.strip(), store, settings.output_dir)
        return str(confine_to_output_dir(recorded, settings))
    path = confine_to_output_dir(value, settings)
    _check_writer(value, path, store, may_see)
    return str(path)
