"""A finished task's files as a caller fetches them: which file, its type, its name, its bytes.

A task records the files it wrote in its result (``diff_file``, ``report_file``,
a table-diff's ``summary.report_file``): a diff file, a rerun's new diff file, a
repair's report, a check's result and its HTML page. The REST download and
``ace diff-file`` both ask here which of them answers a format, so they agree
on what a task offers; the bytes are streamed in chunks, never read whole.

The file is read where the worker wrote it when this host has it, inside its
output directory (the same folder on every host of a fleet that shares one);
otherwise from the fleet's shared store (:mod:`ace_shared.tasks.filestore`),
where the worker put it under ``results/<task_id>/<format>`` before it marked the
task COMPLETED (:func:`share_results`). A recorded path outside this host's
output directory is never read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ace_shared.errors import NotFoundError, ResultNotReadyError, UnknownFormatError
from ace_shared.tasks.filestore import FileStore, active_store
from ace_shared.tasks.status import COMPLETED, FAILED
from ace_shared.tasks.store import TaskRecord

MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8",
               "html": "text/html; charset=utf-8"}
FORMATS = tuple(MEDIA_TYPES)
CHUNK_BYTES = 1 << 16
RESULTS = "results"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ResultFile:
    """One file of a finished task, ready to stream."""

    task_id: str
    fmt: str
    path: Path | None  # this host's copy; None: read from the shared store
    table_name: str | None
    shared: FileStore | None = None

    @property
    def size(self) -> int | None:
        if self.path is not None:
            return self.path.stat().st_size
        return self.shared.size(shared_name(self.task_id, self.fmt)) if self.shared else None

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.fmt]

    @property
    def download_name(self) -> str:
        """``<table>_<task_id>.<fmt>`` (or ``<task_id>.<fmt>``), safe in any header or folder."""
        stem = f"{self.table_name}_{self.task_id}" if self.table_name else self.task_id
        return _UNSAFE.sub("_", stem).strip("._") + f".{self.fmt}"

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes, a chunk at a time."""
        if self.path is None:
            assert self.shared is not None
            parts = self.shared.read(shared_name(self.task_id, self.fmt))
            if parts is None:
                raise NotFoundError(f"The {self.fmt} file of task {self.task_id} was removed "
                                    "from the shared store while it was read.")
            yield from parts
            return
        with open(self.path, "rb") as fh:
            while chunk := fh.read(CHUNK_BYTES):
                yield chunk


def shared_name(task_id: str, fmt: str) -> str:
    """Where a task's file of format ``fmt`` is kept in the shared store."""
    return f"{RESULTS}/{task_id}/{fmt}"


def _candidates(record: TaskRecord) -> list[str]:
    """Every file path the task recorded, the main one first."""
    return _recorded(record.task_type, record.result)


def _recorded(task_type: str, result: dict[str, Any] | None) -> list[str]:
    result = result or {}
    raw = result.get("summary")
    summary: dict[str, Any] = raw if isinstance(raw, dict) else {}
    found: list[str] = []
    # a repair's diff_file is its input, named by its caller: only its report is its own
    keys = ("report_file",) if task_type == "table-repair" else ("diff_file", "report_file")
    for source in (result, summary):
        for key in keys:
            value = source.get(key)
            if isinstance(value, str) and value and value not in found:
                found.append(value)
    return found


def recorded_files(record: TaskRecord) -> list[tuple[str, str]]:
    """``(format, path)`` of each file the task recorded that can be fetched by format."""
    return _by_format(_candidates(record))


def _by_format(paths: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for path in paths:
        fmt = Path(path).suffix.lstrip(".").lower()
        if fmt in MEDIA_TYPES and fmt not in (f for f, _ in out):
            out.append((fmt, path))
    return out


def check_format(fmt: str | None) -> str:
    fmt = (fmt or "json").strip().lower()
    if fmt not in MEDIA_TYPES:
        raise UnknownFormatError(f"format {fmt!r} is not one of {', '.join(FORMATS)}; "
                                 "ask for one of those.")
    return fmt


def result_file(record: TaskRecord, fmt: str | None, output_dir: Path) -> ResultFile:
    """The file of ``record`` in format ``fmt`` (json, csv or html), checked to exist here."""
    fmt = check_format(fmt)
    task_id = record.task_id
    if record.status == FAILED:
        raise NotFoundError(f"Task {task_id} failed ({record.error or 'no reason recorded'}); "
                            "it left no result file.")
    if record.status != COMPLETED:
        raise ResultNotReadyError(f"Task {task_id} is {record.status}; its files can be "
                                  "fetched once it is COMPLETED (follow it with task-status).")
    paths = [p for p in _candidates(record) if Path(p).suffix.lower() == f".{fmt}"]
    if not paths:
        offered = sorted({Path(p).suffix.lstrip(".").lower() for p in _candidates(record)})
        hint = (f"it offers {', '.join(offered)}" if offered else "it wrote no file")
        raise NotFoundError(f"Task {task_id} has no {fmt} file ({hint}); ask for another "
                            "format, or run the command again with --output " + fmt + ".")
    path = Path(paths[0])
    root = Path(output_dir).resolve()
    here = _ours(path, root)
    shared = active_store()
    if not here and shared is not None and shared.size(shared_name(task_id, fmt)) is not None:
        return ResultFile(task_id, fmt, None, record.table_name, shared)
    if not here:
        raise NotFoundError(f"The {fmt} file of task {task_id} ({path.name}) is not in this "
                            "host's output directory, nor in a shared store; fetch it on a host "
                            "that shares the workers' output directory, or set SHARED_STORE "
                            "(docs: README, the worker fleet) so that every host reaches it.")
    return ResultFile(task_id, fmt, path.resolve(), record.table_name)


def share_results(shared: FileStore, task_id: str, task_type: str,
                  result: dict[str, Any] | None) -> None:
    """Put each file a finished task recorded in the shared store, for any host to fetch."""
    for fmt, path in _by_format(_recorded(task_type, result)):
        if Path(path).is_file():
            shared.put(shared_name(task_id, fmt), Path(path))


def _ours(path: str | Path, output_dir: Path) -> bool:
    """Whether ``path`` is a file in this host's output directory."""
    try:
        real = Path(path).resolve()
        return real.is_relative_to(Path(output_dir).resolve()) and real.is_file()
    except OSError:
        return False


def fetch_result(task_id: str, task_type: str, result: dict[str, Any] | None, fmt: str,
                 target: Path, output_dir: Path) -> Path | None:
    """This host's copy of a task's file: the recorded path if it is in this host's output
    directory, else fetched from the shared store to ``target``; None if neither has it."""
    for found_fmt, path in _by_format(_recorded(task_type, result)):
        if found_fmt == fmt and _ours(path, output_dir):
            return Path(path)
    shared = active_store()
    if shared is not None and shared.get(shared_name(task_id, fmt), target):
        return target
    return None
