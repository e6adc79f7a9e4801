"""A doorbell for finished jobs, so whoever waits on a job learns at once.

The task store says how a job ended; this only says *that* it ended. When the
workers record a job's outcome they push one item onto a per-job Redis list;
a follower blocks on that list for up to its polling interval and reads the
store as soon as it wakes. The item stays (a follower rotates it rather than
popping it), so a follower that starts after the job ended still wakes at once,
and the list expires after an hour. Without the doorbell a follower still
finds the outcome by polling; it only learns of it later.
"""

from __future__ import annotations

from typing import Any

KEEP_SECONDS = 3600


def finished_key(job_id: str) -> str:
    return f"ace:finished:{job_id}"


def ring(client: Any, job_id: str) -> None:
    """Announce that ``job_id`` has an outcome in the task store."""
    key = finished_key(job_id)
    pipe = client.pipeline()
    pipe.rpush(key, "1")
    pipe.expire(key, KEEP_SECONDS)
    pipe.execute()


def wait(client: Any, job_id: str, timeout: float) -> bool:
    """Block up to ``timeout`` seconds for ``job_id``'s doorbell; True if it rang."""
    key = finished_key(job_id)
    # rotating the one item keeps it there for any later follower
    return client.brpoplpush(key, key, timeout=max(timeout, 0.01)) is not None
