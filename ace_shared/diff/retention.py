"""Removing old work and results: ``RESULT_RETENTION_DAYS`` after they were written.

Work folders (``$OUTPUT_DIR/work/<task_id>/``) normally go when their task
ends; those a failed or lost task left behind, and the diff files, reports and
check results under ``$OUTPUT_DIR/<kind>/<YYYY-MM-DD>/``, stay until they are
older than the retention period. The same age applies to what the fleet's
shared store holds (work folders, results, uploads; see
:mod:`ace_shared.tasks.filestore`). Beat runs this once an hour
(``ace.retention``) on one worker, for the shared store and that worker's
folder; each worker also prunes its own folder (hosts may share no disk).
"""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ace_shared.diff.workdir import FETCHED, WORK
from ace_shared.tasks.filestore import FileStore

SHARED_PREFIXES = (f"{WORK}/", "results/", "uploads/")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class Removed:
    folders: int = 0
    files: int = 0
    shared: int = 0


def cutoff_for(days: int, now: datetime | None = None) -> datetime | None:
    """The moment before which things are old; None when nothing is ever removed (0 days)."""
    if days <= 0:
        return None
    return (now or datetime.now(timezone.utc)) - timedelta(days=days)


def _newest(folder: Path) -> float:
    """The newest modification time in ``folder`` (itself included)."""
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:
            continue
    return newest


def _remove_old_files(folder: Path, stamp: float) -> int:
    count = 0
    for path in folder.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < stamp:
                path.unlink()
                count += 1
        except OSError:
            continue
    return count


def remove_old_local(output_dir: Path, cutoff: datetime) -> Removed:
    """Remove work folders untouched since ``cutoff`` and result files written before it."""
    removed = Removed()
    stamp = cutoff.timestamp()
    work = Path(output_dir) / WORK
    if work.is_dir():
        for folder in work.iterdir():
            if folder.name == FETCHED:  # copies of other hosts' files: one by one
                removed.files += _remove_old_files(folder, stamp)
                continue
            try:
                old = folder.is_dir() and _newest(folder) < stamp
            except OSError:
                continue
            if old:
                shutil.rmtree(folder, ignore_errors=True)
                removed.folders += 1
    for kind in Path(output_dir).iterdir() if Path(output_dir).is_dir() else []:
        if not kind.is_dir() or kind.name == WORK:
            continue
        for day in kind.iterdir():
            if not (day.is_dir() and _DATE.match(day.name)):
                continue
            removed.files += _remove_old_files(day, stamp)
            with contextlib.suppress(OSError):
                day.rmdir()  # only once empty
    return removed


def remove_old_shared(store: FileStore, cutoff: datetime) -> int:
    """Remove what the shared store holds from before ``cutoff``; how many files."""
    count = 0
    for prefix in SHARED_PREFIXES:
        for name in store.older_than(prefix, cutoff):
            count += store.remove(name)
    return count
