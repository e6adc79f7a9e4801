"""Writing a check's result: a JSON file, and with ``--output html`` its HTML page.

Files land under ``$ACE_OUTPUT_DIR/<kind>/<date>/`` like the diff files and
appear only once complete; a failed check leaves none behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ace_shared.atomicfile import atomic_text_file
from ace_shared.checks.html import write_html
from ace_shared.outputs import new_output_path


def write_result(output_dir: Path, kind: str, prefix: str, result: dict[str, Any],
                 output: str) -> dict[str, Any]:
    """Write ``result`` (and its HTML page when asked); return it with the paths set."""
    path = new_output_path(output_dir, kind, prefix)
    result["result_file"] = str(path)
    try:
        if output == "html":
            html_path = path.with_suffix(".html")
            result["report_file"] = str(html_path)
            write_html(html_path, result)
        with atomic_text_file(path) as fh:
            json.dump(result, fh, indent=2, default=str)
            fh.write("\n")
    except BaseException:
        path.unlink(missing_ok=True)
        if result.get("report_file"):
            Path(result["report_file"]).unlink(missing_ok=True)
        raise
    return result
