"""Human-readable renderings of a diff (CSV and a self-contained HTML report).

Each renderer is imported only when its format is asked for (``--output``): most diffs
write neither, and a command's start should not pay for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ace_shared.difffile.view import DiffView
from ace_shared.errors import UnknownFormatError


def write_report(path: Path, view: DiffView, summary: dict[str, Any], fmt: str) -> Path:
    """Write ``view`` as ``fmt`` (csv or html) to ``path``."""
    if fmt == "csv":
        from ace_shared.difffile.csvreport import write_csv
        write_csv(path, view, summary)
    elif fmt == "html":
        from ace_shared.difffile.htmlreport import write_html
        write_html(path, view, summary)
    else:
        raise UnknownFormatError(f"Reports are written as csv or html, not {fmt!r}.")
    return path
