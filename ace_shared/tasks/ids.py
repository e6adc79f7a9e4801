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
