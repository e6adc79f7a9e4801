"""Readable, unique task ids such as ``td_20240315_123456_x7k2``.

The prefix names the kind of task (``td`` table-diff, ``tr`` table-repair,
``rr`` table-rerun, ...), so a repair and a rerun of one diff can be told apart
at a glance; the same id is the Celery task id, so an operator can find a task
in Flower from what the API or CLI printed. Ids written by earlier versions
(a rerun's ``tr_``) keep the same shape and stay readable.
"""

from __future__ import annotations

import re
import secrets
import string
from datetime import datetime, timezone

PREFIXES = {
    "table-diff": "td",
    "table-repair": "tr",
    "table-rerun": "rr",
    "auto-repair": "ar",
    "spock-exception": "se",
    "mtree": "mt",
    "mtree-table-diff": "mt",
    "schema-diff": "sd",
    "repset-diff": "rd",
    "spock-diff": "spd",
    "scheduled-recheck": "rc",
}
_ALPHABET = string.ascii_lowercase + string.digits
TASK_ID_RE = re.compile(r"^[a-z]{2,3}_\d{8}_\d{6}_[a-z0-9]{4,8}$")


def new_task_id(task_type: str, now: datetime | None = None) -> str:
    prefix = PREFIXES.get(task_type, "tk")
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d_%H%M%S")
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    return f"{prefix}_{stamp}_{suffix}"


def is_task_id(text: str) -> bool:
    return bool(TASK_ID_RE.match(text or ""))


# A job's subtasks have the job's id, a dot and their kind, so that every subtask of a
# job is found (and failed) from its own id: ``td_..._x7k2.merge``, ``td_..._x7k2.b000012``.
MERGE = "merge"  # the chord's body: a diff's or a rerun's merge
FINISH = "finish"  # the body of an mtree build's chord
COLLECT = "collect"  # schema-diff's and repset-diff's collector of the table diffs
# a chord's parts: one letter for the kind of part, then the index of its first range
DIFF_BATCH, MTREE_HASH, MTREE_LEAVES, RERUN_KEYS = "b", "h", "g", "k"


def subtask_id(job_id: str, kind: str, index: int | None = None) -> str:
    """The id of one subtask of ``job_id``: ``<job>.merge``, or ``<job>.b000012`` for the
    part of kind ``b`` whose first range is 12."""
    return f"{job_id}.{kind}" if index is None else f"{job_id}.{kind}{index:06d}"


def job_of(task_id: str) -> str:
    """The job a task belongs to: its own id for a job's first task, else the id before the dot."""
    return task_id.split(".", 1)[0]
