"""The repair report (``--generate-report``) and the small result a repair returns.

The report is the audit trail: the arguments as given (never a password: the
request holds none), every row inserted, updated, deleted, kept or filled on
each node (or, in a dry run, that would be), and the run time. It goes to
``$ACE_OUTPUT_DIR/reports/<YYYY-MM-DD>/repair_<HHMMSSmmm>.json``, written
under a temporary name and renamed, so a reader never sees half a report.
The result dict, by contrast, stays small: counts and at most a few keys per
category, so it can travel through any task result backend.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from ace_shared.outputs import new_output_path
from ace_shared.repair.apply import COUNTS, NodeOutcome
from ace_shared.repair.request import RepairRequest


def new_report_path(output_dir: Path, now: datetime | None = None) -> Path:
    """A fresh ``reports/<date>/repair_<HHMMSSmmm>.json``, unique even within a millisecond."""
    return new_output_path(output_dir, "reports", "repair", now)


def report_head(request: RepairRequest, task_id: str, started: datetime,
                finished: datetime, notes: list[str]) -> dict[str, Any]:
    """Everything in the report but the rows (which are streamed in by :func:`write_report`)."""
    return {
        "operation": "table-repair",
        "mode": "dry_run" if request.dry_run else "live",
        "task_id": task_id,
        "time_stamp": finished.isoformat(),
        "arguments": request.to_dict(),
        "changes": {},
        "notes": notes,
        "run_time": round((finished - started).total_seconds(), 3),
    }


def _dump(value: Any, indent: int) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2).replace("\n", "\n" + " " * indent)


def _write_changes(fh: IO[str], outcomes: list[NodeOutcome]) -> None:
    fh.write("{")
    for i, o in enumerate(outcomes):
        fh.write(("," if i else "") + f"\n    {_dump(o.node, 4)}: {{\n      \"counts\": "
                 f"{_dump(dict(o.counts), 6)}")
        for category in COUNTS:
            if category == "unchanged" or not o.counts.get(category) \
                    or category not in o.row_files:
                continue
            fh.write(f",\n      {_dump(category, 6)}: [")
            for j, row in enumerate(o.rows(category)):
                fh.write(("," if j else "") + "\n        " + _dump(row, 8))
            fh.write("\n      ]")
        fh.write("\n    }")
    fh.write("\n  }" if outcomes else "}")


def write_report(output_dir: Path, head: dict[str, Any], outcomes: list[NodeOutcome]) -> Path:
    """Write the report, streaming each node's rows from the files the repair kept them in."""
    path = new_report_path(output_dir)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("{")
        for i, (name, value) in enumerate(head.items()):
            fh.write(("," if i else "") + f"\n  {_dump(name, 2)}: ")
            if name == "changes":
                _write_changes(fh, outcomes)
            else:
                fh.write(_dump(value, 2))
        fh.write("\n}\n")
    os.replace(tmp, path)
    return path


def build_result(request: RepairRequest, task_id: str, diff_file: str,
                 outcomes: list[NodeOutcome], report_file: Path | None, started: datetime,
                 finished: datetime, notes: list[str]) -> dict[str, Any]:
    """The JSON-safe outcome a front door prints or a task stores."""
    return {
        "task_id": task_id,
        "operation": "table-repair",
        "cluster_name": request.cluster_name,
        "table": request.table.display,
        "diff_file": diff_file,
        "mode": request.mode,
        "source_of_truth": request.source_of_truth,
        "dry_run": request.dry_run,
        "upsert_only": request.upsert_only,
        "insert_only": request.insert_only,
        "nodes": {o.node: dict(o.counts) for o in outcomes},
        "samples": {o.node: {k: v for k, v in o.samples.items() if k != "unchanged"}
                    for o in outcomes},
        "report_file": str(report_file) if report_file else None,
        "notes": notes,
        "run_time": round((finished - started).total_seconds(), 3),
    }
