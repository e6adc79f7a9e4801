"""Where ACE writes its files: ``<output>/<kind>/<YYYY-MM-DD>/<prefix>_<HHMMSSmmm>.json``.

Names are claimed with an exclusive create, so two tasks finishing in the same
millisecond (many workers, one shared output folder) never share a file.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from ace_shared.errors import NoFreeNameError


def new_output_path(output_dir: Path, kind: str, prefix: str,
                    now: datetime | None = None) -> Path:
    """Claim a fresh, empty file under ``output_dir/kind/<date>/``."""
    now = now or datetime.now(timezone.utc)
    folder = output_dir / kind / now.strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{prefix}_{now.strftime('%H%M%S')}{now.microsecond // 1000:03d}"
    for n in range(1, 10000):
        path = folder / (f"{stem}.json" if n == 1 else f"{stem}_{n}.json")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise NoFreeNameError(f"The folder {folder} has no free {prefix} file name left; "
                          "move older files out of it and try again.")
