"""One batch of a ``multiprocessing`` rerun: fetch the batch's keys on every node, compare.

This is what the in-process pool and the fleet's subtasks both call, as
:func:`~ace_shared.diff.differ.diff_batch` is for a diff: it reads its keys from
the job's work folder, fetches those rows on every node at once
(:meth:`~ace_shared.diff.differ.RangeDiffer.records_for_keys`), writes the rows
that still differ to a partial file (temporary name, then renamed, so a
redelivered batch simply rewrites it) with its batch record beside it, and
returns a small dict.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from ace_shared.diff.differ import (
    BatchResult,
    DiffRecord,
    RangeDiffer,
    partial_path,
    write_batch_result,
)
from ace_shared.diff.request import DiffSpec
from ace_shared.nodes.sessions import NodeSessions
from ace_shared.rerun.plan import read_keys


def write_partial(spec: DiffSpec, index: int, records: list[DiffRecord] | Any,
                  keys_checked: int) -> BatchResult:
    """Write differing records as part ``index`` of the job, and its batch record."""
    final = partial_path(spec.work_dir, index)
    tmp = final.with_name(final.name + f".{socket.gethostname()}.{os.getpid()}.tmp")
    found = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(rec.to_json())
            fh.write("\n")
            found += 1
    os.replace(tmp, final)
    result = BatchResult(index, 1, 1, keys_checked, found, str(final), False)
    write_batch_result(result)
    return result


def rerun_batch(spec: DiffSpec | dict[str, Any], batch_index: int,
                sessions: NodeSessions) -> dict[str, Any]:
    """Re-check the keys of batch ``batch_index``; return the batch's small result dict."""
    job = spec if isinstance(spec, DiffSpec) else DiffSpec.from_dict(spec)
    keys = read_keys(job.work_dir, batch_index)
    records = RangeDiffer(job, sessions).records_for_keys(keys)
    return write_partial(job, batch_index, records, len(keys)).to_dict()
