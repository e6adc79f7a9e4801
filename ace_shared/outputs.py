"""Where ACE writes its files: ``<output>/<kind>/<YYYY-MM-DD>/<prefix>_<HHMMSSmmm>.json``.

Names are claimed with an exclusive create, so two tasks finishing in the same
millisecond (many workers, one shared output folder) never share a file.

Diff files and reports hold table data, so they are the ACE user's alone:
files 0600, folders 0700. Many modules write files (partial results, work
folders, reports); rather than each remembering a mode, every ACE program
(the ``ace`` command, the API server, each Celery worker) starts with
:func:`keep_outputs_private`, and the paths claimed here carry the modes too.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from pathlib import Path

from ace_shared.errors import NoFreeNameError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PRIVATE_UMASK = 0o077


def keep_outputs_private() -> None:
    """Make every file and folder this process creates from now on private to its user.

    Only for a whole ACE program, never inside a library call: the mask is the
    process's. Bits a stricter mask already clears stay cleared.
    """
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)


def private_folder(folder: Path) -> Path:
    """``folder`` and any missing parents under it, created 0700 (existing ones untouched)."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for each in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another worker made it first
            each.mkdir(mode=PRIVATE_DIR)
    return folder


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty and 0600 unless it exists; True if this call created it."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def new_output_path(output_dir: Path, kind: str, prefix: str,
                    now: datetime | None = None) -> Path:
    """Claim a fresh, empty file (0600) under ``output_dir/kind/<date>/`` (folders 0700)."""
    now = now or datetime.now(timezone.utc)
    folder = private_folder(output_dir / kind / now.strftime("%Y-%m-%d"))
    stem = f"{prefix}_{now.strftime('%H%M%S')}{now.microsecond // 1000:03d}"
    for n in range(1, 10000):
        path = folder / (f"{stem}.json" if n == 1 else f"{stem}_{n}.json")
        if create_private_file(path):
            return path
    raise NoFreeNameError(f"The folder {folder} has no free {prefix} file name left; "
                          "move older files out of it and try again.")
