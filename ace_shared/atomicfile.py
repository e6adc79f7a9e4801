"""Writing a report under a temporary name and renaming it into place.

A reader (a browser, a spreadsheet, a script polling the output folder) must
never see half a report, and a failed run must leave nothing behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


@contextlib.contextmanager
def atomic_text_file(path: Path, newline: str | None = None) -> Iterator[TextIO]:
    """Open a hidden temporary file beside ``path``; rename it to ``path`` on success.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # reports hold table data: readable by the ACE user only, whatever the umask
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
