"""One batch of a ``multiprocessing`` rerun: fetch the batch's keys on every node, compare.

This is what the in-process pool and the fleet's subtasks both call, as
:func:`~ace_shared.diff.differ.diff_batch` is for a diff: it reads its keys
from the job's work folder (:mod:`~ace_shared.diff.workdir`), fetches those
rows on every node at once
(:meth:`~ace_shared.diff.differ.RangeDiffer.records_for_keys`), writes the rows
that still differ to a partial file (temporary name, then renamed, so a
redelivered batch simply rewrites it) with its batch record beside it, and
returns a small dict.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ace_shared.diff.differ import RangeDiffer
from ace_shared.diff.request import DiffSpec
from ace_shared.diff.workdir import BatchResult, DiffRecord, WorkDir
from ace_shared.nodes.sessions import NodeSessions


def write_partial(spec: DiffSpec, index: int, records: Iterable[DiffRecord],
                  keys_checked: int) -> BatchResult:
    """Write differing records as part ``index`` of the job, and its batch record."""
    work = WorkDir(spec.work_dir)
    with work.partial_writer(index) as out:
        out.write(records)
    result = BatchResult(index, 1, 1, keys_checked, out.count, str(work.partial_path(index)),
                         False)
    work.write_batch_result(result)
    return result


def rerun_batch(spec: DiffSpec | dict[str, Any], batch_index: int,
                sessions: NodeSessions) -> dict[str, Any]:
    """Re-check the keys of batch ``batch_index``; return the batch's small result dict."""
    job = spec if isinstance(spec, DiffSpec) else DiffSpec.from_dict(spec)
    keys = WorkDir(job.work_dir).read_keys(batch_index)
    records = RangeDiffer(job, sessions).records_for_keys(keys)
    return write_partial(job, batch_index, records, len(keys)).to_dict()
